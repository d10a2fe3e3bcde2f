"""Whom to dial, when, and with what (pure): back-off, plain/MSE alternation, flapping peers."""

from __future__ import annotations

import random

from btfs.peerbook import (
    FLAP_PENALTY,
    FLAPS_ALLOWED,
    RETRY_AFTER_SESSION,
    RETRY_FIRST,
    RETRY_MAX,
    SHORT_SESSION,
    PeerBook,
)

A = ("127.0.0.2", 6881)
B = ("127.0.0.3", 6881)


def book(*addresses: tuple[str, int]) -> PeerBook:
    b = PeerBook(random.Random(1))
    b.add(addresses)
    return b


def test_a_candidate_is_due_once_until_its_dial_ends() -> None:
    b = book(A)
    assert b.due(0.0, 5) == [(A, False)]
    assert b.due(0.0, 5) == []  # being dialled
    b.dial_ended(A, True, False, 10.0)
    assert b.due(10.0 + RETRY_AFTER_SESSION - 0.1, 5) == []
    assert b.due(10.0 + RETRY_AFTER_SESSION, 5) == [(A, False)]


def test_a_failed_plain_dial_is_retried_encrypted_soon_then_plain_with_back_off() -> None:
    b = book(A)
    now = 0.0
    tries = []
    for _ in range(6):
        [(address, encrypted)] = b.due(now, 1)
        tries.append(encrypted)
        retry = b.dial_ended(address, False, encrypted, now)
        assert b.due(retry - 0.01, 1) == []
        now = retry
    assert tries == [False, True, False, True, False, True]
    assert b.dial_ended(A, False, True, now) - now == RETRY_MAX


def test_back_off_grows_three_times_and_resets_after_a_session() -> None:
    b = book(A)
    delays = []
    now = 0.0
    for _ in range(5):
        b.due(now, 1)
        retry = b.dial_ended(A, False, True, now)
        delays.append(retry - now)
        now = retry
    assert delays[:4] == [RETRY_FIRST, RETRY_FIRST * 3, RETRY_FIRST * 9, RETRY_FIRST * 27]
    b.due(now, 1)
    assert b.dial_ended(A, True, True, now) - now == RETRY_AFTER_SESSION


def test_skip_count_and_known_seeds() -> None:
    b = book(A, B)
    assert b.due(0.0, 5, skip=[A]) == [(B, False)]
    b.known_seeds.add(A)
    assert b.due(0.0, 5, complete=True) == []
    assert b.due(0.0, 5) == [(A, False)]


def test_banned_hosts_are_dropped_and_never_added_again() -> None:
    b = book(A, B)
    assert b.ban(A[0]) and not b.ban(A[0])
    assert A not in b.candidates
    b.add([A, ("127.0.0.9", 0), ("127.0.0.9", 70000)])
    assert b.candidates == {B}
    assert b.refused(A[0], 0.0) and not b.refused(B[0], 0.0)


def test_a_peer_that_keeps_closing_quickly_is_refused_for_a_growing_time() -> None:
    b = book(A)
    host = A[0]
    now = 100.0
    for _ in range(FLAPS_ALLOWED):
        b.session_ended(host, 1.0, True, now)
        now += 1
    assert not b.refused(host, now)
    b.session_ended(host, 1.0, True, now)
    assert b.refused(host, now)
    assert b.due(now, 5) == []
    assert not b.refused(host, now + FLAP_PENALTY)
    now += FLAP_PENALTY
    for _ in range(FLAPS_ALLOWED + 1):
        b.session_ended(host, 1.0, True, now)
    assert b.refused(host, now + FLAP_PENALTY)  # the second penalty is twice as long
    assert not b.refused(host, now + 2 * FLAP_PENALTY)


def test_long_sessions_and_our_own_disconnects_are_not_flaps() -> None:
    b = book(A)
    for i in range(20):
        b.session_ended(A[0], SHORT_SESSION, True, float(i))
        b.session_ended(A[0], 0.5, False, float(i))
    assert not b.refused(A[0], 20.0)


def test_candidates_stay_bounded() -> None:
    b = PeerBook(random.Random(2))
    b.add((f"10.0.{i // 250}.{i % 250}", 6881) for i in range(5000))
    assert len(b.candidates) <= 2000
