"""The packed swarm (tracker.store.packed): its id table and columns agree with a plain
dict model through any sequence of adds, moves and removes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.store.packed import ADDRESS_SIZE, TrackedSwarm

# (peer number, kind or -1 to remove, address byte, time)
_ops = st.lists(st.tuples(st.integers(0, 40), st.integers(-1, 3), st.integers(0, 255),
                          st.integers(0, 1000)), max_size=300)


def pid(n: int) -> bytes:
    return b"-PK0001-" + n.to_bytes(12, "big")


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_packed_swarm_matches_a_dict(ops: list[tuple[int, int, int, int]]) -> None:
    swarm = TrackedSwarm(0.0)
    model: dict[bytes, tuple[int, bytes, int]] = {}  # id -> kind, address, seen
    for n, kind, byte, seen in ops:
        peer_id = pid(n)
        where = swarm.find(peer_id)
        assert (where >= 0) == (peer_id in model)
        if kind < 0:
            if where >= 0:
                assert swarm.remove(where) == (model[peer_id][0], model[peer_id][2])
                del model[peer_id]
            continue
        address = bytes([byte]) * ADDRESS_SIZE[kind]
        if where < 0:
            swarm.add(where, peer_id, address, seen, kind)
        else:
            old_kind, slot = swarm.entry(where)
            assert old_kind == model[peer_id][0]
            if old_kind == kind:
                bucket = swarm.buckets[kind]
                assert bucket is not None
                bucket.addrs[slot * bucket.size:(slot + 1) * bucket.size] = address
                bucket.seen[slot] = seen
            else:
                swarm.move(where, old_kind, slot, kind, address, seen)
        model[peer_id] = (kind, address, seen)
        assert len(swarm) == len(model)
    records = {peer_id: (int(seed) | (2 if len(addr) == 18 else 0), addr, seen)
               for peer_id, addr, seed, seen in swarm.records()}
    assert records == model
    for peer_id in model:
        assert peer_id in swarm
    assert sum(swarm.size(k) for k in range(4)) == len(model)
    assert sorted(swarm.stale(500)) == sorted(
        (peer_id, k, seen) for peer_id, (k, _, seen) in model.items() if seen < 500)
    assert 4 * len(swarm) <= 3 * len(swarm.table)
    for bucket in swarm.buckets:  # the strided view reads what the column holds
        if bucket is not None:
            n = len(bucket)
            assert bucket.records[:n].tobytes() == bytes(bucket.addrs[: n * bucket.size])
            assert bucket.records[1:n:3].tobytes() == b"".join(
                bytes(bucket.addrs[i * bucket.size:(i + 1) * bucket.size])
                for i in range(1, n, 3))
