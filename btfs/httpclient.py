"""HTTP/1.1 GET over trio with h11, for the tracker client and the web seeds.

Connections are kept alive and reused per (scheme, host, port), at most
`connections_per_host` at once; redirects are followed; http and https; every body read
is capped. A pooled connection the server closed while it sat idle is noticed when the
next request gets no answer on it, and that request is sent once more on a fresh one.
Every failure of the network or of the HTTP framing is an `HttpError`. A `timeout`
bounds each request from the moment it has a connection slot, so that waiting behind
the per-host limit is not taken for a slow server; callers bound the whole call.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import h11
import trio

from btfs.errors import BtfsError

USER_AGENT = "btfs/0.1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECT_BODY = 64 * 1024
RECEIVE_SIZE = 65536
_PATH_SAFE = "/%-._~!$&'()*+,;=:@"

HeadCheck = Callable[[int, Mapping[str, str]], None]
"""Called with the final answer's status and headers before its body is read; may raise."""


class HttpError(BtfsError):
    """The request failed: network, TLS, HTTP framing, redirects or an oversized answer."""


@dataclass(frozen=True)
class Response:
    """A complete answer; header names are lower case (a repeated one keeps its last value)."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str


def local_address_for(host: str, bind: str | None) -> str | None:
    """The bind address, if there is one and it is of the same family as `host`."""
    if not bind:
        return None
    try:
        ours = ipaddress.ip_address(bind).version
    except ValueError:
        return None
    try:
        theirs = ipaddress.ip_address(host).version
    except ValueError:
        theirs = 4  # a host name: the IPv4 bind suits its IPv4 addresses
    return bind if ours == theirs else None


def _reason(exc: BaseException) -> str:
    """A one-line reason; trio's BrokenResourceError carries the real one (TLS) as cause."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


_Key = tuple[str, str, int]


class _Connection:
    """One HTTP/1.1 connection: a trio stream and its h11 state machine."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.answered = False

    async def exchange(
        self, request: h11.Request, max_body: int, check_head: HeadCheck | None
    ) -> tuple[int, dict[str, str], bytes]:
        self.answered = False
        await self.stream.send_all(self.h11.send(request) + (self.h11.send(h11.EndOfMessage())
                                                             or b""))
        status, headers, body, cap = 0, {}, bytearray(), max_body
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(bytes(await self.stream.receive_some(RECEIVE_SIZE)))
            elif isinstance(event, h11.Response):
                self.answered = True
                status = event.status_code
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                if status in REDIRECT_STATUSES and "location" in headers:
                    cap = MAX_REDIRECT_BODY
                elif check_head is not None:
                    check_head(status, headers)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > cap:
                    raise HttpError(f"answer larger than {cap} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, headers, bytes(body)
            elif event is h11.PAUSED:
                raise HttpError("HTTP connection stalled")
            # h11.InformationalResponse (1xx): the real answer follows.

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE


_NETWORK_ERRORS = (OSError, UnicodeError, trio.BrokenResourceError, trio.ClosedResourceError,
                   h11.ProtocolError)


class HttpClient:
    """GETs with pooled keep-alive connections (or one connection per request without
    `keep_alive`). `bind` is the local address connections leave from; `aclose` closes
    the idle connections."""

    def __init__(
        self,
        *,
        bind: str | None = None,
        connections_per_host: int = 2,
        keep_alive: bool = True,
        max_redirects: int = 3,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if connections_per_host < 1:
            raise ValueError("connections_per_host must be at least 1")
        self.bind = bind
        self.connections_per_host = connections_per_host
        self.keep_alive = keep_alive
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self._ssl_context = ssl_context
        self._idle: dict[_Key, list[_Connection]] = {}
        self._limits: dict[_Key, trio.Semaphore] = {}
        self.connections_opened = 0
        self._closed = False

    async def get(
        self,
        url: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        max_body: int,
        check_head: HeadCheck | None = None,
        timeout: float = math.inf,  # noqa: ASYNC109 (per request, after the wait for a slot)
    ) -> Response:
        """GET `url`, following up to `max_redirects` redirects (relative or absolute)."""
        for _ in range(self.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise HttpError(f"not an HTTP URL: {url!r}")
            try:
                status, answer, body = await self._request(parts, headers, max_body, check_head,
                                                           timeout)
            except trio.TooSlowError:
                raise HttpError(f"no answer within {timeout:g} s") from None
            except _NETWORK_ERRORS as exc:
                raise HttpError(_reason(exc)) from exc
            location = answer.get("location")
            if status in REDIRECT_STATUSES and location:
                url = urljoin(url, location)
                continue
            return Response(status, answer, body, url)
        raise HttpError(f"more than {self.max_redirects} HTTP redirects")

    async def aclose(self) -> None:
        """Close the idle connections; those still in use close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                await trio.aclose_forcefully(conn.stream)

    async def _request(
        self,
        parts: SplitResult,
        headers: Sequence[tuple[str, str]],
        max_body: int,
        check_head: HeadCheck | None,
        seconds: float,
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            https = parts.scheme.lower() == "https"
            key: _Key = (parts.scheme.lower(), parts.hostname or "",
                         parts.port or (443 if https else 80))
        except ValueError as exc:  # a port out of range or not a number
            raise HttpError(str(exc)) from exc
        target = quote(parts.path or "/", safe=_PATH_SAFE) + (
            f"?{parts.query}" if parts.query else "")
        request = h11.Request(method="GET", target=target, headers=[
            ("Host", parts.netloc.rpartition("@")[2]),
            ("User-Agent", self.user_agent),
            ("Accept-Encoding", "identity"),
            *([] if self.keep_alive else [("Connection", "close")]),
            *headers,
        ])
        limit = self._limits.setdefault(key, trio.Semaphore(self.connections_per_host))
        async with limit:
            with trio.fail_after(seconds):
                return await self._exchange(key, request, max_body, check_head)

    async def _exchange(self, key: _Key, request: h11.Request, max_body: int,
                        check_head: HeadCheck | None) -> tuple[int, dict[str, str], bytes]:
        """The request on a pooled connection, or on a new one; pooled again if it can be."""
        pooled = self._idle.get(key)
        conn = pooled.pop() if pooled else None
        while True:
            reused = conn is not None
            if conn is None:
                conn = await self._open(key)
            try:
                result = await conn.exchange(request, max_body, check_head)
            except _NETWORK_ERRORS:
                await trio.aclose_forcefully(conn.stream)
                if reused and not conn.answered:
                    conn = None  # closed by the server while idle: once more, afresh
                    continue
                raise
            except BaseException:
                await trio.aclose_forcefully(conn.stream)
                raise
            break
        if self.keep_alive and conn.reusable and not self._closed:
            conn.h11.start_next_cycle()
            self._idle.setdefault(key, []).append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)
        return result

    async def _open(self, key: _Key) -> _Connection:
        scheme, host, port = key
        stream: trio.abc.Stream = await trio.open_tcp_stream(
            host, port, local_address=local_address_for(host, self.bind))
        self.connections_opened += 1
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            tls = trio.SSLStream(stream, self._ssl_context, server_hostname=host)
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tls)
                raise
            stream = tls
        return _Connection(stream)
