"""The in-memory swarm store: the tracker's state in this process, as a pure core.

No sockets and no clock: every call that depends on time takes `now` (seconds, wall clock
in the service so that a saved state means something after a restart). `MemoryStore`
gives `SwarmStore` the shells' interface (`tracker.store.base.Store`).

Memory is bounded for the whole tracker: at most `max_peers` peers in all; a new peer
past that first evicts the stalest peers of the tracker (those whose last announce is
oldest, at least 1% of the limit at a time, so that the work is amortised). Optional caps:
`max_peers_per_torrent` (0: none; a new peer of a full swarm is refused) and `max_torrents` (a new
torrent evicts the longest-empty swarm, else is refused). Peers are packed records
(`tracker.store.packed`): about 40-50 bytes per tracked peer in CPython 3.11 (measured by
bench/tracker.py), against ~315 for an object per peer.
"""

from __future__ import annotations

import heapq
import math
import random
import struct
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

from btfs.trackerwire.events import PAUSED, STOPPED
from tracker.errors import AnnounceRefused, RequestError
from tracker.store.base import (
    DEFAULT_NUMWANT,
    MAX_NUMWANT,
    TOP_TORRENTS,
    WANT_BOTH,
    WANT_V4,
    WANT_V6,
    Counters,
    Outcome,
    PackedOutcome,
    Ready,
    ScrapeEntry,
    check_announce,
    top_rows,
)
from tracker.store.packed import ID, Bucket, TrackedSwarm

__all__ = ["DEFAULT_NUMWANT", "MAX_NUMWANT", "WANT_BOTH", "WANT_V4", "WANT_V6",
           "MemoryStore", "SwarmStore", "TrackedSwarm"]

SavedPeer = tuple[bytes, bytes, bool, float]  # peer_id, compact address, seed, last seen
# An answer on the fast paths: peers4, peers6, ids4, ids6, complete, incomplete.
Answered = tuple[bytes, bytes, bytes, bytes, int, int]
AnnounceOutcome = PackedOutcome

EVICT_FRACTION = 100  # a full tracker evicts at least max_peers // this at a time

# Which buckets an announce may be answered from, by [families][want_seeds].
_CANDIDATES = tuple(
    tuple(
        tuple(k for k in range(4) if (families >> (k >> 1)) & 1 and (want_seeds or not k & 1))
        for want_seeds in (False, True)
    )
    for families in range(4)
)


_NOTHING = (b"", b"", b"", b"")

_FORMATS: dict[tuple[int, int, int], struct.Struct] = {}
_MAX_FORMATS = 128  # ~2 KB each; making one costs ~2 us, a miss is cheap


def _gather(column: bytearray, size: int, slots: range) -> tuple[bytes, ...] | list[bytearray]:
    """The `size`-byte records at `slots` of `column`: one slice when they are
    contiguous, else one `struct` unpack whose format skips the records in between.
    (For the ids of a non-compact answer; addresses are read through `Bucket.records`.)"""
    if slots.step == 1:
        return [column[slots.start * size : slots.stop * size]]
    key = (size, slots.step, len(slots))
    layout = _FORMATS.get(key)
    if layout is None:
        if len(_FORMATS) >= _MAX_FORMATS:
            _FORMATS.clear()
        skip = f"{size}s{(slots.step - 1) * size}x"
        layout = _FORMATS[key] = struct.Struct(skip * (len(slots) - 1) + f"{size}s")
    return layout.unpack_from(column, slots.start * size)


def _seconds(now: float) -> int:
    """A time as the whole seconds records keep, rounded up (a peer lives at least its
    full lifetime)."""
    return max(0, min(0xFFFFFFFF, math.ceil(now)))


