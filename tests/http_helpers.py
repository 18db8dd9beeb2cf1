"""Loopback helpers shared by the tests that run real servers: a free port, and a GET that
retries until the server answers."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_until(url: str, deadline: float) -> str:
    """GET ``url``'s body, retrying until it answers or ``deadline`` (monotonic) has passed."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
