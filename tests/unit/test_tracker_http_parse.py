"""The HTTP tracker's pure part: query parsing, client address, answers, /stats, /metrics."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.bencode import decode
from tracker.errors import BadRequest, RequestError
from tracker.http import HttpConfig, HttpTracker
from tracker.httpapi import (
    client_address,
    encode_announce,
    encode_failure,
    encode_scrape,
    parse_announce,
    parse_scrape,
    split_query,
)
from tracker.store.memory import SwarmStore

HASH = bytes([0, 1, 0x25, 0x26, 0x2B, 0x3D, 0x20, 0xFF]) + b"x" * 12  # %, &, +, =, space
PEER = b"-lt2000-" + b"\x00\xff" * 6

def call(tracker: Any, *args: Any) -> Any:
    """`tracker.handle(...)` over the memory store, which never suspends: run to the end."""
    coro = tracker.handle(*args)
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("handle suspended over the memory store")



def q(info_hash: bytes = HASH, peer_id: bytes = PEER, **params: object) -> bytes:
    """A query as libtorrent sends it: binary values percent-encoded."""
    parts = [f"info_hash={quote_from_bytes(info_hash)}", f"peer_id={quote_from_bytes(peer_id)}"]
    defaults: dict[str, object] = {"port": 6881, "uploaded": 0, "downloaded": 0, "left": 100,
                                   "corrupt": 0, "key": "1a2b3c", "numwant": 200,
                                   "compact": 1, "no_peer_id": 1, "supportcrypto": 1,
                                   "redundant": 0}
    defaults.update(params)
    parts += [f"{k}={v}" for k, v in defaults.items() if v is not None]
    return "&".join(parts).encode()


def test_split_query_keeps_binary() -> None:
    params, hashes = split_query(b"info_hash=%00%01a+b&x=%41&x=2&&flag&info_hash=z")
    assert hashes == [b"\x00\x01a+b", b"z"]
    assert params == {b"x": b"2", b"flag": b""}


def test_parse_libtorrent_announce() -> None:
    p = parse_announce(q(event="started", ipv6="2001%3Adb8%3A%3A1"))
    assert (p.info_hash, p.peer_id, p.port, p.left, p.event, p.numwant) == (
        HASH, PEER, 6881, 100, "started", 200)
    assert p.compact and p.no_peer_id and p.ip is None


def test_defaults_and_clamps() -> None:
    query = b"info_hash=" + quote_from_bytes(HASH).encode() + b"&peer_id=" + \
        quote_from_bytes(PEER).encode() + b"&port=1"
    p = parse_announce(query)
    assert (p.numwant, p.compact, p.event, p.uploaded) == (-1, True, "", 0)
    assert parse_announce(q(numwant=10**30)).numwant == 10_000
    assert parse_announce(q(numwant=-5)).numwant == -1
    assert parse_announce(q(compact=0)).compact is False
    assert parse_announce(q(event="empty")).event == ""
    assert parse_announce(q(ip="1.2.3.4")).ip == "1.2.3.4"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"peer_id=x", "missing info_hash"),
        (q(info_hash=b"short"), "info_hash must be 20 bytes"),
        (q() + b"&info_hash=" + quote_from_bytes(HASH).encode(), "one info_hash"),
        (q(peer_id=b"p" * 21), "peer_id must be 20 bytes"),
        (q(port=None), "missing port"),
        (q(port=0), "invalid port"),
        (q(port=65536), "invalid port"),
        (q(port="x"), "invalid port"),
        (q(left=-1), "negative left"),
        (q(uploaded="1e5"), "invalid uploaded"),
        (q(downloaded="9" * 40), "invalid downloaded"),
        (q(event="finished"), "unknown event"),
        (q(numwant="lots"), "invalid numwant"),
    ],
)
def test_parse_announce_errors(query: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_announce(query)


def test_parse_scrape() -> None:
    assert parse_scrape(b"info_hash=" + quote_from_bytes(HASH).encode(), False) == [HASH]
    assert parse_scrape(b"", True) is None
    with pytest.raises(RequestError, match="full scrape") as exc:
        parse_scrape(b"", False)
    assert exc.value.kind == "full_scrape_disabled"
    with pytest.raises(BadRequest):
        parse_scrape(b"info_hash=abc", False)
    with pytest.raises(BadRequest, match="at most"):
        parse_scrape(b"&".join([b"info_hash=" + b"a" * 20] * 101), False)


def test_client_address() -> None:
    proxies = frozenset({"10.0.0.1"})
    xff = [(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2"), (b"x-forwarded-for", b"10.0.0.1")]
    assert client_address("::ffff:9.9.9.9", xff, proxies) == "9.9.9.9"
    assert client_address("10.0.0.1", xff, proxies) == "2.2.2.2"
    assert client_address("::ffff:10.0.0.1", [], proxies) == "10.0.0.1"
    with pytest.raises(BadRequest, match="X-Forwarded-For"):
        client_address("10.0.0.1", [(b"x-forwarded-for", b"evil")], proxies)


def test_encoders_are_valid_bencode() -> None:
    store = SwarmStore(rng=random.Random(0))
    store.announce(HASH, b"a" * 20, "1.2.3.4", 1000, 0, 0, 0, "", 50, 0.0)
    store.announce(HASH, b"b" * 20, "2001:db8::2", 2000, 0, 0, 0, "", 50, 0.0)
    r = store.announce(HASH, b"c" * 20, "5.6.7.8", 3000, 0, 0, 9, "", 50, 0.0, with_ids=True)
    d = decode(encode_announce(r))
    assert d == {b"complete": 2, b"incomplete": 1, b"interval": 1800, b"min interval": 60,
                 b"peers": b"\x01\x02\x03\x04\x03\xe8",
                 b"peers6": bytes.fromhex("20010db8000000000000000000000002") + b"\x07\xd0"}
    d = decode(encode_announce(r, compact=False))
    assert isinstance(d, dict)
    assert sorted(d[b"peers"], key=lambda p: p[b"port"]) == [
        {b"ip": b"1.2.3.4", b"peer id": b"a" * 20, b"port": 1000},
        {b"ip": b"2001:db8::2", b"peer id": b"b" * 20, b"port": 2000},
    ]
    d = decode(encode_announce(r, compact=False, no_peer_id=True))
    assert isinstance(d, dict) and all(b"peer id" not in p for p in d[b"peers"])
    assert decode(encode_scrape({b"z" * 20: (1, 2, 3), b"a" * 20: (0, 0, 0)})) == {
        b"files": {
            b"a" * 20: {b"complete": 0, b"downloaded": 0, b"incomplete": 0},
            b"z" * 20: {b"complete": 1, b"downloaded": 2, b"incomplete": 3},
        }
    }
    assert decode(encode_failure("nö")) == {b"failure reason": "nö".encode()}


def make_tracker(**config: object) -> HttpTracker:
    clock = iter(range(1000, 100000))
    return HttpTracker(SwarmStore(), HttpConfig(**config),  # type: ignore[arg-type]
                       clock=lambda: float(next(clock)))


def test_handle_routes() -> None:
    t = make_tracker()
    r = call(t, b"GET", b"/announce?" + q(), [], "127.0.0.5")
    assert r.status == 200 and decode(r.body)[b"incomplete"] == 1  # type: ignore[index]
    r = call(t, b"GET", b"/announce?" + q(peer_id=b"q" * 20, compact=0, no_peer_id=0),
                 [], "127.0.0.6")
    peers = decode(r.body)[b"peers"]  # type: ignore[index]
    assert peers == [{b"ip": b"127.0.0.5", b"peer id": PEER, b"port": 6881}]
    r = call(t, b"GET", b"/scrape?info_hash=" + quote_from_bytes(HASH).encode(), [], "::1")
    assert decode(r.body) == {b"files": {HASH: {b"complete": 0, b"downloaded": 0,
                                                 b"incomplete": 2}}}
    r = call(t, b"GET", b"/scrape", [], "::1")
    assert b"failure reason" in r.body
    r = call(t, b"GET", b"/stats?format=json", [], "::1")
    stats = json.loads(r.body)
    assert stats["leechers"] == 2 and stats["announces"]["http"] == 2
    assert stats["errors"]["full_scrape_disabled"] == 1
    assert b"<table>" in call(t, b"GET", b"/stats", [], "::1").body
    metrics = call(t, b"GET", b"/metrics", [], "::1").body.decode()
    assert "btfs_tracker_leechers 2\n" in metrics
    assert 'btfs_tracker_announces_total{protocol="http"} 2\n' in metrics
    assert 'btfs_tracker_errors_total{kind="full_scrape_disabled"} 1\n' in metrics
    assert call(t, b"GET", b"/nope", [], "::1").status == 404
    assert call(t, b"POST", b"/announce", [], "::1").status == 405


def test_ip_param_needs_trust() -> None:
    t = make_tracker()
    call(t, b"GET", b"/announce?" + q(ip="8.8.8.8"), [], "127.0.0.5")
    r = call(t, b"GET", b"/announce?" + q(peer_id=b"q" * 20, compact=0), [], "127.0.0.6")
    assert decode(r.body)[b"peers"][0][b"ip"] == b"127.0.0.5"  # type: ignore[index]
    t = make_tracker(trust_ip_param=True)
    call(t, b"GET", b"/announce?" + q(ip="8.8.8.8"), [], "127.0.0.5")
    r = call(t, b"GET", b"/announce?" + q(peer_id=b"q" * 20, compact=0), [], "127.0.0.6")
    assert decode(r.body)[b"peers"][0][b"ip"] == b"8.8.8.8"  # type: ignore[index]
    r = call(t, b"GET", b"/announce?" + q(ip="host.example"), [], "127.0.0.5")
    assert b"failure reason" in r.body


def test_forwarded_for_from_trusted_proxy_only() -> None:
    t = make_tracker(trusted_proxies=frozenset({"127.0.0.9"}))
    xff = [(b"x-forwarded-for", b"203.0.113.5")]
    call(t, b"GET", b"/announce?" + q(), xff, "127.0.0.9")
    call(t, b"GET", b"/announce?" + q(peer_id=b"r" * 20), xff, "127.0.0.8")
    r = call(t, b"GET", b"/announce?" + q(peer_id=b"q" * 20, compact=0), [], "127.0.0.6")
    ips = sorted(p[b"ip"] for p in decode(r.body)[b"peers"])  # type: ignore[index]
    assert ips == [b"127.0.0.8", b"203.0.113.5"]


_query_parts = st.lists(
    st.tuples(
        st.sampled_from([b"info_hash", b"peer_id", b"port", b"uploaded", b"downloaded",
                         b"left", b"event", b"numwant", b"compact", b"ip", b"%zz", b"x"]),
        st.one_of(st.binary(max_size=25), st.sampled_from(
            [b"%" + quote_from_bytes(HASH).encode(), quote_from_bytes(HASH).encode(), b"-1",
             b"0", b"65535", b"99999999999999999999999", b"started", b"%", b"%4"])),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(_query_parts, st.sampled_from([b"/announce", b"/scrape", b"/stats", b"/metrics", b"/"]),
       st.booleans())
def test_random_queries_raise_only_tracker_errors(
    parts: list[tuple[bytes, bytes]], path: bytes, trust: bool
) -> None:
    query = b"&".join(k + b"=" + v for k, v in parts)
    try:
        parse_announce(query)
    except RequestError:
        pass
    try:
        parse_scrape(query, trust)
    except RequestError:
        pass
    t = make_tracker(trust_ip_param=trust, allow_full_scrape=trust)
    r = call(t, b"GET", path + b"?" + query, [(b"x-forwarded-for", query[:50])], "10.1.1.1")
    assert r.status in (200, 404)
    if path in (b"/announce", b"/scrape"):
        assert isinstance(decode(r.body), dict)
