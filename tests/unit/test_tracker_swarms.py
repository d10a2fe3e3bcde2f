"""The tracker's swarm store: peer selection, expiry, limits, scrape and saved state."""

from __future__ import annotations

import json
import math
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.trackerwire import compact
from tracker import snapshot
from tracker.errors import AnnounceRefused, BadRequest, RequestError, StateError
from tracker.pages import metrics_text
from tracker.store.base import PackedOutcome
from tracker.store.memory import WANT_V4, WANT_V6, SwarmStore

H1 = bytes(range(20))
H2 = bytes(range(1, 21))


def pid(n: int) -> bytes:
    return b"-XX0001-" + n.to_bytes(12, "big")


def ann(store: SwarmStore, n: int, *, left: int = 100, event: str = "", now: float = 0.0,
        numwant: int = -1, ip: str | None = None, port: int | None = None,
        info_hash: bytes = H1, **kw: object):  # type: ignore[no-untyped-def]
    return store.announce(
        info_hash, pid(n), ip or f"10.0.{n // 256}.{n % 256}", port or 6881 + n % 1000,
        0, 0, left, event, numwant, now, with_ids=True, **kw,  # type: ignore[arg-type]
    )


def ids4(r: PackedOutcome) -> list[bytes]:
    return [r.ids4[i:i + 20] for i in range(0, len(r.ids4), 20)]


def ids(r: PackedOutcome) -> list[bytes]:
    return ids4(r) + [r.ids6[i:i + 20] for i in range(0, len(r.ids6), 20)]


def test_peers_are_returned_but_never_yourself() -> None:
    store = SwarmStore(rng=random.Random(1))
    assert ann(store, 1).peers4 == b""
    r = ann(store, 2)
    assert r.addresses4() == [("10.0.0.1", 6882)]
    assert ids4(r) == [pid(1)]
    assert (r.complete, r.incomplete, r.interval, r.min_interval) == (0, 2, 1800, 60)
    for _ in range(5):
        assert pid(3) not in ids4(ann(store, 3))


def test_seed_gets_no_seeds_leecher_gets_both() -> None:
    store = SwarmStore()
    ann(store, 1, left=0)
    ann(store, 2, left=0)
    ann(store, 3, left=5)
    seed = ann(store, 1, left=0)
    assert ids4(seed) == [pid(3)]
    leech = ann(store, 3, left=5)
    assert sorted(ids4(leech)) == [pid(1), pid(2)]
    assert (leech.complete, leech.incomplete) == (2, 1)
    # A partial seed (BEP 21 paused) is not sent seeds either.
    paused = ann(store, 4, left=5, event="paused")
    assert ids4(paused) == [pid(3)]


def test_numwant_default_and_clamp() -> None:
    store = SwarmStore(rng=random.Random(7))
    for n in range(300):
        ann(store, n)
    assert len(ids4(ann(store, 0))) == 50
    assert len(ann(store, 0, numwant=10).addresses4()) == 10
    assert ann(store, 0, numwant=0).peers4 == b""
    big = ids4(ann(store, 0, numwant=10**9))
    assert len(big) == 200
    assert len(set(big)) == 200 and pid(0) not in big


def test_selection_is_random() -> None:
    store = SwarmStore(rng=random.Random(3))
    for n in range(100):
        ann(store, n)
    seen = set()
    for _ in range(20):
        seen.update(ids4(ann(store, 0, numwant=5)))
    assert len(seen) > 40


def test_stopped_removes_at_once_and_completed_counts() -> None:
    store = SwarmStore()
    ann(store, 1)
    ann(store, 2)
    ann(store, 1, left=0, event="completed")
    ann(store, 1, left=0, event="completed")  # a repeat does not count twice
    assert store.scrape([H1, H2]) == {H1: (1, 1, 1), H2: (0, 0, 0)}
    r = ann(store, 2, event="stopped")
    assert r.peers4 == b"" and (r.complete, r.incomplete) == (1, 0)
    assert ann(store, 3).addresses4() == [("10.0.0.1", 6882)]
    assert store.scrape([H1])[H1] == (1, 1, 1)
    assert ann(store, 9, event="stopped", info_hash=H2).peers4 == b""
    assert store.get_swarm(H2) is None


def test_reannounce_updates_address_and_state() -> None:
    store = SwarmStore()
    ann(store, 1, ip="10.1.1.1", port=1000)
    ann(store, 1, ip="10.2.2.2", port=2000, left=0)
    r = ann(store, 2)
    assert r.addresses4() == [("10.2.2.2", 2000)]
    assert (r.complete, r.incomplete) == (1, 1)
    assert (store.seeders, store.leechers, store.torrents) == (1, 1, 1)


