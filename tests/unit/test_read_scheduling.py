"""Reads first on a swarm of limited bandwidth (issue 10), deterministic.

A real Swarm and Torrent against scripted peers that send at a fixed rate in the order
asked (as an uplink does), under trio's mock clock: a read that arrives while every
peer's queue is full of background requests must be served in about the time its own
bytes need at the swarm's rate, not after the queues drain.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from btfs import wire
from btfs.peerstate import MAX_PIPELINE, STREAMING_PIPELINE
from tests.support.remote import RemotePeer, RemoteSwarm

PIECE = 1 << 20
PIECES = 24
RATE = 1 << 20  # each peer's upload, bytes/s
A = ("127.0.0.2", 7001)
B = ("127.0.0.3", 7001)
DATA = os.urandom(PIECE * PIECES)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time; it jumps only after 5 ms of real idleness, so a piece being hashed
    in a worker thread (the loop idle meanwhile) seldom moves it."""
    return trio.testing.MockClock(autojump_threshold=0.005)


@asynccontextmanager
async def swarm_of(tmp_path: Path, remotes: dict[tuple[str, int], RemotePeer],
                   ) -> AsyncIterator[RemoteSwarm]:
    async with trio.open_nursery() as nursery:
        rs = RemoteSwarm(tmp_path, DATA, PIECE, remotes, nursery, readahead=1 << 20)
        await nursery.start(rs.swarm.run)
        try:
            rs.dial(*remotes)
            await trio.sleep(3)  # background download: every peer's queue is full
            assert all(len(p.state.in_flight) >= 8 for p in rs.swarm.peers.values())
            yield rs
        finally:
            await rs.swarm.stop(grace=0)
            nursery.cancel_scope.cancel()
            rs.close()


async def timed_read(rs: RemoteSwarm, piece: int, size: int = 64 * 1024,
                     reader: int = 1) -> float:
    start = trio.current_time()
    offset = piece * PIECE + 1000
    got = await rs.torrent.read(offset, size, reader)
    assert got == DATA[offset : offset + size]
    return trio.current_time() - start


def far_missing_piece(rs: RemoteSwarm, after: int = 16) -> int:
    return next(p for p in range(after, PIECES) if p not in rs.torrent.verified
                and p not in rs.swarm.picker.in_progress)


