"""The tracker client's pure half (URLs, answers, UDP packets, tiers) and the session's
scheduling, with `announce` replaced by a fake and trio's clock jumping ahead."""

from __future__ import annotations

import logging
import random
import re
import struct
from urllib.parse import unquote_to_bytes, urlsplit

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs import bencode
from btfs.trackers import (
    AnnounceParams,
    AnnounceResult,
    ScrapeResult,
    TrackerError,
    TrackerFailure,
    TrackerSession,
    TrackerTiers,
)
from btfs.trackers import session as session_module
from btfs.trackers.http import (
    http_announce_url,
    parse_http_announce,
    parse_http_scrape,
    scrape_url,
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

IH = bytes(range(20))
PID = b"-BT0001-" + b"x" * 12


def params(**kw: object) -> AnnounceParams:
    base: dict[str, object] = dict(
        info_hash=IH, peer_id=PID, port=6881, uploaded=1, downloaded=2, left=3, key=0xABC
    )
    base.update(kw)
    return AnnounceParams(**base)  # type: ignore[arg-type]


def tx(n: int) -> bytes:
    """A BEP 15 transaction id."""
    return n.to_bytes(4, "big")


def cid(n: int) -> bytes:
    """A BEP 15 connection id."""
    return n.to_bytes(8, "big")


def query_of(url: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in urlsplit(url).query.split("&")]  # type: ignore[misc]


# --- HTTP announce URLs


@pytest.mark.parametrize("start", range(0, 256, 20))
def test_every_byte_value_is_percent_encoded_and_round_trips(start: int) -> None:
    raw = bytes((start + i) % 256 for i in range(20))
    url = http_announce_url("http://t.example/announce", params(info_hash=raw, peer_id=raw[::-1]))
    fields = dict(query_of(url))
    for name, value in (("info_hash", raw), ("peer_id", raw[::-1])):
        assert re.fullmatch(r"(?:%[0-9A-F]{2}|[A-Za-z0-9._~-])*", fields[name])
        assert unquote_to_bytes(fields[name]) == value


def test_announce_url_fields() -> None:
    url = http_announce_url("http://t.example:8080/announce", params(event="started"))
    assert url.startswith("http://t.example:8080/announce?info_hash=")
    fields = dict(query_of(url))
    assert fields["port"] == "6881"
    assert (fields["uploaded"], fields["downloaded"], fields["left"]) == ("1", "2", "3")
    assert fields["compact"] == "1"
    assert fields["numwant"] == "50"
    assert fields["key"] == "00000abc"
    assert fields["event"] == "started"
    assert "event" not in dict(query_of(http_announce_url("http://t/announce", params())))


def test_announce_url_keeps_existing_query() -> None:
    url = http_announce_url("https://t.example/an/announce.php?passkey=s3cr%2Bt&x=1#frag", params())
    assert url.startswith("https://t.example/an/announce.php?passkey=s3cr%2Bt&x=1&info_hash=")
    assert "#" not in url


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        params(info_hash=b"short")
    with pytest.raises(ValueError):
        params(event="paused")
    assert 0 <= AnnounceParams(IH, PID, 1, 0, 0, 0).key < 2**32


# --- HTTP announce answers


def test_parse_compact_peers_and_counts() -> None:
    body = bencode.encode(
        {
            b"interval": 1800,
            b"min interval": 900,
            b"complete": 4,
            b"incomplete": 7,
            b"peers": bytes([10, 0, 0, 1, 0x1A, 0xE1, 192, 168, 1, 2, 0, 80, 9, 9, 9, 9, 0, 0]),
        }
    )
    result = parse_http_announce(body)
    assert result == AnnounceResult(
        interval=1800.0,
        min_interval=900.0,
        peers=[("10.0.0.1", 6881), ("192.168.1.2", 80)],  # port 0 is dropped
        complete=4,
        incomplete=7,
        warning=None,
    )


def test_parse_non_compact_peers() -> None:
    body = bencode.encode(
        {
            b"interval": 60,
            b"peers": [
                {b"ip": b"10.1.2.3", b"port": 51413, b"peer id": b"A" * 20},
                {b"ip": b"2001:db8::1", b"port": 1},
                {b"ip": b"tracker.example.org", b"port": 2},
                {b"ip": b"not a host!", b"port": 3},
                {b"ip": b"10.0.0.9", b"port": 0},
                {b"ip": b"10.0.0.9", b"port": 70000},
                {b"port": 5},
                {b"ip": b"10.1.2.3", b"port": 51413},
            ],
        }
    )
    assert parse_http_announce(body).peers == [
        ("10.1.2.3", 51413),
        ("2001:db8::1", 1),
        ("tracker.example.org", 2),
    ]


def test_parse_peers6() -> None:
    v6 = bytes.fromhex("20010db8000000000000000000000001") + (6881).to_bytes(2, "big")
    mapped = bytes.fromhex("00000000000000000000ffff0a000001") + (1).to_bytes(2, "big")
    body = bencode.encode({b"interval": 5, b"peers": b"", b"peers6": v6 + mapped})
    assert parse_http_announce(body).peers == [("2001:db8::1", 6881), ("::ffff:a00:1", 1)]


def test_parse_failure_and_warning() -> None:
    with pytest.raises(TrackerFailure) as info:
        parse_http_announce(bencode.encode({b"failure reason": b"unregistered torrent"}))
    assert info.value.reason == "unregistered torrent"
    assert str(info.value) == "unregistered torrent"
    assert isinstance(info.value, TrackerError)
    body = bencode.encode({b"interval": 10, b"peers": b"", b"warning message": b"be nice"})
    result = parse_http_announce(body)
    assert result.warning == "be nice"
    assert result.min_interval is None
    assert result.complete is None


def test_missing_interval_defaults() -> None:
    assert parse_http_announce(bencode.encode({b"peers": b""})).interval == 1800.0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b"li1ee",
        bencode.encode({b"interval": -1}),
        bencode.encode({b"interval": b"soon"}),
        bencode.encode({b"interval": 10, b"peers": b"12345"}),
        bencode.encode({b"interval": 10, b"peers": 5}),
        bencode.encode({b"interval": 10, b"peers": [b"x"]}),
        bencode.encode({b"interval": 10, b"peers6": b"x" * 17}),
        bencode.encode({b"interval": 10, b"complete": -3}),
        bencode.encode({b"interval": 10, b"warning message": [1]}),
    ],
)
def test_garbage_announce_answers_are_tracker_errors(body: bytes) -> None:
    with pytest.raises(TrackerError):
        parse_http_announce(body)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_tracker_error(body: bytes) -> None:
    for parse in (parse_http_announce, lambda b: parse_http_scrape(b, [IH])):
        try:
            parse(body)
        except TrackerError:
            pass


