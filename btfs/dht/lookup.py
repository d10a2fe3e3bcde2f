"""One iterative Kademlia lookup (find_node or get_peers): which node to ask next, and
when to stop. Pure: the node sends the queries and feeds back answers and failures.

The lookup keeps the nodes it knows ordered by distance to the target. It asks the
closest not yet asked among the `k` closest not failed, with at most `alpha` queries in
flight, and is done when those `k` have all answered (or nothing is left to ask, or it
sent `MAX_QUERIES`). A get_peers lookup gathers the peers it is given, and the token of
each node that answered, for the announce that may follow. `hops` is the number of
rounds that led to the closest node that answered (1 when it was a seed).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from btfs.dht.krpc import Address, Contact, NodeId

ALPHA = 3
MAX_QUERIES = 64          # queries one lookup may send
MAX_CANDIDATES = 96       # nodes it keeps in mind; the farthest not asked are dropped
MAX_PEERS = 2000          # peers one get_peers lookup collects
_UNKNOWN = 1 << 160       # distance of a seed whose id we do not know yet (a router)

NEW, ASKED, ANSWERED, FAILED = range(4)


@dataclass(slots=True)
class Candidate:
    address: Address
    id: NodeId | None
    distance: int
    depth: int
    state: int = NEW
    token: bytes | None = None


class Lookup:
    """The state of one lookup of `target`."""

    def __init__(self, target: NodeId, seeds: Iterable[Contact | Address], *,
                 get_peers: bool, own_id: NodeId, k: int = 8, alpha: int = ALPHA,
                 max_queries: int = MAX_QUERIES) -> None:
        self.target = target
        self.get_peers = get_peers
        self.own_id = own_id
        self.k = k
        self.alpha = alpha
        self.max_queries = max_queries
        self._by_address: dict[Address, Candidate] = {}
        self._order: list[tuple[int, Address]] = []
        self.in_flight = 0
        self.queries = 0
        self.answers = 0
        self.peers: set[Address] = set()
        self._new_peers: list[Address] = []
        for i, seed in enumerate(seeds):
            if isinstance(seed, Contact):
                self._learn(seed.id, seed.address, 0)
            elif seed not in self._by_address:
                self._put(Candidate(seed, None, _UNKNOWN + i, 0))

    # What to do next ---------------------------------------------------------------------

    def _closest(self, keep: Callable[[Candidate], bool]) -> list[Candidate]:
        """The `k` closest candidates that `keep` accepts."""
        out = []
        for _, address in self._order:
            c = self._by_address[address]
            if keep(c):
                out.append(c)
                if len(out) == self.k:
                    break
        return out

    def _shortlist(self) -> list[Candidate]:
        """The `k` closest candidates that did not fail."""
        return self._closest(lambda c: c.state != FAILED)

    @property
    def done(self) -> bool:
        short = self._shortlist()
        if all(c.state == ANSWERED for c in short):
            return True
        waiting = any(c.state == ASKED for c in short)
        return not waiting and (self.queries >= self.max_queries
                                or not any(c.state == NEW for c in short))

    def next_queries(self, limit: int = ALPHA) -> list[Contact | Address]:
        """Up to `limit` nodes to query now (each marked asked); a node whose id is
        unknown comes as an address alone."""
        out: list[Contact | Address] = []
        if self.in_flight >= self.alpha or self.queries >= self.max_queries or limit < 1:
            return out
        for c in self._shortlist():
            if c.state != NEW:
                continue
            c.state = ASKED
            self.in_flight += 1
            self.queries += 1
            out.append(c.address if c.id is None else Contact(c.id, c.address))
            if (self.in_flight >= self.alpha or self.queries >= self.max_queries
                    or len(out) >= limit):
                break
        return out

    # What came back ----------------------------------------------------------------------

    def answered(self, address: Address, sender: NodeId, nodes: Iterable[Contact],
                 peers: Iterable[Address] = (), token: bytes | None = None) -> None:
        """`address` answered as node `sender`, naming closer `nodes` (and `peers`)."""
        c = self._by_address.get(address)
        if c is None or c.state != ASKED:
            return
        self.in_flight -= 1
        self.answers += 1
        c.state = ANSWERED
        c.token = token
        if c.id != sender:
            self._order.remove((c.distance, address))
            c.id = sender
            c.distance = sender ^ self.target
            bisect.insort(self._order, (c.distance, address))
        for node in nodes:
            self._learn(node.id, node.address, c.depth + 1)
        if self.get_peers:
            for peer in peers:
                if peer not in self.peers and len(self.peers) < MAX_PEERS:
                    self.peers.add(peer)
                    self._new_peers.append(peer)

    def failed(self, address: Address) -> None:
        c = self._by_address.get(address)
        if c is not None and c.state == ASKED:
            self.in_flight -= 1
            c.state = FAILED

    def take_peers(self) -> list[Address]:
        """Peers found since the last call."""
        out, self._new_peers = self._new_peers, []
        return out

    def closest_answered(self) -> list[tuple[Contact, bytes | None]]:
        """The `k` closest nodes that answered, with their tokens."""
        answered = self._closest(lambda c: c.state == ANSWERED)
        return [(Contact(c.id, c.address), c.token) for c in answered if c.id is not None]

    @property
    def hops(self) -> int:
        best = self.closest_answered()
        return self._by_address[best[0][0].address].depth + 1 if best else 0

    # Keeping the candidates -----------------------------------------------------------------

    def _learn(self, node_id: NodeId, address: Address, depth: int) -> None:
        if node_id == self.own_id or address in self._by_address:
            return
        self._put(Candidate(address, node_id, node_id ^ self.target, depth))

    def _put(self, c: Candidate) -> None:
        self._by_address[c.address] = c
        bisect.insort(self._order, (c.distance, c.address))
        if len(self._order) > MAX_CANDIDATES:
            for i in range(len(self._order) - 1, -1, -1):
                far = self._by_address[self._order[i][1]]
                if far.state in (NEW, FAILED):
                    del self._order[i]
                    del self._by_address[far.address]
                    break
