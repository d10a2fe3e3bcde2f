"""Metainfo (.torrent) files: parse and validate (BEP 3, 12, 19, 27, 47).

A parsed torrent is checked once, here, against everything that could make later code
misbehave: paths that escape the download folder, piece counts that do not match the
size, negative lengths. The info-hash is SHA-1 over the info dictionary's raw bytes.
Torrents of BitTorrent v2 that also carry v1 data ("hybrid") are read as v1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btfs.bencode import decode_with_spans
from btfs.errors import BencodeError, MetainfoError

MAX_TORRENT_FILE_SIZE = 64 * 1024 * 1024
NAME_MAX = 255  # bytes in one path component, on Linux filesystems and FUSE
MAX_PIECE_LENGTH = 512 * 1024 * 1024
TRACKER_SCHEMES = ("http://", "https://", "udp://")


@dataclass(frozen=True)
class FileEntry:
    """One file of the torrent's byte stream, where it lies in it, and whether it is padding."""

    path: tuple[str, ...]
    length: int
    offset: int
    padding: bool = False
    executable: bool = False

    @property
    def name(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True)
class Info:
    """The info dictionary: what the info-hash covers."""

    name: str
    piece_length: int
    pieces: bytes
    files: tuple[FileEntry, ...]
    multi_file: bool
    private: bool = False

    @property
    def total_length(self) -> int:
        last = self.files[-1]
        return last.offset + last.length

    @property
    def num_pieces(self) -> int:
        return len(self.pieces) // 20

    def piece_hash(self, index: int) -> bytes:
        return self.pieces[index * 20 : index * 20 + 20]

    def piece_size(self, index: int) -> int:
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    @property
    def visible_files(self) -> tuple[FileEntry, ...]:
        """The files a user sees: BEP 47 padding files are hidden but stay in the layout."""
        return tuple(f for f in self.files if not f.padding)


