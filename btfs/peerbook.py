"""Which peers to dial, when, and how: candidates, back-off, plain/MSE alternation. Pure.

Peers come from trackers, `--peer` and (later) the DHT and PEX. A failed dial is retried
after 2 s, then three times longer each time up to a minute; a dial whose plain
handshake failed is tried next with MSE (some peers accept only encrypted connections),
and the two alternate. A peer whose connection ended is dialled again after a short
pause. A peer that keeps closing its connections soon after opening them (a crash loop,
or a slot hog) is refused for a growing time, incoming and outgoing, so it cannot hold
our connection slots. Banned addresses (bad data) are never dialled or accepted.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

Address = tuple[str, int]

RETRY_AFTER_SESSION = 5.0   # a peer whose connection ended: dial again after this
RETRY_FIRST = 2.0           # a failed dial: 2 s, then 3x longer each time, up to a minute
RETRY_MAX = 60.0
MAX_CANDIDATES = 2000
SHORT_SESSION = 10.0        # a connection the peer closed sooner than this counts as a flap
FLAPS_ALLOWED = 3           # flaps within FLAP_WINDOW before the host is refused
FLAP_WINDOW = 60.0
FLAP_PENALTY = 30.0         # the first refusal; doubles for each further flap, to FLAP_PENALTY_MAX
FLAP_PENALTY_MAX = 600.0


@dataclass
class _Flaps:
    times: list[float]
    refused_until: float = 0.0
    penalty: float = FLAP_PENALTY


class PeerBook:
    """The peers we know of and the dialling schedule for each."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.candidates: set[Address] = set()
        self.banned: set[str] = set()
        self.known_seeds: set[Address] = set()
        self._next_try: dict[Address, float] = {}
        self._failures: dict[Address, int] = {}
        self._encrypt: set[Address] = set()
        self._flaps: dict[str, _Flaps] = {}

    def add(self, addresses: Iterable[Address]) -> None:
        for address in addresses:
            if address[0] not in self.banned and 0 < address[1] < 65536:
                self.candidates.add(address)
        if len(self.candidates) > MAX_CANDIDATES:
            keep = self.rng.sample(sorted(self.candidates), MAX_CANDIDATES // 2)
            self.candidates = set(keep)

    def ban(self, host: str) -> bool:
        """Never again talk to `host`; False if it was banned already."""
        if host in self.banned:
            return False
        self.banned.add(host)
        self.candidates = {a for a in self.candidates if a[0] != host}
        return True

    def refused(self, host: str, now: float) -> bool:
        """Whether a connection to or from `host` is refused now (banned, or flapping)."""
        if host in self.banned:
            return True
        flaps = self._flaps.get(host)
        return flaps is not None and now < flaps.refused_until

    def due(self, now: float, count: int, skip: Iterable[Address] = (), *,
            complete: bool = False) -> list[tuple[Address, bool]]:
        """Up to `count` peers to dial now, each with whether to use MSE.

        `skip`: connected or being dialled. `complete`: our data is complete, so known
        seeds are not worth a connection. Each one returned is marked as being dialled
        until `dial_ended`.
        """
        skipping = set(skip)
        out: list[tuple[Address, bool]] = []
        for address in list(self.candidates):
            if len(out) >= count:
                break
            if address in skipping or self.refused(address[0], now):
                continue
            if complete and address in self.known_seeds:
                continue
            if now < self._next_try.get(address, now):
                continue
            self._next_try[address] = float("inf")
            out.append((address, address in self._encrypt))
        return out

    def dial_ended(self, address: Address, connected: bool, encrypted: bool,
                   now: float) -> float:
        """A dial (and its session, if one was made) ended; returns when to try again."""
        if connected:
            self._failures.pop(address, None)
            delay = RETRY_AFTER_SESSION
        else:
            failures = self._failures[address] = self._failures.get(address, 0) + 1
            delay = min(RETRY_MAX, RETRY_FIRST * 3 ** (failures - 1))
            self._encrypt ^= {address}
            if not encrypted:
                delay = min(delay, RETRY_FIRST)
        self._next_try[address] = now + delay
        return now + delay

    def session_ended(self, host: str, duration: float, closed_by_peer: bool,
                      now: float) -> None:
        """Count a connection the peer closed soon after it began toward the host's back-off."""
        if not closed_by_peer or duration >= SHORT_SESSION:
            return
        flaps = self._flaps.setdefault(host, _Flaps([]))
        flaps.times = [t for t in flaps.times if now - t < FLAP_WINDOW] + [now]
        if len(flaps.times) > FLAPS_ALLOWED:
            flaps.refused_until = now + flaps.penalty
            flaps.penalty = min(FLAP_PENALTY_MAX, flaps.penalty * 2)
            flaps.times.clear()
        if len(self._flaps) > MAX_CANDIDATES:
            stale = [h for h, f in self._flaps.items() if f.refused_until < now and not f.times]
            for h in stale:
                del self._flaps[h]
