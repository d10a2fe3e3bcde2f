"""The Redis store: swarms in Redis, shared by every tracker process that uses it.

Each announce is one EVALSHA of `redisproto.ANNOUNCE_LUA` (add or refresh the peer with
its time, sweep expired peers when due, count, pick random peers of the right family);
each scraped torrent one EVALSHA of `SCRAPE_LUA`. The scripts are loaded on every new
connection. Counters (announces, scrapes, errors) are this process's own; swarm figures
for /stats and /metrics are summed over the swarms in Redis (SCAN), at most every
`STATS_EVERY` seconds.

Several Redis servers: each torrent's swarm lives on one of them, chosen by its
info-hash (`shard_of`), so N servers share the work (every tracker process must be given
the same servers in the same order). A server that is down makes the announces of its
torrents fail, not the others'.

The whitelist and the per-torrent peer limit apply as with the memory store; the memory
bound is Redis's own (`maxmemory`, with `volatile-ttl` eviction dropping the swarms
nearest to expiry first). `--max-torrents` and `--max-peers` do not apply here.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from btfs.trackerwire.events import COMPLETED, PAUSED, STOPPED
from tracker.errors import AnnounceRefused, StoreUnavailable
from tracker.store.base import (
    TOP_TORRENTS,
    WANT_BOTH,
    Counters,
    PackedOutcome,
    ScrapeEntry,
    check_announce,
    clamp_numwant,
    top_rows,
)
from tracker.store.packed import ID
from tracker.store.redisclient import RedisClient, Reply, ReplyError, SetupError
from tracker.store.redisproto import (
    ANNOUNCE_LUA,
    ANNOUNCE_SHA,
    CANDIDATES,
    SCRAPE_LUA,
    SCRAPE_SHA,
    SCRIPTS,
    SECRET_KEY,
    SWARM_PATTERN,
    RedisAddress,
    info_hash_of,
    swarm_keys,
)

log = logging.getLogger("tracker.store")

STATS_EVERY = 5.0  # seconds a sum over the swarms in Redis is reused for
ERROR_LOG_EVERY = 60.0  # seconds between log lines about error replies

SwarmRow = tuple[bytes, int, int, int, int, int]  # hash, kinds 0-3, completed
ScrapeCall = tuple[RedisClient, Reply, tuple[Any, ...]]


def shard_of(info_hash: bytes, servers: int) -> int:
    """Which of `servers` Redis servers holds a torrent (info-hashes are uniform)."""
    return int.from_bytes(info_hash[:8], "big") % servers


class RedisStore:
    """Swarms in Redis (see the module docstring); `run` keeps the connection."""

    def __init__(
        self,
        address: RedisAddress | list[RedisAddress],
        interval: int = 1800,
        min_interval: int = 60,
        max_peers_per_torrent: int = 50_000,
        whitelist: set[bytes] | None = None,
        timeout: float = 2.0,
    ) -> None:
        if interval <= 0 or min_interval < 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.min_interval = min(min_interval, interval)
        self.max_peers_per_torrent = max_peers_per_torrent
        self.whitelist = whitelist
        self.ttl = 2 * interval
        self._sweep_every = max(1, interval // 2)
        self._key_life = self.ttl + self._sweep_every
        self.counters = Counters()
        addresses = address if isinstance(address, list) else [address]
        if not addresses:
            raise ValueError("no Redis server")
        # The first server also keeps the shared UDP secret.
        self.clients = [RedisClient(a, self._on_connect if n == 0 else self._load_scripts,
                                    timeout) for n, a in enumerate(addresses)]
        self.client = self.clients[0]
        self.on_secret: Callable[[bytes], None] | None = None
        self._rows: tuple[float, list[SwarmRow]] | None = None
        self._error_logged = -ERROR_LOG_EVERY
        self._rng = random.Random()

    @property
    def available(self) -> bool:
        return all(client.up for client in self.clients)

    def shard(self, info_hash: bytes) -> RedisClient:
        """The server holding a torrent's swarm."""
        return self.clients[shard_of(info_hash, len(self.clients))]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep the connections to Redis (see `RedisClient.run`); started once every
        server has had its first attempt."""
        async with trio.open_nursery() as nursery:
            for client in self.clients:
                nursery.start_soon(client.run)
            for client in self.clients:
                await client.first_attempt.wait()
            task_status.started()

    async def _load_scripts(self, command: Callable[..., Reply]) -> None:
        for sha, script in SCRIPTS:
            answer = await command(b"SCRIPT", b"LOAD", script)
            if isinstance(answer, ReplyError) or answer != sha:
                raise SetupError(f"SCRIPT LOAD failed: {answer!r}"[:200])

    async def _on_connect(self, command: Callable[..., Reply]) -> None:
        """Load the scripts; agree on the UDP connection-ID secret with the others."""
        await self._load_scripts(command)
        if self.on_secret is not None:
            await command(b"SET", SECRET_KEY, os.urandom(32), b"NX")
            secret = await command(b"GET", SECRET_KEY)
            if isinstance(secret, bytes) and len(secret) >= 16:
                self.on_secret(secret)

    # -------------------------------------------------------------- announce

    def announce(
        self, info_hash: bytes, peer_id: bytes, ip: str, port: int, uploaded: int,
        downloaded: int, left: int, event: str, numwant: int, now: float, *,
        protocol: str = "http", families: int = WANT_BOTH, compact: bytes | None = None,
        with_ids: bool = False,
    ) -> Awaitable[PackedOutcome]:
        self.counters.announces[protocol] = self.counters.announces.get(protocol, 0) + 1
        compact = check_announce(info_hash, peer_id, ip, port, uploaded, downloaded, left,
                                 event, compact)
        if self.whitelist is not None and info_hash not in self.whitelist:
            raise AnnounceRefused("torrent not registered with this tracker", "not_whitelisted")
        seed = left == 0
        kind = -1 if event == STOPPED else (1 if seed else 0) | (2 if len(compact) == 18 else 0)
        candidates = CANDIDATES[families & 3][not seed and event != PAUSED]
        wanted = clamp_numwant(numwant)
        args = (
            *swarm_keys(info_hash), peer_id, compact, kind, round(now, 3), round(now - self.ttl, 3),
            wanted, candidates, 1 if event == COMPLETED else 0,
            self._key_life, 0, self.max_peers_per_torrent,
            self._sweep_every, self._rng.getrandbits(31),
        )
        client = self.shard(info_hash)
        reply = client.call(b"EVALSHA", ANNOUNCE_SHA, 6, *args)
        return self._announced(client, reply, args, wanted, with_ids)

    async def _announced(self, client: RedisClient, reply: Reply, args: tuple[Any, ...],
                         numwant: int, with_ids: bool) -> PackedOutcome:
        answer = await self._script_answer(client, reply, ANNOUNCE_LUA, args)
        complete, incomplete, members4, members6, full = answer
        if full:
            raise AnnounceRefused("swarm is full", "swarm_full")
        peer_id = args[6]
        peers4, ids4 = _split_members(members4, 6, peer_id, numwant)
        peers6, ids6 = _split_members(members6, 18, peer_id, numwant - len(ids4) // 20)
        if not with_ids:
            ids4 = ids6 = b""
        return PackedOutcome(peers4, peers6, complete, incomplete, self.interval,
                             self.min_interval, ids4, ids6)

    async def _script_answer(self, client: RedisClient, reply: Reply, script: bytes,
                             args: tuple[Any, ...]) -> Any:
        """A script's answer; after NOSCRIPT (a SCRIPT FLUSH) once more with EVAL, which
        caches it again. An error reply (out of memory, ...) is `StoreUnavailable`."""
        answer = await reply
        if isinstance(answer, ReplyError) and str(answer).startswith("NOSCRIPT"):
            answer = await client.call(b"EVAL", script, 6, *args)
        if isinstance(answer, ReplyError):
            now = time.monotonic()
            if now - self._error_logged >= ERROR_LOG_EVERY:
                self._error_logged = now
                log.warning("redis store: error reply: %s", str(answer)[:200])
            raise StoreUnavailable()
        return answer

    # -------------------------------------------------------------- scrape

    def scrape(self, hashes: list[bytes], now: float, *, protocol: str = "http"
               ) -> Awaitable[dict[bytes, ScrapeEntry]]:
        self.counters.scrapes[protocol] = self.counters.scrapes.get(protocol, 0) + 1
        cutoff = round(now - self.ttl, 3)
        calls = [(h, self._scrape_call(h, cutoff)) for h in dict.fromkeys(hashes)]
        return self._scraped(calls)

    def _scrape_call(self, info_hash: bytes, cutoff: float) -> ScrapeCall:
        args: tuple[bytes | float, ...] = (*swarm_keys(info_hash), cutoff)
        client = self.shard(info_hash)
        return client, client.call(b"EVALSHA", SCRAPE_SHA, 6, *args), args

    async def _scraped(self, calls: list[tuple[bytes, ScrapeCall]]
                       ) -> dict[bytes, ScrapeEntry]:
        files: dict[bytes, ScrapeEntry] = {}
        for info_hash, (client, reply, args) in calls:
            k0, k1, k2, k3, done = await self._script_answer(client, reply, SCRAPE_LUA, args)
            files[info_hash] = (k1 + k3, done, k0 + k2)
        return files

    async def scrape_all(self, now: float, *, protocol: str = "http"
                         ) -> dict[bytes, ScrapeEntry]:
        self.counters.scrapes[protocol] = self.counters.scrapes.get(protocol, 0) + 1
        return {row[0]: (row[2] + row[4], row[5], row[1] + row[3])
                for row in await self._swarm_rows(now)}

    # -------------------------------------------------------------- figures

    def count_error(self, kind: str) -> None:
        self.counters.count_error(kind)

    async def stats(self, now: float, top: int = TOP_TORRENTS) -> dict[str, Any]:
        """This process's counters, and the swarm figures summed over Redis (absent
        while Redis is unreachable)."""
        data: dict[str, Any] = self.counters.as_dict()
        data["store"] = {"kind": "redis", "up": self.available,
                         "servers": len(self.clients),
                         "servers_up": sum(client.up for client in self.clients),
                         "connection_failures": sum(c.disconnects for c in self.clients)}
        try:
            rows = await self._swarm_rows(now)
        except StoreUnavailable:
            return data
        kinds = [0, 0, 0, 0]
        for _, k0, k1, k2, k3, _ in rows:
            kinds[0] += k0
            kinds[1] += k1
            kinds[2] += k2
            kinds[3] += k3
        data.update({
            "torrents": len(rows),
            "peers": sum(kinds),
            "seeders": kinds[1] + kinds[3],
            "leechers": kinds[0] + kinds[2],
            "peers_ipv4": kinds[0] + kinds[1],
            "peers_ipv6": kinds[2] + kinds[3],
        })
        if top:
            data["top"] = top_rows(((r[0], r[2] + r[4], r[5], r[1] + r[3]) for r in rows),
                                   top)
        return data

    async def _swarm_rows(self, now: float) -> list[SwarmRow]:
        """Every swarm in Redis with its live peers by kind, reused for STATS_EVERY s."""
        if self._rows is not None and time.monotonic() - self._rows[0] < STATS_EVERY:
            return self._rows[1]
        cutoff = round(now - self.ttl, 3)
        rows: list[SwarmRow] = []
        for server, client in enumerate(self.clients):
            cursor = b"0"
            while True:
                answer = await self._script_answer(client, client.call(
                    b"SCAN", cursor, b"MATCH", SWARM_PATTERN, b"COUNT", 1000), b"", ())
                cursor, keys = answer
                hashes = [h for h in map(info_hash_of, keys)
                          if h is not None and shard_of(h, len(self.clients)) == server]
                calls = [(h, self._scrape_call(h, cutoff)) for h in hashes]
                for info_hash, (shard, reply, args) in calls:
                    k0, k1, k2, k3, done = await self._script_answer(shard, reply, SCRAPE_LUA,
                                                                     args)
                    rows.append((info_hash, k0, k1, k2, k3, done))
                if cursor == b"0":
                    break
        self._rows = (time.monotonic(), rows)
        return rows

    def set_whitelist(self, whitelist: set[bytes] | None) -> None:
        """Only announces are checked against it: swarms no longer listed are left to
        expire in Redis (other trackers sharing it may list them)."""
        self.whitelist = whitelist

    async def maintain(self, now: float) -> int:
        """Nothing to do here: the announce script sweeps expired peers and key lifetimes
        drop abandoned swarms, inside Redis. Returns 0 peers dropped by this process."""
        return 0


_LAYOUTS: dict[tuple[int, int], struct.Struct] = {}


def _split_members(blob: bytes, size: int, peer_id: bytes, numwant: int
                   ) -> tuple[bytes, bytes]:
    """(compact entries, peer ids) of up to `numwant` members (peer_id + `size`-byte
    address, end to end) other than `peer_id`'s."""
    count = len(blob) // (ID + size)
    if not count or numwant <= 0:
        return b"", b""
    layout = _LAYOUTS.get((size, count))
    if layout is None:
        if len(_LAYOUTS) >= 128:
            _LAYOUTS.clear()
        layout = _LAYOUTS[(size, count)] = struct.Struct(f"{ID}s{size}s" * count)
    fields = layout.unpack(blob[: count * (ID + size)])
    ids = fields[0::2]
    addresses = fields[1::2]
    if peer_id in ids:
        at = ids.index(peer_id)
        ids = ids[:at] + ids[at + 1 :]
        addresses = addresses[:at] + addresses[at + 1 :]
    return b"".join(addresses[:numwant]), b"".join(ids[:numwant])
