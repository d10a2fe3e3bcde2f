"""The tracker client: HTTP(S) and UDP announces and scrapes, tiers, and a per-torrent session.

The pure half builds announce URLs and UDP packets and parses answers; every malformed
answer becomes a `TrackerError` (a tracker is untrusted input). The trio half does the
I/O: `announce` and `scrape` for one URL, and `TrackerSession`, which keeps one working
tracker per tier (BEP 12) announced for as long as the engine runs it.

Specifications: BEP 3 (announce), BEP 7 (`peers6`), BEP 12 (announce-list tiers),
BEP 15 (UDP trackers), BEP 23 (compact peers), BEP 48 (scrape).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import re
import secrets
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import SplitResult, quote_from_bytes, urljoin, urlsplit, urlunsplit

import h11
import trio

from btfs import bencode
from btfs.errors import BencodeError, BtfsError

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS = ("", "started", "completed", "stopped")
SUPPORTED_SCHEMES = ("http", "https", "udp")
USER_AGENT = "btfs/0.1"

MAX_RESPONSE = 1 << 20  # an announce answer of 1 MiB is already absurd
MAX_REDIRECTS = 3
UDP_PROTOCOL_ID = 0x41727101980
UDP_CONNECTION_TTL = 60.0  # BEP 15 lets a client use a connection id for one minute
UDP_MAX_SCRAPE = 74  # info-hashes in one UDP scrape packet (BEP 15)
_UDP_EVENTS = {"": 0, "completed": 1, "started": 2, "stopped": 3}
_ACTION_CONNECT, _ACTION_ANNOUNCE, _ACTION_SCRAPE, _ACTION_ERROR = 0, 1, 2, 3
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class TrackerError(BtfsError):
    """A tracker could not be reached, or answered something that is not a valid answer."""


class TrackerFailure(TrackerError):
    """The tracker answered with a `failure reason` (or a UDP error packet)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AnnounceParams:
    """What we tell the tracker about ourselves and this torrent."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str = ""
    numwant: int = 50
    key: int = field(default_factory=lambda: secrets.randbits(32))

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20 or len(self.peer_id) != 20:
            raise ValueError("info_hash and peer_id must be 20 bytes each")
        if self.event not in EVENTS:
            raise ValueError(f"unknown announce event {self.event!r}")


@dataclass
class AnnounceResult:
    """A tracker's answer: when to come back and whom to contact."""

    interval: float
    min_interval: float | None = None
    peers: list[tuple[str, int]] = field(default_factory=list)
    complete: int | None = None
    incomplete: int | None = None
    warning: str | None = None


@dataclass
class ScrapeResult:
    """Swarm counts for one torrent: seeders, completed downloads, leechers."""

    complete: int
    downloaded: int
    incomplete: int


# ---------------------------------------------------------------------------------------
# HTTP: URLs and bencoded answers


def http_announce_url(announce_url: str, params: AnnounceParams) -> str:
    """The GET URL of an announce; the announce URL's own query (a passkey) is kept."""
    query = [
        "info_hash=" + _quote(params.info_hash),
        "peer_id=" + _quote(params.peer_id),
        f"port={params.port}",
        f"uploaded={max(0, params.uploaded)}",
        f"downloaded={max(0, params.downloaded)}",
        f"left={max(0, params.left)}",
        "compact=1",
        f"numwant={params.numwant}",
        f"key={params.key & 0xFFFFFFFF:08x}",
    ]
    if params.event:
        query.append(f"event={params.event}")
    return _add_query(announce_url, "&".join(query))


def _quote(data: bytes) -> str:
    """Percent-encode byte by byte; only RFC 3986 unreserved characters stay as they are."""
    return quote_from_bytes(data, safe="")


def _add_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))


def scrape_url(announce_url: str) -> str | None:
    """The scrape URL of an announce URL, or None if it has none.

    HTTP follows the BEP 48 rule: the last path component must start with "announce",
    which becomes "scrape". A UDP tracker scrapes in its own protocol, at the same URL.
    """
    parts = urlsplit(announce_url)
    scheme = parts.scheme.lower()
    if scheme == "udp":
        return announce_url
    if scheme not in ("http", "https"):
        return None
    head, slash, last = parts.path.rpartition("/")
    if not slash or not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce'):]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def parse_http_announce(body: bytes) -> AnnounceResult:
    """Parse a bencoded announce answer (compact or dictionary peers, `peers6`)."""
    answer = _decode_answer(body)
    interval = _number(answer, b"interval")
    min_interval = _number(answer, b"min interval")
    peers: list[tuple[str, int]] = []
    raw = answer.get(b"peers")
    if isinstance(raw, bytes):
        peers += _compact_peers(raw, 6)
    elif isinstance(raw, list):
        peers += _dict_peers(raw)
    elif raw is not None:
        raise TrackerError("tracker answer has a malformed peers field")
    raw6 = answer.get(b"peers6")
    if isinstance(raw6, bytes):
        peers += _compact_peers(raw6, 18)
    elif raw6 is not None:
        raise TrackerError("tracker answer has a malformed peers6 field")
    warning = answer.get(b"warning message")
    return AnnounceResult(
        interval=1800.0 if interval is None else interval,
        min_interval=min_interval,
        peers=_unique(peers),
        complete=_count(answer, b"complete"),
        incomplete=_count(answer, b"incomplete"),
        warning=None if warning is None else _text(warning),
    )


def parse_http_scrape(body: bytes, info_hashes: Sequence[bytes]) -> dict[bytes, ScrapeResult]:
    """Parse a scrape answer; keeps the torrents asked about (all of them if none named)."""
    answer = _decode_answer(body)
    files = answer.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("scrape answer has no files dictionary")
    wanted = set(info_hashes)
    results: dict[bytes, ScrapeResult] = {}
    for info_hash, stats in files.items():
        if len(info_hash) != 20 or (wanted and info_hash not in wanted):
            continue
        if not isinstance(stats, dict):
            raise TrackerError("scrape answer has a malformed files entry")
        results[info_hash] = ScrapeResult(
            complete=_count(stats, b"complete") or 0,
            downloaded=_count(stats, b"downloaded") or 0,
            incomplete=_count(stats, b"incomplete") or 0,
        )
    return results


def _decode_answer(body: bytes) -> dict[bytes, Any]:
    """Decode a tracker's bencoded dictionary; a `failure reason` raises TrackerFailure."""
    try:
        answer = bencode.decode(body)
    except BencodeError as exc:
        raise TrackerError(f"tracker answer is not bencoded: {exc}") from None
    if not isinstance(answer, dict):
        raise TrackerError("tracker answer is not a bencoded dictionary")
    failure = answer.get(b"failure reason")
    if failure is not None:
        raise TrackerFailure(_text(failure))
    return answer


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, int):
        return str(value)
    raise TrackerError("tracker answer has a non-text message")


def _number(answer: dict[bytes, Any], key: bytes) -> float | None:
    value = answer.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise TrackerError(f"tracker answer has a malformed {key.decode()!r}")
    return float(min(value, 10**9))


def _count(answer: dict[bytes, Any], key: bytes) -> int | None:
    value = answer.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise TrackerError(f"tracker answer has a malformed {key.decode()!r}")
    return value


def _compact_peers(data: bytes, size: int) -> list[tuple[str, int]]:
    """BEP 23 (4-byte address + port) or BEP 7 (16-byte address + port) entries."""
    if len(data) % size:
        raise TrackerError(f"compact peer list is not a multiple of {size} bytes")
    peers = []
    for i in range(0, len(data), size):
        port = int.from_bytes(data[i + size - 2 : i + size], "big")
        if port:
            peers.append((str(ipaddress.ip_address(data[i : i + size - 2])), port))
    return peers


