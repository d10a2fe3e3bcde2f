"""The `Range` and `If-Range` headers of a GET for a file of `size` bytes (RFC 9110 §14). Pure.

One range gets a 206; several are ignored (the whole file, 200), as RFC 9110 allows, since
players ask for one; a syntactically invalid `bytes` range set, or one no byte of which
lies in the file, gets a 416. A unit other than `bytes` is ignored, as the RFC requires.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RANGES = 64  # more ranges than this in one header: rejected (a denial of service)
HUGE = 1 << 63  # stands for any number of more digits than fit: it is past any file's end


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` to `stop` (exclusive) of a file of `size` bytes."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


class Unsatisfiable(Exception):
    """Answer 416 with `Content-Range: bytes */size`."""


def _number(text: str) -> int:
    text = text.strip(" \t")
    if not text or not (text.isascii() and text.isdigit()):
        raise Unsatisfiable(f"not a byte position: {text!r}")
    return int(text) if len(text) <= 18 else HUGE


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to send, or None to send the whole file; raises Unsatisfiable."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip(" \t").lower() != "bytes":
        return None
    parts = [p.strip(" \t") for p in spec.split(",")]
    specs = [p for p in parts if p]
    if not specs:
        raise Unsatisfiable("no range in the Range header")
    if len(specs) > MAX_RANGES:
        raise Unsatisfiable("too many ranges")
    satisfiable = []
    for item in specs:
        first_text, dash, last_text = item.partition("-")
        if not dash:
            raise Unsatisfiable(f"not a byte range: {item!r}")
        if not first_text.strip(" \t"):
            suffix = _number(last_text)
            if suffix > 0 and size > 0:
                satisfiable.append(ByteRange(max(0, size - suffix), size, size))
            continue
        first = _number(first_text)
        last = _number(last_text) if last_text.strip(" \t") else None
        if last is not None and last < first:
            raise Unsatisfiable(f"range ends before it starts: {item!r}")
        if first < size:
            stop = size if last is None else min(last + 1, size)
            satisfiable.append(ByteRange(first, stop, size))
    if not satisfiable:
        raise Unsatisfiable("no range overlaps the file")
    return satisfiable[0] if len(satisfiable) == 1 else None


def entity_tag(info_hash_hex: str, file_index: int) -> str:
    """A strong ETag: a torrent's files never change, so the info-hash and index name them."""
    return f'"{info_hash_hex}-{file_index}"'


def honours_if_range(if_range: str | None, etag: str) -> bool:
    """Whether a Range may be used: no If-Range, or one naming our (strong) tag. A date never
    matches (there is no Last-Modified), so the whole file is sent."""
    return if_range is None or if_range.strip() == etag


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names this entity (weak comparison): answer 304."""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    bare = etag.removeprefix("W/")
    return any(t == "*" or t.removeprefix("W/") == bare for t in tags)
