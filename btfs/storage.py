"""Pieces on disk: the torrent's byte stream mapped onto its files, and the resume record.

`Layout` is pure: which file extents a range of the torrent's byte stream covers (a
piece may span many files; BEP 47 padding is never stored and reads as zeros).
`Storage` does the blocking I/O with `pread`/`pwrite` on cached descriptors; it is
thread-safe so the trio shell can run it in worker threads. Pieces are written only
after their SHA-1 matched, so a file never holds bytes that failed verification.
A mount's private cache stores file N of the torrent as `N` (`by_index`), so the
torrent's names never have to fit the cache's filesystem; `download` and `seed` use
the torrent's names, each component shortened to fit (`metainfo.fit_name`).

Storage remembers each file's stamp (inode, size, mtime) as btfs last left it: its own
writes move the stamp on, so a file whose stamp differs was changed by someone else,
and the pieces verified in it must be checked again before their bytes are used.

The resume record is a header (each file's size and mtime when it was written, under a
SHA-1) followed by an append-only log of verified piece indices (4 bytes each, written
after the piece's data): a `kill -9` loses at most the pieces whose record had not been
appended yet, a torn last record is ignored, and files whose stamp moved since the
header are re-checked. A record that is empty, garbage or of an older format is
reported as damaged, and the caller checks the data instead of trusting it.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from btfs.errors import BtfsError
from btfs.metainfo import FileEntry, Info, fit_name

MAX_OPEN_FILES = 128
RECORD_MAGIC = b"btfs-resume 2\n"

Stamp = tuple[int, int, int]
"""A file's (inode, size, mtime in ns): it changes whenever the file's bytes do."""


class StorageError(BtfsError):
    """The torrent's files cannot be read or written where they should be."""


class WriteError(StorageError):
    """A write failed (a full disk, most often); nothing was marked verified."""


