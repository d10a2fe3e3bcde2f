"""Block choice: rarest first, deadlines, read-ahead, timeouts, urgent copies, endgame."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.bitfield import Bitfield
from btfs.picker import BLOCK_SIZE, ENDGAME_COPIES, Block, Picker, Priority, Received

B = BLOCK_SIZE
A_, B_, C_, D_ = b"peer-a", b"peer-b", b"peer-c", b"peer-d"


def make(
    num_pieces: int,
    blocks_per_piece: int = 2,
    last: int | None = None,
    **kwargs: float,
) -> Picker:
    """A picker of `num_pieces` pieces of `blocks_per_piece` 16 KiB blocks; the last piece
    is `last` bytes long if given."""
    piece_length = blocks_per_piece * B
    if last is None:
        last = piece_length
    total = piece_length * (num_pieces - 1) + last
    return Picker(num_pieces, piece_length, total, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]


def all_blocks(picker: Picker, piece: int) -> list[Block]:
    return [picker.block(piece, i) for i in range(picker.blocks_in(piece))]


def pieces_of(blocks: list[Block]) -> list[int]:
    """The pieces of `blocks` in the order they first appear."""
    out: list[int] = []
    for b in blocks:
        if b.piece not in out:
            out.append(b.piece)
    return out


def receive_all(picker: Picker, key: bytes, blocks: list[Block]) -> list[Received]:
    return [picker.block_received(key, b) for b in blocks]


# Geometry ----------------------------------------------------------------------------


def test_block_size_is_16_kib() -> None:
    assert BLOCK_SIZE == 16384


def test_blocks_and_short_last_block_of_last_piece() -> None:
    picker = Picker(3, 4 * B, 2 * 4 * B + 20000)
    assert [picker.blocks_in(p) for p in range(3)] == [4, 4, 2]
    assert [picker.piece_size(p) for p in range(3)] == [4 * B, 4 * B, 20000]
    assert all_blocks(picker, 0) == [Block(0, i * B, B) for i in range(4)]
    assert all_blocks(picker, 2) == [Block(2, 0, B), Block(2, B, 20000 - B)]


def test_piece_length_not_a_multiple_of_the_block() -> None:
    picker = Picker(2, 40000, 80000)
    assert all_blocks(picker, 0) == [Block(0, 0, B), Block(0, B, B), Block(0, 2 * B, 40000 - 2 * B)]
    assert all_blocks(picker, 1) == [Block(1, 0, B), Block(1, B, B), Block(1, 2 * B, 40000 - 2 * B)]


def test_tiny_last_piece() -> None:
    picker = make(3, 2, last=1)
    assert all_blocks(picker, 2) == [Block(2, 0, 1)]


def test_picking_everything_covers_the_torrent_exactly() -> None:
    picker = Picker(5, 3 * B, 4 * 3 * B + 12345, rng=random.Random(3))
    picker.peer_bitfield(range(5))
    blocks = picker.pick(A_, range(5), 1000, 0.0)
    assert len(blocks) == len(set(blocks)) == 3 * 4 + 1
    assert sum(b.length for b in blocks) == picker.total_length
    for b in blocks:
        assert b.begin % B == 0
        assert 0 < b.length <= B
        assert b.begin + b.length <= picker.piece_size(b.piece)


# Basic choice --------------------------------------------------------------------------


def test_count_zero_or_negative_gives_nothing() -> None:
    picker = make(4)
    assert picker.pick(A_, range(4), 0, 0.0) == []
    assert picker.pick(A_, range(4), -3, 0.0) == []
    assert picker.in_progress == {}


def test_count_is_respected() -> None:
    picker = make(4, 4)
    for n in (1, 3, 5):
        assert len(picker.pick(A_ + bytes([n]), range(4), n, 0.0)) == n


def test_peer_only_asked_for_pieces_it_has() -> None:
    picker = make(10, 2)
    has = {1, 4, 9}
    picker.peer_bitfield(range(10))
    blocks = picker.pick(A_, has, 100, 0.0)
    assert {b.piece for b in blocks} == has
    assert len(blocks) == 6


def test_has_may_be_a_bitfield() -> None:
    picker = make(10, 1)
    has = Bitfield.from_indices(10, [2, 7])
    blocks = picker.pick(A_, has, 100, 0.0)
    assert sorted(b.piece for b in blocks) == [2, 7]


def test_peer_with_nothing_gets_nothing() -> None:
    picker = make(5)
    assert picker.pick(A_, set(), 10, 0.0) == []


def test_no_block_given_to_two_peers_outside_endgame() -> None:
    picker = make(10, 4)
    picker.peer_bitfield(range(10))
    seen: list[Block] = []
    for key, n in ((A_, 15), (B_, 15), (C_, 10)):
        got = picker.pick(key, range(10), n, 0.0)
        assert len(got) == n
        seen += got
    assert len(seen) == len(set(seen)) == 40


def test_wanted_and_wants_any() -> None:
    picker = make(4)
    assert picker.wants_any([0]) and picker.wanted(3)
    picker.piece_verified(0)
    assert not picker.wanted(0)
    assert not picker.wants_any([0])
    assert picker.wants_any([0, 1])
    assert not picker.wants_any([])


# Rarest first ----------------------------------------------------------------------------


def test_rarest_first() -> None:
    picker = make(4, 1)
    for _ in range(3):
        picker.peer_have(0)
    picker.peer_have(1)
    picker.peer_bitfield([2, 2, 2, 2])
    picker.peer_bitfield([3, 3])
    # availability 0:3, 1:1, 2:4, 3:2
    blocks = picker.pick(A_, range(4), 4, 0.0)
    assert pieces_of(blocks) == [1, 3, 0, 2]


def test_rarest_first_one_piece_at_a_time() -> None:
    picker = make(3, 3)
    picker.peer_bitfield([0, 1, 2])
    picker.peer_bitfield([0, 2])
    picker.peer_bitfield([0])
    # availability 0:3, 1:1, 2:2
    blocks = picker.pick(A_, range(3), 9, 0.0)
    assert [b.piece for b in blocks] == [1, 1, 1, 2, 2, 2, 0, 0, 0]


def test_rarest_order_follows_availability_changes_once_now_advances() -> None:
    picker = make(4, 1)
    for piece, n in ((0, 1), (1, 2), (2, 3), (3, 4)):
        for _ in range(n):
            picker.peer_have(piece)
    assert [b.piece for b in picker.pick(A_, range(4), 1, 0.0)] == [0]
    for _ in range(5):
        picker.peer_have(1)  # now 1:7, 2:3, 3:4
    picker.forget_pieces([3, 3, 3])  # 3:1
    assert [b.piece for b in picker.pick(B_, range(4), 1, 0.6)] == [3]
    assert [b.piece for b in picker.pick(C_, range(4), 1, 1.2)] == [2]
    assert [b.piece for b in picker.pick(D_, range(4), 1, 1.8)] == [1]


def test_rarest_first_ties_broken_randomly_per_picker() -> None:
    firsts = set()
    for seed in range(20):
        picker = Picker(50, B, 50 * B, rng=random.Random(seed))
        picker.peer_bitfield(range(50))
        firsts.add(picker.pick(A_, range(50), 1, 0.0)[0].piece)
    assert len(firsts) > 5


def test_rarest_first_skips_pieces_the_peer_lacks() -> None:
    picker = make(3, 1)
    picker.peer_have(0)  # 0 is rarest, 1 and 2 have 0 copies... make 0 rarest among haves
    picker.peer_bitfield([1, 1, 2, 2])
    assert [b.piece for b in picker.pick(A_, {1, 2}, 5, 0.0)] in ([1, 2], [2, 1])


# Deadlines and read-ahead ----------------------------------------------------------------


def test_deadlines_first_in_deadline_order() -> None:
    picker = make(6, 2)
    picker.peer_bitfield([0])  # make 0 rarest of the rest... it has 1, others 0
    picker.set_deadline(4, 10.0)
    picker.set_deadline(1, 5.0)
    picker.set_deadline(4, 1.0)  # the first deadline of a piece stands
    blocks = picker.pick(A_, range(6), 4, 20.0)
    assert blocks == [*all_blocks(picker, 1), *all_blocks(picker, 4)]


def test_deadline_piece_the_peer_lacks_is_passed_over() -> None:
    picker = make(6, 1)
    picker.set_deadline(2, 0.0)
    picker.set_deadline(3, 1.0)
    blocks = picker.pick(A_, {0, 3, 5}, 1, 2.0)
    assert blocks == [Block(3, 0, B)]


def test_deadline_on_verified_piece_ignored() -> None:
    picker = make(4, 1)
    picker.piece_verified(2)
    picker.set_deadline(2, 0.0)
    assert 2 not in picker.deadlines
    assert all(b.piece != 2 for b in picker.pick(A_, range(4), 10, 0.0))


def test_piece_verified_clears_its_deadline() -> None:
    picker = make(4, 1)
    picker.set_deadline(1, 0.0)
    (block,) = picker.pick(A_, range(4), 1, 0.0)
    assert block == Block(1, 0, B)
    assert picker.block_received(A_, block).piece_complete
    picker.piece_verified(1)
    assert picker.deadlines == {}


def test_readahead_after_deadlines_before_the_rest() -> None:
    picker = make(10, 1)
    picker.peer_bitfield([0, 1, 2])  # 3..9 rarer than 0..2
    picker.set_readahead(0, range(1, 3))
    picker.set_deadline(7, 0.0)
    blocks = picker.pick(A_, range(10), 4, 0.0)
    assert [b.piece for b in blocks][:3] == [7, 1, 2]
    assert blocks[3].piece in range(3, 10)


def test_readahead_windows_in_order_and_removal() -> None:
    picker = make(10, 1)
    picker.set_readahead(0, range(5, 7))
    picker.set_readahead(1, range(2, 4))
    picker.set_readahead(1, range(8, 10))  # replaced
    blocks = picker.pick(A_, range(10), 4, 0.0)
    assert [b.piece for b in blocks] == [5, 6, 8, 9]
    picker.set_readahead(0, range(0))
    assert 0 not in picker.readahead
    assert 1 in picker.readahead


def test_the_reader_with_the_least_verified_ahead_goes_first() -> None:
    """Two readers' windows: the one whose head is already verified can wait; the other
    reader's player runs dry first, whatever order the windows were set in."""
    picker = make(12, 1)
    picker.set_readahead(0, range(0, 4))
    picker.set_readahead(1, range(6, 10))
    for piece in (0, 1):
        picker.piece_verified(piece)
    blocks = picker.pick(A_, range(12), 4, 0.0)
    assert [b.piece for b in blocks] == [6, 7, 8, 9]
    blocks = picker.pick(B_, range(12), 2, 0.0)
    assert [b.piece for b in blocks] == [2, 3]


