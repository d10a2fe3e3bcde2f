"""The routing table (pure): k-buckets, splitting, liveness, replacements, refresh."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.dht.krpc import Contact
from btfs.dht.routing import (
    GOOD_FOR,
    MAX_BUCKETS,
    REFRESH_AFTER,
    REPLACEMENTS,
    K,
    RoutingTable,
    common_prefix,
)

OWN = 0  # our id: all zero bits, so an id's bucket is the number of its leading zeros


def with_prefix(zeros: int, n: int) -> int:
    """An id that shares exactly `zeros` leading bits with OWN, made distinct by `n`."""
    return (1 << (159 - zeros)) | (n % (1 << max(0, 159 - zeros)))


def contact(node_id: int) -> Contact:
    return Contact(node_id, (f"10.0.{node_id % 256}.{node_id >> 150 & 255}", 1000 + node_id
                             % 50000))


def test_only_the_bucket_of_our_own_id_splits() -> None:
    table = RoutingTable(OWN, 0.0)
    for n in range(20):                 # far half of the id space: bucket 0
        table.heard_response(contact(with_prefix(0, n)), 1.0)
    assert len(table.buckets[0].nodes) == K
    assert len(table.buckets[0].replacements) == REPLACEMENTS
    assert len(table.buckets) == 2      # split once, when the 9th came; then it was full
    for n in range(K + 1):              # closer nodes make the last bucket split on
        table.heard_response(contact(with_prefix(5, n)), 1.0)
    assert len(table.buckets) == 7
    assert [len(b.nodes) for b in table.buckets] == [K, 0, 0, 0, 0, K, 0]
    assert len(table.buckets[5].replacements) == 1


def test_the_table_never_holds_more_than_its_bounds() -> None:
    table = RoutingTable(OWN, 0.0)
    rng = random.Random(3)
    for _ in range(5000):
        table.heard_response(contact(rng.getrandbits(160) >> rng.randrange(160)), 1.0)
    assert len(table.buckets) <= MAX_BUCKETS
    assert all(len(b.nodes) <= K and len(b.replacements) <= REPLACEMENTS
               for b in table.buckets)
    assert len(table) == sum(len(b.nodes) for b in table.buckets)


def test_liveness_good_questionable_bad() -> None:
    table = RoutingTable(OWN, 0.0)
    c = contact(with_prefix(0, 1))
    table.heard_response(c, 10.0)
    node = table.get(c.id)
    assert node is not None and node.good(10.0 + GOOD_FOR - 1)
    assert not node.good(10.0 + GOOD_FOR)                  # questionable
    table.heard_query(c, 10.0 + GOOD_FOR + 5)              # it asked us something
    assert node.good(10.0 + GOOD_FOR + 10)
    table.failed(c.id, c.address)
    assert not node.good(20.0) and node.fails == 1  # not yet bad
    table.failed(c.id, c.address)
    assert node.bad
    assert table.closest(c.id) == []                       # bad nodes are not handed out


def test_a_full_bucket_asks_for_a_questionable_node_to_be_pinged_then_replaces_it() -> None:
    table = RoutingTable(OWN, 0.0)
    olds = [contact(with_prefix(0, n)) for n in range(K)]
    for i, c in enumerate(olds):
        table.heard_response(c, float(i))
    newcomer = contact(with_prefix(0, 100))
    assert table.add(newcomer, GOOD_FOR - 1, responded=True) is None  # all good: no ping
    ping = table.heard_response(newcomer, GOOD_FOR + 0.5)
    assert ping is not None and ping.id == olds[0].id        # least recently seen first
    table.failed(ping.id, ping.address)
    assert newcomer.id not in table
    table.failed(ping.id, ping.address)
    assert newcomer.id in table and olds[0].id not in table
    assert table.buckets[0].replacements == []


def test_a_new_node_replaces_a_bad_one_at_once() -> None:
    table = RoutingTable(OWN, 0.0)
    olds = [contact(with_prefix(0, n)) for n in range(K)]
    for c in olds:
        table.heard_response(c, 1.0)
    for _ in range(2):
        table.failed(olds[3].id, olds[3].address)
    assert table.wants(with_prefix(0, 99))
    table.heard_response(contact(with_prefix(0, 99)), 2.0)
    assert with_prefix(0, 99) in table and olds[3].id not in table


def test_a_query_from_an_unknown_node_does_not_add_it() -> None:
    table = RoutingTable(OWN, 0.0)
    assert not table.heard_query(contact(5), 1.0)
    assert len(table) == 0 and table.wants(5) and not table.wants(OWN)


def test_a_node_seen_at_another_address_keeps_its_first_address() -> None:
    table = RoutingTable(OWN, 0.0)
    c = contact(with_prefix(0, 1))
    table.heard_response(c, 1.0)
    table.heard_response(Contact(c.id, ("6.6.6.6", 6)), 2.0)
    node = table.get(c.id)
    assert node is not None and node.address == c.address and node.last_response == 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 2**160 - 1), min_size=1, max_size=300, unique=True),
       st.integers(0, 2**160 - 1), st.integers(0, 2**160 - 1))
def test_closest_is_the_true_closest_of_the_table(ids: list[int], own: int,
                                                   target: int) -> None:
    table = RoutingTable(own, 0.0)
    for i in ids:
        table.heard_response(contact(i), 1.0)
    everyone = sorted((n.id for n in table.nodes()), key=lambda i: i ^ target)
    assert [c.id for c in table.closest(target)] == everyone[:K]
    assert [c.id for c in table.closest(target, 20)] == everyone[:20]


def test_refresh_is_due_for_untouched_buckets_with_a_target_inside_them() -> None:
    rng = random.Random(1)
    own = rng.getrandbits(160)
    table = RoutingTable(own, 0.0)
    for _ in range(200):
        table.heard_response(contact(own ^ (rng.getrandbits(160) >> rng.randrange(12))), 1.0)
    assert table.refresh_due(REFRESH_AFTER, rng) == []
    targets = table.refresh_due(1.0 + REFRESH_AFTER, rng)
    assert len(targets) == len(table.buckets)
    assert [table.bucket_index(t) for t in targets] == list(range(len(table.buckets)))
    assert table.refresh_due(2.0 + REFRESH_AFTER, rng) == []   # they count as touched


def test_random_ids_fall_in_their_bucket() -> None:
    rng = random.Random(2)
    own = rng.getrandbits(160)
    table = RoutingTable(own, 0.0)
    table.buckets.extend(type(table.buckets[0])() for _ in range(MAX_BUCKETS - 1))
    for index in range(MAX_BUCKETS):
        for _ in range(5):
            node_id = table.random_id_in(index, rng)
            assert table.bucket_index(node_id) == index
            assert common_prefix(own, node_id) >= index
