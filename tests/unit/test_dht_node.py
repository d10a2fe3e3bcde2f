"""The DHT node (pure): answering, asking, time-outs, budgets, and random datagrams."""

from __future__ import annotations

import random

from hypothesis import event, given, settings
from hypothesis import strategies as st

from btfs import bencode
from btfs.dht import krpc
from btfs.dht.krpc import Address, Contact
from btfs.dht.node import (
    ADDRESS_BURST,
    ADDRESS_RATE,
    BOOTSTRAP_RETRY,
    MAX_PENDING,
    MAX_SEARCHES,
    MAX_TRACKED,
    QUERY_TIMEOUT,
    SEND_BURST,
    DhtNode,
    Outgoing,
)
from btfs.dht.routing import MAX_BUCKETS, REPLACEMENTS, K
from btfs.dht.storage import MAX_PEERS

ME = 1 << 159
OTHER = 12345
HASH = b"i" * 20
ASKER: Address = ("10.9.9.9", 7000)


def node(*, family: int = 4, known: int = 0) -> DhtNode:
    n = DhtNode(random.Random(7), 0.0, node_id=ME, family=family)
    for i in range(1, known + 1):   # node i at 10.0.0.i, in the buckets near ours
        n.table.heard_response(Contact(ME ^ (i << 100), (f"10.0.0.{i}", 6881)), 0.0)
    return n


def one(out: list[Outgoing]) -> krpc.Message:
    assert len(out) == 1
    return krpc.decode(out[0].data)


def answers_to(out: list[Outgoing], address: Address) -> list[krpc.Message]:
    """The answers (not our own queries, such as a ping of an unknown asker) to `address`."""
    sent = [krpc.decode(o.data) for o in out if o.address == address]
    return [m for m in sent if not isinstance(m, krpc.Query)]


def test_ping_is_answered_with_our_id_and_its_transaction_id() -> None:
    n = node()
    out = n.receive(krpc.ping(b"p1", OTHER), ASKER, 1.0)
    [answer] = answers_to(out, ASKER)
    assert answer == krpc.Response(b"p1", ME)


def test_find_node_is_answered_with_the_closest_nodes_of_the_table() -> None:
    n = node(known=20)
    assert len(n.table) == 20
    [answer] = answers_to(n.receive(krpc.find_node(b"f1", OTHER, 3), ASKER, 1.0), ASKER)
    assert isinstance(answer, krpc.Response)
    assert [c.id for c in answer.nodes] == sorted((ME ^ (i << 100) for i in range(1, 21)),
                                                  key=lambda i: i ^ 3)[:K]
    assert answer.nodes6 == ()


def test_an_ipv6_node_answers_with_nodes6() -> None:
    n = DhtNode(random.Random(1), 0.0, node_id=ME, family=6)
    n.table.heard_response(Contact(5, ("2001:db8::5", 6881)), 0.0)
    [answer] = answers_to(n.receive(krpc.find_node(b"f1", OTHER, 3), ("::1", 9), 1.0),
                          ("::1", 9))
    assert isinstance(answer, krpc.Response)
    assert answer.nodes == () and answer.nodes6 == (Contact(5, ("2001:db8::5", 6881)),)


def test_a_datagram_from_the_other_family_is_dropped() -> None:
    v4, v6 = node(), node(family=6)
    assert v4.receive(krpc.ping(b"p1", OTHER), ("2001:db8::1", 9), 1.0) == []
    assert v6.receive(krpc.ping(b"p1", OTHER), ASKER, 1.0) == []
    assert v6.receive(krpc.ping(b"p1", OTHER), ("::ffff:10.1.1.1", 9), 1.0) == []
    assert (v4.stats.wrong_family, v6.stats.wrong_family) == (1, 2)
    assert answers_to(v6.receive(krpc.ping(b"p1", OTHER), ("::1", 9), 1.0), ("::1", 9))


def test_get_peers_gives_a_token_that_lets_the_asker_announce() -> None:
    n = node(known=3)
    [r] = answers_to(n.receive(krpc.get_peers(b"g1", OTHER, HASH), ASKER, 1.0), ASKER)
    assert isinstance(r, krpc.Response) and r.token and r.values == () and len(r.nodes) == 3
    out = n.receive(krpc.announce_peer(b"a1", OTHER, HASH, 6000, r.token, False), ASKER, 2.0)
    assert answers_to(out, ASKER) == [krpc.Response(b"a1", ME)]
    implied = n.receive(krpc.announce_peer(b"a2", OTHER, HASH, 1, r.token, True),
                        ("10.9.9.9", 7777), 3.0)
    assert answers_to(implied, ("10.9.9.9", 7777)) == [krpc.Response(b"a2", ME)]
    [r] = answers_to(n.receive(krpc.get_peers(b"g2", 99, HASH), ("10.1.1.1", 5), 4.0),
                     ("10.1.1.1", 5))
    assert isinstance(r, krpc.Response)
    assert sorted(r.values) == [("10.9.9.9", 6000), ("10.9.9.9", 7777)]


