"""The store layer's pure parts: the per-torrent view of /stats, Redis URLs, RESP, keys,
packed answers; and the Redis client's fault handling against a server that hangs."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from btfs.trackerwire import compact
from tracker.errors import StoreUnavailable
from tracker.pages import metrics_text, stats_html, stats_json
from tracker.store.base import PackedOutcome, top_rows
from tracker.store.memory import SwarmStore
from tracker.store.redisclient import BACKOFF_FIRST, RedisClient
from tracker.store.redisproto import (
    CANDIDATES,
    RedisAddress,
    encode_command,
    info_hash_of,
    parse_redis_url,
    swarm_keys,
)

H = [bytes([n]) * 20 for n in range(1, 6)]


def pid(n: int) -> bytes:
    return b"-XX0001-" + n.to_bytes(12, "big")


def test_stats_per_torrent_view_html_and_json() -> None:
    store = SwarmStore()
    # H[0]: 3 leechers; H[1]: 1 seed that completed + 1 leecher; H[2]: 1 leecher.
    for n in range(3):
        store.announce(H[0], pid(n), f"10.0.0.{n + 1}", 6881, 0, 0, 5, "", 0, 0.0)
    store.announce(H[1], pid(10), "10.0.1.1", 6881, 0, 0, 5, "", 0, 0.0)
    store.announce(H[1], pid(10), "10.0.1.1", 6881, 0, 0, 0, "completed", 0, 0.0)
    store.announce(H[1], pid(11), "10.0.1.2", 6881, 0, 0, 5, "", 0, 0.0)
    store.announce(H[2], pid(20), "10.0.2.1", 6881, 0, 0, 5, "", 0, 0.0)
    stats = store.stats(top=2)
    assert stats["top"] == [
        {"info_hash": H[0].hex(), "peers": 3, "seeders": 0, "leechers": 3, "completed": 0},
        {"info_hash": H[1].hex(), "peers": 2, "seeders": 1, "leechers": 1, "completed": 1},
    ]
    data = json.loads(stats_json(stats, 12.0))
    assert data["top"] == stats["top"] and data["torrents"] == 3 and data["uptime"] == 12.0
    page = stats_html(stats, 12.0).decode()
    assert "Torrents with the most peers (top 2)" in page
    assert (f"<tr><td><code>{H[1].hex()}</code></td><td>2</td><td>1</td><td>1</td>"
            "<td>1</td></tr>") in page
    assert H[2].hex() not in page
    assert "btfs_tracker_torrents 3\n" in metrics_text(stats, 1.0).decode()


def test_stats_without_swarm_figures_while_the_store_is_down() -> None:
    stats = {"announces": {"http": 1}, "scrapes": {}, "errors": {"store_unavailable": 4},
             "store": {"kind": "redis", "up": False, "connection_failures": 3}}
    text = metrics_text(stats, 5.0).decode()
    assert "btfs_tracker_store_up 0\n" in text
    assert "btfs_tracker_store_connection_failures_total 3\n" in text
    assert "btfs_tracker_torrents" not in text
    page = stats_html(stats, 5.0).decode()
    assert "<td>unavailable</td>" in page and "redis, DOWN" in page and ">none<" in page


def test_top_rows_orders_by_peers_then_hash() -> None:
    rows = [(H[2], 1, 0, 1), (H[1], 0, 0, 2), (H[0], 5, 9, 0)]
    assert [r["info_hash"] for r in top_rows(rows, 3)] == [H[0].hex(), H[1].hex(), H[2].hex()]
    assert top_rows(rows, 0) == []


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, None, 2, None, None)),
    ("redis://localhost", RedisAddress("localhost", 6379, None, 0, None, None)),
    ("redis://:s%40cret@[::1]:7000/0", RedisAddress("::1", 7000, None, 0, None, "s@cret")),
    ("redis://user:pw@h/1", RedisAddress("h", 6379, None, 1, "user", "pw")),
    ("unix:///run/redis/redis.sock", RedisAddress(None, 0, "/run/redis/redis.sock", 0,
                                                  None, None)),
    ("unix:///tmp/r.sock?db=3", RedisAddress(None, 0, "/tmp/r.sock", 3, None, None)),
])
def test_redis_urls(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize("url", ["http://h:1/0", "redis://", "redis://h:99999/0",
                                 "redis://h/x", "redis://h/0?db=1", "unix://relative",
                                 "unix:///p?x=1", "unix:///p?db=-1", "memory"])
def test_bad_redis_urls(url: str) -> None:
    with pytest.raises(ValueError, match="bad Redis URL"):
        parse_redis_url(url)


def test_address_is_logged_without_password() -> None:
    assert str(parse_redis_url("redis://:pw@[::1]:7000/4")) == "redis://[::1]:7000/4"
    assert str(parse_redis_url("unix:///s?db=2")) == "unix:///s?db=2"


def test_resp_keys_and_candidates() -> None:
    assert encode_command([b"GET", "k", 12, 1.5]) == (
        b"*4\r\n$3\r\nGET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n")
    keys = swarm_keys(H[0])
    assert keys[0] == b"btfs:{" + H[0].hex().encode() + b"}:p" and len(keys) == 6
    assert info_hash_of(keys[5]) == H[0]
    assert info_hash_of(b"btfs:{zz}:m") is None and info_hash_of(keys[0]) is None
    assert CANDIDATES[3][True] == b"0123" and CANDIDATES[3][False] == b"02"
    assert CANDIDATES[1][False] == b"0"


def test_packed_outcome_entries() -> None:
    a, b = compact.pack("10.0.0.1", 1), compact.pack("2001:db8::1", 2)
    out = PackedOutcome(a, b, 1, 1, 1800, 60, b"A" * 20, b"B" * 20)
    assert out.entries() == [(b"A" * 20, "10.0.0.1", 1), (b"B" * 20, "2001:db8::1", 2)]
    assert out.addresses4() == [("10.0.0.1", 1)] and out.addresses6() == [("2001:db8::1", 2)]


async def test_client_drops_a_hung_connection_and_fails_the_callers(
        autojump_clock: trio.testing.MockClock) -> None:
    """A server that accepts connections and never answers (database 0 and no
    on_connect: no set-up to answer): the waiting call gets StoreUnavailable after the
    timeout, and the client connects again."""
    accepted = 0

    async def hung_server(stream: trio.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, hung_server, 0)
        port = listeners[0].socket.getsockname()[1]
        client = RedisClient(parse_redis_url(f"redis://127.0.0.1:{port}/0"), timeout=2.0)
        with pytest.raises(StoreUnavailable):
            client.call(b"PING")  # not connected yet
        await nursery.start(client.run)
        assert client.up
        reply = client.call(b"PING")
        with pytest.raises(StoreUnavailable):
            await reply
        assert not client.up
        await trio.sleep(BACKOFF_FIRST + 1)  # the back-off, then a new connection
        assert client.up
        assert accepted == 2 and client.disconnects == 1
        nursery.cancel_scope.cancel()


def test_redis_answers_lose_the_asking_peer_and_the_spare() -> None:
    from tracker.store.redisstore import _split_members

    members = b"".join(b"%020d" % n + bytes([10, 0, 0, n, 0, n]) for n in range(4))
    me = b"%020d" % 2
    peers, ids = _split_members(members, 6, me, 3)
    assert ids == b"%020d%020d%020d" % (0, 1, 3)
    assert peers == bytes([10, 0, 0, 0, 0, 0, 10, 0, 0, 1, 0, 1, 10, 0, 0, 3, 0, 3])
    assert _split_members(members, 6, b"x" * 20, 2)[1] == b"%020d%020d" % (0, 1)
    assert _split_members(b"", 18, me, 50) == (b"", b"")
