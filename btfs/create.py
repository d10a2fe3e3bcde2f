"""`btfs create`: make a .torrent of a file or a folder (BEP 3, 12, 19, 27)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btfs import __version__
from btfs.bencode import encode
from btfs.errors import CreateError
from btfs.metainfo import TRACKER_SCHEMES
from btfs.piecehash import Segment, hash_pieces

MIN_PIECE_LENGTH = 16 * 1024
MAX_PIECE_LENGTH = 16 * 1024 * 1024
TARGET_MAX_PIECES = 2000


@dataclass(frozen=True)
class SourceFile:
    """A file to include: where it is on disk and its path inside the torrent."""

    disk_path: Path
    torrent_path: tuple[str, ...]
    length: int


@dataclass
class CreateOptions:
    trackers: Sequence[Sequence[str]] = ()
    web_seeds: Sequence[str] = ()
    private: bool = False
    comment: str | None = None
    piece_length: int | None = None
    creation_date: int | None = field(default_factory=lambda: int(time.time()))
    created_by: str = f"btfs/{__version__}"


def default_piece_length(total: int) -> int:
    """The smallest power of two from 16 KiB to 16 MiB that keeps the count near 1000-2000."""
    length = MIN_PIECE_LENGTH
    while length < MAX_PIECE_LENGTH and -(-total // length) > TARGET_MAX_PIECES:
        length *= 2
    return length


def check_piece_length(length: int) -> None:
    if length < MIN_PIECE_LENGTH or length > MAX_PIECE_LENGTH or length & (length - 1):
        raise CreateError(
            f"piece length {length} must be a power of two from 16 KiB to 16 MiB"
        )


def check_tracker_url(url: str) -> None:
    if not url.startswith(TRACKER_SCHEMES) or len(url) <= len("udp://"):
        raise CreateError(f"tracker URL {url!r} must start with http://, https:// or udp://")


def check_web_seed_url(url: str) -> None:
    if not url.startswith(("http://", "https://")) or len(url) <= len("http://"):
        raise CreateError(f"web seed URL {url!r} must start with http:// or https://")


def collect_files(root: Path) -> tuple[str, list[SourceFile], bool]:
    """The torrent's name, its files in sorted order, and whether it is a multi-file torrent."""
    try:
        st = root.stat()
    except OSError as exc:
        raise CreateError(f"{root}: {exc.strerror}") from exc
    name = _utf8_name(root.resolve().name if root.name in ("", ".", "..") else root.name, root)
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise CreateError(f"{root}: the file is empty; a torrent needs data")
        return name, [SourceFile(root, (name,), st.st_size)], False
    if not stat.S_ISDIR(st.st_mode):
        raise CreateError(f"{root}: not a regular file or a folder")
    files: list[SourceFile] = []
    _walk(root, (), files, {(st.st_dev, st.st_ino)})
    if not files:
        raise CreateError(f"{root}: the folder holds no files")
    if sum(f.length for f in files) == 0:
        raise CreateError(f"{root}: every file in the folder is empty; a torrent needs data")
    files.sort(key=lambda f: f.torrent_path)
    return name, files, True


def _walk(
    folder: Path, prefix: tuple[str, ...], out: list[SourceFile], seen: set[tuple[int, int]]
) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise CreateError(f"{folder}: {exc.strerror}") from exc
    for entry in entries:
        path = Path(entry.path)
        name = _utf8_name(entry.name, path)
        try:
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            raise CreateError(f"{path}: {exc.strerror}") from exc
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen:
                raise CreateError(f"{path}: a symbolic link loop")
            _walk(path, (*prefix, name), out, seen | {key})
        elif stat.S_ISREG(st.st_mode):
            out.append(SourceFile(path, (*prefix, name), st.st_size))
        else:
            raise CreateError(f"{path}: not a regular file or a folder")


def _utf8_name(name: str, path: Path) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CreateError(f"{path}: the name is not valid UTF-8") from None
    return name


def make_torrent(
    root: Path,
    options: CreateOptions,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> bytes:
    """Hash the data under `root` and return the bencoded .torrent."""
    for tier in options.trackers:
        for url in tier:
            check_tracker_url(url)
    for url in options.web_seeds:
        check_web_seed_url(url)
    name, files, multi = collect_files(root)
    total = sum(f.length for f in files)
    piece_length = options.piece_length or default_piece_length(total)
    check_piece_length(piece_length)
    if on_start is not None:
        on_start(total)
    digests = hash_pieces(
        [Segment(f.disk_path, f.length) for f in files], piece_length, on_progress=on_progress
    )

    info: dict[bytes, Any] = {
        b"name": name.encode(),
        b"piece length": piece_length,
        b"pieces": b"".join(d for d in digests if d is not None),
    }
    if multi:
        info[b"files"] = [
            {b"length": f.length, b"path": [p.encode() for p in f.torrent_path]} for f in files
        ]
    else:
        info[b"length"] = total
    if options.private:
        info[b"private"] = 1

    top: dict[bytes, Any] = {b"info": info}
    tiers = [[url.encode() for url in tier] for tier in options.trackers if tier]
    if tiers:
        top[b"announce"] = tiers[0][0]
        top[b"announce-list"] = tiers
    if options.web_seeds:
        top[b"url-list"] = [url.encode() for url in options.web_seeds]
    if options.comment:
        top[b"comment"] = options.comment.encode()
    if options.created_by:
        top[b"created by"] = options.created_by.encode()
    if options.creation_date is not None:
        top[b"creation date"] = options.creation_date
    return encode(top)
