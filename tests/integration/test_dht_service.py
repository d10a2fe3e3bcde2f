"""The DHT's trio shell on real loopback UDP sockets, in one process."""

from __future__ import annotations

import logging
import random
import socket
from pathlib import Path

import pytest
import trio

from btfs import bencode
from btfs.dht.service import DhtService, split_host_port
from tests.support.net import free_port, next_loopback_ipv4

INFO_HASH = bytes(range(20))


async def start(nursery: trio.Nursery, routers: list[str] = (),  # type: ignore[assignment]
                state: Path | None = None) -> tuple[DhtService, str]:
    host = next_loopback_ipv4()
    service = DhtService(routers, state_path=state)
    await nursery.start(service.run, host, free_port(host))
    return service, f"{host}:{service.port}"


async def test_an_announce_is_found_by_another_node() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _, hub = await start(nursery)
            seeder, _ = await start(nursery, [hub])
            leecher, _ = await start(nursery, [hub])
            await seeder.lookup(INFO_HASH, lambda peers: None, announce_port=4321)
            found: list[tuple[str, int]] = []
            await leecher.lookup(INFO_HASH, found.extend)
            assert found == [(_host(seeder), 4321)]
            assert leecher.nodes_known >= 1
            nursery.cancel_scope.cancel()


def _host(service: DhtService) -> str:
    return service._sockets[4].getsockname()[0]


async def test_garbage_does_not_stop_the_node() -> None:
    """Random datagrams, truncated bencode and huge values from one address: the node
    drops or answers them, and still serves a lookup afterwards."""
    rng = random.Random(5)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            hub, address = await start(nursery)
            host, port = split_host_port(address)
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind((next_loopback_ipv4(), 0))
            junk = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
                    for _ in range(300)]
            junk += [b"d1:ad2:id20:", b"d1:q9:get_peers1:t2:aa1:y1:qe",
                     bencode.encode({b"t": b"x" * 5000, b"y": b"q", b"q": b"ping",
                                     b"a": {b"id": b"y" * 20}}),
                     b"l" * 10000]
            for datagram in junk:
                await sock.sendto(datagram, (host, port))
            sock.close()
            seeder, _ = await start(nursery, [address])
            await seeder.lookup(INFO_HASH, lambda peers: None, announce_port=999)
            leecher, _ = await start(nursery, [address])
            found: list[tuple[str, int]] = []
            await leecher.lookup(INFO_HASH, found.extend)
            assert found == [(_host(seeder), 999)]
            assert hub.nodes[4].stats.malformed > 0
            nursery.cancel_scope.cancel()


async def test_nodes_are_saved_and_a_bad_file_is_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "dht-nodes"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _, hub = await start(nursery)
            async with trio.open_nursery() as inner:
                joined, _ = await start(inner, [hub], state=state)
                await joined.lookup(INFO_HASH, lambda peers: None)
                inner.cancel_scope.cancel()
            assert [f"{h}:{p}" for h, p in DhtService([], state_path=state)._load()[4]] == [hub]
            # the next run rejoins from the saved nodes, with no router
            async with trio.open_nursery() as inner:
                again, _ = await start(inner, [], state=state)
                await again.lookup(INFO_HASH, lambda peers: None)
                assert again.nodes_known == 1
                inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    state.write_bytes(b"not bencode")
    with caplog.at_level(logging.INFO, logger="btfs.dht.service"):
        assert DhtService([], state_path=state)._load() == {}
    assert "ignoring the saved nodes" in caplog.text


async def test_a_busy_port_leaves_the_dht_off(caplog: pytest.LogCaptureFixture) -> None:
    host = next_loopback_ipv4()
    port = free_port(host)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind((host, port))
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                service = DhtService([])
                with caplog.at_level(logging.WARNING, logger="btfs.dht.service"):
                    await nursery.start(service.run, host, port)
                assert service.nodes == {}
                assert await service.lookup(INFO_HASH, lambda peers: None) == 0
    finally:
        taken.close()
    assert f"DHT: no IPv4 UDP socket on port {port}" in caplog.text


def test_bootstrap_addresses_are_checked() -> None:
    assert split_host_port("[::1]:6881") == ("::1", 6881)
    assert split_host_port("router.bittorrent.com:6881") == ("router.bittorrent.com", 6881)
    for bad in ("nohost", ":6881", "host:0", "host:65536", "host:x"):
        with pytest.raises(ValueError):
            split_host_port(bad)
