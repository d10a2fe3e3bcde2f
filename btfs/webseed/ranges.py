"""BEP 19 without I/O: each file's URL on a web seed, a torrent byte range as HTTP
ranges of those files, and whether an answer is the range that was asked for.

BEP 47 padding files are not on the server: their bytes are zeros, never fetched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from btfs.errors import BtfsError
from btfs.metainfo import FileEntry, Info
from btfs.storage import Layout


class WebSeedError(BtfsError):
    """A web seed did not give the bytes asked for; the message is a one-line reason."""


@dataclass(frozen=True)
class FileRange:
    """`length` bytes at `file_offset` of the file at `url`, which is `file_length` long."""

    url: str
    file_offset: int
    length: int
    file_length: int

    @property
    def header(self) -> str:
        """The Range header's value."""
        return f"bytes={self.file_offset}-{self.file_offset + self.length - 1}"

    @property
    def whole_file(self) -> bool:
        return self.file_offset == 0 and self.length == self.file_length


@dataclass(frozen=True)
class Zeros:
    """`length` bytes of a padding file."""

    length: int


Segment = FileRange | Zeros


def file_url(base: str, info: Info, file: FileEntry) -> str:
    """The file's URL on the web seed `base` (BEP 19), each name percent-encoded.

    Single-file: `base` itself, or `base` + name when it ends with '/'. Multi-file:
    `base` + '/' (unless it ends with one) + name + '/' + the path. A query in `base`
    stays at the end.
    """
    parts = urlsplit(base)
    if info.multi_file:
        names: tuple[str, ...] = (info.name, *file.path)
    elif parts.path.endswith("/"):
        names = (info.name,)
    else:
        return base
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    path += "/".join(quote(name, safe="") for name in names)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class RangeMap:
    """Maps ranges of one torrent onto HTTP ranges of the files on one web seed."""

    def __init__(self, base: str, info: Info) -> None:
        self.info = info
        self.layout = Layout(info)
        self.urls: tuple[str | None, ...] = tuple(
            None if f.padding else file_url(base, info, f) for f in info.files)

    def segments(self, piece: int, begin: int, length: int) -> list[Segment]:
        """What makes up `length` bytes at `begin` in `piece`, in order.

        Raises ValueError for a range outside the piece or of no bytes.
        """
        if not 0 <= piece < self.info.num_pieces:
            raise ValueError(f"no piece {piece}")
        size = self.info.piece_size(piece)
        if begin < 0 or length <= 0 or begin + length > size:
            raise ValueError(f"range {begin}+{length} outside piece {piece} ({size} bytes)")
        out: list[Segment] = []
        for ext in self.layout.extents(piece * self.info.piece_length + begin, length):
            url = self.urls[ext.file_index]
            if url is None:
                out.append(Zeros(ext.length))
            else:
                out.append(FileRange(url, ext.file_offset, ext.length,
                                     self.info.files[ext.file_index].length))
        return out


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def check_head(asked: FileRange, status: int, headers: Mapping[str, str]) -> None:
    """Accept a 206 for exactly the range asked, or a 200 only when the whole file was asked.

    `headers` have lower-case names. A wrong status, range, length or encoding raises
    WebSeedError before the body is read.
    """
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise WebSeedError(f"answer is {encoding}-encoded, not the file's bytes")
    if status == 206:
        _check_content_range(asked, headers.get("content-range"))
    elif status == 200:
        if not asked.whole_file:
            raise WebSeedError(f"the server ignored the range {asked.header} (status 200)")
    elif status == 416:
        raise WebSeedError(f"range {asked.header} not satisfiable: the file is shorter "
                           f"than the torrent's {asked.file_length} bytes")
    else:
        raise WebSeedError(f"HTTP status {status}")
    declared = headers.get("content-length")
    if declared is not None and declared.strip() != str(asked.length):
        raise WebSeedError(f"Content-Length {declared.strip()} for {asked.length} bytes asked")


def _check_content_range(asked: FileRange, value: str | None) -> None:
    if value is None:
        raise WebSeedError("206 answer without Content-Range")
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise WebSeedError(f"malformed Content-Range {value.strip()!r}")
    first, last, total = match.groups()
    if (int(first), int(last)) != (asked.file_offset, asked.file_offset + asked.length - 1):
        raise WebSeedError(f"Content-Range {value.strip()!r} for {asked.header} asked")
    if total != "*" and int(total) != asked.file_length:
        raise WebSeedError(f"the file is {total} bytes on the server, "
                           f"{asked.file_length} in the torrent")


def check_body(asked: FileRange, body: bytes) -> None:
    """The body must be exactly the asked length (a short one means a cut connection)."""
    if len(body) != asked.length:
        raise WebSeedError(f"{len(body)} bytes received for {asked.length} asked")
