"""Fixtures for end-to-end tests: a real OTLP receiver (gRPC + HTTP/protobuf) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from otlp_receiver import OTLPReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started receiver on ephemeral loopback ports, stopped after the test."""
    with OTLPReceiver() as receiver:
        yield receiver
