"""A DHT node (BEP 5, one address family of BEP 32) as a state machine. Pure.

The trio shell feeds it every datagram that arrives on the UDP socket (`receive`), calls
`tick` when `next_tick` says, and sends what either returns; a lookup started
with `get_peers`, `announce` or `find_node` returns a `Search` whose peers and `done`
the shell reads, and its first queries wait in `take_outgoing` (tick and receive return
them too). Time is the caller's (seconds, any origin); randomness comes from the given
`random.Random`.

Bounds, so no sender can make the node grow or spin: the routing table, the announced
peers (`storage.PeerStore`), queries in flight (`MAX_PENDING`), lookups (`MAX_SEARCHES`),
our queries per second (a global budget), answers per second (a budget per IP and one in
all), and the addresses whose rate is tracked. Malformed queries get a KRPC error when
their transaction id can be read (within the same budgets); other bad datagrams, answers
nobody asked for and answers from another address than the one asked are dropped.
Nothing a datagram holds makes `receive` raise.

Addresses are `(host, port)` with the host as the socket reports it (an IPv6 node's
shell passes 2-tuples, and an IPv4 node's shell unmaps `::ffff:a.b.c.d`); datagrams from
the other family (IPv4-mapped addresses count as IPv4) are dropped, so both families
never mix in one table.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from btfs.dht import krpc
from btfs.dht.krpc import Address, Contact, NodeId
from btfs.dht.lookup import Lookup
from btfs.dht.routing import RoutingTable
from btfs.dht.storage import PeerStore, Tokens

TICK = 1.0                    # how often tick is due while lookups run
IDLE_TICK = 15.0              # ... and while none do
QUERY_TIMEOUT = 5.0
MAX_PENDING = 1024
MAX_SEARCHES = 64
SEND_RATE = 200.0             # our queries per second, and the burst allowed
SEND_BURST = 400
ANSWER_RATE = 500.0           # answers (and errors) per second in all
ANSWER_BURST = 1000
ADDRESS_RATE = 5.0            # answers per second to one IP, and the burst
ADDRESS_BURST = 20
MAX_TRACKED = 4096            # IPs whose answer rate is tracked
MAINTENANCE_PINGS = 20 / 60.0  # pings of questionable nodes per second
BOOTSTRAP_RETRY = 60.0
HOUSEKEEPING = 60.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A datagram to send."""

    data: bytes
    address: Address


