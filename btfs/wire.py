"""The peer wire protocol (BEP 3, fast extension BEP 6, BEP 10 framing). Pure.

`encode(message)` gives the bytes to send; a `MessageReader` is fed the bytes that
arrive and hands back whole messages. Nothing here touches a socket, so every case,
including a lying or broken peer, is tested directly. A message that cannot be right
(a length that does not fit its kind, a block over `MAX_BLOCK`, an oversized frame)
raises `ProtocolError`; unknown message ids are skipped, as BEP 3 asks. What travels
inside an extended message (BEP 10's handshake, BEP 9's metadata) is `btfs.extensions`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from btfs.errors import BtfsError

PROTOCOL = b"\x13BitTorrent protocol"
HANDSHAKE_LENGTH = 68
MAX_BLOCK = 128 * 1024          # what we accept in a piece message (we request 16 KiB)
MAX_MESSAGE = MAX_BLOCK + 13    # larger frames (other than a bitfield) are refused

# Reserved-byte bits (BEP 4 numbering): byte 5 0x10 = extension protocol, byte 7 0x04 = fast.
_EXTENSION_BYTE, _EXTENSION_BIT = 5, 0x10
_FAST_BYTE, _FAST_BIT = 7, 0x04
_DHT_BYTE, _DHT_BIT = 7, 0x01

_HEADER = struct.Struct(">IB")
_INT = struct.Struct(">I")
_THREE = struct.Struct(">III")
_PIECE_HEADER = struct.Struct(">IBII")


class ProtocolError(BtfsError):
    """The peer sent something the protocol does not allow; drop the connection."""


# Messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    info_hash: bytes
    peer_id: bytes
    fast: bool = True
    extensions: bool = True
    dht: bool = False

    def encode(self) -> bytes:
        reserved = bytearray(8)
        if self.extensions:
            reserved[_EXTENSION_BYTE] |= _EXTENSION_BIT
        if self.fast:
            reserved[_FAST_BYTE] |= _FAST_BIT
        if self.dht:
            reserved[_DHT_BYTE] |= _DHT_BIT
        return PROTOCOL + bytes(reserved) + self.info_hash + self.peer_id

    @classmethod
    def decode(cls, data: bytes) -> Handshake:
        if len(data) != HANDSHAKE_LENGTH or not data.startswith(PROTOCOL):
            raise ProtocolError("not a BitTorrent handshake")
        reserved = data[20:28]
        return cls(
            info_hash=bytes(data[28:48]),
            peer_id=bytes(data[48:68]),
            fast=bool(reserved[_FAST_BYTE] & _FAST_BIT),
            extensions=bool(reserved[_EXTENSION_BYTE] & _EXTENSION_BIT),
            dht=bool(reserved[_DHT_BYTE] & _DHT_BIT),
        )


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class BitfieldMessage:
    bits: bytes


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    port: int


@dataclass(frozen=True, slots=True)
class Suggest:
    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    pass


@dataclass(frozen=True, slots=True)
class HaveNone:
    pass


@dataclass(frozen=True, slots=True)
class RejectRequest:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    index: int


@dataclass(frozen=True, slots=True)
class Extended:
    ext_id: int
    payload: bytes


Message = (
    KeepAlive | Choke | Unchoke | Interested | NotInterested | Have | BitfieldMessage
    | Request | Piece | Cancel | Port | Suggest | HaveAll | HaveNone | RejectRequest
    | AllowedFast | Extended
)

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST = 0x0D, 0x0E, 0x0F, 0x10, 0x11
EXTENDED = 20

_NO_PAYLOAD: dict[type, int] = {
    Choke: CHOKE, Unchoke: UNCHOKE, Interested: INTERESTED, NotInterested: NOT_INTERESTED,
    HaveAll: HAVE_ALL, HaveNone: HAVE_NONE,
}
_ONE_INT: dict[type, int] = {Have: HAVE, Suggest: SUGGEST, AllowedFast: ALLOWED_FAST}
_THREE_INTS: dict[type, int] = {Request: REQUEST, Cancel: CANCEL, RejectRequest: REJECT}
_SIMPLE: dict[int, Message] = {CHOKE: Choke(), UNCHOKE: Unchoke(), INTERESTED: Interested(),
           NOT_INTERESTED: NotInterested(), HAVE_ALL: HaveAll(), HAVE_NONE: HaveNone()}
_FAST_ONLY = {SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST}


def encode(m: Message) -> bytes:
    """The framed bytes of one message."""
    kind = type(m)
    if isinstance(m, Piece):
        return _PIECE_HEADER.pack(9 + len(m.data), PIECE, m.index, m.begin) + m.data
    if kind in _THREE_INTS:
        assert isinstance(m, Request | Cancel | RejectRequest)
        return _HEADER.pack(13, _THREE_INTS[kind]) + _THREE.pack(m.index, m.begin, m.length)
    if kind in _ONE_INT:
        assert isinstance(m, Have | Suggest | AllowedFast)
        return _HEADER.pack(5, _ONE_INT[kind]) + _INT.pack(m.index)
    if kind in _NO_PAYLOAD:
        return _HEADER.pack(1, _NO_PAYLOAD[kind])
    if isinstance(m, KeepAlive):
        return b"\0\0\0\0"
    if isinstance(m, BitfieldMessage):
        return _HEADER.pack(1 + len(m.bits), BITFIELD) + m.bits
    if isinstance(m, Port):
        return _HEADER.pack(3, PORT) + struct.pack(">H", m.port)
    if isinstance(m, Extended):
        return _HEADER.pack(2 + len(m.payload), EXTENDED) + bytes([m.ext_id]) + m.payload
    raise TypeError(f"not a wire message: {m!r}")


# Reading -----------------------------------------------------------------------------


class MessageReader:
    """Turns the bytes a peer sends into messages: handshake first, then frames.

    `num_pieces` (known once the torrent is) bounds the size of a bitfield frame;
    `fast` says whether the fast extension was negotiated, since its messages are a
    protocol error otherwise.
    """

    def __init__(self, num_pieces: int | None = None) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._handshake_done = False
        self.num_pieces = num_pieces
        self.fast = True

    def set_num_pieces(self, num_pieces: int) -> None:
        self.num_pieces = num_pieces

    def feed(self, data: bytes | bytearray) -> None:
        if self._pos and self._pos >= len(self._buffer) // 2:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    def handshake(self) -> Handshake | None:
        """The peer's 68-byte handshake once it has arrived (call before messages)."""
        if self._handshake_done:
            raise ProtocolError("handshake already read")
        buf = self._buffer
        available = len(buf) - self._pos
        prefix = min(available, len(PROTOCOL))
        if bytes(buf[self._pos : self._pos + prefix]) != PROTOCOL[:prefix]:
            raise ProtocolError("not a BitTorrent handshake")
        if available < HANDSHAKE_LENGTH:
            return None
        hs = Handshake.decode(bytes(buf[self._pos : self._pos + HANDSHAKE_LENGTH]))
        self._pos += HANDSHAKE_LENGTH
        self._handshake_done = True
        return hs

    def _max_frame(self) -> int:
        if self.num_pieces is None:
            return MAX_MESSAGE
        return max(MAX_MESSAGE, 1 + (self.num_pieces + 7) // 8)

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes arrive."""
        while True:
            buf = self._buffer
            pos = self._pos
            if len(buf) - pos < 4:
                return None
            (length,) = _INT.unpack_from(buf, pos)
            if length == 0:
                self._pos = pos + 4
                return KeepAlive()
            if length > self._max_frame():
                raise ProtocolError(f"message of {length} bytes is too long")
            end = pos + 4 + length
            if len(buf) < end:
                return None
            self._pos = end
            message = self._decode(buf, pos + 4, length)
            if message is not None:
                return message

    def _decode(self, buf: bytearray, start: int, length: int) -> Message | None:
        kind = buf[start]
        body = length - 1
        if kind == PIECE:
            if body < 8:
                raise ProtocolError("short piece message")
            if body - 8 > MAX_BLOCK:
                raise ProtocolError("block too large")
            index, begin = struct.unpack_from(">II", buf, start + 1)
            return Piece(index, begin, bytes(buf[start + 9 : start + length]))
        if kind in (REQUEST, CANCEL, REJECT):
            if body != 12:
                raise ProtocolError(f"message {kind} has {body} bytes, not 12")
            self._check_fast(kind)
            index, begin, blen = _THREE.unpack_from(buf, start + 1)
            if kind == REQUEST:
                return Request(index, begin, blen)
            if kind == CANCEL:
                return Cancel(index, begin, blen)
            return RejectRequest(index, begin, blen)
        if kind in (HAVE, SUGGEST, ALLOWED_FAST):
            if body != 4:
                raise ProtocolError(f"message {kind} has {body} bytes, not 4")
            self._check_fast(kind)
            (index,) = _INT.unpack_from(buf, start + 1)
            if kind == HAVE:
                return Have(index)
            if kind == SUGGEST:
                return Suggest(index)
            return AllowedFast(index)
        if kind in _SIMPLE:
            if body != 0:
                raise ProtocolError(f"message {kind} has a payload")
            self._check_fast(kind)
            simple: Message = _SIMPLE[kind]
            return simple
        if kind == BITFIELD:
            return BitfieldMessage(bytes(buf[start + 1 : start + length]))
        if kind == PORT:
            if body != 2:
                raise ProtocolError("port message is not 2 bytes")
            return Port(struct.unpack_from(">H", buf, start + 1)[0])
        if kind == EXTENDED:
            if body < 1:
                raise ProtocolError("empty extended message")
            return Extended(buf[start + 1], bytes(buf[start + 2 : start + length]))
        return None

    def _check_fast(self, kind: int) -> None:
        if kind in _FAST_ONLY and not self.fast:
            raise ProtocolError(f"fast-extension message {kind} without the fast extension")


def allowed_fast_set(info_hash: bytes, ip: str, num_pieces: int, k: int = 10) -> list[int]:
    """BEP 6's canonical allowed-fast pieces for a peer at IPv4 address `ip`."""
    import hashlib
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if addr.version != 4 or num_pieces == 0:
        return []
    k = min(k, num_pieces)
    x = bytes(bytearray(addr.packed)[:3]) + b"\0" + info_hash
    result: list[int] = []
    while len(result) < k:
        x = hashlib.sha1(x).digest()
        for i in range(0, 20, 4):
            if len(result) >= k:
                break
            index = _INT.unpack_from(x, i)[0] % num_pieces
            if index not in result:
                result.append(index)
    return result
