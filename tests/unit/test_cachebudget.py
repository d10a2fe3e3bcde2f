"""The bounded cache's policy: least recently read first, pins respected, reservations."""

from __future__ import annotations

import pytest

from btfs.cachebudget import CacheBudget, kept_order


def never(key: object) -> bool:
    return False


def test_evicts_least_recently_read_first_to_stay_within_the_limit() -> None:
    budget: CacheBudget[int] = CacheBudget(300)
    for piece in range(3):
        assert budget.make_room(piece, 100, never) == []
    budget.read([0])  # 1 is now the least recently read, then 2, then 0
    assert budget.make_room(3, 100, never) == [1]
    assert budget.make_room(4, 150, never) == [2, 0]
    assert budget.used == 250 and budget.stored() == [3, 4]


def test_pinned_pieces_stay_and_the_excess_is_only_what_is_being_written() -> None:
    budget: CacheBudget[int] = CacheBudget(200)
    budget.make_room(0, 100, never)
    budget.make_room(1, 100, never)
    pinned = {0, 1}
    assert budget.make_room(2, 100, pinned.__contains__) == []
    assert budget.used == 300  # over by the piece in flight
    assert budget.make_room(3, 100, lambda k: k in {1}) == [0, 2]
    assert budget.used == 200


def test_restored_pieces_count_as_least_recent_and_trim_to_a_smaller_limit() -> None:
    budget: CacheBudget[int] = CacheBudget(250)
    budget.make_room(9, 100, never)
    for piece in (2, 1):
        budget.add(piece, 100)
    assert budget.stored() == [1, 2, 9]
    assert budget.over_limit(0, never) == [1]
    budget.add(1, 100)
    budget.add(1, 100)  # twice: counted once
    assert budget.used == 300


def test_free_remove_and_bad_limits() -> None:
    budget: CacheBudget[tuple[int, int]] = CacheBudget(1000)
    for piece in range(5):
        budget.make_room((7, piece), 100, never)
    assert budget.free(150, lambda k: k == (7, 0)) == [(7, 1), (7, 2)]
    budget.remove((7, 3))
    budget.remove((7, 3))
    assert budget.used == 200 and (7, 4) in budget and len(budget) == 2
    assert budget.free(0, never) == []
    with pytest.raises(ValueError):
        CacheBudget(0)


def test_kept_order_puts_unread_pieces_first_then_the_saved_order() -> None:
    assert kept_order({1, 2, 5, 9}, [9, 5, 9, 40, 2]) == [1, 9, 5, 2]
    assert kept_order({3, 1}, []) == [1, 3]
    assert kept_order(set(), [1, 2]) == []


def test_a_budget_restored_in_kept_order_evicts_the_least_recently_read_first() -> None:
    budget: CacheBudget[int] = CacheBudget(2)
    for piece in reversed(kept_order({0, 1, 2, 3}, [3, 0, 2])):
        budget.add(piece, 1)
    assert budget.over_limit(0, lambda key: False) == [1, 3]
    assert budget.stored() == [0, 2]
