"""Whom to upload to. Pure: rates and time are passed in.

While downloading, tit-for-tat: the `slots - 1` interested peers that send us the most
get a slot, and one more slot is an optimistic unchoke that moves to another choked,
interested peer every `optimistic_interval` seconds (newly met peers three times as
likely, so they get a chance to prove themselves). As a seed nothing comes back, so
the slots go to the peers we upload to fastest, with the optimistic slot rotating the
rest, which spreads pieces over the swarm instead of feeding one peer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerRates:
    peer_id: bytes
    interested: bool
    download_rate: float  # what the peer sends us, bytes/s
    upload_rate: float    # what we send the peer, bytes/s
    is_seed: bool = False


class Choker:
    """Picks the unchoked set at each rechoke (every 10 s, and when peers come or go)."""

    def __init__(
        self,
        slots: int = 4,
        optimistic_interval: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.slots = max(1, slots)
        self.optimistic_interval = optimistic_interval
        self.rng = rng or random.Random()
        self.optimistic: bytes | None = None
        self._optimistic_since = float("-inf")
        self._first_seen: dict[bytes, float] = {}

    def rechoke(self, now: float, peers: list[PeerRates], we_are_seed: bool) -> set[bytes]:
        """The ids of the peers to unchoke now; every other peer is choked."""
        present = {p.peer_id for p in peers}
        for peer_id in list(self._first_seen):
            if peer_id not in present:
                del self._first_seen[peer_id]
        for p in peers:
            self._first_seen.setdefault(p.peer_id, now)

        candidates = [p for p in peers if p.interested and not p.is_seed]
        if we_are_seed:
            ranked = sorted(candidates, key=lambda p: p.upload_rate, reverse=True)
        else:
            ranked = sorted(candidates, key=lambda p: p.download_rate, reverse=True)
        regular = {p.peer_id for p in ranked[: self.slots - 1]}

        rest = [p for p in candidates if p.peer_id not in regular]
        if (
            self.optimistic not in {p.peer_id for p in rest}
            or now - self._optimistic_since >= self.optimistic_interval
        ):
            self.optimistic = self._choose_optimistic(rest, now)
            self._optimistic_since = now
        unchoke = set(regular)
        if self.optimistic is not None:
            unchoke.add(self.optimistic)
        return unchoke

    def _choose_optimistic(self, rest: list[PeerRates], now: float) -> bytes | None:
        if not rest:
            return None
        young = self.optimistic_interval * 2
        weights = [3.0 if now - self._first_seen.get(p.peer_id, now) < young else 1.0
                   for p in rest]
        return self.rng.choices(rest, weights=weights)[0].peer_id