def test_readahead_skips_verified_pieces_and_pieces_the_peer_lacks() -> None:
    picker = make(10, 1)
    picker.set_readahead(0, range(0, 5))
    picker.piece_verified(1)
    blocks = picker.pick(A_, {0, 1, 3, 4, 9}, 3, 0.0)
    assert [b.piece for b in blocks] == [0, 3, 4]


def test_started_pieces_finished_before_new_ones() -> None:
    picker = make(4, 4)
    picker.peer_bitfield([0])
    picker.peer_bitfield([1, 2, 3])
    picker.peer_bitfield([1, 2, 3])
    # 0 is the rarest: A starts it
    first = picker.pick(A_, range(4), 2, 0.0)
    assert first == all_blocks(picker, 0)[:2]
    # now 0 becomes the most common, 3 the rarest
    picker.peer_bitfield([0, 0, 0, 0, 0])
    picker.forget_pieces([3, 3])
    nxt = picker.pick(B_, range(4), 4, 5.0)
    assert nxt[:2] == all_blocks(picker, 0)[2:]
    assert [b.piece for b in nxt[2:]] == [3, 3]


# Skipped pieces (--lazy) -----------------------------------------------------------------


def test_skipped_pieces_never_picked() -> None:
    picker = make(6, 1)
    picker.set_priority(range(6), Priority.SKIP)
    picker.peer_bitfield(range(6))
    assert not picker.wanted(0)
    assert not picker.wants_any(range(6))
    assert picker.pick(A_, range(6), 10, 0.0) == []
    assert picker.pick(B_, range(6), 10, 1.0) == []  # and no endgame of nothing


