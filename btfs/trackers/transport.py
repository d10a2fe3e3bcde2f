"""One announce or scrape to one tracker URL, over HTTP(S) (`btfs.httpclient`) or UDP
(BEP 15 on a trio datagram socket). Every failure, of the network or of the answer, is a
`TrackerError`, and every call is bounded by its timeout."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import trio

from btfs.httpclient import HttpClient, HttpError, local_address_for
from btfs.trackers.http import (
    http_announce_url,
    http_scrape_url,
    parse_http_announce,
    parse_http_scrape,
    scrape_url,
)
from btfs.trackers.model import (
    AnnounceParams,
    AnnounceResult,
    ScrapeResult,
    TrackerError,
    TrackerFailure,
    url_scheme,
)
from btfs.trackers.udp import (
    parse_udp_announce_response,
    parse_udp_connect_response,
    parse_udp_scrape_response,
    udp_announce_request,
    udp_connect_request,
    udp_scrape_request,
)
from btfs.trackerwire import bep15

T = TypeVar("T")

MAX_RESPONSE = 1 << 20  # an announce answer of 1 MiB is already absurd
MAX_REDIRECTS = 3
UDP_CONNECTION_TTL = 60.0  # BEP 15 lets a client use a connection id for one minute


class ConnectionIds:
    """UDP connection ids by (tracker host, port, our address), until they expire.

    A connection id belongs to a client address, not to a torrent: one cache serves every
    torrent of the process (`CONNECTION_IDS`), so that each tracker is connected once a
    minute rather than once per torrent. The clock is `time.monotonic` by default, since
    trio's clock starts anew with every `trio.run`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 ttl: float = UDP_CONNECTION_TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._ids: dict[tuple[str, int, str | None], tuple[bytes, float]] = {}

    def get(self, where: tuple[str, int, str | None]) -> bytes | None:
        cached = self._ids.get(where)
        if cached is None or cached[1] <= self.clock():
            return None
        return cached[0]

    def put(self, where: tuple[str, int, str | None], connection_id: bytes) -> None:
        self._ids[where] = (connection_id, self.clock() + self.ttl)

    def forget(self, where: tuple[str, int, str | None]) -> None:
        self._ids.pop(where, None)


CONNECTION_IDS = ConnectionIds()


async def announce(
    url: str, params: AnnounceParams, *, timeout: float = 15,  # noqa: ASYNC109 (the API)
    bind: str | None = None, connection_ids: ConnectionIds = CONNECTION_IDS,
) -> AnnounceResult:
    """Announce to one tracker; every failure (network or answer) is a TrackerError.

    `bind`: the address our peers listen on. The announce leaves from it, since a tracker
    takes a peer's address from the connection and would otherwise hand out one where
    nobody listens.
    """
    scheme = url_scheme(url)
    if scheme in ("http", "https"):
        return await _guard(timeout, _http_announce(url, params, bind))
    if scheme == "udp":
        return await _guard(timeout, _udp_request(
            url, timeout, bind, connection_ids,
            lambda conn, tid: udp_announce_request(conn, tid, params),
            lambda data, tid, ipv6: parse_udp_announce_response(data, tid, ipv6=ipv6),
        ))
    raise TrackerError(f"unsupported tracker URL {url!r}")


async def scrape(
    url: str, info_hashes: Sequence[bytes], *, timeout: float = 15,  # noqa: ASYNC109
    bind: str | None = None, connection_ids: ConnectionIds = CONNECTION_IDS,
) -> dict[bytes, ScrapeResult]:
    """Scrape one tracker for the given torrents."""
    target = scrape_url(url)
    if target is None:
        raise TrackerError(f"tracker {url} has no scrape URL")
    hashes = list(info_hashes)
    if url_scheme(url) == "udp":
        return await _guard(timeout, _udp_request(
            url, timeout, bind, connection_ids,
            lambda conn, tid: udp_scrape_request(conn, tid, hashes),
            lambda data, tid, _ipv6: parse_udp_scrape_response(data, tid, hashes),
        ))
    return await _guard(timeout, _http_scrape(http_scrape_url(target, hashes), hashes, bind))


