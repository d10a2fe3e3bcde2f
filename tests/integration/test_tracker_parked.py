"""Keep-alive HTTP connections parked between requests: one task (`HttpTracker._react`)
answers the plain announces of all of them, and hands a connection back to its own task
for anything else (the byte-for-byte comparison with h11 is
tests/integration/test_tracker_fastpath.py)."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import trio
import trio.testing

from btfs.bencode import decode
from tracker.http import HttpConfig, HttpTracker
from tracker.store.memory import SwarmStore

HASH = bytes(range(20))


def announce(n: int, **extra: object) -> bytes:
    params = {"info_hash": quote_from_bytes(HASH),
              "peer_id": quote_from_bytes(b"-BB0001-" + n.to_bytes(12, "big")),
              "port": 1000 + n, "left": 5, "numwant": 50, "compact": 1, **extra}
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"GET /announce?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def read_answer(stream: trio.SocketStream, buf: bytearray) -> tuple[int, bytes]:
    """(status, body) of the next answer on `stream`; `buf` keeps what follows it."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, "the tracker closed"
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        data = await stream.receive_some(65536)
        assert data, "the tracker closed"
        rest += data
    buf[:] = rest[length:]
    return int(head.split(b" ")[1]), rest[:length]


def bdict(body: bytes) -> dict[bytes, Any]:
    answer = decode(body)
    assert isinstance(answer, dict)
    return answer


class Counted:
    """Counts what the parked connections' task answered itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answered = 0
        original = HttpTracker._react_to

        def counting(tracker: HttpTracker, *args: Any) -> bool:
            done = original(tracker, *args)
            self.answered += done
            return done

        monkeypatch.setattr(HttpTracker, "_react_to", counting)


@asynccontextmanager
async def serving(tracker: HttpTracker, sndbuf: int | None = None) -> AsyncIterator[int]:
    """`tracker` serving on a loopback port (yielded) until the block ends."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    if sndbuf is not None:  # (accepted sockets inherit it)
        listeners[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve, listeners)
        try:
            yield int(listeners[0].socket.getsockname()[1])
        finally:
            nursery.cancel_scope.cancel()


async def test_parked_connections_are_answered_together(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counted = Counted(monkeypatch)
    tracker = HttpTracker(SwarmStore(rng=random.Random(1)))
    with trio.fail_after(60):
        async with serving(tracker) as port:
            streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(20)]
            bufs = [bytearray() for _ in streams]
            for round_ in range(5):
                for i, stream in enumerate(streams):
                    await stream.send_all(announce(i))
                for i, stream in enumerate(streams):
                    status, body = await read_answer(stream, bufs[i])
                    answer = decode(body)
                    assert status == 200 and isinstance(answer, dict)
                    if round_:
                        assert answer[b"incomplete"] == 20
                    assert i.to_bytes(2, "big") not in [answer[b"peers"][k + 4 : k + 6]
                                                        for k in range(0, 6 * 50, 6)]
            for stream in streams:
                await stream.aclose()
    assert counted.answered >= 90  # (a request may come in two reads: its task answers it)
    assert tracker.store.counters.announces["http"] == 100


async def test_other_requests_go_to_the_task_and_the_connection_parks_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counted = Counted(monkeypatch)
    tracker = HttpTracker(SwarmStore(rng=random.Random(1)))
    with trio.fail_after(60):
        async with serving(tracker) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            buf = bytearray()
            requests = [announce(1),
                        b"GET /scrape?info_hash=" + quote_from_bytes(HASH).encode()
                        + b" HTTP/1.1\r\nHost: t\r\n\r\n",
                        announce(2, port=0),  # an error: the general parser words it
                        b"GET /stats?format=json HTTP/1.1\r\nHost: t\r\n\r\n",
                        announce(3),
                        announce(4) + announce(5)]  # pipelined: the task's
            answers = []
            for request in requests:
                await stream.send_all(request)
                answers.append(await read_answer(stream, buf))
            answers.append(await read_answer(stream, buf))
            await stream.aclose()
    assert [status for status, _ in answers] == [200] * 7
    assert b"failure reason" in answers[2][1] and b"invalid port" in answers[2][1]
    assert bdict(answers[1][1]) == {b"files": {HASH: {b"complete": 0, b"downloaded": 0,
                                                       b"incomplete": 1}}}
    assert bdict(answers[6][1])[b"incomplete"] == 4
    assert counted.answered == 2  # announces 1 and 3
    assert tracker.store.counters.errors["bad_request"] == 1


async def test_an_answer_the_kernel_takes_in_part_is_finished_by_the_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counted = Counted(monkeypatch)
    tracker = HttpTracker(SwarmStore(rng=random.Random(1)))
    with trio.fail_after(60):
        async with serving(tracker, sndbuf=4096) as port:
            for n in range(300):
                body = tracker.quick_announce(announce(n).split(b" ")[1][10:], [], "10.0.0.1")
                assert body is not None and b"failure" not in body
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            await sock.connect(("127.0.0.1", port))
            stream = trio.SocketStream(sock)
            buf = bytearray()
            big = announce(400, compact=0, numwant=200)  # ~15 KB of bencoded peers
            # The first request may be answered by the connection's task, which reads
            # at once; the next ones find the connection parked.
            await stream.send_all(announce(399))
            await read_answer(stream, buf)
            before = counted.answered
            await stream.send_all(announce(401))
            await read_answer(stream, buf)
            await stream.send_all(big)
            await trio.sleep(0.5)  # the tracker fills the buffers while we do not read
            status, body = await read_answer(stream, buf)
            answer = decode(body)
            assert status == 200 and isinstance(answer, dict)
            assert len(answer[b"peers"]) == 200
            await stream.send_all(announce(402))  # and the connection goes on
            status, body = await read_answer(stream, buf)
            assert status == 200 and len(bdict(body)[b"peers"]) == 6 * 50
            await stream.aclose()
    assert len(body) and counted.answered - before == 2  # 401, 402; 400 went to the task


