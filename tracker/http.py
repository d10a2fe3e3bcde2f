"""The HTTP tracker (BEP 3, BEP 7, BEP 23, BEP 48) on trio and h11.

The pure part (query parsing, client address, bencoding the answers, rendering /stats and
/metrics) is separate from the connection loop so that it can be tested without sockets.
Every request error is answered the tracker way: HTTP 200 with a bencoded
``failure reason``. Protocol errors (oversized or broken HTTP) get an HTTP status and the
connection is closed.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import h11
import trio

from tracker.swarms import (
    AnnounceResult,
    BadRequest,
    ScrapeEntry,
    SwarmStore,
    TrackerError,
    normalize_ip,
)

log = logging.getLogger("tracker.http")
access_log = logging.getLogger("tracker.access")

MAX_HEADER_BYTES = 8192  # request line + headers
MAX_BODY_BYTES = 1024  # a GET has no business sending more
MAX_SCRAPE_HASHES = 100
_MAX_DIGITS = 20

_EVENTS = {
    b"": "",
    b"empty": "",  # some old clients spell "no event" like this
    b"started": "started",
    b"completed": "completed",
    b"stopped": "stopped",
    b"paused": "paused",
}

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
    timeout: float = 10.0
    access_log: bool = False


@dataclass(slots=True)
class AnnounceParams:
    """A parsed /announce query."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str
    numwant: int
    compact: bool
    no_peer_id: bool
    ip: str | None


# ------------------------------------------------------------------ parsing


def split_query(query: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
    """Percent-decode a raw query string, keeping binary values as bytes.

    Returns the parameters by name (the last of repeated ones) and every ``info_hash``
    in order. ``+`` is kept literally: binary info-hashes are never form-encoded.
    """
    params: dict[bytes, bytes] = {}
    hashes: list[bytes] = []
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if b"%" in name:
            name = _unquote(name)
        if b"%" in value:
            value = _unquote(value)
        if name == b"info_hash":
            hashes.append(value)
        else:
            params[name] = value
    return params, hashes


def _unquote(value: bytes) -> bytes:
    """`unquote_to_bytes`, quicker for the common binary value: every byte as %XX."""
    n = len(value) // 3
    if len(value) % 3 == 0 and value[::3] == b"%" * n:
        try:
            decoded = bytes.fromhex(value.replace(b"%", b"").decode("ascii"))
        except ValueError:  # not all hex digits (UnicodeDecodeError is one too)
            pass
        else:
            if len(decoded) == n:  # fromhex skips whitespace: none may have been there
                return decoded
    return unquote_to_bytes(value)


def _uint(params: dict[bytes, bytes], name: bytes, default: int | None = None) -> int:
    value = params.get(name)
    if value is None:
        if default is None:
            raise BadRequest(f"missing {name.decode()}")
        return default
    if value.isdigit() and len(value) <= _MAX_DIGITS:
        return int(value)
    if value.startswith(b"-") and value[1:].isdigit():
        raise BadRequest(f"negative {name.decode()}")
    raise BadRequest(f"invalid {name.decode()}")


def parse_announce(query: bytes) -> AnnounceParams:
    """Validate an /announce query; raise `BadRequest` naming the first problem."""
    params, hashes = split_query(query)
    if not hashes:
        raise BadRequest("missing info_hash")
    if len(hashes) > 1:
        raise BadRequest("one info_hash per announce")
    info_hash = hashes[0]
    if len(info_hash) != 20:
        raise BadRequest("info_hash must be 20 bytes")
    peer_id = params.get(b"peer_id")
    if peer_id is None:
        raise BadRequest("missing peer_id")
    if len(peer_id) != 20:
        raise BadRequest("peer_id must be 20 bytes")
    port = _uint(params, b"port")
    if not 0 < port <= 0xFFFF:
        raise BadRequest("invalid port")
    uploaded = _uint(params, b"uploaded", 0)
    downloaded = _uint(params, b"downloaded", 0)
    left = _uint(params, b"left", 0 if params.get(b"event") == b"completed" else 1)
    event = _EVENTS.get(params.get(b"event", b""))
    if event is None:
        raise BadRequest("unknown event")
    raw_numwant = params.get(b"numwant")
    if raw_numwant is None or (raw_numwant[:1] == b"-" and raw_numwant[1:].isdigit()):
        numwant = -1  # the default
    elif raw_numwant.isdigit():
        numwant = int(raw_numwant) if len(raw_numwant) <= 4 else 10_000  # clamped later
    else:
        raise BadRequest("invalid numwant")
    ip = params.get(b"ip")
    return AnnounceParams(
        info_hash,
        peer_id,
        port,
        uploaded,
        downloaded,
        left,
        event,
        numwant,
        params.get(b"compact", b"1") != b"0",
        params.get(b"no_peer_id", b"0") == b"1",
        ip.decode("latin-1") if ip else None,
    )


def parse_scrape(query: bytes, allow_full_scrape: bool) -> list[bytes] | None:
    """The info-hashes of a /scrape query; None means all (a full scrape)."""
    _, hashes = split_query(query)
    if not hashes:
        if not allow_full_scrape:
            raise TrackerError("full scrape is disabled; name info_hash", "full_scrape_disabled")
        return None
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise BadRequest(f"at most {MAX_SCRAPE_HASHES} info_hash per scrape")
    for info_hash in hashes:
        if len(info_hash) != 20:
            raise BadRequest("info_hash must be 20 bytes")
    return hashes


def _is_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return True
    return False


def client_address(
    peer_ip: str, headers: Iterable[tuple[bytes, bytes]], trusted_proxies: frozenset[str]
) -> str:
    """The client's address: the connection's, or, from a trusted proxy, the nearest
    address in X-Forwarded-For that is not itself a trusted proxy."""
    peer_ip = normalize_ip(peer_ip)
    if peer_ip not in trusted_proxies:
        return peer_ip
    forwarded: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded.extend(value.decode("latin-1").split(","))
    for candidate in reversed(forwarded):
        address = normalize_ip(candidate.strip())
        if address in trusted_proxies:
            continue
        if not _is_ip(address):
            raise BadRequest("invalid X-Forwarded-For")
        return address
    return peer_ip


# ------------------------------------------------------------------ encoding


def _bstr(value: bytes) -> bytes:
    return b"%d:%s" % (len(value), value)


def encode_announce(
    result: AnnounceResult, compact: bool = True, no_peer_id: bool = False
) -> bytes:
    """The bencoded answer to an announce (keys in bencode's sorted order, by hand)."""
    head = b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de" % (
        result.complete,
        result.incomplete,
        result.interval,
        result.min_interval,
    )
    if compact:
        peers = b"".join([p.compact for p in result.peers4])
        body = b"%s5:peers%d:%s" % (head, len(peers), peers)
        if result.peers6:
            peers6 = b"".join([p.compact for p in result.peers6])
            body += b"6:peers6%d:%s" % (len(peers6), peers6)
        return body + b"e"
    parts = [head, b"5:peersl"]
    for p in result.peers4 + result.peers6:
        ip = p.ip.encode()
        if no_peer_id:
            parts.append(b"d2:ip%s4:porti%dee" % (_bstr(ip), p.port))
        else:
            parts.append(b"d2:ip%s7:peer id20:%s4:porti%dee" % (_bstr(ip), p.peer_id, p.port))
    parts.append(b"ee")
    return b"".join(parts)


