"""The HTTP layer's pure parts: Range headers, URL paths, options and tokens, playlists, bars."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs.http import paths
from btfs.http.media import content_type, is_media, m3u, url_path, with_token
from btfs.http.options import (
    HttpOptionError,
    HttpOptions,
    check_token,
    parse_http_address,
    token_matches,
)
from btfs.http.ranges import (
    ByteRange,
    Unsatisfiable,
    entity_tag,
    honours_if_range,
    none_match,
    parse_range,
)
from btfs.http.views import bar

H = "ab" * 20


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 10, None),
    ("bytes=0-4", 10, (0, 5)),
    ("bytes=5-", 10, (5, 10)),
    ("bytes=-3", 10, (7, 10)),
    ("bytes=-30", 10, (0, 10)),
    ("bytes=8-100", 10, (8, 10)),
    ("BYTES = 1-1", 10, (1, 2)),
    ("bytes=1-2,", 10, (1, 3)),  # empty list elements are allowed
    ("bytes=20-30, 1-2", 10, (1, 3)),  # one satisfiable range among unsatisfiable ones
    ("bytes=0-1,3-4", 10, None),  # several: the whole file
    ("items=0-1", 10, None),  # an unknown unit is ignored
    ("garbage", 10, None),
])
def test_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    got = parse_range(header, size)
    assert (None if got is None else (got.start, got.stop)) == expected


@pytest.mark.parametrize(("header", "size"), [
    ("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-5", 0),
    ("bytes=3-2", 10), ("bytes=a-b", 10), ("bytes=1", 10), ("bytes=", 10), ("bytes=-", 10),
    ("bytes=+1-2", 10), ("bytes=1-2-3", 10), ("bytes=٣-4", 10), ("bytes=" + "9" * 5000 + "-", 10),
    ("bytes=" + ",".join(["0-1"] * 65), 10),
])
def test_unsatisfiable_or_invalid_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@given(st.integers(0, 10**6), st.text(max_size=40))
def test_any_header_gives_a_range_inside_the_file_or_a_clear_answer(size: int,
                                                                     spec: str) -> None:
    try:
        got = parse_range("bytes=" + spec, size)
    except Unsatisfiable:
        return
    if got is not None:
        assert 0 <= got.start < got.stop <= size


def test_range_headers_and_tags() -> None:
    assert ByteRange(5, 10, 10).content_range() == "bytes 5-9/10"
    tag = entity_tag(H, 3)
    assert tag == f'"{H}-3"'
    assert honours_if_range(None, tag) and honours_if_range(f" {tag} ", tag)
    assert not honours_if_range("Wed, 21 Oct 2015 07:28:00 GMT", tag)
    assert none_match(f'"x", W/{tag}', tag) and none_match("*", tag)
    assert not none_match('"x"', tag) and not none_match(None, tag)


@pytest.mark.parametrize(("raw", "expected"), [
    (b"/", paths.Page("")),
    (b"/index.html", paths.Page("")),
    (b"/static/app.js", paths.Page("app.js")),
    (b"/static/index.html", paths.NotFound()),
    (b"/playlist.m3u", paths.Playlist(None)),
    (f"/t/{H.upper()}.m3u".encode(), paths.Playlist(H)),
    (b"/api/torrents", paths.TorrentList()),
    (f"/api/torrents/{H}".encode(), paths.TorrentItem(H)),
    (b"/api/torrents/xyz", paths.NotFound()),
    (f"/t/{H}/a%20b/c%C3%A4.mkv".encode(), paths.FileRequest(H, ("a b", "cä.mkv"))),
    (f"/t/{H}/a?x=1".encode(), paths.FileRequest(H, ("a",))),
    (f"/t/{H}/a//b".encode(), paths.NotFound()),
    (f"/t/{H}/".encode(), paths.NotFound()),
    (b"/t/abc/x", paths.NotFound()),
    (b"/etc/passwd", paths.NotFound()),
])
def test_paths(raw: bytes, expected: paths.Route) -> None:
    assert paths.route(raw) == expected


@pytest.mark.parametrize("raw", [
    f"/t/{H}/../x".encode(), f"/t/{H}/%2E%2e/x".encode(), f"/t/{H}/./x".encode(),
    f"/t/{H}/a%2Fb".encode(), f"/t/{H}/a%00".encode(), f"/t/{H}/%ff".encode(),
    "/t/ä".encode(), b"t/x", b"/static/../x",
])
def test_bad_paths(raw: bytes) -> None:
    with pytest.raises(paths.BadPath):
        paths.route(raw)


def test_addresses_and_tokens() -> None:
    assert parse_http_address("8080") == ("127.0.0.1", 8080)
    assert parse_http_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_http_address(":80") == ("0.0.0.0", 80)
    assert parse_http_address("[::1]:8080") == ("::1", 8080)
    for bad in ("", "x", "1:2:3", "[::1]8080", "host:0", "host:65536", "host:-1", "[::1"):
        with pytest.raises(HttpOptionError):
            parse_http_address(bad)
    assert HttpOptions("127.0.0.2", 1).loopback and HttpOptions("localhost", 1).loopback
    HttpOptions("::1", 1).check()
    with pytest.raises(HttpOptionError, match="needs a token"):
        HttpOptions("192.168.1.2", 8080).check()
    HttpOptions("192.168.1.2", 8080, token="abc").check()
    with pytest.raises(HttpOptionError, match="without --http"):
        HttpOptions(token="abc").check()
    assert check_token("  tok-en_1.~\n") == "tok-en_1.~"
    for bad in ("", "a b", "a&b", "é", "x" * 257, "a#b"):
        with pytest.raises(HttpOptionError):
            check_token(bad)
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
    assert not token_matches("abc", None)
    assert HttpOptions("::1", 80).display() == "[::1]:80"


def test_media_and_playlists() -> None:
    assert content_type("A.MKV") == "video/x-matroska"
    assert content_type("x.html").startswith("text/plain")  # never run as a page
    assert content_type("noext") == content_type(".hidden") == "application/octet-stream"
    assert is_media("a.mp3") and is_media("b.webm") and not is_media("c.srt")
    assert url_path(H, ("a b", "c#?.mp4")) == f"/t/{H}/a%20b/c%23%3F.mp4"
    assert with_token("http://x/y", None) == "http://x/y"
    assert with_token("http://x/y", "t~1") == "http://x/y?token=t~1"
    text = m3u([("a,\nb", "http://x/1"), ("c", "http://x/2")])
    assert text == "#EXTM3U\n#EXTINF:-1,a  b\nhttp://x/1\n#EXTINF:-1,c\nhttp://x/2\n"


def test_progress_bars() -> None:
    assert bar(range(0), set()) == [100]
    assert bar(range(4, 8), {4, 6, 7}) == [100, 0, 100, 100]
    cells = bar(range(1000), set(range(0, 1000, 2)))
    assert len(cells) == 100 and set(cells) == {50}
