"""Web seeds (BEP 19) against a real nginx on loopback serving a multi-file torrent's data:
byte-identical fetches across file boundaries and padding, kept-alive connections,
redirects, https, and the faults: a server that is down, one that never answers, one
whose file is short, one that ignores ranges, one that serves other bytes; a seed is
dropped after failures in a row."""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import trio

from btfs.metainfo import Info, parse_info
from btfs.webseed import WebSeed, WebSeedError
from tests.support.nginx import Nginx, self_signed_certificate, start_nginx
from tests.support.procs import Processes

pytestmark = pytest.mark.timeout(60)

NAME = "web torrent"
PIECE = 32768
# (path, length, padding): a padding file (never on the server) aligns "dir one/…" to
# 48 KiB; "tiny" lies inside one piece; names need percent-encoding.
FILES: list[tuple[str, int, bool]] = [
    ("a.bin", 40000, False),
    (".pad/9152", 9152, True),
    ("dir one/b ü#?%+.bin", 70001, False),
    ("empty", 0, False),
    ("tiny", 100, False),
    ("c.bin", 123457, False),
]
SHORT_FILE = "c.bin"  # on /short/ it is cut 1000 bytes short
WRONG_FILE = "dir one/b ü#?%+.bin"  # on /wrong/ one byte differs


@dataclass
class Served:
    nginx: Nginx
    info: Info
    stream: bytes  # the torrent's bytes, padding as zeros
    cert: Path
    root: Path  # good/, short/, wrong/

    def expected(self, piece: int, begin: int, length: int) -> bytes:
        start = piece * PIECE + begin
        return self.stream[start : start + length]

    def whole(self, piece: int) -> tuple[int, int, int]:
        return piece, 0, self.info.piece_size(piece)

    def on_server(self, piece: int, begin: int, length: int) -> int:
        """How many of these bytes are not padding."""
        start = piece * PIECE + begin
        padding = sum(max(0, min(start + length, f.offset + f.length) - max(start, f.offset))
                      for f in self.info.files if f.padding)
        return length - padding


def make_data(root: Path) -> tuple[Info, bytes]:
    """good/, short/ and wrong/ copies of the torrent's files under `root`, and its Info."""
    entries, stream = [], b""
    for path, length, padding in FILES:
        content = bytes(length) if padding else hashlib.shake_256(path.encode()).digest(length)
        stream += content
        entry: dict[bytes, Any] = {b"length": length,
                                   b"path": [p.encode() for p in path.split("/")]}
        entries.append(entry)
        if padding:
            entry[b"attr"] = b"p"
            continue
        for variant in ("good", "short", "wrong"):
            data = content
            if variant == "short" and path == SHORT_FILE:
                data = content[:-1000]
            if variant == "wrong" and path == WRONG_FILE:
                data = content[:500] + bytes([content[500] ^ 0xFF]) + content[501:]
            target = root / variant / NAME / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    pieces = b"".join(hashlib.sha1(stream[i : i + PIECE]).digest()
                      for i in range(0, len(stream), PIECE))
    info = parse_info({b"name": NAME.encode(), b"piece length": PIECE, b"pieces": pieces,
                       b"files": entries})
    return info, stream


@pytest.fixture
def served(procs: Processes, tmp_path: Path, loopback: str, free_port: Any) -> Iterator[Served]:
    root = tmp_path / "www"
    info, stream = make_data(root)
    cert = self_signed_certificate(tmp_path / "tls", loopback)
    locations = f"""
        location /moved/ {{ if ($request_uri ~ "^/moved(/.*)$") {{ return 302 $1; }} }}
        location /rel/ {{
            absolute_redirect off;
            if ($request_uri ~ "^/rel(/.*)$") {{ return 302 $1; }}
        }}
        location /loop/ {{ return 302 /loop/again; }}
        location /norange/ {{ alias {root}/good/; max_ranges 0; }}
        location /brief/ {{ alias {root}/good/; keepalive_timeout 1s; }}
    """
    nginx = start_nginx(procs, tmp_path / "nginx", loopback, free_port(loopback), root,
                        locations=locations, https_port=free_port(loopback), certificate=cert)
    yield Served(nginx, info, stream, cert[0], root)