def encode_scrape(files: dict[bytes, ScrapeEntry]) -> bytes:
    """The bencoded answer to a scrape (BEP 48)."""
    parts = [b"d5:filesd"]
    for info_hash in sorted(files):
        complete, downloaded, incomplete = files[info_hash]
        parts.append(
            b"20:%sd8:completei%de10:downloadedi%de10:incompletei%dee"
            % (info_hash, complete, downloaded, incomplete)
        )
    parts.append(b"ee")
    return b"".join(parts)


def encode_failure(reason: str) -> bytes:
    """A bencoded ``failure reason`` dictionary."""
    return b"d14:failure reason%se" % _bstr(reason.encode())


def stats_json(store: SwarmStore, uptime: float) -> bytes:
    data = store.stats()
    data["uptime"] = round(uptime, 1)
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def stats_html(store: SwarmStore, uptime: float) -> bytes:
    """A small page for people."""
    s = store.stats()
    rows = [
        ("torrents", s["torrents"]),
        ("peers", s["peers"]),
        ("seeders", s["seeders"]),
        ("leechers", s["leechers"]),
        ("IPv4 peers", s["peers_ipv4"]),
        ("IPv6 peers", s["peers_ipv6"]),
        *((f"announces ({k})", v) for k, v in sorted(s["announces"].items())),
        *((f"scrapes ({k})", v) for k, v in sorted(s["scrapes"].items())),
        *((f"errors ({k})", v) for k, v in sorted(s["errors"].items())),
        ("uptime (s)", int(uptime)),
    ]
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>\n" for k, v in rows
    )
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>btfs-tracker</title>"
        "</head><body><h1>btfs-tracker</h1>\n<table>\n"
        f"{body}</table>\n</body></html>\n"
    ).encode()


