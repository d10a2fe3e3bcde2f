"""HTTP trackers, pure half: announce and scrape URLs, and the bencoded answers (BEP 3,
BEP 7 `peers6`, BEP 23 compact peers, BEP 48 scrape). A tracker is untrusted input:
every malformed answer becomes a `TrackerError`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote_from_bytes, urlsplit, urlunsplit

from btfs import bencode
from btfs.errors import BencodeError
from btfs.trackers.model import (
    AnnounceParams,
    AnnounceResult,
    ScrapeResult,
    TrackerError,
    TrackerFailure,
    unique,
)
from btfs.trackerwire import compact

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


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


def http_scrape_url(scrape: str, info_hashes: Sequence[bytes]) -> str:
    """The GET URL of a scrape of `info_hashes` at the scrape URL `scrape`."""
    return _add_query(scrape, "&".join("info_hash=" + _quote(h) for h in info_hashes))


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
        peers += _compact_peers(raw, compact.V4_SIZE)
    elif isinstance(raw, list):
        peers += _dict_peers(raw)
    elif raw is not None:
        raise TrackerError("tracker answer has a malformed peers field")
    raw6 = answer.get(b"peers6")
    if isinstance(raw6, bytes):
        peers += _compact_peers(raw6, compact.V6_SIZE)
    elif raw6 is not None:
        raise TrackerError("tracker answer has a malformed peers6 field")
    warning = answer.get(b"warning message")
    return AnnounceResult(
        interval=1800.0 if interval is None else interval,
        min_interval=min_interval,
        peers=unique(peers),
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


def _number(answer: dict[bytes, Any], name: bytes) -> float | None:
    value = _count(answer, name)
    return None if value is None else float(min(value, 10**9))


def _count(answer: dict[bytes, Any], name: bytes) -> int | None:
    value = answer.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise TrackerError(f"tracker answer has a malformed {name.decode()!r}")
    return value


def _compact_peers(data: bytes, size: int) -> list[tuple[str, int]]:
    try:
        return compact.decode_peers(data, size)
    except ValueError as exc:
        raise TrackerError(str(exc)) from None


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
