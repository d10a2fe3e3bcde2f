"""Compact peer addresses: 4 address bytes and a 2-byte big-endian port (BEP 23), or 16
and 2 for IPv6 (BEP 7). Addresses are packed as the announce answers carry them, and an
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) counts as the IPv4 address it maps.

Errors are `ValueError`: callers turn them into their own kind (a bad request for the
tracker, a bad answer for the client).
"""

from __future__ import annotations

import functools
import ipaddress

V4_SIZE = 6
V6_SIZE = 18
_V4_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


@functools.lru_cache(maxsize=4096)
def pack_ip(ip: str) -> bytes:
    """The 4 or 16 bytes of an address in text form (no zone index); `ValueError` if it
    is not one. Cached: a tracker packs the same source addresses again and again."""
    if "%" in ip:
        raise ValueError("invalid ip address")
    try:
        packed = ipaddress.ip_address(ip).packed
    except ValueError:
        raise ValueError("invalid ip address") from None
    if len(packed) == 16 and packed.startswith(_V4_MAPPED_PREFIX):
        return packed[12:]
    return packed


def pack(ip: str, port: int) -> bytes:
    """The compact entry of `ip`:`port`; port 0 is no port (`ValueError`)."""
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"invalid port {port}")
    return pack_ip(ip) + port.to_bytes(2, "big")


def unpack(entry: bytes) -> tuple[str, int]:
    """The (ip, port) of one 6- or 18-byte entry."""
    return str(ipaddress.ip_address(entry[:-2])), int.from_bytes(entry[-2:], "big")


def decode_peers(data: bytes, size: int) -> list[tuple[str, int]]:
    """The (ip, port) entries of a compact peer list of `size`-byte entries, those with
    port 0 left out; `ValueError` if `data` is not whole entries."""
    if len(data) % size:
        raise ValueError(f"compact peer list is not a multiple of {size} bytes")
    return [unpack(data[i : i + size]) for i in range(0, len(data), size)
            if data[i + size - 2 : i + size] != b"\0\0"]


def normalize_ip(ip: str) -> str:
    """The text form peers are known by: an IPv4-mapped IPv6 address becomes IPv4."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip
