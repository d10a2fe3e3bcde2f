"""The pure part of web seeds: BEP 19 file URLs, torrent ranges as HTTP file ranges
(across file boundaries, BEP 47 padding as zeros), and the checks of an answer's head."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.metainfo import FileEntry, Info
from btfs.webseed import FileRange, RangeMap, WebSeedError, Zeros, check_body, check_head, file_url


def make_info(files: list[tuple[str, int] | tuple[str, int, bool]], piece_length: int,
              name: str = "tor", multi: bool = True) -> Info:
    """An Info of the given files ("a/b" paths, lengths, padding flags); hashes are dummies."""
    entries, offset = [], 0
    for spec in files:
        path, length = spec[0], spec[1]
        padding = len(spec) > 2 and bool(spec[2])
        entries.append(FileEntry(tuple(path.split("/")), length, offset, padding=padding))
        offset += length
    pieces = -(-offset // piece_length)
    return Info(name=name, piece_length=piece_length, pieces=b"\0" * 20 * pieces,
                files=tuple(entries), multi_file=multi)


def single(name: str, length: int = 100) -> Info:
    return make_info([(name, length)], 64, name=name, multi=False)


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize(("base", "expected"), [
    ("http://h/file.iso", "http://h/file.iso"),
    ("http://h/mirror/", "http://h/mirror/a%20b%23c%3F%25%C3%BC.iso"),
    ("http://h:8080/", "http://h:8080/a%20b%23c%3F%25%C3%BC.iso"),
    ("http://h/dir/?key=1", "http://h/dir/a%20b%23c%3F%25%C3%BC.iso?key=1"),
])
def test_single_file_url(base: str, expected: str) -> None:
    info = single("a b#c?%ü.iso")
    assert file_url(base, info, info.files[0]) == expected


@pytest.mark.parametrize(("base", "expected"), [
    ("http://h/pub", "http://h/pub/My%20Torrent/sub%2Fnot/%E6%97%A5%20%2B%26.bin"),
    ("http://h/pub/", "http://h/pub/My%20Torrent/sub%2Fnot/%E6%97%A5%20%2B%26.bin"),
    ("https://h", "https://h/My%20Torrent/sub%2Fnot/%E6%97%A5%20%2B%26.bin"),
    ("http://h/p?t=x", "http://h/p/My%20Torrent/sub%2Fnot/%E6%97%A5%20%2B%26.bin?t=x"),
])
def test_multi_file_url_encodes_each_component(base: str, expected: str) -> None:
    # A '/' cannot be in a validated component; FileEntry is built by hand to show that
    # a component is encoded whole, never split into folders.
    info = make_info([("x", 1)], 16, name="My Torrent")
    entry = FileEntry(("sub/not", "日 +&.bin"), 1, 0)
    assert file_url(base, info, entry) == expected


def test_padding_files_have_no_url() -> None:
    info = make_info([("a", 10), (".pad/6", 6, True), ("b", 16)], 16)
    urls = RangeMap("http://h/", info).urls
    assert urls == ("http://h/tor/a", None, "http://h/tor/b")


# ------------------------------------------------------------------ ranges


def test_piece_across_files_and_empty_files() -> None:
    info = make_info([("a", 10), ("empty", 0), ("b", 3), ("c", 40)], 16)
    rm = RangeMap("http://h", info)
    assert rm.segments(0, 0, 16) == [
        FileRange("http://h/tor/a", 0, 10, 10),
        FileRange("http://h/tor/b", 0, 3, 3),
        FileRange("http://h/tor/c", 0, 3, 40),
    ]
    assert rm.segments(1, 4, 8) == [FileRange("http://h/tor/c", 7, 8, 40)]
    assert rm.segments(3, 0, 5) == [FileRange("http://h/tor/c", 35, 5, 40)]  # the short last


def test_padding_is_zeros() -> None:
    info = make_info([("a", 10), (".pad/6", 6, True), ("b", 20)], 16)
    rm = RangeMap("http://h", info)
    assert rm.segments(0, 8, 8) == [FileRange("http://h/tor/a", 8, 2, 10), Zeros(6)]
    assert rm.segments(0, 12, 2) == [Zeros(2)]


@pytest.mark.parametrize(("piece", "begin", "length"), [
    (-1, 0, 1), (3, 0, 1), (0, 0, 0), (0, -1, 2), (0, 10, 7), (2, 0, 5),
])
def test_ranges_outside_a_piece_are_refused(piece: int, begin: int, length: int) -> None:
    rm = RangeMap("http://h", make_info([("a", 36)], 16))  # pieces of 16, 16, 4
    with pytest.raises(ValueError):
        rm.segments(piece, begin, length)


@st.composite
def torrents(draw: st.DrawFn) -> tuple[Info, dict[str, bytes], bytes]:
    """A multi-file torrent with empty and padding files, each file's bytes, the stream."""
    specs: list[tuple[str, int, bool]] = []
    for i in range(draw(st.integers(1, 7))):
        padding = i > 0 and draw(st.booleans())
        specs.append((f"f{i}", draw(st.integers(0 if not padding else 1, 50)), padding))
    if sum(length for _, length, _ in specs) == 0:
        specs.append(("last", draw(st.integers(1, 50)), False))
    info = make_info(list(specs), draw(st.integers(1, 40)))
    contents, stream = {}, b""
    for n, (path, length, padding) in enumerate(specs):
        content = bytes([0] * length) if padding else bytes((n * 37 + k) % 251 + 1
                                                            for k in range(length))
        contents[f"http://h/tor/{path}"] = content
        stream += content
    return info, contents, stream


