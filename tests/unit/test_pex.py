"""Peer exchange (BEP 11), the pure core: the codec, what each peer is told, what we take."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs import bencode, extensions, pex, wire
from btfs.peerstate import GotPeers, PeerError, PeerState
from btfs.pex import (
    FLOOD_LIMIT,
    MAX_LEARNED,
    MAX_SENT,
    MAX_TAKEN,
    MIN_RECEIVE_INTERVAL,
    SEND_INTERVAL,
    PexError,
    PexMessage,
    PexReceiver,
    PexSender,
)


def v4(n: int, port: int = 6881) -> tuple[str, int]:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", port


# The codec --------------------------------------------------------------------------------


def test_encode_decode_round_trip_with_flags_both_families() -> None:
    message = PexMessage(
        added={("10.0.0.1", 6881): pex.REACHABLE | pex.SEED, ("2001:db8::1", 51413): 0x01},
        dropped=[("10.0.0.9", 1), ("2001:db8::9", 2)],
    )
    raw = encode_decoded = pex.encode(message)
    d = bencode.decode(raw)
    assert isinstance(d, dict)
    assert d[b"added"] == bytes([10, 0, 0, 1]) + (6881).to_bytes(2, "big")
    assert d[b"added.f"] == bytes([0x12])
    assert len(d[b"added6"]) == 18 and d[b"added6.f"] == b"\x01"
    assert len(d[b"dropped"]) == 6 and len(d[b"dropped6"]) == 18
    assert pex.decode(encode_decoded) == message


def test_every_key_is_present_even_when_empty() -> None:
    d = bencode.decode(pex.encode(PexMessage()))
    assert isinstance(d, dict)
    assert set(d) == {b"added", b"added.f", b"dropped", b"added6", b"added6.f", b"dropped6"}


def test_an_ipv4_mapped_address_travels_as_ipv4() -> None:
    d = bencode.decode(pex.encode(PexMessage(added={("::ffff:10.1.2.3", 7000): 0})))
    assert isinstance(d, dict)
    assert d[b"added"] == bytes([10, 1, 2, 3]) + (7000).to_bytes(2, "big")
    assert d[b"added6"] == b""


@pytest.mark.parametrize("payload", [b"", b"not bencode", b"i42e", b"l1:ae", b"d1:a",
                                     b"d5:added" + b"6:" + b"x" * 6])
def test_not_a_bencoded_dictionary_is_an_error(payload: bytes) -> None:
    with pytest.raises(PexError):
        pex.decode(payload)


def test_a_huge_message_is_an_error_before_it_is_parsed() -> None:
    with pytest.raises(PexError, match="bytes"):
        pex.decode(b"d5:added" + str(pex.MAX_PAYLOAD).encode() + b":" + b"\0" * pex.MAX_PAYLOAD
                   + b"e")


def test_wrong_types_and_partial_entries_are_ignored() -> None:
    payload = bencode.encode({
        b"added": 42,                                  # not a string
        b"added6": b"\x20" * 17,                       # not whole 18-byte entries
        b"dropped": [b"abcdef"],                       # not a string
        b"dropped6": b"\0" * 19,                       # not whole entries
    })
    assert pex.decode(payload) == PexMessage()


def test_flags_that_do_not_match_count_as_none_and_port_zero_is_left_out() -> None:
    entries = bytes([10, 0, 0, 1, 0x1A, 0xE1]) + bytes([10, 0, 0, 2, 0, 0])
    payload = bencode.encode({b"added": entries, b"added.f": b"\x02"})  # one flag for two
    assert pex.decode(payload).added == {("10.0.0.1", 6881): 0}
    payload = bencode.encode({b"added": entries, b"added.f": [1, 2]})
    assert pex.decode(payload).added == {("10.0.0.1", 6881): 0}


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_pex_error(payload: bytes) -> None:
    try:
        message = pex.decode(payload)
    except PexError:
        return
    assert all(0 < port < 65536 for _, port in message.added)


@given(st.dictionaries(st.sampled_from([b"added", b"added.f", b"added6", b"added6.f",
                                        b"dropped", b"dropped6", b"x"]),
                       st.one_of(st.binary(max_size=60), st.integers(), st.lists(st.binary()))))
def test_random_dictionaries_never_raise(d: dict[bytes, object]) -> None:
    pex.decode(bencode.encode(d))


# What a peer is told ----------------------------------------------------------------------


def test_the_first_message_lists_current_peers_but_not_the_recipient() -> None:
    sender = PexSender()
    connected = {v4(1): pex.REACHABLE, v4(2): 0, v4(3): pex.SEED}
    raw = sender.message(0.0, connected, exclude=[v4(2)])
    assert raw is not None
    assert pex.decode(raw) == PexMessage(added={v4(1): pex.REACHABLE, v4(3): pex.SEED})


def test_no_message_when_alone_and_the_first_goes_once_there_is_someone() -> None:
    sender = PexSender()
    assert sender.message(0.0, {}) is None
    assert sender.due(5.0)
    raw = sender.message(5.0, {v4(1): 0})
    assert raw is not None and pex.decode(raw).added == {v4(1): 0}


def test_no_more_than_one_message_a_minute_and_then_only_the_difference() -> None:
    sender = PexSender()
    assert sender.message(0.0, {v4(1): 0, v4(2): 0}) is not None
    later = {v4(2): 0, v4(3): pex.REACHABLE}
    assert not sender.due(SEND_INTERVAL - 0.1)
    assert sender.message(SEND_INTERVAL - 0.1, later) is None
    raw = sender.message(SEND_INTERVAL, later)
    assert raw is not None
    assert pex.decode(raw) == PexMessage(added={v4(3): pex.REACHABLE}, dropped=[v4(1)])
    assert sender.message(3 * SEND_INTERVAL, later) is None  # nothing changed


def test_a_peer_whose_flags_change_is_added_again() -> None:
    sender = PexSender()
    sender.message(0.0, {v4(1): 0})
    raw = sender.message(SEND_INTERVAL, {v4(1): pex.SEED})
    assert raw is not None and pex.decode(raw).added == {v4(1): pex.SEED}


def test_at_most_fifty_added_and_fifty_dropped_the_rest_next_time() -> None:
    sender = PexSender()
    first = {v4(n): 0 for n in range(120)}
    raw = sender.message(0.0, first)
    assert raw is not None and len(pex.decode(raw).added) == MAX_SENT
    raw = sender.message(SEND_INTERVAL, first)
    assert raw is not None and len(pex.decode(raw).added) == MAX_SENT
    raw = sender.message(2 * SEND_INTERVAL, {})
    assert raw is not None
    message = pex.decode(raw)
    assert not message.added and len(message.dropped) == MAX_SENT
    raw = sender.message(3 * SEND_INTERVAL, {})
    assert raw is not None and len(pex.decode(raw).dropped) == 2 * MAX_SENT - MAX_SENT
    assert sender.told == {}


# What we take -----------------------------------------------------------------------------


def message_of(*addresses: tuple[str, int], flags: int = 0) -> bytes:
    return pex.encode(PexMessage(added=dict.fromkeys(addresses, flags)))


def test_new_peers_are_taken_once() -> None:
    receiver = PexReceiver()
    assert receiver.receive(message_of(v4(1), v4(2), flags=pex.SEED), 0.0) == {
        v4(1): pex.SEED, v4(2): pex.SEED}
    assert receiver.receive(message_of(v4(2), v4(3)), MIN_RECEIVE_INTERVAL) == {v4(3): 0}


def test_a_message_too_soon_after_the_last_is_ignored() -> None:
    receiver = PexReceiver()
    receiver.receive(message_of(v4(1)), 0.0)
    assert receiver.receive(message_of(v4(2)), MIN_RECEIVE_INTERVAL / 2) == {}
    assert receiver.ignored == 1


def test_a_flood_of_messages_drops_the_peer() -> None:
    receiver = PexReceiver()
    for i in range(FLOOD_LIMIT):
        receiver.receive(message_of(v4(i)), float(i))
    with pytest.raises(PexError, match="within"):
        receiver.receive(message_of(v4(99)), float(FLOOD_LIMIT))


def test_one_message_and_one_connection_give_a_bounded_number_of_peers() -> None:
    receiver = PexReceiver()
    big = message_of(*(v4(n) for n in range(300)))
    assert len(receiver.receive(big, 0.0)) == MAX_TAKEN
    t = 0.0
    total = MAX_TAKEN
    for start in range(300, 5000, 300):
        t += MIN_RECEIVE_INTERVAL
        total += len(receiver.receive(message_of(*(v4(n) for n in range(start, start + 300))),
                                      t))
    assert total == MAX_LEARNED == len(receiver.learned)


# In a connection's protocol state ---------------------------------------------------------


def state(*, pex_enabled: bool = True) -> PeerState:
    return PeerState(4, lambda i: 16384, set(), lambda i: True, fast=True, now=0.0,
                     pex_enabled=pex_enabled)


def their_handshake(s: PeerState, ut_pex: int = 9) -> None:
    hs = extensions.ExtensionHandshake(extensions={"ut_pex": ut_pex}, listen_port=7000)
    s.receive(wire.Extended(0, hs.encode()), 0.0)


def test_ut_pex_is_advertised_only_when_enabled() -> None:
    for enabled in (True, False):
        s = state(pex_enabled=enabled)
        s.introduce(listen_port=1, client="btfs", yourip=None, extensions_enabled=True)
        ext = next(m for m in s.take_outbox() if isinstance(m, wire.Extended))
        hs = extensions.ExtensionHandshake.decode(ext.payload)
        assert ("ut_pex" in hs.extensions) is enabled


def test_their_pex_message_becomes_peers_for_the_swarm() -> None:
    s = state()
    their_handshake(s)
    assert s.listen_port == 7000
    events = s.receive(wire.Extended(pex.UT_PEX_ID, message_of(v4(1), flags=pex.SEED)), 1.0)
    assert events == [GotPeers({v4(1): pex.SEED})]


def test_pex_messages_are_ignored_when_disabled_or_not_negotiated() -> None:
    off = state(pex_enabled=False)  # a private torrent
    their_handshake(off)
    assert off.receive(wire.Extended(pex.UT_PEX_ID, message_of(v4(1))), 1.0) == []
    assert off.receive(wire.Extended(pex.UT_PEX_ID, b"garbage"), 1.0) == []
    silent = state()  # the peer never offered ut_pex
    assert silent.receive(wire.Extended(pex.UT_PEX_ID, message_of(v4(1))), 1.0) == []


def test_a_malformed_pex_message_drops_the_peer() -> None:
    s = state()
    their_handshake(s)
    with pytest.raises(PeerError, match="ut_pex"):
        s.receive(wire.Extended(pex.UT_PEX_ID, b"not bencode"), 1.0)


def test_we_send_with_their_id_and_never_when_disabled() -> None:
    s = state()
    assert not s.pex_due(0.0)  # no handshake yet
    their_handshake(s, ut_pex=9)
    assert s.pex_due(0.0)
    s.exchange_peers(0.0, {v4(1): 0, v4(2): 0}, exclude=[v4(2)])
    [m] = s.take_outbox()
    assert isinstance(m, wire.Extended) and m.ext_id == 9
    assert pex.decode(m.payload).added == {v4(1): 0}
    assert not s.pex_due(1.0)

    off = state(pex_enabled=False)
    their_handshake(off)
    off.exchange_peers(0.0, {v4(1): 0}, exclude=[])
    assert off.take_outbox() == [] and not off.pex_due(0.0)
