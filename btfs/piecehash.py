"""SHA-1 of every piece of a file layout, with reading and hashing overlapped.

The main thread reads batches of whole pieces with `readinto` (no copies) while a pool
of threads hashes earlier batches: `hashlib` and file reads both release the GIL, so on
two cores this runs at the speed of the slower of disk and SHA-1, not their sum.
Used by `btfs create` and by the check of existing data before seeding.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from btfs.errors import BtfsError

BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class Segment:
    """A run of the torrent's byte stream: a file, or zeros (BEP 47 padding) when path is None."""

    path: Path | None
    length: int


class DataError(BtfsError):
    """The data on disk cannot be read as the layout describes."""


def hash_pieces(
    segments: Sequence[Segment],
    piece_length: int,
    *,
    on_progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    missing_ok: bool = False,
) -> list[bytes | None]:
    """Return the SHA-1 digest of each piece of the concatenated segments.

    With `missing_ok`, a piece touching a missing or short file yields None instead of
    raising, which is how a partial download is checked before resuming.
    """
    total = sum(s.length for s in segments)
    count = -(-total // piece_length) if total else 0
    batch_pieces = max(1, BATCH_BYTES // piece_length)
    workers = workers or min(4, os.cpu_count() or 1)
    results: list[bytes | None] = []
    pending: deque[tuple[Future[list[bytes | None]], bytearray]] = deque()
    # Buffers are recycled: a fresh large bytearray is a fresh mmap, and faulting its
    # pages in costs more than the read itself.
    free: list[bytearray] = []
    done_bytes = 0

    def collect_one() -> None:
        fut, used = pending.popleft()
        results.extend(fut.result())
        free.append(used)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sha1") as pool:
        reader = _Reader(segments, missing_ok)
        try:
            first = 0
            while first < count:
                n = min(batch_pieces, count - first)
                size = min(n * piece_length, total - first * piece_length)
                buf = free.pop() if free else bytearray(batch_pieces * piece_length)
                view = memoryview(buf)[:size]
                bad = reader.read_into(view, first * piece_length, piece_length)
                pending.append((pool.submit(_hash_batch, view, piece_length, first, bad), buf))
                first += n
                while len(pending) > workers:
                    collect_one()
                done_bytes += size
                if on_progress is not None:
                    on_progress(done_bytes)
            while pending:
                collect_one()
        finally:
            for fut, _ in pending:
                fut.cancel()
            reader.close()
    return results


def _hash_batch(
    view: memoryview, piece_length: int, first: int, bad: set[int]
) -> list[bytes | None]:
    out: list[bytes | None] = []
    for i, start in enumerate(range(0, len(view), piece_length)):
        if first + i in bad:
            out.append(None)
        else:
            out.append(hashlib.sha1(view[start : start + piece_length]).digest())
    return out


class _Reader:
    """Reads the layout sequentially, one open file at a time."""

    def __init__(self, segments: Sequence[Segment], missing_ok: bool) -> None:
        self.segments = list(segments)
        self.missing_ok = missing_ok
        self.index = 0
        self.offset_in_segment = 0
        self.file: int | None = None

    def close(self) -> None:
        if self.file is not None:
            os.close(self.file)
            self.file = None

    def read_into(self, view: memoryview, stream_offset: int, piece_length: int) -> set[int]:
        """Fill `view`; return the indices of pieces whose bytes could not all be read."""
        bad: set[int] = set()
        pos = 0
        while pos < len(view):
            seg = self.segments[self.index]
            left_in_seg = seg.length - self.offset_in_segment
            if left_in_seg == 0:
                self._next_segment()
                continue
            n = min(left_in_seg, len(view) - pos)
            good = self._fill(seg, view[pos : pos + n])
            if good < n:
                first_piece = (stream_offset + pos + good) // piece_length
                last_piece = (stream_offset + pos + n - 1) // piece_length
                bad.update(range(first_piece, last_piece + 1))
            pos += n
            self.offset_in_segment += n
        return bad

    def _next_segment(self) -> None:
        self.close()
        self.index += 1
        self.offset_in_segment = 0

    def _fill(self, seg: Segment, view: memoryview) -> int:
        """Read into `view`; return how many bytes were really read (all unless missing_ok)."""
        if seg.path is None:
            view[:] = bytes(len(view))
            return len(view)
        if self.file is None:
            try:
                self.file = os.open(seg.path, os.O_RDONLY)
            except OSError as exc:
                if self.missing_ok:
                    return 0
                raise DataError(f"{seg.path}: {exc.strerror}") from exc
            if self.offset_in_segment:
                os.lseek(self.file, self.offset_in_segment, os.SEEK_SET)
            os.posix_fadvise(self.file, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        got = 0
        while got < len(view):
            try:
                n = os.readv(self.file, [view[got:]])
            except OSError as exc:
                raise DataError(f"{seg.path}: {exc.strerror}") from exc
            if n == 0:
                if self.missing_ok:
                    return got
                raise DataError(f"{seg.path}: file is shorter than expected (did it change?)")
            got += n
        return got

