"""What a request's path names: the page, a static file, the API, a playlist or a torrent's
file. Pure.

A torrent's file is found by matching the percent-decoded names against the torrent's own
file list; nothing from the URL ever reaches the filesystem, so there is no path to escape
by `..`, symlinks or encoded slashes: `.` and `..` segments are refused outright.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

HASH_RE = re.compile(r"[0-9a-fA-F]{40}")


class BadPath(Exception):
    """A path no resource can have (400)."""


@dataclass(frozen=True)
class Page:
    name: str  # "" for /, else a static file's name


@dataclass(frozen=True)
class Playlist:
    info_hash: str | None  # None: every torrent of the mount


@dataclass(frozen=True)
class FileRequest:
    info_hash: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class TorrentList:
    pass


@dataclass(frozen=True)
class TorrentItem:
    info_hash: str


@dataclass(frozen=True)
class NotFound:
    pass


Route = Page | Playlist | FileRequest | TorrentList | TorrentItem | NotFound

STATIC_NAMES = frozenset({"app.js", "style.css", "favicon.svg"})


def route(raw_path: bytes) -> Route:
    """The resource a request's raw (still percent-encoded) path names."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise BadPath("the path is not ASCII (percent-encode it)") from None
    text = text.partition("?")[0]
    if not text.startswith("/"):
        raise BadPath("the path must start with /")
    raw_segments = text[1:].split("/")
    segments = [_decode(s) for s in raw_segments]
    if any(s in (".", "..") for s in segments):
        raise BadPath("'.' and '..' are not allowed in a path")
    head = segments[0]
    if len(segments) == 1:
        if head in ("", "index.html"):
            return Page("")
        if head == "playlist.m3u":
            return Playlist(None)
        return NotFound()
    if head == "static" and len(segments) == 2 and segments[1] in STATIC_NAMES:
        return Page(segments[1])
    if head == "api" and segments[1] == "torrents":
        if len(segments) == 2:
            return TorrentList()
        if len(segments) == 3 and HASH_RE.fullmatch(segments[2]):
            return TorrentItem(segments[2].lower())
        return NotFound()
    if head == "t":
        if len(segments) == 2 and segments[1].endswith(".m3u") and \
                HASH_RE.fullmatch(segments[1][:-4]):
            return Playlist(segments[1][:-4].lower())
        if len(segments) >= 3 and HASH_RE.fullmatch(segments[1]):
            rest = tuple(segments[2:])
            if any(not s for s in rest):
                return NotFound()
            return FileRequest(segments[1].lower(), rest)
    return NotFound()


def _decode(segment: str) -> str:
    try:
        decoded = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise BadPath("the path is not UTF-8 once percent-decoded") from None
    if "/" in decoded or "\0" in decoded:
        raise BadPath("an encoded '/' or NUL in a path segment")
    return decoded