class Budget:
    """A token bucket: `rate` per second, at most `burst` at once."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def available(self, now: float) -> int:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        return int(self.tokens)

    def take(self, now: float) -> bool:
        if self.available(now) < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Stats:
    received: int = 0
    malformed: int = 0
    rate_limited: int = 0
    unexpected: int = 0        # answers nobody asked for, or from another address
    timeouts: int = 0
    queries_sent: int = 0
    answers_sent: int = 0
    errors_sent: int = 0
    bad_tokens: int = 0
    announces_stored: int = 0
    wrong_family: int = 0      # datagrams from an address of the other family


class Search:
    """A lookup as the shell sees it: the peers found so far, and whether it is done."""

    def __init__(self, kind: str, target: NodeId, lookup: Lookup | None, now: float, *,
                 port: int = 0, implied_port: bool = False) -> None:
        self.kind = kind              # "find_node", "get_peers" or "announce"
        self.target = target
        self.lookup = lookup
        self.port = port
        self.implied_port = implied_port
        self.started = now
        self.finished: float | None = None if lookup else now
        self.announced = 0            # announce_peer queries sent
        self.announce_acks = 0        # ... and answered

    @property
    def info_hash(self) -> bytes:
        return self.target.to_bytes(krpc.ID_BYTES, "big")

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def peers(self) -> set[Address]:
        return self.lookup.peers if self.lookup else set()

    def take_peers(self) -> list[Address]:
        """Peers found since the last call."""
        return self.lookup.take_peers() if self.lookup else []

    @property
    def hops(self) -> int:
        return self.lookup.hops if self.lookup else 0

    @property
    def queries(self) -> int:
        return self.lookup.queries if self.lookup else 0


@dataclass(slots=True)
class _Pending:
    address: Address
    node_id: NodeId | None
    method: bytes
    deadline: float
    search: Search | None


@dataclass
class _Limits:
    sends: Budget
    answers: Budget
    pings: Budget
    per_ip: dict[str, Budget] = field(default_factory=dict)


class DhtNode:
    """One DHT node: routing table, peer store, lookups and the transactions in flight."""

    def __init__(self, rng: random.Random, now: float, *, node_id: NodeId | None = None,
                 family: int = 4) -> None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family}")
        self.rng = rng
        self.family = family
        self.id = rng.getrandbits(160) if node_id is None else node_id
        self.table = RoutingTable(self.id, now)
        self.store = PeerStore()
        self.tokens = Tokens(rng, now)
        self.stats = Stats()
        self.searches: list[Search] = []
        self.routers: list[Address] = []
        self._limits = _Limits(Budget(SEND_RATE, SEND_BURST, now),
                               Budget(ANSWER_RATE, ANSWER_BURST, now),
                               Budget(MAINTENANCE_PINGS, 5, now))
        self._pending: dict[bytes, _Pending] = {}
        self._pinging: set[Address] = set()
        self._next_tid = rng.getrandbits(16)
        self._outbox: list[Outgoing] = []
        self._last_bootstrap = -BOOTSTRAP_RETRY
        self._joining: Search | None = None
        self._next_housekeeping = now + HOUSEKEEPING

    # The shell's side ----------------------------------------------------------------------

    def take_outgoing(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def bootstrap(self, routers: Iterable[Address], now: float) -> Search:
        """Join through `routers` (addresses of any DHT nodes): a lookup of our own id, then
        one in each farther bucket; repeated by `tick` while the table holds fewer than k
        nodes (the routers also seed every lookup until then)."""
        self.routers = list(routers)
        self._last_bootstrap = now
        self._joining = self._start("find_node", self.id, now, seeds=self.routers)
        return self._joining

    def add_node(self, address: Address, now: float) -> None:
        """Ping a node we heard of (a peer's BEP 5 PORT message); it enters when it answers."""
        self._ping(address, None, now)

    def find_node(self, target: NodeId, now: float) -> Search:
        return self._start("find_node", target, now)

    def get_peers(self, info_hash: bytes, now: float) -> Search:
        return self._start("get_peers", int.from_bytes(info_hash, "big"), now)

    def announce(self, info_hash: bytes, port: int, now: float, *,
                 implied_port: bool = False) -> Search:
        """get_peers, then announce_peer to the closest nodes that gave a token."""
        return self._start("announce", int.from_bytes(info_hash, "big"), now, port=port,
                           implied_port=implied_port)

    def next_tick(self, now: float) -> float:
        """When `tick` is due: the first query time-out, `TICK` from now while lookups
        run (they may wait for the send budget), `IDLE_TICK` otherwise."""
        due = now + (TICK if self.searches else IDLE_TICK)
        first = next(iter(self._pending.values()), None)
        return min(due, first.deadline) if first else due

    def tick(self, now: float) -> list[Outgoing]:
        """Time-outs, lookups waiting for budget, refresh, pings, expiry."""
        while self._pending:
            tid, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                break
            del self._pending[tid]
            self.stats.timeouts += 1
            self._failed(pending, now)
        for search in list(self.searches):
            self._advance(search, now)
        if len(self.table) < self.table.k and self.routers and (
                now - self._last_bootstrap >= BOOTSTRAP_RETRY):
            self.bootstrap(self.routers, now)
        if len(self.table) and len(self.searches) < MAX_SEARCHES // 2:
            for target in self.table.refresh_due(now, self.rng):
                self._start("find_node", target, now)
        if self._limits.pings.available(now) >= 1:
            for node in self.table.questionable(now)[:2]:
                if node.address in self._pinging or not self._limits.pings.take(now):
                    break
                self._ping(node.address, node.id, now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING
            self.store.expire(now)
            self._limits.per_ip.clear()
        return self.take_outgoing()

    def receive(self, datagram: bytes, address: Address, now: float) -> list[Outgoing]:
        """One datagram from `address`; what to send because of it."""
        self.stats.received += 1
        host = address[0]
        if (":" in host and not (host.startswith("::ffff:") and "." in host)) \
                != (self.family == 6):
            self.stats.wrong_family += 1   # its compact form would not fit our answers
            return []
        try:
            message = krpc.decode(datagram)
        except krpc.KrpcError as exc:
            self.stats.malformed += 1
            if exc.tid is not None and self._may_answer(address[0], now):
                self._reply(krpc.error(exc.tid, exc.code, str(exc)[:100]), address)
                self.stats.errors_sent += 1
            return self.take_outgoing()
        if isinstance(message, krpc.Query):
            if self._may_answer(address[0], now):
                self._on_query(message, address, now)
        else:
            self._on_reply(message, address, now)
        return self.take_outgoing()

    # Answering -----------------------------------------------------------------------------

    def _may_answer(self, ip: str, now: float) -> bool:
        per_ip = self._limits.per_ip
        budget = per_ip.pop(ip, None)
        if budget is None:
            if len(per_ip) >= MAX_TRACKED:
                del per_ip[next(iter(per_ip))]
            budget = Budget(ADDRESS_RATE, ADDRESS_BURST, now)
        per_ip[ip] = budget
        if budget.take(now) and self._limits.answers.take(now):
            return True
        self.stats.rate_limited += 1
        return False

    def _reply(self, data: bytes, address: Address) -> None:
        self._outbox.append(Outgoing(data, address))

    def _answer(self, tid: bytes, target: NodeId | None, values: list[bytes] | None = None,
                token: bytes | None = None) -> bytes:
        """A response naming our closest nodes to `target` (of our family), if any."""
        closest = None if target is None else self.table.closest(target)
        return krpc.response(tid, self.id, nodes=closest if self.family == 4 else None,
                             nodes6=closest if self.family == 6 else None,
                             values=values, token=token)

    def _on_query(self, q: krpc.Query, address: Address, now: float) -> None:
        if q.sender != self.id and not self.table.heard_query(Contact(q.sender, address), now) \
                and self.table.wants(q.sender):
            self._ping(address, q.sender, now)
        data: bytes | None
        if q.method == krpc.PING:
            data = self._answer(q.tid, None)
        elif q.method == krpc.FIND_NODE:
            data = self._answer(q.tid, q.target)
        elif q.method == krpc.GET_PEERS:
            values = self.store.peers(q.info_hash, now, self.rng,
                                      size=6 if self.family == 4 else 18)
            data = self._answer(q.tid, int.from_bytes(q.info_hash, "big"), values,
                                self.tokens.make(address[0], now))
        else:
            data = self._on_announce(q, address, now)
        if data is None:
            self.stats.bad_tokens += 1
            self.stats.errors_sent += 1
            self._reply(krpc.error(q.tid, krpc.ERROR_PROTOCOL, "bad token"), address)
        else:
            self._reply(data, address)
            self.stats.answers_sent += 1

    def _on_announce(self, q: krpc.Query, address: Address, now: float) -> bytes | None:
        """The answer to an announce_peer, or None when its token is wrong."""
        if not self.tokens.check(q.token, address[0], now):
            return None
        port = address[1] if q.implied_port or not q.port else q.port
        if self.store.announce(q.info_hash, krpc.pack_address((address[0], port)), now):
            self.stats.announces_stored += 1
        return self._answer(q.tid, None)

    # Asking --------------------------------------------------------------------------------

    def _send(self, address: Address, node_id: NodeId | None, method: bytes, now: float,
              search: Search | None, make: Callable[[bytes], bytes]) -> bool:
        """Send the query `make(tid)` if the budgets allow; False if they do not."""
        if len(self._pending) >= MAX_PENDING or not self._limits.sends.take(now):
            return False
        tid = self._tid()
        self._outbox.append(Outgoing(make(tid), address))
        self._pending[tid] = _Pending(address, node_id, method, now + QUERY_TIMEOUT, search)
        if method == krpc.PING:
            self._pinging.add(address)
        self.stats.queries_sent += 1
        return True

    def _ping(self, address: Address, node_id: NodeId | None, now: float) -> None:
        if address not in self._pinging:
            self._send(address, node_id, krpc.PING, now, None,
                       lambda tid: krpc.ping(tid, self.id))

    def _tid(self) -> bytes:
        while True:
            self._next_tid = (self._next_tid + 1) & 0xFFFF
            tid = self._next_tid.to_bytes(2, "big")
            if tid not in self._pending:
                return tid

    def _start(self, kind: str, target: NodeId, now: float, *, port: int = 0,
               implied_port: bool = False, seeds: list[Address] | None = None) -> Search:
        if len(self.searches) >= MAX_SEARCHES:
            return Search(kind, target, None, now)
        seed_list: list[Contact | Address] = list(seeds) if seeds else []
        if not seeds and len(self.table) < self.table.k:
            seed_list.extend(self.routers)
        seed_list.extend(self.table.closest(target, 2 * self.table.k))
        lookup = Lookup(target, seed_list, get_peers=kind != "find_node", own_id=self.id,
                        k=self.table.k)
        search = Search(kind, target, lookup, now, port=port, implied_port=implied_port)
        self.searches.append(search)
        self._advance(search, now)
        return search

    def _advance(self, search: Search, now: float) -> None:
        lookup = search.lookup
        if lookup is None or search.done:
            return
        room = min(self._limits.sends.available(now), MAX_PENDING - len(self._pending))
        if room > 0:
            if search.kind == "find_node":
                method = krpc.FIND_NODE
                def make(tid: bytes) -> bytes:
                    return krpc.find_node(tid, self.id, search.target)
            else:
                method = krpc.GET_PEERS
                def make(tid: bytes) -> bytes:
                    return krpc.get_peers(tid, self.id, search.info_hash)
            for asked in lookup.next_queries(room):
                if isinstance(asked, Contact):
                    self._send(asked.address, asked.id, method, now, search, make)
                else:
                    self._send(asked, None, method, now, search, make)
        if lookup.done:
            search.finished = now
            self.searches.remove(search)
            if search is self._joining:
                # Found our neighbours: now fill the farther buckets (Kademlia's join).
                self._joining = None
                for index in range(len(self.table.buckets) - 1):
                    self._start("find_node", self.table.random_id_in(index, self.rng), now)
            if search.kind == "announce":
                for contact, token in lookup.closest_answered():
                    if token is not None:
                        self._announce(search, contact, token, now)

    def _announce(self, search: Search, contact: Contact, token: bytes, now: float) -> None:
        def make(tid: bytes) -> bytes:
            return krpc.announce_peer(tid, self.id, search.info_hash, search.port, token,
                                      search.implied_port)
        if self._send(contact.address, contact.id, krpc.ANNOUNCE_PEER, now, search, make):
            search.announced += 1

    # Answers and failures ------------------------------------------------------------------

    def _on_reply(self, message: krpc.Response | krpc.Error, address: Address,
                  now: float) -> None:
        pending = self._pending.get(message.tid)
        if pending is None or pending.address != address:
            self.stats.unexpected += 1
            return
        del self._pending[message.tid]
        if isinstance(message, krpc.Error):
            self._failed(pending, now, answered=True)
            return
        self._pinging.discard(address)
        if message.sender == self.id:
            return
        contact = Contact(message.sender, address)
        ping = self.table.heard_response(contact, now)
        if ping is not None:
            self._ping(ping.address, ping.id, now)
        search = pending.search
        if search is None or search.lookup is None:
            return
        if pending.method == krpc.ANNOUNCE_PEER:
            search.announce_acks += 1
            return
        nodes = message.nodes if self.family == 4 else message.nodes6
        search.lookup.answered(address, message.sender, nodes, message.values, message.token)
        self._advance(search, now)

    def _failed(self, pending: _Pending, now: float, *, answered: bool = False) -> None:
        self._pinging.discard(pending.address)
        if pending.node_id is not None and not answered:
            self.table.failed(pending.node_id, pending.address)
        search = pending.search
        if search is not None and search.lookup is not None \
                and pending.method != krpc.ANNOUNCE_PEER:
            search.lookup.failed(pending.address)
            self._advance(search, now)
