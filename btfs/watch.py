"""A watched folder: every .torrent and .magnet file in it is a torrent of the library.

Linux's inotify says when a file is written and closed, moved in, deleted or moved out;
the trio loop waits on its descriptor (no polling, no thread: an idle mount stays idle).
inotify is spoken directly through ctypes: three calls, where a library would add a
thread and a dependency. A file written in place is taken once it is closed; a file
that changes to another torrent replaces the one it was; a file that goes takes its
torrent out of the mount (once its open files close). A file that is not a torrent is
logged and skipped: the mount stays up.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
from pathlib import Path

import trio

from btfs.errors import BtfsError
from btfs.library import Library
from btfs.magnet import Magnet, is_magnet, parse_magnet
from btfs.metainfo import Metainfo, load_torrent

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCHED = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF

SUFFIXES = (".torrent", ".magnet")
MAX_MAGNET_FILE = 64 * 1024
_EVENT = struct.Struct("iIII")


def is_candidate(name: str) -> bool:
    return name.lower().endswith(SUFFIXES) and not name.startswith(".")


def parse_events(buffer: bytes) -> list[tuple[int, str]]:
    """inotify's records as (mask, file name); pure."""
    events, pos = [], 0
    while pos + _EVENT.size <= len(buffer):
        _, mask, _, length = _EVENT.unpack_from(buffer, pos)
        raw = buffer[pos + _EVENT.size : pos + _EVENT.size + length]
        events.append((mask, os.fsdecode(raw.rstrip(b"\0"))))
        pos += _EVENT.size + length
    return events


class Inotify:
    """One inotify descriptor watching one folder."""

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            code = ctypes.get_errno()
            raise BtfsError(f"cannot watch {folder}: {os.strerror(code)}")
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), WATCHED) < 0:
            code = ctypes.get_errno()
            os.close(self.fd)
            raise BtfsError(f"cannot watch {folder}: {os.strerror(code)}")

    async def events(self) -> list[tuple[int, str]]:
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                return parse_events(os.read(self.fd, 65536))
            except BlockingIOError:
                continue

    def close(self) -> None:
        os.close(self.fd)


def read_source(path: Path) -> Metainfo | Magnet:
    """The torrent a watched file holds; BtfsError if it holds none."""
    if path.suffix.lower() == ".magnet":
        with open(path, "rb") as f:
            text = f.read(MAX_MAGNET_FILE).decode(errors="replace").strip()
        if not is_magnet(text):
            raise BtfsError(f"{path}: not a magnet URI")
        return parse_magnet(text)
    return load_torrent(path)


class FolderWatch:
    """What came from which file, and the adds and removes a file's events call for."""

    def __init__(self, library: Library, folder: Path, nursery: trio.Nursery) -> None:
        self.library = library
        self.folder = folder
        self.nursery = nursery
        self.origins: dict[str, bytes] = {}  # file name -> info-hash it added

    async def file_written(self, name: str) -> None:
        path = self.folder / name
        try:
            source = await trio.to_thread.run_sync(read_source, path)
        except FileNotFoundError:
            return
        except (BtfsError, OSError) as exc:
            log.warning("skipping %s: %s", path, exc)
            return
        old = self.origins.get(name)
        if old == source.info_hash and self.library.get(old) is not None:
            return  # rewritten with the same torrent
        if old is not None:
            await self.file_gone(name)
        self.origins[name] = source.info_hash
        if isinstance(source, Magnet):  # its metadata may take minutes: do not hold others
            self.nursery.start_soon(self._add, path, source)
        else:
            await self._add(path, source)

    async def _add(self, path: Path, source: Metainfo | Magnet) -> None:
        try:
            entry = await self.library.add(source, origin=path)
        except BtfsError as exc:
            log.warning("skipping %s: %s", path, exc)
            if self.origins.get(path.name) == source.info_hash:
                del self.origins[path.name]
            return
        log.info("%s: mounted as %r", path, entry.name)

    async def file_gone(self, name: str) -> None:
        info_hash = self.origins.pop(name, None)
        entry = self.library.get(info_hash) if info_hash is not None else None
        if entry is not None and entry.origin == self.folder / name:
            await self.library.remove_entry(entry)


async def watch_folder(library: Library, folder: Path, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Add what the folder holds now (an absolute path), then follow its changes until
    cancelled."""
    inotify = Inotify(folder)  # before the listing: nothing written meanwhile is missed
    try:
        async with trio.open_nursery() as nursery:
            watch = FolderWatch(library, folder, nursery)
            names = await trio.to_thread.run_sync(os.listdir, folder)
            for name in sorted(names):
                if is_candidate(name):
                    await watch.file_written(name)
            task_status.started()
            while True:
                for mask, name in await inotify.events():
                    if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                        log.warning("the watched folder %s is gone: no longer watching it",
                                    folder)
                        return
                    if mask & IN_Q_OVERFLOW:
                        log.warning("%s: too many changes at once; some were missed", folder)
                    if mask & IN_ISDIR or not is_candidate(name):
                        continue
                    if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                        await watch.file_written(name)
                    elif mask & (IN_DELETE | IN_MOVED_FROM):
                        await watch.file_gone(name)
    finally:
        inotify.close()