async def _guard(seconds: float, work: Awaitable[T]) -> T:
    """Bound `work` by `seconds` and turn network errors into TrackerError."""
    try:
        with trio.fail_after(seconds):
            return await work
    except trio.TooSlowError:
        raise TrackerError(f"no answer within {seconds:g} s") from None
    except (HttpError, OSError, ValueError) as exc:
        # ValueError: a malformed port or host name in a UDP tracker's URL.
        raise TrackerError(str(exc) or type(exc).__name__) from exc


# ------------------------------------------------------------------ HTTP(S)


async def _http_announce(url: str, params: AnnounceParams, bind: str | None) -> AnnounceResult:
    status, body = await _http_get(http_announce_url(url, params), bind)
    return _http_answer(status, body, parse_http_announce)


async def _http_scrape(
    url: str, info_hashes: Sequence[bytes], bind: str | None
) -> dict[bytes, ScrapeResult]:
    status, body = await _http_get(url, bind)
    return _http_answer(status, body, lambda b: parse_http_scrape(b, info_hashes))


def _http_answer(status: int, body: bytes, parse: Callable[[bytes], T]) -> T:
    """The parsed answer; a failure reason in an error status still counts as one."""
    if status == 200:
        return parse(body)
    try:
        parse(body)
    except TrackerFailure:
        raise
    except TrackerError:
        pass
    raise TrackerError(f"HTTP status {status}")


async def _http_get(url: str, bind: str | None) -> tuple[int, bytes]:
    """GET `url` on a connection of its own, following up to MAX_REDIRECTS redirects."""
    client = HttpClient(bind=bind, keep_alive=False, max_redirects=MAX_REDIRECTS)
    response = await client.get(url, max_body=MAX_RESPONSE)
    return response.status, response.body


# ------------------------------------------------------------------ UDP


async def _udp_request(
    url: str,
    budget: float,
    bind: str | None,
    connection_ids: ConnectionIds,
    build: Callable[[bytes, bytes], bytes],
    parse: Callable[[bytes, bytes, bool], T],
) -> T:
    """Connect (or reuse a cached connection id), then send one request and parse its answer.

    Retransmission follows BEP 15's doubling, but from timeout/4 rather than 15 s when the
    caller's time budget is short, so that some retransmissions still fit in it.
    """
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    if not host or not port:
        raise TrackerError(f"UDP tracker URL needs a host and a port: {url!r}")
    deadline = trio.current_time() + budget
    first_wait = min(15.0, budget / 4)
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    if not infos:
        raise TrackerError(f"cannot resolve {host}")
    family, _, _, _, sockaddr = infos[0]
    where = (host, port, bind)  # a connection id belongs to our address too
    with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
        local = local_address_for(str(sockaddr[0]), bind)
        if local is not None:
            await sock.bind((local, 0))
        await sock.connect(sockaddr)
        while True:
            connection_id = connection_ids.get(where)
            fresh = connection_id is None
            if connection_id is None:
                tid = secrets.token_bytes(4)
                answer = await _udp_exchange(sock, udp_connect_request(tid), tid, deadline,
                                             first_wait)
                connection_id = parse_udp_connect_response(answer, tid)
                connection_ids.put(where, connection_id)
            tid = secrets.token_bytes(4)
            answer = await _udp_exchange(sock, build(connection_id, tid), tid, deadline,
                                         first_wait)
            try:
                return parse(answer, tid, family == trio.socket.AF_INET6)
            except TrackerFailure:
                connection_ids.forget(where)
                if fresh:
                    raise
                # The cached connection id may have expired on the tracker's side: reconnect.


async def _udp_exchange(
    sock: trio.socket.SocketType, packet: bytes, tid: bytes, deadline: float, first_wait: float
) -> bytes:
    """Send `packet` until an answer with transaction id `tid` arrives, or the deadline."""
    for n in range(9):
        wait = min(first_wait * 2**n, deadline - trio.current_time())
        if wait <= 0:
            break
        await sock.send(packet)
        with trio.move_on_after(wait):
            while True:
                data = await sock.recv(65536)
                if bep15.transaction_id(data) == tid:
                    return data
                # An answer to an earlier request (or noise): keep waiting.
    raise TrackerError("UDP tracker did not answer")
