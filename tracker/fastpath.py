"""The HTTP tracker's fast path: what lets a trio tracker answer announces at about
opentracker's rate (bench/tracker.py).

Two pieces, both used only by `HttpTracker` while a connection sends simple requests:

- `simple_request`: the request grammar of h11 (h11/_abnf.py) restricted to what
  BitTorrent clients send, a GET over HTTP/1.1 with one Host header and nothing that
  changes framing or the connection but ``Connection: close``. Whatever it does not
  take, h11 judges.
- `RawSocketIo`: plain non-blocking calls on the trio stream's descriptor.

The answers are written by hand with the bytes h11 would write. That promise is held by
tests/integration/test_tracker_fastpath.py, which sends a corpus of requests, whole and
in pieces, to a tracker with the fast path and to one with `HttpConfig(fast_path=False)`
and compares the bytes that come back. Change either side only with that test passing.
"""

from __future__ import annotations

import re
import socket

import trio

MAX_HEADER_BYTES = 8192  # request line, headers and the empty line that ends them

# h11's grammar (h11/_abnf.py), restricted to what `simple_request` takes. The possessive
# quantifiers (++) change nothing in what matches, since what follows each run cannot
# be part of it, but spare a failing match from trying every shorter run (a long target
# made a request with more headers than Host cost 5 us in the Host-only pattern).
_BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 ends a header block
_SIMPLE_REQUEST_LINE = re.compile(rb"GET ([\x21-\x7e]++) HTTP/1\.1")
_HEADER_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]++):[ \t]*([^\x00\s]++(?:[ \t]+[^\x00\s]++)*)?[ \t]*"
)
# One whole request with a Host header only (what the general match below takes too).
_HOST_ONLY = re.compile(
    rb"GET ([\x21-\x7e]++) HTTP/1\.1\r\n[Hh][Oo][Ss][Tt]:[ \t]*([^\x00\s]++)[ \t]*\r\n\r\n"
)
# One whole request, every header line of the grammar above (`simple_request` then reads
# the lines with `_HEADER_LINES.findall`), to the empty line that ends it and no further.
_ONE_REQUEST = re.compile(rb"GET ([\x21-\x7e]++) HTTP/1\.1\r\n((?:"
                          + _HEADER_LINE.pattern + rb"\r\n)++)\r\n")
_HEADER_LINES = re.compile(_HEADER_LINE.pattern + rb"\r\n")
_NOT_SIMPLE = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
# target, headers, size, and whether the client asked to close after the answer
SimpleRequest = tuple[bytes, list[tuple[bytes, bytes]], int, bool]
INCOMPLETE: SimpleRequest = (b"", [], -1, False)  # a sentinel: not a whole header block yet


def simple_request(buf: bytes) -> SimpleRequest | None:
    """(target, headers, bytes used, close) of a simple request at the start of `buf`;
    None if what `buf` starts with is anything else (h11 must judge it); `INCOMPLETE` if
    more bytes are needed to tell. `close`: the request has ``Connection: close``, as
    libtorrent's and aria2's announces do (any other Connection header is h11's)."""
    if len(buf) <= MAX_HEADER_BYTES:
        whole = _HOST_ONLY.fullmatch(buf)
        if whole is not None:  # the commonest request, in one match
            return whole[1], [(b"host", whole[2])], len(buf), False
        whole = _ONE_REQUEST.fullmatch(buf)
        if whole is not None:  # one whole request, its lines read in two C calls
            return _judge(whole[1], _HEADER_LINES.findall(whole[2]), len(buf))
    if buf[:4] != b"GET "[: len(buf)]:
        return None
    blank = _BLANK_LINE.search(buf)
    if blank is None:
        return INCOMPLETE if len(buf) <= MAX_HEADER_BYTES else None
    end = blank.start()
    if blank.end() - end != 3 or buf[end - 1 : end] != b"\r" or blank.end() > MAX_HEADER_BYTES:
        return None  # bare LF line ends, or oversized: h11 decides
    lines = buf[: end - 1].split(b"\r\n")
    first = _SIMPLE_REQUEST_LINE.fullmatch(lines[0])
    if first is None:
        return None
    fields = []
    for line in lines[1:]:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return None
        fields.append((match[1], match[2] or b""))
    return _judge(first[1], fields, blank.end())


def _judge(target: bytes, fields: list[tuple[bytes, bytes]], used: int
           ) -> SimpleRequest | None:
    """`simple_request` of a request whose lines fit the grammar: its header fields
    (name as sent, value) decide whether it is simple."""
    headers = []
    hosts = 0
    close = False
    for raw_name, value in fields:
        name = raw_name.lower()
        if name in _NOT_SIMPLE:
            return None
        if name == b"host":
            hosts += 1
        elif name == b"connection":
            if close or value.lower() != b"close":
                return None
            close = True
        headers.append((name, value))
    if hosts != 1:
        return None
    return target, headers, used, close


class RawSocketIo:
    """Plain non-blocking calls on a connection's socket.

    A trio stream call passes through the scheduler two or three times; here a request
    costs one wait for readability (which is also the loop's checkpoint), a `recv` and
    usually a single `send`. Only a send the kernel cannot take at once falls back to
    the stream.
    """

    __slots__ = ("raw", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        sock = stream.socket
        self.stream = stream
        # The same descriptor (a duplicate would double the descriptors per connection);
        # `close` detaches it, the stream closes it.
        self.raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())
        self.raw.setblocking(False)

    async def receive_some(self, size: int) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self.raw)
            try:
                return self.raw.recv(size)
            except BlockingIOError:
                continue

    async def send_all(self, data: bytes) -> None:
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            await self.stream.send_all(memoryview(data)[sent:])

    def close(self) -> None:
        self.raw.detach()