async def test_fetches_are_the_torrent_bytes_across_files_and_padding(served: Served) -> None:
    info = served.info
    ranges = [served.whole(piece) for piece in range(info.num_pieces)]
    ranges += [(1, 7000, 16384), (1, 16384, 16384), (3, 2000, 30000), (2, 10, 20)]
    async with WebSeed(served.nginx.url("/good/"), info) as seed:
        for piece, begin, length in ranges:
            assert await seed.fetch(piece, begin, length) == served.expected(
                piece, begin, length)
        assert seed.failures == 0 and not seed.dropped
        assert seed.downloaded == sum(served.on_server(*r) for r in ranges)
        assert seed.downloaded < sum(length for _, _, length in ranges)
        assert seed.rate > 0 and seed.expected_seconds(PIECE) < 60
    log = served.nginx.requests()
    assert {status for _, status, _ in log} == {206}
    uris = {uri for _, _, uri in log}
    assert uris == {"/good/web%20torrent/a.bin", "/good/web%20torrent/tiny",
                    "/good/web%20torrent/c.bin",
                    "/good/web%20torrent/dir%20one/b%20%C3%BC%23%3F%25%2B.bin"}
    async with WebSeed(served.nginx.url("/good"), info) as seed:  # no trailing '/'
        assert await seed.fetch(*served.whole(2)) == served.expected(*served.whole(2))


async def test_connections_are_kept_alive_and_limited_per_host(served: Served) -> None:
    info = served.info
    async with WebSeed(served.nginx.url("/good/"), info, connections_per_host=1) as seed:
        for piece in range(info.num_pieces):
            await seed.fetch(*served.whole(piece))
    one = served.nginx.requests()
    assert len(one) > info.num_pieces  # pieces across files: several requests
    assert len({conn for conn, _, _ in one}) == 1

    results: dict[int, bytes] = {}
    async with WebSeed(served.nginx.url("/good/"), info, connections_per_host=2) as seed:

        async def fetch(piece: int) -> None:
            results[piece] = await seed.fetch(*served.whole(piece))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                for piece in range(info.num_pieces):
                    nursery.start_soon(fetch, piece)
        assert seed.connections_opened == 2
    assert results == {p: served.expected(*served.whole(p)) for p in range(info.num_pieces)}
    two = served.nginx.requests()[len(one):]
    assert len(two) == 3 * len(one)
    assert len({conn for conn, _, _ in two}) == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced(served: Served) -> None:
    async with WebSeed(served.nginx.url("/brief/"), served.info) as seed:
        assert await seed.fetch(0, 0, 100) == served.expected(0, 0, 100)
        await trio.sleep(1.5)  # past the location's keepalive_timeout
        assert await seed.fetch(0, 100, 100) == served.expected(0, 100, 100)
        assert seed.failures == 0
        assert seed.connections_opened == 2


async def test_redirects_absolute_and_relative_are_followed(served: Served) -> None:
    # /moved/rel/good/… answers with an absolute Location to /rel/good/…, which answers
    # with a relative one to /good/…
    async with WebSeed(served.nginx.url("/moved/rel/good/"), served.info) as seed:
        assert await seed.fetch(0, 0, 100) == served.expected(0, 0, 100)
        assert await seed.fetch(*served.whole(1)) == served.expected(*served.whole(1))
    log = [(status, uri) for _, status, uri in served.nginx.requests()]
    assert log[:3] == [(302, "/moved/rel/good/web%20torrent/a.bin"),
                       (302, "/rel/good/web%20torrent/a.bin"),
                       (206, "/good/web%20torrent/a.bin")]
    async with WebSeed(served.nginx.url("/loop/"), served.info) as seed:
        with pytest.raises(WebSeedError, match="more than 3 HTTP redirects"):
            await seed.fetch(0, 0, 100)
        assert seed.failures == 1


async def test_https(served: Served) -> None:
    trusted = ssl.create_default_context(cafile=str(served.cert))
    url = served.nginx.url("/good/", https=True)
    async with WebSeed(url, served.info, ssl_context=trusted) as seed:
        assert await seed.fetch(*served.whole(0)) == served.expected(*served.whole(0))
        assert await seed.fetch(*served.whole(5)) == served.expected(*served.whole(5))
        assert seed.connections_opened == 1
    async with WebSeed(url, served.info) as seed:  # the default context does not know it
        with pytest.raises(WebSeedError, match="CERTIFICATE_VERIFY_FAILED"):
            await seed.fetch(0, 0, 100)


async def test_server_down_is_a_counted_failure(loopback: str, free_port: Any,
                                                served: Served) -> None:
    url = f"http://{loopback}:{free_port(loopback)}/"  # nobody listens there
    async with WebSeed(url, served.info, max_failures=3) as seed:
        for n in (1, 2):
            with pytest.raises(WebSeedError, match=r"(?i)connect"):
                await seed.fetch(0, 0, 100)
            assert seed.failures == n and not seed.dropped
        with pytest.raises(WebSeedError):
            await seed.fetch(0, 0, 100)
        assert seed.dropped
        with pytest.raises(WebSeedError, match="dropped after 3 failures"):
            await seed.fetch(0, 0, 100)
        assert seed.failures == 3


async def test_a_server_that_never_answers_times_out(loopback: str, served: Served) -> None:
    accepted: list[trio.SocketStream] = []

    async def silent(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0,
                                                          host=loopback))
        port = listeners[0].socket.getsockname()[1]
        async with WebSeed(f"http://{loopback}:{port}/", served.info, timeout=0.5) as seed:
            start = trio.current_time()
            with pytest.raises(WebSeedError, match=r"no answer within 0\.5 s"):
                await seed.fetch(0, 0, 100)
            assert 0.5 <= trio.current_time() - start < 5
            assert seed.failures == 1
        assert len(accepted) == 1
        nursery.cancel_scope.cancel()


async def test_a_short_file_fails_and_the_seed_is_dropped(served: Served) -> None:
    info = served.info
    last = info.num_pieces - 1  # its end lies in the bytes missing from c.bin
    async with WebSeed(served.nginx.url("/short/"), info, max_failures=2) as seed:
        assert await seed.fetch(0, 0, 100) == served.expected(0, 0, 100)  # a.bin is whole
        with pytest.raises(WebSeedError, match=r"c\.bin: Content-Range 'bytes \d+-\d+/122457'"):
            await seed.fetch(*served.whole(last))
        assert seed.failures == 1
        with pytest.raises(WebSeedError, match="not satisfiable"):
            await seed.fetch(last, info.piece_size(last) - 100, 100)
        assert seed.dropped
        served_before = len(served.nginx.requests())
        with pytest.raises(WebSeedError, match="dropped"):
            await seed.fetch(0, 0, 100)
        assert len(served.nginx.requests()) == served_before  # not asked again


async def test_a_server_ignoring_ranges_serves_whole_files_only(served: Served) -> None:
    async with WebSeed(served.nginx.url("/norange/"), served.info) as seed:
        # one piece holds all of "tiny": asked whole, a 200 is the right answer
        tiny = served.info.files[4]
        piece, begin = divmod(tiny.offset, PIECE)
        assert begin + tiny.length <= PIECE
        got = await seed.fetch(piece, begin, tiny.length)
        assert got == served.expected(piece, begin, tiny.length)
        with pytest.raises(WebSeedError, match="ignored the range"):
            await seed.fetch(0, 0, 100)
    assert [status for _, status, _ in await served.nginx.requests_logged(2)] == [200, 200]


