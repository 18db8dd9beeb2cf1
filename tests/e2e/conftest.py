"""Fixtures for end-to-end tests: a real OTLP receiver (gRPC + HTTP/protobuf) and a loopback
endpoint where nothing listens."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from otlp_receiver import OTLPReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started receiver on ephemeral loopback ports, stopped after the test."""
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def closed_endpoint() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
