"""One process per data folder: a lock file, so two mounts (or downloads) of the same
torrent never write, or delete, each other's data."""

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
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def note_owner(fd: int) -> None:
    """Record the current process (after a fork) as the lock's holder."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