async def test_wrong_bytes_are_returned_unchanged_for_the_hash_check(served: Served) -> None:
    info = served.info
    async with WebSeed(served.nginx.url("/wrong/"), info, max_failures=3) as seed:
        piece = (FILES[0][1] + FILES[1][1] + 500) // PIECE  # holds the changed byte
        got = await seed.fetch(*served.whole(piece))
        assert len(got) == info.piece_size(piece) and got != served.expected(*served.whole(piece))
        wrong = (served.root / "wrong" / NAME / WRONG_FILE).read_bytes()
        b_offset = info.files[2].offset - piece * PIECE
        assert got[b_offset:] == wrong[: PIECE - b_offset]  # exactly what was served
        assert hashlib.sha1(got).digest() != info.piece_hash(piece)
        assert seed.failures == 0
        for n in range(3):
            seed.report_hash_failure(piece)
            assert seed.failures == n + 1
        assert seed.dropped
        with pytest.raises(WebSeedError, match="failed its hash check"):
            await seed.fetch(0, 0, 100)


async def test_a_success_resets_the_failures_in_a_row(served: Served) -> None:
    async with WebSeed(served.nginx.url("/good/"), served.info, max_failures=3) as seed:
        seed.report_hash_failure(0)
        seed.report_hash_failure(0)
        assert seed.failures == 2
        await seed.fetch(0, 0, 100)
        assert seed.failures == 0 and seed.last_error is not None


async def test_an_answer_longer_than_asked_is_not_read_past_the_cap(
    loopback: str, served: Served
) -> None:
    """A range answer without Content-Length, body until close: reading stops at the cap."""
    sent: list[int] = []

    async def endless(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        head = (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/40000\r\n"
                b"Connection: close\r\n\r\n")
        try:
            await stream.send_all(head)
            for _ in range(1000):
                await stream.send_all(b"x" * 65536)
                sent.append(65536)
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, endless, 0,
                                                          host=loopback))
        port = listeners[0].socket.getsockname()[1]
        async with WebSeed(f"http://{loopback}:{port}/", served.info) as seed:
            with pytest.raises(WebSeedError, match="answer larger than 100 bytes"):
                await seed.fetch(0, 0, 100)
        nursery.cancel_scope.cancel()
    assert sum(sent) < 1000 * 65536


async def test_waiting_for_a_connection_slot_is_not_the_timeout(
    loopback: str, served: Served
) -> None:
    """Four fetches through one connection to a server that takes 0.3 s a request, with
    a 0.5 s timeout: each request is timed from when it has the connection."""

    async def slow(stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            data = (served.root / "good" / unquote(lines[0].split(" ")[1]).lstrip("/")
                    ).read_bytes()
            asked = next(v for k, _, v in (line.partition(": ") for line in lines)
                         if k.lower() == "range")
            first, last = map(int, asked.removeprefix("bytes=").split("-"))
            await trio.sleep(0.3)
            await stream.send_all(
                f"HTTP/1.1 206 Partial Content\r\nContent-Length: {last - first + 1}\r\n"
                f"Content-Range: bytes {first}-{last}/{len(data)}\r\n\r\n".encode()
                + data[first : last + 1])

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, slow, 0,
                                                          host=loopback))
        port = listeners[0].socket.getsockname()[1]
        url = f"http://{loopback}:{port}/"
        async with WebSeed(url, served.info, connections_per_host=1, timeout=0.5) as seed:
            got: dict[int, bytes] = {}

            async def fetch(i: int) -> None:
                got[i] = await seed.fetch(0, i * 100, 100)

            start = trio.current_time()
            async with trio.open_nursery() as fetches:
                for i in range(4):
                    fetches.start_soon(fetch, i)
            assert trio.current_time() - start >= 1.2
            assert got == {i: served.expected(0, i * 100, 100) for i in range(4)}
            assert seed.failures == 0 and seed.connections_opened == 1
        nursery.cancel_scope.cancel()
