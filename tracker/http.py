"""The HTTP tracker (BEP 3, BEP 7, BEP 23, BEP 48) on trio: routing and connections.

`HttpTracker.handle` routes one request (no I/O) to the pure pieces: `tracker.httpapi`
(queries and bencoded answers) and `tracker.pages` (/stats, /metrics). The connection
loop answers simple requests on the fast path (`tracker.fastpath`) and everything else
with h11. Every request error is answered the tracker way: HTTP 200 with a bencoded
``failure reason``. Protocol errors (oversized or broken HTTP) get an HTTP status and the
connection is closed.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import h11
import trio

from btfs.trackerwire import compact as compact_address
from btfs.trackerwire.compact import normalize_ip
from tracker.connections import ConnectionTable, limit_key
from tracker.errors import RequestError
from tracker.fastpath import INCOMPLETE, MAX_HEADER_BYTES, RawSocketIo, simple_request
from tracker.httpapi import (
    AnnounceQuery,
    client_address,
    encode_announce,
    encode_compact_announce,
    encode_failure,
    encode_scrape,
    parse_announce,
    parse_scrape,
    quick_announce,
)
from tracker.pages import metrics_text, stats_html, stats_json
from tracker.store.base import WANT_BOTH, Outcome, PackedOutcome, Ready, Store
from tracker.store.memory import MemoryStore, SwarmStore

log = logging.getLogger("tracker.http")
access_log = logging.getLogger("tracker.access")

MAX_BODY_BYTES = 1024  # a GET has no business sending more
ACCEPT_RETRY_FIRST = 0.1  # seconds after a failed accept (out of descriptors), doubling
ACCEPT_RETRY_MAX = 2.0
ACCEPT_REPORT_EVERY = 60.0  # seconds between log lines about failing accepts
_REACT_BATCH = 64  # parked connections answered per wakeup before other tasks get a turn
_ACCEPT_BATCH = 64  # connections accepted per wakeup before other tasks get a turn
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}

BENCODE = b"text/plain"
_OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
_CLOSE_END = b"Connection: close\r\n\r\n"  # the end of h11's head when the client closes
JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class HttpConfig:
    """How the HTTP listener treats its clients."""

    trust_ip_param: bool = False
    trusted_proxies: frozenset[str] = field(default_factory=frozenset)
    allow_full_scrape: bool = False
    max_connections: int = 1000
    max_connections_per_ip: int = 32  # an IPv6 /64 counts as one address
    timeout: float = 10.0
    access_log: bool = False
    fast_path: bool = True  # False: every request through h11 (the fast path's reference)


# ------------------------------------------------------------------ requests


@dataclass(slots=True)
class Reply:
    """An HTTP status, content type and body."""

    status: int
    content_type: bytes
    body: bytes


class HttpTracker:
    """Answers HTTP requests from a store (a bare `SwarmStore` is served from memory);
    `serve` runs the listener."""

    def __init__(
        self,
        store: Store | SwarmStore,
        config: HttpConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store: Store = MemoryStore(store) if isinstance(store, SwarmStore) else store
        self.config = config or HttpConfig()
        # The in-memory store's own object, for announces on the fast path.
        self._swarms = (self.store.swarms
                        if self.config.fast_path and isinstance(self.store, MemoryStore)
                        else None)
        self.clock = clock
        self.started = clock()
        self.connections: ConnectionTable[trio.CancelScope] = ConnectionTable(
            self.config.max_connections, self.config.max_connections_per_ip)
        # Keep-alive connections waiting for their next request, by descriptor: one task
        # (`_react`) answers their plain announces (see `_park`).
        self._epoll: select.epoll | None = None
        self._parked: dict[int, _Parked] = {}

    async def handle(
        self, method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], peer_ip: str
    ) -> Reply:
        """The response to one request (no I/O but the store's)."""
        path, _, query = target.partition(b"?")
        if method != b"GET":
            return Reply(405, BENCODE, b"method not allowed\n")
        try:
            if path == b"/announce":
                body = self._announce(query, headers, peer_ip)
                if not isinstance(body, bytes):
                    body = await body
                return Reply(200, BENCODE, body)
            if path == b"/scrape":
                hashes = parse_scrape(query, self.config.allow_full_scrape)
                if hashes is None:
                    files = await self.store.scrape_all(self.clock(), protocol="http")
                else:
                    files = await self.store.scrape(hashes, self.clock(), protocol="http")
                return Reply(200, BENCODE, encode_scrape(files))
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return Reply(200, BENCODE, encode_failure(exc.reason))
        uptime = self.clock() - self.started
        if path == b"/stats":
            stats = await self.store.stats(self.clock())
            stats["pid"] = os.getpid()  # which process answered (one of --workers)
            if b"format=json" in query.split(b"&"):
                return Reply(200, JSON, stats_json(stats, uptime))
            return Reply(200, HTML, stats_html(stats, uptime))
        if path == b"/metrics":
            return Reply(200, PROMETHEUS, metrics_text(await self.store.stats(self.clock(), 0),
                                                       uptime))
        return Reply(404, BENCODE, b"not found\n")

    def quick_announce(
        self, query: bytes, headers: Iterable[tuple[bytes, bytes]], peer_ip: str
    ) -> bytes | None:
        """The answer to a plain announce from the in-memory store (`quick_announce`),
        without a coroutine or a `Reply`; None if it is not one (`handle` answers it)."""
        swarms = self._swarms
        if swarms is None:
            return None
        p = quick_announce(query)
        if p is None:
            return None
        with_ids = not (p.compact or p.no_peer_id)
        try:
            ip = self._ip(p, headers, peer_ip)
            try:
                compact = compact_address.pack(ip, p.port)
            except ValueError:  # the general call words (and counts) it
                result = swarms.announce(
                    p.info_hash, p.peer_id, ip, p.port, p.uploaded, p.downloaded, p.left,
                    p.event, p.numwant, self.clock(), protocol="http", with_ids=with_ids)
            else:  # (quick_announce has checked the rest)
                peers4, peers6, ids4, ids6, complete, incomplete = swarms.announce_checked(
                    p.info_hash, p.peer_id, compact, p.left, p.event, p.numwant,
                    self.clock(), "http", WANT_BOTH, with_ids)
                if p.compact:
                    return encode_compact_announce(peers4, peers6, complete, incomplete,
                                                   swarms.interval, swarms.min_interval)
                result = PackedOutcome(peers4, peers6, complete, incomplete, swarms.interval,
                                       swarms.min_interval, ids4, ids6)
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return encode_failure(exc.reason)
        return encode_announce(result, p.compact, p.no_peer_id)

    def _ip(self, p: AnnounceQuery, headers: Iterable[tuple[bytes, bytes]], peer_ip: str
            ) -> str:
        """The address an announce is for."""
        config = self.config
        if config.trust_ip_param and p.ip:
            return p.ip
        if config.trusted_proxies:
            return client_address(peer_ip, headers, config.trusted_proxies)
        return normalize_ip(peer_ip)

    def _announce(
        self, query: bytes, headers: Iterable[tuple[bytes, bytes]], peer_ip: str
    ) -> bytes | Awaitable[bytes]:
        """The answer, or (when the store's answer is on its way) an awaitable of it."""
        p = parse_announce(query)
        pending = self.store.announce(
            p.info_hash, p.peer_id, self._ip(p, headers, peer_ip), p.port, p.uploaded,
            p.downloaded, p.left, p.event,
            p.numwant, self.clock(), protocol="http", with_ids=not (p.compact or p.no_peer_id),
        )
        if isinstance(pending, Ready):  # the memory store: no coroutine to go through
            return encode_announce(pending.value, p.compact, p.no_peer_id)
        return self._encode_later(pending, p.compact, p.no_peer_id)

    @staticmethod
    async def _encode_later(pending: Awaitable[Outcome], compact: bool, no_peer_id: bool
                            ) -> bytes:
        return encode_announce(await pending, compact, no_peer_id)

    # -------------------------------------------------------------- connections

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                if self._swarms is not None:
                    self._epoll = select.epoll()
                    nursery.start_soon(self._react, self._epoll)
                for listener in listeners:
                    nursery.start_soon(self._accept, TrioListening(listener), nursery)
                task_status.started()
        finally:
            if self._epoll is not None:
                self._epoll.close()
                self._epoll = None

    async def _accept(self, listener: Listening, nursery: trio.Nursery) -> None:
        """Accept connections (up to `_ACCEPT_BATCH` per wakeup) and take each (`_take`).

        Out of descriptors (or memory), close the connection that has waited longest and
        try again at once; with none to close, wait, doubling the wait up to
        ACCEPT_RETRY_MAX. One log line a minute at most says it is happening.
        """
        backoff = ACCEPT_RETRY_FIRST
        failures = 0
        reported = -math.inf
        async with listener:
            while True:
                await listener.wait()
                for _ in range(_ACCEPT_BATCH):
                    try:
                        conn, address = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                            raise
                        failures += 1
                        now = trio.current_time()
                        if now - reported >= ACCEPT_REPORT_EVERY:
                            log.warning("cannot accept HTTP connections (%s), %d times since "
                                        "the last report: closing idle ones, retrying",
                                        exc.strerror or exc, failures)
                            reported, failures = now, 0
                        victim = self.connections.evict()
                        if victim is not None:
                            victim.cancel()
                            await trio.lowlevel.checkpoint()  # for its task to close it
                        else:
                            await trio.sleep(backoff)
                            backoff = min(2 * backoff, ACCEPT_RETRY_MAX)
                        continue
                    backoff = ACCEPT_RETRY_FIRST
                    try:
                        self._take(conn, address, nursery)
                    except Exception:  # a bug must cost one connection, not the tracker
                        log.exception("error taking an HTTP connection")
                        conn.close()

    def _take(self, conn: socket.socket, address: Any, nursery: trio.Nursery) -> None:
        """A new connection: answered and closed here when what it has sent already is one
        plain announce with ``Connection: close`` (how libtorrent and aria2 announce: a
        connection per announce, which a task of its own would cost several times the
        announce); else served by a task of its own (`connection`)."""
        received = b""
        if self._swarms is not None:  # (the fast path, with the in-memory store)
            try:
                received = conn.recv(16384, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            except OSError:  # reset already
                conn.close()
                return
            else:
                if not received:  # closed without a request
                    conn.close()
                    return
                answer = self._answer_once(received, str(address[0]).partition("%")[0])
                if answer is not None:
                    try:
                        sent = conn.send(answer, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        sent = 0
                    except OSError:  # the client is gone
                        sent = len(answer)
                    if sent == len(answer):
                        conn.close()
                    else:  # (a fresh connection's buffer takes an answer: hardly ever)
                        nursery.start_soon(self._finish_answer, _stream(conn), answer[sent:])
                    return
        peer_ip = str(address[0]).partition("%")[0]
        scope, admitted = self._admit(peer_ip)
        nursery.start_soon(self.connection, _stream(conn), peer_ip, scope, admitted, received)

    def _answer_once(self, data: bytes, peer_ip: str) -> bytes | None:
        """The whole answer (head and body) to `data` when it is one plain announce with
        ``Connection: close`` and nothing after it; None for anything else."""
        request = simple_request(data)
        if request is None or request is INCOMPLETE or not request[3] or request[2] != len(data):
            return None
        return self._announce_answer(request[0], request[1], True, peer_ip)

    def _announce_answer(self, target: bytes, headers: Iterable[tuple[bytes, bytes]],
                         close: bool, peer_ip: str) -> bytes | None:
        """The whole answer (head and body, ending the connection if `close`) to a simple
        request for `target` when it is a plain announce (`quick_announce`); None for
        anything else, which `handle` answers."""
        if target[:10] != b"/announce?":
            return None
        body = self.quick_announce(target[10:], headers, peer_ip)
        if body is None:
            return None
        if self.config.access_log:
            self._log_access(peer_ip, b"GET", target, Reply(200, BENCODE, body))
        return b"%s%d\r\n%s%s" % (_OK_HEAD, len(body), _CLOSE_END if close else b"\r\n", body)

    async def _finish_answer(self, stream: trio.SocketStream, rest: bytes) -> None:
        """Send the rest of an answer `_take` began, then close."""
        try:
            with trio.move_on_after(self.config.timeout):
                await stream.send_all(rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    def _admit(self, peer_ip: str) -> tuple[trio.CancelScope, bool]:
        """Enter a new connection in the table, in the order connections are accepted
        (the longest waiting is closed first); its handle and whether it is admitted."""
        ip = normalize_ip(peer_ip)
        scope = trio.CancelScope()
        admitted, evicted = self.connections.open(
            scope, limit_key(ip), exempt=ip in self.config.trusted_proxies)
        for victim in evicted:
            victim.cancel()
        return scope, admitted

    async def connection(self, stream: trio.SocketStream, peer_ip: str,
                         scope: trio.CancelScope, admitted: bool, received: bytes = b""
                         ) -> None:
        """Serve one connection (`_admit` has entered it as `scope`): keep-alive requests,
        each read and answered in time. `received`: what it had sent when it was taken."""
        if not admitted:
            with trio.move_on_after(1):
                try:
                    await stream.send_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            await stream.aclose()
            return
        try:
            with scope:
                await self._serve_connection(stream, peer_ip, scope, received)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # a bug must cost one connection, not the tracker
            log.exception("error serving an HTTP connection")
        finally:
            self.connections.close(scope)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _serve_connection(
        self, stream: trio.SocketStream, peer_ip: str, handle: trio.CancelScope,
        received: bytes,
    ) -> None:
        if not self.config.fast_path:
            deadline = trio.current_time() + self.config.timeout
            await self._serve_h11(stream, StreamIo(stream), peer_ip, handle, received, False,
                                  deadline)
            return
        io = RawSocketIo(stream)
        try:
            await self._serve_requests(stream, io, peer_ip, handle, received)
        finally:
            io.close()

    def _log_access(self, peer_ip: str, method: bytes, target: bytes, response: Reply) -> None:
        access_log.info(
            '%s "%s %s" %d %d', peer_ip, method.decode("latin-1"),
            target[:300].decode("latin-1"), response.status, len(response.body),
        )

    async def _serve_requests(
        self, stream: trio.SocketStream, io: RawSocketIo, peer_ip: str,
        handle: trio.CancelScope, received: bytes = b"",
    ) -> None:
        """Answer simple requests here; at the first other one, hand the connection to h11.

        A simple request is what BitTorrent clients and load generators send: a GET over
        HTTP/1.1 with one Host header and no header that changes the framing or the
        connection (Content-Length, Transfer-Encoding, Expect, Upgrade, a Connection other
        than ``close``). It is parsed by the same grammar as h11's and answered with the
        bytes h11 would write, at a fraction of the cost. Anything else (and every error)
        goes to h11 with the bytes not yet consumed, within the same per-request deadline.

        `received`: what the connection had sent when it was taken (`_take`).
        """
        buf = received
        timeout = self.config.timeout
        access = self.config.access_log
        eof = False
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = deadline = trio.current_time() + timeout
                if not buf and self._epoll is not None:
                    scope.deadline = math.inf  # (the park keeps the deadline)
                    self.connections.waiting(handle)
                    parked = await self._park(io.raw, handle, peer_ip, deadline)
                    if parked.timed_out or (parked.eof and not parked.buf):
                        return  # timed out, or the client is gone
                    scope.deadline = deadline = parked.deadline
                    if parked.unsent:  # answered, but the kernel took only part of it
                        await io.stream.send_all(parked.unsent)
                        if parked.close:
                            return
                        continue
                    buf = parked.buf
                request = simple_request(buf) if buf else INCOMPLETE
                if request is INCOMPLETE:
                    while request is INCOMPLETE:
                        self.connections.waiting(handle)
                        data = await io.receive_some(16384)
                        self.connections.busy(handle)
                        if not data:
                            eof = True
                            break
                        buf += data
                        request = simple_request(buf)
                else:  # pipelined: let other connections have a turn first
                    await trio.lowlevel.checkpoint()
                if request is None or request is INCOMPLETE:
                    break
                target, headers, used, close = request
                buf = buf[used:]
                answer = self._announce_answer(target, headers, close, peer_ip)
                if answer is not None:
                    await io.send_all(answer)
                    if close:
                        return  # (what the client sent after it is not read, as h11)
                    continue
                response = await self.handle(b"GET", target, headers, peer_ip)
                if access:
                    self._log_access(peer_ip, b"GET", target, response)
                await io.send_all(
                    b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s"
                    % (response.status, _REASONS.get(response.status, b""),
                       response.content_type, len(response.body),
                       _CLOSE_END if close else b"\r\n", response.body)
                )
                if close:
                    return
        if scope.cancelled_caught or (eof and not buf):
            return  # timed out, or the client is gone
        await self._serve_h11(stream, io, peer_ip, handle, buf, eof, deadline)

    async def _park(self, raw: socket.socket, handle: trio.CancelScope, peer_ip: str,
                    deadline: float) -> _Parked:
        """Leave a keep-alive connection, between requests, to `_react` until it meets
        something other than a plain announce (or the client's end), or the connection
        has waited `timeout` for a request.

        A task waking per request costs several trips through trio's scheduler and two
        epoll_ctl calls; parked connections stay in one epoll set whose ready ones
        `_react` answers together, as the UDP loop does with datagrams.
        """
        assert self._epoll is not None
        parked = _Parked(raw, handle, peer_ip, deadline, trio.Event())
        fd = raw.fileno()
        self._parked[fd] = parked
        self._epoll.register(fd, select.EPOLLIN)
        try:
            while not parked.event.is_set():
                with trio.move_on_at(parked.deadline):
                    await parked.event.wait()
                if not parked.event.is_set() and trio.current_time() >= parked.deadline:
                    parked.timed_out = True
                    break
        finally:
            if self._parked.get(fd) is parked:
                self._unpark(fd)
        return parked

    def _unpark(self, fd: int) -> None:
        parked = self._parked.pop(fd)
        if self._epoll is not None:
            self._epoll.unregister(fd)
        parked.event.set()

    async def _react(self, epoll: select.epoll) -> None:
        """Answer the plain announces of parked connections; hand any other request (its
        bytes unconsumed), the client's end, or an answer the kernel takes only in part,
        back to the connection's task."""
        parked = self._parked
        timeout = self.config.timeout
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            now = trio.current_time()
            for fd, _ in epoll.poll(0, _REACT_BATCH):
                conn = parked.get(fd)
                if conn is None:
                    continue
                try:
                    data = conn.raw.recv(16384)
                except BlockingIOError:
                    continue
                except OSError:  # a reset: the task's own read meets it
                    self._unpark(fd)
                    continue
                try:
                    if self._react_to(conn, data):
                        conn.deadline = now + timeout
                        self.connections.touch(conn.handle)
                        continue
                except Exception:  # a bug must cost one connection, not the tracker
                    log.exception("error serving an HTTP connection")
                    conn.eof, conn.buf = True, b""
                self.connections.busy(conn.handle)
                self._unpark(fd)

    def _react_to(self, conn: _Parked, data: bytes) -> bool:
        """Answer `data` if it is one whole plain announce (True); else note what the
        task must do (False)."""
        if not data:
            conn.eof = True
            return False
        request = simple_request(data)
        if request is None or request is INCOMPLETE or request[2] != len(data):
            conn.buf = data
            return False
        target, headers, _, close = request
        answer = self._announce_answer(target, headers, close, conn.peer_ip)
        if answer is None:
            conn.buf = data
            return False
        try:
            sent = conn.raw.send(answer)
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.eof = True
            return False
        if sent < len(answer):
            conn.unsent = answer[sent:]
            conn.close = close
            return False
        if close:  # answered: the task closes the connection
            conn.eof = True
            return False
        return True

    async def _serve_h11(
        self, stream: trio.SocketStream, io: ConnectionIo, peer_ip: str,
        handle: trio.CancelScope, received: bytes, eof: bool, deadline: float,
    ) -> None:
        """Serve the rest of a connection with h11, starting from the bytes received."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        if received:
            conn.receive_data(received)
        if eof:
            conn.receive_data(b"")
        while True:
            with trio.move_on_at(deadline):
                try:
                    request = await self._next_request(conn, io, handle)
                except h11.RemoteProtocolError as exc:
                    self.store.count_error("http_protocol")
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        status = exc.error_status_hint
                        await _send(conn, io, Reply(status, BENCODE, b""), close=True)
                        await _drain(stream)
                    return
                if request is None:
                    return
                if isinstance(request, Reply):  # body too large
                    self.store.count_error("http_protocol")
                    await _send(conn, io, request, close=True)
                    await _drain(stream)
                    return
                response = await self.handle(request.method, request.target, request.headers,
                                             peer_ip)
                if self.config.access_log:
                    self._log_access(peer_ip, request.method, request.target, response)
                await _send(conn, io, response, close=False)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                deadline = trio.current_time() + self.config.timeout
                continue
            return  # timed out: the client was idle or too slow

    async def _next_request(
        self, conn: h11.Connection, io: ConnectionIo, handle: trio.CancelScope
    ) -> h11.Request | Reply | None:
        """The next request with its (small, discarded) body; None once the client is gone.

        h11 bounds a header block only while it is incomplete: one that arrives whole is
        measured here, by the bytes h11 has consumed when it has the request.
        """
        request: h11.Request | None = None
        body = 0
        fed = len(conn.trailing_data[0])  # bytes of this request given to h11
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                self.connections.waiting(handle)
                data = await io.receive_some(16384)
                self.connections.busy(handle)
                conn.receive_data(data)
                fed += len(data)
                continue
            if isinstance(event, h11.Request):
                if fed - len(conn.trailing_data[0]) > MAX_HEADER_BYTES:
                    raise h11.RemoteProtocolError("request header too large",
                                                  error_status_hint=431)
                request = event
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > MAX_BODY_BYTES:
                    return Reply(413, BENCODE, b"")
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None


@dataclass(slots=True, eq=False)
class _Parked:
    """A keep-alive connection left to `HttpTracker._react` between requests, and what
    its task finds when it is handed back."""

    raw: socket.socket
    handle: trio.CancelScope
    peer_ip: str
    deadline: float  # when it has waited `timeout` for its next request
    event: trio.Event  # set when handed back
    buf: bytes = b""  # a request's bytes, for the task to answer
    unsent: bytes = b""  # the rest of an answer, for the task to send
    close: bool = False  # then close the connection (the client asked)
    eof: bool = False  # the client has ended (or the connection failed)
    timed_out: bool = False


class ConnectionIo(Protocol):
    """How the h11 path reads and writes: `StreamIo`, or the fast path's `RawSocketIo`."""

    async def receive_some(self, size: int) -> bytes: ...

    async def send_all(self, data: bytes) -> None: ...


class StreamIo:
    """The trio stream's own calls (the path without the fast path)."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    async def receive_some(self, size: int) -> bytes:
        return bytes(await self.stream.receive_some(size))

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)


async def _drain(stream: trio.SocketStream) -> None:
    """Half-close, then read what the client still sends for a moment: closing with
    unread data makes the kernel send a reset that can destroy our error response."""
    await stream.send_eof()
    with trio.move_on_after(1):
        received = 0
        while received < 1 << 20:
            data = await stream.receive_some(65536)
            if not data:
                return
            received += len(data)


async def _send(conn: h11.Connection, io: ConnectionIo, response: Reply, close: bool) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", b"%d" % len(response.body)),
    ]
    if close:
        headers.append((b"connection", b"close"))
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers,
                                      reason=_REASONS.get(response.status, b"")))
        data += conn.send(h11.Data(data=response.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return
    if data:
        await io.send_all(data)


class Listening(Protocol):
    """What `HttpTracker._accept` takes connections from: `TrioListening`, or a test's."""

    async def wait(self) -> None: ...

    def accept(self) -> tuple[socket.socket, Any]: ...

    async def __aenter__(self) -> Listening: ...

    async def __aexit__(self, *exc: object) -> None: ...


class TrioListening:
    """A trio listener's socket, accepted from with plain non-blocking calls: a batch of
    connections per wakeup instead of one trip through the scheduler each."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.raw = socket.socket(fileno=listener.socket.fileno())  # detached on exit
        self.raw.setblocking(False)

    async def wait(self) -> None:
        await trio.lowlevel.wait_readable(self.raw)

    def accept(self) -> tuple[socket.socket, Any]:
        return self.raw.accept()

    async def __aenter__(self) -> TrioListening:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.raw.detach()
        await self.listener.aclose()


def _stream(conn: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(conn))


def open_http_listener(host: str, port: int, reuse_port: bool = False,
                       listen: bool = True) -> socket.socket:
    """A bound, listening TCP socket (the IPv6 wildcard also takes IPv4); raises OSError.
    `reuse_port`: SO_REUSEPORT, for workers sharing the port (the kernel spreads the
    connections over their listeners); `listen=False` only reserves the port.

    A plain socket, so that it can be made before trio runs; wrap it with
    ``trio.SocketListener(trio.socket.from_stdlib_socket(sock))``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
        if listen:
            sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock
