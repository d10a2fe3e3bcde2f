"""The HTTP server on loopback, in the test's trio loop, over real torrents on disk.

curl, ffprobe and mpv are the clients: Range answers byte-identical to the source, HEAD,
416, playlists, players seeking in the middle; requests that wait for pieces; bad requests
answered with a status (never a traceback) while the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from btfs.create import CreateOptions, make_torrent
from tests.support.data import make_random_file, make_tree
from tests.support.env import require_tool
from tests.support.httpserve import (
    MemoryLibrary,
    Reply,
    Served,
    curl,
    empty_torrent,
    feed_pieces,
    raw_request,
    readers,
    serving,
    verified_torrent,
    wait_until,
)

TREE = {
    "Season 1/e01.mkv": 1_500_001,
    "Season 1/ä b #1.mp4": 300_000,
    "notes.txt": 1234,
    "empty.dat": 0,
}


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """Fails the test if the server logged an error or a traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def url(port: int, served: Served, rel: str) -> str:
    path = "/".join(quote(part, safe="") for part in rel.split("/"))
    return f"http://127.0.0.1:{port}/t/{served.info_hash}/{path}"


async def test_random_ranges_are_byte_identical(tmp_path: Path, no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    rng = random.Random(12)
    async with serving(served) as port:
        for rel, size in TREE.items():
            whole = await curl(url(port, served, rel))
            assert whole.status == 200 and whole.body == served.original(rel), rel
            assert whole.headers["content-length"] == str(size)
            assert whole.headers["accept-ranges"] == "bytes"
        for _ in range(60):
            rel = rng.choice([r for r, s in TREE.items() if s])
            original = served.original(rel)
            start = rng.randrange(len(original))
            end = min(len(original) - 1, start + rng.choice([0, 1, 999, 32767, 32768, 400_000]))
            reply = await curl(url(port, served, rel), "-r", f"{start}-{end}")
            assert reply.status == 206, (rel, start, end)
            assert reply.body == original[start : end + 1], (rel, start, end)
            assert reply.headers["content-range"] == f"bytes {start}-{end}/{len(original)}"
        e01 = served.original("Season 1/e01.mkv")
        tail = await curl(url(port, served, "Season 1/e01.mkv"), "-r", "-1000")
        assert tail.status == 206 and tail.body == e01[-1000:]
        open_ended = await curl(url(port, served, "Season 1/e01.mkv"), "-r", "1400000-")
        assert open_ended.body == e01[1_400_000:]
        over_h2 = await curl(url(port, served, "Season 1/e01.mkv"), "--http2-prior-knowledge",
                             "-r", "1000-200999")
        assert over_h2.status == 206 and over_h2.body == e01[1000:201_000]
        past_end = await curl(url(port, served, "Season 1/e01.mkv"), "-r",
                              "1500000-99999999999999999999999999")
        assert past_end.status == 206 and past_end.body == e01[1_500_000:]
    assert readers(served) == 0


async def test_head_headers_and_content_types(tmp_path: Path, no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    async with serving(served) as port:
        head = await curl(url(port, served, "Season 1/e01.mkv"), "-I")
        assert head.status == 200 and head.body == b""
        assert head.headers["content-length"] == "1500001"
        assert head.headers["content-type"] == "video/x-matroska"
        assert head.headers["etag"] == f'"{served.info_hash}-0"'
        assert head.headers["accept-ranges"] == "bytes"
        mp4 = await curl(url(port, served, "Season 1/ä b #1.mp4"), "-I")
        assert mp4.headers["content-type"] == "video/mp4"
        assert "filename*=UTF-8''%C3%A4%20b%20%231.mp4" in mp4.headers["content-disposition"]
        txt = await curl(url(port, served, "notes.txt"), "-I")
        assert txt.headers["content-type"].startswith("text/plain")
        empty = await curl(url(port, served, "empty.dat"))
        assert empty.status == 200 and empty.body == b"" and empty.headers["content-length"] == "0"
        ranged_head = await curl(url(port, served, "notes.txt"), "-I", "-r", "0-9")
        assert ranged_head.status == 200  # HEAD ignores Range
        etag = head.headers["etag"]
        cached = await curl(url(port, served, "Season 1/e01.mkv"), "-H", f"If-None-Match: {etag}")
        assert cached.status == 304 and cached.body == b""
        if_range = await curl(url(port, served, "notes.txt"), "-r", "0-9",
                              "-H", f"If-Range: {txt.headers['etag']}")
        assert if_range.status == 206 and if_range.body == served.original("notes.txt")[:10]
        stale = await curl(url(port, served, "notes.txt"), "-r", "0-9", "-H", 'If-Range: "old"')
        assert stale.status == 200 and stale.body == served.original("notes.txt")


@pytest.mark.parametrize(("header", "status"), [
    ("bytes=1234-", 416),  # starts at the end of the 1234-byte file
    ("bytes=99999999999999999999999999999999-", 416),
    ("bytes=5-1", 416),
    ("bytes=abc", 416),
    ("bytes=-0", 416),
    ("bytes=", 416),
    ("bytes=1-2,x", 416),
    ("bytes=" + ",".join(["1-2"] * 100), 416),
    ("bytes=0-1,5-9", 200),  # several ranges: the whole file
    ("pages=1-2", 200),  # a unit we do not know: ignored
    ("bytes=0-0", 206),
])
async def test_range_answers(tmp_path: Path, no_tracebacks: None, header: str,
                             status: int) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    async with serving(served) as port:
        reply = await curl(url(port, served, "notes.txt"), "-H", f"Range: {header}")
        assert reply.status == status, reply.body
        if status == 416:
            assert reply.headers["content-range"] == "bytes */1234"
            assert "error" in reply.json()
        elif status == 200:
            assert reply.body == served.original("notes.txt")


async def test_bad_requests_get_a_status_and_the_server_goes_on(tmp_path: Path,
                                                                no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    other = "0" * 40
    async with serving(served) as port:
        base = f"http://127.0.0.1:{port}"
        cases = [
            (f"{base}/t/{other}/notes.txt", (), 404),
            (f"{base}/t/{served.info_hash}/nothing.txt", (), 404),
            (f"{base}/t/{served.info_hash}/Season%201", (), 404),  # a folder: no listing
            (f"{base}/t/{served.info_hash}/", (), 404),
            (f"{base}/t/{served.info_hash}/../../../etc/passwd", ("--path-as-is",), 400),
            (f"{base}/t/{served.info_hash}/Season%201/%2e%2e/notes.txt", ("--path-as-is",), 400),
            (f"{base}/t/{served.info_hash}/Season%201%2fe01.mkv", (), 400),
            (f"{base}/t/{served.info_hash}/%ff%fe", (), 400),
            (f"{base}/t/{served.info_hash}/notes.txt%00", (), 400),
            (f"{base}/t/nothex/notes.txt", (), 404),
            (f"{base}/etc/passwd", (), 404),
            (f"{base}/static/../../mount.py", ("--path-as-is",), 400),
            (f"{base}/static/index.html", (), 404),
            (f"{base}/t/{served.info_hash}/notes.txt", ("-X", "POST"), 405),
            (f"{base}/t/{served.info_hash}/notes.txt", ("-X", "DELETE"), 405),
            (f"{base}/api/torrents/{other}", (), 404),
            (f"{base}/api/torrents/{other}", ("-X", "DELETE"), 404),
            (f"{base}/api/nothing", (), 404),
        ]
        for address, extra, status in cases:
            reply = await curl(address, *extra)
            assert reply.status == status, (address, reply.status, reply.body)
            assert reply.headers["content-type"] == "application/json"
            assert "error" in reply.json()
        # Not HTTP at all, an oversized header, a request line that never ends
        garbage = await raw_request(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        huge = await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 70000
                                 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 4") or huge == b""
        whole = await curl(url(port, served, "Season 1/e01.mkv"))
        assert whole.body == served.original("Season 1/e01.mkv")


async def test_playlists_list_the_media_with_absolute_urls(tmp_path: Path,
                                                           no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    async with serving(served) as port:
        for path in (f"/t/{served.info_hash}.m3u", "/playlist.m3u"):
            reply = await curl(f"http://127.0.0.1:{port}{path}")
            assert reply.status == 200
            assert reply.headers["content-type"].startswith("audio/x-mpegurl")
            lines = reply.body.decode().splitlines()
            assert lines[0] == "#EXTM3U"
            urls = [line for line in lines if not line.startswith("#")]
            assert urls == [url(port, served, "Season 1/e01.mkv"),
                            url(port, served, "Season 1/ä b #1.mp4")]
            for address in urls:  # every entry plays back exactly
                rel = next(r for r in TREE if url(port, served, r) == address)
                assert (await curl(address)).body == served.original(rel)
        # The Host the client used is the one in the playlist
        named = await curl(f"http://127.0.0.1:{port}/playlist.m3u", "-H",
                           f"Host: localhost:{port}")
        assert f"http://localhost:{port}/t/" in named.body.decode()
        unknown = await curl(f"http://127.0.0.1:{port}/t/{'1' * 40}.m3u")
        assert unknown.status == 404


async def test_token(tmp_path: Path, no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    async with serving(served, token="s3cret-T0ken") as port:
        address = url(port, served, "notes.txt")
        for extra in ((), ("-H", "Authorization: Bearer wrong"),
                      ("-H", "Authorization: s3cret-T0ken")):
            denied = await curl(address, *extra)
            assert denied.status == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        assert (await curl(f"{address}?token=wrong")).status == 401
        for page in ("/api/torrents", "/playlist.m3u", f"/t/{served.info_hash}.m3u",
                     f"/api/torrents/{served.info_hash}"):
            assert (await curl(f"http://127.0.0.1:{port}{page}")).status == 401, page
        for page in ("/", "/static/app.js"):  # the page's own files: nothing of the mount's
            assert (await curl(f"http://127.0.0.1:{port}{page}")).status == 200, page
        by_header = await curl(address, "-H", "Authorization: Bearer s3cret-T0ken")
        assert by_header.status == 200 and by_header.body == served.original("notes.txt")
        by_query = await curl(f"{address}?token=s3cret-T0ken")
        assert by_query.body == served.original("notes.txt")
        playlist = await curl(f"http://127.0.0.1:{port}/playlist.m3u?token=s3cret-T0ken")
        urls = [line for line in playlist.body.decode().splitlines() if line.startswith("http")]
        assert urls and all(u.endswith("?token=s3cret-T0ken") for u in urls)
        assert (await curl(urls[0])).status == 200


async def test_without_a_token_the_host_must_be_this_machine(tmp_path: Path,
                                                              no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    async with serving(served) as port:
        api = f"http://127.0.0.1:{port}/api/torrents"
        assert (await curl(api, "-H", "Host: evil.example")).status == 403
        assert (await curl(api, "-H", f"Host: evil.example:{port}")).status == 403
        assert (await curl(api, "-H", f"Host: localhost:{port}")).status == 200
        assert (await curl(api, "-H", f"Host: [::1]:{port}")).status == 200
        assert (await curl(api)).status == 200


async def test_a_request_waits_for_its_pieces(tmp_path: Path, no_tracebacks: None) -> None:
    origin = make_random_file(tmp_path / "origin" / "big.bin", 2_000_000, seed=4)
    served = empty_torrent(origin, tmp_path / "cache")
    async with serving(served) as port, trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def fetch() -> None:
            got.append((await curl(url(port, served, "big.bin"), "-r", "100000-1299999")).body)

        nursery.start_soon(fetch)
        await wait_until(lambda: served.torrent.counters.waited_pieces, "the request to wait")
        assert readers(served) == 1 and not got
        await feed_pieces(served)
        await wait_until(lambda: got, "the answer")
        assert got[0] == origin.read_bytes()[100_000:1_300_000]
        await wait_until(lambda: readers(served) == 0, "the reader to close")


async def test_a_client_that_leaves_while_waiting_cancels_its_wait(
        tmp_path: Path, no_tracebacks: None) -> None:
    origin = make_random_file(tmp_path / "origin" / "big.bin", 500_000, seed=4)
    served = empty_torrent(origin, tmp_path / "cache")
    async with serving(served) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(f"GET /t/{served.info_hash}/big.bin HTTP/1.1\r\n"
                              f"Host: 127.0.0.1\r\nRange: bytes=0-99\r\n\r\n".encode())
        await wait_until(lambda: readers(served) == 1 and served.torrent.counters.waited_pieces,
                         "the request to wait")
        await stream.aclose()
        # at once: well before any piece arrives, with nothing sent to notice it by
        await wait_until(lambda: readers(served) == 0, "the wait to be cancelled", 5)
        await feed_pieces(served)
        assert (await curl(url(port, served, "big.bin"))).body == origin.read_bytes()


async def test_a_client_that_leaves_mid_body_or_stalls(tmp_path: Path,
                                                       no_tracebacks: None) -> None:
    origin = make_random_file(tmp_path / "origin" / "big.bin", 48 << 20, seed=5)
    served = await verified_torrent(origin, piece_length=1 << 20)
    async with serving(served, stall_timeout=1.0) as port:
        request = (f"GET /t/{served.info_hash}/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                   .encode())
        # Leaves after the first bytes
        leaver = await trio.open_tcp_stream("127.0.0.1", port)
        await leaver.send_all(request)
        assert (await leaver.receive_some(65536)).startswith(b"HTTP/1.1 200")
        await leaver.aclose()
        await wait_until(lambda: readers(served) == 0, "the leaver's reader to close", 10)
        # Stalls: reads nothing at all. Meanwhile another client is served in full.
        staller = await trio.open_tcp_stream("127.0.0.1", port)
        await staller.send_all(request)
        await wait_until(lambda: readers(served) == 1, "the staller's response to start")
        part = await curl(url(port, served, "big.bin"), "-r", "1000-2000999")
        assert part.body == origin.read_bytes()[1000:2_001_000]
        # the kernel drops the stalled connection once its window stayed shut for 1 s
        await wait_until(lambda: readers(served) == 0, "the stalled client to be dropped", 30)
        await staller.aclose()
        assert (await curl(url(port, served, "big.bin"), "-r", "0-9")).status == 206


async def test_shutdown_with_a_stalled_client_does_not_hang(tmp_path: Path,
                                                            no_tracebacks: None) -> None:
    origin = make_random_file(tmp_path / "origin" / "big.bin", 48 << 20, seed=5)
    served = await verified_torrent(origin, piece_length=1 << 20)
    staller = None
    with trio.fail_after(10):
        async with serving(served) as port:  # the default stall timeout: 60 s
            staller = await trio.open_tcp_stream("127.0.0.1", port)
            await staller.send_all(f"GET /t/{served.info_hash}/big.bin HTTP/1.1\r\n"
                                   f"Host: 127.0.0.1\r\n\r\n".encode())
            await wait_until(lambda: readers(served) == 1, "the response to start")
            await trio.sleep(0.5)  # the socket buffers fill up
    assert readers(served) == 0
    await staller.aclose()


async def test_players_probe_play_and_seek(tmp_path: Path, media_mp4: Path,
                                           no_tracebacks: None) -> None:
    ffprobe = require_tool("ffprobe", "ffmpeg")
    mpv = require_tool("mpv", "mpv")
    clip = tmp_path / "origin" / "clip.mp4"
    clip.parent.mkdir()
    await trio.Path(clip).write_bytes(await trio.Path(media_mp4).read_bytes())
    served = await verified_torrent(clip, piece_length=16384)
    async with serving(served) as port:
        address = url(port, served, "clip.mp4")
        probe = await trio.run_process(
            [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of",
             "default=nw=1:nk=1", address], capture_stdout=True, capture_stderr=True,
            check=False)
        assert probe.returncode == 0, probe.stderr
        assert abs(float(probe.stdout) - 6) < 0.5
        played = await trio.run_process(
            [mpv, "--no-config", "--vo=null", "--ao=null", "--start=50%", "--length=2",
             "--msg-level=all=v", address], capture_stdout=True, capture_stderr=True,
            check=False)
        out = (played.stdout + played.stderr).decode(errors="replace")
        assert played.returncode == 0, out[-3000:]
        assert "Exiting... (End of file)" in out or "EOF reached" in out, out[-3000:]
        seeks = [line for line in out.splitlines() if "seek" in line.lower()]
        assert seeks, out[-3000:]
        playlist = await trio.run_process(
            [mpv, "--no-config", "--vo=null", "--ao=null", "--start=3", "--length=1",
             f"http://127.0.0.1:{port}/t/{served.info_hash}.m3u"],
            capture_stdout=True, capture_stderr=True, check=False)
        assert playlist.returncode == 0, playlist.stderr[-3000:]



async def test_api_lists_adds_and_removes_through_the_catalog(tmp_path: Path,
                                                              no_tracebacks: None) -> None:
    library = MemoryLibrary(tmp_path / "cache")
    first = make_tree(tmp_path / "one" / "tree", TREE, seed=3)
    second = make_random_file(tmp_path / "two" / "song.mp3", 200_000, seed=6)
    unknown = make_random_file(tmp_path / "three" / "other.bin", 50_000, seed=7)
    meta_first = library.know(first)
    meta_second = library.know(second)
    async with serving(library) as port:
        api = f"http://127.0.0.1:{port}/api/torrents"
        empty = await curl(api)
        assert empty.json() == {"can_change": True, "torrents": []}
        torrent_file = tmp_path / "first.torrent"
        torrent_file.write_bytes(make_torrent(first, CreateOptions(piece_length=32768,
                                                                   creation_date=None)))
        added = await curl(api, "-H", "Content-Type: application/x-bittorrent",
                           "--data-binary", f"@{torrent_file}")
        assert added.status == 201 and added.json() == {"info_hash": meta_first.info_hash_hex}
        assert added.headers["location"] == f"/api/torrents/{meta_first.info_hash_hex}"
        magnet = f"magnet:?xt=urn:btih:{meta_second.info_hash_hex}&dn=song"
        by_magnet = await curl(api, "-H", "Content-Type: application/json",
                               "--data", json.dumps({"magnet": magnet}))
        assert by_magnet.status == 201
        listing = (await curl(f"{api}?files=1")).json()
        assert [t["name"] for t in listing["torrents"]] == ["tree", "song.mp3"]
        tree = listing["torrents"][0]
        assert tree["progress"] == 1.0 and tree["file_count"] == 4
        files = {f["path"]: f for f in tree["files"]}
        assert files["Season 1/e01.mkv"]["media"] and not files["notes.txt"]["media"]
        assert files["Season 1/e01.mkv"]["bar"] == [100] * 46
        one = (await curl(f"{api}/{meta_second.info_hash_hex}")).json()
        assert one["files"][0]["url"] == f"/t/{meta_second.info_hash_hex}/song.mp3"
        song = await curl(f"http://127.0.0.1:{port}{one['files'][0]['url']}")
        assert song.body == second.read_bytes()
        # refusals, each with its status and a message
        refusals = [
            (("-H", "Content-Type: application/json", "--data", json.dumps({"magnet": magnet})),
             409, "already"),
            (("-H", "Content-Type: application/json", "--data", "{not json"), 400, "not JSON"),
            (("-H", "Content-Type: application/json", "--data", "[1]"), 400, "expected"),
            (("-H", "Content-Type: application/json", "--data", '{"magnet": "magnet:?x=1"}'),
             400, "magnet"),
            (("-H", "Content-Type: text/plain", "--data", magnet), 415, "application/json"),
            (("--data", magnet), 415, "application/json"),  # a form post: never accepted
            (("-H", "Content-Type: application/x-bittorrent", "--data", "d4:infoe"), 400, ""),
            (("-H", "Content-Type: application/json", "--data",
              json.dumps({"magnet": f"magnet:?xt=urn:btih:{'c' * 40}"})), 400, "metadata"),
            (("-X", "PUT"), 405, "not allowed"),
        ]
        for args, status, message in refusals:
            reply = await curl(api, *args)
            assert reply.status == status and message in reply.json()["error"], (args, reply)
        too_big = await raw_request(
            port, b"POST /api/torrents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/x-bittorrent\r\nContent-Length: 999999999999\r\n\r\n")
        assert too_big.startswith(b"HTTP/1.1 413")
        # a .torrent nobody has the data of: added, its reads wait for pieces
        unknown_file = tmp_path / "unknown.torrent"
        unknown_file.write_bytes(make_torrent(unknown, CreateOptions(piece_length=32768)))
        waiting = await curl(api, "-H", "Content-Type: application/x-bittorrent",
                             "--data-binary", f"@{unknown_file}")
        assert waiting.status == 201
        key = waiting.json()["info_hash"]
        detail = (await curl(f"{api}/{key}")).json()
        assert detail["progress"] == 0 and detail["files"][0]["bar"] == [0, 0]
        assert (await curl(f"{api}/{key}", "-X", "DELETE")).status == 204
        # remove: gone from the list, its files 404, a second remove 404
        removed = await curl(f"{api}/{meta_first.info_hash_hex}", "-X", "DELETE")
        assert removed.status == 204
        assert [t["name"] for t in (await curl(api)).json()["torrents"]] == ["song.mp3"]
        gone = await curl(f"http://127.0.0.1:{port}/t/{meta_first.info_hash_hex}/notes.txt")
        assert gone.status == 404
        again = await curl(f"{api}/{meta_first.info_hash_hex}", "-X", "DELETE")
        assert again.status == 404


async def test_single_torrent_mount_refuses_changes_clearly(tmp_path: Path,
                                                            no_tracebacks: None) -> None:
    served = await verified_torrent(make_tree(tmp_path / "tree", TREE, seed=3))
    async with serving(served) as port:
        api = f"http://127.0.0.1:{port}/api/torrents"
        add = await curl(api, "-H", "Content-Type: application/json", "--data",
                         json.dumps({"magnet": f"magnet:?xt=urn:btih:{'c' * 40}"}))
        assert add.status == 409 and "holds one torrent" in add.json()["error"]
        remove = await curl(f"{api}/{served.info_hash}", "-X", "DELETE")
        assert remove.status == 409 and "holds one torrent" in remove.json()["error"]
        assert (await curl(api)).json()["can_change"] is False


async def test_reads_that_cannot_be_answered(tmp_path: Path, no_tracebacks: None) -> None:
    origin = make_random_file(tmp_path / "origin" / "big.bin", 300_000, seed=4)
    served = empty_torrent(origin, tmp_path / "cache")
    async with serving(served, wait_timeout=0.5) as port:
        late = await curl(url(port, served, "big.bin"), "-r", "0-99")
        assert late.status == 504 and "in time" in late.json()["error"]
        await wait_until(lambda: readers(served) == 0, "the reader to close")
    async with serving(served) as port, trio.open_nursery() as nursery:
        replies: list[Reply] = []

        async def fetch() -> None:
            replies.append(await curl(url(port, served, "big.bin")))

        nursery.start_soon(fetch)
        await wait_until(lambda: readers(served) == 1, "the request to wait")
        served.torrent.close()  # the mount shuts down, or a library removes the torrent
        await wait_until(lambda: replies, "the answer")
        assert replies[0].status == 503 and "shutting down" in replies[0].json()["error"]
