"""BEP 15 (the UDP tracker protocol) packets, both directions: the client encodes
requests and decodes answers, the tracker decodes requests and encodes answers.

Transaction ids (4 bytes) and connection ids (8 bytes) stay `bytes`: they are opaque
tokens, echoed or compared, never computed with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from btfs.errors import BtfsError
from btfs.trackerwire.events import UDP_CODES, UDP_EVENTS

PROTOCOL_ID = 0x41727101980
PROTOCOL_ID_BYTES = PROTOCOL_ID.to_bytes(8, "big")
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
ANNOUNCE_SIZE = 98
MAX_SCRAPE_HASHES = 74  # what fits in one answer of 8 + 74 * 12 bytes
_U32 = 0xFFFFFFFF

_HEADER = struct.Struct("!8sI4s")  # connection id, action, transaction id
_ANNOUNCE = struct.Struct("!20s20sqqqI4sIiH")  # after the header
_ANSWER_HEADER = struct.Struct("!I4s")  # action, transaction id
_ANNOUNCE_ANSWER = struct.Struct("!I4sIII")
_SCRAPE_ENTRY = struct.Struct("!III")


class MalformedPacket(BtfsError):
    """Bytes that are not a valid packet. `txid` is the transaction id when the packet
    is long enough to carry one (a tracker answers those with an error packet)."""

    def __init__(self, reason: str, txid: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.txid = txid


# ------------------------------------------------------------------ requests


@dataclass(slots=True, frozen=True)
class ConnectRequest:
    txid: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(PROTOCOL_ID_BYTES, CONNECT, self.txid)


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
    key: int  # the announce key: tells the tracker it is us again from a new address
    numwant: int  # -1: the tracker's default
    port: int

    def encode(self) -> bytes:
        return _HEADER.pack(self.connection_id, ANNOUNCE, self.txid) + _ANNOUNCE.pack(
            self.info_hash, self.peer_id, self.downloaded, self.left, self.uploaded,
            UDP_CODES[self.event], self.ip, self.key & _U32, self.numwant, self.port,
        )


@dataclass(slots=True, frozen=True)
class ScrapeRequest:
    connection_id: bytes
    txid: bytes
    info_hashes: list[bytes]

    def encode(self) -> bytes:
        if not 0 < len(self.info_hashes) <= MAX_SCRAPE_HASHES or any(
            len(h) != 20 for h in self.info_hashes
        ):
            raise ValueError(f"a UDP scrape takes 1 to {MAX_SCRAPE_HASHES} 20-byte info-hashes")
        return _HEADER.pack(self.connection_id, SCRAPE, self.txid) + b"".join(self.info_hashes)


Request = ConnectRequest | AnnounceRequest | ScrapeRequest


def decode_request(data: bytes) -> Request:
    """A client's datagram; `MalformedPacket` (and nothing else) if it is not valid."""
    if len(data) < 16:
        raise MalformedPacket("packet too short", None)
    connection_id, action, txid = _HEADER.unpack_from(data)
    if action == CONNECT:
        if connection_id != PROTOCOL_ID_BYTES:
            raise MalformedPacket("wrong protocol id", txid)
        return ConnectRequest(txid)
    if action == ANNOUNCE:
        if len(data) < ANNOUNCE_SIZE:  # longer is allowed: BEP 41 options follow
            raise MalformedPacket("announce too short", txid)
        (info_hash, peer_id, downloaded, left, uploaded, event, ip, key, numwant,
         port) = _ANNOUNCE.unpack_from(data, 16)
        name = UDP_EVENTS.get(event)
        if name is None:
            raise MalformedPacket("unknown event", txid)
        if port == 0:
            raise MalformedPacket("invalid port", txid)
        if downloaded < 0 or left < 0 or uploaded < 0:
            raise MalformedPacket("negative downloaded, left or uploaded", txid)
        return AnnounceRequest(connection_id, txid, info_hash, peer_id, downloaded, left,
                               uploaded, name, ip, key, numwant, port)
    if action == SCRAPE:
        body = len(data) - 16
        if body == 0 or body % 20:
            raise MalformedPacket("scrape needs whole 20-byte info-hashes", txid)
        if body > 20 * MAX_SCRAPE_HASHES:
            raise MalformedPacket(f"at most {MAX_SCRAPE_HASHES} info-hashes per scrape", txid)
        return ScrapeRequest(connection_id, txid,
                             [data[i:i + 20] for i in range(16, len(data), 20)])
    raise MalformedPacket("unknown action", txid)


