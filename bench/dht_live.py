"""A live DHT node on this machine: CPU per query answered, through the UDP socket.

`bench/dht_sim.py` times `DhtNode.receive` alone; this measures the whole shell
(`btfs.dht.service.DhtService`: recvfrom, the core, sendto) as a user's process runs it.
A child process runs the service on a loopback address and reports its own CPU time
(getrusage, less what start-up took) when told to stop; the parent sends `--queries`
get_peers / find_node / ping queries from 256 loopback addresses (127.77.x.y), at most
`--window` unanswered at a time, and counts the answers. The node's budgets (5 answers a
second to one IP, burst 20; 500 a second in all, burst 1000) are part of what is
measured: the rate printed is the rate the node allows.

    .venv/bin/python bench/dht_live.py [--queries 20000] [--window 64]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import select
import socket
import time
from multiprocessing.connection import Connection

from btfs.dht import krpc

HOST = "127.77.0.1"


def serve(port: int, pipe: Connection) -> None:
    import trio

    from btfs.dht.service import DhtService

    async def main() -> None:
        service = DhtService([])
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run, HOST, port)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            pipe.send(usage.ru_utime + usage.ru_stime)
            await trio.to_thread.run_sync(pipe.recv)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            node = service.nodes[4]
            pipe.send((usage.ru_utime + usage.ru_stime, node.stats.answers_sent,
                       node.stats.rate_limited))
            nursery.cancel_scope.cancel()

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=serve, args=(port, child))
    proc.start()
    cpu_at_start = parent.recv()
    rng = random.Random(1)
    senders = []
    for i in range(256):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.77.{1 + i // 250}.{2 + i % 250}", 0))
        s.setblocking(False)
        senders.append(s)
    kinds = [b"ping", b"find_node", b"get_peers"]
    sent = answered = 0
    started = time.perf_counter()
    in_flight = 0
    by_fd = {s.fileno(): s for s in senders}
    poller = select.poll()
    for s in senders:
        poller.register(s, select.POLLIN)
    while answered < args.queries and time.perf_counter() - started < 120:
        while in_flight < args.window and sent < args.queries:
            sender = senders[sent % len(senders)]
            me = rng.getrandbits(160)
            tid = sent.to_bytes(4, "big")
            kind = kinds[sent % 3]
            if kind == b"ping":
                data = krpc.ping(tid, me)
            elif kind == b"find_node":
                data = krpc.find_node(tid, me, rng.getrandbits(160))
            else:
                data = krpc.get_peers(tid, me, os.urandom(20))
            sender.sendto(data, (HOST, port))
            sent += 1
            in_flight += 1
        events = poller.poll(1000)
        if not events:
            in_flight = 0       # lost (dropped by a budget): send more
            continue
        for fd, _ in events:
            while True:
                try:
                    by_fd[fd].recvfrom(4096)
                except BlockingIOError:
                    break
                answered += 1
                in_flight -= 1
    elapsed = time.perf_counter() - started
    parent.send("stop")
    cpu, answers, limited = parent.recv()
    proc.join()
    cpu -= cpu_at_start
    print(f"{answered} of {sent} queries answered in {elapsed:.1f} s "
          f"({answered / elapsed:.0f}/s; node counted {answers} answers, {limited} rate-limited)")
    print(f"node process CPU under the load: {cpu:.2f} s, "
          f"{cpu / max(answers, 1) * 1e6:.0f} us per query answered")


if __name__ == "__main__":
    main()
