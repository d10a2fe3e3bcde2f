"""The DHT core at scale, by simulation: hops, messages, CPU per answer, table memory.

For each network size, nodes join one by one (every 0.1 s of virtual time, each through
3 random earlier nodes, as a client through its routers) in `btfs.dht.simnet.SimNet`:
real `DhtNode`s exchanging real KRPC datagrams through a heap in virtual time, 20-80 ms
of latency each way, no sockets. After 15 virtual minutes to settle it prints:

- idle traffic: datagrams each node receives per minute with no lookups of its users
  (pings, and bucket refresh: over these 15 minutes every untouched bucket refreshes
  once, so the figure does not depend on where the window falls);
- lookups: `--lookups` get_peers from random nodes for random info-hashes, one at a
  time: hops (rounds to the closest node found), queries sent and answers received per
  lookup, virtual time to finish, and how many of the true 8 closest nodes it found;
- announce then get_peers from another node: how often the peer is found;
- busy traffic: every node announces one torrent every 30 minutes (spread evenly),
  15 virtual minutes: datagrams each node receives per minute (mean, p99, max).

Then, on this machine: CPU time per query answered by one node of the largest network
(`DhtNode.receive` on pre-encoded queries from nodes of its table, perf_counter over
many), and the memory of a full routing table and of the tables in the simulation
(tracemalloc).

    .venv/bin/python bench/dht_sim.py [--sizes 1000,10000] [--lookups 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Sequence

from btfs.dht import krpc
from btfs.dht.krpc import Contact
from btfs.dht.node import Search
from btfs.dht.routing import MAX_BUCKETS, REPLACEMENTS, K, RoutingTable
from btfs.dht.simnet import SimNet

SETTLE = 15 * 60.0
WINDOW = 15 * 60.0           # one refresh period: every idle bucket refreshes once in it
ANNOUNCE_EVERY = 30 * 60.0


def build(n: int, rng: random.Random) -> SimNet:
    net = SimNet(rng, latency=0.05)
    net.add(net.address(0))
    for i in range(1, n):
        routers = sorted({net.address(rng.randrange(i)) for _ in range(3)})
        net.add(net.address(i), bootstrap=routers)
        net.run(net.now + 0.1)
    net.run(net.now + SETTLE)
    return net


def run_search(net: SimNet, address: krpc.Address, search: Search) -> None:
    net.flush(address)
    net.run(net.now + 120, lambda: search.done)


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def traffic(net: SimNet, minutes: float, announce: bool, rng: random.Random) -> list[int]:
    """Datagrams each node received over the window (announcing if asked)."""
    before = {a: n.stats.received for a, n in net.nodes.items()}
    start = net.now
    if announce:
        addresses = list(net.nodes)
        count = int(len(addresses) * minutes * 60 / ANNOUNCE_EVERY)
        times = sorted(start + rng.random() * minutes * 60 for _ in range(count))
        for when in times:
            net.run(when)
            address = rng.choice(addresses)
            net.nodes[address].announce(rng.randbytes(20), 6881, net.now)
            net.flush(address)
    net.run(start + minutes * 60)
    return [n.stats.received - before[a] for a, n in net.nodes.items()]


def measure(n: int, lookups: int, seed: int) -> tuple[SimNet, dict[str, float]]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    net = build(n, rng)
    built = time.perf_counter() - t0
    addresses = list(net.nodes)
    ids = sorted(node.id for node in net.nodes.values())
    idle = traffic(net, WINDOW / 60, False, rng)

    hops, queries, answers, durations, accuracy = [], [], [], [], []
    for _ in range(lookups):
        address = rng.choice(addresses)
        info_hash = rng.randbytes(20)
        search = net.nodes[address].get_peers(info_hash, net.now)
        run_search(net, address, search)
        assert search.lookup is not None and search.finished is not None
        hops.append(search.hops)
        queries.append(search.queries)
        answers.append(search.lookup.answers)
        durations.append(search.finished - search.started)
        target = int.from_bytes(info_hash, "big")
        truth = set(sorted(ids, key=lambda i: i ^ target)[:K])
        found = {c.id for c, _ in search.lookup.closest_answered()}
        accuracy.append(len(found & truth))

    found_peer = 0
    trials = max(10, lookups // 4)
    for _ in range(trials):
        a, b = rng.sample(addresses, 2)
        info_hash = rng.randbytes(20)
        run_search(net, a, net.nodes[a].announce(info_hash, 7000, net.now))
        net.run(net.now + 1)
        search = net.nodes[b].get_peers(info_hash, net.now)
        run_search(net, b, search)
        found_peer += (a[0], 7000) in search.peers
    busy = traffic(net, WINDOW / 60, True, rng)

    tables = [len(node.table) for node in net.nodes.values()]
    figures = {
        "nodes": n, "build_s": built,
        "table_mean": statistics.mean(tables), "table_min": min(tables),
        "idle_per_min": statistics.mean(idle) / (WINDOW / 60),
        "hops_mean": statistics.mean(hops), "hops_p50": pct(hops, 0.5),
        "hops_p90": pct(hops, 0.9), "hops_max": max(hops),
        "queries_mean": statistics.mean(queries), "answers_mean": statistics.mean(answers),
        "lookup_s_mean": statistics.mean(durations), "lookup_s_p90": pct(durations, 0.9),
        "closest_found": statistics.mean(accuracy),
        "peer_found": found_peer / trials,
        "busy_per_min": statistics.mean(busy) / (WINDOW / 60),
        "busy_p99_per_min": pct(busy, 0.99) / (WINDOW / 60),
        "busy_max_per_min": max(busy) / (WINDOW / 60),
    }
    return net, figures


def cpu_per_answer(net: SimNet, count: int) -> dict[str, float]:
    """Microseconds of `receive` per query answered, per method, by a median node."""
    nodes = sorted(net.nodes.values(), key=lambda node: len(node.table))
    node = nodes[len(nodes) // 2]
    askers = node.table.nodes()
    rng = random.Random(2)
    out: dict[str, float] = {}
    info_hashes = [rng.randbytes(20) for _ in range(100)]
    t = net.now
    for method in ("ping", "find_node", "get_peers", "announce_peer"):
        batch = []
        for i in range(count):
            t += 0.01            # 100 queries a second from ~60 nodes: within every budget
            asker = askers[i % len(askers)]
            tid = i.to_bytes(4, "big")
            info_hash = info_hashes[i % len(info_hashes)]
            if method == "ping":
                data = krpc.ping(tid, asker.id)
            elif method == "find_node":
                data = krpc.find_node(tid, asker.id, rng.getrandbits(160))
            elif method == "get_peers":
                data = krpc.get_peers(tid, asker.id, info_hash)
            else:
                token = node.tokens.make(asker.address[0], t)
                data = krpc.announce_peer(tid, asker.id, info_hash, 6881, token, False)
            batch.append((data, asker.address, t))
        answered = node.stats.answers_sent
        start = time.perf_counter()
        for data, source, when in batch:
            node.receive(data, source, when)
        elapsed = time.perf_counter() - start
        assert node.stats.answers_sent - answered == count, "queries were not all answered"
        out[method] = elapsed / count * 1e6
    return out


def table_memory() -> tuple[int, int]:
    """Bytes of a routing table with every bucket and replacement cache full, and nodes."""
    rng = random.Random(3)
    own = rng.getrandbits(160)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = RoutingTable(own, 0.0)
    serial = 0
    for index in range(MAX_BUCKETS):
        room = min(K + REPLACEMENTS, 2 ** (159 - index))
        seen: set[int] = set()
        while len(seen) < room:
            node_id = own ^ (1 << (159 - index)) ^ rng.getrandbits(159 - index)
            if node_id in seen:
                continue
            seen.add(node_id)
            serial += 1
            host = f"10.{serial >> 16 & 255}.{serial >> 8 & 255}.{serial & 255}"
            table.heard_response(Contact(node_id, (host, 6881)), 1.0)
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return size, len(table) + table.replacement_count()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--cpu-queries", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # First, while the allocator's free lists are cold: objects taken from a free list
    # left by a freed network are not seen by tracemalloc, which then counts too little.
    full, entries = table_memory()
    last: SimNet | None = None
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        last, figures = measure(n, args.lookups, args.seed)
        rows.append(figures)
        print(f"{n} nodes: built in {figures['build_s']:.0f} s;"
              f" table {figures['table_mean']:.1f} nodes (min {figures['table_min']})")
    print()
    print("nodes   hops mean/p50/p90/max  queries answers per lookup  lookup s mean/p90"
          "  closest 8 found  peer found  datagrams/node/min idle, busy mean/p99/max")
    for f in rows:
        print(f"{f['nodes']:>6}  {f['hops_mean']:4.2f} {f['hops_p50']:2.0f} {f['hops_p90']:2.0f}"
              f" {f['hops_max']:2.0f}        {f['queries_mean']:5.1f}  {f['answers_mean']:5.1f}"
              f"                {f['lookup_s_mean']:5.2f} {f['lookup_s_p90']:5.2f}"
              f"       {f['closest_found']:4.2f}/8       {f['peer_found']:5.0%}"
              f"       {f['idle_per_min']:5.2f}, {f['busy_per_min']:5.2f}"
              f" {f['busy_p99_per_min']:5.1f} {f['busy_max_per_min']:5.1f}")
    assert last is not None
    print()
    cpu = cpu_per_answer(last, args.cpu_queries)
    print("CPU per query answered (us, one node of the largest network, "
          f"{args.cpu_queries} each): "
          + ", ".join(f"{m} {us:.1f}" for m, us in cpu.items()))
    print(f"full routing table: {entries} nodes ({K} per bucket + {REPLACEMENTS} replacements"
          f" in {MAX_BUCKETS} buckets, as many as each holds): {full / 1024:.0f} KiB,"
          f" {full / entries:.0f} bytes per node")
    mean_table = rows[-1]["table_mean"]
    print(f"a table of the {rows[-1]['nodes']:.0f}-node network: {mean_table:.0f} nodes,"
          f" about {mean_table * full / entries / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