class DamagedRecord(StorageError):
    """The resume record cannot be trusted: the data must be checked instead."""


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
    `root/NAME`; with `by_index`, file N is `root/N` whatever its name. With
    `read_only`, nothing is ever created or written (seeding the original data).
    `data_path` overrides where a single file or the folder is.
    """

    def __init__(
        self,
        info: Info,
        root: Path,
        *,
        read_only: bool = False,
        data_path: Path | None = None,
        by_index: bool = False,
    ) -> None:
        self.info = info
        self.layout = Layout(info)
        self.read_only = read_only
        self.root = root
        self.paths: list[Path | None] = (
            [None if f.padding else root / str(i) for i, f in enumerate(info.files)]
            if by_index else named_paths(info, data_path or root / fit_name(info.name))
        )
        self._fds: dict[int, tuple[int, bool]] = {}
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()
        # Held across a write and the stamp it leaves, and across a re-check.
        self.write_lock = threading.Lock()
        self._known: dict[int, Stamp | None] = {}

    def file_path(self, file_index: int) -> Path | None:
        return self.paths[file_index]

    # Stamps ---------------------------------------------------------------------------

    def stamp(self, file_index: int) -> Stamp | None:
        """The file's stamp now; None if it does not exist (or is padding)."""
        path = self.paths[file_index]
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def known_stamp(self, file_index: int) -> Stamp | None:
        return self._known.get(file_index)

    def set_known(self, file_index: int, stamp: Stamp | None) -> None:
        """Take the file as it is now (`stamp`) as verified; descriptors reopen on it."""
        with self._lock:
            self._known[file_index] = stamp
            if file_index in self._fds:
                self._forget(file_index)

    def changed_files(self, offset: int, length: int) -> list[int]:
        """Files of the range that someone other than this Storage changed since."""
        with self.write_lock:
            return [e.file_index for e in self.layout.extents(offset, length)
                    if self.paths[e.file_index] is not None
                    and self.stamp(e.file_index) != self._known.get(e.file_index)]

    def free_space(self) -> int | None:
        """Bytes free for writing where the files go (None if that cannot be told)."""
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

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
            index = ext.file_index
            if self.paths[index] is not None:
                with self.write_lock:
                    before = self.stamp(index)
                    try:
                        with self._open(index, write=True) as fd:
                            done = 0
                            while done < ext.length:
                                done += os.pwrite(fd, view[pos + done : pos + ext.length],
                                                  ext.file_offset + done)
                    except WriteError:
                        raise
                    except StorageError as exc:
                        raise WriteError(str(exc)) from exc
                    except OSError as exc:
                        raise WriteError(f"{self.paths[index]}: {exc.strerror}") from exc
                    finally:
                        if before == self._known.get(index):
                            self._known[index] = self.stamp(index)
            pos += ext.length

    def write_piece(self, piece: int, data: bytes | bytearray | memoryview) -> None:
        if len(data) != self.info.piece_size(piece):
            raise ValueError(f"piece {piece} must be {self.info.piece_size(piece)} bytes")
        self.write(piece * self.info.piece_length, data)

    def punch_piece(self, piece: int) -> None:
        """Free the disk space of an evicted piece (its bytes read as zeros after): a hole
        punched in each file it spans. Bytes of the neighbouring pieces are untouched."""
        if self.read_only:
            raise StorageError("this storage is read-only (seeding original data)")
        offset = piece * self.info.piece_length
        for ext in self.layout.extents(offset, self.info.piece_size(piece)):
            index = ext.file_index
            path = self.paths[index]
            if path is None or not path.exists():
                continue
            with self.write_lock:
                before = self.stamp(index)
                try:
                    with self._open(index, write=True) as fd:
                        punch_hole(fd, ext.file_offset, ext.length)
                except OSError as exc:
                    raise StorageError(f"{path}: {exc.strerror}") from exc
                finally:
                    if before == self._known.get(index):
                        self._known[index] = self.stamp(index)

    def read_piece(self, piece: int) -> bytes:
        return self.read(piece * self.info.piece_length, self.info.piece_size(piece))

    def create_empty_files(self) -> None:
        """Zero-length files exist only as names; create them so a download is complete."""
        if self.read_only:
            return
        for i, f in enumerate(self.info.files):
            if f.length == 0 and self.paths[i] is not None:
                with self.write_lock, self._open(i, write=True):
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


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: object = None


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of a file (Linux `fallocate` PUNCH_HOLE, which the os module
    lacks); OSError where the filesystem cannot."""
    global _libc
    import ctypes

    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
                                   ctypes.c_longlong]
        _libc = libc
    flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, flags, offset, length) != 0:  # type: ignore[attr-defined]
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def named_paths(info: Info, base: Path) -> list[Path | None]:
    """Where each file goes under its torrent names (`base` is the file or top folder)."""
    paths: list[Path | None] = []
    for f in info.files:
        if f.padding:
            paths.append(None)
        elif info.multi_file:
            paths.append(base.joinpath(*(fit_name(part) for part in f.path)))
        else:
            paths.append(base)
    return paths


def adopt_named_data(storage: Storage, folder: Path) -> int:
    """Move data left under its torrent names in `folder` (by a user, or an older btfs)
    to where `storage` keeps it; returns how many files moved. Empty folders go."""
    if not folder.is_dir():
        return 0
    moved = 0
    named = named_paths(storage.info, folder / fit_name(storage.info.name))
    for old, new in zip(named, storage.paths, strict=True):
        if old is None or new is None:
            continue
        try:
            if not old.is_file() or new.exists():
                continue
            new.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, new)
            moved += 1
        except OSError:
            continue
    for here, _, _ in os.walk(folder, topdown=False):
        try:
            os.rmdir(here)
        except OSError:
            pass
    return moved


@dataclass(frozen=True)
class Record:
    """A resume record's content: each file's (size, mtime) when written, and the pieces."""

    sizes_and_mtimes: tuple[tuple[int, int] | None, ...]
    pieces: frozenset[int]


def record_stamp(stamp: Stamp | None) -> tuple[int, int] | None:
    """The part of a stamp a record keeps: size and mtime survive a copy, the inode not."""
    return None if stamp is None else (stamp[1], stamp[2])


class ResumeLog:
    """The set of verified pieces and the files' stamps they were verified against."""

    def __init__(self, path: Path, num_pieces: int, num_files: int) -> None:
        self.path = path
        self.num_pieces = num_pieces
        self.num_files = num_files
        self._lock = threading.Lock()
        self._file: int | None = None

    def load(self) -> Record | None:
        """The record; None if there is none. DamagedRecord if it cannot be trusted."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DamagedRecord(f"{self.path}: {exc.strerror}") from exc
        size = _header_size(self.num_files)
        if not raw.startswith(RECORD_MAGIC) or len(raw) < len(RECORD_MAGIC) + 4:
            raise DamagedRecord(f"{self.path}: empty, damaged or of an older btfs")
        (count,) = struct.unpack_from(">I", raw, len(RECORD_MAGIC))
        if count != self.num_files:
            raise DamagedRecord(f"{self.path}: made for another torrent")
        body = raw[: len(RECORD_MAGIC) + 4 + 16 * count]
        if len(raw) < size or hashlib.sha1(body).digest() != raw[len(body) : len(body) + 20]:
            raise DamagedRecord(f"{self.path}: its header is damaged")
        stamps = []
        for i in range(count):
            length, mtime = struct.unpack_from(">qq", raw, len(RECORD_MAGIC) + 4 + 16 * i)
            stamps.append(None if length < 0 else (length, mtime))
        log = raw[size:]
        log = log[: len(log) - len(log) % 4]
        pieces = frozenset(i for (i,) in struct.iter_unpack(">I", log))
        if any(i >= self.num_pieces for i in pieces):
            raise DamagedRecord(f"{self.path}: lists pieces the torrent does not have")
        return Record(tuple(stamps), pieces)

    def append(self, pieces: Iterable[int]) -> None:
        """Add verified pieces. A record begun here has no stamps: at the next start every
        file it lists pieces of counts as changed, and those pieces are hashed again."""
        record = b"".join(struct.pack(">I", i) for i in pieces)
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND
                try:
                    self._file = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
                    os.write(self._file, self._header([None] * self.num_files))
                except FileExistsError:
                    self._file = os.open(self.path, flags)
            os.write(self._file, record)

    def rewrite(self, pieces: Iterable[int], stamps: Sequence[Stamp | None]) -> None:
        """Replace the record with exactly `pieces`, verified against `stamps`, atomically."""
        header = self._header(stamps)
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(header + b"".join(struct.pack(">I", i) for i in sorted(pieces)))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
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

    def _header(self, stamps: Sequence[Stamp | None]) -> bytes:
        if len(stamps) != self.num_files:
            raise ValueError(f"{len(stamps)} stamps for {self.num_files} files")
        body = RECORD_MAGIC + struct.pack(">I", len(stamps)) + b"".join(
            struct.pack(">qq", *(record_stamp(s) or (-1, 0))) for s in stamps)
        header = body + hashlib.sha1(body).digest()
        return header + bytes(_header_size(self.num_files) - len(header))


def _header_size(num_files: int) -> int:
    """Magic, file count, (size, mtime) per file, SHA-1; then zeros to a multiple of 4."""
    size = len(RECORD_MAGIC) + 4 + 16 * num_files + 20
    return size + (-size) % 4
