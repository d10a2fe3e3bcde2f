"""Announced peers and tokens (pure): expiry, bounds, rotation."""

from __future__ import annotations

import random

from btfs.dht.storage import (
    ANSWER_PEERS,
    PEER_TTL,
    TOKEN_ROTATE,
    PeerStore,
    Tokens,
)

H1, H2, H3 = b"1" * 20, b"2" * 20, b"3" * 20


def peer(n: int) -> bytes:
    return bytes([10, 0, n >> 8 & 255, n & 255]) + (6881).to_bytes(2, "big")


def test_peers_expire_thirty_minutes_after_their_last_announce() -> None:
    store = PeerStore()
    rng = random.Random(0)
    store.announce(H1, peer(1), 0.0)
    store.announce(H1, peer(2), 100.0)
    assert sorted(store.peers(H1, PEER_TTL - 1, rng)) == [peer(1), peer(2)]
    assert store.peers(H1, PEER_TTL, rng) == [peer(2)]
    store.announce(H1, peer(2), PEER_TTL)          # renewed
    assert store.expire(PEER_TTL + 200) == 1 and store.total == 1
    assert store.expire(2 * PEER_TTL + 1) == 1 and store.total == 0 and len(store) == 0


def test_answers_are_a_bounded_sample_of_one_address_size() -> None:
    store = PeerStore()
    rng = random.Random(0)
    for n in range(200):
        store.announce(H1, peer(n), 1.0)
    store.announce(H1, bytes(16) + b"\x00\x01", 1.0)
    sample = store.peers(H1, 2.0, rng)
    assert len(sample) == ANSWER_PEERS and len(set(sample)) == ANSWER_PEERS
    assert all(len(p) == 6 for p in sample)
    assert store.peers(H1, 2.0, rng, size=18) == [bytes(16) + b"\x00\x01"]
    assert store.peers(H2, 2.0, rng) == []


def test_a_full_swarm_drops_its_oldest_and_a_full_store_refuses_new_hashes() -> None:
    store = PeerStore(per_hash=3, hashes=2, total=5)
    rng = random.Random(0)
    for n in range(4):
        assert store.announce(H1, peer(n), float(n))
    assert sorted(store.peers(H1, 5.0, rng)) == [peer(1), peer(2), peer(3)]
    assert store.announce(H2, peer(9), 5.0) and store.announce(H2, peer(10), 5.0)
    assert not store.announce(H3, peer(11), 5.0)        # too many info-hashes
    assert store.announce(H2, peer(12), 5.0)             # total full: H2 drops its oldest
    assert store.total == 5 and sorted(store.peers(H2, 6.0, rng)) == [peer(10), peer(12)]


def test_a_token_is_bound_to_the_ip_and_lives_five_to_ten_minutes() -> None:
    tokens = Tokens(random.Random(1), 0.0)
    t = tokens.make("10.0.0.1", 10.0)
    assert tokens.check(t, "10.0.0.1", 10.0)
    assert not tokens.check(t, "10.0.0.2", 10.0)
    assert tokens.check(t, "10.0.0.1", TOKEN_ROTATE + 1)          # previous secret
    fresh = tokens.make("10.0.0.1", TOKEN_ROTATE + 1)
    assert fresh != t
    assert not tokens.check(t, "10.0.0.1", 2 * TOKEN_ROTATE + 2)   # two rotations later
    assert tokens.check(fresh, "10.0.0.1", 2 * TOKEN_ROTATE + 2)
    assert not tokens.check(fresh, "10.0.0.1", 10 * TOKEN_ROTATE)  # long silence
