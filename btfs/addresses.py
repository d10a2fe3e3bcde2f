"""Peer addresses as users write them: `HOST:PORT`, `[IPv6]:PORT`."""

from __future__ import annotations

from btfs.errors import BtfsError


def parse_peer(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[ADDR]:PORT` to (host, port); a clear error otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise BtfsError(f"bad peer address {text!r}: write [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise BtfsError(f"bad peer address {text!r}: write HOST:PORT or [IPv6]:PORT")
    if not host:
        raise BtfsError(f"bad peer address {text!r}: no host")
    if not (port_text.isascii() and port_text.isdigit()):
        raise BtfsError(f"bad peer address {text!r}: port must be a number")
    port = int(port_text)
    if not 0 < port < 65536:
        raise BtfsError(f"bad peer address {text!r}: port must be 1-65535")
    return host, port
