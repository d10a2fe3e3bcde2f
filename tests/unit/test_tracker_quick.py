"""The tracker's announce fast paths against the general paths they shortcut.

HTTP: `quick_announce` takes only the plain query and must give what `parse_announce`
gives, or None (then `parse_announce` words the error). UDP: `UdpTracker` with its fast
path must answer every datagram with the bytes, and count what, the tracker with
`fast_path=False` does. Also the connection-ID memory and the swarm's `floor`.
"""

from __future__ import annotations

import random
import re
import struct
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.trackerwire.bep15 import PROTOCOL_ID
from tracker import fastpath
from tracker.errors import RequestError
from tracker.http import HttpConfig, HttpTracker
from tracker.httpapi import _unquote, parse_announce, quick_announce
from tracker.store.memory import WANT_V4, SwarmStore
from tracker.udp import ConnectionIds, UdpTracker

HASH = bytes([0, 1, 0x25, 0x26, 0x2B, 0x3D, 0x20, 0xFF]) + b"x" * 12  # %, &, +, =, space
PEER = b"-lt2000-" + b"\x00\xff" * 6
UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def client_quote(data: bytes) -> str:
    """As libtorrent and Transmission send binary values: unreserved bytes as they are."""
    return "".join(chr(b) if b in UNRESERVED else f"%{b:02X}" for b in data)


def full_quote(data: bytes) -> str:
    return "".join(f"%{b:02x}" for b in data)


def query(info_hash: str | None = None, peer_id: str | None = None, **params: object) -> bytes:
    parts = [f"info_hash={client_quote(HASH) if info_hash is None else info_hash}",
             f"peer_id={client_quote(PEER) if peer_id is None else peer_id}"]
    defaults: dict[str, object] = {"port": 6881, "uploaded": 0, "downloaded": 0, "left": 100,
                                   "key": "1a2b3c", "numwant": 50, "compact": 1}
    defaults.update(params)
    parts += [f"{k}={v}" for k, v in defaults.items() if v is not None]
    return "&".join(parts).encode()


def parsed(q: bytes) -> Any:
    try:
        return parse_announce(q)
    except RequestError as exc:
        return exc.reason


GOOD = [
    query(),
    query(full_quote(HASH), full_quote(PEER)),
    query(quote_from_bytes(HASH), quote_from_bytes(PEER)),
    query(event="started", numwant=0, no_peer_id=1),
    query(event="completed", left=None),
    query(event="stopped", compact=0),
    query(event="paused", compact=None, numwant=None),
    query(event="empty", uploaded=None, downloaded=None, left=None),
    query(numwant=99999, ip="10.0.0.1", extra="a=b"),
    query(port=65535, left=0, uploaded=10**19),
]
ODD = [  # the general parser's errors, or its leniency, decide these
    b"",
    query() + b"&",  # an empty part
    query() + b"&flag",  # a part without "="
    query() + b"&info_hash=" + client_quote(HASH).encode(),  # two info_hashes
    query() + b"&port=6882",  # a repeated name
    query().replace(b"info_hash", b"info%5Fhash"),  # an encoded name
    query(info_hash=client_quote(HASH)[:-3]),  # truncated: 19 bytes
    query(info_hash=client_quote(HASH) + "A"),  # 21 bytes
    query(peer_id=client_quote(PEER)[:-1]),
    query(peer_id=full_quote(PEER)[:-2] + "zz"),  # a bad escape: kept literally
    query(peer_id=full_quote(PEER)[:-1]),  # a truncated escape
    query(peer_id=None).replace(b"peer_id=" + client_quote(PEER).encode() + b"&", b""),
    query(port=0), query(port=65536), query(port="12a"), query(port=None), query(port="%36"),
    query(left=-1), query(uploaded="1e3"), query(downloaded="1" * 21),
    query(event="bogus"), query(event="%73tarted"),
    query(numwant=-5), query(numwant="x"),
    query(compact="%30"), query(compact="yes"), query(no_peer_id=2),
    query(ip="%31.2.3.4"),
]


