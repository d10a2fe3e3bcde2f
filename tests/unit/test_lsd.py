"""Local service discovery (BEP 14): the pure codec and schedule, and the multicast shell
on loopback."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from btfs import lsd, lsdservice
from btfs.lsd import (
    ANNOUNCE_INTERVAL,
    MIN_ANNOUNCE_GAP,
    PEER_REPEAT,
    RECEIVE_BURST,
    LsdCore,
    LsdError,
)

IH = bytes(range(20))
OTHER = bytes(20)
HOST = "239.192.152.143:6771"


def announce(*hashes: bytes, port: int = 7000, cookie: str | None = "theirs") -> bytes:
    return lsd.encode(HOST, port, list(hashes), cookie)


# The codec --------------------------------------------------------------------------------


def test_the_message_is_bep_14s() -> None:
    raw = lsd.encode(HOST, 51413, [IH, OTHER], "abc")
    assert raw == (b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 51413\r\n"
                   b"Infohash: " + IH.hex().encode() + b"\r\nInfohash: " + b"0" * 40
                   + b"\r\ncookie: abc\r\n\r\n\r\n")
    assert lsd.decode(raw) == lsd.Announce(51413, (IH, OTHER), "abc")


def test_decoding_is_lenient_about_case_line_ends_and_unknown_headers() -> None:
    raw = (b"BT-SEARCH * HTTP/1.1\nhost: x\nPORT:  6881 \nX-Other: y\n"
           b"INFOHASH: " + IH.hex().upper().encode() + b"\n\n")
    assert lsd.decode(raw) == lsd.Announce(6881, (IH,), None)


@pytest.mark.parametrize("raw", [
    b"",
    b"GET / HTTP/1.1\r\n\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n",                       # no Infohash
    b"BT-SEARCH * HTTP/1.1\r\nInfohash: " + b"a" * 40 + b"\r\n\r\n",  # no Port
    b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: " + b"a" * 40 + b"\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 70000\r\nInfohash: " + b"a" * 40 + b"\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: x1\r\nInfohash: " + b"a" * 40 + b"\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nPort: 2\r\nInfohash: " + b"a" * 40 + b"\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: " + b"a" * 39 + b"\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: " + b"g" * 40 + b"\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nno colon here\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: \xff\r\n",
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n" + b"Infohash: " + b"a" * 40 + b"\r\n" * 0
    + b"X: " + b"y" * 1400 + b"\r\n",                                  # too big
    b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n" + b"Infohash: " + b"a" * 40 + b"\r\n" * 1
    + (b"Infohash: " + b"b" * 40 + b"\r\n") * lsd.MAX_INFOHASHES,     # too many hashes
])
def test_what_is_not_an_announce_is_an_error(raw: bytes) -> None:
    with pytest.raises(LsdError):
        lsd.decode(raw)


@given(st.binary(max_size=1500))
def test_random_datagrams_decode_or_raise_lsd_error(raw: bytes) -> None:
    try:
        lsd.decode(raw)
    except LsdError:
        pass


@given(st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=60), max_size=8))
def test_random_headers_decode_or_raise_lsd_error(headers: list[str]) -> None:
    raw = ("BT-SEARCH * HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode()
    try:
        lsd.decode(raw)
    except LsdError:
        pass


# The schedule and what is taken -------------------------------------------------------------


def test_announce_at_start_then_every_five_minutes() -> None:
    core = LsdCore([IH], "ours", now=0.0)
    assert core.announce_due(0.0)
    core.announced(0.0)
    assert not core.announce_due(ANNOUNCE_INTERVAL - 1)
    assert core.wait(10.0) == ANNOUNCE_INTERVAL - 10.0
    assert core.announce_due(ANNOUNCE_INTERVAL)
    assert lsd.decode(core.message(HOST, 9000)) == lsd.Announce(9000, (IH,), "ours")


def test_a_newcomer_brings_the_next_announce_forward_but_not_within_a_minute() -> None:
    core = LsdCore([IH], "ours", now=0.0)
    core.announced(0.0)
    assert core.receive(announce(IH), "10.0.0.2", 10.0) == [("10.0.0.2", 7000)]
    assert core.next_announce == MIN_ANNOUNCE_GAP  # a minute after the last, not at once
    core.announced(MIN_ANNOUNCE_GAP)
    core.receive(announce(IH), "10.0.0.3", MIN_ANNOUNCE_GAP + 1)
    assert core.next_announce == 2 * MIN_ANNOUNCE_GAP
    core.announced(2 * MIN_ANNOUNCE_GAP)
    core.receive(announce(IH), "10.0.0.3", 2 * MIN_ANNOUNCE_GAP + PEER_REPEAT + 1)
    assert core.next_announce == 2 * MIN_ANNOUNCE_GAP + ANNOUNCE_INTERVAL  # not a newcomer


def test_our_own_other_torrents_and_garbage_give_nothing() -> None:
    core = LsdCore([IH], "ours", now=0.0)
    assert core.receive(announce(IH, cookie="ours"), "10.0.0.2", 1.0) == []
    assert core.receive(announce(OTHER), "10.0.0.2", 1.0) == []
    assert core.receive(b"garbage", "10.0.0.2", 1.0) == []
    assert core.dropped == 1
    assert core.receive(announce(OTHER, IH, cookie=None), "10.0.0.2", 1.0) == [("10.0.0.2",
                                                                                 7000)]


def test_a_peer_heard_again_is_passed_on_once_a_minute() -> None:
    core = LsdCore([IH], "ours", now=0.0)
    assert core.receive(announce(IH), "10.0.0.2", 1.0) == [("10.0.0.2", 7000)]
    assert core.receive(announce(IH), "10.0.0.2", 2.0) == []
    assert core.receive(announce(IH, port=7001), "10.0.0.2", 2.0) == [("10.0.0.2", 7001)]
    assert core.receive(announce(IH), "10.0.0.2", 1.0 + PEER_REPEAT) == [("10.0.0.2", 7000)]


def test_a_flood_is_cut_to_the_receive_rate_and_the_table_stays_bounded() -> None:
    core = LsdCore([IH], "ours", now=0.0)
    taken = sum(len(core.receive(announce(IH, port=1000 + i), "10.0.0.2", 0.0))
                for i in range(1000))
    assert taken == RECEIVE_BURST
    # at the refill rate, over a long time: every one taken, the table bounded
    t = 0.0
    for i in range(5000):
        t += 1 / lsd.RECEIVE_RATE
        core.receive(announce(IH, port=1 + i % 60000), f"10.0.{i // 250}.{i % 250}", t)
    assert len(core.heard) <= lsd.MAX_PEERS_HEARD


# The shell, on loopback -------------------------------------------------------------------


@pytest.fixture
def lsd_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = 30000 + os.getpid() % 20000
    monkeypatch.setenv(lsdservice.PORT_ENV, str(port + 1))  # not the run's: no stray btfs
    monkeypatch.setenv(lsdservice.INTERFACE_ENV, "127.0.0.1")
    return port + 1


def test_settings_follow_bind_then_the_environment(lsd_port: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert lsdservice.settings("127.0.0.9") == ("127.0.0.9", False, lsd_port)
    assert lsdservice.settings(None) == ("127.0.0.1", False, lsd_port)
    assert lsdservice.settings("0.0.0.0") == ("127.0.0.1", False, lsd_port)
    assert lsdservice.settings("::1") == (None, False, lsd_port)
    monkeypatch.delenv(lsdservice.INTERFACE_ENV)
    monkeypatch.setenv(lsdservice.PORT_ENV, "garbage")
    assert lsdservice.settings(None) == (None, True, lsd.PORT)


async def test_two_services_on_loopback_find_each_other(lsd_port: int) -> None:
    found: dict[str, list[tuple[str, int]]] = {"a": [], "b": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: lsdservice.run_lsd(IH, 7001, found["a"].extend,
                                                      bind="127.0.0.2"))
        await trio.sleep(0.2)  # a is listening before b announces
        nursery.start_soon(lambda: lsdservice.run_lsd(IH, 7002, found["b"].extend,
                                                      bind="127.0.0.3"))
        with trio.fail_after(10):
            while not found["a"]:  # noqa: ASYNC110 - polling a plain list
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    # each announce comes from the bound address with the listening port; our own are
    # ignored (by cookie); b heard a's first announce only if a re-announced (a minute on)
    assert found["a"] == [("127.0.0.3", 7002)]
    assert ("127.0.0.2", 7001) not in found["a"] and found["b"] == []


async def test_one_shared_service_serves_each_torrent_its_own_peers(lsd_port: int) -> None:
    """A library's torrents share one service: 40 torrents announced in two datagrams
    (32 hashes at most in one), each peer heard passed to the torrent it has only."""
    hashes = [bytes([i]) * 20 for i in range(1, 41)]
    heard: dict[bytes, list[tuple[str, int]]] = {h: [] for h in hashes}
    shared = lsdservice.LsdService(7001, bind="127.0.0.2")
    other: list[tuple[str, int]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(shared.run)
        for h in hashes:
            shared.register(h, heard[h].extend)
        shared.unregister(hashes[0])
        assert len(shared.core.messages("host", 1)) == 2       # 39 hashes: 32 + 7
        # a peer with the last torrent and the unregistered first one
        nursery.start_soon(lambda: lsdservice.run_lsd(hashes[-1], 7002, other.extend,
                                                      bind="127.0.0.3"))
        peer = lsdservice.LsdService(7003, bind="127.0.0.4")
        peer.register(hashes[0], other.extend)
        await nursery.start(peer.run)
        with trio.fail_after(10):
            while not heard[hashes[-1]]:  # noqa: ASYNC110 - polling a plain list
                await trio.sleep(0.05)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert heard[hashes[-1]] == [("127.0.0.3", 7002)]
    assert all(not heard[h] for h in hashes[:-1])


async def test_no_multicast_on_the_interface_is_one_line_and_no_error(
    lsd_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="btfs.lsdservice")
    monkeypatch.setenv(lsdservice.INTERFACE_ENV, "192.0.2.254")  # no interface has it
    with trio.fail_after(5):
        await lsdservice.run_lsd(IH, 7001, lambda peers: None)  # returns: nothing to run
    [record] = caplog.records
    assert "local peer discovery off on IPv4 (192.0.2.254)" in record.getMessage()


# The options --------------------------------------------------------------------------------


def test_no_lsd_on_the_command_line_and_as_a_mount_option(tmp_path: Path) -> None:
    from btfs.cli import build_parser, network_options
    from btfs.mount import MountOptions
    from btfs.mount_options import apply_mount_options

    parser = build_parser()
    for command in (["download", "x.torrent"], ["seed", "x.torrent", "x"],
                    ["mount", "x.torrent", "/mnt"]):
        assert network_options(parser.parse_args(command)).lsd is True
        assert network_options(parser.parse_args([*command, "--no-lsd"])).lsd is False
    options = MountOptions(tmp_path)
    assert options.network.lsd is True
    apply_mount_options(options, "keep,no_lsd")
    assert options.network.lsd is False