def test_skipped_pieces_picked_for_deadline_or_readahead_only() -> None:
    picker = make(8, 1)
    picker.set_priority(range(8), Priority.SKIP)
    picker.set_deadline(6, 0.0)
    picker.set_readahead(0, range(2, 4))
    assert picker.wanted(6) and picker.wanted(2) and picker.wanted(3)
    assert not picker.wanted(4)
    blocks = picker.pick(A_, range(8), 10, 0.0)
    assert [b.piece for b in blocks] == [6, 2, 3]
    assert picker.pick(B_, range(8), 10, 1.0)  # endgame copies of those three only
    assert {b.piece for b in picker.held_by(B_)} <= {6, 2, 3}


def test_some_pieces_skipped() -> None:
    picker = make(8, 2)
    picker.set_priority([1, 3, 5], Priority.SKIP)
    picker.peer_bitfield(range(8))
    blocks = picker.pick(A_, range(8), 100, 0.0)
    assert {b.piece for b in blocks} == {0, 2, 4, 6, 7}
    # endgame never reaches into the skipped pieces either
    dup = picker.pick(B_, range(8), 100, 1.0)
    assert {b.piece for b in dup} == {0, 2, 4, 6, 7}


def test_skip_lifted() -> None:
    picker = make(4, 1)
    picker.set_priority(range(4), Priority.SKIP)
    assert picker.pick(A_, range(4), 10, 0.0) == []
    picker.set_priority([2], Priority.NORMAL)
    assert [b.piece for b in picker.pick(A_, range(4), 10, 1.0)] == [2]