async def test_a_read_behind_full_background_queues_takes_the_time_its_bytes_need(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    remotes = {A: RemotePeer(DATA, rate=RATE), B: RemotePeer(DATA, rate=RATE)}
    async with swarm_of(tmp_path, remotes) as rs:
        queued = max(sum(b.length for b in p.state.in_flight) for p in rs.swarm.peers.values())
        piece = far_missing_piece(rs)
        took = await timed_read(rs, piece)
        ideal = PIECE / (2 * RATE)  # the piece over both peers
        drained_first = queued / RATE + ideal  # what waiting behind the queue would take
        assert took <= 1.2 * ideal + 0.05 < drained_first, (took, ideal, drained_first)
        assert sum(r.cancels for r in remotes.values()) > 0


async def test_two_readers_the_nearest_deadline_first(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    remotes = {A: RemotePeer(DATA, rate=RATE), B: RemotePeer(DATA, rate=RATE)}
    async with swarm_of(tmp_path, remotes) as rs:
        first = far_missing_piece(rs, 12)
        second = far_missing_piece(rs, first + 4)
        done: dict[str, float] = {}

        async def read(name: str, piece: int, reader: int) -> None:
            await timed_read(rs, piece, reader=reader)
            done[name] = trio.current_time()

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "first", first, 1)
            await trio.sleep(0.01)
            nursery.start_soon(read, "second", second, 2)
        assert done["first"] < done["second"]
        assert done["second"] - start <= 2 * (2 * PIECE) / (2 * RATE) + 0.1


@pytest.mark.parametrize("awkward", ["ignores cancels", "rejects everything", "holds requests"])
async def test_the_read_completes_from_the_others(
    tmp_path: Path, clock: trio.testing.MockClock, awkward: str,
) -> None:
    def reject(request: wire.Request, good: bytes) -> bytes | None:
        return None

    odd = {
        "ignores cancels": RemotePeer(DATA, rate=RATE, honours_cancels=False),
        "rejects everything": RemotePeer(DATA, reject, rate=RATE),
        "holds requests": RemotePeer(DATA, silent=True),
    }[awkward]
    remotes = {A: odd, B: RemotePeer(DATA, rate=RATE)}
    async with swarm_of(tmp_path, remotes) as rs:
        piece = far_missing_piece(rs)
        with trio.fail_after(30):
            await timed_read(rs, piece)


def test_a_waiting_reads_blocks_go_to_a_web_seed_when_it_is_faster() -> None:
    """Issue 10: web seeds are among the sources of a waiting read's blocks, by expected
    arrival: a fast idle web seed gets most, a slow or busy one few or none."""
    from types import SimpleNamespace

    from btfs.rates import RateMeter
    from btfs.swarm import urgent_shares

    def peer(rate: float, queued_blocks: int) -> SimpleNamespace:
        meter = RateMeter(window=2.0)
        meter.add(int(rate * 2), 0.0)
        return SimpleNamespace(state=SimpleNamespace(requestable=lambda: range(10),
                                                     in_flight=set(range(queued_blocks))),
                               download_meter=meter)

    def seed(rate: float, queued: int) -> SimpleNamespace:
        return SimpleNamespace(rate=lambda now: rate, queued=queued)

    slow_peer = peer(500_000, 0)
    fast_seed = seed(5_000_000, 0)
    shares = dict((id(s), n) for s, n in urgent_shares([slow_peer], [fast_seed], 64, 1.0))
    assert shares[id(fast_seed)] > 5 * shares.get(id(slow_peer), 0)
    busy_seed = seed(5_000_000, 50 * 1024 * 1024)   # 10 s of work ahead of the read
    shares = dict((id(s), n) for s, n in urgent_shares([slow_peer], [busy_seed], 16, 1.0))
    assert shares == {id(slow_peer): 16}


async def test_a_read_asks_a_peer_that_unchokes_it_late_for_the_whole_piece_at_once(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """Lazy (no background download): the read is what makes us interested, and the peer
    unchokes us only then. At the unchoke every block of the piece is asked for, not the
    minimum pipeline of a peer whose rate is unknown, one round trip after another."""
    remote = RemotePeer(DATA, rate=RATE, unchoke_when_interested=True)
    async with trio.open_nursery() as nursery:
        rs = RemoteSwarm(tmp_path, DATA, PIECE, {A: remote}, nursery, lazy=True)
        await nursery.start(rs.swarm.run)
        try:
            rs.dial(A)
            await trio.sleep(1)
            [peer] = rs.swarm.peers.values()
            assert peer.state.peer_choking and not peer.state.in_flight
            assert await timed_read(rs, 5) <= PIECE / RATE + 0.2
            assert remote.most_queued >= PIECE // (16 * 1024)
        finally:
            await rs.swarm.stop(grace=0)
            nursery.cancel_scope.cancel()
            rs.close()


async def test_while_a_file_is_open_a_peer_holds_at_most_the_streaming_pipeline(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """Background download alone keeps 0.3 s of a fast peer's rate in flight; once a file
    is open, at most `STREAMING_PIPELINE` requests, so a seek's piece never queues behind
    more than that, unless a reader is short of its read-ahead (it needs the throughput);
    closed again, the rate decides again."""
    async with trio.open_nursery() as nursery:
        rs = RemoteSwarm(tmp_path, DATA, PIECE, {A: RemotePeer(DATA, rate=10 * RATE)}, nursery)
        await nursery.start(rs.swarm.run)
        try:
            rs.dial(A)
            await trio.sleep(1.2)
            [peer] = rs.swarm.peers.values()
            assert len(peer.state.in_flight) > STREAMING_PIPELINE
            rs.torrent.open_reader(1, 0)
            await trio.sleep(0.3)
            assert 0 < len(peer.state.in_flight) <= STREAMING_PIPELINE
            far = far_missing_piece(rs, 0)
            rs.swarm.picker.set_readahead(1, range(far, far + 2))
            assert rs.swarm.pipeline_limit() == MAX_PIPELINE
            rs.swarm.picker.set_readahead(1, range(0))
            assert rs.swarm.pipeline_limit() == STREAMING_PIPELINE
            rs.torrent.close_reader(1)
            await trio.sleep(0.3)
            assert len(peer.state.in_flight) > STREAMING_PIPELINE
        finally:
            await rs.swarm.stop(grace=0)
            nursery.cancel_scope.cancel()
            rs.close()