@pytest.mark.parametrize("q", GOOD)
def test_quick_announce_takes_the_plain_queries(q: bytes) -> None:
    assert quick_announce(q) is not None
    assert quick_announce(q) == parse_announce(q)


@pytest.mark.parametrize("q", ODD)
def test_quick_announce_leaves_the_rest_to_the_general_parser(q: bytes) -> None:
    assert quick_announce(q) is None
    parsed(q)  # (an answer or a tracker error, nothing else)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["info_hash", "peer_id", "port", "left", "event",
                                            "numwant", "compact", "no_peer_id", "ip",
                                            "uploaded", "info%5fhash", "x", ""]),
                          st.one_of(st.text("%0123456789aAfFzZ-.=+&", max_size=65),
                                    st.sampled_from([client_quote(HASH), full_quote(PEER),
                                                     "started", "0", "1", "6881"]))),
                max_size=10))
def test_quick_announce_agrees_with_parse_announce(pairs: list[tuple[str, str]]) -> None:
    q = "&".join(f"{k}={v}" for k, v in pairs).encode()
    quick = quick_announce(q)
    if quick is not None:
        assert quick == parse_announce(q)


def run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("suspended over the memory store")


def http_pair(**store: Any) -> tuple[HttpTracker, HttpTracker]:
    made = [HttpTracker(SwarmStore(rng=random.Random(7), **store),
                        HttpConfig(fast_path=fast), clock=lambda: 1000.0)
            for fast in (True, False)]
    return made[0], made[1]


@pytest.mark.parametrize("whitelisted", [True, False])
def test_http_quick_announce_answers_as_handle_does(whitelisted: bool) -> None:
    fast, general = http_pair(whitelist={HASH} if whitelisted else {b"o" * 20})
    assert general.quick_announce(query(), [], "127.0.0.1") is None  # fast_path=False
    for n in range(60):
        peer = b"-BB0001-" + n.to_bytes(12, "big")
        for q in (query(peer_id=client_quote(peer), port=1000 + n, left=n % 3),
                  query(peer_id=full_quote(peer), port=1000 + n, compact=0),
                  query(peer_id=client_quote(peer), port=1000 + n, no_peer_id=1, compact=0)):
            body = fast.quick_announce(q, [], "::ffff:127.0.0.1")
            reply = run(general.handle(b"GET", b"/announce?" + q, [], "::ffff:127.0.0.1"))
            assert reply.status == 200 and body == reply.body
    assert fast.store.counters.as_dict() == general.store.counters.as_dict()


# ------------------------------------------------------------------ UDP

SOURCE = ("127.0.0.1", 40000)
CLIENT = bytes([127, 0, 0, 1]) + (40000).to_bytes(2, "big")
SECRET = b"k" * 32


def udp_pair(**kwargs: Any) -> tuple[UdpTracker, UdpTracker]:
    made = [UdpTracker(SwarmStore(rng=random.Random(3)), ConnectionIds(SECRET),
                       clock=lambda: 500.0, fast_path=fast, **kwargs) for fast in (True, False)]
    return made[0], made[1]


def announce(cid: bytes, peer: bytes, *, action: int = 1, left: int = 10, event: int = 0,
             port: int = 6881, numwant: int = -1, ip: bytes = b"\0" * 4,
             down: int = 0) -> bytes:
    return struct.pack("!8sI4s20s20sqqqI4sIiH", cid, action, b"txid", HASH, peer, down, left,
                       0, event, ip, 7, numwant, port)


@pytest.mark.parametrize("trust", [False, True])
def test_udp_fast_path_answers_as_the_general_path(trust: bool) -> None:
    fast, general = udp_pair(trust_ip_param=trust)
    cid = ConnectionIds(SECRET).make(CLIENT, 500.0)
    packets = [struct.pack("!QI4s", PROTOCOL_ID, 0, b"conn")]
    for n in range(40):
        peer = b"-BB0001-" + n.to_bytes(12, "big")
        packets += [announce(cid, peer, left=n % 2, port=1000 + n, numwant=n - 5,
                             ip=bytes([10, 0, 0, n]))]
    packets += [
        announce(cid, b"p" * 20) + b"\x02\x05/path",  # BEP 41 options after it
        announce(cid, b"p" * 20)[:97],  # truncated
        announce(b"x" * 8, b"q" * 20),  # a bad connection ID
        announce(cid, b"q" * 20, event=9),
        announce(cid, b"q" * 20, port=0),
        announce(cid, b"q" * 20, left=-1),
        announce(cid, b"q" * 20, down=-5),
        announce(cid, b"q" * 20, event=3),  # stopped
        announce(cid, b"q" * 20, action=7),
        struct.pack("!QI4s", PROTOCOL_ID + 1, 0, b"conn"),  # a wrong protocol id
        struct.pack("!QI", PROTOCOL_ID, 0),  # too short
        struct.pack("!8sI4s", cid, 2, b"scrp") + HASH,
    ]
    for packet in packets:
        assert fast.start(packet, SOURCE) == general.start(packet, SOURCE), packet
    assert fast.store.counters.as_dict() == general.store.counters.as_dict()
    assert fast.store.counters.announces["udp"] == 42


def test_udp_fast_path_refused_announce() -> None:
    tracker = UdpTracker(SwarmStore(whitelist={b"o" * 20}), ConnectionIds(SECRET),
                         clock=lambda: 500.0)
    cid = ConnectionIds(SECRET).make(CLIENT, 500.0)
    reply = tracker.start(announce(cid, b"p" * 20), SOURCE)
    assert isinstance(reply, bytes) and reply[:4] == struct.pack("!I", 3)
    assert b"not registered" in reply
    assert tracker.store.counters.errors["not_whitelisted"] == 1


def test_remembered_connection_ids_follow_the_window_and_the_secret() -> None:
    ids = ConnectionIds(SECRET, window=60)
    made = ids.make(CLIENT, 10.0)
    assert ids.make(CLIENT, 20.0) == made
    assert ids.check(made, CLIENT, 20.0) and not ids.check(b"y" * 8, CLIENT, 20.0)
    assert ids.check(made, CLIENT, 70.0)  # the next window still takes it
    assert not ids.check(made, CLIENT, 130.0)  # but not the one after
    assert not ids.check(made, b"other!", 20.0)  # nor from another address
    fresh = ids.make(CLIENT, 130.0)
    assert fresh != made and ids.check(fresh, CLIENT, 130.0)
    ids.adopt(b"n" * 32)
    assert ids.check(fresh, CLIENT, 130.0)  # made under the previous secret: still good
    assert ids.make(CLIENT, 130.0) == ConnectionIds(b"n" * 32).make(CLIENT, 130.0)
    other = ConnectionIds(SECRET, window=60)
    assert other.check(fresh, CLIENT, 131.0)  # found good, then remembered
    assert other.check(fresh, CLIENT, 132.0) and not other.check(made, CLIENT, 132.0)


# ------------------------------------------------------------------ the swarm's floor