def test_ipv6_and_mapped_addresses() -> None:
    store = SwarmStore()
    ann(store, 1, ip="2001:db8::1", port=7000)
    ann(store, 2, ip="::ffff:192.0.2.7", port=7001)
    r = ann(store, 3)
    assert r.addresses6() == [("2001:db8::1", 7000)]
    assert r.addresses4() == [("192.0.2.7", 7001)]
    assert len(r.peers6) == 18 and len(r.peers4) == 6
    assert ann(store, 3, families=WANT_V4).addresses6() == []
    assert ann(store, 3, families=WANT_V6).addresses4() == []


def test_expiry_lazy_and_explicit() -> None:
    store = SwarmStore(interval=100)
    ann(store, 1, now=0)
    ann(store, 2, now=150)
    # 1 is silent for more than two intervals: never handed out again.
    r = ann(store, 3, now=201)
    assert r.addresses4() == [("10.0.0.2", 6883)]
    assert store.get_swarm(H1) is not None and pid(1) not in store.get_swarm(H1)  # type: ignore[operator]
    assert store.expire(now=500) == 2
    assert store.peers == 0
    assert store.torrents == 1  # the empty swarm keeps its counts for a while
    store.expire(now=500 + 201)
    assert store.torrents == 0


def test_limits_refuse_instead_of_growing() -> None:
    store = SwarmStore(max_torrents=2, max_peers_per_torrent=3)
    for n in range(3):
        ann(store, n)
    with pytest.raises(AnnounceRefused, match="swarm is full") as exc:
        ann(store, 3)
    assert exc.value.kind == "swarm_full"
    ann(store, 0)  # known peers still re-announce
    ann(store, 0, info_hash=H2)
    with pytest.raises(AnnounceRefused, match="tracker is full"):
        ann(store, 0, info_hash=b"\x09" * 20)
    # An empty swarm makes room for a new torrent.
    ann(store, 0, info_hash=H2, event="stopped")
    ann(store, 0, info_hash=b"\x09" * 20)
    assert store.torrents == 2


def test_total_peer_limit_evicts_the_stalest_peers() -> None:
    store = SwarmStore(max_peers=200)
    for n in range(100):
        ann(store, n, now=float(n))  # peer n last seen at n s
    for n in range(100):
        ann(store, 100 + n, now=100.0 + n, info_hash=H2)
    ann(store, 0, now=300.0)  # a re-announce: no eviction, peer 0 is fresh again
    assert store.peers == 200 and store.evicted == 0
    ann(store, 500, now=301.0)  # a new peer: the stalest 1% (2 peers) go first
    assert store.peers == 199 and store.evicted == 2
    swarm = store.get_swarm(H1)
    assert swarm is not None
    assert pid(1) not in swarm and pid(2) not in swarm
    assert pid(0) in swarm and pid(3) in swarm and pid(500) in swarm
    assert store.stats()["evicted"] == 2
    assert "btfs_tracker_evicted_total 2\n" in metrics_text(store.stats(), 0).decode()
    assert store.scrape([H1, H2]) == {H1: (0, 0, 99), H2: (0, 0, 100)}


def test_whitelist() -> None:
    store = SwarmStore(whitelist={H1})
    ann(store, 1)
    with pytest.raises(AnnounceRefused) as exc:
        ann(store, 1, info_hash=H2)
    assert exc.value.kind == "not_whitelisted"
    store.set_whitelist({H2})
    assert store.torrents == 0 and store.peers == 0
    ann(store, 1, info_hash=H2)
    store.set_whitelist(None)
    ann(store, 1)
    assert store.torrents == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"info_hash": b"short"}, "info_hash"),
        ({"peer_id": b"x"}, "peer_id"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"left": -1}, "negative"),
        ({"event": "bogus"}, "event"),
        ({"ip": "not-an-ip"}, "ip"),
    ],
)
def test_bad_requests(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "info_hash": H1, "peer_id": pid(1), "ip": "10.0.0.1", "port": 1, "uploaded": 0,
        "downloaded": 0, "left": 0, "event": "", "numwant": 5, "now": 0.0,
    }
    args.update(kwargs)
    with pytest.raises(BadRequest, match=message):
        SwarmStore().announce(**args)  # type: ignore[arg-type]


def test_counters() -> None:
    store = SwarmStore()
    ann(store, 1, protocol="udp")
    ann(store, 2, left=0)
    store.scrape_all()
    store.count_error("bad_request")
    s = store.stats()
    assert s["announces"] == {"http": 1, "udp": 1}
    assert s["scrapes"]["http"] == 1
    assert s["errors"]["bad_request"] == 1
    assert (s["torrents"], s["seeders"], s["leechers"], s["peers"]) == (1, 1, 1, 2)
    assert store.scrape_all() == {H1: (1, 0, 1)}