def test_an_announce_with_a_wrong_or_stolen_token_gets_a_protocol_error() -> None:
    n = node()
    [r] = answers_to(n.receive(krpc.get_peers(b"g1", OTHER, HASH), ASKER, 1.0), ASKER)
    assert isinstance(r, krpc.Response) and r.token is not None
    thief = ("10.6.6.6", 7000)
    for token, source in ((b"forged", ASKER), (r.token, thief)):
        [e] = answers_to(n.receive(krpc.announce_peer(b"a1", OTHER, HASH, 6000, token, False),
                                   source, 2.0), source)
        assert isinstance(e, krpc.Error) and e.code == krpc.ERROR_PROTOCOL
    assert n.store.total == 0 and n.stats.bad_tokens == 2


def test_malformed_queries_get_a_krpc_error_and_other_garbage_is_dropped() -> None:
    n = node()
    vote = bencode.encode({b"t": b"v1", b"y": b"q", b"q": b"vote", b"a": {b"id": b"x" * 20}})
    e = one(n.receive(vote, ASKER, 1.0))
    assert isinstance(e, krpc.Error) and (e.tid, e.code) == (b"v1", krpc.ERROR_METHOD)
    short = bencode.encode({b"t": b"s1", b"y": b"q", b"q": b"ping", b"a": {b"id": b"x"}})
    e = one(n.receive(short, ASKER, 1.0))
    assert isinstance(e, krpc.Error) and (e.tid, e.code) == (b"s1", krpc.ERROR_PROTOCOL)
    assert n.receive(b"\x00garbage", ASKER, 1.0) == []
    assert n.receive(bencode.encode({b"t": b"r1", b"y": b"r", b"r": {}}), ASKER, 1.0) == []
    assert n.stats.malformed == 4


def test_an_unknown_asker_is_pinged_and_enters_the_table_when_it_answers() -> None:
    n = node()
    out = n.receive(krpc.ping(b"p1", OTHER), ASKER, 1.0)
    ping = [krpc.decode(o.data) for o in out if krpc.decode(o.data) != krpc.Response(b"p1", ME)]
    assert len(ping) == 1 and isinstance(ping[0], krpc.Query)
    assert n.receive(krpc.ping(b"p2", OTHER), ASKER, 1.5)[1:] == []   # one ping at a time
    assert OTHER not in n.table
    n.receive(krpc.response(ping[0].tid, OTHER), ASKER, 2.0)
    assert OTHER in n.table


def test_answers_from_another_address_or_with_unknown_ids_are_ignored() -> None:
    n = node(known=3)
    search = n.find_node(1000, 1.0)
    sent = n.take_outgoing()
    assert len(sent) == 3 and n.stats.queries_sent == 3
    q = krpc.decode(sent[0].data)
    n.receive(krpc.response(q.tid, 77, nodes=[]), ("6.6.6.6", 1), 1.1)
    n.receive(krpc.response(b"zz", 77, nodes=[]), sent[0].address, 1.1)
    assert n.stats.unexpected == 2 and search.lookup is not None
    assert search.lookup.answers == 0
    n.receive(krpc.response(q.tid, 77, nodes=[]), sent[0].address, 1.2)
    assert search.lookup.answers == 1 and 77 in n.table


def test_unanswered_queries_time_out_count_as_failures_and_the_lookup_ends() -> None:
    n = node(known=3)
    search = n.get_peers(HASH, 1.0)
    assert (len(n.take_outgoing()), search.done) == (3, False)
    assert n.next_tick(1.0) == 2.0
    assert n.tick(1.0 + QUERY_TIMEOUT - 0.01) == []
    assert (search.finished, n.stats.timeouts) == (None, 0)
    n.tick(1.0 + QUERY_TIMEOUT)
    assert search.done and n.stats.timeouts == 3 and search.peers == set()
    assert all(node.fails == 1 for node in n.table.nodes())


def test_a_flood_from_one_address_is_answered_at_its_rate_only() -> None:
    n = node()
    flooder = ("10.7.7.7", 1)
    answered = sum(len(answers_to(n.receive(krpc.ping(b"%d" % i, OTHER), flooder, 1.0),
                                  flooder)) for i in range(1000))
    assert answered == ADDRESS_BURST
    assert answers_to(n.receive(krpc.ping(b"x", OTHER), ASKER, 1.0), ASKER)   # others are fine
    later = sum(len(answers_to(n.receive(krpc.ping(b"%d" % i, OTHER), flooder, 2.0),
                               flooder)) for i in range(100))
    assert later == ADDRESS_RATE
    assert n.stats.rate_limited == 1000 - ADDRESS_BURST + 100 - ADDRESS_RATE


def test_our_queries_are_held_to_the_send_budget_and_the_pending_bound() -> None:
    n = node()
    for i in range(3000):
        n.add_node((f"10.{i >> 8}.{i & 255}.1", 6881), 1.0)
    assert len(n.take_outgoing()) == SEND_BURST <= MAX_PENDING


