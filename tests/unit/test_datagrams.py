"""tracker.datagrams: batches of datagrams through recvmmsg/sendmmsg, on real loopback
sockets."""

from __future__ import annotations

import ctypes
import errno
import select
import socket
from collections.abc import Iterator

import pytest

from tracker.datagrams import DatagramBatch, sockaddr_tuple


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def client(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


def wait_readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], 5)[0], "nothing arrived"


def test_a_batch_reads_every_waiting_datagram_with_its_source_and_answers_each() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    a, b = client(), client("127.0.0.2")
    with sock, a, b:
        sent = [(a, b"one"), (b, b"two" * 100), (a, b"three")]
        for peer, data in sent:
            peer.sendto(data, sock.getsockname())
        wait_readable(sock)
        batch = DatagramBatch(sock, count=8, size=512)
        got = batch.receive()
        assert len(got) == 3
        for i, ((peer, data), (datagram, source)) in enumerate(zip(sent, got, strict=True)):
            assert datagram == data
            assert sockaddr_tuple(source) == peer.getsockname()
            assert batch.queue(b"re:" + data[:5], i)
        assert batch.flush() == []
        assert a.recvfrom(100) == (b"re:one", sock.getsockname())
        assert a.recvfrom(100) == (b"re:three", sock.getsockname())
        assert b.recvfrom(100) == (b"re:twotw", sock.getsockname())
        assert batch.receive() == []  # nothing waiting: no block, no error


def test_a_batch_holds_at_most_count_and_cuts_a_long_datagram_at_size(
        server: socket.socket) -> None:
    peer = client()
    with peer:
        for n in range(5):
            peer.sendto(bytes([n]) * 300, server.getsockname())
        wait_readable(server)
        batch = DatagramBatch(server, count=2, size=100)
        assert [data for data, _ in batch.receive()] == [bytes([0]) * 100, bytes([1]) * 100]
        assert [data for data, _ in batch.receive()] == [bytes([2]) * 100, bytes([3]) * 100]
        assert [data for data, _ in batch.receive()] == [bytes([4]) * 100]


def test_a_reply_longer_than_a_slot_is_not_queued(server: socket.socket) -> None:
    peer = client()
    with peer:
        peer.sendto(b"x", server.getsockname())
        wait_readable(server)
        batch = DatagramBatch(server, count=2, size=16)
        assert len(batch.receive()) == 1
        assert not batch.queue(b"y" * 17, 0)
        assert batch.queue(b"y" * 16, 0)
        assert batch.flush() == []
        assert peer.recv(100) == b"y" * 16


def test_ipv6_socket_sees_an_ipv4_client_as_mapped_and_answers_it() -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    v4 = client()
    v6 = client("::1", socket.AF_INET6)
    with sock, v4, v6:
        v4.sendto(b"four", ("127.0.0.1", port))
        v6.sendto(b"six", ("::1", port))
        wait_readable(sock)
        batch = DatagramBatch(sock, count=4, size=64)
        got = batch.receive()
        assert len(got) == 2  # loopback delivers within sendto
        sources = dict(got)
        assert len(sources[b"four"]) == 28
        host, p, _, _ = sockaddr_tuple(sources[b"four"])  # type: ignore[misc]
        assert (host, p) == ("::ffff:127.0.0.1", v4.getsockname()[1])
        host, p, _, _ = sockaddr_tuple(sources[b"six"])  # type: ignore[misc]
        assert (host, p) == ("::1", v6.getsockname()[1])
        for i, (data, _) in enumerate(got):
            assert batch.queue(b"ok " + data, i)
        assert batch.flush() == []
        assert v4.recv(64) == b"ok four"
        assert v6.recv(64) == b"ok six"


def _failing(code: int) -> object:
    """A stand-in for sendmmsg that fails with `code`."""

    def sendmmsg(fd: int, vec: int, n: int, flags: int) -> int:
        ctypes.set_errno(code)
        return -1

    return sendmmsg


def test_replies_the_kernel_will_not_take_now_are_handed_back(server: socket.socket) -> None:
    peer = client()
    with peer:
        peer.sendto(b"a", server.getsockname())
        peer.sendto(b"b", server.getsockname())
        wait_readable(server)
        batch = DatagramBatch(server, count=4, size=64)
        assert len(batch.receive()) == 2
        batch.queue(b"reply a", 0)
        batch.queue(b"reply b", 1)
        batch._sendmmsg = _failing(errno.EAGAIN)  # type: ignore[assignment]
        left = batch.flush()
        assert [(reply, sockaddr_tuple(source)) for reply, source in left] == [
            (b"reply a", peer.getsockname()), (b"reply b", peer.getsockname())]
        assert batch.queued == 0


def test_a_reply_refused_for_another_reason_is_dropped_and_the_rest_go(
        server: socket.socket) -> None:
    peer = client()
    with peer:
        peer.sendto(b"a", server.getsockname())
        wait_readable(server)
        batch = DatagramBatch(server, count=4, size=64)
        assert len(batch.receive()) == 1
        batch.queue(b"lost", 0)
        batch.queue(b"kept", 0)
        real = batch._sendmmsg
        refused = {"done": False}

        def sendmmsg(fd: int, vec: int, n: int, flags: int) -> int:
            if not refused["done"]:
                refused["done"] = True
                ctypes.set_errno(errno.EPERM)
                return -1
            return int(real(fd, vec, n, flags))

        batch._sendmmsg = sendmmsg  # type: ignore[assignment]
        assert batch.flush() == []
        assert peer.recv(64) == b"kept"


def test_a_receive_error_other_than_nothing_waiting_is_raised(server: socket.socket) -> None:
    batch = DatagramBatch(server, count=2, size=64)

    def recvmmsg(fd: int, vec: int, n: int, flags: int, timeout: object) -> int:
        ctypes.set_errno(errno.ENOMEM)
        return -1

    batch._recvmmsg = recvmmsg  # type: ignore[assignment]
    with pytest.raises(OSError) as raised:
        batch.receive()
    assert raised.value.errno == errno.ENOMEM


def test_receive_gives_each_datagram_with_its_source_in_order(server: socket.socket) -> None:
    a, b = client(), client("127.0.0.3")
    with a, b:
        a.sendto(b"first", server.getsockname())
        b.sendto(b"second", server.getsockname())
        wait_readable(server)
        batch = DatagramBatch(server, count=4, size=64)
        got = batch.receive()
        assert [(data, sockaddr_tuple(source)) for data, source in got] == [
            (b"first", a.getsockname()), (b"second", b.getsockname())]
        assert batch.receive() == []
