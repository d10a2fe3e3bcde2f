"""BEP 15 on the wire (the codec shared by client and tracker), connection IDs, the
tracker's datagram handler."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.trackers import AnnounceParams, ScrapeResult, TrackerFailure
from btfs.trackers import udp as client
from btfs.trackerwire.bep15 import (
    PROTOCOL_ID,
    AnnounceRequest,
    ConnectRequest,
    MalformedPacket,
    ScrapeRequest,
    decode_request,
    encode_announce,
    encode_connect,
    encode_error,
    encode_scrape,
)
from tracker.store.memory import SwarmStore
from tracker.udp import MAX_PEERS6, ConnectionIds, UdpTracker

HASH = b"h" * 20
TX = b"\x01\x02\x03\x04"

def call(tracker: Any, *args: Any) -> Any:
    """`tracker.handle(...)` over the memory store, which never suspends: run to the end."""
    coro = tracker.handle(*args)
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("handle suspended over the memory store")



def connect_packet(txid: bytes = TX) -> bytes:
    return struct.pack("!QI4s", PROTOCOL_ID, 0, txid)


def announce_packet(cid: bytes, peer_id: bytes = b"p" * 20, *, left: int = 10, event: int = 0,
                    port: int = 6881, numwant: int = -1, ip: bytes = b"\0" * 4,
                    info_hash: bytes = HASH) -> bytes:
    return struct.pack("!8sI4s20s20sqqqI4sIiH", cid, 1, TX, info_hash, peer_id, 0, left, 0,
                       event, ip, 0x1234, numwant, port)


def scrape_packet(cid: bytes, *hashes: bytes) -> bytes:
    return struct.pack("!8sI4s", cid, 2, TX) + b"".join(hashes)


def test_decode_requests() -> None:
    assert decode_request(connect_packet()) == ConnectRequest(TX)
    req = decode_request(announce_packet(b"c" * 8, event=2, numwant=30) + b"\x02\x05/path")
    assert isinstance(req, AnnounceRequest)
    assert (req.connection_id, req.info_hash, req.event, req.numwant, req.port, req.left) == (
        b"c" * 8, HASH, "started", 30, 6881, 10)
    req = decode_request(scrape_packet(b"c" * 8, HASH, b"i" * 20))
    assert req == ScrapeRequest(b"c" * 8, TX, [HASH, b"i" * 20])


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (struct.pack("!QI4s", 1234, 0, TX), "protocol id"),
        (announce_packet(b"c" * 8)[:97], "too short"),
        (announce_packet(b"c" * 8, event=7), "event"),
        (announce_packet(b"c" * 8, port=0), "port"),
        (announce_packet(b"c" * 8, left=-1), "negative"),
        (scrape_packet(b"c" * 8), "20-byte"),
        (scrape_packet(b"c" * 8, b"x" * 19), "20-byte"),
        (scrape_packet(b"c" * 8, *[HASH] * 75), "at most 74"),
        (struct.pack("!QI4s", 0, 9, TX), "unknown action"),
    ],
)
def test_decode_errors_carry_the_transaction(packet: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message) as exc:
        decode_request(packet)
    assert exc.value.txid == TX


def test_short_packet_has_no_transaction() -> None:
    with pytest.raises(MalformedPacket) as exc:
        decode_request(b"\0" * 15)
    assert exc.value.txid is None


def test_encoders() -> None:
    assert encode_connect(TX, b"c" * 8) == b"\0\0\0\0" + TX + b"c" * 8
    assert encode_announce(TX, 1800, 2, 3, b"p" * 6) == struct.pack(
        "!I4sIII", 1, TX, 1800, 2, 3) + b"p" * 6
    assert encode_scrape(TX, [(1, 2, 3), (2**40, 0, 0)]) == struct.pack(
        "!I4sIIIIII", 2, TX, 1, 2, 3, 2**32 - 1, 0, 0)
    assert encode_error(TX, "nope") == b"\0\0\0\x03" + TX + b"nope"


def test_client_requests_are_what_the_tracker_decodes() -> None:
    """One codec for both sides: what the client sends, the tracker reads field by field,
    and what the tracker answers, the client reads back."""
    cid = b"c" * 8
    assert decode_request(client.udp_connect_request(TX)) == ConnectRequest(TX)
    params = AnnounceParams(HASH, b"p" * 20, 6881, uploaded=3, downloaded=2, left=1,
                            event="completed", numwant=-1, key=0xDEADBEEF)
    assert decode_request(client.udp_announce_request(cid, TX, params)) == AnnounceRequest(
        cid, TX, HASH, b"p" * 20, 2, 1, 3, "completed", b"\0" * 4, 0xDEADBEEF, -1, 6881)
    assert decode_request(client.udp_scrape_request(cid, TX, [HASH, b"i" * 20])) == ScrapeRequest(
        cid, TX, [HASH, b"i" * 20])

    assert client.parse_udp_connect_response(encode_connect(TX, cid), TX) == cid
    answer = client.parse_udp_announce_response(
        encode_announce(TX, 900, 4, 5, bytes([10, 0, 0, 1, 0x1A, 0xE1])), TX)
    assert (answer.interval, answer.incomplete, answer.complete, answer.peers) == (
        900, 4, 5, [("10.0.0.1", 6881)])
    assert client.parse_udp_scrape_response(encode_scrape(TX, [(1, 2, 3)]), TX, [HASH]) == {
        HASH: ScrapeResult(1, 2, 3)}
    with pytest.raises(TrackerFailure, match="bad connection id"):
        client.parse_udp_announce_response(encode_error(TX, "bad connection id"), TX)


def test_connection_ids_are_bound_to_address_and_time() -> None:
    ids = ConnectionIds(b"k" * 32, window=60)
    cid = ids.make(b"addr", 100.0)
    assert len(cid) == 8
    assert ids.check(cid, b"addr", 100.0) and ids.check(cid, b"addr", 179.0)
    assert not ids.check(cid, b"addr", 180.0)
    assert not ids.check(cid, b"other", 100.0)
    assert not ConnectionIds(b"x" * 32).check(cid, b"addr", 100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def connect(tracker: UdpTracker, source: tuple[str, int]) -> bytes:
    reply = call(tracker, connect_packet(), source)
    assert reply is not None and reply[:8] == b"\0\0\0\0" + TX
    return reply[8:]


def test_handler_announce_scrape_and_errors() -> None:
    clock = Clock()
    store = SwarmStore()
    t = UdpTracker(store, clock=clock)
    a, b = ("127.0.0.5", 5000), ("127.0.0.6", 5001)
    cid_a = connect(t, a)
    reply = call(t, announce_packet(cid_a, b"a" * 20, port=7000), a)
    assert reply == struct.pack("!I4sIII", 1, TX, 1800, 1, 0)
    cid_b = connect(t, b)
    reply = call(t, announce_packet(cid_b, b"b" * 20, left=0, event=1), b)
    assert reply == struct.pack("!I4sIII", 1, TX, 1800, 1, 1) + bytes([127, 0, 0, 5]) + \
        (7000).to_bytes(2, "big")
    # Another client's id, or an expired one, is refused.
    reply = call(t, announce_packet(cid_a, b"b" * 20), b)
    assert reply == encode_error(TX, "bad connection id")
    clock.now += 121
    assert call(t, scrape_packet(cid_a, HASH), a) == encode_error(TX, "bad connection id")
    cid_a = connect(t, a)
    assert call(t, scrape_packet(cid_a, HASH, b"z" * 20, HASH), a) == encode_scrape(
        TX, [(1, 1, 1), (0, 0, 0), (1, 1, 1)])
    # stopped removes at once.
    call(t, announce_packet(cid_a, b"a" * 20, event=3), a)
    assert call(t, scrape_packet(cid_a, HASH), a) == encode_scrape(TX, [(1, 1, 0)])
    assert call(t, b"garbage", a) is None
    assert call(t, b"x" * 16, a) == encode_error(b"xxxx", "unknown action")
    stats = store.stats()
    assert stats["announces"]["udp"] == 3 and stats["scrapes"]["udp"] == 2
    assert stats["errors"]["udp_connection_id"] == 2
    assert stats["errors"]["udp_malformed"] == 2


def test_ipv6_clients_get_ipv6_peers() -> None:
    store = SwarmStore()
    t = UdpTracker(store)
    v4, v6, mapped = ("127.0.0.5", 5000), ("::1", 5001, 0, 0), ("::ffff:127.0.0.7", 5002, 0, 0)
    call(t, announce_packet(connect(t, v4), b"a" * 20, port=7000), v4)
    call(t, announce_packet(connect(t, mapped), b"m" * 20, port=7002), mapped)
    for n in range(100):
        call(t, announce_packet(connect(t, v6), b"v" + bytes([n]) * 19, port=8000 + n), v6)
    reply = call(t, announce_packet(connect(t, v6), b"q" * 20, numwant=500), v6)
    assert reply is not None and len(reply) == 20 + 18 * MAX_PEERS6
    reply = call(t, announce_packet(connect(t, v4), b"r" * 20), v4)
    assert reply is not None and sorted(reply[20:][i:i + 6] for i in (0, 6)) == [
        bytes([127, 0, 0, 5, 0x1B, 0x58]), bytes([127, 0, 0, 7, 0x1B, 0x5A])]


def test_ip_field_needs_trust() -> None:
    for trust, expected in ((False, bytes([127, 0, 0, 5])), (True, bytes([9, 9, 9, 9]))):
        t = UdpTracker(SwarmStore(), trust_ip_param=trust)
        a = ("127.0.0.5", 5000)
        call(t, announce_packet(connect(t, a), b"a" * 20, ip=bytes([9, 9, 9, 9])), a)
        reply = call(t, announce_packet(connect(t, a), b"b" * 20), a)
        assert reply is not None and reply[20:24] == expected


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n, tail: connect_packet()[:n] + tail, st.integers(0, 16),
              st.binary(max_size=90)),
    st.builds(lambda a, b: announce_packet(b"c" * 8)[:a] + b, st.integers(0, 98),
              st.binary(max_size=40)),
))
def test_random_datagrams(packet: bytes) -> None:
    try:
        decode_request(packet)
    except MalformedPacket:
        pass
    t = UdpTracker(SwarmStore(), connection_ids=ConnectionIds(b"k" * 32), clock=lambda: 0.0)
    source = ("127.0.0.5", 5000)
    reply = call(t, packet, source)
    assert reply is None or len(reply) >= 8
    # With a valid connection id, the rest of the packet is whatever hypothesis made.
    cid = ConnectionIds(b"k" * 32).make(bytes([127, 0, 0, 5]) + (5000).to_bytes(2, "big"), 0.0)
    reply = call(t, cid + packet[8:], source)
    assert reply is None or len(reply) >= 8


async def test_the_serve_loop_answers_a_batch_from_both_families_on_a_dual_stack_socket(
) -> None:
    """The socket loop (recvmmsg/sendmmsg): IPv4 clients reaching an IPv6 wildcard socket
    count as IPv4 (6-byte peers, the same connection id as by their plain address), IPv6
    ones get 18-byte peers, malformed datagrams get their error, and many clients' datagrams
    waiting together are each answered to the right client."""
    import socket as stdsocket

    import trio

    from tracker.udp import open_udp_socket

    store = SwarmStore()
    tracker = UdpTracker(store, ConnectionIds(b"s" * 32), clock=lambda: 1000.0)
    sock = trio.socket.from_stdlib_socket(open_udp_socket("::", 0))
    port = sock.getsockname()[1]
    clients = []
    for n in range(40):
        family, host = ((stdsocket.AF_INET6, "::1") if n % 4 == 3
                        else (stdsocket.AF_INET, f"127.0.0.{1 + n % 3}"))
        c = stdsocket.socket(family, stdsocket.SOCK_DGRAM)
        c.bind((host, 0))
        c.setblocking(False)
        clients.append(c)

    async def exchange(packets: list[bytes]) -> list[bytes]:
        for c, packet in zip(clients, packets, strict=True):
            c.sendto(packet, ("::1" if c.family == stdsocket.AF_INET6 else "127.0.0.1", port))
        replies = []
        for c in clients:
            with trio.fail_after(10):
                await trio.lowlevel.wait_readable(c)
            replies.append(c.recv(4096))
        return replies

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(tracker.serve, sock)
            ids = [r[8:16] for r in await exchange([connect_packet()] * len(clients))]
            v4 = clients[0].getsockname()
            assert ids[0] == ConnectionIds(b"s" * 32).make(
                bytes([127, 0, 0, 1]) + v4[1].to_bytes(2, "big"), 1000.0)
            for _ in range(2):  # the second time, every client has peers to be given
                replies = await exchange([
                    announce_packet(cid, bytes([n]) * 20, port=7000 + n)
                    for n, cid in enumerate(ids)])
            for n, (c, reply) in enumerate(zip(clients, replies, strict=True)):
                assert reply[:8] == struct.pack("!I4s", 1, TX), n
                size = 18 if c.family == stdsocket.AF_INET6 else 6
                assert (len(reply) - 20) % size == 0 and len(reply) > 20, n
                if size == 6:
                    assert all(reply[i] == 127 for i in range(20, len(reply), 6))
            stats = store.stats()
            assert stats["peers_ipv4"] == 30 and stats["peers_ipv6"] == 10
            replies = await exchange([b"x" * 16] * len(clients))
            assert replies == [encode_error(b"xxxx", "unknown action")] * len(clients)
            nursery.cancel_scope.cancel()
    finally:
        for c in clients:
            c.close()
        sock.close()