def test_lookups_are_bounded_and_the_ones_over_the_bound_end_at_once() -> None:
    n = node(known=3)
    searches = [n.get_peers(bytes([i]) * 20, 1.0) for i in range(MAX_SEARCHES + 5)]
    assert len(n.searches) == MAX_SEARCHES
    assert all(s.done and s.peers == set() for s in searches[MAX_SEARCHES:])


def test_bootstrap_is_retried_while_the_table_stays_empty() -> None:
    n = node()
    router = ("10.1.2.3", 6881)
    n.bootstrap([router], 0.0)
    [q] = n.take_outgoing()
    assert q.address == router
    n.tick(QUERY_TIMEOUT)
    assert n.take_outgoing() == []
    assert [o.address for o in n.tick(BOOTSTRAP_RETRY)] == [router]


def test_an_announce_sends_announce_peer_with_each_token_when_the_lookup_ends() -> None:
    n = node(known=2)
    search = n.announce(HASH, 6000, 1.0, implied_port=True)
    sent = []
    for out in n.take_outgoing():
        q = krpc.decode(out.data)
        assert isinstance(q, krpc.Query) and q.method == krpc.GET_PEERS
        i = int(out.address[0].rsplit(".", 1)[1])
        answer = krpc.response(q.tid, ME ^ (i << 100), nodes=[], token=b"tok%d" % i,
                               values=[krpc.pack_address(("5.5.5.5", 5))])
        sent += [krpc.decode(o.data) for o in n.receive(answer, out.address, 1.1)]
    assert search.done and search.peers == {("5.5.5.5", 5)} and search.announced == 2
    assert sorted((q.method, q.token, q.port, q.implied_port) for q in sent
                  if isinstance(q, krpc.Query)) == [
        (krpc.ANNOUNCE_PEER, b"tok1", 6000, True), (krpc.ANNOUNCE_PEER, b"tok2", 6000, True)]


# Random datagrams ----------------------------------------------------------------------------

ids = st.binary(min_size=20, max_size=20)
small = st.one_of(st.integers(-2**70, 2**70), st.binary(max_size=40),
                  st.lists(st.binary(max_size=20), max_size=4))
compact = st.lists(st.binary(min_size=26, max_size=26), max_size=4).map(b"".join)
values = st.lists(st.binary(min_size=6, max_size=6) | st.binary(max_size=20), max_size=5)
args = st.dictionaries(
    st.sampled_from([b"id", b"target", b"info_hash", b"token", b"port", b"implied_port",
                     b"want", b"nodes", b"values", b"x"]),
    st.one_of(ids, small, compact, values), max_size=6)
# The transaction ids of the node's first queries (its generator is seeded), so that some
# random answers reach the lookup in flight.
_first = node(known=2)._next_tid
live_tids = st.sampled_from([((_first + i) & 0xFFFF).to_bytes(2, "big") for i in (1, 2, 3)])
structured = st.fixed_dictionaries(
    {b"t": st.one_of(live_tids, st.binary(min_size=1, max_size=3), small),
     b"y": st.sampled_from([b"q", b"r", b"e", b"z"])},
    optional={b"q": st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer",
                                     b"other"]),
              b"a": args, b"r": args, b"e": st.lists(small, max_size=3)},
).map(bencode.encode)
replies = st.fixed_dictionaries(
    {b"t": live_tids, b"y": st.just(b"r"),
     b"r": st.tuples(ids, args).map(lambda p: {**p[1], b"id": p[0]})}).map(bencode.encode)
datagrams = st.one_of(st.binary(max_size=200), structured, replies)
sources = st.sampled_from([("10.0.0.1", 6881), ("10.0.0.2", 6881), ("10.5.5.5", 1),
                           ("10.5.5.5", 2), ("2001:db8::1", 3)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(datagrams, sources, st.floats(0, 3)), max_size=40))
def test_random_datagrams_never_raise_and_the_node_stays_bounded(
        feed: list[tuple[bytes, Address, float]]) -> None:
    n = node(known=2)
    search = n.get_peers(HASH, 0.0)  # queries in flight to 10.0.0.1 and .2
    n.take_outgoing()
    now = 0.0
    for data, source, step in feed:
        now += step
        out = n.receive(data, source, now)
        assert len(out) <= 2 and all(isinstance(o, Outgoing) for o in out)
        for o in out:
            krpc.decode(o.data)     # everything we send is well-formed
        n.tick(now)
    assert len(n.table) <= K * MAX_BUCKETS
    assert n.table.replacement_count() <= REPLACEMENTS * MAX_BUCKETS
    assert len(n._pending) <= MAX_PENDING and n.store.total <= MAX_PEERS
    assert len(n._limits.per_ip) <= MAX_TRACKED and len(n.searches) <= MAX_SEARCHES
    # a random answer may name nodes that the lookup then asks: each round of queries
    # ends by its time-out, and a lookup sends a bounded number of them
    for _ in range(100):
        now += QUERY_TIMEOUT
        n.tick(now)
        if search.done:
            break
    assert search.done
    event(f"answers reached the lookup: {search.lookup.answers if search.lookup else 0}")
