"""BEP 15 (the UDP tracker protocol) on the wire: pure decoding, encoding, connection IDs.

Connection IDs are stateless: 8 bytes of a keyed BLAKE2b over the client's address and
the current time window, under a random per-process secret. An ID is accepted in the
window it was made in and the next one, so it lives one to two windows (1-2 minutes).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from tracker.swarms import TrackerError

PROTOCOL_ID = 0x41727101980
_PROTOCOL_ID_BYTES = PROTOCOL_ID.to_bytes(8, "big")
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
EVENTS = {0: "", 1: "completed", 2: "started", 3: "stopped"}
ANNOUNCE_SIZE = 98
MAX_SCRAPE_HASHES = 74  # what fits in one reply of 8 + 74 * 12 bytes
_U32 = 0xFFFFFFFF

_ANNOUNCE = struct.Struct("!20s20sqqqI4sIiH")  # after the 16-byte header
_HEADER = struct.Struct("!8sI4s")
_REPLY = struct.Struct("!I4s")
_ANNOUNCE_REPLY = struct.Struct("!I4sIII")
_SCRAPE_ENTRY = struct.Struct("!III")


class UdpError(TrackerError):
    """A datagram that is not a valid request. `txid` is None when it is too short to
    answer (such packets are dropped)."""

    kind = "udp_malformed"

    def __init__(self, reason: str, txid: bytes | None, kind: str | None = None) -> None:
        super().__init__(reason, kind)
        self.txid = txid


@dataclass(slots=True, frozen=True)
class ConnectRequest:
    txid: bytes


@dataclass(slots=True, frozen=True)
class AnnounceRequest:
    connection_id: bytes
    txid: bytes
    info_hash: bytes
    peer_id: bytes
    downloaded: int
    left: int
    uploaded: int
    event: str
    ip: bytes  # 4 bytes, all zero for "the sender's"
    key: int
    numwant: int
    port: int


@dataclass(slots=True, frozen=True)
class ScrapeRequest:
    connection_id: bytes
    txid: bytes
    info_hashes: list[bytes]


Request = ConnectRequest | AnnounceRequest | ScrapeRequest


def decode_request(data: bytes) -> Request:
    """Decode a client datagram; raise `UdpError` (and nothing else) if it is malformed."""
    if len(data) < 16:
        raise UdpError("packet too short", None)
    connection_id, action, txid = _HEADER.unpack_from(data)
    if action == CONNECT:
        if connection_id != _PROTOCOL_ID_BYTES:
            raise UdpError("wrong protocol id", txid)
        return ConnectRequest(txid)
    if action == ANNOUNCE:
        if len(data) < ANNOUNCE_SIZE:  # longer is allowed: BEP 41 options follow
            raise UdpError("announce too short", txid)
        (info_hash, peer_id, downloaded, left, uploaded, event, ip, key, numwant,
         port) = _ANNOUNCE.unpack_from(data, 16)
        if event not in EVENTS:
            raise UdpError("unknown event", txid)
        if port == 0:
            raise UdpError("invalid port", txid)
        if downloaded < 0 or left < 0 or uploaded < 0:
            raise UdpError("negative downloaded, left or uploaded", txid)
        return AnnounceRequest(connection_id, txid, info_hash, peer_id, downloaded, left,
                               uploaded, EVENTS[event], ip, key, numwant, port)
    if action == SCRAPE:
        body = len(data) - 16
        if body == 0 or body % 20:
            raise UdpError("scrape needs whole 20-byte info-hashes", txid)
        if body > 20 * MAX_SCRAPE_HASHES:
            raise UdpError(f"at most {MAX_SCRAPE_HASHES} info-hashes per scrape", txid)
        return ScrapeRequest(connection_id, txid,
                             [data[i:i + 20] for i in range(16, len(data), 20)])
    raise UdpError("unknown action", txid)


def encode_connect(txid: bytes, connection_id: bytes) -> bytes:
    return _REPLY.pack(CONNECT, txid) + connection_id


def encode_announce(
    txid: bytes, interval: int, leechers: int, seeders: int, peers: bytes
) -> bytes:
    """`peers` is the concatenated compact entries (6 bytes each, 18 on IPv6)."""
    return _ANNOUNCE_REPLY.pack(
        ANNOUNCE, txid, min(interval, _U32), min(leechers, _U32), min(seeders, _U32)
    ) + peers


def encode_scrape(txid: bytes, entries: list[tuple[int, int, int]]) -> bytes:
    """`entries` are (seeders, completed, leechers) in the order asked."""
    return _REPLY.pack(SCRAPE, txid) + b"".join(
        _SCRAPE_ENTRY.pack(min(s, _U32), min(c, _U32), min(le, _U32)) for s, c, le in entries
    )


def encode_error(txid: bytes, message: str) -> bytes:
    return _REPLY.pack(ERROR, txid) + message.encode()[:200]


class ConnectionIds:
    """Stateless connection IDs bound to the client's address and a time window."""

    def __init__(self, secret: bytes | None = None, window: float = 60.0) -> None:
        self.secret = secret if secret is not None else os.urandom(32)
        self.window = window

    def _mac(self, address: bytes, window: int) -> bytes:
        msg = window.to_bytes(8, "big", signed=True) + address
        return hashlib.blake2b(msg, key=self.secret, digest_size=8).digest()

    def make(self, address: bytes, now: float) -> bytes:
        """An ID for a client at `address` (any bytes naming it, e.g. its packed ip+port)."""
        return self._mac(address, int(now // self.window))

    def check(self, connection_id: bytes, address: bytes, now: float) -> bool:
        window = int(now // self.window)
        return hmac.compare_digest(connection_id, self._mac(address, window)) or (
            hmac.compare_digest(connection_id, self._mac(address, window - 1))
        )