# ------------------------------------------------------------------ answers


def encode_connect(txid: bytes, connection_id: bytes) -> bytes:
    return _ANSWER_HEADER.pack(CONNECT, txid) + connection_id


def encode_announce(
    txid: bytes, interval: int, leechers: int, seeders: int, peers: bytes
) -> bytes:
    """`peers` is the concatenated compact entries (6 bytes each, 18 on IPv6)."""
    return _ANNOUNCE_ANSWER.pack(
        ANNOUNCE, txid, min(interval, _U32), min(leechers, _U32), min(seeders, _U32)
    ) + peers


def encode_scrape(txid: bytes, entries: list[tuple[int, int, int]]) -> bytes:
    """`entries` are (seeders, completed, leechers) in the order asked."""
    return _ANSWER_HEADER.pack(SCRAPE, txid) + b"".join(
        _SCRAPE_ENTRY.pack(min(s, _U32), min(c, _U32), min(le, _U32)) for s, c, le in entries
    )


def encode_error(txid: bytes, message: str) -> bytes:
    return _ANSWER_HEADER.pack(ERROR, txid) + message.encode()[:200]


@dataclass(slots=True, frozen=True)
class ConnectAnswer:
    txid: bytes
    connection_id: bytes


@dataclass(slots=True, frozen=True)
class AnnounceAnswer:
    txid: bytes
    interval: int
    leechers: int
    seeders: int
    peers: bytes  # compact entries, of the family the request came over


@dataclass(slots=True, frozen=True)
class ScrapeAnswer:
    txid: bytes
    entries: list[tuple[int, int, int]]  # (seeders, completed, leechers), in the order asked


@dataclass(slots=True, frozen=True)
class ErrorAnswer:
    txid: bytes
    message: str


Answer = ConnectAnswer | AnnounceAnswer | ScrapeAnswer | ErrorAnswer


def transaction_id(data: bytes) -> bytes | None:
    """The transaction id of an answer, or None if it is too short to carry one."""
    return data[4:8] if len(data) >= 8 else None


def decode_answer(data: bytes) -> Answer:
    """A tracker's datagram; `MalformedPacket` (and nothing else) if it is not valid.

    An 8-byte announce answer (what opentracker sends for a torrent not on its
    whitelist) is malformed with a reason that says it is a refusal.
    """
    if len(data) < 8:
        raise MalformedPacket(f"answer of {len(data)} bytes is too short", None)
    action, txid = _ANSWER_HEADER.unpack_from(data)
    if action == CONNECT:
        if len(data) < 16:
            raise MalformedPacket(f"connect answer of {len(data)} bytes is too short", txid)
        return ConnectAnswer(txid, data[8:16])
    if action == ANNOUNCE:
        if len(data) == 8:
            raise MalformedPacket("announce refused (an 8-byte answer)", txid)
        if len(data) < 20:
            raise MalformedPacket(f"announce answer of {len(data)} bytes is too short", txid)
        _, _, interval, leechers, seeders = _ANNOUNCE_ANSWER.unpack_from(data)
        return AnnounceAnswer(txid, interval, leechers, seeders, data[20:])
    if action == SCRAPE:
        entries = [_SCRAPE_ENTRY.unpack_from(data, offset)
                   for offset in range(8, len(data) - 11, 12)]
        return ScrapeAnswer(txid, entries)
    if action == ERROR:
        return ErrorAnswer(txid, data[8:].decode("utf-8", "replace"))
    raise MalformedPacket(f"unknown action {action}", txid)
