"""The in-memory swarm store: the tracker's state in this process, as a pure core.

No sockets and no clock: every call that depends on time takes `now` (seconds, wall clock
in the service so that a saved state means something after a restart). `MemoryStore`
gives `SwarmStore` the shells' interface (`tracker.store.base.Store`).

Memory is bounded: at most `max_torrents` swarms of at most `max_peers_per_torrent` peers,
and `max_peers` in all; past that an announce is refused with a reason rather than growing
(about 315 bytes of RSS per tracked peer in CPython 3.11, measured by bench/tracker.py).
A peer is a small slotted record holding its packed address (the compact 6- or 18-byte
form the answers need), so the hot path allocates little.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from btfs.trackerwire import compact as compact_address
from btfs.trackerwire.events import PAUSED, STOPPED
from tracker.errors import AnnounceRefused
from tracker.store.base import (
    DEFAULT_NUMWANT,
    MAX_NUMWANT,
    TOP_TORRENTS,
    WANT_BOTH,
    WANT_V4,
    WANT_V6,
    Counters,
    Outcome,
    Ready,
    ScrapeEntry,
    check_announce,
    top_rows,
)

__all__ = ["DEFAULT_NUMWANT", "MAX_NUMWANT", "WANT_BOTH", "WANT_V4", "WANT_V6",
           "AnnounceOutcome", "MemoryStore", "Peer", "SwarmStore", "TrackedSwarm"]

SavedPeer = tuple[bytes, bytes, bool, float]  # peer_id, compact address, seed, last seen


class Peer:
    """One peer in one swarm. `kind` is bit 0 = seed, bit 1 = IPv6; `slot` its list index."""

    __slots__ = ("compact", "kind", "last_seen", "peer_id", "slot")

    def __init__(self, peer_id: bytes, compact: bytes, last_seen: float, kind: int) -> None:
        self.peer_id = peer_id
        self.compact = compact
        self.last_seen = last_seen
        self.kind = kind
        self.slot = 0

    @property
    def ip(self) -> str:
        return compact_address.unpack(self.compact)[0]

    @property
    def port(self) -> int:
        return int.from_bytes(self.compact[-2:], "big")

    @property
    def is_seed(self) -> bool:
        return bool(self.kind & 1)

    def __repr__(self) -> str:
        return f"Peer({self.peer_id!r}, {self.ip!r}, {self.port}, seed={self.is_seed})"


class TrackedSwarm:
    """The tracker's record of one torrent: its peers, in four lists (v4/v6 × leecher/seed)
    for O(1) sampling."""

    __slots__ = ("buckets", "downloaded", "next_sweep", "peers")

    def __init__(self, next_sweep: float) -> None:
        self.peers: dict[bytes, Peer] = {}
        # Index = Peer.kind: 0 v4 leechers, 1 v4 seeds, 2 v6 leechers, 3 v6 seeds.
        self.buckets: tuple[list[Peer], list[Peer], list[Peer], list[Peer]] = ([], [], [], [])
        self.downloaded = 0
        self.next_sweep = next_sweep

    @property
    def complete(self) -> int:
        return len(self.buckets[1]) + len(self.buckets[3])

    @property
    def incomplete(self) -> int:
        return len(self.buckets[0]) + len(self.buckets[2])


@dataclass(slots=True)
class AnnounceOutcome:
    """What an announce answers. `peers4`/`peers6` are live `Peer` records: read them
    (`.compact`, `.ip`, `.port`, `.peer_id`) before the next call into the store."""

    peers4: list[Peer]
    peers6: list[Peer]
    complete: int
    incomplete: int
    interval: int
    min_interval: int

    def compact4(self) -> bytes:
        return b"".join([p.compact for p in self.peers4])

    def compact6(self) -> bytes:
        return b"".join([p.compact for p in self.peers6])

    def entries(self) -> list[tuple[bytes, str, int]]:
        return [(p.peer_id, *compact_address.unpack(p.compact))
                for p in self.peers4 + self.peers6]

    def addresses4(self) -> list[tuple[str, int]]:
        return [compact_address.unpack(p.compact) for p in self.peers4]

    def addresses6(self) -> list[tuple[str, int]]:
        return [compact_address.unpack(p.compact) for p in self.peers6]


def _spread(lists: list[list[Peer]], total: int, want: int, start: int) -> list[Peer]:
    """`want` of the `total` peers of `lists` (taken as one sequence): every `step`-th
    one from position `start` on, wrapping around (systematic sampling, as opentracker
    does). With `start` uniform, every peer is equally likely to be picked, and the work
    is a few list slices (in C) instead of a random number per pick."""
    step = total // want
    end = start + want * step  # exclusive; past `total` it wraps to [0, end - total)
    spans = [(start, min(end, total), start % step)]
    if end > total:
        spans.append((0, end - total, (start - total) % step))
    picked: list[Peer] = []
    base = 0
    for lst in lists:
        top = base + len(lst)
        for lo, hi, residue in spans:
            lo = max(lo, base)
            hi = min(hi, top)
            if lo < hi:
                first = lo + (residue - lo) % step
                if first < hi:
                    picked += lst[first - base : hi - base : step]
        base = top
    return picked


# Which buckets an announce may be answered from, by [families][want_seeds].
_CANDIDATES = tuple(
    tuple(
        tuple(k for k in range(4) if (families >> (k >> 1)) & 1 and (want_seeds or not k & 1))
        for want_seeds in (False, True)
    )
    for families in range(4)
)


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
            **self.counters.as_dict(),
        }
        if top:
            biggest = heapq.nlargest(top, self._torrents.items(),
                                     key=lambda item: len(item[1].peers))
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
    ) -> AnnounceOutcome:
        """Record a peer's announce and choose peers for it.

        `numwant` < 0 means the default (50); it is clamped to 200. `compact` may carry
        the already packed address (the UDP shell has it) instead of parsing `ip`.
        (`with_ids` is for the interface: these answers always have the peer ids.)
        Raises `BadRequest` or `AnnounceRefused`, and nothing else.
        """
        self.announces[protocol] = self.announces.get(protocol, 0) + 1
        compact = check_announce(info_hash, peer_id, ip, port, uploaded, downloaded, left,
                                 event, compact)
        if self.whitelist is not None and info_hash not in self.whitelist:
            raise AnnounceRefused("torrent not registered with this tracker", "not_whitelisted")

        swarm = self._torrents.get(info_hash)
        if event == STOPPED:
            if swarm is None:
                return AnnounceOutcome([], [], 0, 0, self.interval, self.min_interval)
            gone = swarm.peers.get(peer_id)
            if gone is not None:
                self._remove(info_hash, swarm, gone, now)
            return AnnounceOutcome(
                [], [], swarm.complete, swarm.incomplete, self.interval, self.min_interval
            )

        if swarm is None:
            swarm = self._new_swarm(info_hash, now)
        elif swarm.next_sweep <= now:
            self._sweep(info_hash, swarm, now)

        seed = left == 0
        kind = (1 if seed else 0) | (2 if len(compact) == 18 else 0)
        peer = swarm.peers.get(peer_id)
        if peer is None:
            if len(swarm.peers) >= self.max_peers_per_torrent:
                raise AnnounceRefused("swarm is full", "swarm_full")
            if self.peers >= self.max_peers:
                raise AnnounceRefused("tracker is full", "tracker_full")
            peer = Peer(peer_id, compact, now, kind)
            swarm.peers[peer_id] = peer
            self._insert(swarm, peer)
            if len(swarm.peers) == 1:
                self._empty.pop(info_hash, None)
            if event == "completed":
                swarm.downloaded += 1
        else:
            if event == "completed" and not peer.kind & 1:
                swarm.downloaded += 1
            peer.last_seen = now
            if peer.compact != compact:
                peer.compact = compact
            if peer.kind != kind:
                self._detach(swarm, peer)
                peer.kind = kind
                self._insert(swarm, peer)

        peers4, peers6 = self._select(
            swarm, peer, numwant, not seed and event != PAUSED, families, now
        )
        if len(swarm.peers) == 0:  # only possible when lazy expiry emptied it
            self._empty.setdefault(info_hash, now)
        return AnnounceOutcome(
            peers4, peers6, swarm.complete, swarm.incomplete, self.interval, self.min_interval
        )

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
        self, swarm: TrackedSwarm, me: Peer, numwant: int, want_seeds: bool, families: int,
        now: float,
    ) -> tuple[list[Peer], list[Peer]]:
        if numwant < 0:
            numwant = DEFAULT_NUMWANT
        elif numwant > MAX_NUMWANT:
            numwant = MAX_NUMWANT
        if numwant == 0:
            return [], []
        buckets = swarm.buckets
        kinds = [k for k in _CANDIDATES[families & 3][want_seeds] if buckets[k]]
        if not kinds:
            return [], []
        lists = [buckets[k] for k in kinds]
        total = 0
        for lst in lists:
            total += len(lst)
        want = numwant + 1  # one spare, in case `me` is among them
        chosen: list[Peer]
        if total <= want:
            chosen = [p for lst in lists for p in lst]
        else:
            chosen = _spread(lists, total, want, self.rng.randrange(total))
        cutoff = now - self.ttl
        live = [p for p in chosen if p.last_seen >= cutoff]
        if len(live) != len(chosen):
            for p in chosen:
                if p.last_seen < cutoff:
                    self._detach(swarm, p)
                    del swarm.peers[p.peer_id]
        if me in live:  # identity: Peer has no __eq__
            live.remove(me)
        del live[numwant:]
        if kinds[-1] < 2:  # IPv4 buckets only (kinds 0 and 1)
            return live, []
        if kinds[0] >= 2:  # IPv6 only
            return [], live
        return [p for p in live if not p.kind & 2], [p for p in live if p.kind & 2]

    # ---------------------------------------------------------------- bookkeeping

    def _insert(self, swarm: TrackedSwarm, peer: Peer) -> None:
        bucket = swarm.buckets[peer.kind]
        peer.slot = len(bucket)
        bucket.append(peer)
        self._counts[peer.kind] += 1

    def _detach(self, swarm: TrackedSwarm, peer: Peer) -> None:
        bucket = swarm.buckets[peer.kind]
        last = bucket.pop()
        if last is not peer:
            bucket[peer.slot] = last
            last.slot = peer.slot
        self._counts[peer.kind] -= 1

    def _remove(self, info_hash: bytes, swarm: TrackedSwarm, peer: Peer, now: float) -> None:
        self._detach(swarm, peer)
        del swarm.peers[peer.peer_id]
        if not swarm.peers:
            self._empty[info_hash] = now

    def _sweep(self, info_hash: bytes, swarm: TrackedSwarm, now: float) -> int:
        """Drop the swarm's expired peers; return how many."""
        swarm.next_sweep = now + self._sweep_every
        cutoff = now - self.ttl
        stale = [p for p in swarm.peers.values() if p.last_seen < cutoff]
        for p in stale:
            self._detach(swarm, p)
            del swarm.peers[p.peer_id]
        if stale and not swarm.peers:
            self._empty.setdefault(info_hash, now)
        return len(stale)

    def expire(self, now: float) -> int:
        """Drop every expired peer, and swarms empty for longer than the peer lifetime.

        Announces also expire peers lazily; call this periodically to bound memory.
        Returns the number of peers dropped.
        """
        dropped = 0
        for info_hash, swarm in self._torrents.items():
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
            swarm = self._torrents.pop(info_hash)
            self._empty.pop(info_hash, None)
            for peer in swarm.peers.values():
                self._counts[peer.kind] -= 1

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
            if last_seen < cutoff or peer_id in swarm.peers:
                continue
            if len(swarm.peers) >= self.max_peers_per_torrent or self.peers >= self.max_peers:
                break
            peer = Peer(peer_id, compact, min(last_seen, now),
                        int(seed) | (2 if len(compact) == 18 else 0))
            swarm.peers[peer_id] = peer
            self._insert(swarm, peer)
        self._torrents[info_hash] = swarm
        if not swarm.peers:
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
            protocol=protocol, families=families, compact=compact))

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