def test_expired_peers_are_never_handed_out_between_sweeps() -> None:
    store = SwarmStore(interval=100, rng=random.Random(1))  # ttl 200, sweeps every 50 s
    for n in range(30):
        store.announce(HASH, n.to_bytes(20, "big"), "", 1000 + n, 0, 0, 5, "", 0, 1000.0,
                       compact=bytes([10, 0, 0, n]) + (1000 + n).to_bytes(2, "big"))
    swarm = store.get_swarm(HASH)
    assert swarm is not None and swarm.floor == 1000
    for n in range(30, 40):  # fresh peers, 150 s later
        store.announce(HASH, n.to_bytes(20, "big"), "", 1000 + n, 0, 0, 5, "", 0, 1150.0,
                       compact=bytes([10, 0, 1, n]) + (1000 + n).to_bytes(2, "big"))
    swarm.next_sweep = 10_000.0  # no sweep due: only the selection can see the expired
    got = store.announce(HASH, b"z" * 20, "", 9, 0, 0, 5, "", 200, 1201.0,
                         compact=bytes([10, 9, 9, 9, 0, 9]), families=WANT_V4)
    assert sorted(got.peers4[i + 3] for i in range(0, len(got.peers4), 6)) == list(range(30, 40))
    assert len(swarm) == 11  # the expired met on the way are gone
    store.expire(20_000.0)
    assert swarm.floor == 0xFFFFFFFF or len(swarm) == 0


def test_floor_follows_a_clock_that_goes_back() -> None:
    store = SwarmStore(interval=100)
    compact = bytes([10, 0, 0, 1, 0, 1])
    store.announce(HASH, b"a" * 20, "", 1, 0, 0, 5, "", 0, 1000.0, compact=compact)
    store.announce(HASH, b"a" * 20, "", 1, 0, 0, 5, "", 0, 900.0, compact=compact)
    swarm = store.get_swarm(HASH)
    assert swarm is not None and swarm.floor == 900
    swarm.next_sweep = 10_000.0  # no sweep due: only the selection can see it expired
    got = store.announce(HASH, b"b" * 20, "", 2, 0, 0, 5, "", 10, 1101.0,
                         compact=bytes([10, 0, 0, 2, 0, 2]))
    assert got.peers4 == b""  # seen at 900, expired at 1100
    assert len(swarm) == 1


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=70),
                 st.text("%0123456789abcdefABCDEFxz\\-._~", max_size=70).map(str.encode),
                 st.binary(max_size=25).map(lambda b: client_quote(b).encode()),
                 st.binary(max_size=25).map(lambda b: full_quote(b).encode())))
def test_unquote_is_unquote_to_bytes(value: bytes) -> None:
    assert _unquote(value) == unquote_to_bytes(value)


def test_http_quick_announce_with_a_bad_ip_parameter_answers_as_handle_does() -> None:
    made = [HttpTracker(SwarmStore(rng=random.Random(7)),
                        HttpConfig(fast_path=fast, trust_ip_param=True), clock=lambda: 1000.0)
            for fast in (True, False)]
    for ip in ("999.1.1.1", "10.0.0.7", "fe80::1", "::ffff:10.0.0.8", "x"):
        q = query(ip=ip)
        body = made[0].quick_announce(q, [], "127.0.0.1")
        reply = run(made[1].handle(b"GET", b"/announce?" + q, [], "127.0.0.1"))
        assert body == reply.body
    assert b"invalid ip address" in reply.body
    assert made[0].store.counters.as_dict() == made[1].store.counters.as_dict()
    assert made[0].store.counters.announces["http"] == 5


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from([b"GET ", b"/announce?a=1", b"/x y", b" HTTP/1.1", b" HTTP/1.0",
                                 b"\r\n", b"\n", b"Host:", b"HOST: ", b"host:\t", b"t", b"a b",
                                 b"\x00", b"\xff", b" ", b"\t", b"X-A: 1", b"Host: t",
                                 b"Connection: close", b"connection:", b"close", b"keep-alive",
                                 b"Content-Length: 0", b"User-Agent: lt/2", b":", b"\r\n\r\n"]),
                max_size=14))
def test_the_whole_request_matches_agree_with_the_general_one(parts: list[bytes]) -> None:
    """The one-regex matches of a whole request (`_HOST_ONLY`, `_ONE_REQUEST`) give what
    the line-by-line reading gives, on any mix of valid and broken pieces."""
    _agree(b"".join(parts))


