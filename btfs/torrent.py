"""One torrent's session: what is verified, who waits for what, and the door reads use.

`await torrent.read(offset, size, reader)` is the one door the filesystem uses: it
raises the priority of the pieces it needs, waits until each is verified, then reads
them from storage. A piece becomes verified in one place, `piece_downloaded`, which
checks its SHA-1 (in a worker thread), writes it, records it for resume and wakes the
readers waiting on it; bytes that fail their hash are never written or returned.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from btfs.errors import BtfsError
from btfs.metainfo import Info, Metainfo
from btfs.piecehash import Segment, hash_pieces
from btfs.storage import ResumeLog, Storage

log = logging.getLogger(__name__)

# The read-ahead window right after a seek: a player waits for a few seconds of media
# there, so the pieces after the first are asked for at once, not one by one.
SEEK_WINDOW = 4 << 20


class TorrentClosed(BtfsError):
    """The session is shutting down; reads still waiting fail with this."""


@dataclass
class ReaderState:
    """Where one open file handle (a reader) is reading, to size its read-ahead window."""

    next_offset: int = -1
    window: int = 0
    sequential_reads: int = 0


@dataclass
class Counters:
    downloaded: int = 0
    uploaded: int = 0
    wasted: int = 0
    hash_failures: int = 0
    waited_pieces: set[int] = field(default_factory=set)


class Torrent:
    """A torrent's verified pieces, the readers waiting on pieces, and its storage."""

    def __init__(
        self,
        meta: Metainfo,
        storage: Storage,
        resume: ResumeLog | None = None,
        *,
        readahead: int = 8 << 20,
    ) -> None:
        self.meta = meta
        self._info = meta.info
        self.storage = storage
        self.resume = resume
        self.readahead = readahead
        self.verified: set[int] = set()
        self.counters = Counters()
        self.closed = False
        self._events: dict[int, trio.Event] = {}
        self._readers: dict[int, ReaderState] = {}
        # Set by the swarm: called with pieces a reader waits on now, and the read-ahead.
        self.on_urgent: Callable[[list[int]], None] = lambda pieces: None
        self.on_readahead: Callable[[int, range], None] = lambda reader, pieces: None
        self.on_verified: Callable[[int], None] = lambda piece: None
        # Set by the swarm: its figures (peers, rates) for the whole torrent's xattrs.
        self.network_attributes: Callable[[], dict[str, str]] = dict

    @property
    def info(self) -> Info:
        return self._info

    @property
    def complete(self) -> bool:
        return len(self.verified) == self._info.num_pieces

    @property
    def verified_bytes(self) -> int:
        return sum(self._info.piece_size(p) for p in self.verified)

    def missing_pieces(self) -> list[int]:
        return [p for p in range(self._info.num_pieces) if p not in self.verified]

    # Start-up ----------------------------------------------------------------------

    async def load_resume(self) -> int:
        """Take the verified set from the resume log; returns how many pieces it holds."""
        if self.resume is None:
            return 0
        pieces = await trio.to_thread.run_sync(self.resume.load)
        self.verified |= pieces
        return len(pieces)

    async def check_data(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Hash whatever data is on disk and mark the good pieces verified (seed, recheck)."""
        info = self._info
        segments = [Segment(self.storage.file_path(i), f.length) for i, f in enumerate(info.files)]
        digests = await trio.to_thread.run_sync(
            lambda: hash_pieces(segments, info.piece_length, missing_ok=True,
                                on_progress=on_progress)
        )
        good = {i for i, d in enumerate(digests) if d == info.piece_hash(i)}
        self.verified |= good
        if self.resume is not None:
            await trio.to_thread.run_sync(self.resume.rewrite, self.verified)
        return len(good)

    # Pieces arriving -----------------------------------------------------------------

    async def piece_downloaded(self, piece: int, data: bytes | bytearray) -> bool:
        """Verify and store a whole downloaded piece; False if its SHA-1 does not match."""
        if piece in self.verified:
            return True
        expected = self._info.piece_hash(piece)
        digest = await trio.to_thread.run_sync(lambda: hashlib.sha1(data).digest())
        if digest != expected:
            self.counters.hash_failures += 1
            self.counters.wasted += len(data)
            return False
        if piece in self.verified or self.closed:
            return piece in self.verified
        await trio.to_thread.run_sync(self.storage.write_piece, piece, data)
        if self.resume is not None:
            await trio.to_thread.run_sync(self.resume.append, [piece])
        self._mark_verified(piece)
        return True

    def _mark_verified(self, piece: int) -> None:
        self.verified.add(piece)
        self.counters.waited_pieces.discard(piece)
        event = self._events.pop(piece, None)
        if event is not None:
            event.set()
        self.on_verified(piece)

    # Reads ---------------------------------------------------------------------------

    async def read(self, offset: int, size: int, reader: int = 0) -> bytes:
        """Verified bytes from the torrent's byte stream, waiting for missing pieces first."""
        if self.closed:
            raise TorrentClosed("the torrent is being closed")
        layout = self.storage.layout
        size = max(0, min(size, self._info.total_length - offset))
        pieces = layout.pieces_of_range(offset, size)
        self._advance_reader(reader, offset, size)
        missing = [p for p in pieces if p not in self.verified]
        if missing:
            self.counters.waited_pieces.update(missing)
            self.on_urgent(missing)
            for piece in missing:
                await self._wait_for(piece)
        return await trio.to_thread.run_sync(self.storage.read, offset, size)

    async def _wait_for(self, piece: int) -> None:
        while piece not in self.verified:
            if self.closed:
                raise TorrentClosed("the torrent was closed while a read waited")
            event = self._events.get(piece)
            if event is None:
                event = self._events[piece] = trio.Event()
            await event.wait()

    def _advance_reader(self, reader: int, offset: int, size: int) -> None:
        """Grow the read-ahead window while reads stay sequential; reset it on a seek."""
        state = self._readers.setdefault(reader, ReaderState())
        if offset == state.next_offset or (
            state.next_offset >= 0 and 0 <= state.next_offset - offset <= 128 << 10
        ):
            state.sequential_reads += 1
            state.window = min(max(state.window * 2, SEEK_WINDOW), self.readahead)
        else:
            state.sequential_reads = 0
            state.window = min(SEEK_WINDOW, self.readahead)
        state.next_offset = offset + size
        if self.readahead > 0 and state.window > 0:
            end = min(self._info.total_length, state.next_offset + state.window)
            ahead = self.storage.layout.pieces_of_range(state.next_offset, end - state.next_offset)
            self.on_readahead(reader, ahead)

    def close_reader(self, reader: int) -> None:
        if self._readers.pop(reader, None) is not None:
            self.on_readahead(reader, range(0))

    # Status ----------------------------------------------------------------------------

    def attributes(self, file_index: int | None) -> dict[str, str]:
        info = self._info
        if file_index is None:
            total = info.total_length
            have = self.verified_bytes
            pieces = range(info.num_pieces)
        else:
            f = info.files[file_index]
            total = f.length
            pieces = self.storage.layout.pieces_of_file(file_index)
            have = sum(
                len(range(max(f.offset, p * info.piece_length),
                          min(f.offset + f.length, p * info.piece_length + info.piece_size(p))))
                for p in pieces if p in self.verified
            )
        progress = have / total if total else 1.0
        extra = self.network_attributes() if file_index is None else {}
        return extra | {
            "progress": f"{progress:.4f}",
            "verified_bytes": str(have),
            "size": str(total),
            "pieces": str(len(pieces)),
            "pieces_verified": str(sum(1 for p in pieces if p in self.verified)),
            "pieces_waited_on": str(len(self.counters.waited_pieces.intersection(pieces))),
            "info_hash": self.meta.info_hash_hex,
        }

    # Shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Fail every waiting read at once so nothing hangs; storage is closed by the owner."""
        self.closed = True
        for event in self._events.values():
            event.set()
        self._events.clear()
