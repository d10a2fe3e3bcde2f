"""One torrent's swarm as packed records: what keeps the in-memory store near 40-50 bytes
per peer instead of the ~315 of an object per peer.

A swarm has four buckets, one per kind (bit 0: seed, bit 1: IPv6): 0 IPv4 leechers,
1 IPv4 seeds, 2 IPv6 leechers, 3 IPv6 seeds. A bucket is three columns: the peers'
20-byte ids end to end in one `bytearray`, their compact addresses (6 or 18 bytes) in
another (with room to grow and a view of one item per address, for strided reads: see
`Bucket`), and their last announce (whole seconds, rounded up) in an `array('I')`. A peer
is a slot, the same in all three; removing one moves the bucket's last peer into its slot.

Finding a peer by id goes through an open-addressing table (linear probing, an
`array('I')` at most three quarters full: 5 to 11 bytes a peer): an entry is
1 + (slot << 2 | kind), 0 is empty; a lookup compares the id stored at that slot.
Deletion shifts the following entries back (no tombstones). Python's `hash` of the id
places it (randomised per process, so a client cannot aim collisions at one swarm).

`floor` is a lower bound on every peer's last announce in the swarm (exact after a sweep,
lowered by any record written with an older time): while it is not older than the expiry
cutoff, no peer can have expired and peer selection need not look at the times.

Pure, no I/O.
"""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Iterator

ID = 20
ADDRESS_SIZE = (6, 6, 18, 18)  # by kind
_MIN_TABLE = 8


class _Record6(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("address", ctypes.c_char * 6)]


class _Record18(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("address", ctypes.c_char * 18)]


_RECORD_TYPES: dict[int, type[ctypes.Structure]] = {6: _Record6, 18: _Record18}


