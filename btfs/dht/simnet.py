"""An in-process network of DHT nodes in virtual time, for tests and the benchmark. Pure.

Datagrams go through a heap of deliveries (each delayed by a random latency, some lost
if asked), to the node at the destination address if it exists; each node's `tick` runs
when its `next_tick` says. No sockets and no clock: `run` advances `now` event by event.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections.abc import Callable, Iterable

from btfs.dht.krpc import Address
from btfs.dht.node import DhtNode, Outgoing

_TICK = 0
_DATAGRAM = 1


class SimNet:
    """Nodes by address, the deliveries in flight, and the virtual time."""

    def __init__(self, rng: random.Random, *, latency: float = 0.05, loss: float = 0.0,
                 family: int = 4) -> None:
        self.rng = rng
        self.latency = latency
        self.loss = loss
        self.family = family
        self.now = 0.0
        self.nodes: dict[Address, DhtNode] = {}
        self.datagrams = 0            # sent (lost or not)
        self._events: list[tuple[float, int, int, Address, Address, bytes]] = []
        self._seq = 0
        self._tick_at: dict[Address, float] = {}

    def address(self, index: int) -> Address:
        """A distinct address for node number `index`."""
        if self.family == 6:   # in canonical form, as compact node info decodes
            return str(ipaddress.IPv6Address(0xFD00 << 112 | index)), 6881
        return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 6881

    def add(self, address: Address, *, bootstrap: Iterable[Address] = (),
            node_id: int | None = None) -> DhtNode:
        """A new node at `address`, joining through `bootstrap` (if any)."""
        node = DhtNode(random.Random(self.rng.getrandbits(64)), self.now, node_id=node_id,
                       family=self.family)
        self.nodes[address] = node
        routers = list(bootstrap)
        if routers:
            node.bootstrap(routers, self.now)
        self.flush(address)
        return node

    def remove(self, address: Address) -> None:
        """The node at `address` goes away; datagrams to it are lost."""
        self.nodes.pop(address, None)
        self._tick_at.pop(address, None)

    def flush(self, address: Address) -> None:
        """Send what the node at `address` has queued, and schedule its next tick."""
        node = self.nodes.get(address)
        if node is not None:
            self._send(address, node.take_outgoing())
            self._schedule(address, node)

    def _send(self, source: Address, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            self.datagrams += 1
            if self.loss and self.rng.random() < self.loss:
                continue
            delay = self.latency * (0.5 + self.rng.random())
            self._push(self.now + delay, _DATAGRAM, out.address, source, out.data)

    def _push(self, when: float, kind: int, dest: Address, source: Address,
              data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, dest, source, data))

    def _schedule(self, address: Address, node: DhtNode) -> None:
        due = node.next_tick(self.now)
        if due < self._tick_at.get(address, float("inf")):
            self._tick_at[address] = due
            self._push(due, _TICK, address, address, b"")

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Deliver datagrams and run ticks up to virtual time `until` (or until `stop`)."""
        events = self._events
        while events and events[0][0] <= until:
            when, _, kind, dest, source, data = heapq.heappop(events)
            self.now = when
            node = self.nodes.get(dest)
            if node is None:
                continue
            if kind == _TICK:
                if self._tick_at.get(dest) != when:
                    continue      # superseded by an earlier tick
                del self._tick_at[dest]
                out = node.tick(when)
            else:
                out = node.receive(data, source, when)
            self._send(dest, out)
            self._schedule(dest, node)
            if stop is not None and stop():
                return
        self.now = max(self.now, until)
