"""The peer wire protocol: BEP 3 framing, BEP 6 fast extension, BEP 10 handshake."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs import bencode, wire
from btfs.errors import BtfsError
from btfs.extensions import ExtensionHandshake
from btfs.wire import (
    HANDSHAKE_LENGTH,
    MAX_BLOCK,
    MAX_MESSAGE,
    PROTOCOL,
    AllowedFast,
    BitfieldMessage,
    Cancel,
    Choke,
    Extended,
    Handshake,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    MessageReader,
    NotInterested,
    Piece,
    Port,
    ProtocolError,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
    allowed_fast_set,
    encode,
)

INFO_HASH = bytes(range(20))
PEER_ID = b"-BT0001-abcdefghijkl"

ALL_KINDS: list[wire.Message] = [
    KeepAlive(),
    Choke(),
    Unchoke(),
    Interested(),
    NotInterested(),
    Have(7),
    BitfieldMessage(b"\xff\x80"),
    Request(1, 16384, 16384),
    Piece(3, 32768, b"block data" * 10),
    Piece(0, 0, b""),
    Cancel(1, 16384, 16384),
    Port(6881),
    Suggest(4),
    HaveAll(),
    HaveNone(),
    RejectRequest(2, 0, 16384),
    AllowedFast(9),
    Extended(0, b"d1:md6:ut_pexi1eee"),
    Extended(3, b""),
]


def after_handshake(**kwargs: object) -> MessageReader:
    reader = MessageReader(**kwargs)  # type: ignore[arg-type]
    reader.feed(Handshake(INFO_HASH, PEER_ID).encode())
    assert reader.handshake() is not None
    return reader


def drain(reader: MessageReader) -> list[wire.Message]:
    out = []
    while (m := reader.next_message()) is not None:
        out.append(m)
    return out


def frame(message_id: int, payload: bytes = b"") -> bytes:
    """A frame written out by hand: 4-byte big-endian length, id, payload."""
    return struct.pack(">I", 1 + len(payload)) + bytes([message_id]) + payload


# Round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("message", ALL_KINDS, ids=lambda m: type(m).__name__)
def test_round_trip_each_kind(message: wire.Message) -> None:
    reader = after_handshake()
    reader.feed(encode(message))
    assert reader.next_message() == message
    assert reader.next_message() is None
    assert reader.buffered == 0


@pytest.mark.parametrize("message", ALL_KINDS, ids=lambda m: type(m).__name__)
def test_round_trip_byte_by_byte(message: wire.Message) -> None:
    reader = after_handshake()
    data = encode(message)
    got = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        m = reader.next_message()
        if i < len(data) - 1:
            assert m is None, f"message complete after {i + 1} of {len(data)} bytes"
        else:
            got.append(m)
    assert got == [message]


def test_many_messages_in_one_chunk() -> None:
    reader = after_handshake()
    messages = ALL_KINDS * 3
    reader.feed(b"".join(encode(m) for m in messages))
    assert drain(reader) == messages
    assert reader.buffered == 0


def test_handshake_and_messages_in_one_chunk() -> None:
    reader = MessageReader()
    reader.feed(Handshake(INFO_HASH, PEER_ID).encode() + encode(Have(1)) + encode(Unchoke()))
    hs = reader.handshake()
    assert hs is not None and hs.info_hash == INFO_HASH and hs.peer_id == PEER_ID
    assert drain(reader) == [Have(1), Unchoke()]


def test_everything_byte_by_byte_including_handshake() -> None:
    reader = MessageReader()
    data = Handshake(INFO_HASH, PEER_ID).encode() + b"".join(encode(m) for m in ALL_KINDS)
    hs = None
    got: list[wire.Message] = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        if hs is None:
            hs = reader.handshake()
            if hs is None:
                assert i < HANDSHAKE_LENGTH - 1
            continue
        got.extend(drain(reader))
    assert hs == Handshake(INFO_HASH, PEER_ID)
    assert got == ALL_KINDS


messages = st.one_of(
    st.sampled_from([KeepAlive(), Choke(), Unchoke(), Interested(), NotInterested(),
                     HaveAll(), HaveNone()]),
    st.builds(Have, st.integers(0, 2**32 - 1)),
    st.builds(Suggest, st.integers(0, 2**32 - 1)),
    st.builds(AllowedFast, st.integers(0, 2**32 - 1)),
    st.builds(BitfieldMessage, st.binary(max_size=40)),
    *(
        st.builds(kind, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                  st.integers(0, 2**32 - 1))
        for kind in (Request, Cancel, RejectRequest)
    ),
    st.builds(Piece, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              st.binary(max_size=300)),
    st.builds(Port, st.integers(0, 65535)),
    st.builds(Extended, st.integers(0, 255), st.binary(max_size=60)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(messages, max_size=20), st.lists(st.integers(1, 50), min_size=1), st.data())
def test_round_trip_random_messages_random_chunks(
    msgs: list[wire.Message], sizes: list[int], data: st.DataObject
) -> None:
    reader = after_handshake()
    stream = b"".join(encode(m) for m in msgs)
    got: list[wire.Message] = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        i += 1
        reader.feed(stream[pos : pos + n])
        pos += n
        got.extend(drain(reader))
    assert got == msgs
    assert reader.buffered == 0


# Exact wire bytes (BEP 3 layout written out by hand) ---------------------------------


@pytest.mark.parametrize(
    "message, expected",
    [
        (KeepAlive(), b"\x00\x00\x00\x00"),
        (Choke(), b"\x00\x00\x00\x01\x00"),
        (Unchoke(), b"\x00\x00\x00\x01\x01"),
        (Interested(), b"\x00\x00\x00\x01\x02"),
        (NotInterested(), b"\x00\x00\x00\x01\x03"),
        (Have(0x01020304), b"\x00\x00\x00\x05\x04\x01\x02\x03\x04"),
        (BitfieldMessage(b"\xa5\x80"), b"\x00\x00\x00\x03\x05\xa5\x80"),
        (
            Request(1, 2, 16384),
            b"\x00\x00\x00\x0d\x06" b"\x00\x00\x00\x01" b"\x00\x00\x00\x02" b"\x00\x00\x40\x00",
        ),
        (
            Piece(5, 0x4000, b"abc"),
            b"\x00\x00\x00\x0c\x07" b"\x00\x00\x00\x05" b"\x00\x00\x40\x00" b"abc",
        ),
        (
            Cancel(1, 2, 16384),
            b"\x00\x00\x00\x0d\x08" b"\x00\x00\x00\x01" b"\x00\x00\x00\x02" b"\x00\x00\x40\x00",
        ),
        (Port(6881), b"\x00\x00\x00\x03\x09\x1a\xe1"),
        # BEP 6
        (Suggest(3), b"\x00\x00\x00\x05\x0d\x00\x00\x00\x03"),
        (HaveAll(), b"\x00\x00\x00\x01\x0e"),
        (HaveNone(), b"\x00\x00\x00\x01\x0f"),
        (
            RejectRequest(1, 2, 3),
            b"\x00\x00\x00\x0d\x10" b"\x00\x00\x00\x01" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03",
        ),
        (AllowedFast(0x100), b"\x00\x00\x00\x05\x11\x00\x00\x01\x00"),
        # BEP 10
        (Extended(0, b"de"), b"\x00\x00\x00\x04\x14\x00de"),
        (Extended(2, b"xyz"), b"\x00\x00\x00\x05\x14\x02xyz"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, bytes) else "",
)
def test_exact_wire_bytes(message: wire.Message, expected: bytes) -> None:
    assert encode(message) == expected
    reader = after_handshake()
    reader.feed(expected)
    assert reader.next_message() == message


def test_encode_rejects_a_non_message() -> None:
    with pytest.raises(TypeError):
        encode("hello")  # type: ignore[arg-type]


# Handshake ---------------------------------------------------------------------------


def test_handshake_layout() -> None:
    data = Handshake(INFO_HASH, PEER_ID, fast=False, extensions=False).encode()
    assert len(data) == HANDSHAKE_LENGTH == 68
    assert data[0] == 19
    assert data[1:20] == b"BitTorrent protocol"
    assert data[20:28] == bytes(8)
    assert data[28:48] == INFO_HASH
    assert data[48:68] == PEER_ID


@pytest.mark.parametrize(
    "fast, extensions, dht, reserved",
    [
        (False, False, False, bytes(8)),
        (True, False, False, b"\0\0\0\0\0\0\0\x04"),
        (False, True, False, b"\0\0\0\0\0\x10\0\0"),
        (False, False, True, b"\0\0\0\0\0\0\0\x01"),
        (True, True, True, b"\0\0\0\0\0\x10\0\x05"),
    ],
)
def test_handshake_reserved_bits(fast: bool, extensions: bool, dht: bool, reserved: bytes) -> None:
    hs = Handshake(INFO_HASH, PEER_ID, fast=fast, extensions=extensions, dht=dht)
    data = hs.encode()
    assert data[20:28] == reserved
    assert Handshake.decode(data) == hs


def test_handshake_defaults() -> None:
    hs = Handshake(INFO_HASH, PEER_ID)
    assert hs.fast and hs.extensions and not hs.dht


def test_decode_libtorrent_style_handshake() -> None:
    # Built by hand from BEP 3: pstrlen, pstr, 8 reserved bytes, info_hash, peer_id.
    # libtorrent sets the extension bit (byte 5, 0x10), fast (byte 7, 0x04), dht (byte 7, 0x01)
    # and also other bits we do not know, which must be ignored.
    info_hash = bytes.fromhex("aa" * 20)
    peer_id = b"-LT2090-" + b"0123456789ab"
    reserved = bytes([0, 0, 0, 0, 0, 0x10 | 0x08, 0, 0x04 | 0x01])
    data = b"\x13" + b"BitTorrent protocol" + reserved + info_hash + peer_id
    assert len(data) == 68
    hs = Handshake.decode(data)
    assert hs == Handshake(info_hash, peer_id, fast=True, extensions=True, dht=True)

    reader = MessageReader()
    reader.feed(data + encode(Extended(0, b"de")))
    assert reader.handshake() == hs
    assert reader.next_message() == Extended(0, b"de")


def test_handshake_only_reserved_bits_we_know_of() -> None:
    reserved = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0xFF, 0xFA])  # all but ours
    data = PROTOCOL + reserved + INFO_HASH + PEER_ID
    hs = Handshake.decode(data)
    assert (hs.fast, hs.extensions, hs.dht) == (False, False, False)


def test_handshake_waits_for_all_68_bytes() -> None:
    reader = MessageReader()
    data = Handshake(INFO_HASH, PEER_ID).encode()
    assert reader.handshake() is None  # nothing yet
    for i in range(67):
        reader.feed(data[i : i + 1])
        assert reader.handshake() is None
    reader.feed(data[67:])
    assert reader.handshake() == Handshake(INFO_HASH, PEER_ID)
    assert reader.buffered == 0


@pytest.mark.parametrize(
    "data",
    [
        b"GET /announce HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(40),
        b"\x13BitTorrent protocoX" + bytes(48),
        b"\x12BitTorrent protocol" + bytes(48),
        b"\x00" * 68,
    ],
)
def test_not_a_bittorrent_handshake(data: bytes) -> None:
    reader = MessageReader()
    reader.feed(data)
    with pytest.raises(ProtocolError):
        reader.handshake()
    with pytest.raises(ProtocolError):
        Handshake.decode(data[:68])


def test_wrong_handshake_detected_from_its_first_bytes() -> None:
    reader = MessageReader()
    reader.feed(b"GET")
    with pytest.raises(ProtocolError):
        reader.handshake()


@pytest.mark.parametrize("length", [0, 20, 67, 69])
def test_handshake_decode_wrong_length(length: int) -> None:
    data = (Handshake(INFO_HASH, PEER_ID).encode() + b"x")[:length]
    with pytest.raises(ProtocolError):
        Handshake.decode(data)


def test_handshake_read_twice_is_an_error() -> None:
    reader = after_handshake()
    with pytest.raises(ProtocolError):
        reader.handshake()


def test_protocol_error_is_a_btfs_error() -> None:
    assert issubclass(ProtocolError, BtfsError)


# Keep-alive --------------------------------------------------------------------------


def test_keep_alives_between_messages() -> None:
    reader = after_handshake()
    reader.feed(b"\0\0\0\0" * 3 + encode(Have(2)) + b"\0\0\0\0")
    assert drain(reader) == [KeepAlive(), KeepAlive(), KeepAlive(), Have(2), KeepAlive()]


def test_partial_length_prefix_waits() -> None:
    reader = after_handshake()
    reader.feed(b"\0\0\0")
    assert reader.next_message() is None
    reader.feed(b"\0")
    assert reader.next_message() == KeepAlive()


# Errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        frame(wire.HAVE, b"\0\0\0"),
        frame(wire.HAVE, b"\0\0\0\0\0"),
        frame(wire.HAVE),
        frame(wire.REQUEST, bytes(11)),
        frame(wire.REQUEST, bytes(13)),
        frame(wire.CANCEL, bytes(8)),
        frame(wire.CANCEL, bytes(16)),
        frame(wire.REJECT, bytes(12 + 1)),
        frame(wire.SUGGEST, bytes(3)),
        frame(wire.ALLOWED_FAST, bytes(5)),
        frame(wire.CHOKE, b"\0"),
        frame(wire.UNCHOKE, b"xy"),
        frame(wire.INTERESTED, b"\0"),
        frame(wire.NOT_INTERESTED, b"\0"),
        frame(wire.HAVE_ALL, b"\0"),
        frame(wire.HAVE_NONE, b"\0"),
        frame(wire.PORT, b"\0"),
        frame(wire.PORT, b"\0\0\0"),
        frame(wire.PIECE, bytes(7)),
        frame(wire.PIECE),
        frame(wire.EXTENDED),
    ],
    ids=lambda d: d.hex(),
)
def test_wrong_length_is_a_protocol_error(data: bytes) -> None:
    reader = after_handshake()
    reader.feed(data)
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_oversize_frame_refused_from_its_header() -> None:
    reader = after_handshake()
    reader.feed(struct.pack(">IB", MAX_MESSAGE + 1, wire.PIECE))  # body never arrives
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_huge_length_refused() -> None:
    reader = after_handshake()
    reader.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_frame_of_max_message_accepted() -> None:
    reader = after_handshake()
    reader.feed(struct.pack(">IB", MAX_MESSAGE, 99) + bytes(MAX_MESSAGE - 1) + encode(Have(1)))
    assert reader.next_message() == Have(1)  # unknown id 99 skipped


def test_piece_of_max_block_accepted() -> None:
    reader = after_handshake()
    block = bytes(range(256)) * (MAX_BLOCK // 256)
    reader.feed(encode(Piece(1, 0, block)))
    assert reader.next_message() == Piece(1, 0, block)


def test_piece_block_over_max_block_refused() -> None:
    reader = after_handshake()
    reader.feed(encode(Piece(1, 0, bytes(MAX_BLOCK + 1))))
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_piece_block_over_max_block_refused_even_with_a_big_bitfield_allowance() -> None:
    reader = after_handshake(num_pieces=8 * 300_000)  # bitfield frames may be ~300 kB
    reader.feed(encode(Piece(1, 0, bytes(MAX_BLOCK + 1000))))
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_big_bitfield_allowed_when_num_pieces_known() -> None:
    num_pieces = 8 * 200_000
    bits = b"\xff" * (num_pieces // 8)
    reader = after_handshake()
    reader.feed(encode(BitfieldMessage(bits)))
    with pytest.raises(ProtocolError):
        reader.next_message()

    reader = after_handshake(num_pieces=num_pieces)
    reader.feed(encode(BitfieldMessage(bits)))
    assert reader.next_message() == BitfieldMessage(bits)

    reader = after_handshake()
    reader.set_num_pieces(num_pieces)
    reader.feed(encode(BitfieldMessage(bits)))
    assert reader.next_message() == BitfieldMessage(bits)


def test_frame_over_bitfield_allowance_refused() -> None:
    num_pieces = 8 * 200_000
    reader = after_handshake(num_pieces=num_pieces)
    reader.feed(struct.pack(">IB", 1 + num_pieces // 8 + 1, wire.BITFIELD))
    with pytest.raises(ProtocolError):
        reader.next_message()


@pytest.mark.parametrize(
    "message",
    [Suggest(1), HaveAll(), HaveNone(), RejectRequest(1, 0, 16384), AllowedFast(3)],
    ids=lambda m: type(m).__name__,
)
def test_fast_messages_refused_without_fast_extension(message: wire.Message) -> None:
    reader = after_handshake()
    reader.fast = False
    reader.feed(encode(message))
    with pytest.raises(ProtocolError):
        reader.next_message()


def test_non_fast_messages_fine_without_fast_extension() -> None:
    reader = after_handshake()
    reader.fast = False
    plain = [m for m in ALL_KINDS
             if not isinstance(m, Suggest | HaveAll | HaveNone | RejectRequest | AllowedFast)]
    reader.feed(b"".join(encode(m) for m in plain))
    assert drain(reader) == plain


@pytest.mark.parametrize("message_id", [10, 11, 12, 18, 19, 21, 99, 255])
def test_unknown_message_ids_skipped(message_id: int) -> None:
    reader = after_handshake()
    reader.feed(frame(message_id, b"whatever payload") + frame(message_id) + encode(Have(5)))
    assert reader.next_message() == Have(5)
    assert reader.next_message() is None


def test_unknown_message_split_across_feeds() -> None:
    reader = after_handshake()
    data = frame(42, bytes(100)) + encode(Interested())
    reader.feed(data[:50])
    assert reader.next_message() is None
    reader.feed(data[50:])
    assert reader.next_message() == Interested()


def test_only_unknown_messages_give_none() -> None:
    reader = after_handshake()
    reader.feed(frame(50, b"abc") * 5)
    assert reader.next_message() is None
    assert reader.buffered == 0


# Extension handshake (BEP 10) --------------------------------------------------------


def test_extension_handshake_round_trip() -> None:
    hs = ExtensionHandshake(
        extensions={"ut_metadata": 3, "ut_pex": 1},
        client="btfs 0.1",
        reqq=250,
        listen_port=6881,
        yourip=bytes([10, 0, 0, 1]),
        metadata_size=31235,
    )
    assert ExtensionHandshake.decode(hs.encode()) == hs


def test_extension_handshake_minimal() -> None:
    hs = ExtensionHandshake()
    assert bencode.decode(hs.encode()) == {b"m": {}}
    assert ExtensionHandshake.decode(hs.encode()) == hs


def test_extension_handshake_encoded_keys() -> None:
    hs = ExtensionHandshake(extensions={"ut_metadata": 2}, client="x", reqq=5,
                            listen_port=1, yourip=b"\x7f\0\0\x01", metadata_size=9)
    assert bencode.decode(hs.encode()) == {
        b"m": {b"ut_metadata": 2},
        b"v": b"x",
        b"reqq": 5,
        b"p": 1,
        b"yourip": b"\x7f\0\0\x01",
        b"metadata_size": 9,
    }


def test_extension_handshake_from_a_libtorrent_style_dict() -> None:
    payload = bencode.encode({
        b"m": {b"lt_donthave": 7, b"share_mode": 8, b"upload_only": 3, b"ut_holepunch": 4,
               b"ut_metadata": 2, b"ut_pex": 1},
        b"metadata_size": 4567,
        b"p": 51413,
        b"reqq": 500,
        b"v": b"libtorrent/2.0.9",
        b"yourip": bytes([192, 168, 1, 7]),
        b"complete_ago": 1,
        b"upload_only": 0,
    })
    hs = ExtensionHandshake.decode(payload)
    assert hs.extensions["ut_metadata"] == 2
    assert hs.extensions["ut_pex"] == 1
    assert len(hs.extensions) == 6
    assert hs.client == "libtorrent/2.0.9"
    assert hs.reqq == 500
    assert hs.listen_port == 51413
    assert hs.yourip == bytes([192, 168, 1, 7])
    assert hs.metadata_size == 4567


def test_extension_handshake_ipv6_yourip() -> None:
    ip = bytes(15) + b"\x01"
    assert ExtensionHandshake.decode(bencode.encode({b"yourip": ip})).yourip == ip


def test_extension_handshake_disabled_extension_kept_as_zero() -> None:
    hs = ExtensionHandshake.decode(bencode.encode({b"m": {b"ut_pex": 0}}))
    assert hs.extensions == {"ut_pex": 0}


def test_extension_handshake_junk_values_ignored() -> None:
    payload = bencode.encode({
        b"m": {b"good": 5, b"neg": -1, b"big": 256, b"str": b"1", b"list": [1]},
        b"v": 12,
        b"reqq": 0,
        b"p": 65536,
        b"yourip": b"\x01\x02\x03",
        b"metadata_size": -5,
    })
    hs = ExtensionHandshake.decode(payload)
    assert hs == ExtensionHandshake(extensions={"good": 5})


@pytest.mark.parametrize(
    "entries",
    [
        {b"m": b"not a dict"},
        {b"m": [1, 2]},
        {b"reqq": -3},
        {b"reqq": b"250"},
        {b"p": 0},
        {b"p": -1},
        {b"p": b"6881"},
        {b"yourip": b""},
        {b"yourip": bytes(17)},
        {b"yourip": 1},
        {b"metadata_size": 0},
        {b"metadata_size": b"100"},
        {b"v": [b"x"]},
    ],
)
def test_extension_handshake_each_junk_value_ignored(entries: dict[bytes, object]) -> None:
    assert ExtensionHandshake.decode(bencode.encode(entries)) == ExtensionHandshake()


def test_extension_handshake_client_name_bounded_and_lenient() -> None:
    hs = ExtensionHandshake.decode(bencode.encode({b"v": b"x" * 500}))
    assert hs.client == "x" * 64
    hs = ExtensionHandshake.decode(bencode.encode({b"v": b"bad \xff\xfe utf8"}))
    assert hs.client is not None and hs.client.startswith("bad ")


def test_extension_handshake_port_bounds() -> None:
    assert ExtensionHandshake.decode(bencode.encode({b"p": 1})).listen_port == 1
    assert ExtensionHandshake.decode(bencode.encode({b"p": 65535})).listen_port == 65535


@pytest.mark.parametrize(
    "payload",
    [b"", b"i1e", b"4:spam", b"li1ee", b"d", b"de junk", b"not bencode", b"d1:mi1e", b"\xff"],
)
def test_extension_handshake_bad_payload(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        ExtensionHandshake.decode(payload)


# Allowed fast set (BEP 6) ------------------------------------------------------------


def test_allowed_fast_bep6_example_seven() -> None:
    assert allowed_fast_set(b"\xaa" * 20, "80.4.4.200", 1313, 7) == [
        1059, 431, 808, 1217, 287, 376, 1188,
    ]


def test_allowed_fast_bep6_example_nine() -> None:
    assert allowed_fast_set(b"\xaa" * 20, "80.4.4.200", 1313, k=9) == [
        1059, 431, 808, 1217, 287, 376, 1188, 353, 508,
    ]


def test_allowed_fast_default_k_extends_the_example() -> None:
    result = allowed_fast_set(b"\xaa" * 20, "80.4.4.200", 1313)
    assert len(result) == 10
    assert result[:9] == [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]


def test_allowed_fast_uses_only_the_top_24_bits_of_the_address() -> None:
    a = allowed_fast_set(b"\xaa" * 20, "80.4.4.200", 1313, 9)
    assert allowed_fast_set(b"\xaa" * 20, "80.4.4.1", 1313, 9) == a
    assert allowed_fast_set(b"\xaa" * 20, "80.4.5.200", 1313, 9) != a


def test_allowed_fast_small_torrent() -> None:
    result = allowed_fast_set(b"\x01" * 20, "10.1.2.3", 3, 10)
    assert sorted(result) == [0, 1, 2]


def test_allowed_fast_distinct_and_in_range() -> None:
    for n in (1, 2, 5, 50, 1000):
        result = allowed_fast_set(bytes(20), "192.168.0.1", n, 10)
        assert len(result) == min(10, n)
        assert len(set(result)) == len(result)
        assert all(0 <= i < n for i in result)


def test_allowed_fast_empty_cases() -> None:
    assert allowed_fast_set(b"\xaa" * 20, "80.4.4.200", 0) == []
    assert allowed_fast_set(b"\xaa" * 20, "::1", 1313) == []
    assert allowed_fast_set(b"\xaa" * 20, "80.4.4.200", 1313, 0) == []


# Robustness --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=600),
    st.lists(st.integers(1, 64), min_size=1, max_size=20),
    st.booleans(),
    st.none() | st.integers(0, 5000),
)
def test_random_bytes_raise_only_protocol_error(
    data: bytes, sizes: list[int], fast: bool, num_pieces: int | None
) -> None:
    reader = after_handshake(num_pieces=num_pieces)
    reader.fast = fast
    pos = 0
    i = 0
    try:
        while pos < len(data):
            n = sizes[i % len(sizes)]
            i += 1
            reader.feed(data[pos : pos + n])
            pos += n
            for m in drain(reader):
                assert isinstance(m, wire.Message)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.lists(st.integers(1, 30), min_size=1, max_size=10))
def test_random_bytes_as_handshake_raise_only_protocol_error(
    data: bytes, sizes: list[int]
) -> None:
    reader = MessageReader()
    pos = 0
    i = 0
    try:
        while pos < len(data):
            n = sizes[i % len(sizes)]
            i += 1
            reader.feed(data[pos : pos + n])
            pos += n
            if (hs := reader.handshake()) is not None:
                assert data.startswith(PROTOCOL)
                assert (hs.info_hash, hs.peer_id) == (data[28:48], data[48:68])
                break
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_extension_handshake_raises_only_protocol_error(payload: bytes) -> None:
    try:
        ExtensionHandshake.decode(payload)
    except ProtocolError:
        pass
