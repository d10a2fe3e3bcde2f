"""The peer layer's trio shells under trio's mock clock, against scripted in-process peers.

Real Swarm, PeerConnection, picker and torrent; the far ends are `tests.support.remote`
peers on memory streams, so what each peer does and when is exact and the clock is
virtual: a 60 s time-out takes no real time, and a figure of seconds is deterministic.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from btfs import wire
from btfs.peer import SEND_TIMEOUT, TICK
from btfs.peerbook import RETRY_FIRST
from btfs.peerstate import SNUB_TIMEOUT
from btfs.swarm import CONNECT_INTERVAL, RECHOKE_INTERVAL
from tests.support.remote import RemotePeer, RemoteSwarm

BLOCK = 16 * 1024
A = ("127.0.0.2", 7001)
B = ("127.0.0.3", 7001)
C = ("127.0.0.4", 7001)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps when every task waits (but not while a thread hashes)."""
    return trio.testing.MockClock(autojump_threshold=0.002)


@asynccontextmanager
async def running(tmp_path: Path, data: bytes, piece_length: int,
                  remotes: dict[tuple[str, int], RemotePeer], *, lockstep: bool = False,
                  **config: object) -> AsyncIterator[RemoteSwarm]:
    async with trio.open_nursery() as nursery:
        rs = RemoteSwarm(tmp_path, data, piece_length, remotes, nursery, lockstep=lockstep,
                         **config)
        await nursery.start(rs.swarm.run)
        try:
            yield rs
        finally:
            await rs.swarm.stop(grace=0)
            nursery.cancel_scope.cancel()
            rs.close()


async def until(condition: Callable[[], bool], step: float) -> None:
    """Poll `condition` every `step` s of virtual time (the caller bounds the wait)."""
    for _ in itertools.count():
        if condition():
            return
        await trio.sleep(step)


async def read_all(rs: RemoteSwarm) -> bytes:
    return await rs.torrent.read(0, rs.meta.info.total_length)