class Bucket:
    """The peers of one kind in one swarm, as columns (see the module docstring).

    `addrs` has room for more peers than `seen` counts (it grows by half at a time and
    never shrinks while the bucket lives), so that `records`, a view of it with one
    item per address, can stay: a strided slice of it copied out (`tobytes`) reads
    the chosen peers' addresses in one C call."""

    __slots__ = ("addrs", "ids", "records", "seen", "size")

    def __init__(self, size: int) -> None:
        self.ids = bytearray()
        self.addrs = bytearray()
        self.records = memoryview(b"")
        self.seen = array("I")
        self.size = size

    def __len__(self) -> int:
        return len(self.seen)

    def append(self, peer_id: bytes, compact: bytes, seen: int) -> int:
        """Add a peer at the end; its slot."""
        slot = len(self.seen)
        size = self.size
        if (slot + 1) * size > len(self.addrs):
            self._grow(slot + 1)
        self.addrs[slot * size : slot * size + size] = compact
        self.ids += peer_id
        self.seen.append(seen)
        return slot

    def _grow(self, need: int) -> None:
        """Room for at least `need` addresses. The old column and its view go together
        (a column with a view on it cannot be resized in place)."""
        capacity = max(8, need + need // 2)
        addrs = bytearray(capacity * self.size)
        used = len(self.seen) * self.size
        addrs[:used] = self.addrs[:used]
        self.records = memoryview((_RECORD_TYPES[self.size] * capacity).from_buffer(addrs))
        self.addrs = addrs

    def drop_last(self) -> None:
        """Forget the last peer (its address bytes stay, unused)."""
        del self.ids[-ID:]
        self.seen.pop()

class TrackedSwarm:
    """The tracker's record of one torrent: its peers by kind, the id table, the number of
    completed downloads, and when its next sweep of expired peers is due."""

    __slots__ = ("buckets", "count", "downloaded", "floor", "next_sweep", "table")

    def __init__(self, next_sweep: float) -> None:
        self.buckets: list[Bucket | None] = [None, None, None, None]
        self.table = array("I", bytes(4 * _MIN_TABLE))
        self.count = 0
        self.downloaded = 0
        self.next_sweep = next_sweep
        self.floor = 0xFFFFFFFF  # no peer yet: nothing can be stale

    def refloor(self) -> None:
        """Make `floor` exact again: the oldest last announce of the peers left."""
        self.floor = min((min(b.seen) for b in self.buckets if b is not None),
                         default=0xFFFFFFFF)

    # -------------------------------------------------------------- counts

    def __len__(self) -> int:
        return self.count

    def size(self, kind: int) -> int:
        bucket = self.buckets[kind]
        return 0 if bucket is None else len(bucket.seen)

    @property
    def complete(self) -> int:
        _, v4, _, v6 = self.buckets
        return (0 if v4 is None else len(v4.seen)) + (0 if v6 is None else len(v6.seen))

    @property
    def incomplete(self) -> int:
        v4, _, v6, _ = self.buckets
        return (0 if v4 is None else len(v4.seen)) + (0 if v6 is None else len(v6.seen))

    def __contains__(self, peer_id: bytes) -> bool:
        return self.find(peer_id) >= 0

    # -------------------------------------------------------------- the id table

    def find(self, peer_id: bytes) -> int:
        """The table index holding `peer_id`, or ~index of the empty entry where it
        would go."""
        table = self.table
        mask = len(table) - 1
        i = hash(peer_id) & mask
        buckets = self.buckets
        while True:
            entry = table[i]
            if not entry:
                return ~i
            entry -= 1
            slot = (entry >> 2) * ID
            if buckets[entry & 3].ids[slot : slot + ID] == peer_id:  # type: ignore[union-attr]
                return i
            i = (i + 1) & mask

    def _id_at(self, entry: int) -> bytes:
        entry -= 1
        slot = (entry >> 2) * ID
        return bytes(self.buckets[entry & 3].ids[slot : slot + ID])  # type: ignore[union-attr]

    def _unlink(self, i: int) -> None:
        """Empty table entry `i`, moving later entries of its probe run back."""
        table = self.table
        mask = len(table) - 1
        hole = i
        j = i
        while True:
            j = (j + 1) & mask
            entry = table[j]
            if not entry:
                break
            home = hash(self._id_at(entry)) & mask
            # The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            if (hole < j and hole < home <= j) or (hole > j and (home > hole or home <= j)):
                continue
            table[hole] = entry
            hole = j
        table[hole] = 0

    def _grow(self) -> None:
        old = self.table
        table = array("I", bytes(8 * len(old)))
        mask = len(table) - 1
        for entry in old:
            if entry:
                i = hash(self._id_at(entry)) & mask
                while table[i]:
                    i = (i + 1) & mask
                table[i] = entry
        self.table = table

    # -------------------------------------------------------------- peers

    def add(self, where: int, peer_id: bytes, compact: bytes, seen: int, kind: int) -> None:
        """Add a peer not yet here; `where` is what `find` returned for it."""
        slot = self._append(kind, peer_id, compact, seen)
        self.table[~where] = 1 + (slot << 2 | kind)
        self.count += 1
        if 4 * self.count > 3 * len(self.table):
            self._grow()

    def _append(self, kind: int, peer_id: bytes, compact: bytes, seen: int) -> int:
        bucket = self.buckets[kind]
        if bucket is None:
            bucket = self.buckets[kind] = Bucket(ADDRESS_SIZE[kind])
        if seen < self.floor:
            self.floor = seen
        return bucket.append(peer_id, compact, seen)

    def entry(self, i: int) -> tuple[int, int]:
        """(kind, slot) of table entry `i`."""
        entry = self.table[i] - 1
        return entry & 3, entry >> 2

    def move(self, i: int, kind: int, slot: int, new_kind: int, compact: bytes,
             seen: int) -> None:
        """Move the peer at table entry `i` from (kind, slot) to bucket `new_kind`."""
        bucket = self.buckets[kind]
        assert bucket is not None
        at = slot * ID
        peer_id = bytes(bucket.ids[at : at + ID])
        new_slot = self._append(new_kind, peer_id, compact, seen)
        self.table[i] = 1 + (new_slot << 2 | new_kind)  # before the slot is reused
        self._vacate(kind, slot)

    def remove(self, i: int) -> tuple[int, int]:
        """Remove the peer at table entry `i`; its (kind, last seen)."""
        kind, slot = self.entry(i)
        bucket = self.buckets[kind]
        assert bucket is not None
        seen = bucket.seen[slot]
        self._unlink(i)
        self._vacate(kind, slot)
        self.count -= 1
        return kind, seen

    def _vacate(self, kind: int, slot: int) -> None:
        """Take `slot` out of its bucket, moving the bucket's last peer into it."""
        bucket = self.buckets[kind]
        assert bucket is not None
        last = len(bucket.seen) - 1
        size = bucket.size
        if slot != last:
            at, end = slot * ID, last * ID
            moved = bytes(bucket.ids[end : end + ID])
            bucket.ids[at : at + ID] = moved
            bucket.addrs[slot * size : slot * size + size] = bucket.addrs[
                last * size : last * size + size]
            bucket.seen[slot] = bucket.seen[last]
            self.table[self.find(moved)] = 1 + (slot << 2 | kind)
        bucket.drop_last()
        if not bucket.seen:
            self.buckets[kind] = None

    def stale(self, cutoff: int) -> list[tuple[bytes, int, int]]:
        """(peer_id, kind, last seen) of every peer last seen before `cutoff`."""
        found = []
        for kind, bucket in enumerate(self.buckets):
            if bucket is None or min(bucket.seen) >= cutoff:
                continue
            ids = bucket.ids
            found += [(bytes(ids[slot * ID : slot * ID + ID]), kind, seen)
                      for slot, seen in enumerate(bucket.seen) if seen < cutoff]
        return found

    def records(self) -> Iterator[tuple[bytes, bytes, bool, int]]:
        """(peer_id, compact address, seed, last seen) of every peer."""
        for kind, bucket in enumerate(self.buckets):
            if bucket is None:
                continue
            size = bucket.size
            for slot, seen in enumerate(bucket.seen):
                yield (bytes(bucket.ids[slot * ID : slot * ID + ID]),
                       bytes(bucket.addrs[slot * size : slot * size + size]),
                       bool(kind & 1), seen)
