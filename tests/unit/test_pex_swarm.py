"""Peer exchange in a real Swarm, under trio's mock clock, against scripted peers.

The swarm tells each peer of the others (once a minute at most, the first message soon
after the handshake) and dials the peers it is told of; a private torrent does neither.
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

from btfs import pex
from btfs.peer import TICK
from tests.support.remote import RemotePeer, RemoteSwarm

BLOCK = 16 * 1024
A = ("127.0.0.2", 7001)
B = ("127.0.0.3", 7001)
C = ("127.0.0.4", 7001)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.002)


@asynccontextmanager
async def running(tmp_path: Path, remotes: dict[tuple[str, int], RemotePeer],
                  **kw: object) -> AsyncIterator[RemoteSwarm]:
    data = remotes[A].data
    async with trio.open_nursery() as nursery:
        # lazy: nothing is fetched, so the swarm never completes and drops its seeds
        rs = RemoteSwarm(tmp_path, data, 2 * BLOCK, remotes, nursery, lazy=True, **kw)
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


async def test_peers_are_told_of_each_other_and_learnt_peers_are_dialled(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    data = os.urandom(4 * BLOCK)
    remotes = {A: RemotePeer(data, pex={C: pex.REACHABLE}), B: RemotePeer(data, pex={}),
               C: RemotePeer(data, pex={})}
    async with running(tmp_path, remotes) as rs:
        start = trio.current_time()
        rs.dial(A, B)
        with trio.fail_after(300):
            await until(lambda: len(remotes[A].pex_received) >= 2, 1.0)
        assert remotes[C].dials  # learnt from A's message, then dialled
        assert rs.swarm.found["pex"] == 1 and rs.swarm.found_by[C] == "pex"
        (t1, first), (t2, second) = remotes[A].pex_received[:2]
        # the first soon after the handshake, with B (a seed we dialled), never A itself
        assert t1 - start <= 2 * TICK
        assert A not in first.added and first.added.get(B) == pex.REACHABLE | pex.SEED
        # C connected later: it comes in the next message, a minute after the first
        assert set(first.added) | set(second.added) == {B, C}
        assert t2 - t1 >= pex.SEND_INTERVAL
        for remote in remotes.values():
            times = [t for t, _ in remote.pex_received]
            assert all(b - a >= pex.SEND_INTERVAL for a, b in itertools.pairwise(times))


async def test_a_private_torrent_neither_tells_nor_listens(
    tmp_path: Path, clock: trio.testing.MockClock,
) -> None:
    data = os.urandom(4 * BLOCK)
    remotes = {A: RemotePeer(data, pex={C: pex.REACHABLE}), B: RemotePeer(data, pex={}),
               C: RemotePeer(data, pex={})}
    async with running(tmp_path, remotes, private=True) as rs:
        rs.dial(A, B)
        await trio.sleep(3 * pex.SEND_INTERVAL)
        assert len(rs.swarm.peers) == 2
        assert not remotes[C].dials and rs.swarm.found["pex"] == 0
        assert remotes[A].pex_received == [] and remotes[B].pex_received == []