def test_started_piece_no_longer_continued_once_skipped_and_out_of_readahead() -> None:
    picker = make(4, 4)
    picker.set_priority(range(4), Priority.SKIP)
    picker.set_readahead(0, range(1, 2))
    assert picker.pick(A_, range(4), 2, 0.0) == all_blocks(picker, 1)[:2]
    picker.set_readahead(0, range(0))
    # piece 1 is no longer wanted; the half-requested piece is left alone
    assert picker.pick(B_, range(4), 10, 1.0) == []


# Blocks arriving -------------------------------------------------------------------------


def test_block_received_accepts_and_completes() -> None:
    picker = make(2, 3)
    blocks = picker.pick(A_, {0}, 3, 0.0)
    results = receive_all(picker, A_, blocks)
    assert results == [
        Received(True, False, []),
        Received(True, False, []),
        Received(True, True, []),
    ]
    assert picker.held_by(A_) == set()


def test_block_received_in_any_order() -> None:
    picker = make(2, 3)
    blocks = picker.pick(A_, {0}, 3, 0.0)
    results = receive_all(picker, A_, [blocks[2], blocks[0], blocks[1]])
    assert [r.piece_complete for r in results] == [False, False, True]


def test_short_last_block_received() -> None:
    picker = make(2, 2, last=B + 100)
    blocks = picker.pick(A_, {1}, 2, 0.0)
    assert blocks == [Block(1, 0, B), Block(1, B, 100)]
    assert [r.accepted for r in receive_all(picker, A_, blocks)] == [True, True]


def test_duplicate_block_not_accepted_twice() -> None:
    picker = make(2, 2)
    blocks = picker.pick(A_, {0}, 2, 0.0)
    assert picker.block_received(A_, blocks[0]).accepted
    assert picker.block_received(A_, blocks[0]) == Received(False, False, [])
    assert picker.block_received(B_, blocks[0]) == Received(False, False, [])
    assert picker.block_received(A_, blocks[1]) == Received(True, True, [])
    assert picker.block_received(A_, blocks[1]) == Received(False, False, [])


def test_block_of_piece_not_in_progress_refused() -> None:
    picker = make(3, 2)
    assert picker.block_received(A_, Block(1, 0, B)) == Received(False, False, [])
    assert picker.block_received(A_, Block(99, 0, B)) == Received(False, False, [])


@pytest.mark.parametrize(
    "bad",
    [
        Block(0, 100, B),        # misaligned
        Block(0, B - 1, B),      # misaligned
        Block(0, 0, B - 1),      # wrong length
        Block(0, 0, B + 1),      # wrong length
        Block(0, B, 100),        # wrong length
        Block(0, 0, 0),
    ],
)
def test_misaligned_or_wrong_length_block_refused(bad: Block) -> None:
    picker = make(2, 2)
    blocks = picker.pick(A_, {0}, 2, 0.0)
    assert picker.block_received(A_, bad) == Received(False, False, [])
    # nothing was marked received: the real blocks are both still needed
    assert picker.block_received(A_, blocks[0]) == Received(True, False, [])
    assert picker.block_received(A_, blocks[1]) == Received(True, True, [])


@pytest.mark.parametrize("bad", [Block(0, 2 * B, B), Block(0, 10 * B, B)])
def test_block_past_the_end_of_the_piece_refused(bad: Block) -> None:
    picker = make(2, 2)
    blocks = picker.pick(A_, {0}, 2, 0.0)
    assert picker.block_received(A_, bad) == Received(False, False, [])
    assert [r.accepted for r in receive_all(picker, A_, blocks)] == [True, True]


