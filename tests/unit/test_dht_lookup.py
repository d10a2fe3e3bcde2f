"""The iterative lookup (pure), run against an oracle network of node ids."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.dht.krpc import Address, Contact
from btfs.dht.lookup import ALPHA, MAX_CANDIDATES, Lookup
from btfs.dht.routing import common_prefix


def addr(node_id: int) -> Address:
    return (f"10.{node_id >> 16 & 255}.{node_id >> 8 & 255}.{node_id & 255}", 6881)


class Oracle:
    """Nodes whose tables are perfect k-buckets: each knows the first k nodes (in list
    order) of every distance bucket around it, and answers with the k closest it knows."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.by_address = {addr(i): i for i in ids}
        self._known: dict[int, list[int]] = {}

    def known(self, me: int) -> list[int]:
        if me not in self._known:
            buckets: dict[int, list[int]] = {}
            for i in self.ids:
                bucket = buckets.setdefault(common_prefix(me, i), [])
                if i != me and len(bucket) < 8:
                    bucket.append(i)
            self._known[me] = [i for b in buckets.values() for i in b]
        return self._known[me]

    def answer(self, asked: Contact | Address, target: int, k: int = 8) -> list[Contact]:
        me = self.by_address[asked.address if isinstance(asked, Contact) else asked]
        best = sorted(self.known(me), key=lambda i: i ^ target)[:k]
        return [Contact(i, addr(i)) for i in best]


def drive(lookup: Lookup, oracle: Oracle, fail: set[int] = frozenset(),  # type: ignore[assignment]
          peers: dict[int, list[Address]] | None = None) -> int:
    """Run a lookup to its end, one query at a time; how many rounds it took."""
    rounds = 0
    while not lookup.done:
        batch = lookup.next_queries()
        assert batch, "not done but nothing to ask"
        assert lookup.in_flight <= ALPHA
        rounds += 1
        for asked in batch:
            address = asked.address if isinstance(asked, Contact) else asked
            node_id = oracle.by_address[address]
            if node_id in fail:
                lookup.failed(address)
                continue
            lookup.answered(address, node_id, oracle.answer(asked, lookup.target),
                            (peers or {}).get(node_id, []), token=b"t%d" % node_id)
    return rounds


def test_a_lookup_finds_the_true_closest_k_from_far_seeds() -> None:
    rng = random.Random(5)
    ids = [rng.getrandbits(160) for _ in range(600)]
    oracle = Oracle(ids)
    target = rng.getrandbits(160)
    far = sorted(ids, key=lambda i: i ^ target)[-3:]
    lookup = Lookup(target, [Contact(i, addr(i)) for i in far], get_peers=False, own_id=0)
    drive(lookup, oracle)
    found = [c.id for c, _ in lookup.closest_answered()]
    assert found == sorted(ids, key=lambda i: i ^ target)[:8]
    assert lookup.hops >= 2 and lookup.queries <= 64


def test_failed_nodes_are_skipped_and_the_next_closest_asked() -> None:
    rng = random.Random(6)
    ids = [rng.getrandbits(160) for _ in range(300)]
    oracle = Oracle(ids)
    target = rng.getrandbits(160)
    truth = sorted(ids, key=lambda i: i ^ target)
    dead = set(truth[:2])
    lookup = Lookup(target, [Contact(i, addr(i)) for i in truth[-3:]], get_peers=False,
                    own_id=0)
    drive(lookup, oracle, fail=dead)
    found = [c.id for c, _ in lookup.closest_answered()]
    # The 9th and 10th closest are named only by nodes that happen to know them.
    assert len(found) == 8 and found[:6] == truth[2:8] and not dead & set(found)


def test_get_peers_collects_peers_once_and_tokens() -> None:
    ids = list(range(1, 40))
    oracle = Oracle(ids)
    peers = {5: [("1.1.1.1", 1)], 7: [("1.1.1.1", 1), ("2.2.2.2", 2)]}
    lookup = Lookup(6, [Contact(i, addr(i)) for i in (30, 31, 32)], get_peers=True,
                    own_id=0)
    drive(lookup, oracle, peers=peers)
    assert lookup.peers == {("1.1.1.1", 1), ("2.2.2.2", 2)}
    assert sorted(lookup.take_peers()) == [("1.1.1.1", 1), ("2.2.2.2", 2)]
    assert lookup.take_peers() == []
    assert all(token == b"t%d" % c.id for c, token in lookup.closest_answered())


def test_a_seed_of_unknown_id_is_asked_first_and_learns_its_id() -> None:
    oracle = Oracle(list(range(1, 20)))
    lookup = Lookup(3, [addr(15)], get_peers=False, own_id=0)
    assert lookup.next_queries() == [addr(15)]
    lookup.answered(addr(15), 15, oracle.answer(addr(15), 3))
    assert any(c.id == 15 for c, _ in lookup.closest_answered())


def test_nothing_to_ask_means_done_and_answers_not_asked_for_are_ignored() -> None:
    empty = Lookup(5, [], get_peers=False, own_id=0)
    assert empty.done and empty.next_queries() == [] and empty.hops == 0
    lookup = Lookup(5, [Contact(9, addr(9))], get_peers=False, own_id=0)
    lookup.answered(addr(9), 9, [Contact(1, addr(1))])   # not asked yet: ignored
    assert lookup.answers == 0
    assert lookup.next_queries() == [Contact(9, addr(9))]
    lookup.failed(addr(9))
    assert lookup.done


def test_our_own_id_is_never_a_candidate_and_the_candidates_stay_bounded() -> None:
    lookup = Lookup(0, [Contact(1 << 100, addr(1))], get_peers=False, own_id=77)
    assert lookup.next_queries() == [Contact(1 << 100, addr(1))]
    flood = [Contact(77, addr(2))] + [Contact((1 << 100) + i, addr(10 + i))
                                      for i in range(500)]
    lookup.answered(addr(1), 1 << 100, flood)
    assert len(lookup._by_address) <= MAX_CANDIDATES
    assert all(c.id != 77 for c in lookup._by_address.values())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.floats(0.0, 0.5))
def test_a_lookup_always_ends_within_its_query_budget(seed: int, loss: float) -> None:
    rng = random.Random(seed)
    ids = [rng.getrandbits(160) for _ in range(200)]
    oracle = Oracle(ids)
    dead = {i for i in ids if rng.random() < loss}
    lookup = Lookup(rng.getrandbits(160), [Contact(i, addr(i)) for i in ids[:3]],
                    get_peers=True, own_id=0, max_queries=40)
    drive(lookup, oracle, fail=dead)
    assert lookup.done and lookup.queries <= 40 and lookup.in_flight == 0
