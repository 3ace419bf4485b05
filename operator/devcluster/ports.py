"""Free TCP ports on 127.0.0.1 for servers started by tests, benchmarks and the local cluster."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port that is free now and below the kernel's ephemeral range.

    Why below: a port the kernel hands out for bind(0) comes from the same range as the source
    ports of outgoing connections, so under load (test traffic, kubectl calls) one of those can
    take it before the server that was told to use it binds — "address already in use".
    """
    high = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(LOWEST, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