class SwarmStore:
    """All swarms, their limits, and the counters the stats and metrics pages show."""

    def __init__(
        self,
        interval: int = 1800,
        min_interval: int = 60,
        max_torrents: int = 100_000,
        max_peers_per_torrent: int = 50_000,
        max_peers: int = 2_000_000,
        whitelist: set[bytes] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0 or min_interval < 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.min_interval = min(min_interval, interval)
        self.max_torrents = max_torrents
        self.max_peers_per_torrent = max_peers_per_torrent
        self.max_peers = max_peers
        self.whitelist = whitelist
        self.rng = rng or random.Random()
        self.ttl = 2 * interval  # a peer silent this long is gone
        self._sweep_every = max(1.0, interval / 2)
        self._torrents: dict[bytes, TrackedSwarm] = {}
        self._empty: dict[bytes, float] = {}  # swarms without peers -> since when
        self._counts = [0, 0, 0, 0]  # peers by kind, over all swarms
        self._ages: dict[int, int] = {}  # peers by last announce (second), for eviction
        self.evicted = 0  # peers evicted to make room
        self.counters = Counters()
        self.announces = self.counters.announces
        self.scrapes = self.counters.scrapes
        self.errors = self.counters.errors

    # ---------------------------------------------------------------- counters

    @property
    def torrents(self) -> int:
        return len(self._torrents)

    @property
    def seeders(self) -> int:
        return self._counts[1] + self._counts[3]

    @property
    def leechers(self) -> int:
        return self._counts[0] + self._counts[2]

    @property
    def peers(self) -> int:
        return sum(self._counts)

    def count_error(self, kind: str) -> None:
        """Record one error answered to a client (the shells call this)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def stats(self, top: int = 0) -> dict[str, Any]:
        """The numbers for /stats and /metrics; with `top`, the per-torrent view of the
        `top` torrents with the most peers."""
        data = {
            "torrents": self.torrents,
            "peers": self.peers,
            "seeders": self.seeders,
            "leechers": self.leechers,
            "peers_ipv4": self._counts[0] + self._counts[1],
            "peers_ipv6": self._counts[2] + self._counts[3],
            "evicted": self.evicted,
            **self.counters.as_dict(),
        }
        if top:
            biggest = heapq.nlargest(top, self._torrents.items(),
                                     key=lambda item: item[1].count)
            data["top"] = top_rows(((h, s.complete, s.downloaded, s.incomplete)
                                    for h, s in biggest), top)
        return data

    # ---------------------------------------------------------------- announce

    def announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        ip: str,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: str,
        numwant: int,
        now: float,
        *,
        protocol: str = "http",
        families: int = WANT_BOTH,
        compact: bytes | None = None,
        with_ids: bool = False,
    ) -> PackedOutcome:
        """Record a peer's announce and choose peers for it.

        `numwant` < 0 means the default (50); it is clamped to 200. `compact` may carry
        the already packed address (the UDP shell has it) instead of parsing `ip`.
        `with_ids`: the answer carries the chosen peers' ids too (non-compact answers).
        Raises `BadRequest` or `AnnounceRefused`, and nothing else.
        """
        try:
            compact = check_announce(info_hash, peer_id, ip, port, uploaded, downloaded, left,
                                     event, compact)
        except RequestError:
            self.announces[protocol] = self.announces.get(protocol, 0) + 1  # counted too
            raise
        peers4, peers6, ids4, ids6, complete, incomplete = self.announce_checked(
            info_hash, peer_id, compact, left, event, numwant, now, protocol, families,
            with_ids)
        return PackedOutcome(peers4, peers6, complete, incomplete, self.interval,
                             self.min_interval, ids4, ids6)

    def announce_checked(
        self, info_hash: bytes, peer_id: bytes, compact: bytes, left: int, event: str,
        numwant: int, now: float, protocol: str, families: int = WANT_BOTH,
        with_ids: bool = False,
    ) -> Answered:
        """`announce` for a shell's fast path that has checked the fields itself: what
        `check_announce` requires holds (20-byte info_hash and peer_id, `left` not negative,
        a known event, a 6- or 18-byte `compact`). The answer as a plain tuple (peers4,
        peers6, ids4, ids6, complete, incomplete): the interval is `self.interval`.
        Raises `AnnounceRefused`."""
        self.announces[protocol] = self.announces.get(protocol, 0) + 1
        if self.whitelist is not None and info_hash not in self.whitelist:
            raise AnnounceRefused("torrent not registered with this tracker", "not_whitelisted")

        swarm = self._torrents.get(info_hash)
        if event == STOPPED:
            if swarm is None:
                return b"", b"", b"", b"", 0, 0
            where = swarm.find(peer_id)
            if where >= 0:
                self._remove(info_hash, swarm, where, now)
            return b"", b"", b"", b"", swarm.complete, swarm.incomplete

        if swarm is None:
            swarm = self._new_swarm(info_hash, now)
        elif swarm.next_sweep <= now:
            self._sweep(info_hash, swarm, now)

        seed = left == 0
        kind = (1 if seed else 0) | (2 if len(compact) == 18 else 0)
        seen = int(now)  # whole seconds, rounded up (as `_seconds`, inline: the hot path)
        if seen < now:
            seen += 1
        ages = self._ages
        where = swarm.find(peer_id)
        if where < 0:
            if 0 < self.max_peers_per_torrent <= swarm.count:
                raise AnnounceRefused("swarm is full", "swarm_full")
            if self.peers >= self.max_peers:
                self._make_room()
                where = swarm.find(peer_id)  # the table may have changed
            swarm.add(where, peer_id, compact, seen, kind)
            self._counts[kind] += 1
            ages[seen] = ages.get(seen, 0) + 1
            if swarm.count == 1:
                self._empty.pop(info_hash, None)
            if event == "completed":
                swarm.downloaded += 1
            old_kind = kind
            slot = swarm.size(kind) - 1
        else:
            entry = swarm.table[where] - 1  # (`swarm.entry`, inline: the hot path)
            old_kind, slot = entry & 3, entry >> 2
            if event == "completed" and not old_kind & 1:
                swarm.downloaded += 1
            bucket = swarm.buckets[old_kind]
            assert bucket is not None
            old_seen = bucket.seen[slot]
            if old_seen != seen:
                left_over = ages[old_seen] - 1
                if left_over:
                    ages[old_seen] = left_over
                else:
                    del ages[old_seen]
                ages[seen] = ages.get(seen, 0) + 1
            if old_kind == kind:
                bucket.seen[slot] = seen
                if seen < swarm.floor:  # (the clock went back)
                    swarm.floor = seen
                size = bucket.size
                if bucket.addrs[slot * size : slot * size + size] != compact:
                    bucket.addrs[slot * size : slot * size + size] = compact
            else:
                swarm.move(where, old_kind, slot, kind, compact, seen)
                self._counts[old_kind] -= 1
                self._counts[kind] += 1
                slot = swarm.size(kind) - 1

        peers4, peers6, ids4, ids6 = self._select(
            info_hash, swarm, kind, slot, numwant, not seed and event != PAUSED, families,
            now, with_ids)
        leech4, seed4, leech6, seed6 = swarm.buckets  # (the counts, inline)
        return (
            peers4, peers6, ids4, ids6,
            (0 if seed4 is None else len(seed4.seen)) + (0 if seed6 is None else len(seed6.seen)),
            (0 if leech4 is None else len(leech4.seen))
            + (0 if leech6 is None else len(leech6.seen)))

    def _new_swarm(self, info_hash: bytes, now: float) -> TrackedSwarm:
        if len(self._torrents) >= self.max_torrents:
            if not self._empty:
                raise AnnounceRefused("tracker is full", "tracker_full")
            oldest = next(iter(self._empty))
            del self._empty[oldest]
            del self._torrents[oldest]
        swarm = TrackedSwarm(now + self._sweep_every)
        self._torrents[info_hash] = swarm
        self._empty[info_hash] = now  # until its first peer is inserted
        return swarm

    def _select(
        self, info_hash: bytes, swarm: TrackedSwarm, my_kind: int, my_slot: int,
        numwant: int, want_seeds: bool, families: int, now: float, with_ids: bool,
    ) -> tuple[bytes, bytes, bytes, bytes]:
        """Up to `numwant` random live peers other than the asking one, as packed strings
        (IPv4 entries, IPv6 entries, and their ids when asked for).

        Systematic sampling, as opentracker does: every `step`-th peer of the candidate
        buckets taken as one sequence, from a uniformly random start, wrapping around.
        Every peer is as likely to be picked, and the work is a few ranges. One spare is
        taken in case the asking peer is among them. (tests/unit/test_tracker_swarms.py
        holds this to the plain description, `_selection_oracle`.)"""
        if numwant < 0:
            numwant = DEFAULT_NUMWANT
        elif numwant > MAX_NUMWANT:
            numwant = MAX_NUMWANT
        elif not numwant:
            return _NOTHING
        buckets = swarm.buckets
        kinds = _CANDIDATES[families & 3][want_seeds]
        total = 0
        for kind in kinds:
            bucket = buckets[kind]
            if bucket is not None:
                total += len(bucket.seen)
        if not total:
            return _NOTHING
        want = numwant + 1
        segments: tuple[tuple[int, int], ...]
        if total <= want:
            step, segments = 1, ((0, total),)
        else:
            # `want` positions start + j * step of the sequence, as at most two runs
            # [lo, hi) stepping from lo: the second is the part past the end, wrapped.
            step = total // want
            start = int(self.rng.random() * total)  # (randrange: 3x)
            if start >= total:  # (random() may round up to 1.0 times total)
                start = total - 1
            end = start + want * step
            if end <= total:
                segments = ((start, end),)
            else:
                before = (total - start + step - 1) // step  # positions before the end
                wrapped = start + before * step - total
                segments = ((start, start + before * step),
                            (wrapped, wrapped + (want - before) * step))
        cutoff = now - self.ttl
        check = swarm.floor < cutoff  # else no peer of the swarm can have expired
        # Each bucket's chosen slots as ranges, their addresses copied out of a strided
        # view in C (`Bucket.records`). The asking peer splits its range; with expired
        # peers about, the range is walked one peer at a time.
        out4: list[bytes] = []
        out6: list[bytes] = []
        ids: tuple[list[bytes | bytearray], list[bytes | bytearray]] = ([], [])
        stale: list[bytes] = []
        budget = numwant  # (the spare goes, if the asking peer was not among them)
        base = 0
        for kind in kinds:
            bucket = buckets[kind]
            if bucket is None:
                continue
            top = base + len(bucket.seen)
            out = out6 if kind & 2 else out4
            for lo, hi in segments:
                if lo < base:
                    lo += (base - lo + step - 1) // step * step
                if hi > top:
                    hi = top
                if lo >= hi:
                    continue
                chosen = range(lo - base, hi - base, step)
                if check:
                    budget = self._pick_live(bucket, chosen, kind == my_kind and my_slot,
                                             cutoff, budget, out, ids[kind >> 1], stale,
                                             with_ids)
                    continue
                if not budget:
                    break
                runs: tuple[range, ...] = (chosen,)
                if kind == my_kind and my_slot in chosen:
                    at = (my_slot - chosen.start) // step
                    runs = (chosen[:at], chosen[at + 1 :])
                for run in runs:
                    n = len(run)
                    if n > budget:
                        run = run[:budget]
                        n = budget
                    if not n:
                        continue
                    budget -= n
                    out.append(bucket.records[run.start : run.stop : step].tobytes())
                    if with_ids:
                        ids[kind >> 1].extend(_gather(bucket.ids, ID, run))
            base = top
        for peer_id in stale:  # met on the way: expired, never handed out again
            where = swarm.find(peer_id)
            if where >= 0:
                self._remove(info_hash, swarm, where, now)
        if not with_ids:
            return b"".join(out4), b"".join(out6) if out6 else b"", b"", b""
        return b"".join(out4), b"".join(out6), b"".join(ids[0]), b"".join(ids[1])

    @staticmethod
    def _pick_live(bucket: Bucket, chosen: range, mine: int | bool, cutoff: float,
                   budget: int, addrs: list[bytes],
                   ids: list[bytes | bytearray], stale: list[bytes], with_ids: bool) -> int:
        """`_select`'s walk of one range peer by peer, where some may have expired: the
        live ones (not `mine`, a slot or False) up to `budget` go to `addrs` (and `ids`),
        the expired ones' ids to `stale`; the budget left."""
        seen = bucket.seen
        size = bucket.size
        for i in chosen:
            if seen[i] < cutoff:
                stale.append(bytes(bucket.ids[i * ID : i * ID + ID]))
            elif budget and not (mine is not False and i == mine):
                budget -= 1
                addrs.append(bytes(bucket.addrs[i * size : i * size + size]))
                if with_ids:
                    ids.append(bucket.ids[i * ID : i * ID + ID])
        return budget

    # ---------------------------------------------------------------- bookkeeping

    def _remove(self, info_hash: bytes, swarm: TrackedSwarm, where: int, now: float) -> None:
        kind, seen = swarm.remove(where)
        self._counts[kind] -= 1
        left_over = self._ages[seen] - 1
        if left_over:
            self._ages[seen] = left_over
        else:
            del self._ages[seen]
        if not swarm.count:
            self._empty.setdefault(info_hash, now)

    def _drop_before(self, info_hash: bytes, swarm: TrackedSwarm, cutoff: int,
                     now: float) -> int:
        """Drop the swarm's peers last seen before `cutoff`; how many."""
        stale = swarm.stale(cutoff)
        for peer_id, _, _ in stale:
            self._remove(info_hash, swarm, swarm.find(peer_id), now)
        swarm.refloor()
        return len(stale)

    def _sweep(self, info_hash: bytes, swarm: TrackedSwarm, now: float) -> int:
        """Drop the swarm's expired peers; return how many."""
        swarm.next_sweep = now + self._sweep_every
        return self._drop_before(info_hash, swarm, math.ceil(now - self.ttl), now)

    def _make_room(self) -> None:
        """The tracker is full: evict its stalest peers, at least 1% of the limit (all of
        those last seen in the same second as the last one evicted)."""
        target = max(1, self.max_peers // EVICT_FRACTION)
        counted = 0
        cutoff = 0
        for second in sorted(self._ages):
            counted += self._ages[second]
            cutoff = second + 1
            if counted >= target:
                break
        for info_hash, swarm in list(self._torrents.items()):
            self.evicted += self._drop_before(info_hash, swarm, cutoff, float(cutoff))

    def expire(self, now: float) -> int:
        """Sweep the swarms whose sweep is due (every half interval), and drop swarms
        empty for longer than the peer lifetime.

        Announces also expire peers lazily; call this periodically to bound memory.
        Returns the number of peers dropped.
        """
        dropped = 0
        for info_hash, swarm in list(self._torrents.items()):
            if swarm.next_sweep <= now:
                dropped += self._sweep(info_hash, swarm, now)
        cutoff = now - self.ttl
        for info_hash in [h for h, since in self._empty.items() if since <= cutoff]:
            del self._empty[info_hash]
            del self._torrents[info_hash]
        return dropped

    def set_whitelist(self, whitelist: set[bytes] | None) -> None:
        """Replace the whitelist (None: any torrent); swarms no longer listed are dropped."""
        self.whitelist = whitelist
        if whitelist is None:
            return
        for info_hash in [h for h in self._torrents if h not in whitelist]:
            swarm = self._torrents[info_hash]
            self._drop_before(info_hash, swarm, 0xFFFFFFFF + 1, 0.0)
            del self._torrents[info_hash]
            self._empty.pop(info_hash, None)

    def get_swarm(self, info_hash: bytes) -> TrackedSwarm | None:
        """The swarm of a torrent, for inspection (tests, stats)."""
        return self._torrents.get(info_hash)

    # ---------------------------------------------------------------- scrape

    def scrape(
        self, hashes: Iterable[bytes], *, protocol: str = "http"
    ) -> dict[bytes, ScrapeEntry]:
        """(complete, downloaded, incomplete) of each torrent; unknown ones are all zero."""
        self.scrapes[protocol] = self.scrapes.get(protocol, 0) + 1
        result: dict[bytes, ScrapeEntry] = {}
        for info_hash in hashes:
            swarm = self._torrents.get(info_hash)
            if swarm is None:
                result[info_hash] = (0, 0, 0)
            else:
                result[info_hash] = (swarm.complete, swarm.downloaded, swarm.incomplete)
        return result

    def scrape_all(self, *, protocol: str = "http") -> dict[bytes, ScrapeEntry]:
        """The scrape of every known torrent (a full scrape)."""
        return self.scrape(list(self._torrents), protocol=protocol)

    # ---------------------------------------------------------------- saved state

    def swarms(self) -> Iterator[tuple[bytes, TrackedSwarm]]:
        """Every torrent's swarm, for saving (see `tracker.snapshot`)."""
        return iter(self._torrents.items())

    def restore(
        self, info_hash: bytes, downloaded: int, peers: Iterable[SavedPeer], now: float
    ) -> bool:
        """Add a saved swarm, under the whitelist and the limits, without the peers expired
        by `now`; False once no more torrents fit (the rest of a saved state is dropped)."""
        if self.whitelist is not None and info_hash not in self.whitelist:
            return True
        if info_hash in self._torrents:
            return True
        if len(self._torrents) >= self.max_torrents:
            return False
        cutoff = now - self.ttl
        swarm = TrackedSwarm(now + self._sweep_every)
        swarm.downloaded = downloaded
        for peer_id, compact, seed, last_seen in peers:
            if last_seen < cutoff:
                continue
            where = swarm.find(peer_id)
            if where >= 0:
                continue
            if 0 < self.max_peers_per_torrent <= swarm.count or self.peers >= self.max_peers:
                break
            kind = int(seed) | (2 if len(compact) == 18 else 0)
            seen = _seconds(min(last_seen, now))
            swarm.add(where, peer_id, compact, seen, kind)
            self._counts[kind] += 1
            self._ages[seen] = self._ages.get(seen, 0) + 1
        self._torrents[info_hash] = swarm
        if not swarm.count:
            self._empty[info_hash] = now
        return True


class MemoryStore:
    """`SwarmStore` behind the shells' interface (`tracker.store.base.Store`): every
    answer is `Ready` at once."""

    def __init__(self, swarms: SwarmStore) -> None:
        self.swarms = swarms
        self.interval = swarms.interval
        self.min_interval = swarms.min_interval
        self.counters = swarms.counters

    @property
    def available(self) -> bool:
        return True

    def announce(
        self, info_hash: bytes, peer_id: bytes, ip: str, port: int, uploaded: int,
        downloaded: int, left: int, event: str, numwant: int, now: float, *,
        protocol: str = "http", families: int = WANT_BOTH, compact: bytes | None = None,
        with_ids: bool = False,
    ) -> Ready[Outcome]:
        return Ready(self.swarms.announce(
            info_hash, peer_id, ip, port, uploaded, downloaded, left, event, numwant, now,
            protocol=protocol, families=families, compact=compact, with_ids=with_ids))

    def scrape(self, hashes: list[bytes], now: float, *, protocol: str = "http"
               ) -> Ready[dict[bytes, ScrapeEntry]]:
        return Ready(self.swarms.scrape(hashes, protocol=protocol))

    def scrape_all(self, now: float, *, protocol: str = "http"
                   ) -> Ready[dict[bytes, ScrapeEntry]]:
        return Ready(self.swarms.scrape_all(protocol=protocol))

    def count_error(self, kind: str) -> None:
        self.counters.count_error(kind)

    def stats(self, now: float, top: int = TOP_TORRENTS) -> Awaitable[dict[str, Any]]:
        return Ready(self.swarms.stats(top))

    def set_whitelist(self, whitelist: set[bytes] | None) -> None:
        self.swarms.set_whitelist(whitelist)

    def maintain(self, now: float) -> Awaitable[int]:
        return Ready(self.swarms.expire(now))