@settings(max_examples=300, deadline=None)
@given(torrents(), st.data())
def test_segments_concatenate_to_the_torrent_bytes(
    torrent: tuple[Info, dict[str, bytes], bytes], data: st.DataObject
) -> None:
    info, contents, stream = torrent
    piece = data.draw(st.integers(0, info.num_pieces - 1))
    size = info.piece_size(piece)
    begin = data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, size - begin))
    got = b""
    for seg in RangeMap("http://h/", info).segments(piece, begin, length):
        assert seg.length > 0
        if isinstance(seg, Zeros):
            got += bytes(seg.length)
        else:
            file = contents[seg.url]
            assert seg.file_length == len(file)
            assert seg.file_offset >= 0 and seg.file_offset + seg.length <= len(file)
            got += file[seg.file_offset : seg.file_offset + seg.length]
    start = piece * info.piece_length + begin
    assert got == stream[start : start + length]


# ------------------------------------------------------------------ answers

PART = FileRange("http://h/f", 100, 50, 1000)
WHOLE = FileRange("http://h/f", 0, 1000, 1000)


@pytest.mark.parametrize(("asked", "status", "headers"), [
    (PART, 206, {"content-range": "bytes 100-149/1000", "content-length": "50"}),
    (PART, 206, {"content-range": " bytes 100-149/* "}),
    (WHOLE, 206, {"content-range": "bytes 0-999/1000", "content-length": "1000"}),
    (WHOLE, 200, {"content-length": "1000"}),
    (WHOLE, 200, {"content-encoding": "identity"}),
])
def test_good_answers(asked: FileRange, status: int, headers: dict[str, str]) -> None:
    check_head(asked, status, headers)


@pytest.mark.parametrize(("asked", "status", "headers", "reason"), [
    (PART, 200, {"content-length": "1000"}, "ignored the range"),
    (PART, 206, {}, "without Content-Range"),
    (PART, 206, {"content-range": "bytes 100-148/1000"}, "for bytes=100-149 asked"),
    (PART, 206, {"content-range": "bytes 0-49/1000"}, "for bytes=100-149 asked"),
    (PART, 206, {"content-range": "bytes 100-149/999"}, "999 bytes on the server"),
    (PART, 206, {"content-range": "items 100-149/1000"}, "malformed"),
    (PART, 206, {"content-range": "bytes 100-149/1000", "content-length": "49"},
     "Content-Length 49"),
    (WHOLE, 200, {"content-length": "999"}, "Content-Length 999"),
    (WHOLE, 200, {"content-encoding": "gzip"}, "gzip-encoded"),
    (PART, 416, {"content-range": "bytes */80"}, "not satisfiable"),
    (PART, 404, {}, "HTTP status 404"),
    (PART, 503, {"retry-after": "120"}, "HTTP status 503"),
])
def test_bad_answers(asked: FileRange, status: int, headers: dict[str, str],
                     reason: str) -> None:
    with pytest.raises(WebSeedError, match=reason):
        check_head(asked, status, headers)


def test_body_must_be_exactly_the_length_asked() -> None:
    check_body(PART, b"x" * 50)
    with pytest.raises(WebSeedError, match="49 bytes received for 50"):
        check_body(PART, b"x" * 49)
    with pytest.raises(WebSeedError, match="51 bytes"):
        check_body(PART, b"x" * 51)
    assert PART.header == "bytes=100-149"
    assert WHOLE.whole_file and not PART.whole_file