def test_state_round_trip_drops_expired() -> None:
    store = SwarmStore(interval=100)
    ann(store, 1, now=0)
    ann(store, 2, now=150, left=0, event="completed")
    ann(store, 3, now=150, ip="2001:db8::3")
    data = json.loads(json.dumps(snapshot.dump(store)))
    loaded = snapshot.load(data, now=250, interval=100)
    assert loaded.scrape([H1])[H1] == (1, 1, 1)
    r = ann(loaded, 4, now=250)
    assert r.addresses4() == [("10.0.0.2", 6883)]
    assert r.addresses6() == [("2001:db8::3", 6884)]
    # Whitelist and limits apply to what is loaded.
    assert snapshot.load(data, now=250, whitelist={H2}).torrents == 0


@pytest.mark.parametrize(
    "data",
    [None, [], {"format": "x"}, {"format": "btfs-tracker-state", "version": 1, "torrents": 3},
     {"format": "btfs-tracker-state", "version": 1, "torrents": {"zz": {}}},
     {"format": "btfs-tracker-state", "version": 1,
      "torrents": {H1.hex(): {"downloaded": 0, "peers": [["00", "00", 0, 0]]}}},
     {"format": "btfs-tracker-state", "version": 1,
      "torrents": {H1.hex(): {"downloaded": 0, "peers": [[1, 2]]}}},
     *(json.loads(json.dumps(
         {"format": "btfs-tracker-state", "version": 1,
          "torrents": {H1.hex(): {"downloaded": 0,
                                  "peers": [[pid(1).hex(), "0102030405ff", 0, number]]}}}))
       for number in (math.nan, math.inf, -math.inf))],
)
def test_bad_state(data: object) -> None:
    with pytest.raises(StateError):
        snapshot.load(data, now=0)


def test_compact_addresses() -> None:
    assert compact.pack("1.2.3.4", 0x1A2B) == b"\x01\x02\x03\x04\x1a\x2b"
    assert compact.unpack(compact.pack("::1", 80)) == ("::1", 80)
    assert compact.pack("::ffff:1.2.3.4", 1) == b"\x01\x02\x03\x04\x00\x01"
    for bad_ip in ("1.2.3", "01.2.3.4", "::1%lo", "", "x"):
        with pytest.raises(ValueError, match="invalid ip address"):
            compact.pack(bad_ip, 1)
    for bad_port in (0, 65536):
        with pytest.raises(ValueError, match="invalid port"):
            compact.pack("1.2.3.4", bad_port)
    entries = compact.pack("1.2.3.4", 1) + b"\5\6\7\x08\0\0" + compact.pack("9.9.9.9", 2)
    assert compact.decode_peers(entries, 6) == [("1.2.3.4", 1), ("9.9.9.9", 2)]  # port 0 left out
    with pytest.raises(ValueError):
        compact.decode_peers(entries[:-1], 6)


def test_memory_per_peer_is_small() -> None:
    store = SwarmStore(max_peers_per_torrent=100_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):
            store.announce(H1, pid(n), "", 0, 0, 0, 1, "", 0, 0.0,
                           compact=n.to_bytes(4, "big") + b"\x1a\xe1")
        per_peer = (tracemalloc.get_traced_memory()[0] - before) / 20_000
    finally:
        tracemalloc.stop()
    print(f"{per_peer:.0f} bytes per peer")
    assert per_peer < 64, per_peer  # packed records (tracker.store.packed)


_events = st.sampled_from(["", "started", "completed", "stopped", "paused", "bad"])
_ints = st.one_of(st.integers(-5, 5), st.integers(-(2**70), 2**70))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=19, max_size=21),
            st.integers(0, 5),
            st.text(max_size=8) | st.sampled_from(["1.2.3.4", "::1", "::ffff:1.1.1.1", "fe::1%lo"]),
            st.integers(-1, 70000), _ints, _ints, _ints, _events, _ints,
            st.floats(0, 10_000, allow_nan=False),
        ),
        max_size=30,
    )
)
def test_random_announces_raise_only_tracker_errors(calls: list[tuple]) -> None:  # type: ignore[type-arg]
    store = SwarmStore(interval=100, max_torrents=3, max_peers_per_torrent=4, whitelist=None)
    for info_hash, n, ip, port, up, down, left, event, numwant, now in calls:
        try:
            r = store.announce(info_hash[:20] if len(info_hash) == 21 else info_hash, pid(n),
                               ip, port, up, down, left, event, numwant, now, with_ids=True)
        except RequestError:
            continue
        assert len(r.addresses4()) + len(r.addresses6()) <= 4
        assert pid(n) not in ids(r)
    store.expire(20_000)
    assert store.peers == 0
    data = snapshot.dump(store)
    snapshot.load(json.loads(json.dumps(data)), now=0)