async def test_a_parked_connection_times_out_and_can_be_evicted(
        autojump_clock: trio.testing.MockClock) -> None:
    tracker = HttpTracker(SwarmStore(), HttpConfig(timeout=10.0, max_connections=2))
    async with serving(tracker) as port:
        first = await trio.open_tcp_stream("127.0.0.1", port)
        await first.send_all(announce(1))
        await read_answer(first, bytearray())
        await trio.sleep(5)
        second = await trio.open_tcp_stream("127.0.0.1", port)
        await second.send_all(announce(2))
        await read_answer(second, bytearray())
        third = await trio.open_tcp_stream("127.0.0.1", port)  # evicts the first
        with trio.fail_after(1):
            assert await first.receive_some(100) == b""
        await third.send_all(announce(3))  # parked, answered; the deadline moves on
        await read_answer(third, bytearray())
        start = trio.current_time()
        assert await second.receive_some(100) == b""  # idle 10 s after its answer
        assert trio.current_time() - start == pytest.approx(10.0, abs=0.5)
        for stream in (first, second, third):
            await stream.aclose()


async def test_each_answer_restarts_the_wait_for_the_next_request(
        autojump_clock: trio.testing.MockClock) -> None:
    tracker = HttpTracker(SwarmStore(), HttpConfig(timeout=10.0))
    async with serving(tracker) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for _ in range(4):  # 24 s of requests 8 s apart, on one parked connection
            await stream.send_all(announce(3))
            assert (await read_answer(stream, bytearray()))[0] == 200
            await trio.sleep(8)
        start = trio.current_time()
        assert await stream.receive_some(100) == b""
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.5)
        await stream.aclose()


async def exchange(port: int, data: bytes, before_accept: bool = True) -> bytes:
    """Connect, send `data` (before the tracker's loop runs, or after it has accepted),
    and read until the tracker closes."""
    sock = socket.socket()
    sock.settimeout(5)
    # Connected and sent without a checkpoint, so the tracker cannot accept between (on
    # loopback the handshake is done, and the bytes delivered, within the calls).
    sock.connect(("127.0.0.1", port))
    if before_accept:
        sock.sendall(data)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    if not before_accept:
        await trio.sleep(0.2)
        await stream.send_all(data)
    got = b""
    with trio.fail_after(30):
        while chunk := await stream.receive_some(65536):
            got += chunk
    await stream.aclose()
    return got


async def test_one_shot_connections_are_answered_as_they_are_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection whose whole announce with Connection: close is waiting when it is
    accepted (how libtorrent and aria2 announce) is answered and closed by the accepting
    loop: no task of its own, no place in the connection table. Anything else (a partial
    request, another kind of request, bytes after the announce, a client that has not
    sent yet) still gets its task."""
    tasks: list[bytes] = []
    original = HttpTracker.connection

    async def counting(tracker: HttpTracker, stream: trio.SocketStream, peer_ip: str,
                       scope: trio.CancelScope, admitted: bool, received: bytes = b"") -> None:
        tasks.append(received)
        await original(tracker, stream, peer_ip, scope, admitted, received)

    monkeypatch.setattr(HttpTracker, "connection", counting)
    tracker = HttpTracker(SwarmStore(rng=random.Random(1)))
    one_shot = announce(7).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")

    with trio.fail_after(60):
        async with serving(tracker) as port:
            answer = await exchange(port, one_shot)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(
                b"\r\nConnection: close")
            assert bdict(body)[b"incomplete"] == 1
            assert tasks == []  # answered by the accepting loop
            assert len(tracker.connections) == 0
            # Bytes after it, another request, or an announce sent later: a task each.
            await exchange(port, one_shot + announce(8))
            await exchange(port, b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = await exchange(port, one_shot, before_accept=False)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert tasks[:2] == [one_shot + announce(8),
                                 b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"]
            assert len(tasks) == 3 and tasks[2] == b""
    assert tracker.store.counters.announces["http"] == 3


async def test_a_bug_answering_a_one_shot_connection_costs_that_connection_only(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    tracker = HttpTracker(SwarmStore(rng=random.Random(1)))
    one_shot = announce(7).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    original = HttpTracker._answer_once
    calls = 0

    def broken_once(self: HttpTracker, data: bytes, peer_ip: str) -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return original(self, data, peer_ip)

    monkeypatch.setattr(HttpTracker, "_answer_once", broken_once)
    with trio.fail_after(60):
        async with serving(tracker) as port:
            answers = [await exchange(port, one_shot) for _ in range(2)]
    assert answers[0] == b""  # closed
    assert answers[1].startswith(b"HTTP/1.1 200 OK\r\n")  # and the tracker goes on
    assert "error taking an HTTP connection" in caplog.text