def test_release_of_a_block_past_the_end_of_the_piece_is_harmless() -> None:
    picker = make(2, 2)
    blocks = picker.pick(A_, {0}, 2, 0.0)
    picker.release(A_, [Block(0, 5 * B, B)])
    assert picker.held_by(A_) == set(blocks)
    assert [r.accepted for r in receive_all(picker, A_, blocks)] == [True, True]


def test_wrong_length_for_the_short_last_block_refused() -> None:
    picker = make(2, 2, last=B + 100)
    blocks = picker.pick(A_, {1}, 2, 0.0)
    assert picker.block_received(A_, Block(1, B, B)) == Received(False, False, [])
    assert picker.block_received(A_, Block(1, B, 99)) == Received(False, False, [])
    assert [r.accepted for r in receive_all(picker, A_, blocks)] == [True, True]


def test_unrequested_but_wanted_block_accepted() -> None:
    picker = make(2, 2)
    blocks = picker.pick(A_, {0}, 2, 0.0)
    picker.release(A_, blocks)
    # A delivers anyway after it was released (e.g. it had already sent it)
    assert picker.block_received(A_, blocks[0]) == Received(True, False, [])
    # and the block is not handed out again
    assert picker.pick(B_, {0}, 10, 1.0) == [blocks[1]]


def test_block_from_another_peer_cancels_the_holder() -> None:
    picker = make(2, 2)
    blocks = picker.pick(A_, {0}, 2, 0.0)
    r = picker.block_received(B_, blocks[0])
    assert r == Received(True, False, [A_])
    assert picker.held_by(A_) == {blocks[1]}


# Releasing and peers leaving -------------------------------------------------------------


def test_release_frees_blocks_for_other_peers() -> None:
    picker = make(3, 2)  # piece 2 is had by nobody, so no endgame
    blocks = picker.pick(A_, {0}, 10, 0.0)
    assert picker.held_by(A_) == set(blocks)
    assert picker.pick(B_, {0}, 10, 0.0) == []
    picker.release(A_, [blocks[1]])
    assert picker.held_by(A_) == {blocks[0]}
    assert picker.pick(B_, {0}, 10, 0.0) == [blocks[1]]
    assert picker.pick(C_, {0}, 10, 0.0) == []


def test_release_of_blocks_not_held_is_harmless() -> None:
    picker = make(3, 2)
    blocks = picker.pick(A_, {0}, 10, 0.0)
    picker.release(B_, blocks)               # B never held them
    picker.release(A_, [Block(1, 0, B)])     # piece not in progress
    assert picker.pick(C_, {0}, 10, 0.0) == []
    picker.release(A_, blocks)
    picker.release(A_, blocks)               # twice
    assert sorted(picker.pick(C_, {0}, 10, 0.0), key=lambda b: b.begin) == blocks
    assert picker.pick(D_, {0}, 10, 0.0) == []


def test_peer_gone_frees_its_blocks_and_availability() -> None:
    picker = make(3, 2)
    picker.peer_bitfield([0, 1])
    picker.peer_bitfield([0])
    assert picker.availability == [2, 1, 0]
    blocks = picker.pick(A_, {0}, 10, 0.0)
    assert picker.pick(B_, {0}, 10, 0.0) == []
    picker.peer_gone(A_, [0, 1])
    assert picker.availability == [1, 0, 0]
    assert picker.held_by(A_) == set()
    assert sorted(picker.pick(B_, {0}, 10, 0.0), key=lambda b: b.begin) == blocks


def test_peer_gone_without_blocks() -> None:
    picker = make(2, 1)
    picker.peer_bitfield([1])
    picker.peer_gone(A_, [1])
    assert picker.availability == [0, 0]


def test_block_delivered_after_peer_gone_still_accepted_if_wanted() -> None:
    picker = make(3, 2)
    blocks = picker.pick(A_, {0}, 10, 0.0)
    picker.peer_gone(A_, [])
    assert picker.block_received(A_, blocks[0]).accepted
    assert picker.pick(B_, {0}, 10, 0.0) == [blocks[1]]


# Timeouts and urgent copies --------------------------------------------------------------


def test_block_not_delivered_within_timeout_goes_to_another_peer() -> None:
    picker = make(3, 2, request_timeout=30.0)  # pieces 1, 2 unrequested: no endgame
    blocks = picker.pick(A_, {0}, 10, 0.0)
    assert picker.pick(B_, {0}, 10, 29.9) == []
    assert picker.pick(B_, {0}, 10, 30.0) == blocks
    # both may deliver; the first one counts, the other is cancelled
    assert picker.block_received(A_, blocks[0]) == Received(True, False, [B_])
    assert picker.held_by(B_) == {blocks[1]}
    assert picker.block_received(B_, blocks[0]) == Received(False, False, [])
    assert picker.block_received(B_, blocks[1]) == Received(True, True, [A_])
    assert picker.held_by(A_) == set()


