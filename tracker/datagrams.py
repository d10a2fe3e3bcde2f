"""Datagrams read and sent in batches: Linux's `recvmmsg` and `sendmmsg`, through ctypes.

Why: under load the UDP tracker's own work per announce is a few microseconds, and one
`recvfrom` and one `sendto` per datagram cost about as much again, mostly in Python's
wrappers (a new `str` and tuple for every source address, parsing it back for the reply)
and in two system calls. Here a batch of up to `count` datagrams is one call each way, and
a source is its raw `sockaddr` bytes, which the reply is sent back to unchanged.

The buffers are allocated once per socket and reused: replies queued with `queue` (to a
datagram of the last `receive`, by its index) go out with `flush`, which must come
before the next `receive` (the replies point at the sources' buffers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import sys

_SOCKADDR_SIZE = 28  # sockaddr_in6, the larger of the two families served
_MSG_DONTWAIT = 0x40


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_MMSG = ctypes.sizeof(_MMsgHdr)
_LEN_AT = _MMsgHdr.len.offset
_NAME_AT = _MMsgHdr.hdr.offset + _MsgHdr.name.offset


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for name in ("recvmmsg", "sendmmsg"):
            function = getattr(libc, name)
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_void_p][: 5 if name == "recvmmsg" else 4]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class DatagramBatch:
    """Reusable buffers for up to `count` datagrams of at most `size` bytes each way on
    one non-blocking datagram socket (IPv4 or IPv6)."""

    def __init__(self, sock: socket.socket, count: int = 64, size: int = 2048) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self._recvmmsg = _LIBC.recvmmsg
        self._sendmmsg = _LIBC.sendmmsg
        self.fd = sock.fileno()
        self.count = count
        self.size = size
        self.v6 = sock.family == socket.AF_INET6
        self._names = ctypes.create_string_buffer(count * _SOCKADDR_SIZE)
        self._data = ctypes.create_string_buffer(count * size)
        self._out = ctypes.create_string_buffer(count * size)
        self._rx = (_MMsgHdr * count)()
        self._tx = (_MMsgHdr * count)()
        rx_iov = (_IoVec * count)()
        tx_iov = (_IoVec * count)()
        self._iovecs = (rx_iov, tx_iov)  # kept alive: the headers point at them
        names = ctypes.addressof(self._names)
        self._names_at = names
        self._namelen = _SOCKADDR_SIZE if self.v6 else 16  # sockaddr_in6 or sockaddr_in
        for i in range(count):
            rx_iov[i].base = ctypes.addressof(self._data) + i * size
            rx_iov[i].len = size
            tx_iov[i].base = ctypes.addressof(self._out) + i * size
            for headers, iov in ((self._rx, rx_iov), (self._tx, tx_iov)):
                hdr = headers[i].hdr
                hdr.name = names + i * _SOCKADDR_SIZE
                hdr.namelen = self._namelen  # the kernel writes the same length back
                hdr.iov = ctypes.addressof(iov) + i * ctypes.sizeof(_IoVec)
                hdr.iovlen = 1
        self._rx_at = ctypes.addressof(self._rx)
        self._tx_at = ctypes.addressof(self._tx)
        self._rx_words = memoryview(self._rx).cast("B").cast("I")  # for msg_len
        self._tx_addrs = memoryview(self._tx).cast("B").cast("Q")  # for msg_name
        self._tx_lens = memoryview(tx_iov).cast("B").cast("Q")  # for iov_len
        self._data_view = memoryview(self._data).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        self._out_view = memoryview(self._out).cast("B")
        self.queued = 0

    def receive(self) -> list[tuple[bytes, bytes]]:
        """Read what is waiting, up to `count` datagrams, without blocking: (datagram,
        source) of each, in order, none when nothing waits. A datagram longer than `size`
        is cut there, as `recvfrom(size)` does; a source is the raw `sockaddr` (16 bytes
        for IPv4, 28 for IPv6: `sockaddr_tuple` turns it into what `socket` methods
        take). Its index is what `queue` takes. Raises OSError."""
        while True:
            got = self._recvmmsg(self.fd, self._rx_at, self.count, _MSG_DONTWAIT, None)
            if got >= 0:
                break
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))
        size = self.size
        data = self._data_view
        names = self._names_view
        lengths = self._rx_words
        namelen = self._namelen
        return [(data[i * size : i * size + lengths[(i * _MMSG + _LEN_AT) >> 2]].tobytes(),
                 names[i * _SOCKADDR_SIZE : i * _SOCKADDR_SIZE + namelen].tobytes())
                for i in range(got)]

    def queue(self, reply: bytes, i: int) -> bool:
        """Queue `reply` to the source of datagram `i` of the current batch; False when it
        does not fit a slot (send it some other way)."""
        n = self.queued
        if len(reply) > self.size:
            return False
        start = n * self.size
        self._out_view[start : start + len(reply)] = reply
        self._tx_lens[n * 2 + 1] = len(reply)
        self._tx_addrs[(n * _MMSG + _NAME_AT) >> 3] = self._names_at + i * _SOCKADDR_SIZE
        self.queued = n + 1
        return True

    def flush(self) -> list[tuple[bytes, bytes]]:
        """Send the queued replies. Those the kernel would not take now, its buffer being
        full, are returned as (reply, raw source) for the caller to send when it can; a
        reply refused for another reason (e.g. no route) is dropped, as a lost datagram
        is."""
        n = self.queued
        self.queued = 0
        done = 0
        while done < n:
            sent = self._sendmmsg(self.fd, self._tx_at + done * _MMSG, n - done, 0)
            if sent > 0:
                done += sent
                continue
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                return [self._queued(k) for k in range(done, n)]
            done += 1  # this one is refused; the rest may go
        return []

    def _queued(self, k: int) -> tuple[bytes, bytes]:
        start = k * self.size
        reply = self._out_view[start : start + self._tx_lens[k * 2 + 1]].tobytes()
        name = self._tx_addrs[(k * _MMSG + _NAME_AT) >> 3] - self._names_at
        return reply, self._names_view[name : name + self._namelen].tobytes()


def sockaddr_tuple(raw: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
    """A raw `sockaddr_in` or `sockaddr_in6` as the address `socket` methods take."""
    port = int.from_bytes(raw[2:4], "big")
    if len(raw) >= 28:
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return (host, port, int.from_bytes(raw[4:8], "big"),
                int.from_bytes(raw[24:28], sys.byteorder))
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