_FIELDS = [b"Host: t", b"host:\tt ", b"HOST:t", b"User-Agent: lt/2", b"X-Empty:",
           b"Connection: close", b"connection: Close", b"X-A: a  b", b"Accept: */*",
           b"Connection: keep-alive", b"Content-Length: 0", b"Upgrade: h2c"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_FIELDS), max_size=5), st.data(),
       st.sampled_from([b"", b"GET / HTTP/1.1\r\n"]))
def test_the_whole_request_matches_agree_on_requests_shaped_like_requests(
        fields: list[bytes], data: st.DataObject, rest: bytes) -> None:
    """A request of common header lines, whole or with one byte replaced or inserted."""
    buf = b"GET /announce?a=1 HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    if data.draw(st.booleans()):  # at a separator most often: where the grammar is decided
        at = data.draw(st.one_of(
            st.sampled_from([i for i, c in enumerate(buf) if c in b"\r\n: \t"]),
            st.integers(0, len(buf) - 1)))
        piece = data.draw(st.sampled_from(
            [b"", b"", b"\r", b"\n", b" ", b"\x00", b":", b"\r\n", b"\t", b"\xff"]))
        buf = buf[:at] + piece + buf[at + 1 if data.draw(st.booleans()) else at :]
    _agree(buf + rest)


def _agree(buf: bytes) -> None:
    quick = fastpath.simple_request(buf)
    saved = fastpath._HOST_ONLY, fastpath._ONE_REQUEST
    never = re.compile(rb"(?!)")  # never matches: the line-by-line reading only
    fastpath._HOST_ONLY = fastpath._ONE_REQUEST = never
    try:
        general = fastpath.simple_request(buf)
    finally:
        fastpath._HOST_ONLY, fastpath._ONE_REQUEST = saved
    assert quick == general


def test_a_whole_request_with_more_headers_than_host_is_read_in_one_match() -> None:
    buf = (b"GET /announce?a=1 HTTP/1.1\r\nHost: t:1\r\nUser-Agent: libtorrent/2.0.9\r\n"
           b"Accept-Encoding: gzip\r\nX-Empty:\r\nConnection: close\r\n\r\n")
    assert fastpath._ONE_REQUEST.fullmatch(buf) is not None
    assert fastpath.simple_request(buf) == (
        b"/announce?a=1", [(b"host", b"t:1"), (b"user-agent", b"libtorrent/2.0.9"),
                           (b"accept-encoding", b"gzip"), (b"x-empty", b""),
                           (b"connection", b"close")], len(buf), True)


def test_the_host_only_match_takes_the_plain_request() -> None:
    buf = b"GET /announce?a=1 HTTP/1.1\r\nhOsT: \ttracker:80 \r\n\r\n"
    assert fastpath._HOST_ONLY.fullmatch(buf) is not None
    assert fastpath.simple_request(buf) == (b"/announce?a=1", [(b"host", b"tracker:80")],
                                            len(buf), False)
    assert fastpath.simple_request(buf + b"G") != fastpath.INCOMPLETE  # pipelined: general


@pytest.mark.parametrize(("connection", "close"), [
    (b"Connection: close", True),
    (b"connection: Close", True),
    (b"CONNECTION:\tCLOSE ", True),
    (b"Connection: keep-alive", None),
    (b"Connection: close, TE", None),
    (b"Connection: close\r\nConnection: close", None),
    (b"Connection:", None),
])
def test_connection_close_is_simple_and_nothing_else_about_the_connection_is(
        connection: bytes, close: bool | None) -> None:
    """libtorrent and aria2 send ``Connection: close``: the fast path answers it and closes
    (tests/integration/test_tracker_fastpath.py holds the bytes to h11's); any other use of
    the header is h11's to judge."""
    buf = b"GET /announce?a=1 HTTP/1.1\r\nHost: t\r\n%s\r\nUser-Agent: x\r\n\r\n" % connection
    request = fastpath.simple_request(buf)
    if close is None:
        assert request is None
    else:
        assert request is not None and request[3] is close and request[2] == len(buf)
