"""The tracker client against a real opentracker on loopback, and against small fake
trackers (in the test's own trio loop) for what opentracker cannot show: IPv6 answers,
lost UDP packets, HTTP redirects and oversized answers.

Debian's opentracker is built with a whitelist: without `-w` it refuses every torrent
("Requested download is not authorized", and over UDP an 8-byte announce answer), so
the fixture whitelists a few random info-hashes. It records peers by the address their
packets come from, which here is 127.0.0.1 for everyone; peers are told apart by port.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from btfs import bencode, trackers
from btfs.trackers import (
    AnnounceParams,
    ConnectionIds,
    TrackerError,
    TrackerFailure,
    TrackerSession,
    announce,
    scrape,
)
from tests.support import env, net
from tests.support.clients import start_opentracker
from tests.support.procs import Processes

pytestmark = pytest.mark.timeout(60)


@dataclass
class Opentracker:
    host: str
    port: int
    info_hashes: list[bytes]

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}/announce"

    @property
    def udp(self) -> str:
        return f"udp://{self.host}:{self.port}/announce"


@pytest.fixture
def opentracker(procs: Processes, loopback: str, free_port: Any) -> Iterator[Opentracker]:
    info_hashes = [os.urandom(20) for _ in range(6)]
    tracker = start_opentracker(procs, loopback, free_port(loopback), info_hashes)
    yield Opentracker(loopback, tracker.http_port, info_hashes)


def peer(
    info_hash: bytes, port: int, *, left: int = 1000, event: str = "started"
) -> AnnounceParams:
    return AnnounceParams(
        info_hash=info_hash,
        peer_id=os.urandom(20),
        port=port,
        uploaded=0,
        downloaded=0,
        left=left,
        event=event,
    )


def ports(peers: list[tuple[str, int]]) -> set[int]:
    return {p for _, p in peers}


@pytest.mark.parametrize("scheme", ["http", "udp"])
async def test_two_peers_find_each_other_scrape_and_stop(
    opentracker: Opentracker, scheme: str
) -> None:
    url = opentracker.http if scheme == "http" else opentracker.udp
    info_hash = opentracker.info_hashes[0]
    seeder = peer(info_hash, 7001, left=0)
    leecher = peer(info_hash, 7002)
    with trio.fail_after(30):
        first = await announce(url, seeder, timeout=5)
        assert first.interval > 0
        second = await announce(url, leecher, timeout=5)
        assert 7001 in ports(second.peers)
        assert all(host == "127.0.0.1" for host, _ in second.peers)
        assert (second.complete, second.incomplete) == (1, 1)
        seeder.event = ""
        again = await announce(url, seeder, timeout=5)
        assert 7002 in ports(again.peers)

        counts = await scrape(url, [info_hash, opentracker.info_hashes[1]], timeout=5)
        assert (counts[info_hash].complete, counts[info_hash].incomplete) == (1, 1)
        # A torrent without peers: opentracker's HTTP scrape leaves it out, UDP says zeros.
        other = counts.get(opentracker.info_hashes[1])
        assert other is None if scheme == "http" else other == trackers.ScrapeResult(0, 0, 0)

        leecher.event = "stopped"
        await announce(url, leecher, timeout=5)
        after = await announce(url, seeder, timeout=5)
        assert 7002 not in ports(after.peers)
        counts = await scrape(url, [info_hash], timeout=5)
        assert (counts[info_hash].complete, counts[info_hash].incomplete) == (1, 0)


async def test_http_and_udp_share_the_swarm(opentracker: Opentracker) -> None:
    info_hash = opentracker.info_hashes[2]
    with trio.fail_after(20):
        await announce(opentracker.http, peer(info_hash, 7101), timeout=5)
        result = await announce(opentracker.udp, peer(info_hash, 7102), timeout=5)
    assert 7101 in ports(result.peers)
    assert result.min_interval is None  # UDP answers carry no min interval


async def test_torrent_not_whitelisted_is_an_error(opentracker: Opentracker) -> None:
    with trio.fail_after(20):
        with pytest.raises(TrackerFailure, match="not authorized"):
            await announce(opentracker.http, peer(os.urandom(20), 7201), timeout=5)
        with pytest.raises(TrackerError, match="refused"):
            await announce(opentracker.udp, peer(os.urandom(20), 7201), timeout=5)


class FirstInOrder(random.Random):
    """Keeps each tier in the order given, so the dead URL is tried first."""

    def shuffle(self, x: list[Any]) -> None:  # type: ignore[override]
        pass


def dead_urls(loopback: str, free_port: Any) -> tuple[str, str]:
    port = free_port(loopback)  # nothing listens: refused at once over TCP and over UDP
    return f"http://{loopback}:{port}/announce", f"udp://{loopback}:{port}/announce"


async def test_session_survives_a_dead_url_and_uses_the_live_one(
    opentracker: Opentracker, loopback: str, free_port: Any
) -> None:
    info_hash = opentracker.info_hashes[3]
    dead_http, dead_udp = dead_urls(net.next_loopback_ipv4(), free_port)
    answers: list[list[tuple[str, int]]] = []
    both_tiers = trio.Event()
    left = [500]

    def on_peers(peers: list[tuple[str, int]]) -> None:
        answers.append(peers)
        if len(answers) == 2:
            both_tiers.set()

    session = TrackerSession(
        [[dead_udp, opentracker.udp], [dead_http, opentracker.http]],
        info_hash,
        os.urandom(20),
        7301,
        lambda: (0, 0, left[0]),
        on_peers,
        rng=FirstInOrder(),
        timeout=3,
    )
    with trio.fail_after(30):
        await announce(opentracker.http, peer(info_hash, 7302, left=0), timeout=5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await both_tiers.wait()
            assert set(session.last_result) == {opentracker.udp, opentracker.http}
            assert all(7302 in ports(peers) for peers in answers)
            left[0] = 0
            session.completed()
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        assert session.tiers.tiers == [[opentracker.udp, dead_udp],
                                       [opentracker.http, dead_http]]
        assert session.last_error[dead_udp] and session.last_error[dead_http]
        assert session.last_error[opentracker.udp] is None
        counts = await scrape(opentracker.http, [info_hash], timeout=5)
        assert counts[info_hash].complete == 2  # the completed announce reached it
        await session.stop()
        counts = await scrape(opentracker.http, [info_hash], timeout=5)
        assert (counts[info_hash].complete, counts[info_hash].incomplete) == (1, 0)


async def test_session_with_only_dead_trackers_keeps_retrying(
    loopback: str, free_port: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """Refused at once (TCP reset, ICMP unreachable), each tier retries with back-off:
    0.1, 0.2, 0.4, 0.8 s, so attempts at 0, 0.1, 0.3, 0.7 and 1.5 s of trio's clock."""
    dead_http, dead_udp = dead_urls(loopback, free_port)
    session = TrackerSession(
        [[dead_http], [dead_udp]],
        os.urandom(20),
        os.urandom(20),
        7401,
        lambda: (0, 0, 1),
        lambda peers: None,
        timeout=2,
        retry_initial=0.1,
    )
    with trio.fail_after(20):
        with trio.move_on_after(2):
            await session.run()
        await session.stop()  # nothing was announced: returns at once
    assert session.failures == {dead_http: 5, dead_udp: 5}
    assert session.last_error[dead_http]
    assert session.last_result == {}


# --- fake trackers for the paths opentracker does not exercise


def udp_answer(action: int, tid: int, payload: bytes) -> bytes:
    return struct.pack(">II", action, tid) + payload


async def test_udp_over_ipv6_retransmits_ignores_strays_and_caches_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    env.require_ipv6_loopback()
    sock = trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM)
    await sock.bind(("::1", 0))
    port = sock.getsockname()[1]
    seen: list[int] = []
    v6_peer = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + struct.pack(">H", 6881)

    async def tracker() -> None:
        dropped = False
        while True:
            data, addr = await sock.recvfrom(2048)
            action, tid = struct.unpack_from(">II", data, 8)
            seen.append(action)
            if action == 0 and not dropped:
                dropped = True  # lose the first connect: the client must send it again
                continue
            if action == 0:
                reply = udp_answer(0, tid, struct.pack(">Q", 0xC0FFEE))
            elif action == 1:
                assert struct.unpack_from(">Q", data)[0] == 0xC0FFEE
                await sock.sendto(udp_answer(1, tid ^ 1, b"\0" * 12), addr)  # a stray
                reply = udp_answer(1, tid, struct.pack(">III", 900, 2, 3) + v6_peer)
            else:
                n = (len(data) - 16) // 20
                reply = udp_answer(2, tid, struct.pack(">III", 4, 5, 6) * n)
            await sock.sendto(reply, addr)

    url = f"udp://[::1]:{port}/announce"
    ids = ConnectionIds()
    with sock, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker)
            start = trio.current_time()
            result = await announce(url, peer(b"i" * 20, 1), timeout=4, connection_ids=ids)
            # The connect is sent again after timeout/4 = 1 s, and answered at once.
            assert trio.current_time() - start == pytest.approx(1.0)
            assert result.peers == [("2001:db8::7", 6881)]
            assert (result.interval, result.complete, result.incomplete) == (900, 3, 2)
            counts = await scrape(url, [b"i" * 20, b"j" * 20], timeout=4, connection_ids=ids)
            assert counts[b"j" * 20] == trackers.ScrapeResult(4, 5, 6)
            nursery.cancel_scope.cancel()
    assert seen == [0, 0, 1, 2]  # the connection id was reused for the scrape