_bvalues = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(
        st.sampled_from(
            [b"interval", b"min interval", b"peers", b"peers6", b"ip", b"port", b"complete",
             b"incomplete", b"failure reason", b"warning message", b"files", b"downloaded", IH]
        ),
        children,
        max_size=6,
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(_bvalues)
def test_random_bencoded_answers_only_raise_tracker_error(value: object) -> None:
    body = bencode.encode(value)
    for parse in (parse_http_announce, lambda b: parse_http_scrape(b, [IH])):
        try:
            parse(body)
        except TrackerError:
            pass


@settings(max_examples=300)
@given(st.binary(max_size=120), st.binary(min_size=4, max_size=4))
def test_random_udp_answers_only_raise_tracker_error(data: bytes, tid: bytes) -> None:
    for parse in (
        lambda: parse_udp_connect_response(data, tid),
        lambda: parse_udp_announce_response(data, tid),
        lambda: parse_udp_announce_response(data, tid, ipv6=True),
        lambda: parse_udp_scrape_response(data, tid, [IH, IH[::-1]]),
    ):
        try:
            parse()
        except TrackerError:
            pass


# --- scrape


@pytest.mark.parametrize(
    ("announce", "scrape"),
    [
        ("http://example.com/announce", "http://example.com/scrape"),
        ("http://example.com/x/announce", "http://example.com/x/scrape"),
        ("http://example.com/announce.php", "http://example.com/scrape.php"),
        ("http://example.com/a", None),
        ("http://example.com/announce?x2%0644", "http://example.com/scrape?x2%0644"),
        ("http://example.com/announce?x=2/4", "http://example.com/scrape?x=2/4"),
        ("http://example.com/x%064announce", None),
        ("http://example.com/announce/x", None),
        ("https://example.com:8443/p/announce_v2", "https://example.com:8443/p/scrape_v2"),
        ("http://example.com", None),
        ("udp://tracker.example:6969/announce", "udp://tracker.example:6969/announce"),
        ("wss://tracker.example/announce", None),
    ],
)
def test_scrape_url_rule(announce: str, scrape: str | None) -> None:
    assert scrape_url(announce) == scrape


def test_parse_http_scrape() -> None:
    other = b"\xff" * 20
    body = bencode.encode(
        {
            b"files": {
                IH: {b"complete": 5, b"downloaded": 50, b"incomplete": 10, b"name": b"x"},
                other: {b"complete": 1},
                b"short": {b"complete": 1},
            }
        }
    )
    assert parse_http_scrape(body, [IH]) == {IH: ScrapeResult(5, 50, 10)}
    everything = {IH: ScrapeResult(5, 50, 10), other: ScrapeResult(1, 0, 0)}
    assert parse_http_scrape(body, []) == everything
    with pytest.raises(TrackerFailure):
        parse_http_scrape(bencode.encode({b"failure reason": b"no scrape"}), [IH])
    with pytest.raises(TrackerError):
        parse_http_scrape(bencode.encode({b"files": [1]}), [IH])


# --- UDP packets


def test_udp_connect() -> None:
    packet = bytes.fromhex("0000041727101980" "00000000" "01020304")
    assert udp_connect_request(tx(0x01020304)) == packet
    answer = struct.pack(">IIQ", 0, 77, 0x1122334455667788)
    assert parse_udp_connect_response(answer, tx(77)) == bytes.fromhex("1122334455667788")
    with pytest.raises(TrackerError, match="transaction"):
        parse_udp_connect_response(answer, tx(78))
    with pytest.raises(TrackerError, match="too short"):
        parse_udp_connect_response(answer[:15], tx(77))
    with pytest.raises(TrackerError, match="action announce, expected connect"):
        parse_udp_connect_response(struct.pack(">IIQIII", 1, 77, 5, 0, 0, 0), tx(77))
    with pytest.raises(TrackerError, match="unknown action 9"):
        parse_udp_connect_response(struct.pack(">IIQ", 9, 77, 5), tx(77))


def test_udp_announce_request_layout() -> None:
    packet = udp_announce_request(cid(0xDEAD), tx(9),
                                  params(event="stopped", numwant=-1, key=2**33 + 5))
    assert len(packet) == 98
    fields = struct.unpack(">QII20s20sQQQIIIiH", packet)
    assert fields == (0xDEAD, 1, 9, IH, PID, 2, 3, 1, 3, 0, 5, -1, 6881)
    events = [
        struct.unpack_from(">I", udp_announce_request(cid(1), tx(1), params(event=e)), 80)[0]
        for e in ("", "completed", "started", "stopped")
    ]
    assert events == [0, 1, 2, 3]


def test_udp_announce_response_v4_and_v6() -> None:
    head = struct.pack(">IIIII", 1, 42, 1800, 3, 8)
    v4 = bytes([10, 0, 0, 1, 0x1A, 0xE1, 10, 0, 0, 2, 0, 1])
    result = parse_udp_announce_response(head + v4, tx(42))
    assert result == AnnounceResult(1800.0, None, [("10.0.0.1", 6881), ("10.0.0.2", 1)], 8, 3)
    v6 = bytes.fromhex("20010db8000000000000000000000001") + b"\x00\x50"
    assert parse_udp_announce_response(head + v6, tx(42), ipv6=True).peers == [("2001:db8::1", 80)]
    with pytest.raises(TrackerError):
        parse_udp_announce_response(head + v4, tx(42), ipv6=True)  # 12 bytes: not 18-byte entries
    with pytest.raises(TrackerError):
        parse_udp_announce_response(head + v4[:-1], tx(42))
    with pytest.raises(TrackerError, match="transaction"):
        parse_udp_announce_response(head + v4, tx(43))
    with pytest.raises(TrackerError, match="too short"):
        parse_udp_announce_response(head[:19], tx(42))
    with pytest.raises(TrackerError, match="refused"):
        parse_udp_announce_response(head[:8], tx(42))  # opentracker, torrent not whitelisted


def test_udp_error_packet() -> None:
    packet = bep15.encode_error(tx(7), "connection id mismatch")
    assert bep15.transaction_id(packet) == tx(7)
    assert bep15.transaction_id(b"1234567") is None
    with pytest.raises(TrackerFailure) as info:
        parse_udp_announce_response(packet, tx(7))
    assert info.value.reason == "connection id mismatch"
    with pytest.raises(TrackerFailure):
        parse_udp_connect_response(packet, tx(7))
    with pytest.raises(TrackerError, match="transaction"):
        parse_udp_scrape_response(packet, tx(8), [IH])


def test_udp_scrape() -> None:
    other = b"\x01" * 20
    assert udp_scrape_request(cid(5), tx(6), [IH, other]) == (
        struct.pack(">QII", 5, 2, 6) + IH + other)
    with pytest.raises(ValueError):
        udp_scrape_request(cid(5), tx(6), [])
    with pytest.raises(ValueError):
        udp_scrape_request(cid(5), tx(6), [IH] * 75)
    answer = struct.pack(">II", 2, 6) + struct.pack(">III", 1, 2, 3) + struct.pack(">III", 4, 5, 6)
    assert parse_udp_scrape_response(answer, tx(6), [IH, other]) == {
        IH: ScrapeResult(1, 2, 3),
        other: ScrapeResult(4, 5, 6),
    }
    with pytest.raises(TrackerError, match="too short"):
        parse_udp_scrape_response(answer[:-1], tx(6), [IH, other])


# --- tiers


class NoShuffle(random.Random):
    def shuffle(self, x: list[object]) -> None:  # type: ignore[override]
        pass


def test_tiers_shuffle_once_with_the_rng_and_promote(caplog: pytest.LogCaptureFixture) -> None:
    announce_list = [
        ["http://a/announce", "http://b/announce", "udp://c:1", "wss://d/announce"],
        ["http://e/announce"],
        ["ws://only-webtorrent/announce"],
        [],
    ]
    with caplog.at_level(logging.INFO, logger="btfs.trackers"):
        tiers = TrackerTiers(announce_list, random.Random(1))
    assert "wss://d/announce" in caplog.text
    assert "ws://only-webtorrent/announce" in caplog.text
    expected = ["http://a/announce", "http://b/announce", "udp://c:1"]
    random.Random(1).shuffle(expected)
    assert tiers.tiers == [expected, ["http://e/announce"]]
    assert len(tiers) == 2
    tiers.promote(expected[2])
    assert tiers.tiers[0] == [expected[2], expected[0], expected[1]]
    assert tiers.urls() == [expected[2], expected[0], expected[1], "http://e/announce"]


def test_tiers_order_kept_without_shuffle_and_duplicates_dropped() -> None:
    tiers = TrackerTiers([["http://a/announce", "http://a/announce"], ["http://a/announce"]],
                         NoShuffle())
    assert tiers.tiers == [["http://a/announce"]]


# --- the session's scheduling, against a fake `announce`


class FakeTrackers:
    """Records announces; URLs in `dead` fail."""

    def __init__(self, dead: set[str] | None = None, interval: float = 100.0) -> None:
        self.dead = dead or set()
        self.interval = interval
        self.min_interval: float | None = None
        self.calls: list[tuple[float, str, str, int]] = []
        self.binds: set[str | None] = set()

    async def announce(
        self, url: str, params: AnnounceParams, *, timeout: float,  # noqa: ASYNC109
        bind: str | None = None,
    ) -> AnnounceResult:
        self.calls.append((trio.current_time(), url, params.event, params.left))
        self.binds.add(bind)
        await trio.sleep(0.01)
        if url in self.dead:
            raise TrackerError("connection refused")
        return AnnounceResult(self.interval, self.min_interval, [("10.0.0.1", len(self.calls))])


class Torrent:
    def __init__(self, left: int = 1000) -> None:
        self.left = left
        self.peers: list[tuple[str, int]] = []

    def stats(self) -> tuple[int, int, int]:
        return 0, 1000 - self.left, self.left


def session(fake: FakeTrackers, monkeypatch: pytest.MonkeyPatch, tiers: list[list[str]],
            torrent: Torrent, **kw: object) -> TrackerSession:
    monkeypatch.setattr(session_module, "announce", fake.announce)
    return TrackerSession(tiers, IH, PID, 6881, torrent.stats, torrent.peers.extend,
                          rng=NoShuffle(), **kw)  # type: ignore[arg-type]


async def test_session_announces_from_its_bind_address_stopped_included(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(), Torrent()
    s = session(fake, monkeypatch, [["http://a/announce"]], torrent, bind="127.0.0.9")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    await s.stop()  # from another task than run(), as the swarm does
    assert [c[2] for c in fake.calls] == ["started", "stopped"]
    assert fake.binds == {"127.0.0.9"}


async def test_stopped_reaches_a_tracker_whose_started_answer_was_cut_off(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    """Cancelled while `started` is in flight (the tracker may have counted us): a seed
    still says `stopped` at stop(), and never `completed`."""
    fake, torrent = FakeTrackers(), Torrent(left=0)
    s = session(fake, monkeypatch, [["http://a/announce"]], torrent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep(0.005)  # the fake answers after 0.01 s
        nursery.cancel_scope.cancel()
    await s.stop()
    assert [c[2] for c in fake.calls] == ["started", "stopped"]


async def test_session_events_interval_completed_and_stop(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(), Torrent()
    s = session(fake, monkeypatch, [["http://a/announce"]], torrent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep(250)  # started at 0, regulars at ~100 and ~200
        torrent.left = 0
        s.completed()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    await s.stop()
    events = [(round(t), e, left) for t, _, e, left in fake.calls]
    assert events == [(0, "started", 1000), (100, "", 1000), (200, "", 1000), (250, "completed", 0),
                      (251, "stopped", 0)]
    assert len(torrent.peers) == 4
    assert s.last_error == {"http://a/announce": None}
    assert s.last_result["http://a/announce"].interval == 100


async def test_session_completed_only_once_and_not_when_starting_complete(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(), Torrent(left=0)
    s = session(fake, monkeypatch, [["http://a/announce"]], torrent)
    with trio.move_on_after(350):
        await s.run()
    s.completed()
    assert [e for _, _, e, _ in fake.calls] == ["started", "", "", ""]

    fake, torrent = FakeTrackers(), Torrent()
    s = session(fake, monkeypatch, [["http://a/announce"]], torrent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep(50)
        torrent.left = 0  # noticed at the next regular announce, even without completed()
        await trio.sleep(300)
        nursery.cancel_scope.cancel()
    assert [e for _, _, e, _ in fake.calls] == ["started", "completed", "", ""]


async def test_session_falls_through_a_dead_url_and_promotes_the_live_one(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(dead={"http://dead/announce"}), Torrent()
    s = session(fake, monkeypatch, [["http://dead/announce", "http://live/announce"]], torrent)
    with trio.move_on_after(150):
        await s.run()
    assert [(u, e) for _, u, e, _ in fake.calls] == [
        ("http://dead/announce", "started"),
        ("http://live/announce", "started"),
        ("http://live/announce", ""),
    ]
    assert s.tiers.tiers == [["http://live/announce", "http://dead/announce"]]
    assert s.last_error["http://dead/announce"] == "connection refused"
    assert s.failures["http://dead/announce"] == 1
    assert torrent.peers
    # Only the tracker that accepted us is told we stop.
    await s.stop()
    assert fake.calls[-1][1:3] == ("http://live/announce", "stopped")
    assert len(fake.calls) == 4


async def test_session_backs_off_exponentially_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(dead={"udp://x:1", "http://y/announce"}), Torrent()
    s = session(fake, monkeypatch, [["udp://x:1", "http://y/announce"]], torrent)
    with trio.move_on_after(1500):
        await s.run()
    starts = [round(t) for t, u, _, _ in fake.calls if u == "udp://x:1"]
    assert starts == [0, 5, 15, 35, 75, 155, 315, 615, 915, 1215]
    assert all(e == "started" for _, _, e, _ in fake.calls)
    assert s.failures == {"udp://x:1": 10, "http://y/announce": 10}
    await s.stop()  # nothing to stop
    assert len(fake.calls) == 20


async def test_session_tiers_run_in_parallel(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(dead={"http://a/announce"}), Torrent()
    s = session(fake, monkeypatch, [["http://a/announce"], ["http://b/announce"]], torrent)
    with trio.move_on_after(1):
        await s.run()
    assert sorted((round(t), u) for t, u, _, _ in fake.calls) == [
        (0, "http://a/announce"),
        (0, "http://b/announce"),
    ]


async def test_announce_now_respects_min_interval(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(interval=1000), Torrent()
    fake.min_interval = 60
    s = session(fake, monkeypatch, [["http://a/announce"]], torrent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run)
        await trio.sleep(10)
        s.announce_now()  # too early: waits for the min interval
        await trio.sleep(190)
        s.announce_now()  # 140 s after the last one: at once
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [round(t) for t, _, _, _ in fake.calls] == [0, 60, 200]


async def test_session_without_usable_trackers_just_waits(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    fake, torrent = FakeTrackers(), Torrent()
    s = session(fake, monkeypatch, [["wss://x/announce"]], torrent)
    with trio.move_on_after(100):
        await s.run()
    s.announce_now()
    assert fake.calls == []
