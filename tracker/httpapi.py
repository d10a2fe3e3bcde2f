"""The HTTP tracker's requests and answers, pure: an /announce or /scrape query in, a
bencoded answer out (BEP 3, BEP 7 `peers6`, BEP 23 compact peers, BEP 48 scrape).

Queries are decoded as raw bytes, so percent-encoded binary info-hashes work. Every
problem with a query is a `RequestError`, which the shell answers the tracker way: HTTP
200 with a bencoded ``failure reason``.
"""

from __future__ import annotations

from codecs import escape_decode
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from urllib.parse import unquote_to_bytes

from btfs.trackerwire.compact import normalize_ip, pack_ip
from btfs.trackerwire.events import ANNOUNCE_EVENTS, NONE
from tracker.errors import BadRequest, RequestError
from tracker.store.base import Outcome, ScrapeEntry

MAX_SCRAPE_HASHES = 100
_MAX_DIGITS = 20

# Event names as they come in a query; some old clients spell "no event" "empty".
_EVENTS = {name.encode(): name for name in ANNOUNCE_EVENTS} | {b"empty": NONE}


@dataclass(slots=True)
class AnnounceQuery:
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
        if name == b"info_hash":
            hashes.append(_unquote_hash(value) if b"%" in value else value)
            continue
        if b"%" in value:
            value = _unquote(value)
        params[name] = value
    return params, hashes


_HASHES: dict[bytes, bytes] = {}  # info_hash as sent -> decoded: few torrents, many peers
_MAX_HASHES = 4096


def _unquote_hash(value: bytes) -> bytes:
    """`_unquote` of an info_hash, remembered: every peer of a torrent sends the same
    bytes (in its client's encoding), so most announces find them here."""
    decoded = _HASHES.get(value)
    if decoded is None:
        decoded = _unquote(value)
        if len(_HASHES) >= _MAX_HASHES:
            _HASHES.clear()
        _HASHES[value] = decoded
    return decoded


def _unquote(value: bytes) -> bytes:
    """`unquote_to_bytes`, quicker: for every byte as %XX, and for the mixed encoding of
    libtorrent and Transmission (unreserved bytes as they are)."""
    n = len(value) // 3
    if len(value) % 3 == 0 and value[::3] == b"%" * n:
        try:
            decoded = bytes.fromhex(value.replace(b"%", b"").decode("ascii"))
        except ValueError:  # not all hex digits (UnicodeDecodeError is one too)
            pass
        else:
            if len(decoded) == n:  # fromhex skips whitespace: none may have been there
                return decoded
    if b"\\" not in value:  # %XX as \xXX, which the codec decodes in C (8x quicker)
        try:
            return escape_decode(value.replace(b"%", b"\\x"))[0]
        except ValueError:  # a "%" without two hex digits: unquote keeps it as it is
            pass
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


def parse_announce(query: bytes) -> AnnounceQuery:
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
    return AnnounceQuery(
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


_FLAGS = (None, b"0", b"1")  # compact, no_peer_id: what `quick_announce` takes


def quick_announce(query: bytes) -> AnnounceQuery | None:
    """`parse_announce` for the plain query that clients send (each name once, none of
    them %-encoded, nothing but the info_hash and the peer_id %-encoded, every value
    valid), at a fraction of its cost; None for any other query, which `parse_announce`
    then judges (so errors are worded in one place). Where it gives an answer, it is the
    one `parse_announce` would give (tests/unit/test_tracker_http_parse.py holds that)."""
    parts = query.split(b"&")
    try:  # (name, value) of each part, split in C
        params: dict[bytes, bytes] = dict(map(bytes.split, parts, repeat(b"="), repeat(1)))
    except ValueError:
        return None  # a part without "=", or an empty part
    if len(params) != len(parts) or b"%" in b"".join(params):
        return None  # a repeated or encoded name
    raw = params.get(b"info_hash")
    if raw is None:
        return None
    info_hash = _unquote_hash(raw) if b"%" in raw else raw
    peer_id = params.get(b"peer_id")
    if peer_id is None or len(info_hash) != 20:
        return None
    if b"%" in peer_id:
        peer_id = _unquote(peer_id)
        if len(peer_id) != 20:
            return None
    elif len(peer_id) != 20:
        return None
    port = params.get(b"port")
    if port is None or not port.isdigit() or len(port) > 5:
        return None
    port_number = int(port)
    if not 0 < port_number <= 0xFFFF:
        return None
    raw_event = params.get(b"event", b"")
    event = _EVENTS.get(raw_event)
    if event is None:
        return None
    counts = []
    for field in (b"uploaded", b"downloaded", b"left"):
        count = params.get(field)
        if count is None:
            counts.append(1 if field == b"left" and raw_event != b"completed" else 0)
        elif count.isdigit() and len(count) <= _MAX_DIGITS:
            counts.append(int(count))
        else:
            return None
    raw_numwant = params.get(b"numwant")
    if raw_numwant is None:
        numwant = -1
    elif raw_numwant.isdigit():
        numwant = int(raw_numwant) if len(raw_numwant) <= 4 else 10_000
    else:
        return None
    compact = params.get(b"compact")
    no_peer_id = params.get(b"no_peer_id")
    ip = params.get(b"ip")
    if compact not in _FLAGS or no_peer_id not in _FLAGS or (ip and b"%" in ip):
        return None
    return AnnounceQuery(info_hash, peer_id, port_number, counts[0], counts[1], counts[2],
                         event, numwant, compact != b"0", no_peer_id == b"1",
                         ip.decode("latin-1") if ip else None)


def parse_scrape(query: bytes, allow_full_scrape: bool) -> list[bytes] | None:
    """The info-hashes of a /scrape query; None means all (a full scrape)."""
    _, hashes = split_query(query)
    if not hashes:
        if not allow_full_scrape:
            raise RequestError("full scrape is disabled; name info_hash", "full_scrape_disabled")
        return None
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise BadRequest(f"at most {MAX_SCRAPE_HASHES} info_hash per scrape")
    for info_hash in hashes:
        if len(info_hash) != 20:
            raise BadRequest("info_hash must be 20 bytes")
    return hashes


def _is_ip(text: str) -> bool:
    try:
        pack_ip(text)
    except ValueError:
        return False
    return True


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
    result: Outcome, compact: bool = True, no_peer_id: bool = False
) -> bytes:
    """The bencoded answer to an announce (keys in bencode's sorted order, by hand)."""
    if compact:
        return encode_compact_announce(result.compact4(), result.compact6(), result.complete,
                                       result.incomplete, result.interval, result.min_interval)
    head = b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de" % (
        result.complete,
        result.incomplete,
        result.interval,
        result.min_interval,
    )
    parts = [head, b"5:peersl"]
    for peer_id, ip_text, port in result.entries():
        ip = ip_text.encode()
        if no_peer_id or not peer_id:  # (a store asked without ids gives none)
            parts.append(b"d2:ip%s4:porti%dee" % (_bstr(ip), port))
        else:
            parts.append(b"d2:ip%s7:peer id20:%s4:porti%dee" % (_bstr(ip), peer_id, port))
    parts.append(b"ee")
    return b"".join(parts)


def encode_compact_announce(peers4: bytes, peers6: bytes, complete: int, incomplete: int,
                            interval: int, min_interval: int) -> bytes:
    """The bencoded compact answer to an announce (BEP 23, and BEP 7's peers6)."""
    body = (b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de5:peers%d:%s"
            % (complete, incomplete, interval, min_interval, len(peers4), peers4))
    if peers6:
        body += b"6:peers6%d:%s" % (len(peers6), peers6)
    return body + b"e"


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
