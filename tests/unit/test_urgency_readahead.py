"""The read path's pure decisions: preempting, spreading a read's blocks, read-ahead."""

from __future__ import annotations

from btfs.readahead import MEDIA_TAIL, SEEK_WINDOW, Readers, tail_key
from btfs.urgency import PREEMPT_AFTER, spread, worth_preempting

BLOCK = 16384


def test_preempt_only_queues_that_would_hold_a_read_up() -> None:
    assert not worth_preempting(0, 1e6)
    assert worth_preempting(BLOCK, 0.0)  # an unmeasured peer: cancel
    rate = 1 << 20
    assert not worth_preempting(int(rate * PREEMPT_AFTER / 2), rate)
    assert worth_preempting(int(rate * PREEMPT_AFTER * 2), rate)


def test_blocks_go_by_expected_arrival() -> None:
    assert spread([], [], 10, BLOCK) == []
    assert spread([1e6, 1e6], [0, 0], 10, BLOCK) == [5, 5]
    assert spread([2e6, 1e6], [0, 0], 30, BLOCK) == [20, 10]
    # a peer with a long queue gets nothing until the others have caught up with it
    assert spread([1e6, 1e6], [10 * BLOCK, 0], 6, BLOCK) == [0, 6]
    assert sum(spread([0.0, 3e5, 5e6], [BLOCK, 0, 40 * BLOCK], 57, BLOCK)) == 57


def test_the_window_doubles_while_sequential_and_restarts_at_a_seek() -> None:
    readers = Readers(readahead=16 << 20, total_length=1 << 30)
    state, window = readers.advance(1, 0, 128 << 10)
    assert state.sequential_reads == 0 and window == (1, 128 << 10, SEEK_WINDOW)
    _, window = readers.advance(1, 128 << 10, 128 << 10)
    assert window == (1, 256 << 10, 2 * SEEK_WINDOW)
    _, window = readers.advance(1, 256 << 10, 128 << 10)
    assert window is not None and window[2] == 16 << 20  # capped at --readahead
    state, window = readers.advance(1, 500 << 20, 4096)
    assert state.sequential_reads == 0 and window == (1, (500 << 20) + 4096, SEEK_WINDOW)


def test_a_media_file_asks_for_its_head_and_tail_at_open() -> None:
    readers = Readers(readahead=8 << 20, total_length=1 << 30)
    windows = readers.open(3, 0, "Film.MKV", 1000, 100 << 20)
    assert windows == [(3, 1000, SEEK_WINDOW),
                       (tail_key(3), 1000 + (100 << 20) - MEDIA_TAIL, MEDIA_TAIL)]
    assert readers.open(4, 1, "notes.txt", 0, 100) == []
    assert readers.close(3) == [3, tail_key(3)] and readers.close(3) == []
    assert Readers(readahead=0, total_length=10).open(5, 0, "a.mp4", 0, 10) == []