@pytest.mark.parametrize("how", ["deadline", "readahead"])
def test_timed_out_block_of_a_wanted_soon_piece_goes_to_another_peer(how: str) -> None:
    picker = make(3, 2, request_timeout=30.0, urgent_after=100.0)
    if how == "deadline":
        picker.set_deadline(0, 0.0)
    else:
        picker.set_readahead(0, range(0, 1))
    blocks = picker.pick(A_, {0}, 10, 0.0)
    assert picker.pick(B_, {0}, 10, 29.9) == []
    assert picker.pick(B_, {0}, 10, 30.0) == blocks
    assert picker.block_received(A_, blocks[0]) == Received(True, False, [B_])
    assert picker.held_by(B_) == {blocks[1]}
    assert picker.block_received(B_, blocks[0]) == Received(False, False, [])
    assert picker.block_received(B_, blocks[1]) == Received(True, True, [A_])
    assert picker.held_by(A_) == set()
    assert picker.pick(C_, {0}, 10, 100.0) == []


def test_timed_out_block_not_given_back_to_its_holder() -> None:
    picker = make(3, 1, request_timeout=5.0)
    assert picker.pick(A_, {0}, 10, 0.0) == [Block(0, 0, B)]
    assert picker.pick(A_, {0}, 10, 100.0) == []


def test_urgent_block_asked_of_a_second_peer_after_urgent_after() -> None:
    picker = make(3, 2, urgent_after=1.0, request_timeout=30.0)
    picker.set_deadline(0, 0.0)
    blocks = picker.pick(A_, range(3), 2, 0.0)
    assert blocks == all_blocks(picker, 0)
    assert picker.pick(B_, {0}, 10, 0.5) == []        # not yet late
    assert picker.pick(B_, {0}, 10, 1.0) == blocks    # slow holder: ask B too
    assert picker.pick(C_, {0}, 10, 2.5) == []        # at most two holders
    assert picker.pick(C_, {0}, 10, 20.0) == []
    r = picker.block_received(B_, blocks[0])
    assert r == Received(True, False, [A_])
    assert picker.block_received(A_, blocks[0]) == Received(False, False, [])


def test_non_urgent_block_not_duplicated_before_timeout() -> None:
    picker = make(3, 2, urgent_after=1.0, request_timeout=30.0)
    picker.set_deadline(0, 0.0)
    picker.pick(A_, {1}, 2, 0.0)                     # piece 1 has no deadline
    assert picker.pick(B_, {1}, 10, 5.0) == []


# Endgame ---------------------------------------------------------------------------------


def test_endgame_once_nothing_unrequested() -> None:
    picker = make(2, 2)
    a = picker.pick(A_, range(2), 3, 0.0)
    b = picker.pick(B_, range(2), 10, 0.0)
    assert len(a) == 3 and len(b) == 1 and not set(a) & set(b)  # B got the unrequested one
    c = picker.pick(C_, range(2), 10, 0.0)
    assert sorted(c, key=lambda x: (x.piece, x.begin)) == [
        *all_blocks(picker, 0), *all_blocks(picker, 1)
    ]
    assert picker.pick(D_, range(2), 10, 0.0) == []  # ENDGAME_COPIES holders each
    assert ENDGAME_COPIES == 2
    # the first copy to arrive cancels the other holder
    assert picker.block_received(C_, a[0]) == Received(True, False, [A_])
    assert picker.block_received(A_, a[0]) == Received(False, False, [])
    assert picker.block_received(B_, b[0]).cancel == [C_]
    # D still gets nothing: no block has fewer than two holders... except after a release
    picker.release(C_, [a[1]])
    assert picker.pick(D_, range(2), 10, 0.0) == [a[1]]


def test_endgame_only_among_pieces_the_peer_has() -> None:
    picker = make(2, 1)
    picker.pick(A_, range(2), 10, 0.0)
    assert [b.piece for b in picker.pick(B_, {1}, 10, 0.0)] == [1]


def test_no_endgame_while_a_wanted_block_is_unrequested() -> None:
    picker = make(3, 1)
    picker.pick(A_, {0, 1}, 10, 0.0)  # piece 2 is wanted but nobody has asked for it
    assert picker.pick(B_, {0, 1}, 10, 0.0) == []


