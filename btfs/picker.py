"""Which blocks to ask a peer for. Pure: no I/O, time is passed in.

Order of choice for one peer, among the pieces that peer has:

1. pieces a read is waiting on (a deadline), oldest first; a block of such a piece that
   is late at its holder (past the patience given when it was asked for: by default
   `urgent_after` seconds, or what the holder's rate and queue say) is asked of this
   peer too;
2. the read-ahead windows of the files being streamed, in file order;
3. pieces already started, so few pieces are half-done at once;
4. the rest, rarest first (random among equals), unless the piece is skipped (`--lazy`);
5. endgame: when no wanted block is left unrequested anywhere, blocks in flight from
   other peers are asked again (at most `ENDGAME_COPIES` holders per block), and the
   copies are cancelled when the first arrives.

While a read waits on, or a read-ahead window holds, blocks not yet asked of anyone (of a
piece some peer has), 3-5 (the background) are not handed out at all: every request slot
goes to what a reader needs, and the background resumes once the readers are served.
The swarm also cancels background requests already queued at the peers that would serve
the read
(`foreground`, `background_blocks`), so the read's blocks do not queue behind them.

A block whose holder has not delivered it within `request_timeout` is free for others.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable
from dataclasses import dataclass
from enum import IntEnum

BLOCK_SIZE = 16 * 1024
ENDGAME_COPIES = 2
URGENT_COPIES = 2


class Priority(IntEnum):
    SKIP = 0
    NORMAL = 1


@dataclass(frozen=True, slots=True)
class Block:
    piece: int
    begin: int
    length: int


@dataclass(slots=True)
class Received:
    """What `block_received` decided: keep it?, piece whole?, whom to cancel."""

    accepted: bool
    piece_complete: bool
    cancel: list[bytes]


class _Progress:
    """The blocks of one piece being downloaded: who holds each request, since when."""

    __slots__ = ("due", "free", "holders", "received", "remaining", "requested_at", "stale")

    def __init__(self, blocks: int) -> None:
        self.holders: list[list[bytes]] = [[] for _ in range(blocks)]
        self.requested_at = [0.0] * blocks
        self.due = [0.0] * blocks  # late after this; then a waiting read asks another peer
        self.received = bytearray(blocks)
        # Held longer than the request timeout: counted in `free`, open to another peer.
        self.stale = bytearray(blocks)
        self.remaining = blocks
        self.free = blocks


class Picker:
    """Block choice for one torrent; the swarm tells it what peers have and what arrived."""

    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        *,
        block_size: int = BLOCK_SIZE,
        rng: random.Random | None = None,
        request_timeout: float = 30.0,
        urgent_after: float = 1.0,
    ) -> None:
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.block_size = block_size
        self.rng = rng or random.Random()
        self.request_timeout = request_timeout
        self.urgent_after = urgent_after
        self.verified: set[int] = set()
        self.availability = [0] * num_pieces
        self.priority = bytearray([Priority.NORMAL]) * num_pieces
        self.deadlines: dict[int, float] = {}
        self.readahead: dict[int, range] = {}
        self.in_progress: dict[int, _Progress] = {}
        self._held: dict[bytes, set[Block]] = {}
        self._tiebreak = [self.rng.random() for _ in range(num_pieces)]
        self._order: list[int] = []
        self._order_dirty = True
        self._order_built = float("-inf")
        self._next_expiry = float("inf")

    # Facts about the torrent -----------------------------------------------------------

    def piece_size(self, piece: int) -> int:
        if piece == self.num_pieces - 1:
            return self.total_length - piece * self.piece_length
        return self.piece_length

    def blocks_in(self, piece: int) -> int:
        return -(-self.piece_size(piece) // self.block_size)

    def block(self, piece: int, index: int) -> Block:
        begin = index * self.block_size
        return Block(piece, begin, min(self.block_size, self.piece_size(piece) - begin))

    def piece_verified(self, piece: int) -> None:
        self.verified.add(piece)
        self.deadlines.pop(piece, None)
        progress = self.in_progress.pop(piece, None)
        if progress is not None:
            self._forget_holders(piece, progress)
        self._order_dirty = True

    def piece_unverified(self, piece: int) -> None:
        """A verified piece's bytes went bad (changed or cut short on disk): fetch it again."""
        self.verified.discard(piece)
        self._order_dirty = True

    def piece_failed(self, piece: int) -> None:
        """The piece's hash did not match: every block of it is wanted again."""
        progress = self.in_progress.pop(piece, None)
        if progress is not None:
            self._forget_holders(piece, progress)

    def _forget_holders(self, piece: int, progress: _Progress) -> None:
        for index, holders in enumerate(progress.holders):
            for peer_id in holders:
                held = self._held.get(peer_id)
                if held is not None:
                    held.discard(self.block(piece, index))

    # What is wanted ----------------------------------------------------------------------

    def set_priority(self, pieces: Iterable[int], priority: Priority) -> None:
        for piece in pieces:
            self.priority[piece] = priority
        self._order_dirty = True

    def set_deadline(self, piece: int, now: float) -> None:
        if piece not in self.verified:
            self.deadlines.setdefault(piece, now)

    def set_readahead(self, reader: int, pieces: range) -> None:
        if len(pieces):
            self.readahead[reader] = pieces
        else:
            self.readahead.pop(reader, None)

    def wanted(self, piece: int) -> bool:
        return piece not in self.verified and (
            self.priority[piece] != Priority.SKIP
            or piece in self.deadlines
            or any(piece in r for r in self.readahead.values())
        )

    def foreground(self, piece: int) -> bool:
        """Is the piece one a read waits on, or in a reader's read-ahead window?"""
        return piece in self.deadlines or any(piece in r for r in self.readahead.values())

    def reader_short(self) -> bool:
        """Is a reader short: does a read wait on, or a read-ahead window hold, blocks not
        yet asked of anyone, of a piece some peer has?

        Then the background yields. Once every block the readers need is asked for, the
        background may fill the pipelines behind them again: it no longer delays them
        (and on a fast swarm it is most of what keeps the peers busy).
        """
        for piece in self.deadlines:
            if self._unasked(piece):
                return True
        for window in self.readahead.values():
            for piece in window:
                if piece not in self.verified and self._unasked(piece):
                    return True
        return False

    def _unasked(self, piece: int) -> bool:
        if self.availability[piece] <= 0:
            return False
        progress = self.in_progress.get(piece)
        return progress is None or progress.free > 0

    def background_blocks(self, blocks: Iterable[Block]) -> list[Block]:
        """Those of `blocks` that no reader needs now."""
        return [b for b in blocks if not self.foreground(b.piece)]

    def unrequested(self, pieces: Iterable[int]) -> int:
        """Blocks of `pieces` neither received nor asked of anyone (or asked too long ago)."""
        total = 0
        for piece in pieces:
            if piece in self.verified:
                continue
            progress = self.in_progress.get(piece)
            total += self.blocks_in(piece) if progress is None else progress.free
        return total

    def wants_any(self, has: Iterable[int]) -> bool:
        """Does a peer holding `has` have a piece we want?"""
        return any(self.wanted(p) for p in has)

    # What peers have -----------------------------------------------------------------------

    def peer_have(self, piece: int) -> None:
        self.availability[piece] += 1
        self._order_dirty = True

    def peer_bitfield(self, pieces: Iterable[int]) -> None:
        availability = self.availability
        for piece in pieces:
            availability[piece] += 1
        self._order_dirty = True

    def forget_pieces(self, pieces: Iterable[int]) -> None:
        """A peer's pieces no longer count (it is gone, or sent a new bitfield)."""
        availability = self.availability
        for piece in pieces:
            availability[piece] -= 1
        self._order_dirty = True

    def peer_gone(self, peer_id: bytes, pieces: Iterable[int]) -> None:
        self.forget_pieces(pieces)
        self.release(peer_id, list(self._held.pop(peer_id, ())))

    def release(self, peer_id: bytes, blocks: Iterable[Block]) -> None:
        """`peer_id` will not deliver these blocks (choked, rejected, gone): free them."""
        held = self._held.get(peer_id)
        for block in blocks:
            if held is not None:
                held.discard(block)
            progress = self.in_progress.get(block.piece)
            if progress is None:
                continue
            index, misaligned = divmod(block.begin, self.block_size)
            if misaligned or not 0 <= index < len(progress.holders):
                continue
            holders = progress.holders[index]
            if peer_id in holders:
                holders.remove(peer_id)
                if not holders and not progress.received[index]:
                    if progress.stale[index]:
                        progress.stale[index] = 0
                    else:
                        progress.free += 1

    def held_by(self, peer_id: bytes) -> set[Block]:
        return self._held.get(peer_id, set())

    # Blocks arriving -------------------------------------------------------------------------

    def block_received(self, peer_id: bytes, block: Block) -> Received:
        progress = self.in_progress.get(block.piece)
        index, misaligned = divmod(block.begin, self.block_size)
        if (
            progress is None
            or misaligned
            or not 0 <= index < len(progress.received)
            or block != self.block(block.piece, index)
        ):
            self.release(peer_id, [block])
            return Received(False, False, [])
        held = self._held.get(peer_id)
        if held is not None:
            held.discard(block)
        holders = progress.holders[index]
        if progress.received[index]:
            if peer_id in holders:
                holders.remove(peer_id)
            return Received(False, False, [])
        progress.received[index] = 1
        progress.remaining -= 1
        if not holders or progress.stale[index]:
            progress.free -= 1
            progress.stale[index] = 0
        cancel = [k for k in holders if k != peer_id]
        for other in cancel:
            other_held = self._held.get(other)
            if other_held is not None:
                other_held.discard(block)
        holders.clear()
        return Received(True, progress.remaining == 0, cancel)

    # Choosing ------------------------------------------------------------------------------

    def pick(self, peer_id: bytes, has: Container[int], count: int, now: float,
             *, urgent_only: bool = False, patience: float | None = None) -> list[Block]:
        """Up to `count` blocks to request from peer `peer_id`, which has the pieces in `has`.

        `urgent_only`: blocks of pieces a read waits on, nothing else. `patience`: how long
        this peer should take to deliver them (default `urgent_after`); past that, a block
        a read waits on is also asked of another peer.
        """
        out: list[Block] = []
        if count <= 0:
            return out
        due = now + (self.urgent_after if patience is None else patience)
        if now >= self._next_expiry:
            self.expire(now)
        if self.deadlines:
            for piece in sorted(self.deadlines, key=self.deadlines.__getitem__):
                if piece in has:
                    self._take(piece, peer_id, out, count, now, due, urgent=True)
                    if len(out) >= count:
                        return out
        if urgent_only:
            return out
        for window in self._windows_by_deadline():
            for piece in window:
                if piece not in self.verified and piece in has:
                    self._take(piece, peer_id, out, count, now, due)
                    if len(out) >= count:
                        return out
        if self.reader_short():
            return out
        for piece, progress in list(self.in_progress.items()):
            if progress.free and piece in has and self.wanted(piece):
                self._take(piece, peer_id, out, count, now, due)
                if len(out) >= count:
                    return out
        for piece in self._rarest_first(now):
            if piece in has and piece not in self.in_progress and piece not in self.verified:
                self._take(piece, peer_id, out, count, now, due)
                if len(out) >= count:
                    return out
        if not out and self._all_requested():
            self._endgame(peer_id, has, out, count, now, due)
        return out

    def _windows_by_deadline(self) -> list[range]:
        """The read-ahead windows, the one with the fewest verified pieces at its head first:
        that reader runs out of data soonest. Equal ones keep the order they were set in."""
        windows = list(self.readahead.values())
        if len(windows) < 2:
            return windows
        verified = self.verified

        def buffered(window: range) -> int:
            count = 0
            for piece in window:
                if piece not in verified:
                    break
                count += 1
            return count

        return sorted(windows, key=buffered)

    def _take(
        self, piece: int, peer_id: bytes, out: list[Block], count: int, now: float,
        due: float, *, urgent: bool = False,
    ) -> None:
        """Add blocks of `piece` for `peer_id` to `out`; each is late after `due`."""
        progress = self.in_progress.get(piece)
        if progress is None:
            progress = self.in_progress[piece] = _Progress(self.blocks_in(piece))
        held = self._held.setdefault(peer_id, set())
        received = progress.received
        for index, holders in enumerate(progress.holders):
            if len(out) >= count:
                return
            if received[index] or peer_id in holders:
                continue
            if not holders:
                progress.free -= 1
            elif progress.stale[index]:
                progress.stale[index] = 0
                progress.free -= 1
            elif not (urgent and len(holders) < URGENT_COPIES and now >= progress.due[index]):
                continue
            holders.append(peer_id)
            progress.requested_at[index] = now
            progress.due[index] = due
            self._next_expiry = min(self._next_expiry, now + self.request_timeout)
            block = self.block(piece, index)
            held.add(block)
            out.append(block)

    def _endgame(
        self, peer_id: bytes, has: Container[int], out: list[Block], count: int, now: float,
        due: float,
    ) -> None:
        held = self._held.setdefault(peer_id, set())
        for piece, progress in self.in_progress.items():
            if piece not in has or not self.wanted(piece):
                continue
            for index, holders in enumerate(progress.holders):
                if len(out) >= count:
                    return
                if progress.received[index] or peer_id in holders or len(holders) >= ENDGAME_COPIES:
                    continue
                if not holders or progress.stale[index]:
                    progress.free -= 1
                    progress.stale[index] = 0
                    progress.requested_at[index] = now
                    progress.due[index] = due
                    self._next_expiry = min(self._next_expiry, now + self.request_timeout)
                holders.append(peer_id)
                block = self.block(piece, index)
                held.add(block)
                out.append(block)

    def expire(self, now: float) -> None:
        """Open blocks held past `request_timeout` to other peers (the holder may still send)."""
        limit = now - self.request_timeout
        oldest = float("inf")
        for progress in self.in_progress.values():
            if progress.free == len(progress.holders):
                continue
            for index, holders in enumerate(progress.holders):
                if not holders or progress.stale[index] or progress.received[index]:
                    continue
                at = progress.requested_at[index]
                if at <= limit:
                    progress.stale[index] = 1
                    progress.free += 1
                elif at < oldest:
                    oldest = at
        self._next_expiry = oldest + self.request_timeout

    def _all_requested(self) -> bool:
        """No wanted piece has a block that nobody has been asked for."""
        for piece in range(self.num_pieces):
            if piece in self.verified or not self.wanted(piece):
                continue
            progress = self.in_progress.get(piece)
            if progress is None or progress.free:
                return False
        return True

    def _rarest_first(self, now: float) -> list[int]:
        """Missing, wanted pieces by availability; rebuilt at most twice a second."""
        if self._order_dirty and now - self._order_built >= 0.5:
            availability = self.availability
            tiebreak = self._tiebreak
            self._order = sorted(
                (p for p in range(self.num_pieces)
                 if p not in self.verified and self.priority[p] != Priority.SKIP),
                key=lambda p: (availability[p], tiebreak[p]),
            )
            self._order_dirty = False
            self._order_built = now
        return self._order