def _dict_peers(entries: list[Any]) -> list[tuple[str, int]]:
    """The original peer list of dictionaries; entries without a usable address are skipped."""
    peers = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise TrackerError("peer list entry is not a dictionary")
        ip, port = entry.get(b"ip"), entry.get(b"port")
        if not isinstance(ip, bytes) or not isinstance(port, int) or not 0 < port < 65536:
            continue
        host = _host(ip)
        if host is not None:
            peers.append((host, port))
    return peers


def _host(raw: bytes) -> str | None:
    """An IP literal (normalised) or a plausible DNS name, else None."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text if _HOSTNAME.match(text) else None


def _unique(peers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return list(dict.fromkeys(peers))


# ---------------------------------------------------------------------------------------
# UDP (BEP 15) packets


def udp_connect_request(transaction_id: int) -> bytes:
    return struct.pack(">QII", UDP_PROTOCOL_ID, _ACTION_CONNECT, transaction_id)


def parse_udp_connect_response(data: bytes, transaction_id: int) -> int:
    """The connection id from a connect answer."""
    _udp_check(data, transaction_id, _ACTION_CONNECT, 16)
    return int(struct.unpack_from(">Q", data, 8)[0])


def udp_announce_request(connection_id: int, transaction_id: int, params: AnnounceParams) -> bytes:
    return struct.pack(
        ">QII20s20sQQQIIIiH",
        connection_id,
        _ACTION_ANNOUNCE,
        transaction_id,
        params.info_hash,
        params.peer_id,
        max(0, params.downloaded),
        max(0, params.left),
        max(0, params.uploaded),
        _UDP_EVENTS[params.event],
        0,  # our IP: the one the packet comes from
        params.key & 0xFFFFFFFF,
        params.numwant,
        params.port,
    )


def parse_udp_announce_response(
    data: bytes, transaction_id: int, *, ipv6: bool = False
) -> AnnounceResult:
    """An announce answer; over IPv6 its peers are 18-byte entries, over IPv4 6-byte ones."""
    _udp_check(data, transaction_id, _ACTION_ANNOUNCE, 20)
    interval, leechers, seeders = struct.unpack_from(">III", data, 8)
    return AnnounceResult(
        interval=float(interval),
        peers=_unique(_compact_peers(data[20:], 18 if ipv6 else 6)),
        complete=seeders,
        incomplete=leechers,
    )


def udp_scrape_request(
    connection_id: int, transaction_id: int, info_hashes: Sequence[bytes]
) -> bytes:
    if not 0 < len(info_hashes) <= UDP_MAX_SCRAPE or any(len(h) != 20 for h in info_hashes):
        raise ValueError(f"a UDP scrape takes 1 to {UDP_MAX_SCRAPE} 20-byte info-hashes")
    return struct.pack(">QII", connection_id, _ACTION_SCRAPE, transaction_id) + b"".join(
        info_hashes
    )


def parse_udp_scrape_response(
    data: bytes, transaction_id: int, info_hashes: Sequence[bytes]
) -> dict[bytes, ScrapeResult]:
    """A scrape answer: 12 bytes per info-hash, in the order they were asked."""
    _udp_check(data, transaction_id, _ACTION_SCRAPE, 8 + 12 * len(info_hashes))
    results = {}
    for i, info_hash in enumerate(info_hashes):
        seeders, completed, leechers = struct.unpack_from(">III", data, 8 + 12 * i)
        results[info_hash] = ScrapeResult(seeders, completed, leechers)
    return results


def udp_error_packet(transaction_id: int, message: str) -> bytes:
    """An error answer (what a tracker sends; useful to fake one)."""
    return struct.pack(">II", _ACTION_ERROR, transaction_id) + message.encode()


def udp_transaction_id(data: bytes) -> int | None:
    """The transaction id of an answer, or None if it is too short to have one."""
    return int(struct.unpack_from(">I", data, 4)[0]) if len(data) >= 8 else None


def _udp_check(data: bytes, transaction_id: int, action: int, size: int) -> None:
    if len(data) < 8:
        raise TrackerError(f"UDP tracker answer of {len(data)} bytes is too short")
    got_action, got_tid = struct.unpack_from(">II", data)
    if got_tid != transaction_id:
        raise TrackerError("UDP tracker answer has the wrong transaction id")
    if got_action == _ACTION_ERROR:
        raise TrackerFailure(data[8:].decode("utf-8", "replace"))
    if got_action != action:
        raise TrackerError(f"UDP tracker answered action {got_action}, expected {action}")
    if len(data) == 8 and action == _ACTION_ANNOUNCE:
        # opentracker's way of refusing a torrent that is not on its whitelist.
        raise TrackerError("UDP tracker refused the announce (8-byte answer)")
    if len(data) < size:
        raise TrackerError(f"UDP tracker answer of {len(data)} bytes is too short")


# ---------------------------------------------------------------------------------------
# Tiers (BEP 12)


class TrackerTiers:
    """The announce-list: each tier shuffled once; a URL that answers moves to its front."""

    def __init__(self, announce_list: Sequence[Sequence[str]], rng: random.Random | None = None):
        rng = rng or random.Random()
        self.tiers: list[list[str]] = []
        seen: set[str] = set()
        for tier in announce_list:
            urls = []
            for url in tier:
                url = url.strip()
                if not url or url in seen:
                    continue
                seen.add(url)
                if _scheme(url) not in SUPPORTED_SCHEMES:
                    log.info("skipping tracker %s: unsupported scheme", url)
                    continue
                urls.append(url)
            rng.shuffle(urls)
            if urls:
                self.tiers.append(urls)

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self.tiers)

    def __len__(self) -> int:
        return len(self.tiers)

    def urls(self) -> list[str]:
        """Every URL, tier by tier, in the order they will be tried."""
        return [url for tier in self.tiers for url in tier]

    def promote(self, url: str) -> None:
        """`url` answered: it is tried first in its tier from now on."""
        for tier in self.tiers:
            if url in tier:
                tier.remove(url)
                tier.insert(0, url)
                return


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


# ---------------------------------------------------------------------------------------
# I/O: one announce or scrape


async def announce(
    url: str, params: AnnounceParams, *, timeout: float = 15,  # noqa: ASYNC109 (the API)
    bind: str | None = None,
) -> AnnounceResult:
    """Announce to one tracker; every failure (network or answer) is a TrackerError.

    `bind`: the address our peers listen on. The announce leaves from it, since a tracker
    takes a peer's address from the connection and would otherwise hand out one where
    nobody listens.
    """
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        return await _guard(timeout, _http_announce(url, params, bind))
    if scheme == "udp":
        return await _guard(timeout, _udp_announce(url, params, timeout, bind))
    raise TrackerError(f"unsupported tracker URL {url!r}")


async def scrape(
    url: str, info_hashes: Sequence[bytes], *, timeout: float = 15,  # noqa: ASYNC109
    bind: str | None = None,
) -> dict[bytes, ScrapeResult]:
    """Scrape one tracker for the given torrents."""
    target = scrape_url(url)
    if target is None:
        raise TrackerError(f"tracker {url} has no scrape URL")
    if _scheme(url) == "udp":
        return await _guard(timeout, _udp_scrape(url, list(info_hashes), timeout, bind))
    query = "&".join("info_hash=" + _quote(h) for h in info_hashes)
    return await _guard(timeout, _http_scrape(_add_query(target, query), info_hashes, bind))


async def _guard(seconds: float, work: Awaitable[T]) -> T:
    """Bound `work` by `seconds` and turn network errors into TrackerError."""
    try:
        with trio.fail_after(seconds):
            return await work
    except trio.TooSlowError:
        raise TrackerError(f"no answer within {seconds:g} s") from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError, ValueError) as exc:
        # ValueError: a malformed port or host name in the URL (UnicodeError included).
        raise TrackerError(str(exc) or type(exc).__name__) from exc


async def _http_announce(url: str, params: AnnounceParams, bind: str | None) -> AnnounceResult:
    status, body = await _http_get(http_announce_url(url, params), bind)
    return _http_answer(status, body, parse_http_announce)


async def _http_scrape(
    url: str, info_hashes: Sequence[bytes], bind: str | None
) -> dict[bytes, ScrapeResult]:
    status, body = await _http_get(url, bind)
    return _http_answer(status, body, lambda b: parse_http_scrape(b, info_hashes))


def _http_answer(status: int, body: bytes, parse: Callable[[bytes], T]) -> T:
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
    """GET `url`, following up to MAX_REDIRECTS redirects; returns status and body."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise TrackerError(f"not an HTTP URL: {url!r}")
        status, location, body = await _http_fetch(parts, bind)
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        return status, body
    raise TrackerError("too many HTTP redirects")


