"""One process per data folder: a lock file, so two mounts (or downloads) of the same
torrent never write, or delete, each other's data.

A lock file is removed by its holder, while still holding it, when it is done; one left
by a process that died is removed by `remove_stale` (`btfs unmount` of a dead mount).
Whoever locks a file checks that it is still the one at the path, so a removal racing
with a new holder never leaves two holders of two files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from btfs.errors import BtfsError


class CacheInUse(BtfsError):
    """Another btfs process holds the folder."""


LOCK_NAME = ".btfs-lock"


def lock_folder(folder: Path, name: str = LOCK_NAME, what: str = "cache") -> int:
    """Take the folder's lock (held until the process exits); its descriptor.

    The descriptor is inherited across fork, so the lock taken before going to the
    background stays with the process that serves the mount.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            by = f" by process {holder}" if holder.isdigit() else ""
            raise CacheInUse(f"{folder} is in use{by} (another mount or download of this "
                             f"torrent); give this one its own {what} folder") from None
        if _still_named(fd, path):
            break
        os.close(fd)  # its holder removed it as we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def note_owner(fd: int) -> None:
    """Record the current process (after a fork) as the lock's holder."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _still_named(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _process_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a killed one not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True  # cannot tell: leave its lock alone


def remove_stale(path: Path) -> bool:
    """Remove the lock file at `path` if no process holds it and the process it names is
    gone; whether it was removed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # held: its process is alive
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder.isdigit() and _process_alive(int(holder)):
            return False  # it names a live process that may be about to lock it again
        if not _still_named(fd, path):
            return False
        path.unlink()
        return True
    finally:
        os.close(fd)


def remove_stale_locks(root: Path) -> int:
    """`remove_stale` for the lock of every folder in `root` (the default cache root)."""
    removed = 0
    try:
        folders = list(root.iterdir())
    except OSError:
        return 0
    for folder in folders:
        if remove_stale(folder / LOCK_NAME):
            removed += 1
    return removed
