"""What travels inside BEP 10 extended messages: the extension handshake and BEP 9's
`ut_metadata` messages, with the assembly of the info dictionary from its pieces. Pure.

`btfs.wire` frames an extended message (`Extended(ext_id, payload)`); this module
encodes and decodes its payload. Peer exchange (BEP 11) has its own module, `btfs.pex`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from btfs import bencode
from btfs.errors import BencodeError, BtfsError
from btfs.wire import ProtocolError

# The extension handshake (BEP 10) --------------------------------------------------------


@dataclass
class ExtensionHandshake:
    """The fields of a BEP 10 handshake that btfs uses; other keys are ignored."""

    extensions: dict[str, int] = field(default_factory=dict)
    client: str | None = None
    reqq: int | None = None
    listen_port: int | None = None
    yourip: bytes | None = None
    metadata_size: int | None = None
    prefers_encryption: bool = False  # `e` (MSE), what PEX's flag 0x01 passes on
    upload_only: bool = False  # BEP 21 `upload_only`: a partial seed, for PEX's flag 0x02

    def encode(self) -> bytes:
        d: dict[bytes, Any] = {b"m": {k.encode(): v for k, v in self.extensions.items()}}
        if self.client is not None:
            d[b"v"] = self.client.encode()
        if self.reqq is not None:
            d[b"reqq"] = self.reqq
        if self.listen_port is not None:
            d[b"p"] = self.listen_port
        if self.yourip is not None:
            d[b"yourip"] = self.yourip
        if self.metadata_size is not None:
            d[b"metadata_size"] = self.metadata_size
        return bencode.encode(d)

    @classmethod
    def decode(cls, payload: bytes) -> ExtensionHandshake:
        try:
            d = bencode.decode(payload)
        except BencodeError as exc:
            raise ProtocolError(f"bad extension handshake: {exc}") from exc
        if not isinstance(d, dict):
            raise ProtocolError("extension handshake is not a dictionary")
        hs = cls()
        m = d.get(b"m")
        if isinstance(m, dict):
            for key, value in m.items():
                if isinstance(key, bytes) and isinstance(value, int) and 0 <= value < 256:
                    hs.extensions[key.decode("utf-8", "replace")] = value
        v = d.get(b"v")
        if isinstance(v, bytes):
            hs.client = v.decode("utf-8", "replace")[:64]
        reqq = d.get(b"reqq")
        if isinstance(reqq, int) and reqq > 0:
            hs.reqq = reqq
        p = d.get(b"p")
        if isinstance(p, int) and 0 < p < 65536:
            hs.listen_port = p
        yourip = d.get(b"yourip")
        if isinstance(yourip, bytes) and len(yourip) in (4, 16):
            hs.yourip = yourip
        size = d.get(b"metadata_size")
        if isinstance(size, int) and size > 0:
            hs.metadata_size = size
        hs.prefers_encryption = d.get(b"e") == 1
        hs.upload_only = d.get(b"upload_only") == 1
        return hs


# Metadata exchange (BEP 9) ------------------------------------------------------------

PIECE_SIZE = 16 * 1024
MAX_METADATA = 16 << 20
UT_METADATA_ID = 3  # the id peers use for ut_metadata messages to us
REQUEST, DATA, REJECT = 0, 1, 2

# BEP 54 (`lt_donthave`): a piece the sender no longer has (here: evicted from a bounded
# cache). Its payload is the piece index, 4 bytes big-endian.
LT_DONTHAVE_ID = 7  # the id peers use for lt_donthave messages to us


class MetadataError(BtfsError):
    """A peer's metadata message is malformed or its data does not hash to the torrent."""


@dataclass(frozen=True)
class MetadataMessage:
    kind: int
    piece: int
    total_size: int | None = None
    data: bytes = b""


def encode_request(piece: int) -> bytes:
    return bencode.encode({b"msg_type": REQUEST, b"piece": piece})


def encode_reject(piece: int) -> bytes:
    return bencode.encode({b"msg_type": REJECT, b"piece": piece})


def encode_data(piece: int, raw_info: bytes) -> bytes:
    chunk = raw_info[piece * PIECE_SIZE : (piece + 1) * PIECE_SIZE]
    header = {b"msg_type": DATA, b"piece": piece, b"total_size": len(raw_info)}
    return bencode.encode(header) + chunk


def parse_message(payload: bytes) -> MetadataMessage:
    """A ut_metadata message: a bencoded dictionary, then the data for `data` messages."""
    try:
        header, end = bencode.decode_prefix(payload)
    except BencodeError as exc:
        raise MetadataError(f"bad metadata message: {exc}") from exc
    if not isinstance(header, dict):
        raise MetadataError("metadata message is not a dictionary")
    kind, piece = header.get(b"msg_type"), header.get(b"piece")
    if kind not in (REQUEST, DATA, REJECT) or not isinstance(piece, int) or piece < 0:
        raise MetadataError("metadata message without a valid msg_type and piece")
    assert isinstance(kind, int)
    total = header.get(b"total_size")
    if kind == DATA and (not isinstance(total, int) or not 0 < total <= MAX_METADATA):
        raise MetadataError("metadata data message without a valid total_size")
    return MetadataMessage(kind, piece, total if isinstance(total, int) else None,
                           payload[end:] if kind == DATA else b"")


class MetadataAssembler:
    """Pieces of the info dictionary as they arrive; checks the whole against the hash."""

    def __init__(self, info_hash: bytes, size: int) -> None:
        if not 0 < size <= MAX_METADATA:
            raise MetadataError(f"metadata size {size} out of range")
        self.info_hash = info_hash
        self.size = size
        self.count = math.ceil(size / PIECE_SIZE)
        self.pieces: dict[int, bytes] = {}

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.pieces]

    def add(self, piece: int, data: bytes) -> bytes | None:
        """Keep a piece; the whole info dictionary once complete and verified, else None."""
        expected = min(PIECE_SIZE, self.size - piece * PIECE_SIZE)
        if not 0 <= piece < self.count or len(data) != expected:
            raise MetadataError(f"metadata piece {piece} of {len(data)} bytes does not fit")
        self.pieces[piece] = data
        if len(self.pieces) < self.count:
            return None
        raw = b"".join(self.pieces[i] for i in range(self.count))
        if hashlib.sha1(raw).digest() != self.info_hash:
            self.pieces.clear()
            raise MetadataError("metadata does not match the info-hash")
        return raw