def _local_address_for(host: str, bind: str | None) -> str | None:
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


async def _http_fetch(parts: SplitResult, bind: str | None) -> tuple[int, str | None, bytes]:
    """One HTTP/1.1 GET over a fresh connection: status, Location header, body."""
    https = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream = await trio.open_tcp_stream(
        host, port, local_address=_local_address_for(host, bind))
    try:
        if https:
            stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
            await stream.do_handshake()
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", parts.netloc.rpartition("@")[2]),
                ("User-Agent", USER_AGENT),
                ("Accept-Encoding", "identity"),
                ("Connection", "close"),
            ],
        )
        await stream.send_all(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        status, location, body = 0, None, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"location":
                        location = value.decode("latin-1")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_RESPONSE:
                    raise TrackerError(f"tracker answer larger than {MAX_RESPONSE} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, location, bytes(body)
            elif event is h11.PAUSED:
                raise TrackerError("HTTP connection stalled")
    finally:
        await trio.aclose_forcefully(stream)


# UDP: connection ids per (host, port, our address), with their expiry on the time.monotonic() clock
# (trio's clock differs between trio.run calls).
_connection_ids: dict[tuple[str, int, str | None], tuple[int, float]] = {}


async def _udp_announce(
    url: str, params: AnnounceParams, budget: float, bind: str | None
) -> AnnounceResult:
    return await _udp_request(
        url,
        budget,
        bind,
        lambda conn, tid: udp_announce_request(conn, tid, params),
        lambda data, tid, ipv6: parse_udp_announce_response(data, tid, ipv6=ipv6),
    )


async def _udp_scrape(
    url: str, info_hashes: list[bytes], budget: float, bind: str | None
) -> dict[bytes, ScrapeResult]:
    return await _udp_request(
        url,
        budget,
        bind,
        lambda conn, tid: udp_scrape_request(conn, tid, info_hashes),
        lambda data, tid, _ipv6: parse_udp_scrape_response(data, tid, info_hashes),
    )


async def _udp_request(
    url: str,
    budget: float,
    bind: str | None,
    build: Callable[[int, int], bytes],
    parse: Callable[[bytes, int, bool], T],
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
    key = (host, port, bind)  # a connection id belongs to our address too
    with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
        local = _local_address_for(str(sockaddr[0]), bind)
        if local is not None:
            await sock.bind((local, 0))
        await sock.connect(sockaddr)
        while True:
            cached = _connection_ids.get(key)
            if cached is not None and cached[1] > time.monotonic():
                connection_id, fresh = cached[0], False
            else:
                tid = secrets.randbits(32)
                answer = await _udp_exchange(sock, udp_connect_request(tid), tid, deadline,
                                             first_wait)
                connection_id, fresh = parse_udp_connect_response(answer, tid), True
                _connection_ids[key] = (connection_id, time.monotonic() + UDP_CONNECTION_TTL)
            tid = secrets.randbits(32)
            answer = await _udp_exchange(sock, build(connection_id, tid), tid, deadline,
                                         first_wait)
            try:
                return parse(answer, tid, family == trio.socket.AF_INET6)
            except TrackerFailure:
                _connection_ids.pop(key, None)
                if fresh:
                    raise
                # The cached connection id may have expired on the tracker's side: reconnect.


async def _udp_exchange(
    sock: trio.socket.SocketType, packet: bytes, tid: int, deadline: float, first_wait: float
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
                if udp_transaction_id(data) == tid:
                    return data
                # An answer to an earlier request (or noise): keep waiting.
    raise TrackerError("UDP tracker did not answer")


# ---------------------------------------------------------------------------------------
# The per-torrent session

MIN_ANNOUNCE_INTERVAL = 30.0
MAX_ANNOUNCE_INTERVAL = 4 * 3600.0


@dataclass
class _TierState:
    index: int
    backoff: float
    wake: trio.Event = field(default_factory=trio.Event)
    next_due: float = -math.inf
    last_attempt: float = -math.inf
    min_gap: float = 0.0
    urgent: bool = False  # announce right now (completed)
    want_more: bool = False  # announce as soon as the min interval allows
    done_reported: bool = False  # a tracker of this tier has been told left=0


class TrackerSession:
    """Keeps a torrent announced to the first working tracker of every tier, in parallel.

    `run()` never raises for tracker or network trouble: errors are logged, kept in
    `last_error` (None after a success) and counted in `failures`, and the tier is retried
    with exponential back-off. `last_result` holds each URL's latest answer, for status.
    """

    def __init__(
        self,
        tiers: Sequence[Sequence[str]],
        info_hash: bytes,
        peer_id: bytes,
        port: int,
        stats: Callable[[], tuple[int, int, int]],
        on_peers: Callable[[list[tuple[str, int]]], None],
        numwant: int = 50,
        *,
        rng: random.Random | None = None,
        timeout: float = 15.0,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        min_reannounce: float = 30.0,
        bind: str | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.bind = bind  # announces leave from it (see `announce`)
        self.tiers = TrackerTiers(tiers, rng)
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.port = port
        self.numwant = numwant
        self.key = rng.getrandbits(32)
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.min_reannounce = min_reannounce
        self.last_error: dict[str, str | None] = {}
        self.last_result: dict[str, AnnounceResult] = {}
        self.failures: dict[str, int] = {}  # consecutive failed announces per URL
        self._stats = stats
        self._on_peers = on_peers
        self._started: set[str] = set()  # URLs told "started" and not yet "stopped"
        self._in_flight: set[str] = set()  # an announce sent, its answer not yet read
        self._download_finished = False  # completed() was called: a seed never calls it
        self._states = [_TierState(i, retry_initial) for i in range(len(self.tiers))]

    async def run(self) -> None:
        """Announce until cancelled."""
        if not self._states:
            log.info("no usable tracker for this torrent")
        async with trio.open_nursery() as nursery:
            for state in self._states:
                nursery.start_soon(self._run_tier, state)
            await trio.sleep_forever()

    def completed(self) -> None:
        """The download has just finished: tell every tier now."""
        self._download_finished = True
        for state in self._states:
            state.urgent = True
            state.wake.set()

    def announce_now(self) -> None:
        """Re-announce as soon as each tracker's min interval allows (we want more peers)."""
        for state in self._states:
            state.want_more = True
            state.wake.set()

    async def stop(self, timeout: float = 3) -> None:  # noqa: ASYNC109 (the API)
        """Announce `stopped` to every tracker that had accepted us; bounded by `timeout`.

        Shielded, so it can be awaited in a `finally` of a cancelled task.
        """
        urls = [url for url in self.tiers.urls()
                if url in self._started or url in self._in_flight]
        if not urls:
            return
        uploaded, downloaded, left = self._stats()
        params = self._params("stopped", uploaded, downloaded, left)
        # A download that ends as it completes has not told its trackers "completed" yet.
        unreported = {
            url for state in self._states
            if self._download_finished and left == 0 and not state.done_reported
            for url in self.tiers.tiers[state.index]
        }
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for url in urls:
                    nursery.start_soon(self._stop_one, url, params, timeout,
                                       url in unreported)

    async def _stop_one(self, url: str, params: AnnounceParams, seconds: float,
                        completed_first: bool) -> None:
        try:
            if completed_first:
                await announce(url, replace(params, event="completed"), timeout=seconds,
                               bind=self.bind)
            await announce(url, params, timeout=seconds, bind=self.bind)
        except (TrackerError, OSError) as exc:
            log.debug("tracker %s: stopped announce failed: %s", url, exc)
        self._started.discard(url)

    def _params(self, event: str, uploaded: int, downloaded: int, left: int) -> AnnounceParams:
        return AnnounceParams(
            info_hash=self.info_hash,
            peer_id=self.peer_id,
            port=self.port,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=event,
            numwant=self.numwant,
            key=self.key,
        )

    async def _run_tier(self, state: _TierState) -> None:
        while True:
            await self._until_due(state)
            state.urgent = state.want_more = False
            state.last_attempt = trio.current_time()
            result = await self._announce_tier(state)
            now = trio.current_time()
            if result is None:
                state.next_due = now + state.backoff
                state.min_gap = self.min_reannounce
                state.backoff = min(state.backoff * 2, self.retry_max)
            else:
                state.backoff = self.retry_initial
                state.min_gap = max(result.min_interval or 0.0, self.min_reannounce)
                interval = max(result.interval, result.min_interval or 0.0)
                state.next_due = now + min(
                    max(interval, MIN_ANNOUNCE_INTERVAL), MAX_ANNOUNCE_INTERVAL
                )

    async def _until_due(self, state: _TierState) -> None:
        while True:
            now = trio.current_time()
            due = state.next_due
            if state.urgent:
                due = now
            elif state.want_more:
                due = min(due, state.last_attempt + state.min_gap)
            if now >= due:
                return
            state.wake = trio.Event()
            with trio.move_on_at(due):
                await state.wake.wait()

    async def _announce_tier(self, state: _TierState) -> AnnounceResult | None:
        """Try the tier's URLs in order; the first that answers is promoted and its peers used."""
        for url in list(self.tiers.tiers[state.index]):
            uploaded, downloaded, left = self._stats()
            if url not in self._started:
                event = "started"
            elif left == 0 and not state.done_reported:
                event = "completed"
            else:
                event = ""
            # Until its answer is read: if the session is cancelled meanwhile (the tracker
            # may have counted us already), stop() still says "stopped" to it.
            self._in_flight.add(url)
            try:
                result = await announce(
                    url, self._params(event, uploaded, downloaded, left), timeout=self.timeout,
                    bind=self.bind,
                )
            except (TrackerError, OSError) as exc:
                self._in_flight.discard(url)
                failures = self.failures[url] = self.failures.get(url, 0) + 1
                self.last_error[url] = str(exc) or type(exc).__name__
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "tracker %s: %s (failure %d)", url, exc, failures)
                continue
            self._in_flight.discard(url)
            self.failures[url] = 0
            self.last_error[url] = None
            self.last_result[url] = result
            self._started.add(url)
            if left == 0:
                state.done_reported = True
            self.tiers.promote(url)
            if result.warning:
                log.warning("tracker %s warns: %s", url, result.warning)
            log.debug("tracker %s: %s announce, %d peers", url, event or "regular",
                      len(result.peers))
            if result.peers:
                self._on_peers(result.peers)
            return result
        return None