def metrics_text(store: SwarmStore, uptime: float) -> bytes:
    """Prometheus text exposition format."""
    s = store.stats()
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
        lines.append(f"# HELP btfs_tracker_{name} {help_text}")
        lines.append(f"# TYPE btfs_tracker_{name} {kind}")
        lines.extend(f"btfs_tracker_{name}{labels} {value}" for labels, value in samples)

    metric("torrents", "gauge", "Torrents the tracker knows.", [("", s["torrents"])])
    metric("seeders", "gauge", "Peers that have the whole torrent.", [("", s["seeders"])])
    metric("leechers", "gauge", "Peers still downloading.", [("", s["leechers"])])
    metric("announces_total", "counter", "Announces received.",
           [(f'{{protocol="{k}"}}', v) for k, v in sorted(s["announces"].items())])
    metric("scrapes_total", "counter", "Scrapes received.",
           [(f'{{protocol="{k}"}}', v) for k, v in sorted(s["scrapes"].items())])
    metric("errors_total", "counter", "Requests answered with an error.",
           [(f'{{kind="{k}"}}', v) for k, v in sorted(s["errors"].items())])
    metric("uptime_seconds", "gauge", "Seconds since the tracker started.",
           [("", math.floor(uptime))])
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------ requests


@dataclass(slots=True)
class Reply:
    """An HTTP status, content type and body."""

    status: int
    content_type: bytes
    body: bytes