async def test_udp_silence_is_a_timeout(autojump_clock: trio.testing.MockClock) -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((net.next_loopback_ipv4(), 0))
    host, port = sock.getsockname()
    with sock, trio.fail_after(10):
        start = trio.current_time()
        with pytest.raises(TrackerError):
            await announce(f"udp://{host}:{port}", peer(b"i" * 20, 1), timeout=1.5)
        assert trio.current_time() - start == pytest.approx(1.5)


class FakeHttp:
    """A tiny HTTP/1.0-style server: answers by path, remembers the requests it saw."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
        target = head[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in head[1:])
        self.requests.append((target, {k.lower(): v for k, v in headers.items()}))
        path = target.split("?")[0]
        status, extra, body = "200 OK", "", b""
        if path == "/old/announce":
            status, extra = "302 Found", "Location: /announce?passkey=moved\r\n"
        elif path == "/loop/announce":
            status, extra = "301 Moved", "Location: /loop/announce\r\n"
        elif path == "/announce":
            peers = bytes([10, 9, 8, 7, 0x1A, 0xE1])
            body = bencode.encode({b"interval": 120, b"peers": peers})
        elif path == "/scrape":
            body = bencode.encode({b"files": {b"i" * 20: {b"complete": 1, b"downloaded": 2,
                                                           b"incomplete": 3}}})
        elif path == "/big/announce":
            body = b"d5:peers" + str(2 << 20).encode() + b":" + b"\0" * (2 << 20) + b"e"
        elif path == "/denied/announce":
            status, body = "403 Forbidden", bencode.encode({b"failure reason": b"go away"})
        else:
            status, body = "404 Not Found", b"<html>nope</html>"
        response = f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode()
        try:
            await stream.send_all(response + body)
        except trio.BrokenResourceError:
            pass  # the client gave up on an oversized answer
        await stream.aclose()


async def serve(nursery: trio.Nursery, fake: FakeHttp, host: str) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, fake.handle, 0, host=host))
    return int(listeners[0].socket.getsockname()[1])


async def test_http_redirect_query_host_header_and_scrape() -> None:
    fake, host = FakeHttp(), net.next_loopback_ipv4()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await serve(nursery, fake, host)
            base = f"http://{host}:{port}"
            result = await announce(f"{base}/old/announce?passkey=abc", peer(b"i" * 20, 1))
            assert result.peers == [("10.9.8.7", 6881)]
            (first, first_headers), (second, _) = fake.requests
            assert first.startswith("/old/announce?passkey=abc&info_hash=")
            assert second == "/announce?passkey=moved"
            assert first_headers["host"] == f"{host}:{port}"
            assert first_headers["connection"] == "close"
            counts = await scrape(f"{base}/announce", [b"i" * 20])
            assert counts[b"i" * 20] == trackers.ScrapeResult(1, 2, 3)
            assert fake.requests[-1][0] == "/scrape?info_hash=" + "i" * 20
            with pytest.raises(TrackerError, match="redirects"):
                await announce(f"{base}/loop/announce", peer(b"i" * 20, 1))
            assert len(fake.requests) == 3 + 4
            with pytest.raises(TrackerError, match="larger than"):
                await announce(f"{base}/big/announce", peer(b"i" * 20, 1))
            with pytest.raises(TrackerFailure, match="go away"):
                await announce(f"{base}/denied/announce", peer(b"i" * 20, 1))
            with pytest.raises(TrackerError, match="404"):
                await announce(f"{base}/missing/announce", peer(b"i" * 20, 1))
            nursery.cancel_scope.cancel()


async def test_http_over_ipv6_literal() -> None:
    env.require_ipv6_loopback()
    fake = FakeHttp()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await serve(nursery, fake, "::1")
            result = await announce(f"http://[::1]:{port}/announce", peer(b"i" * 20, 1))
            assert result.interval == 120
            assert fake.requests[0][1]["host"] == f"[::1]:{port}"
            nursery.cancel_scope.cancel()


async def test_unreachable_and_unsupported_urls() -> None:
    with trio.fail_after(20):
        with pytest.raises(TrackerError):
            await announce("http://no-such-host.invalid/announce", peer(b"i" * 20, 1))
        with pytest.raises(TrackerError, match="unsupported"):
            await announce("wss://tracker.example/announce", peer(b"i" * 20, 1))
        with pytest.raises(TrackerError):
            await announce("udp://127.0.0.1/announce", peer(b"i" * 20, 1))  # no port
        with pytest.raises(TrackerError):
            await announce("http://127.0.0.1:99999/announce", peer(b"i" * 20, 1))
        with pytest.raises(TrackerError, match="no scrape"):
            await scrape("http://127.0.0.1/a", [b"i" * 20])