async def test_smart_ban_several_senders(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    """A piece built from two peers' blocks fails; once it passes, only the liar is banned."""
    data = os.urandom(4 * BLOCK)
    lies = {"left": 1}

    def a_answers(r: wire.Request, good: bytes) -> bytes | None:
        return good if r.begin < 2 * BLOCK else None

    def b_answers(r: wire.Request, good: bytes) -> bytes | None:
        if r.begin < 2 * BLOCK:
            return None
        if lies["left"] and r.begin == 3 * BLOCK:
            lies["left"] -= 1
            return bytes(len(good))
        return good

    remotes = {A: RemotePeer(data, a_answers), B: RemotePeer(data, b_answers)}
    async with running(tmp_path, data, 4 * BLOCK, remotes) as rs:
        rs.dial(A, B)
        with trio.fail_after(120):
            assert await read_all(rs) == data
        assert rs.torrent.counters.hash_failures == 1
        assert rs.swarm.banned == {B[0]}  # A sent half of the failed piece, but good data


async def test_plain_then_mse_alternation(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    """A peer that hangs up on plain text is dialled again with MSE, soon."""
    data = os.urandom(2 * BLOCK)
    remote = RemotePeer(data, encrypted_only=True)
    async with running(tmp_path, data, 2 * BLOCK, {A: remote}) as rs:
        start = trio.current_time()
        rs.dial(A)
        with trio.fail_after(60):
            assert await read_all(rs) == data
        assert remote.dials == ["plain", "mse"]
        # due after RETRY_FIRST, seen at the dial loop's next turn
        assert RETRY_FIRST <= trio.current_time() - start <= RETRY_FIRST + CONNECT_INTERVAL + 0.5


async def test_failed_dials_alternate_with_a_growing_back_off(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """A peer that hangs up on every handshake: plain, MSE, plain, MSE..., further apart."""
    data = os.urandom(BLOCK)
    remote = RemotePeer(data, hang_up_at_once=True)
    async with running(tmp_path, data, BLOCK, {A: remote}) as rs:
        rs.dial(A)
        with trio.fail_after(300):
            await until(lambda: len(remote.dials) >= 5, 1)
        assert remote.dials[:5] == ["plain", "mse", "plain", "mse", "plain"]
        times = remote.dial_times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert RETRY_FIRST <= gaps[0] <= RETRY_FIRST + CONNECT_INTERVAL  # plain failed: MSE soon
        assert gaps[1] > gaps[0] and gaps[3] > gaps[1]  # MSE failed too: back off


async def test_a_silent_peer_is_dropped_at_the_snub_time_out(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    data = os.urandom(4 * BLOCK)
    silent = RemotePeer(data, silent=True)
    async with running(tmp_path, data, 4 * BLOCK, {A: silent}) as rs:
        rs.dial(A)
        with trio.fail_after(30):
            await until(lambda: len(silent.requests) >= 4, 0.01)
        asked = trio.current_time()
        with trio.fail_after(SNUB_TIMEOUT + 30):
            await silent.closed.wait()
        assert SNUB_TIMEOUT <= trio.current_time() - asked <= SNUB_TIMEOUT + TICK + 1
        assert not rs.swarm.peers
        assert not rs.swarm.picker.held_by(silent.peer_id)


async def test_blocks_a_silent_peer_holds_are_asked_of_another(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """The picker's request time-out, well before the snub time-out drops the holder."""
    data = os.urandom(4 * BLOCK)
    silent = RemotePeer(data, silent=True)
    good = RemotePeer(data)
    async with running(tmp_path, data, 4 * BLOCK, {A: silent}) as rs:
        rs.dial(A)
        with trio.fail_after(30):
            await until(lambda: len(silent.requests) >= 4, 0.01)
        asked = trio.current_time()
        rs.remotes[B] = good
        rs.dial(B)
        with trio.fail_after(SNUB_TIMEOUT):
            assert await read_all(rs) == data
        assert trio.current_time() - asked <= rs.swarm.picker.request_timeout + TICK
        assert good.requests


async def test_a_peer_that_hangs_up_is_dropped_at_once(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """EOF ends the connection now: its slot and its requests are free in well under
    a second of virtual time, not at the snub time-out."""
    data = os.urandom(8 * BLOCK)
    quitter = RemotePeer(data, hang_up_after=3)
    good = RemotePeer(data)
    async with running(tmp_path, data, 8 * BLOCK, {A: quitter, B: good}) as rs:
        rs.dial(A)
        with trio.fail_after(30):
            await quitter.closed.wait()
        closed_at = trio.current_time()
        with trio.fail_after(5):
            await until(lambda: all(p.address != A for p in rs.swarm.peers.values()), 0.01)
        assert trio.current_time() - closed_at < 1
        assert not rs.swarm.picker.held_by(quitter.peer_id)
        rs.dial(B)
        with trio.fail_after(10):
            assert await read_all(rs) == data


async def test_a_peer_that_keeps_hanging_up_is_refused_for_a_while(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """Quick connect-and-close cycles stop being redialled; other peers still get in."""
    data = os.urandom(4 * BLOCK)
    flapper = RemotePeer(data, hang_up_after=1)
    good = RemotePeer(data)
    async with running(tmp_path, data, 4 * BLOCK, {A: flapper, B: good}, max_peers=2) as rs:
        rs.dial(A)
        with trio.fail_after(120):
            await until(lambda: rs.swarm.book.refused(A[0], trio.current_time()), 1)
        dials = len(flapper.dials)
        await trio.sleep(20)
        assert len(flapper.dials) == dials  # not dialled while refused
        rs.dial(B)
        with trio.fail_after(30):
            assert await read_all(rs) == data


async def test_a_peer_that_breaks_the_protocol_is_dropped(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    data = os.urandom(2 * BLOCK)
    liar = RemotePeer(data, garbage_after_handshake=True)
    good = RemotePeer(data)
    async with running(tmp_path, data, 2 * BLOCK, {A: liar, B: good}) as rs:
        rs.dial(A)
        with trio.fail_after(30):
            await liar.closed.wait()
            await until(lambda: not rs.swarm.peers, 0.01)
        rs.dial(B)
        with trio.fail_after(30):
            assert await read_all(rs) == data


async def test_no_more_than_max_peers_are_dialled(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    data = os.urandom(64 * BLOCK)
    remotes = {addr: RemotePeer(data, silent=True) for addr in (A, B, C)}
    async with running(tmp_path, data, 4 * BLOCK, remotes, max_peers=2) as rs:
        rs.dial(A, B, C)
        await trio.sleep(5)
        assert len(rs.swarm.peers) == 2
        assert sorted(len(r.dials) for r in remotes.values()) == [0, 1, 1]


async def complete(rs: RemoteSwarm, data: bytes, piece_length: int) -> None:
    for piece in range(rs.meta.info.num_pieces):
        chunk = data[piece * piece_length : (piece + 1) * piece_length]
        assert await rs.torrent.piece_downloaded(piece, chunk)


async def test_a_seed_drops_a_seed(tmp_path: Path, clock: trio.testing.MockClock) -> None:
    data = os.urandom(4 * BLOCK)
    other = RemotePeer(data)
    async with running(tmp_path, data, 2 * BLOCK, {A: other}) as rs:
        await complete(rs, data, 2 * BLOCK)
        rs.dial(A)
        with trio.fail_after(30):
            await other.closed.wait()
        assert not rs.swarm.peers
        assert A in rs.swarm.book.known_seeds


async def test_a_peer_that_stops_reading_is_dropped_at_the_send_time_out(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    """Uploads to a peer that reads nothing block; the connection ends after
    SEND_TIMEOUT instead of holding its slot and its task forever."""
    data = os.urandom(64 * BLOCK)
    sink = RemotePeer(data, leech_then_stop_reading=True)
    async with running(tmp_path, data, 4 * BLOCK, {A: sink}, lockstep=True) as rs:
        await complete(rs, data, 4 * BLOCK)
        rs.dial(A)
        with trio.fail_after(30):
            await until(lambda: len(sink.requests) > 0, 0.1)
        started = trio.current_time()
        with trio.fail_after(SEND_TIMEOUT + 60):
            await until(lambda: not rs.swarm.peers, 1)
        assert trio.current_time() - started >= SEND_TIMEOUT - RECHOKE_INTERVAL
