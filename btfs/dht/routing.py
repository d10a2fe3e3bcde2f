"""The Kademlia routing table of BEP 5: k-buckets, node liveness, refresh. Pure.

Bucket `i` holds the nodes whose ids share exactly `i` leading bits with ours; the last
bucket holds all that share more. Only that last bucket (the one covering our own id)
splits, so the table never holds more than `MAX_BUCKETS * (K + REPLACEMENTS)` nodes.

Liveness as BEP 5 defines it: a node is good while it answered one of our queries in the
last 15 minutes (or answered once and queried us since); questionable after that; bad
after `MAX_FAILS` queries in a row went unanswered. A node that wants into a full bucket
replaces a bad one, or waits in the bucket's replacement cache while the table asks
(through `add`'s result) for the least recently seen questionable node to be pinged;
when that node fails, the best replacement takes its place. A bucket that nothing has
touched for 15 minutes is due a refresh: a lookup of a random id in its range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from btfs.dht.krpc import Address, Contact, NodeId

K = 8
ID_BITS = 160
MAX_BUCKETS = ID_BITS
REPLACEMENTS = 8
GOOD_FOR = 15 * 60.0
REFRESH_AFTER = 15 * 60.0
MAX_FAILS = 2


@dataclass(slots=True)
class Node:
    """One node of the table, and what we saw of it."""

    id: NodeId
    address: Address
    last_response: float | None = None  # our last query it answered
    last_query: float | None = None     # its last query to us
    fails: int = 0                       # our queries in a row it did not answer

    def good(self, now: float) -> bool:
        if self.fails or self.last_response is None:
            return False
        return (now - self.last_response < GOOD_FOR
                or (self.last_query is not None and now - self.last_query < GOOD_FOR))

    @property
    def bad(self) -> bool:
        return self.fails >= MAX_FAILS

    @property
    def last_seen(self) -> float:
        return max(self.last_response or 0.0, self.last_query or 0.0)

    @property
    def contact(self) -> Contact:
        return Contact(self.id, self.address)


@dataclass(slots=True)
class Bucket:
    nodes: list[Node] = field(default_factory=list)         # least recently seen first
    replacements: list[Node] = field(default_factory=list)  # most recently seen last
    last_changed: float = 0.0


def common_prefix(a: NodeId, b: NodeId) -> int:
    """How many leading bits of two ids are equal (160 when they are the same)."""
    return ID_BITS - (a ^ b).bit_length()


class RoutingTable:
    """The nodes we know, in k-buckets around `own_id`."""

    def __init__(self, own_id: NodeId, now: float, *, k: int = K) -> None:
        self.own_id = own_id
        self.k = k
        self.buckets: list[Bucket] = [Bucket(last_changed=now)]
        self._where: dict[NodeId, Node] = {}   # every node in a bucket (not replacements)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._where

    def get(self, node_id: NodeId) -> Node | None:
        return self._where.get(node_id)

    def bucket_index(self, node_id: NodeId) -> int:
        return min(common_prefix(self.own_id, node_id), len(self.buckets) - 1)

    def nodes(self) -> list[Node]:
        return list(self._where.values())

    def replacement_count(self) -> int:
        return sum(len(b.replacements) for b in self.buckets)

    # Learning of nodes -------------------------------------------------------------------

    def wants(self, node_id: NodeId) -> bool:
        """Whether a new node with this id would enter the table (not only the cache)."""
        if node_id == self.own_id or node_id in self._where:
            return False
        index = self.bucket_index(node_id)
        bucket = self.buckets[index]
        return (len(bucket.nodes) < self.k or any(n.bad for n in bucket.nodes)
                or self._can_split(index))

    def heard_response(self, contact: Contact, now: float) -> Node | None:
        """A node answered one of our queries: it is good. See `add` for the result."""
        node = self._where.get(contact.id)
        if node is not None and node.address == contact.address:
            node.last_response = now
            node.fails = 0
            self._touch(node, now)
            return None
        return self.add(contact, now, responded=True)

    def heard_query(self, contact: Contact, now: float) -> bool:
        """A node queried us; True if it is in the table (unknown nodes are not added:
        the caller pings those the table `wants`, and they enter when they answer)."""
        node = self._where.get(contact.id)
        if node is None or node.address != contact.address:
            return False
        node.last_query = now
        if node.last_response is not None:
            self._touch(node, now)
        return True

    def add(self, contact: Contact, now: float, *, responded: bool) -> Node | None:
        """Put a node in its bucket, or in the bucket's replacement cache.

        Returns a questionable node of that full bucket that the caller should ping (its
        failure makes room), or None.
        """
        if contact.id == self.own_id or contact.id in self._where:
            return None
        new = Node(contact.id, contact.address, last_response=now if responded else None)
        while True:
            index = self.bucket_index(contact.id)
            bucket = self.buckets[index]
            if len(bucket.nodes) < self.k:
                self._insert(bucket, new, now)
                return None
            bad = next((n for n in bucket.nodes if n.bad), None)
            if bad is not None:
                self._remove(bucket, bad)
                self._insert(bucket, new, now)
                return None
            if not self._can_split(index):
                break
            self._split()
        self._remember(bucket, new)
        return next((n for n in bucket.nodes if not n.good(now)), None)

    def failed(self, node_id: NodeId, address: Address) -> None:
        """A query to this node went unanswered; a bad node gives way to a replacement."""
        node = self._where.get(node_id)
        if node is None or node.address != address:
            self._forget_replacement(node_id)
            return
        node.fails += 1
        bucket = self.buckets[self.bucket_index(node_id)]
        if node.bad and bucket.replacements:
            self._remove(bucket, node)
            best = max(bucket.replacements,
                       key=lambda n: (n.last_response is not None, n.last_seen))
            bucket.replacements.remove(best)
            self._insert(bucket, best, best.last_seen)

    def _can_split(self, index: int) -> bool:
        return index == len(self.buckets) - 1 and len(self.buckets) < MAX_BUCKETS

    def _split(self) -> None:
        last = self.buckets[-1]
        new = Bucket(last_changed=last.last_changed)
        depth = len(self.buckets) - 1
        stay = [n for n in last.nodes if common_prefix(self.own_id, n.id) == depth]
        new.nodes = [n for n in last.nodes if common_prefix(self.own_id, n.id) > depth]
        last.nodes = stay
        new.replacements = [n for n in last.replacements
                            if common_prefix(self.own_id, n.id) > depth]
        last.replacements = [n for n in last.replacements
                             if common_prefix(self.own_id, n.id) == depth]
        self.buckets.append(new)

    def _insert(self, bucket: Bucket, node: Node, now: float) -> None:
        bucket.nodes.append(node)
        self._where[node.id] = node
        bucket.last_changed = max(bucket.last_changed, now)
        self._forget_replacement(node.id)

    def _remove(self, bucket: Bucket, node: Node) -> None:
        bucket.nodes.remove(node)
        del self._where[node.id]

    def _touch(self, node: Node, now: float) -> None:
        bucket = self.buckets[self.bucket_index(node.id)]
        bucket.nodes.remove(node)
        bucket.nodes.append(node)
        bucket.last_changed = max(bucket.last_changed, now)

    def _remember(self, bucket: Bucket, node: Node) -> None:
        cache = bucket.replacements
        for i, old in enumerate(cache):
            if old.id == node.id:
                if node.last_response is None:
                    node.last_response = old.last_response
                del cache[i]
                break
        cache.append(node)
        if len(cache) > REPLACEMENTS:
            # Drop the oldest of those that never answered us, else the oldest.
            unverified = [n for n in cache if n.last_response is None]
            cache.remove(unverified[0] if unverified else cache[0])

    def _forget_replacement(self, node_id: NodeId) -> None:
        bucket = self.buckets[self.bucket_index(node_id)]
        bucket.replacements = [n for n in bucket.replacements if n.id != node_id]

    # Answering and refreshing ------------------------------------------------------------

    def closest(self, target: NodeId, count: int | None = None) -> list[Contact]:
        """The `count` (default k) nodes closest to `target` that are not bad.

        Nodes of bucket `b` (where target falls) and beyond are all closer than those of
        the buckets before it, which grow farther the lower their index; so only as many
        buckets as needed are read.
        """
        count = self.k if count is None else count
        b = self.bucket_index(target)
        found = [n for bucket in self.buckets[b:] for n in bucket.nodes if not n.bad]
        for i in range(b - 1, -1, -1):
            if len(found) >= count:
                break
            found.extend(n for n in self.buckets[i].nodes if not n.bad)
        found.sort(key=lambda n: n.id ^ target)
        return [n.contact for n in found[:count]]

    def questionable(self, now: float) -> list[Node]:
        """Nodes that are neither good nor bad, least recently seen first."""
        return sorted((n for n in self._where.values() if not n.good(now) and not n.bad),
                      key=lambda n: n.last_seen)

    def refresh_due(self, now: float, rng: random.Random) -> list[NodeId]:
        """Random targets in each bucket nothing touched for `REFRESH_AFTER` seconds;
        those buckets count as touched now (the caller starts the lookups)."""
        targets = []
        for index, bucket in enumerate(self.buckets):
            if now - bucket.last_changed >= REFRESH_AFTER:
                bucket.last_changed = now
                targets.append(self.random_id_in(index, rng))
        return targets

    def random_id_in(self, index: int, rng: random.Random) -> NodeId:
        """A random id that falls in bucket `index`."""
        if index == len(self.buckets) - 1:
            prefix_bits = index   # shares at least `index` bits with us
            keep = self.own_id >> (ID_BITS - prefix_bits) << (ID_BITS - prefix_bits)
            return keep | rng.getrandbits(ID_BITS - prefix_bits)
        flip = 1 << (ID_BITS - 1 - index)
        high = (self.own_id ^ flip) >> (ID_BITS - 1 - index) << (ID_BITS - 1 - index)
        return high | rng.getrandbits(ID_BITS - 1 - index)
