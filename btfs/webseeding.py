"""Web seeds (BEP 19) as sources for the picker: one more kind of peer.

A web seed has every piece. Its workers ask the picker for blocks as a peer's request
loop does (so a waiting read's pieces come first, then the read-ahead, then the rest);
when a read waits, the swarm counts the seed among the sources of the read's blocks by
expected arrival (its measured rate and what it has in flight, `request_urgent`), so a
read takes its piece from a web seed when that is faster than from the peers
and fetch each run of contiguous blocks with one HTTP Range request; the blocks go to
the swarm like any peer's, and the piece is verified by its SHA-1 there. A fetch that
fails gives its blocks back to the picker; a seed that fails repeatedly (or sends
pieces that fail their hash) is dropped by `btfs.webseed.WebSeed` and its workers stop.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Container, Sequence
from typing import Protocol

import trio

from btfs.picker import Block
from btfs.rates import RateMeter
from btfs.webseed import WebSeed, WebSeedError

log = logging.getLogger(__name__)

BLOCKS_PER_FETCH = 64        # 1 MiB of 16 KiB blocks per round of one worker
WORKERS_PER_SEED = 2         # rounds in flight per seed (its connections per host)
IDLE_WAIT = 1.0              # nothing to fetch: look again after this (or when woken)
RETRY_FIRST = 1.0            # a failed fetch: wait, doubling to RETRY_MAX
RETRY_MAX = 30.0
MAX_HASH_FAILURES = 3        # pieces that failed their SHA-1 before the seed is dropped


class WebSeedHost(Protocol):
    """What a web seed's workers need from the swarm."""

    def pick_for(self, source: bytes, has: Container[int], count: int, *,
                 urgent_only: bool = False) -> list[Block]: ...

    def block_from(self, source: bytes, block: Block, data: bytes) -> None: ...

    def give_back(self, source: bytes, blocks: Sequence[Block]) -> None: ...

    def receive_delay(self, size: int) -> float: ...

    @property
    def complete(self) -> bool: ...


class _Everything:
    def __contains__(self, piece: object) -> bool:
        return True


def source_id(url: str) -> bytes:
    """A picker key for a web seed: never a peer id (those are 20 bytes)."""
    return b"webseed:" + hashlib.sha1(url.encode()).digest()[:8]


def contiguous_runs(blocks: Sequence[Block]) -> list[list[Block]]:
    """Blocks grouped into runs that are adjacent within one piece, in order."""
    runs: list[list[Block]] = []
    for block in sorted(blocks, key=lambda b: (b.piece, b.begin)):
        last = runs[-1][-1] if runs else None
        if last is not None and last.piece == block.piece \
                and last.begin + last.length == block.begin:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


class WebSeedSource:
    """Runs a web seed's workers for a swarm."""

    def __init__(self, seed: WebSeed, host: WebSeedHost) -> None:
        self.seed = seed
        self.host = host
        self.id = source_id(seed.url)
        self.hash_failures = 0
        self.meter = RateMeter(window=4.0)
        self.queued = 0            # bytes asked of the server and not yet received
        self.urgent = 0            # blocks of waiting reads the swarm gave this seed
        self._wake = trio.Event()

    def kick(self) -> None:
        """Something changed (a read waits): look for work now."""
        self._wake.set()

    def request_urgent(self, blocks: int) -> None:
        """The swarm expects this seed to deliver `blocks` of a waiting read soonest: the
        next free worker fetches them before anything else."""
        self.urgent += blocks
        self._wake.set()

    def rate(self, now: float) -> float:
        return self.meter.value(now)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(WORKERS_PER_SEED):
                    nursery.start_soon(self._worker)
        finally:
            with trio.CancelScope(shield=True):
                await self.seed.aclose()

    async def _worker(self) -> None:
        delay = RETRY_FIRST
        everything = _Everything()
        while not self.dropped and not self.host.complete:
            if self.urgent > 0:
                blocks = self.host.pick_for(self.id, everything,
                                            min(self.urgent, BLOCKS_PER_FETCH), urgent_only=True)
                self.urgent = max(0, self.urgent - len(blocks)) if blocks else 0
            else:
                blocks = self.host.pick_for(self.id, everything, BLOCKS_PER_FETCH)
            if not blocks:
                self._wake = trio.Event()
                with trio.move_on_after(IDLE_WAIT):
                    await self._wake.wait()
                continue
            try:
                await self._fetch(blocks)
            except WebSeedError as exc:
                log.info("web seed %s: %s", self.seed.url, exc)
                if self.seed.failures >= self.seed.max_failures:
                    log.warning("web seed %s dropped after %d failures in a row: %s",
                                self.seed.url, self.seed.failures, self.seed.last_error)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
            else:
                delay = RETRY_FIRST

    async def _fetch(self, blocks: list[Block]) -> None:
        """Fetch `blocks` run by run; what was not delivered goes back to the picker."""
        pending = list(blocks)
        queued = sum(b.length for b in blocks)
        self.queued += queued
        try:
            for run in contiguous_runs(blocks):
                length = sum(b.length for b in run)
                wait = self.host.receive_delay(length)
                if wait:
                    await trio.sleep(wait)
                data = await self.seed.fetch(run[0].piece, run[0].begin, length)
                self.meter.add(length, trio.current_time())
                self.queued -= length
                queued -= length
                offset = 0
                for block in run:
                    self.host.block_from(self.id, block, data[offset : offset + block.length])
                    offset += block.length
                    pending.remove(block)
        finally:
            self.queued -= queued
            if pending:
                self.host.give_back(self.id, pending)

    @property
    def dropped(self) -> bool:
        """Failed too often in a row (`WebSeed`), or sent pieces that fail their hash."""
        return self.seed.dropped or self.hash_failures >= MAX_HASH_FAILURES

    def hash_failed(self, piece: int) -> None:
        """A piece with blocks from this seed failed its SHA-1; a fetch that succeeds does
        not make up for it (the server is up, but serves other bytes)."""
        self.seed.report_hash_failure(piece)
        self.hash_failures += 1
        if self.hash_failures == MAX_HASH_FAILURES:
            log.warning("web seed %s dropped: %d pieces from it failed their hash check",
                        self.seed.url, self.hash_failures)
