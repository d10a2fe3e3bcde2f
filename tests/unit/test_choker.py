"""Whom to upload to: tit-for-tat slots, the optimistic slot, seeding by upload rate."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from btfs.choker import Choker, PeerRates


def peer(
    n: int,
    down: float = 0.0,
    up: float = 0.0,
    *,
    interested: bool = True,
    seed: bool = False,
) -> PeerRates:
    return PeerRates(bytes([n]) * 4, interested, down, up, is_seed=seed)


def key(n: int) -> bytes:
    return bytes([n]) * 4


class CountingRandom(random.Random):
    """A seeded Random that counts the optimistic draws."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws = 0

    def choices(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.draws += 1
        return super().choices(*args, **kwargs)


def test_no_peers() -> None:
    choker = Choker(rng=random.Random(0))
    assert choker.rechoke(0.0, [], we_are_seed=False) == set()
    assert choker.optimistic is None


def test_slots_at_least_one() -> None:
    assert Choker(slots=0).slots == 1
    assert Choker(slots=-5).slots == 1


@pytest.mark.parametrize("slots", [1, 2, 4, 8])
@pytest.mark.parametrize("seeding", [False, True])
def test_at_most_slots_unchoked(slots: int, seeding: bool) -> None:
    rng = random.Random(slots)
    choker = Choker(slots=slots, rng=random.Random(1))
    for t in range(50):
        peers = [peer(i, rng.random() * 1000, rng.random() * 1000) for i in range(20)]
        unchoked = choker.rechoke(t * 10.0, peers, we_are_seed=seeding)
        assert len(unchoked) == slots
        assert unchoked <= {p.peer_id for p in peers}


def test_fewer_candidates_than_slots_all_unchoked() -> None:
    choker = Choker(slots=4, rng=random.Random(0))
    peers = [peer(1, 10), peer(2, 20)]
    assert choker.rechoke(0.0, peers, we_are_seed=False) == {key(1), key(2)}


def test_regular_slots_go_to_best_download_rate_while_leeching() -> None:
    choker = Choker(slots=4, rng=random.Random(0))
    peers = [peer(i, down=float(i * 100), up=float(1000 - i * 100)) for i in range(1, 10)]
    unchoked = choker.rechoke(0.0, peers, we_are_seed=False)
    regular = {key(9), key(8), key(7)}
    assert regular <= unchoked
    assert len(unchoked) == 4
    assert choker.optimistic is not None and choker.optimistic not in regular
    assert unchoked == regular | {choker.optimistic}


def test_regular_slots_go_to_best_upload_rate_while_seeding() -> None:
    choker = Choker(slots=4, rng=random.Random(0))
    peers = [peer(i, down=float(i * 100), up=float(1000 - i * 100)) for i in range(1, 10)]
    unchoked = choker.rechoke(0.0, peers, we_are_seed=True)
    regular = {key(1), key(2), key(3)}
    assert regular <= unchoked
    assert choker.optimistic is not None and choker.optimistic not in regular
    assert unchoked == regular | {choker.optimistic}


def test_uninterested_peers_and_seeds_never_unchoked() -> None:
    choker = Choker(slots=4, rng=random.Random(0))
    peers = [
        peer(1, 1e6, 1e6, interested=False),
        peer(2, 1e6, 1e6, seed=True),
        peer(3, 1e6, 1e6, interested=False, seed=True),
        peer(4, 1.0, 1.0),
    ]
    for t in range(20):
        for seeding in (False, True):
            assert choker.rechoke(t * 30.0, peers, we_are_seed=seeding) == {key(4)}


def test_only_uninterested_peers_gives_nobody() -> None:
    choker = Choker(slots=3, rng=random.Random(0))
    peers = [peer(i, 100.0, interested=False) for i in range(5)]
    assert choker.rechoke(0.0, peers, we_are_seed=False) == set()
    assert choker.optimistic is None


def test_single_slot_is_the_optimistic_one() -> None:
    choker = Choker(slots=1, rng=random.Random(0))
    peers = [peer(i, float(i)) for i in range(5)]
    unchoked = choker.rechoke(0.0, peers, we_are_seed=False)
    assert len(unchoked) == 1
    assert unchoked == {choker.optimistic}


def test_optimistic_changes_only_after_the_interval() -> None:
    rng = CountingRandom(7)
    choker = Choker(slots=2, optimistic_interval=30.0, rng=rng)
    peers = [peer(1, 1000.0)] + [peer(i, 1.0) for i in range(2, 12)]
    chosen = []
    t = 0.0
    while t < 600.0:
        unchoked = choker.rechoke(t, peers, we_are_seed=False)
        assert key(1) in unchoked
        assert choker.optimistic in unchoked and choker.optimistic != key(1)
        chosen.append((t, choker.optimistic))
        t += 10.0
    # a draw at t = 0, 30, 60, ... and never between
    assert rng.draws == 20
    for t, optimistic in chosen:
        start = t - t % 30.0
        assert optimistic == dict(chosen)[start]
    assert len({o for _, o in chosen}) > 3  # it does rotate


def test_optimistic_replaced_at_once_when_it_leaves_or_loses_interest() -> None:
    choker = Choker(slots=2, optimistic_interval=30.0, rng=random.Random(3))
    peers = [peer(1, 1000.0)] + [peer(i, 1.0) for i in range(2, 8)]
    choker.rechoke(0.0, peers, we_are_seed=False)
    first = choker.optimistic
    assert first is not None
    # it goes away
    peers = [p for p in peers if p.peer_id != first]
    unchoked = choker.rechoke(1.0, peers, we_are_seed=False)
    second = choker.optimistic
    assert second is not None and second != first and second in unchoked
    assert first not in unchoked
    # it stops being interested
    peers = [PeerRates(p.peer_id, False, 1.0, 0.0) if p.peer_id == second else p for p in peers]
    unchoked = choker.rechoke(2.0, peers, we_are_seed=False)
    third = choker.optimistic
    assert third not in (first, second, None)
    assert second not in unchoked


def test_optimistic_promoted_to_regular_gets_replaced() -> None:
    choker = Choker(slots=2, optimistic_interval=30.0, rng=random.Random(5))
    peers = [peer(1, 1000.0)] + [peer(i, 1.0) for i in range(2, 6)]
    choker.rechoke(0.0, peers, we_are_seed=False)
    opt = choker.optimistic
    assert opt is not None
    # the optimistic peer now sends the most: it takes the regular slot
    peers = [PeerRates(p.peer_id, True, 5000.0, 0.0) if p.peer_id == opt else p for p in peers]
    unchoked = choker.rechoke(5.0, peers, we_are_seed=False)
    assert opt in unchoked
    assert choker.optimistic not in (opt, None)
    assert len(unchoked) == 2


def test_optimistic_never_among_the_regular_set() -> None:
    rng = random.Random(11)
    choker = Choker(slots=4, optimistic_interval=30.0, rng=random.Random(12))
    for step in range(200):
        peers = [peer(i, rng.random() * 100, rng.random() * 100,
                      interested=rng.random() < 0.8, seed=rng.random() < 0.1)
                 for i in range(rng.randint(0, 12))]
        seeding = rng.random() < 0.5
        unchoked = choker.rechoke(step * 7.0, peers, we_are_seed=seeding)
        candidates = [p for p in peers if p.interested and not p.is_seed]
        rate = (lambda p: p.upload_rate) if seeding else (lambda p: p.download_rate)
        ranked = sorted(candidates, key=rate, reverse=True)
        regular = {p.peer_id for p in ranked[:3]}
        assert regular <= unchoked
        assert len(unchoked) == min(4, len(candidates))
        assert unchoked <= {p.peer_id for p in candidates}
        if len(candidates) > 3:
            assert choker.optimistic is not None and choker.optimistic not in regular


def test_new_peers_favoured_for_the_optimistic_slot() -> None:
    choker = Choker(slots=1, optimistic_interval=30.0, rng=random.Random(2024))
    old = [peer(i) for i in range(1, 7)]
    choker.rechoke(0.0, old, we_are_seed=False)
    counts: Counter[bytes] = Counter()
    t = 1000.0  # the six are long known
    trials = 3000
    for n in range(trials):
        newcomer = peer(100 + n % 100)
        # each newcomer is met now; old peers were met long ago
        choker.rechoke(t, [*old, newcomer], we_are_seed=False)
        counts[b"new" if choker.optimistic == newcomer.peer_id else b"old"] += 1
        t += 30.0
        choker.rechoke(t, old, we_are_seed=False)  # the newcomer leaves: forgotten
        t += 30.0
    # weights 3 : 1 x 6 => 1/3 for the newcomer; uniform would be 1/7
    share = counts[b"new"] / trials
    assert 0.28 < share < 0.39, share


def test_peer_stops_being_new_after_twice_the_interval() -> None:
    choker = Choker(slots=1, optimistic_interval=30.0, rng=random.Random(99))
    peers = [peer(i) for i in range(1, 5)]
    choker.rechoke(0.0, peers, we_are_seed=False)
    late = peer(50)
    choker.rechoke(1.0, [*peers, late], we_are_seed=False)
    counts: Counter[bool] = Counter()
    t = 200.0  # everyone, the late one included, is now old
    for _ in range(3000):
        choker.rechoke(t, [*peers, late], we_are_seed=False)
        counts[choker.optimistic == late.peer_id] += 1
        t += 30.0
    share = counts[True] / 3000
    assert 0.15 < share < 0.25, share  # uniform over five


def test_departed_peers_forgotten() -> None:
    choker = Choker(slots=2, optimistic_interval=30.0, rng=random.Random(1))
    peers = [peer(i, float(i)) for i in range(1, 6)]
    choker.rechoke(0.0, peers, we_are_seed=False)
    gone = choker.optimistic
    assert gone is not None
    remaining = [p for p in peers if p.peer_id != gone]
    unchoked = choker.rechoke(10.0, remaining, we_are_seed=False)
    assert gone not in unchoked and choker.optimistic != gone
    assert gone not in choker._first_seen
    assert set(choker._first_seen) == {p.peer_id for p in remaining}
    # everyone gone
    assert choker.rechoke(20.0, [], we_are_seed=False) == set()
    assert choker.optimistic is None
    assert choker._first_seen == {}


def test_returning_peer_counts_as_new_again() -> None:
    # a peer seen at t=0 leaves and comes back much later: it is new again (weight 3)
    choker = Choker(slots=1, optimistic_interval=30.0, rng=random.Random(4))
    old = [peer(i) for i in range(1, 7)]
    back = peer(77)
    choker.rechoke(0.0, [*old, back], we_are_seed=False)
    counts: Counter[bool] = Counter()
    t = 1000.0
    for _ in range(3000):
        choker.rechoke(t, old, we_are_seed=False)          # it leaves
        t += 30.0
        choker.rechoke(t, [*old, back], we_are_seed=False)  # and returns
        counts[choker.optimistic == back.peer_id] += 1
        t += 30.0
    share = counts[True] / 3000
    assert 0.28 < share < 0.39, share


def test_deterministic_with_a_seeded_rng() -> None:
    def run(seed: int) -> list[set[bytes]]:
        choker = Choker(slots=3, rng=random.Random(seed))
        peers = [peer(i, float(i % 3)) for i in range(10)]
        return [choker.rechoke(t * 30.0, peers, we_are_seed=False) for t in range(20)]

    assert run(5) == run(5)
    assert run(5) != run(6)