class HttpTracker:
    """Answers HTTP requests from a `SwarmStore`; `serve` runs the listener."""

    def __init__(
        self,
        store: SwarmStore,
        config: HttpConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or HttpConfig()
        self.clock = clock
        self.started = clock()
        self.active = 0

    def handle(
        self, method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], peer_ip: str
    ) -> Reply:
        """The response to one request (no I/O)."""
        path, _, query = target.partition(b"?")
        if method != b"GET":
            return Reply(405, BENCODE, b"method not allowed\n")
        try:
            if path == b"/announce":
                return Reply(200, BENCODE, self._announce(query, headers, peer_ip))
            if path == b"/scrape":
                hashes = parse_scrape(query, self.config.allow_full_scrape)
                if hashes is None:
                    files = self.store.scrape_all(protocol="http")
                else:
                    files = self.store.scrape(hashes, protocol="http")
                return Reply(200, BENCODE, encode_scrape(files))
        except TrackerError as exc:
            self.store.count_error(exc.kind)
            return Reply(200, BENCODE, encode_failure(exc.reason))
        uptime = self.clock() - self.started
        if path == b"/stats":
            if b"format=json" in query.split(b"&"):
                return Reply(200, JSON, stats_json(self.store, uptime))
            return Reply(200, HTML, stats_html(self.store, uptime))
        if path == b"/metrics":
            return Reply(200, PROMETHEUS, metrics_text(self.store, uptime))
        return Reply(404, BENCODE, b"not found\n")

    def _announce(
        self, query: bytes, headers: Iterable[tuple[bytes, bytes]], peer_ip: str
    ) -> bytes:
        p = parse_announce(query)
        config = self.config
        if config.trust_ip_param and p.ip:
            ip = p.ip
        elif config.trusted_proxies:
            ip = client_address(peer_ip, headers, config.trusted_proxies)
        else:
            ip = normalize_ip(peer_ip)
        result = self.store.announce(
            p.info_hash, p.peer_id, ip, p.port, p.uploaded, p.downloaded, p.left, p.event,
            p.numwant, self.clock(), protocol="http",
        )
        return encode_announce(result, p.compact, p.no_peer_id)

    # -------------------------------------------------------------- connections

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self.connection, listeners)
            task_status.started()

    async def connection(self, stream: trio.SocketStream) -> None:
        """Serve one connection: keep-alive requests, each read and answered in time."""
        if self.active >= self.config.max_connections:
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
        self.active += 1
        try:
            try:
                peer_ip = stream.socket.getpeername()[0]
            except OSError:
                return
            await self._serve_connection(stream, peer_ip.partition("%")[0])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # a bug must cost one connection, not the tracker
            log.exception("error serving an HTTP connection")
        finally:
            self.active -= 1
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _serve_connection(self, stream: trio.SocketStream, peer_ip: str) -> None:
        io = _Io(stream)
        try:
            await self._serve_requests(stream, io, peer_ip)
        finally:
            io.close()

    async def _serve_requests(self, stream: trio.SocketStream, io: _Io, peer_ip: str) -> None:
        """Answer simple requests here; at the first other one, hand the connection to h11.

        A simple request is what BitTorrent clients and load generators send: a GET over
        HTTP/1.1 with one Host header and no header that changes the framing or the
        connection (Content-Length, Transfer-Encoding, Connection, Expect, Upgrade). It
        is parsed by the same grammar as h11's and answered with the bytes h11 would
        write, at a fraction of the cost. Anything else (and every error) goes to h11
        with the bytes not yet consumed, within the same per-request deadline.
        """
        buf = b""
        timeout = self.config.timeout
        access = self.config.access_log
        eof = False
        with trio.CancelScope() as scope:
            while True:
                scope.deadline = deadline = trio.current_time() + timeout
                request = _simple_request(buf)
                if request is _INCOMPLETE:
                    while request is _INCOMPLETE:
                        data = await io.receive_some(16384)
                        if not data:
                            eof = True
                            break
                        buf += data
                        request = _simple_request(buf)
                else:  # pipelined: let other connections have a turn first
                    await trio.lowlevel.checkpoint()
                if request is None or request is _INCOMPLETE:
                    break
                target, headers, used = request
                buf = buf[used:]
                response = self.handle(b"GET", target, headers, peer_ip)
                if access:
                    access_log.info(
                        '%s "%s %s" %d %d', peer_ip, "GET", target[:300].decode("latin-1"),
                        response.status, len(response.body),
                    )
                await io.send_all(
                    b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
                    % (response.status, _REASONS.get(response.status, b""),
                       response.content_type, len(response.body), response.body)
                )
        if scope.cancelled_caught or (eof and not buf):
            return  # timed out, or the client is gone
        await self._serve_h11(stream, io, peer_ip, buf, eof, deadline)

    async def _serve_h11(
        self, stream: trio.SocketStream, io: _Io, peer_ip: str, received: bytes, eof: bool,
        deadline: float,
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
                    request = await _next_request(conn, io)
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
                response = self.handle(request.method, request.target, request.headers, peer_ip)
                if self.config.access_log:
                    access_log.info(
                        '%s "%s %s" %d %d', peer_ip, request.method.decode("latin-1"),
                        request.target[:300].decode("latin-1"), response.status,
                        len(response.body),
                    )
                await _send(conn, io, response, close=False)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                deadline = trio.current_time() + self.config.timeout
                continue
            return  # timed out: the client was idle or too slow


# h11's grammar (h11/_abnf.py), restricted to what `_simple_request` takes.
_BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 ends a header block
_SIMPLE_REQUEST_LINE = re.compile(rb"GET ([\x21-\x7e]+) HTTP/1\.1")
_HEADER_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*([^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*"
)
_NOT_SIMPLE = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
)
_SimpleRequest = tuple[bytes, list[tuple[bytes, bytes]], int]  # target, headers, size
_INCOMPLETE: _SimpleRequest = (b"", [], -1)  # a sentinel: not a whole header block yet


def _simple_request(buf: bytes) -> _SimpleRequest | None:
    """(target, headers, bytes used) of a simple request at the start of `buf`; None if
    what `buf` starts with is anything else (h11 must judge it); `_INCOMPLETE` if more
    bytes are needed to tell."""
    if buf[:4] != b"GET "[: len(buf)]:
        return None
    blank = _BLANK_LINE.search(buf)
    if blank is None:
        return _INCOMPLETE if len(buf) <= MAX_HEADER_BYTES else None
    end = blank.start()
    if blank.end() - end != 3 or buf[end - 1 : end] != b"\r" or end > MAX_HEADER_BYTES:
        return None  # bare LF line ends, or oversized: h11 decides
    lines = buf[: end - 1].split(b"\r\n")
    first = _SIMPLE_REQUEST_LINE.fullmatch(lines[0])
    if first is None:
        return None
    headers = []
    hosts = 0
    for line in lines[1:]:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return None
        name = match[1].lower()
        if name in _NOT_SIMPLE:
            return None
        if name == b"host":
            hosts += 1
        headers.append((name, match[2] or b""))
    if hosts != 1:
        return None
    return first[1], headers, blank.end()


class _Io:
    """Plain non-blocking calls on a connection's socket.

    A trio stream call passes through the scheduler two or three times; here a request
    costs one wait for readability (which is also the loop's checkpoint), a `recv` and
    usually a single `send`. Only a send the kernel cannot take at once falls back to
    the stream.
    """

    __slots__ = ("raw", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        sock = stream.socket
        self.stream = stream
        # The same descriptor (a duplicate would double the descriptors per connection);
        # `close` detaches it, the stream closes it.
        self.raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())
        self.raw.setblocking(False)

    async def receive_some(self, size: int) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self.raw)
            try:
                return self.raw.recv(size)
            except BlockingIOError:
                continue

    async def send_all(self, data: bytes) -> None:
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            await self.stream.send_all(memoryview(data)[sent:])

    def close(self) -> None:
        self.raw.detach()


async def _next_request(conn: h11.Connection, io: _Io) -> h11.Request | Reply | None:
    """The next request with its (small, discarded) body; None once the client is gone."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await io.receive_some(16384)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_BODY_BYTES:
                return Reply(413, BENCODE, b"")
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


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


async def _send(conn: h11.Connection, io: _Io, response: Reply, close: bool) -> None:
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


def open_http_listener(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (the IPv6 wildcard also takes IPv4); raises OSError.

    A plain socket, so that it can be made before trio runs; wrap it with
    ``trio.SocketListener(trio.socket.from_stdlib_socket(sock))``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock
