"""Loopback addresses and free ports, so test peers never collide or leave the machine."""

from __future__ import annotations

import itertools
import os
import socket

# Each test process takes its own slice of 127.0.0.0/8 (pytest-xdist workers included),
# and every peer in a test gets its own address, as real distinct peers would have.
_counter = itertools.count((os.getpid() % 250) * 65536)


def next_loopback_ipv4() -> str:
    """A fresh address in 127.0.0.0/8 (all of it routes to `lo` on Linux), never 127.0.0.1."""
    while True:
        n = next(_counter)
        second, third, fourth = (n >> 16) % 256, (n >> 8) & 0xFF, n & 0xFF
        if 2 <= fourth <= 254:
            return f"127.{second}.{third}.{fourth}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both TCP and UDP on `host` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host}")


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
