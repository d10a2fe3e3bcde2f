"""One torrent's session: what is verified, who waits for what, and the door reads use.

`await torrent.read(offset, size, reader)` is the one door the filesystem uses: it
raises the priority of the pieces it needs, waits until each is verified, then reads
them from storage. A piece becomes verified in one place, `piece_downloaded`, which
checks its SHA-1 (in a worker thread), writes it, records it for resume and wakes the
readers waiting on it; bytes that fail their hash are never written or returned.

Verified bytes on disk can still change under us (a user editing the cache, or the
data being seeded): each read compares the files' stamps with those btfs left, and a
file that changed has its verified pieces hashed again; those that fail are no longer
verified (`on_unverified`), so they are fetched again rather than served. An upload
hashes a piece's bytes on disk once before its first upload (`read_blocks_for_upload`).

A write that fails (a full disk) does not end the session: the piece is kept in memory
and written when space returns (or a bounded cache evicts pieces to make room), reads
that need missing pieces fail meanwhile, and `problem` says why (`on_disk_full` tells
the network side to pause).

With a bounded cache (`cache`, shared by the torrents of a mount) a piece is given room
before it is written, which may evict other verified pieces: `pinned` says which of
this torrent's may not go (a read waits on it or is reading it, an upload is reading it,
it is in a reader's read-ahead window or among an open file's last reads). An evicted
piece is no longer verified (`on_evicted`), its bytes are punched out of the cache
files, and a read of it fetches it again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from btfs.errors import BtfsError
from btfs.metainfo import Info, Metainfo
from btfs.piecehash import Segment, hash_pieces
from btfs.readahead import Readers, ReaderState, Window
from btfs.storage import (
    DamagedRecord,
    ResumeLog,
    Stamp,
    Storage,
    StorageError,
    WriteError,
    record_stamp,
)

log = logging.getLogger(__name__)

SPACE_POLL = 1.0  # seconds between looks at the free space while writes fail
SAVE_INTERVAL = 60.0  # seconds between rewrites of the resume record while pieces arrive
LAST_READS = 1 << 20  # bytes behind each open file's last read kept from eviction
FRESH_PIECES = 2  # verified pieces kept in memory for the reads waiting on them


class TorrentClosed(BtfsError):
    """The session is shutting down; reads still waiting fail with this."""


class CannotStore(BtfsError):
    """A read needs pieces that cannot be written to the cache now (a full disk)."""



@dataclass
class Counters:
    downloaded: int = 0
    uploaded: int = 0
    wasted: int = 0
    hash_failures: int = 0
    changed_on_disk: int = 0  # verified pieces whose bytes on disk later failed their hash
    evicted: int = 0  # verified pieces evicted from a bounded cache
    waited_pieces: set[int] = field(default_factory=set)


class PieceCache(Protocol):
    """A bounded cache that the pieces of the mount's torrents count against."""

    async def make_room(self, torrent: Torrent, piece: int, size: int) -> None:
        """Reserve room for `piece` (about to be written), evicting others first."""
        ...

    def dropped(self, torrent: Torrent, piece: int) -> None:
        """The piece reserved for was not stored after all."""
        ...

    def read(self, torrent: Torrent, pieces: range) -> None:
        """The pieces were read (they become the most recently used)."""
        ...

    async def free_up(self, size: int) -> bool:
        """The disk is full: evict about `size` bytes; False if nothing could go."""
        ...


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
        self.problem: str | None = None
        self._disk_checked: set[int] = set()  # verified pieces hashed from disk this run
        self._last_save = float("-inf")
        self._events: dict[int, trio.Event] = {}
        self._readers = Readers(readahead, meta.info.total_length)
        # For a bounded cache: pieces being read (by a read or an upload), each reader's
        # windows and last reads, pieces whose bytes are being punched out.
        self.cache: PieceCache | None = None
        self._in_use: dict[int, int] = {}
        self._windows: dict[int, range] = {}
        self._recent: dict[int, range] = {}
        self._evicting: dict[int, trio.Event] = {}
        self._fresh: dict[int, bytes | bytearray] = {}  # see FRESH_PIECES
        # Set by the swarm: a verified piece was evicted (no longer ours to offer).
        self.on_evicted: Callable[[int], None] = lambda piece: None
        # Set by the swarm: called with pieces a reader waits on now, and the read-ahead.
        self.on_urgent: Callable[[list[int]], None] = lambda pieces: None
        self.on_readahead: Callable[[int, range], None] = lambda reader, pieces: None
        self.on_verified: Callable[[int], None] = lambda piece: None
        # A verified piece whose bytes on disk no longer match: it is wanted again.
        self.on_unverified: Callable[[int], None] = lambda piece: None
        # True when writes start failing (pause fetching), False when they work again.
        self.on_disk_full: Callable[[bool], None] = lambda full: None
        # Set by the swarm: its figures (peers, rates) for the whole torrent's xattrs.
        self.network_attributes: Callable[[], dict[str, str]] = dict

    @property
    def info(self) -> Info:
        return self._info

    @property
    def complete(self) -> bool:
        return len(self.verified) == self._info.num_pieces

    @property
    def disk_full(self) -> bool:
        """Writes fail now: fetch nothing a read does not need (pieces cannot be stored)."""
        return self.problem is not None

    @property
    def verified_bytes(self) -> int:
        return sum(self._info.piece_size(p) for p in self.verified)

    def missing_pieces(self) -> list[int]:
        return [p for p in range(self._info.num_pieces) if p not in self.verified]

    # Start-up ----------------------------------------------------------------------

    async def restore(self) -> str | None:
        """Start from the resume record and the data on disk; says what it did, for the log
        (None when there was nothing: no record and no data).

        The record is trusted for files whose size and mtime it matches; the pieces it
        lists in files that changed are hashed again. With no record, or a damaged one,
        whatever data is present is hashed.
        """
        total = self._info.num_pieces
        stamps = await trio.to_thread.run_sync(self._stamps)
        damaged = ""
        record = None
        if self.resume is not None:
            try:
                record = await trio.to_thread.run_sync(self.resume.load)
            except DamagedRecord as exc:
                log.warning("%s: checking the data instead", exc)
                damaged = " (the resume record was damaged)"
        if record is None:
            if any(s is not None for s in stamps):
                good = await self.check_data()
                return f"checked the data: {good} of {total} pieces good{damaged}"
            for i, stamp in enumerate(stamps):
                self.storage.set_known(i, stamp)
            return f"no data{damaged}" if damaged else None
        changed = [i for i, s in enumerate(stamps) if self.storage.file_path(i) is not None
                   and record_stamp(s) != record.sizes_and_mtimes[i]]
        layout = self.storage.layout
        suspect = {p for f in changed for p in layout.pieces_of_file(f) if p in record.pieces}
        bad = await trio.to_thread.run_sync(self._bad_pieces, suspect)
        self._disk_checked |= suspect - bad
        await self._take_stamps(stamps, record.pieces - bad)
        line = f"{len(self.verified)} of {total} pieces verified from the resume record"
        if changed:
            line += (f"; {len(changed)} file(s) changed since: {len(suspect)} piece(s) "
                     f"in them checked again, {len(bad)} bad")
        return line

    async def check_data(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Hash whatever data is on disk and mark the good pieces verified (seed, recheck)."""
        info = self._info
        stamps = await trio.to_thread.run_sync(self._stamps)
        segments = [Segment(self.storage.file_path(i), f.length) for i, f in enumerate(info.files)]
        digests = await trio.to_thread.run_sync(
            lambda: hash_pieces(segments, info.piece_length, missing_ok=True,
                                on_progress=on_progress)
        )
        good = {i for i, d in enumerate(digests) if d == info.piece_hash(i)}
        self._disk_checked |= good
        await self._take_stamps(stamps, good)
        return len(good)

    def _stamps(self) -> list[Stamp | None]:
        return [self.storage.stamp(i) for i in range(len(self._info.files))]

    async def _take_stamps(self, stamps: Sequence[Stamp | None], good: Iterable[int]) -> None:
        """The files as they were before they were checked, and the pieces found good."""
        for i, stamp in enumerate(stamps):
            self.storage.set_known(i, stamp)
        self.verified.update(good)
        await self.save_resume()

    async def save_resume(self) -> None:
        """Rewrite the resume record: the verified pieces and the stamps they hold for."""
        self._last_save = trio.current_time()
        if self.resume is None or (not self.verified and not self.resume.path.exists()):
            return
        pieces = set(self.verified)
        stamps = [self.storage.known_stamp(i) for i in range(len(self._info.files))]
        try:
            await trio.to_thread.run_sync(self.resume.rewrite, pieces, stamps)
        except OSError as exc:
            log.warning("cannot save the resume record %s: %s", self.resume.path, exc.strerror)

    # Pieces arriving -----------------------------------------------------------------

    async def piece_downloaded(self, piece: int, data: bytes | bytearray) -> bool:
        """Verify and store a whole downloaded piece; False if its SHA-1 does not match.

        While the piece cannot be written (a full disk) this waits, holding it, and
        retries when space returns; False if the session closes first.
        """
        if piece in self.verified:
            return True
        while piece in self._evicting:  # its old bytes are still being punched out
            await self._evicting[piece].wait()
        if self.cache is not None and piece not in self.verified:
            await self.cache.make_room(self, piece, len(data))
        if self.closed:
            if self.cache is not None:
                self.cache.dropped(self, piece)
            return False
        # Hash and write in one trip to a worker thread: a read may be waiting, and each
        # trip waits for the GIL while the event loop receives blocks.
        result = await trio.to_thread.run_sync(
            self._verify_and_write, piece, data, self._info.piece_hash(piece))
        if result is False:
            self.counters.hash_failures += 1
            self.counters.wasted += len(data)
        while result is not False and piece not in self.verified and not self.closed:
            if isinstance(result, WriteError):
                if self.cache is not None and await self.cache.free_up(len(data)):
                    log.warning("%s: evicted pieces to make room", result)
                else:
                    self._cannot_write(str(result))
                    await self._wait_for_space(len(data))
                result = await trio.to_thread.run_sync(self._write, piece, data)
                continue
            self._can_write()
            if piece in self._events:  # a read waits: it takes the bytes from here
                self._fresh[piece] = data
                while len(self._fresh) > FRESH_PIECES:
                    del self._fresh[next(iter(self._fresh))]
            self._mark_verified(piece)
            if trio.current_time() - self._last_save >= SAVE_INTERVAL:
                await self.save_resume()
        if piece not in self.verified and self.cache is not None:
            self.cache.dropped(self, piece)
        return piece in self.verified

    def _verify_and_write(self, piece: int, data: bytes | bytearray,
                          expected: bytes) -> bool | WriteError:
        """In a worker thread: False if `data` fails its SHA-1, else `_write`'s result."""
        if hashlib.sha1(data).digest() != expected:
            return False
        return self._write(piece, data)

    def _write(self, piece: int, data: bytes | bytearray) -> bool | WriteError:
        """In a worker thread: store a verified piece and note it in the resume record;
        True, or the WriteError that kept it from the cache."""
        try:
            self.storage.write_piece(piece, data)
        except WriteError as exc:
            return exc
        if self.resume is not None:
            try:
                self.resume.append([piece])
            except OSError as exc:
                log.warning("cannot append to the resume record: %s", exc.strerror)
        return True

    def _mark_verified(self, piece: int) -> None:
        self.verified.add(piece)
        self.counters.waited_pieces.discard(piece)
        event = self._events.pop(piece, None)
        if event is not None:
            event.set()
        self.on_verified(piece)

    # A bounded cache -------------------------------------------------------------------

    def pinned(self, piece: int) -> bool:
        """May the piece not be evicted now (see the module's docstring)?"""
        return (piece in self._in_use or piece in self._events
                or any(piece in r for r in self._windows.values())
                or any(piece in r for r in self._recent.values()))

    def evict(self, piece: int) -> bool:
        """Stop counting `piece` as verified (before its bytes are punched out: `punch`);
        False if it was not verified."""
        if piece not in self.verified:
            return False
        self.verified.discard(piece)
        self._disk_checked.discard(piece)
        self._fresh.pop(piece, None)
        self.counters.evicted += 1
        self._evicting.setdefault(piece, trio.Event())
        self.on_evicted(piece)
        return True

    async def punch(self, piece: int) -> None:
        """Free an evicted piece's space in the cache files."""
        try:
            await trio.to_thread.run_sync(self.storage.punch_piece, piece)
        except StorageError as exc:
            log.warning("cannot free evicted piece %d: %s", piece, exc)
        finally:
            event = self._evicting.pop(piece, None)
            if event is not None:
                event.set()

    def _hold(self, pieces: Iterable[int]) -> None:
        for piece in pieces:
            self._in_use[piece] = self._in_use.get(piece, 0) + 1

    def _let_go(self, pieces: Iterable[int]) -> None:
        for piece in pieces:
            left = self._in_use.get(piece, 0) - 1
            if left > 0:
                self._in_use[piece] = left
            else:
                self._in_use.pop(piece, None)

    def _unverify(self, piece: int) -> None:
        if piece in self.verified:
            self.verified.discard(piece)
            self._disk_checked.discard(piece)
            self._fresh.pop(piece, None)
            self.counters.changed_on_disk += 1
            self.on_unverified(piece)

    def _cannot_write(self, message: str) -> None:
        """Writes fail: say why, fail the reads waiting on missing pieces, pause fetching."""
        if self.problem is not None:
            return
        self.problem = f"cannot write to the cache: {message}"
        log.error("%s; reads of missing pieces fail and fetching pauses until it can",
                  self.problem)
        self._wake_all()
        self.on_disk_full(True)

    def _can_write(self) -> None:
        if self.problem is not None:
            log.warning("writing to the cache works again: fetching resumes")
            self.problem = None
            self.on_disk_full(False)

    async def _wait_for_space(self, size: int) -> None:
        """Until `size` bytes are free where the files go (or the session closes)."""
        while not self.closed:
            await trio.sleep(SPACE_POLL)
            free = await trio.to_thread.run_sync(self.storage.free_space)
            if free is None or free >= size:
                return

    def _wake_all(self) -> None:
        for event in self._events.values():
            event.set()
        self._events.clear()

    # Checking bytes on disk ----------------------------------------------------------

    def _bad_pieces(self, pieces: Iterable[int]) -> set[int]:
        """Of `pieces`, those whose bytes on disk do not pass SHA-1 (or cannot be read)."""
        bad = set()
        for piece in sorted(pieces):
            try:
                data = self.storage.read_piece(piece)
            except StorageError:
                bad.add(piece)
                continue
            if hashlib.sha1(data).digest() != self._info.piece_hash(piece):
                bad.add(piece)
        return bad

    async def _recheck(self, files: Iterable[int]) -> set[int]:
        """Files changed under us: hash their verified pieces again, unverify the bad ones."""
        files = sorted(set(files))
        layout = self.storage.layout
        suspect = {p for f in files for p in layout.pieces_of_file(f) if p in self.verified}

        def check() -> set[int]:
            with self.storage.write_lock:
                for f in files:
                    self.storage.set_known(f, self.storage.stamp(f))
                return self._bad_pieces(suspect)

        bad = await trio.to_thread.run_sync(check)
        log.warning("%d file(s) changed on disk under btfs: %d of the %d verified piece(s) "
                    "in them no longer match and will be fetched again",
                    len(files), len(bad), len(suspect))
        self._disk_checked |= suspect - bad
        for piece in bad:
            self._unverify(piece)
        await self.save_resume()
        return bad

    async def _read_checked(self, offset: int, size: int) -> bytes | None:
        """The bytes, if their files are as btfs left them; None after a re-check."""
        storage = self.storage

        def read() -> tuple[bytes | None, list[int], StorageError | None]:
            try:
                data, error = storage.read(offset, size), None
            except StorageError as exc:
                data, error = None, exc
            return data, storage.changed_files(offset, size), error

        data, changed, error = await trio.to_thread.run_sync(read)
        if data is not None and not changed:
            return data
        if error is not None and not changed:
            changed = [e.file_index for e in storage.layout.extents(offset, size)
                       if storage.file_path(e.file_index) is not None]
        bad = await self._recheck(changed)
        if error is not None and not bad.intersection(storage.layout.pieces_of_range(offset, size)):
            raise error
        return None

    async def read_blocks_for_upload(
        self, requests: Sequence[tuple[int, int, int]]
    ) -> list[bytes | None]:
        """The blocks (piece, begin, length) to send a peer; None where not ours to give.

        A piece's bytes on disk are hashed before its first upload (the start-up check
        counts) and again when its files change; a piece that fails is no longer
        verified (`on_unverified`), and its blocks are None. A block out of its piece's
        bounds is None too.
        """
        info = self._info
        valid = [0 <= p < info.num_pieces and begin >= 0 and length > 0
                 and begin + length <= info.piece_size(p) for p, begin, length in requests]
        wanted = {r[0] for r, ok in zip(requests, valid, strict=True)
                  if ok and r[0] in self.verified}
        self._hold(wanted)
        try:
            return await self._blocks_for_upload(requests, valid, wanted)
        finally:
            self._let_go(wanted)

    async def _blocks_for_upload(
        self, requests: Sequence[tuple[int, int, int]], valid: list[bool], wanted: set[int]
    ) -> list[bytes | None]:
        first = wanted - self._disk_checked
        if first:
            bad = await trio.to_thread.run_sync(self._bad_pieces, first)
            self._disk_checked |= first - bad
            if bad:
                log.warning("%d piece(s) changed on disk since they were verified: "
                            "not uploading them", len(bad))
                for piece in bad:
                    self._unverify(piece)
        for _ in range(3):
            live = [(p, b, n) if ok and p in self.verified and p in self._disk_checked
                    else None for (p, b, n), ok in zip(requests, valid, strict=True)]
            blocks, changed = await trio.to_thread.run_sync(self._read_blocks, live)
            if not changed:
                return blocks
            await self._recheck(changed)
        return [None] * len(requests)

    def _read_blocks(
        self, requests: list[tuple[int, int, int] | None]
    ) -> tuple[list[bytes | None], set[int]]:
        storage = self.storage
        plen = self._info.piece_length
        blocks: list[bytes | None] = []
        changed: set[int] = set()
        for request in requests:
            if request is None:
                blocks.append(None)
                continue
            offset, length = request[0] * plen + request[1], request[2]
            try:
                blocks.append(storage.read(offset, length))
            except StorageError:
                blocks.append(None)
                changed.update(e.file_index for e in storage.layout.extents(offset, length)
                               if storage.file_path(e.file_index) is not None)
            changed.update(storage.changed_files(offset, length))
        return blocks, changed

    # Reads ---------------------------------------------------------------------------

    async def read(self, offset: int, size: int, reader: int = 0) -> bytes:
        """Verified bytes from the torrent's byte stream, waiting for missing pieces first."""
        if self.closed:
            raise TorrentClosed("the torrent is being closed")
        layout = self.storage.layout
        size = max(0, min(size, self._info.total_length - offset))
        pieces = layout.pieces_of_range(offset, size)
        state = self._advance_reader(reader, offset, size)
        if state.file_index is not None:  # an open file (not a one-off read)
            back = min(offset, LAST_READS)
            self._recent[reader] = layout.pieces_of_range(offset - back, size + back)
        self._hold(pieces)
        try:
            return await self._read(offset, size, pieces, state)
        finally:
            self._let_go(pieces)
            if self.cache is not None:
                self.cache.read(self, pieces)

    async def _read(self, offset: int, size: int, pieces: range, state: ReaderState) -> bytes:
        started = trio.current_time()
        while True:
            missing = [p for p in pieces if p not in self.verified]
            if missing:
                self.counters.waited_pieces.update(missing)
                self.on_urgent(missing)
                for piece in missing:
                    await self._wait_for(piece)
            data = self._take_fresh(offset, size, pieces)
            if data is None:
                data = await self._read_checked(offset, size)
            if data is not None:
                if state.sequential_reads == 0:
                    state.last_seek_wait = trio.current_time() - started
                return data

    def _take_fresh(self, offset: int, size: int, pieces: range) -> bytes | None:
        """The bytes of a read that waited, from the pieces just verified for it (no trip
        to a worker thread and the disk); None unless every piece is there."""
        fresh = self._fresh
        if not pieces or any(p not in fresh for p in pieces):
            return None
        plen = self._info.piece_length
        chunks = []
        for piece in pieces:
            data = fresh.pop(piece)
            start = max(offset, piece * plen) - piece * plen
            end = min(offset + size, piece * plen + len(data)) - piece * plen
            chunks.append(bytes(data[start:end]))
        return b"".join(chunks)

    async def _wait_for(self, piece: int) -> None:
        while piece not in self.verified:
            if self.closed:
                raise TorrentClosed("the torrent was closed while a read waited")
            if self.problem is not None:
                self.counters.waited_pieces.discard(piece)
                raise CannotStore(f"piece {piece} is missing and {self.problem}")
            event = self._events.get(piece)
            if event is None:
                event = self._events[piece] = trio.Event()
            await event.wait()

    @property
    def reading(self) -> bool:
        """Is a file of the torrent open (or being read)?"""
        return bool(self._readers.states)

    def open_reader(self, reader: int, file_index: int) -> None:
        """A file was opened: for a media file, fetch its head and tail first."""
        f = self._info.files[file_index]
        for window in self._readers.open(reader, file_index, f.path[-1], f.offset, f.length):
            self._fetch_ahead(window)

    def _advance_reader(self, reader: int, offset: int, size: int) -> ReaderState:
        state, window = self._readers.advance(reader, offset, size)
        if window is not None:
            self._fetch_ahead(window)
        return state

    def _fetch_ahead(self, window: Window) -> None:
        key, start, length = window
        pieces = self.storage.layout.pieces_of_range(start, length)
        self._windows[key] = pieces
        self.on_readahead(key, pieces)

    def close_reader(self, reader: int) -> None:
        self._recent.pop(reader, None)
        for key in self._readers.close(reader):
            self._windows.pop(key, None)
            self.on_readahead(key, range(0))

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
        readers = [r for r in self._readers.states.values()
                   if file_index is None or r.file_index == file_index]
        if readers:
            extra["readers"] = str(len(readers))
            extra["readahead_window"] = str(max(r.window for r in readers))
            waits = [r.last_seek_wait for r in readers if r.last_seek_wait is not None]
            if waits:
                extra["last_seek_wait"] = f"{waits[-1]:.3f}"
        if file_index is None and self.problem is not None:
            extra["problem"] = self.problem
        if file_index is None and self.counters.evicted:
            extra["evicted_pieces"] = str(self.counters.evicted)
        if file_index is None:
            extra["name"] = self.meta.name
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
        self._wake_all()