# Hash failure and verification -----------------------------------------------------------


def test_piece_failed_makes_the_whole_piece_wanted_again() -> None:
    picker = make(2, 3)
    blocks = picker.pick(A_, {0}, 10, 0.0)
    assert receive_all(picker, A_, blocks)[-1].piece_complete
    assert picker.pick(B_, {0}, 10, 1.0) == []
    picker.piece_failed(0)
    assert 0 not in picker.verified and picker.wanted(0)
    again = picker.pick(B_, {0}, 10, 2.0)
    assert again == blocks
    results = receive_all(picker, B_, again)
    assert [r.accepted for r in results] == [True, True, True]
    assert results[-1].piece_complete


def test_piece_failed_before_complete_forgets_holders() -> None:
    picker = make(3, 2)
    blocks = picker.pick(A_, {0}, 10, 0.0)
    picker.piece_failed(0)
    assert picker.held_by(A_) == set()
    assert picker.pick(B_, {0}, 10, 0.0) == blocks


def test_piece_failed_unknown_piece_is_harmless() -> None:
    picker = make(2, 1)
    picker.piece_failed(1)
    assert [b.piece for b in picker.pick(A_, {1}, 10, 0.0)] == [1]


def test_piece_verified_removes_it() -> None:
    picker = make(3, 2)
    blocks = picker.pick(A_, {0}, 10, 0.0)
    assert receive_all(picker, A_, blocks)[-1].piece_complete
    picker.piece_verified(0)
    assert 0 in picker.verified and 0 not in picker.in_progress
    assert not picker.wanted(0)
    assert picker.block_received(A_, blocks[0]) == Received(False, False, [])
    assert picker.pick(B_, {0}, 10, 1.0) == []
    assert all(b.piece != 0 for b in picker.pick(B_, range(3), 10, 2.0))


def test_pieces_verified_up_front_never_picked() -> None:
    picker = make(5, 1)
    for p in (0, 2, 4):
        picker.piece_verified(p)
    assert sorted(b.piece for b in picker.pick(A_, range(5), 10, 0.0)) == [1, 3]


def test_piece_verified_while_blocks_held_releases_them() -> None:
    picker = make(2, 2)
    picker.pick(A_, {0}, 10, 0.0)
    picker.piece_verified(0)
    assert picker.held_by(A_) == set()


def test_everything_verified_gives_nothing() -> None:
    picker = make(3, 1)
    for p in range(3):
        picker.piece_verified(p)
    assert picker.pick(A_, range(3), 10, 0.0) == []


# A simulated swarm -----------------------------------------------------------------------


