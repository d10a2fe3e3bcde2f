"""Many DHT nodes in one process (SimNet: datagrams through a heap, virtual time)."""

from __future__ import annotations

import random

import pytest

from btfs.dht.node import DhtNode, Search
from btfs.dht.simnet import SimNet


def build(count: int, *, seed: int, loss: float = 0.0, family: int = 4) -> SimNet:
    """`count` nodes, each joining through up to 3 random earlier ones, then a minute to
    settle."""
    rng = random.Random(seed)
    net = SimNet(rng, loss=loss, family=family)
    net.add(net.address(0))
    for i in range(1, count):
        routers = {net.address(rng.randrange(i)) for _ in range(3)}
        net.add(net.address(i), bootstrap=sorted(routers))
        net.run(net.now + 0.2)
    net.run(net.now + 60)
    return net


def finish(net: SimNet, node: DhtNode, search: Search) -> None:
    net.flush(next(a for a, n in net.nodes.items() if n is node))
    net.run(net.now + 60, lambda: search.done)
    assert search.done


@pytest.mark.parametrize(("loss", "family"), [(0.0, 4), (0.05, 4), (0.0, 6)])
def test_an_announce_by_one_node_is_found_by_a_get_peers_from_another(
        loss: float, family: int) -> None:
    net = build(200, seed=11, loss=loss, family=family)
    nodes = list(net.nodes.values())
    info_hash = random.Random(1).randbytes(20)
    announcer, seeker = nodes[17], nodes[160]
    announce = announcer.announce(info_hash, 5151, net.now)
    finish(net, announcer, announce)
    assert announce.announced >= 6
    net.run(net.now + 10)
    search = seeker.get_peers(info_hash, net.now)
    finish(net, seeker, search)
    announcer_ip = next(a for a, n in net.nodes.items() if n is announcer)[0]
    assert search.peers == {(announcer_ip, 5151)}
    assert 1 <= search.hops <= 6 and search.queries <= 40


def test_a_lookup_finds_the_closest_nodes_of_the_whole_network() -> None:
    net = build(200, seed=12)
    rng = random.Random(2)
    nodes = list(net.nodes.values())
    for _ in range(5):
        target = rng.getrandbits(160)
        asker = nodes[rng.randrange(len(nodes))]
        search = asker.find_node(target, net.now)
        finish(net, asker, search)
        assert search.lookup is not None
        found = {c.id for c, _ in search.lookup.closest_answered()}
        truth = set(sorted((n.id for n in nodes), key=lambda i: i ^ target)[:8])
        assert len(found & truth) >= 7


def test_lookups_route_around_nodes_that_left() -> None:
    net = build(200, seed=13)
    rng = random.Random(3)
    addresses = list(net.nodes)
    for address in rng.sample(addresses[1:], 40):
        net.remove(address)
    info_hash = rng.randbytes(20)
    announcer, seeker = (net.nodes[a] for a in rng.sample(list(net.nodes), 2))
    announce = announcer.announce(info_hash, 6000, net.now)
    finish(net, announcer, announce)
    search = seeker.get_peers(info_hash, net.now)
    finish(net, seeker, search)
    assert len(search.peers) == 1
    assert sum(n.stats.timeouts for n in net.nodes.values()) > 0


def test_tables_fill_and_stay_healthy_over_an_hour() -> None:
    net = build(200, seed=14)
    net.run(net.now + 3600)
    sizes = sorted(len(n.table) for n in net.nodes.values())
    assert sizes[0] >= 16, sizes[:10]
    now = net.now
    good = sum(sum(1 for x in n.table.nodes() if x.good(now)) for n in net.nodes.values())
    assert good >= 0.9 * sum(sizes)
