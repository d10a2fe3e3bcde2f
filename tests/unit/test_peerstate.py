"""The per-connection protocol state (pure): messages and time in, events and messages out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs import extensions, wire
from btfs.bitfield import Bitfield
from btfs.peerstate import (
    IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    MAX_PEER_REQUESTS,
    MAX_PIPELINE,
    MIN_PIPELINE,
    PIPELINE_SECONDS,
    SNUB_TIMEOUT,
    GotBlock,
    GotDhtPort,
    GotHave,
    GotPieces,
    InterestChanged,
    LostHave,
    MayRequest,
    PeerError,
    PeerState,
    Released,
    UploadQueued,
    Wasted,
)
from btfs.picker import Block

PIECES = 8
PIECE = 32 * 1024


def make(*, ours: set[int] | None = None, wanted: set[int] | None = None, fast: bool = True,
         raw_info: bytes = b"") -> PeerState:
    want = set(range(PIECES)) if wanted is None else wanted
    return PeerState(PIECES, lambda i: PIECE, ours if ours is not None else set(),
                     want.__contains__, fast=fast, now=0.0, raw_info=raw_info)


def test_introduce_sends_have_all_have_none_or_bitfield_then_extension_handshake() -> None:
    full = make(ours=set(range(PIECES)))
    full.introduce(listen_port=6881, client="btfs", yourip=None, extensions_enabled=True)
    out = full.take_outbox()
    assert isinstance(out[0], wire.HaveAll)
    assert isinstance(out[1], wire.Extended) and out[1].ext_id == 0
    hs = extensions.ExtensionHandshake.decode(out[1].payload)
    assert hs.listen_port == 6881 and hs.extensions["ut_metadata"] == extensions.UT_METADATA_ID

    empty = make()
    empty.introduce(listen_port=0, client="btfs", yourip=None, extensions_enabled=False)
    assert empty.take_outbox() == [wire.HaveNone()]

    dht = make()
    dht.introduce(listen_port=0, client="btfs", yourip=None, extensions_enabled=False,
                  dht_port=6881)
    assert dht.take_outbox() == [wire.HaveNone(), wire.Port(6881)]

    some = make(ours={1, 3}, fast=False)
    some.introduce(listen_port=0, client="btfs", yourip=None, extensions_enabled=False)
    [bits] = some.take_outbox()
    assert isinstance(bits, wire.BitfieldMessage)
    assert set(Bitfield.from_bytes(PIECES, bits.bits)) == {1, 3}


def test_bitfield_makes_us_interested_and_reports_the_old_set() -> None:
    s = make(wanted={2})
    events = s.receive(wire.BitfieldMessage(Bitfield.from_indices(PIECES, [2, 5]).to_bytes()),
                       1.0)
    assert len(events) == 1 and isinstance(events[0], GotPieces)
    assert events[0].old.count == 0
    assert s.take_outbox() == [wire.Interested()]
    assert s.am_interested


def test_have_of_an_unwanted_piece_does_not_make_us_interested() -> None:
    s = make(wanted={2})
    assert s.receive(wire.Have(5), 1.0) == [GotHave(5)]
    assert s.take_outbox() == [] and not s.am_interested
    assert s.receive(wire.Have(5), 1.0) == []  # a repeated have is nothing new
    s.receive(wire.Have(2), 1.0)
    assert s.take_outbox() == [wire.Interested()]


def test_have_out_of_range_drops_the_peer() -> None:
    with pytest.raises(PeerError):
        make().receive(wire.Have(PIECES), 0.0)


def test_requests_only_while_unchoked_or_for_allowed_fast_pieces() -> None:
    s = make()
    s.receive(wire.HaveAll(), 0.0)
    assert s.am_interested
    assert s.requestable() is None  # choked
    assert s.receive(wire.AllowedFast(3), 0.0) == [MayRequest()]
    has = s.requestable()
    assert has is not None and 3 in has and 4 not in has
    assert s.receive(wire.Unchoke(), 0.0) == [MayRequest()]
    has = s.requestable()
    assert has is not None and 4 in has


def test_choke_releases_requests_except_allowed_fast_ones() -> None:
    s = make()
    s.receive(wire.HaveAll(), 0.0)
    s.receive(wire.AllowedFast(1), 0.0)
    s.receive(wire.Unchoke(), 0.0)
    s.take_outbox()
    a, b = Block(0, 0, 16384), Block(1, 0, 16384)
    s.request([a, b])
    assert s.take_outbox() == [wire.Request(0, 0, 16384), wire.Request(1, 0, 16384)]
    assert s.receive(wire.Choke(), 1.0) == [Released((a,))]
    assert s.in_flight == {b}


def test_reject_releases_one_request_and_unknown_rejects_are_ignored() -> None:
    s = make()
    a = Block(0, 0, 16384)
    s.request([a])
    assert s.receive(wire.RejectRequest(0, 16384, 16384), 0.0) == []
    assert s.receive(wire.RejectRequest(0, 0, 16384), 0.0) == [Released((a,))]
    assert not s.in_flight


def test_blocks_we_asked_for_arrive_others_are_wasted() -> None:
    s = make()
    a = Block(0, 0, 16384)
    s.request([a])
    data = bytes(16384)
    assert s.receive(wire.Piece(0, 16384, data), 2.0) == [Wasted(16384)]
    assert s.receive(wire.Piece(0, 0, data), 3.0) == [GotBlock(a, data)]
    assert s.last_block == 3.0
    assert s.receive(wire.Piece(0, 0, data), 4.0) == [Wasted(16384)]  # a second copy


def test_cancel_sends_cancel_only_for_requests_in_flight() -> None:
    s = make()
    a = Block(0, 0, 16384)
    s.cancel(a)
    assert s.take_outbox() == []
    s.request([a])
    s.take_outbox()
    s.cancel(a)
    assert s.take_outbox() == [wire.Cancel(0, 0, 16384)] and not s.in_flight


def test_their_requests_are_queued_while_unchoked_and_rejected_otherwise() -> None:
    s = make(ours={0})
    assert s.receive(wire.Request(0, 0, 16384), 0.0) == []
    assert s.take_outbox() == [wire.RejectRequest(0, 0, 16384)]  # choked
    s.set_choking(False)
    assert s.take_outbox() == [wire.Unchoke()]
    assert s.receive(wire.Request(0, 0, 16384), 0.0) == [UploadQueued()]
    assert s.receive(wire.Request(1, 0, 16384), 0.0) == []  # a piece we lack
    assert s.take_outbox() == [wire.RejectRequest(1, 0, 16384)]
    s.receive(wire.Request(0, 16384, 16384), 0.0)
    s.receive(wire.Cancel(0, 16384, 16384), 0.0)
    assert s.take_uploads(10) == [wire.Request(0, 0, 16384)]


def test_choking_rejects_what_was_queued_with_the_fast_extension_only() -> None:
    for fast in (True, False):
        s = make(ours={0}, fast=fast)
        s.set_choking(False)
        s.receive(wire.Request(0, 0, 16384), 0.0)
        s.take_outbox()
        s.set_choking(True)
        expected: list[wire.Message] = [wire.Choke()]
        if fast:
            expected.append(wire.RejectRequest(0, 0, 16384))
        assert s.take_outbox() == expected
        assert not s.upload_queue


@pytest.mark.parametrize("request_", [
    wire.Request(PIECES, 0, 16384),
    wire.Request(0, 0, 16384 + 1),
    wire.Request(0, 0, 0),
    wire.Request(0, PIECE - 100, 16384),
])
def test_bad_requests_drop_the_peer(request_: wire.Request) -> None:
    with pytest.raises(PeerError):
        make(ours={0}).receive(request_, 0.0)


def test_a_flood_of_requests_drops_the_peer() -> None:
    s = make(ours={0})
    s.set_choking(False)
    for i in range(MAX_PEER_REQUESTS):
        s.receive(wire.Request(0, i % 2 * 16384, 16384), 0.0)
    with pytest.raises(PeerError, match="too many"):
        s.receive(wire.Request(0, 0, 16384), 0.0)


def test_interest_messages_report_changes_only() -> None:
    s = make()
    assert s.receive(wire.Interested(), 0.0) == [InterestChanged()]
    assert s.receive(wire.Interested(), 0.0) == []
    assert s.receive(wire.NotInterested(), 0.0) == [InterestChanged()]
    assert not s.peer_interested


def test_keepalive_snub_and_idle_timeouts() -> None:
    s = make()
    s.tick(KEEPALIVE_INTERVAL - 1)
    assert s.take_outbox() == []
    s.tick(KEEPALIVE_INTERVAL)
    assert s.take_outbox() == [wire.KeepAlive()]
    s.sent(KEEPALIVE_INTERVAL)
    s.receive(wire.KeepAlive(), KEEPALIVE_INTERVAL)
    s.request([Block(0, 0, 16384)])
    s.last_block = KEEPALIVE_INTERVAL
    s.tick(KEEPALIVE_INTERVAL + SNUB_TIMEOUT)
    with pytest.raises(PeerError, match="sent none"):
        s.tick(KEEPALIVE_INTERVAL + SNUB_TIMEOUT + 1)
    quiet = make()
    quiet.tick(IDLE_TIMEOUT)
    with pytest.raises(PeerError, match="silent"):
        quiet.tick(IDLE_TIMEOUT + 1)


def test_pipeline_follows_the_rate_within_the_peer_s_reqq() -> None:
    s = make()
    assert s.pipeline_target(0.0) == MIN_PIPELINE
    assert s.pipeline_target(100 * 16384 / PIPELINE_SECONDS) in (100, 101)  # float rounding
    hs = extensions.ExtensionHandshake(reqq=10)
    s.receive(wire.Extended(0, hs.encode()), 0.0)
    assert s.pipeline_target(100 * 16384 / PIPELINE_SECONDS) == 10
    assert s.pipeline_target(1e9, limit=64) == 10  # the peer's reqq still bounds it
    s.peer_reqq = 500
    assert s.pipeline_target(1e9, limit=64) == 64
    assert s.pipeline_target(1e9) == MAX_PIPELINE


def test_metadata_requests_are_answered_from_the_info_bytes() -> None:
    raw = bytes(range(256)) * 100  # two metadata pieces
    s = make(raw_info=raw)
    hs = extensions.ExtensionHandshake(extensions={"ut_metadata": 7})
    s.receive(wire.Extended(0, hs.encode()), 0.0)
    s.receive(wire.Extended(extensions.UT_METADATA_ID, extensions.encode_request(1)), 0.0)
    s.receive(wire.Extended(extensions.UT_METADATA_ID, extensions.encode_request(2)), 0.0)
    data, reject = s.take_outbox()
    assert isinstance(data, wire.Extended) and data.ext_id == 7
    reply = extensions.parse_message(data.payload)
    assert reply.kind == extensions.DATA and reply.data == raw[extensions.PIECE_SIZE:]
    assert isinstance(reject, wire.Extended)
    assert extensions.parse_message(reject.payload).kind == extensions.REJECT
    with pytest.raises(PeerError):
        s.receive(wire.Extended(extensions.UT_METADATA_ID, b"not bencode"), 0.0)


def test_announce_loses_interest_when_nothing_is_left_to_want() -> None:
    wanted = {2}
    s = PeerState(PIECES, lambda i: PIECE, set(), wanted.__contains__, fast=True, now=0.0)
    s.receive(wire.Have(2), 0.0)
    assert s.take_outbox() == [wire.Interested()]
    wanted.clear()
    s.announce(2)
    assert s.take_outbox() == [wire.Have(2), wire.NotInterested()]


def donthave(piece: int) -> wire.Extended:
    return wire.Extended(extensions.LT_DONTHAVE_ID, piece.to_bytes(4, "big"))


def test_lt_donthave_takes_a_piece_back_and_releases_its_requests() -> None:
    """BEP 54: the piece leaves the peer's set, its requests to the peer are freed, and we
    lose interest when it was the only wanted piece the peer had."""
    s = make(wanted={2})
    s.receive(wire.HaveAll(), 0.0)
    assert s.am_interested
    s.take_outbox()
    s.request([Block(2, 0, 16384), Block(3, 0, 16384)])
    events = s.receive(donthave(2), 0.0)
    assert events == [LostHave(2), Released((Block(2, 0, 16384),))]
    assert 2 not in s.have and s.have.count == PIECES - 1
    assert s.in_flight == {Block(3, 0, 16384)}
    assert not s.am_interested and s.take_outbox()[-1] == wire.NotInterested()
    assert s.receive(donthave(2), 0.0) == []  # again: nothing left to take back
    with pytest.raises(PeerError):
        s.receive(donthave(PIECES), 0.0)
    with pytest.raises(PeerError):
        s.receive(wire.Extended(extensions.LT_DONTHAVE_ID, b"\x00\x01"), 0.0)


def test_withdraw_tells_only_peers_that_speak_lt_donthave() -> None:
    ours = make(ours={1})
    ours.introduce(listen_port=0, client="btfs", yourip=None, extensions_enabled=True)
    [_, handshake] = ours.take_outbox()
    assert isinstance(handshake, wire.Extended)
    sent = extensions.ExtensionHandshake.decode(handshake.payload).extensions
    assert sent["lt_donthave"] == extensions.LT_DONTHAVE_ID

    silent = make(ours={1})
    silent.withdraw(1)
    assert silent.take_outbox() == []
    speaks = make(ours={1})
    speaks.receive(wire.Extended(0, extensions.ExtensionHandshake(
        extensions={"lt_donthave": 9}).encode()), 0.0)
    speaks.withdraw(1)
    assert speaks.take_outbox() == [wire.Extended(9, (1).to_bytes(4, "big"))]


_messages = st.one_of(
    st.builds(wire.Have, st.integers(0, PIECES - 1)),
    st.builds(donthave, st.integers(0, PIECES - 1)),
    st.builds(wire.AllowedFast, st.integers(-1, PIECES)),
    st.builds(wire.RejectRequest, st.integers(0, PIECES), st.integers(0, PIECE),
              st.just(16384)),
    st.builds(wire.Piece, st.integers(0, PIECES - 1), st.sampled_from([0, 16384]),
              st.just(bytes(16384))),
    st.sampled_from([wire.Choke(), wire.Unchoke(), wire.Interested(), wire.NotInterested(),
                     wire.HaveAll(), wire.HaveNone(), wire.KeepAlive()]),
)


@given(st.lists(_messages, max_size=40))
def test_any_sequence_keeps_the_state_consistent(messages: list[wire.Message]) -> None:
    """In flight never holds what was released or received; interest matches the pieces."""
    s = make(wanted={0, 1, 2})
    s.request([Block(p, b, 16384) for p in range(3) for b in (0, 16384)])
    asked = set(s.in_flight)
    seen: set[Block] = set()
    for m in messages:
        for event in s.receive(m, 0.0):
            if isinstance(event, GotBlock):
                seen.add(event.block)
            elif isinstance(event, Released):
                seen.update(event.blocks)
    assert s.in_flight == asked - seen
    assert s.am_interested == any(p in s.have for p in (0, 1, 2))


def test_a_port_message_names_the_peers_dht_node() -> None:
    state = make()
    assert state.receive(wire.Port(6881), 0.0) == [GotDhtPort(6881)]
    assert state.receive(wire.Port(0), 0.0) == []