def check_consistent(picker: Picker, outstanding: dict[bytes, set[Block]]) -> None:
    """The picker's view of who holds what matches what each peer was asked and not yet
    delivered, released or cancelled; its free-block counts are right (a block held past
    the request timeout is "stale": still held, but free for another peer)."""
    for key, blocks in outstanding.items():
        assert picker.held_by(key) == blocks, key
    for piece, progress in picker.in_progress.items():
        for i in range(len(progress.holders)):
            if progress.stale[i]:
                assert progress.holders[i] and not progress.received[i]
        free = sum(
            1 for i in range(len(progress.holders))
            if not progress.received[i] and (not progress.holders[i] or progress.stale[i])
        )
        assert progress.free == free, piece
        assert progress.remaining == len(progress.received) - sum(progress.received)
        for i, holders in enumerate(progress.holders):
            assert len(holders) == len(set(holders))
            for key in holders:
                assert picker.block(piece, i) in outstanding.get(key, set())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_pieces=st.integers(1, 10),
    blocks_per_piece=st.integers(1, 4),
    num_peers=st.integers(1, 5),
)
def test_simulated_swarm(seed: int, num_pieces: int, blocks_per_piece: int, num_peers: int) -> None:
    rng = random.Random(seed)
    piece_length = blocks_per_piece * B
    total = piece_length * (num_pieces - 1) + rng.randint(1, piece_length)
    picker = Picker(
        num_pieces, piece_length, total,
        rng=random.Random(seed + 1), request_timeout=5.0, urgent_after=1.0,
    )
    keys = [bytes([65 + i]) * 20 for i in range(num_peers)]
    haves = {k: {p for p in range(num_pieces) if rng.random() < 0.6} for k in keys}
    for p in range(num_pieces):
        if not any(p in h for h in haves.values()):
            haves[rng.choice(keys)].add(p)
    for h in haves.values():
        picker.peer_bitfield(h)
    outstanding: dict[bytes, set[Block]] = {k: set() for k in keys}
    accepted: dict[int, set[int]] = {p: set() for p in range(num_pieces)}
    verified = Counter[int]()
    now = 0.0

    def deliver(key: bytes, block: Block, may_fail: bool) -> None:
        outstanding[key].discard(block)
        r = picker.block_received(key, block)
        if r.accepted:
            assert block.begin not in accepted[block.piece], "block accepted twice"
            accepted[block.piece].add(block.begin)
            for other in r.cancel:
                assert other != key
                assert block in outstanding[other], "cancel names a non-holder"
                outstanding[other].discard(block)
        else:
            assert r.cancel == [] and not r.piece_complete
        if r.piece_complete:
            assert r.accepted
            assert len(accepted[block.piece]) == picker.blocks_in(block.piece)
            assert block.piece not in picker.verified
            if may_fail and rng.random() < 0.2:
                picker.piece_failed(block.piece)
                accepted[block.piece].clear()
            else:
                picker.piece_verified(block.piece)
                verified[block.piece] += 1
        elif r.accepted:
            assert len(accepted[block.piece]) < picker.blocks_in(block.piece)

    def pick(key: bytes, count: int) -> None:
        got = picker.pick(key, haves[key], count, now)
        assert len(got) <= count
        assert len(set(got)) == len(got)
        for b in got:
            assert b.piece in haves[key]
            assert b.piece not in picker.verified
            assert b not in outstanding[key]
            outstanding[key].add(b)

    # A chaotic phase: lost requests, stalls, reconnections, hash failures, deadlines.
    for _ in range(300):
        now += rng.choice([0.1, 0.3, 1.0, 3.0])
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.35:
            pick(key, rng.randint(1, 6))
        elif action < 0.75:
            if outstanding[key]:
                block = rng.choice(sorted(outstanding[key], key=lambda b: (b.piece, b.begin)))
                fate = rng.random()
                if fate < 0.7:
                    deliver(key, block, may_fail=True)
                elif fate < 0.85:
                    outstanding[key].discard(block)
                    picker.release(key, [block])
                # else: the peer stalls on it
        elif action < 0.8:
            picker.peer_gone(key, haves[key])
            outstanding[key].clear()
            picker.peer_bitfield(haves[key])
        elif action < 0.85:
            picker.set_deadline(rng.randrange(num_pieces), now)
        elif action < 0.9 and outstanding[key]:
            # a stray duplicate of something already delivered or not
            b = next(iter(outstanding[key]))
            deliver(key, b, may_fail=True)
            deliver(key, b, may_fail=True)
        check_consistent(picker, outstanding)

    # Then every peer behaves: everything must complete.
    for _ in range(200):
        if len(picker.verified) == num_pieces:
            break
        now += 10.0  # past request_timeout: stalled blocks go to others
        for key in keys:
            pick(key, 8)
            for block in sorted(outstanding[key], key=lambda b: (b.piece, b.begin)):
                if block in outstanding[key]:
                    deliver(key, block, may_fail=False)
            check_consistent(picker, outstanding)
    assert picker.verified == set(range(num_pieces))
    assert all(n == 1 for n in verified.values()), verified
    assert sum(verified.values()) == num_pieces


def test_urgent_only_picks_nothing_but_pieces_a_read_waits_on() -> None:
    picker = make(4, 2)
    assert picker.pick(A_, range(4), 100, 0.0, urgent_only=True) == []
    picker.set_deadline(2, 0.0)
    picker.set_readahead(0, range(3, 4))
    got = picker.pick(A_, range(4), 100, 0.0, urgent_only=True)
    assert {b.piece for b in got} == {2} and len(got) == 2


def test_background_yields_while_a_readahead_window_is_not_all_asked_for() -> None:
    """Issue 10: a reader short of its read-ahead gets every slot; a peer that cannot
    serve the window gets no background work until the window is all asked for."""
    picker = make(8)
    for piece in range(8):
        picker.peer_have(piece)
    picker.set_readahead(0, range(0, 2))
    assert picker.pick(B_, range(4, 8), 10, 0.0) == []   # B lacks the window: nothing
    window = picker.pick(A_, range(8), 4, 0.0)
    assert pieces_of(window) == [0, 1]                   # A takes the whole window
    [piece] = pieces_of(picker.pick(B_, range(4, 8), 2, 0.0))   # now B may work
    assert piece in range(4, 8)