def _selection_oracle(store: SwarmStore, swarm: object, rng: random.Random, my_kind: int,
                      my_slot: int, numwant: int, want_seeds: bool, families: int,
                      now: float) -> tuple[bytes, bytes, bytes, bytes, list[bytes]]:
    """Peer selection written the plain way: the candidate buckets as one sequence, `want`
    positions start + j * step around it (all of them if it is short), in bucket order,
    the asking peer and expired peers left out, the first `numwant` handed out; and the
    ids of the expired peers met, which the store then drops."""
    from tracker.store.memory import _CANDIDATES
    from tracker.store.packed import ID

    numwant = 50 if numwant < 0 else min(numwant, 200)
    if not numwant:
        return b"", b"", b"", b"", []
    buckets = swarm.buckets  # type: ignore[attr-defined]
    seq = [(kind, slot) for kind in _CANDIDATES[families & 3][want_seeds]
           if buckets[kind] is not None for slot in range(len(buckets[kind].seen))]
    total = len(seq)
    if not total:
        return b"", b"", b"", b"", []
    want = numwant + 1
    if total <= want:
        positions = list(range(total))
    else:
        step = total // want
        start = min(int(rng.random() * total), total - 1)
        positions = [(start + j * step) % total for j in range(want)]
    chosen = sorted((seq[p] for p in positions), key=lambda ks: _CANDIDATES[families & 3][
        want_seeds].index(ks[0]))
    cutoff = now - store.ttl
    out: list[list[bytes]] = [[], [], [], []]
    stale = []
    budget = numwant
    for kind, slot in chosen:
        bucket = buckets[kind]
        peer_id = bytes(bucket.ids[slot * ID:(slot + 1) * ID])
        if bucket.seen[slot] < cutoff:
            stale.append(peer_id)
            continue
        if (kind, slot) == (my_kind, my_slot) or not budget:
            continue
        budget -= 1
        size = bucket.size
        out[kind >> 1].append(bytes(bucket.addrs[slot * size:(slot + 1) * size]))
        out[2 + (kind >> 1)].append(peer_id)
    return (b"".join(out[0]), b"".join(out[1]), b"".join(out[2]), b"".join(out[3]), stale)


@settings(max_examples=300, deadline=None)
@given(
    peers=st.lists(st.tuples(st.integers(0, 400), st.booleans(), st.booleans(),
                             st.integers(0, 5000)), max_size=120),
    numwant=st.sampled_from([-1, 0, 1, 2, 3, 5, 10, 50, 200, 500]),
    families=st.sampled_from([WANT_V4, WANT_V6, WANT_V4 | WANT_V6]),
    want_seeds=st.booleans(), asker=st.integers(0, 10**6), with_ids=st.booleans(),
    now=st.integers(0, 9000), seed=st.integers(0, 2**32),
)
def test_selection_matches_the_plain_description(
        peers: list[tuple[int, bool, bool, int]], numwant: int, families: int,
        want_seeds: bool, asker: int, with_ids: bool, now: int, seed: int) -> None:
    """Every path of the selection (one run or a wrapped one, the asker among the chosen or
    not, expired peers met, one family or both, with or without ids) gives what the plain
    description gives, in the same order, and drops the expired peers it met."""
    store = SwarmStore(interval=1800, rng=random.Random(seed))
    for n, seed_peer, v6, when in peers:
        ip = f"2001:db8::{n:x}" if v6 else f"10.0.{n // 256}.{n % 256}"
        store.announce(H1, pid(n), ip, 6881, 0, 0, 0 if seed_peer else 5, "", 0, when)
    swarm = store._torrents.get(H1)
    if swarm is None:
        return
    where = swarm.find(pid(peers[asker % len(peers)][0]))  # usually still there
    my_kind, my_slot = swarm.entry(where) if where >= 0 else (-1, -1)
    rng = random.Random()
    rng.setstate(store.rng.getstate())
    expected = _selection_oracle(store, swarm, rng, my_kind, my_slot, numwant, want_seeds,
                                 families, now)
    got = store._select(H1, swarm, my_kind, my_slot, numwant, want_seeds, families, now,
                        with_ids)
    assert got[:2] == expected[:2]
    assert got[2:] == (expected[2:4] if with_ids else (b"", b""))
    for peer_id in expected[4]:
        assert swarm.find(peer_id) < 0
