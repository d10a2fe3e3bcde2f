"""The HTTP tracker's fast path answers byte for byte what h11 answers.

Each request kind of the corpus goes, over loopback TCP, to a tracker with the fast path
(`tracker.fastpath`) and to one that serves everything through h11 and the trio stream
(`HttpConfig(fast_path=False)`), each with a fresh store, the same random generator and a
fixed clock. Everything that comes back until the tracker closes (answers, error
statuses, timeouts of incomplete requests) must be the same bytes. Every kind is sent
whole, byte by byte, and in random pieces; between pieces every task is left to block, so
the tracker reads each piece on its own. The clock is trio's mock clock, jumping ahead
whenever all tasks wait: idle and incomplete connections time out at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

import pytest
import trio
import trio.testing

from tracker import fastpath, http
from tracker.http import HttpConfig, HttpTracker
from tracker.store.memory import SwarmStore

HASH = bytes([0, 1, 0x25, 0x26, 0x2B, 0x3D, 0x20, 0xFF]) + b"h" * 12
OTHER = b"o" * 20
PEER = b"-lt2000-" + b"\x00\xff" * 6


def announce_target(peer_id: bytes = PEER, port: int = 6881, **extra: object) -> bytes:
    params = {"info_hash": quote_from_bytes(HASH), "peer_id": quote_from_bytes(peer_id),
              "port": port, "uploaded": 0, "downloaded": 0, "left": 100, "key": "7f3a9b21",
              "numwant": 50, "compact": 1, **extra}
    return ("/announce?" + "&".join(f"{k}={v}" for k, v in params.items())).encode()


ANNOUNCE = announce_target()
SEED = announce_target(b"-qB4250-" + b"s" * 12, 7000, left=0, event="completed")
SCRAPE = b"/scrape?info_hash=" + quote_from_bytes(HASH).encode()


def get(target: bytes, *headers: bytes, version: bytes = b"1.1") -> bytes:
    """A GET with the headers given, each a whole line without its CRLF."""
    return b"GET %s HTTP/%s\r\n%s\r\n" % (target, version, b"".join(h + b"\r\n" for h in headers))


HOST = b"Host: tracker.example:6969"


def padded(size: int) -> bytes:
    """An announce whose request line, headers and empty line are `size` bytes."""
    bare = get(ANNOUNCE, HOST, b"X-Pad: ")
    return get(ANNOUNCE, HOST, b"X-Pad: " + b"p" * (size - len(bare)))
LIBTORRENT = (HOST, b"User-Agent: libtorrent/2.0.9", b"Accept-Encoding: gzip",
              b"Connection: close")
SIMPLE = (HOST, b"User-Agent: qBittorrent/4.6.2", b"Accept-Encoding: gzip")


@dataclass(frozen=True)
class Kind:
    name: str
    data: bytes
    fast: bool  # the fast-path tracker answers its first request without h11
    eof: bool = False  # the client half-closes after sending


CORPUS = [
    # What BitTorrent clients send: the fast path's own ground.
    Kind("announce", get(ANNOUNCE, *SIMPLE), True),
    Kind("announce, no headers but Host", get(ANNOUNCE, HOST), True),
    Kind("announce, upper-case HOST", get(ANNOUNCE, b"HOST: t"), True),
    Kind("announce, seed completed", get(SEED, *SIMPLE), True),
    Kind("announce compact=0", get(announce_target(compact=0), HOST), True),
    Kind("announce no_peer_id", get(announce_target(compact=0, no_peer_id=1), HOST), True),
    Kind("announce without info_hash", get(b"/announce?peer_id=x&port=1", HOST), True),
    Kind("announce with a bad port", get(announce_target(port=0), HOST), True),
    Kind("announce, event=empty", get(announce_target(event="empty"), HOST), True),
    Kind("scrape", get(SCRAPE, HOST), True),
    Kind("scrape of two", get(SCRAPE + b"&info_hash=" + OTHER, HOST), True),
    Kind("full scrape refused", get(b"/scrape", HOST), True),
    Kind("stats json", get(b"/stats?format=json", HOST), True),
    Kind("stats html", get(b"/stats", HOST), True),
    Kind("metrics", get(b"/metrics", HOST), True),
    Kind("unknown path", get(b"/nothing", HOST), True),
    Kind("absolute-form target", get(b"http://t" + ANNOUNCE, HOST), True),
    Kind("tab and trailing spaces in a value", get(ANNOUNCE, HOST, b"X-A:\tone\ttwo  "), True),
    Kind("empty header value", get(ANNOUNCE, HOST, b"X-Empty:"), True),
    Kind("non-ASCII header value", get(ANNOUNCE, HOST, b"X-Name: caf\xc3\xa9 \xff"), True),
    Kind("X-Forwarded-For from an untrusted peer", get(ANNOUNCE, HOST,
                                                       b"X-Forwarded-For: 10.9.9.9"), True),
    Kind("keep-alive, two announces pipelined", get(ANNOUNCE, HOST) + get(SEED, HOST), True),
    Kind("three requests, then EOF", get(SEED, HOST) + get(ANNOUNCE, HOST)
         + get(b"/stats?format=json", HOST), True, eof=True),
    Kind("simple, then HTTP/1.0", get(SEED, HOST) + get(ANNOUNCE, version=b"1.0"), True),
    Kind("simple, then a bad request line", get(SEED, HOST) + b"NOPE\r\n\r\n", True),
    Kind("simple, then Connection: close", get(SEED, HOST) + get(ANNOUNCE, *LIBTORRENT), True),
    Kind("simple, then cut off", get(SEED, HOST) + get(ANNOUNCE, HOST)[:40], True),
    Kind("Connection: close (libtorrent)", get(ANNOUNCE, *LIBTORRENT), True),
    Kind("Connection: close, then more", get(ANNOUNCE, *LIBTORRENT) + get(SEED, HOST), True),
    Kind("scrape, Connection: close", get(SCRAPE, HOST, b"Connection: close"), True),
    Kind("Connection: close, bad announce", get(announce_target(port=0), HOST,
                                                b"Connection: close"), True),
    Kind("request cut off in the headers", get(ANNOUNCE, HOST)[:-10], False),
    Kind("request cut off, then EOF", get(ANNOUNCE, HOST)[:-10], False, eof=True),
    # Everything else is h11's to judge, with the bytes the fast path had taken.
    Kind("Connection: keep-alive", get(ANNOUNCE, HOST, b"Connection: keep-alive"), False),
    Kind("Connection: close, TE", get(ANNOUNCE, HOST, b"Connection: close, TE"), False),
    Kind("HTTP/1.0", get(ANNOUNCE, version=b"1.0"), False),
    Kind("HTTP/1.0 keep-alive", get(ANNOUNCE, b"Connection: keep-alive", version=b"1.0")
         + get(SEED, version=b"1.0"), False),
    Kind("missing Host", get(ANNOUNCE, b"User-Agent: x"), False),
    Kind("two Host headers", get(ANNOUNCE, HOST, HOST), False),
    Kind("obs-fold continuation", get(ANNOUNCE, HOST, b"X-Long: one", b"  two"), False),
    Kind("space before the colon", get(ANNOUNCE, b"Host : t"), False),
    Kind("NUL in a header", get(ANNOUNCE, HOST, b"X-Bad: a\0b"), False),
    Kind("bare LF line ends", get(ANNOUNCE, HOST).replace(b"\r\n", b"\n"), False),
    Kind("leading empty line", b"\r\n" + get(ANNOUNCE, HOST), False),
    Kind("Content-Length body", get(ANNOUNCE, HOST, b"Content-Length: 5") + b"hello", False),
    Kind("oversized Content-Length body", get(ANNOUNCE, HOST, b"Content-Length: 2000")
         + b"x" * 2000, False),
    Kind("chunked body", get(ANNOUNCE, HOST, b"Transfer-Encoding: chunked")
         + b"5\r\nhello\r\n0\r\n\r\n", False),
    Kind("oversized chunked body", get(ANNOUNCE, HOST, b"Transfer-Encoding: chunked")
         + b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n", False),
    Kind("bad chunk size", get(ANNOUNCE, HOST, b"Transfer-Encoding: chunked") + b"zz\r\n",
         False),
    Kind("Expect: 100-continue", get(ANNOUNCE, HOST, b"Expect: 100-continue"), False),
    Kind("Upgrade: websocket", get(ANNOUNCE, HOST, b"Connection: Upgrade",
                                   b"Upgrade: websocket"), False),
    Kind("Upgrade without Connection", get(ANNOUNCE, HOST, b"Upgrade: h2c"), False),
    Kind("POST", b"POST /announce HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", False),
    Kind("HEAD", b"HEAD /stats HTTP/1.1\r\nHost: t\r\n\r\n", False),
    Kind("lower-case method", b"get /stats HTTP/1.1\r\nHost: t\r\n\r\n", False),
    Kind("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", False),
    Kind("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
    Kind("space in the target", b"GET /announce?a b HTTP/1.1\r\nHost: t\r\n\r\n", False),
    Kind("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", False),
    Kind("HTTP/1.2", get(ANNOUNCE, HOST, version=b"1.2"), False),
    Kind("oversized header", get(ANNOUNCE, HOST, b"X-Big: " + b"b" * 9000), False),
    Kind("oversized request line", get(b"/announce?" + b"a" * 9000, HOST), False),
    Kind("many small headers", get(ANNOUNCE, HOST, *(b"X-%d: v" % i for i in range(1000))),
         False),
    Kind("header block of 8 KiB", padded(8192), True),
    Kind("header block of 8 KiB and a byte", padded(8193), False),
]


def pieces(data: bytes, how: str, rng: random.Random) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def splits() -> Iterator[str]:
    yield from ("whole", "bytes", "random-1", "random-2", "random-3")


async def exchange(fast_path: bool, parts: list[bytes], eof: bool) -> bytes:
    """What one tracker sends back, until it closes, for `parts` sent one by one."""
    tracker = HttpTracker(SwarmStore(rng=random.Random(7)), HttpConfig(fast_path=fast_path),
                          clock=lambda: 1_700_000_000.0)
    received = bytearray()
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(tracker.serve, listeners)
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            for part in parts:
                await stream.send_all(part)
                await trio.testing.wait_all_tasks_blocked()
            if eof:
                await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            received += b"<the tracker closed while we sent>"
        try:
            while data := await stream.receive_some(65536):
                received += data
        except trio.BrokenResourceError:
            received += b"<reset>"
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return bytes(received)


@pytest.mark.parametrize("how", list(splits()))
@pytest.mark.parametrize("kind", CORPUS, ids=[k.name for k in CORPUS])
async def test_fast_path_answers_what_h11_answers(
    kind: Kind, how: str, autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = 0  # requests the fast path answered

    def counting(buf: bytes) -> fastpath.SimpleRequest | None:
        nonlocal taken
        request = fastpath.simple_request(buf)
        if request is not None and request is not fastpath.INCOMPLETE:
            taken += 1
        return request

    monkeypatch.setattr(http, "simple_request", counting)
    parts = pieces(kind.data, how, random.Random(f"{kind.name} {how}"))
    with trio.fail_after(300):
        fast = await exchange(True, parts, kind.eof)
        assert (taken > 0) == kind.fast
        taken_by_fast = taken
        reference = await exchange(False, parts, kind.eof)
    assert taken == taken_by_fast  # the reference never went near the fast path
    assert fast == reference
    assert b"HTTP/1.1 " in reference or not reference, reference[:200]


def test_corpus_is_varied() -> None:
    assert len({k.name for k in CORPUS}) == len(CORPUS) >= 44
    assert sum(k.fast for k in CORPUS) >= 20
