"""What other nodes announced to us, and the tokens that let them announce. Pure.

Peers are kept per info-hash as compact addresses with the time they expire (30 minutes
after their last announce), bounded per info-hash, in number of info-hashes and in all:
when full, a new peer of a known info-hash replaces its oldest, and a new info-hash is
refused. Tokens (BEP 5) are a hash of the asker's IP and a secret that rotates every
5 minutes; the current and the previous secret are accepted, so a token lives 5 to 10
minutes.
"""

from __future__ import annotations

import hashlib
import random

PEER_TTL = 30 * 60.0
MAX_PEERS_PER_HASH = 500
MAX_HASHES = 2000
MAX_PEERS = 20_000
ANSWER_PEERS = 50            # peers in one get_peers answer (IPv4: 400 bytes)
ANSWER_PEERS6 = 30           # IPv6 peers are 21 bytes each on the wire
TOKEN_ROTATE = 5 * 60.0
TOKEN_BYTES = 8


class PeerStore:
    """Compact peers per info-hash, expiring and bounded."""

    def __init__(self, *, per_hash: int = MAX_PEERS_PER_HASH, hashes: int = MAX_HASHES,
                 total: int = MAX_PEERS, ttl: float = PEER_TTL) -> None:
        self.per_hash = per_hash
        self.max_hashes = hashes
        self.max_total = total
        self.ttl = ttl
        self._swarms: dict[bytes, dict[bytes, float]] = {}  # insertion order = oldest first
        self.total = 0

    def __len__(self) -> int:
        return len(self._swarms)

    def announce(self, info_hash: bytes, peer: bytes, now: float) -> bool:
        """Store (or renew) `peer` for `info_hash`; False if the store is full."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self.max_hashes or self.total >= self.max_total:
                return False
            swarm = self._swarms[info_hash] = {}
        if peer in swarm:
            del swarm[peer]        # renewed: it becomes the newest
        elif len(swarm) >= self.per_hash or self.total >= self.max_total:
            if not swarm:
                return False
            del swarm[next(iter(swarm))]
        else:
            self.total += 1
        swarm[peer] = now + self.ttl
        return True

    def peers(self, info_hash: bytes, now: float, rng: random.Random, *,
              size: int = 6) -> list[bytes]:
        """A random sample of the live peers of `info_hash` of one address `size`."""
        swarm = self._swarms.get(info_hash)
        if not swarm:
            return []
        live = [p for p, until in swarm.items() if until > now and len(p) == size]
        want = ANSWER_PEERS if size == 6 else ANSWER_PEERS6
        return live if len(live) <= want else rng.sample(live, want)

    def expire(self, now: float) -> int:
        """Forget expired peers and empty info-hashes; how many peers went."""
        gone = 0
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            dead = [p for p, until in swarm.items() if until <= now]
            for p in dead:
                del swarm[p]
            gone += len(dead)
            if not swarm:
                del self._swarms[info_hash]
        self.total -= gone
        return gone


class Tokens:
    """Tokens for get_peers answers, checked on announce_peer."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self.rng = rng
        self._secrets = [rng.randbytes(16), rng.randbytes(16)]
        self._rotated = now

    def _rotate(self, now: float) -> None:
        if now - self._rotated >= 2 * TOKEN_ROTATE:
            self._secrets = [self.rng.randbytes(16), self.rng.randbytes(16)]
            self._rotated = now
        elif now - self._rotated >= TOKEN_ROTATE:
            self._secrets = [self.rng.randbytes(16), self._secrets[0]]
            self._rotated = now

    def _token(self, secret: bytes, ip: str) -> bytes:
        return hashlib.sha1(secret + ip.encode()).digest()[:TOKEN_BYTES]

    def make(self, ip: str, now: float) -> bytes:
        self._rotate(now)
        return self._token(self._secrets[0], ip)

    def check(self, token: bytes, ip: str, now: float) -> bool:
        self._rotate(now)
        return any(token == self._token(s, ip) for s in self._secrets)
