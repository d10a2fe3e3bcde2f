"""Pieces on disk: the torrent's byte stream mapped onto its files, and the resume record.

`Layout` is pure: which file extents a range of the torrent's byte stream covers (a
piece may span many files; BEP 47 padding is never stored and reads as zeros).
`Storage` does the blocking I/O with `pread`/`pwrite` on cached descriptors; it is
thread-safe so the trio shell can run it in worker threads. Pieces are written only
after their SHA-1 matched, so a file never holds bytes that failed verification.

The resume record is an append-only log of verified piece indices (4 bytes each,
written after the piece's data): a `kill -9` loses at most the pieces whose record had
not been appended yet, and a torn last record is ignored.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from btfs.errors import BtfsError
from btfs.metainfo import FileEntry, Info

MAX_OPEN_FILES = 128


class StorageError(BtfsError):
    """The torrent's files cannot be read or written where they should be."""


@dataclass(frozen=True)
class Extent:
    """`length` bytes at `file_offset` in file `file_index` (of `Info.files`)."""

    file_index: int
    file_offset: int
    length: int


class Layout:
    """Maps ranges of the torrent's byte stream onto file extents; no I/O."""

    def __init__(self, info: Info) -> None:
        self.info = info
        self.files: tuple[FileEntry, ...] = info.files
        self._starts = [f.offset for f in self.files]
        self.total_length = info.total_length

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        """The extents that cover `length` bytes from `offset`, in order; empty files skipped."""
        if offset < 0 or length < 0 or offset + length > self.total_length:
            raise ValueError(f"range {offset}+{length} outside the torrent")
        index = self._file_at(offset)
        while length > 0:
            f = self.files[index]
            inside = offset - f.offset
            n = min(f.length - inside, length)
            if n > 0:
                yield Extent(index, inside, n)
                offset += n
                length -= n
            index += 1

    def piece_extents(self, piece: int) -> list[Extent]:
        return list(self.extents(piece * self.info.piece_length, self.info.piece_size(piece)))

    def pieces_of_file(self, file_index: int) -> range:
        """The pieces holding any byte of the file (empty for an empty file)."""
        f = self.files[file_index]
        if f.length == 0:
            return range(0)
        plen = self.info.piece_length
        return range(f.offset // plen, (f.offset + f.length - 1) // plen + 1)

    def pieces_of_range(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        plen = self.info.piece_length
        return range(offset // plen, (offset + length - 1) // plen + 1)

    def _file_at(self, offset: int) -> int:
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo


class Storage:
    """Reads and writes a torrent's files under `root`, creating them sparse as needed.

    For a multi-file torrent the files go to `root/NAME/...`; a single-file torrent is
    `root/NAME`. With `read_only`, nothing is ever created or written (seeding the
    original data). `data_path` overrides where a single file or the folder is.
    """

    def __init__(
        self,
        info: Info,
        root: Path,
        *,
        read_only: bool = False,
        data_path: Path | None = None,
    ) -> None:
        self.info = info
        self.layout = Layout(info)
        self.read_only = read_only
        base = data_path if data_path is not None else root / info.name
        self.paths: list[Path | None] = []
        for f in info.files:
            if f.padding:
                self.paths.append(None)
            elif info.multi_file:
                self.paths.append(base.joinpath(*f.path))
            else:
                self.paths.append(base)
        self._fds: dict[int, tuple[int, bool]] = {}
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()

    def file_path(self, file_index: int) -> Path | None:
        return self.paths[file_index]

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the torrent's stream; padding reads as zeros. Missing files raise."""
        out = bytearray(length)
        view = memoryview(out)
        pos = 0
        for ext in self.layout.extents(offset, length):
            if self.paths[ext.file_index] is not None:
                with self._open(ext.file_index, write=False) as fd:
                    got = 0
                    while got < ext.length:
                        chunk = os.preadv(fd, [view[pos + got : pos + ext.length]],
                                          ext.file_offset + got)
                        if chunk == 0:
                            raise StorageError(
                                f"{self.paths[ext.file_index]}: shorter than expected"
                            )
                        got += chunk
            pos += ext.length
        return bytes(out)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write verified bytes at `offset`; padding ranges are skipped."""
        if self.read_only:
            raise StorageError("this storage is read-only (seeding original data)")
        view = memoryview(data)
        pos = 0
        for ext in self.layout.extents(offset, len(view)):
            if self.paths[ext.file_index] is not None:
                with self._open(ext.file_index, write=True) as fd:
                    done = 0
                    while done < ext.length:
                        done += os.pwrite(fd, view[pos + done : pos + ext.length],
                                          ext.file_offset + done)
            pos += ext.length

    def write_piece(self, piece: int, data: bytes | bytearray | memoryview) -> None:
        if len(data) != self.info.piece_size(piece):
            raise ValueError(f"piece {piece} must be {self.info.piece_size(piece)} bytes")
        self.write(piece * self.info.piece_length, data)

    def read_piece(self, piece: int) -> bytes:
        return self.read(piece * self.info.piece_length, self.info.piece_size(piece))

    def create_empty_files(self) -> None:
        """Zero-length files exist only as names; create them so a download is complete."""
        if self.read_only:
            return
        for i, f in enumerate(self.info.files):
            if f.length == 0 and self.paths[i] is not None:
                with self._open(i, write=True):
                    pass

    def close(self) -> None:
        with self._lock:
            for index in list(self._fds):
                self._forget(index)

    @contextmanager
    def _open(self, index: int, *, write: bool) -> Iterator[int]:
        """A descriptor for the file, cached; never closed by another thread while in use."""
        fd = self._acquire(index, write)
        try:
            yield fd
        finally:
            with self._lock:
                self._users[fd] -= 1
                if self._users[fd] == 0 and self._fds.get(index, (None, False))[0] != fd:
                    del self._users[fd]
                    os.close(fd)

    def _acquire(self, index: int, write: bool) -> int:
        with self._lock:
            cached = self._fds.get(index)
            if cached is not None and (cached[1] or not write):
                self._users[cached[0]] += 1
                return cached[0]
            path = self.paths[index]
            assert path is not None
            if cached is not None:
                self._forget(index)
            if len(self._fds) >= MAX_OPEN_FILES:
                self._forget(next(iter(self._fds)))
            try:
                if write:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                    size = self.info.files[index].length
                    if os.fstat(fd).st_size < size:
                        os.ftruncate(fd, size)
                else:
                    fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise StorageError(f"{path}: {exc.strerror}") from exc
            self._fds[index] = (fd, write)
            self._users[fd] = 1
            return fd

    def _forget(self, index: int) -> None:
        """Drop a cached descriptor; it is closed now, or by its last user."""
        fd, _ = self._fds.pop(index)
        if self._users.get(fd, 0) == 0:
            self._users.pop(fd, None)
            os.close(fd)


class ResumeLog:
    """The set of verified pieces, kept as an append-only file of 4-byte indices."""

    def __init__(self, path: Path, num_pieces: int) -> None:
        self.path = path
        self.num_pieces = num_pieces
        self._lock = threading.Lock()
        self._file: int | None = None

    def load(self) -> set[int]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise StorageError(f"{self.path}: {exc.strerror}") from exc
        whole = len(raw) - len(raw) % 4
        return {i for (i,) in struct.iter_unpack(">I", raw[:whole]) if i < self.num_pieces}

    def append(self, pieces: Iterable[int]) -> None:
        record = b"".join(struct.pack(">I", i) for i in pieces)
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._file, record)

    def rewrite(self, pieces: Iterable[int]) -> None:
        """Replace the log with exactly `pieces` (compaction), atomically."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(b"".join(struct.pack(">I", i) for i in sorted(pieces)))
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
            os.replace(tmp, self.path)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