@dataclass(frozen=True)
class Metainfo:
    """A whole .torrent file."""

    info: Info
    info_hash: bytes
    raw_info: bytes
    trackers: tuple[tuple[str, ...], ...] = ()
    web_seeds: tuple[str, ...] = ()
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None
    extra: dict[bytes, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()


def load_torrent(path: str | Path) -> Metainfo:
    """Read and parse a .torrent file; errors say which file and what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TORRENT_FILE_SIZE + 1)
    except OSError as exc:
        raise MetainfoError(f"{path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_TORRENT_FILE_SIZE:
        raise MetainfoError(f"{path}: larger than {MAX_TORRENT_FILE_SIZE} bytes, not a torrent")
    try:
        return parse_torrent(data)
    except MetainfoError as exc:
        raise MetainfoError(f"{path}: {exc}") from exc


def parse_torrent(data: bytes) -> Metainfo:
    """Parse the bytes of a .torrent file."""
    if not data:
        raise MetainfoError("empty file, not a torrent")
    try:
        top, spans = decode_with_spans(data)
    except BencodeError as exc:
        raise MetainfoError(f"not a valid torrent (bencode): {exc}") from exc
    info_dict = top.get(b"info")
    if not isinstance(info_dict, dict):
        raise MetainfoError("missing or invalid 'info' dictionary")
    start, end = spans[b"info"]
    raw_info = data[start:end]
    info = parse_info(info_dict)
    return Metainfo(
        info=info,
        info_hash=hashlib.sha1(raw_info).digest(),
        raw_info=raw_info,
        trackers=_trackers(top),
        web_seeds=_web_seeds(top.get(b"url-list")),
        comment=_optional_text(top, b"comment"),
        created_by=_optional_text(top, b"created by"),
        creation_date=_optional_int(top, b"creation date"),
        extra=top,
    )


def parse_info(d: dict[bytes, Any]) -> Info:
    """Validate an info dictionary (also used for metadata fetched from peers, BEP 9)."""
    name = _text_field(d, b"name", "info 'name'")
    _check_component(name, "torrent name")
    piece_length = d.get(b"piece length")
    if not isinstance(piece_length, int):
        raise MetainfoError("missing or invalid 'piece length' (an integer)")
    if piece_length <= 0:
        raise MetainfoError(f"'piece length' must be positive, not {piece_length}")
    if piece_length > MAX_PIECE_LENGTH:
        raise MetainfoError(f"'piece length' {piece_length} is larger than 512 MiB")
    pieces = d.get(b"pieces")
    if pieces is None:
        if b"file tree" in d or d.get(b"meta version") == 2:
            raise MetainfoError("BitTorrent v2-only torrents are not supported (no 'pieces')")
        raise MetainfoError("missing 'pieces'")
    if not isinstance(pieces, bytes):
        raise MetainfoError("'pieces' must be a byte string")
    if len(pieces) % 20:
        raise MetainfoError(f"'pieces' length {len(pieces)} is not a multiple of 20")

    files: list[FileEntry] = []
    if b"files" in d:
        if b"length" in d:
            raise MetainfoError("info has both 'length' and 'files'")
        multi = True
        raw_files = d[b"files"]
        if not isinstance(raw_files, list) or not raw_files:
            raise MetainfoError("'files' must be a non-empty list")
        offset = 0
        seen: set[tuple[str, ...]] = set()
        for i, entry in enumerate(raw_files):
            fe = _file_entry(entry, i, offset)
            if fe.path in seen:
                raise MetainfoError(f"file {fe.name!r} appears twice")
            seen.add(fe.path)
            files.append(fe)
            offset += fe.length
        _check_no_file_is_a_folder(files)
    elif b"length" in d:
        multi = False
        length = d[b"length"]
        if not isinstance(length, int):
            raise MetainfoError("'length' must be an integer")
        if length <= 0:
            raise MetainfoError(f"'length' must be positive, not {length}")
        files.append(FileEntry(path=(name,), length=length, offset=0))
    else:
        raise MetainfoError("info has neither 'length' nor 'files'")

    total = files[-1].offset + files[-1].length
    if total <= 0:
        raise MetainfoError("the torrent holds no data (total length 0)")
    expected = -(-total // piece_length)
    if len(pieces) // 20 != expected:
        raise MetainfoError(
            f"'pieces' holds {len(pieces) // 20} hashes but {total} bytes in pieces of "
            f"{piece_length} need {expected}"
        )
    private = d.get(b"private", 0)
    if not isinstance(private, int):
        raise MetainfoError("'private' must be an integer")
    return Info(
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        files=tuple(files),
        multi_file=multi,
        private=private == 1,
    )


def _file_entry(entry: Any, index: int, offset: int) -> FileEntry:
    where = f"files[{index}]"
    if not isinstance(entry, dict):
        raise MetainfoError(f"{where} is not a dictionary")
    length = entry.get(b"length")
    if not isinstance(length, int):
        raise MetainfoError(f"{where}: missing or invalid 'length' (an integer)")
    if length < 0:
        raise MetainfoError(f"{where}: negative length {length}")
    raw_path = entry.get(b"path.utf-8", entry.get(b"path"))
    if not isinstance(raw_path, list) or not raw_path:
        raise MetainfoError(f"{where}: 'path' must be a non-empty list of strings")
    parts: list[str] = []
    for part in raw_path:
        if not isinstance(part, bytes):
            raise MetainfoError(f"{where}: 'path' must be a list of strings")
        text = _decode_text(part)
        _check_component(text, f"{where} path")
        parts.append(text)
    attr = entry.get(b"attr", b"")
    if not isinstance(attr, bytes):
        attr = b""
    return FileEntry(
        path=tuple(parts),
        length=length,
        offset=offset,
        padding=b"p" in attr,
        executable=b"x" in attr,
    )


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """`name` if its UTF-8 form fits in `limit` bytes, else a shortened name that does.

    The shortened name is stable (the same torrent gives the same names in every run and
    in every btfs command): the start of the name, `~` and 8 hex digits of the SHA-1 of
    the whole name (so two long names never shorten to the same), then the extension
    when it is short, so players still recognise the file.
    """
    raw = name.encode()
    if len(raw) <= limit:
        return name
    tag = "~" + hashlib.sha1(raw).hexdigest()[:8]
    stem, dot, ext = name.rpartition(".")
    suffix = f".{ext}" if dot and stem and len(ext.encode()) <= 16 else ""
    room = limit - len(tag) - len(suffix.encode())
    return raw[:room].decode(errors="ignore") + tag + suffix


def _check_component(text: str, what: str) -> None:
    if not text:
        raise MetainfoError(f"{what} is empty")
    if text in (".", ".."):
        raise MetainfoError(f"{what} contains {text!r}")
    if "\0" in text:
        raise MetainfoError(f"{what} contains a NUL byte")
    if "/" in text:
        if text.startswith("/"):
            raise MetainfoError(f"{what} {text!r} is absolute")
        raise MetainfoError(f"{what} {text!r} contains '/'")


def _check_no_file_is_a_folder(files: list[FileEntry]) -> None:
    folders = {f.path[:i] for f in files for i in range(1, len(f.path))}
    for f in files:
        if f.path in folders:
            raise MetainfoError(f"{f.name!r} is both a file and a folder")


def _decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace")


def _text_field(d: dict[bytes, Any], key: bytes, what: str) -> str:
    raw = d.get(key + b".utf-8", d.get(key))
    if not isinstance(raw, bytes):
        raise MetainfoError(f"missing or invalid {what} (a string)")
    return _decode_text(raw)


def _optional_text(d: dict[bytes, Any], key: bytes) -> str | None:
    raw = d.get(key + b".utf-8", d.get(key))
    return _decode_text(raw) if isinstance(raw, bytes) else None


def _optional_int(d: dict[bytes, Any], key: bytes) -> int | None:
    raw = d.get(key)
    return raw if isinstance(raw, int) else None


def _trackers(top: dict[bytes, Any]) -> tuple[tuple[str, ...], ...]:
    """Tiers from 'announce-list' (BEP 12), else the single 'announce'; unusable URLs dropped."""
    tiers: list[tuple[str, ...]] = []
    seen: set[str] = set()
    announce_list = top.get(b"announce-list")
    if isinstance(announce_list, list):
        for tier in announce_list:
            if not isinstance(tier, list):
                continue
            urls = []
            for raw in tier:
                url = _decode_text(raw).strip() if isinstance(raw, bytes) else ""
                if url.startswith(TRACKER_SCHEMES) and url not in seen:
                    seen.add(url)
                    urls.append(url)
            if urls:
                tiers.append(tuple(urls))
    announce = top.get(b"announce")
    if not tiers and isinstance(announce, bytes):
        url = _decode_text(announce).strip()
        if url.startswith(TRACKER_SCHEMES):
            tiers.append((url,))
    return tuple(tiers)


def _web_seeds(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    urls = []
    for item in items:
        if isinstance(item, bytes):
            url = _decode_text(item).strip()
            if url.startswith(("http://", "https://")) and url not in urls:
                urls.append(url)
    return tuple(urls)
