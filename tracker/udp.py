"""The UDP tracker (BEP 15) on a trio datagram socket, IPv4 or IPv6.

A client gets peers of its own address family: 6-byte entries over IPv4, 18-byte entries
over IPv6 (an IPv4 client reaching a dual-stack IPv6 socket counts as IPv4). Malformed
datagrams are answered with an error packet, or dropped when too short to carry a
transaction id; nothing a client sends stops the server.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import trio

from btfs.trackerwire import compact as compact_address
from btfs.trackerwire.bep15 import (
    ANNOUNCE_SIZE,
    PROTOCOL_ID_BYTES,
    AnnounceRequest,
    ConnectRequest,
    MalformedPacket,
    decode_request,
    encode_announce,
    encode_connect,
    encode_error,
    encode_scrape,
)
from btfs.trackerwire.events import UDP_EVENTS
from tracker.datagrams import DatagramBatch, sockaddr_tuple
from tracker.errors import RequestError
from tracker.store.base import WANT_V4, WANT_V6, Outcome, Ready, ScrapeEntry, Store
from tracker.store.memory import MemoryStore, SwarmStore

log = logging.getLogger("tracker.udp")
access_log = logging.getLogger("tracker.access")

MAX_PEERS6 = 66  # 20 + 66 * 18 bytes stays below IPv6's safe 1232-byte payload
_MAX_DATAGRAM = 2048
_BATCH = 64  # datagrams answered per wakeup before other tasks get a turn
_CLIENTS = 16384  # source addresses whose packed form is remembered

# The announce fast path: the whole BEP 15 announce in one unpack, the answer in one pack.
_FAST_ANNOUNCE = struct.Struct("!8sI4s20s20sqqqI4sIiH")
_ANNOUNCE_ANSWER = struct.Struct("!I4sIII")
_ANNOUNCE_CODE = 1
_ANNOUNCE_ACTION = _ANNOUNCE_CODE.to_bytes(4, "big")
_CONNECT_ACTION = bytes(4)
_PORTS = [port.to_bytes(2, "big") for port in range(0x10000)]
_U32 = 0xFFFFFFFF
_IN_FLIGHT = 16  # batches waiting on the store (Redis) at once
_V4_MAPPED = bytes(10) + b"\xff\xff"


class ConnectionIds:
    """Stateless connection IDs: 8 bytes of a keyed BLAKE2b over the client's address and
    the current time window, under a secret: random per process, or shared by every
    tracker process (a file, or the Redis store) so that an ID from one worker or before a
    restart is good at another. An ID is accepted in the window it was made in and the
    next one, so it lives one to two windows; after `adopt` of a new secret, IDs made
    under the previous one stay good too.

    What was made or found good in the current window is remembered (per address, at most
    `_REMEMBERED` of each, forgotten when the window or the secret changes): a client's
    announces after its connect cost a dict lookup instead of one or two MACs."""

    _REMEMBERED = 16384

    def __init__(self, secret: bytes | None = None, window: float = 60.0) -> None:
        self.secret = secret if secret is not None else os.urandom(32)
        self.previous: bytes | None = None
        self.window = window
        self._current = -1  # the window the remembered IDs are of
        self._made: dict[bytes, bytes] = {}  # address -> the ID `make` gave it
        self._good: dict[bytes, bytes] = {}  # address -> an ID `check` found good

    def adopt(self, secret: bytes) -> None:
        """Use `secret` from now on (the one other processes share)."""
        if secret != self.secret:
            self.previous, self.secret = self.secret, secret
            self._current = -1

    def _mac(self, address: bytes, window: int, secret: bytes | None = None) -> bytes:
        msg = window.to_bytes(8, "big", signed=True) + address
        return hashlib.blake2b(msg, key=secret or self.secret, digest_size=8).digest()

    def _forget(self, window: int) -> None:
        self._current = window
        self._made.clear()
        self._good.clear()

    def make(self, address: bytes, now: float) -> bytes:
        """An ID for a client at `address` (any bytes naming it, e.g. its packed ip+port)."""
        window = int(now // self.window)
        if window != self._current:
            self._forget(window)
        made = self._made.get(address)
        if made is None:
            made = self._mac(address, window)
            if len(self._made) >= self._REMEMBERED:
                self._made.clear()
            self._made[address] = made
        return made

    def check(self, connection_id: bytes, address: bytes, now: float) -> bool:
        window = int(now // self.window)
        if window != self._current:
            self._forget(window)
        known = self._made.get(address)
        if known is not None and hmac.compare_digest(known, connection_id):
            return True
        known = self._good.get(address)
        if known is not None and hmac.compare_digest(known, connection_id):
            return True
        for secret in (self.secret, self.previous):
            if secret is None:
                continue
            if hmac.compare_digest(connection_id, self._mac(address, window, secret)) or (
                hmac.compare_digest(connection_id, self._mac(address, window - 1, secret))
            ):
                if len(self._good) >= self._REMEMBERED:
                    self._good.clear()
                self._good[address] = connection_id
                return True
        return False


Answer = bytes | None | Coroutine[Any, Any, bytes | None]


class UdpTracker:
    """Answers BEP 15 datagrams from a store (a bare `SwarmStore` is served from memory);
    `serve` runs one socket."""

    def __init__(
        self,
        store: Store | SwarmStore,
        connection_ids: ConnectionIds | None = None,
        trust_ip_param: bool = False,
        access_log: bool = False,
        clock: Callable[[], float] = time.time,
        fast_path: bool = True,
    ) -> None:
        self.store: Store = MemoryStore(store) if isinstance(store, SwarmStore) else store
        # The in-memory store's own object, called directly on the announce fast path
        # (`fast_path=False`: every datagram the general way, the fast path's reference).
        # With an access log, every announce goes the general way, which writes it.
        self._swarms = (self.store.swarms
                        if fast_path and not access_log and isinstance(self.store, MemoryStore)
                        else None)
        self.ids = connection_ids or ConnectionIds()
        self.trust_ip_param = trust_ip_param
        self.access_log = access_log
        self.clock = clock
        self._raw_clients: dict[bytes, bytes] = {}  # raw sockaddr -> packed address

    @staticmethod
    def _client(source: tuple[Any, ...]) -> bytes | None:
        """The packed ip+port of a socket address, or None for one not to answer (a
        source port 0, an odd address). (`serve` reads raw addresses: `_raw_client`.)"""
        try:
            return compact_address.pack(source[0].partition("%")[0], source[1])
        except ValueError:
            return None

    async def handle(self, data: bytes, source: tuple[Any, ...]) -> bytes | None:
        """The reply to one datagram from `source` (a socket address), or None to drop it."""
        answer = self.start(data, source)
        if answer is None or isinstance(answer, bytes):
            return answer
        return await answer

    def start(self, data: bytes, source: tuple[Any, ...]) -> Answer:
        """The reply to one datagram, or, when the store's answer is still on its way, a
        coroutine that gives it: the serve loop starts a whole batch before awaiting."""
        client = self._client(source)
        if client is None:
            return None  # a source port 0 or an odd address: nothing to answer to
        return self.answer(data, client, self.clock())

    def _raw_client(self, raw: bytes) -> bytes | None:
        """`_client` of a raw `sockaddr` (what `recvmmsg` gives)."""
        client = self._raw_clients.get(raw)
        if client is None:
            if raw[2:4] == b"\0\0":
                return None
            ip = raw[4:8] if len(raw) == 16 else raw[8:24]
            if ip[:12] == _V4_MAPPED:
                ip = ip[12:]
            client = ip + raw[2:4]
            if len(self._raw_clients) >= _CLIENTS:
                self._raw_clients.clear()
            self._raw_clients[raw] = client
        return client

    def answer(self, data: bytes, client: bytes, now: float) -> Answer:
        """`start` for a client known by its packed address, at `now`."""
        action = data[8:12]
        if action == _ANNOUNCE_ACTION and len(data) >= ANNOUNCE_SIZE:
            answer = self._fast_announce(data, client, now)
            if answer is not None:
                return answer
        elif action == _CONNECT_ACTION and data[:8] == PROTOCOL_ID_BYTES and len(data) >= 16:
            return _CONNECT_ACTION + data[12:16] + self.ids.make(client, now)
        try:
            request = decode_request(data)
        except MalformedPacket as exc:
            self.store.count_error("udp_malformed")
            return None if exc.txid is None else encode_error(exc.txid, exc.reason)
        txid = request.txid
        if isinstance(request, ConnectRequest):
            return encode_connect(txid, self.ids.make(client, now))
        if not self.ids.check(request.connection_id, client, now):
            self.store.count_error("udp_connection_id")
            return encode_error(txid, "bad connection id")
        try:
            if isinstance(request, AnnounceRequest):
                return self._announce(request, client, now)
            pending = self.store.scrape(request.info_hashes, now, protocol="udp")
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return encode_error(txid, exc.reason)
        if isinstance(pending, Ready):
            return self._scraped(txid, request.info_hashes, pending.value)
        return self._scrape_later(txid, request.info_hashes, pending)

    def _scraped(self, txid: bytes, hashes: list[bytes], files: dict[bytes, ScrapeEntry]
                 ) -> bytes:
        return encode_scrape(txid, [files[h] for h in hashes])

    async def _scrape_later(self, txid: bytes, hashes: list[bytes],
                            pending: Awaitable[dict[bytes, ScrapeEntry]]) -> bytes:
        try:
            return self._scraped(txid, hashes, await pending)
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return encode_error(txid, exc.reason)

    def _fast_announce(self, data: bytes, client: bytes, now: float) -> bytes | None:
        """An announce answered from the in-memory store without a request object:
        None for anything but a well-formed IPv4 announce with a good connection
        ID from the in-memory store (the general path then decodes it, and answers
        errors, as ever)."""
        swarms = self._swarms
        if swarms is None or len(client) != 6:
            return None
        (connection_id, _, txid, info_hash, peer_id, downloaded, left, uploaded, code, ip,
         _, numwant, port) = _FAST_ANNOUNCE.unpack_from(data)
        event = UDP_EVENTS.get(code)
        if event is None or not port or downloaded < 0 or left < 0 or uploaded < 0:
            return None
        if not self.ids.check(connection_id, client, now):
            return None
        if self.trust_ip_param and ip != b"\0\0\0\0":
            compact = ip + _PORTS[port]
        else:
            compact = client[:4] + _PORTS[port]
        try:
            peers4, _, _, _, complete, incomplete = swarms.announce_checked(
                info_hash, peer_id, compact, left, event, numwant, now, "udp", WANT_V4)
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return encode_error(txid, exc.reason)
        return _ANNOUNCE_ANSWER.pack(_ANNOUNCE_CODE, txid, min(swarms.interval, _U32),
                                     min(incomplete, _U32), min(complete, _U32)) + peers4

    def _announce(self, request: AnnounceRequest, client: bytes, now: float) -> Answer:
        v6 = len(client) == 18
        address = client[:-2]
        if self.trust_ip_param and not v6 and request.ip != b"\0\0\0\0":
            address = request.ip
        numwant = request.numwant
        if v6 and (numwant < 0 or numwant > MAX_PEERS6):
            numwant = min(MAX_PEERS6, 50 if numwant < 0 else numwant)
        compact = address + request.port.to_bytes(2, "big")
        pending = self.store.announce(
            request.info_hash, request.peer_id, "", request.port, request.uploaded,
            request.downloaded, request.left, request.event, numwant, now,
            protocol="udp", families=WANT_V6 if v6 else WANT_V4, compact=compact,
        )
        if self.access_log:
            ip, port = compact_address.unpack(client)
            access_log.info("%s:%d udp announce %s %s", ip, port, request.info_hash.hex(),
                            request.event or "-")
        if isinstance(pending, Ready):
            return self._announced(request.txid, v6, pending.value)
        return self._announce_later(request.txid, v6, pending)

    @staticmethod
    def _announced(txid: bytes, v6: bool, result: Outcome) -> bytes:
        return encode_announce(txid, result.interval, result.incomplete, result.complete,
                               result.compact6() if v6 else result.compact4())

    async def _announce_later(self, txid: bytes, v6: bool, pending: Awaitable[Outcome]
                              ) -> bytes:
        try:
            return self._announced(txid, v6, await pending)
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return encode_error(txid, exc.reason)

    async def serve(
        self,
        sock: trio.socket.SocketType,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive and answer datagrams until cancelled.

        Each wakeup reads up to `_BATCH` datagrams in one `recvmmsg` and sends their
        answers in one `sendmmsg` (`tracker.datagrams`): a trio socket call per datagram
        costs a trip through the scheduler, and even a plain one costs more in Python's
        wrappers than the announce. Answers that wait on the store (Redis) are collected
        by a task per batch, so that reading goes on meanwhile; at most `_IN_FLIGHT`
        batches wait at once (then reading waits: the kernel's buffer, then dropped
        datagrams, are the back-pressure).
        """
        raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())  # detached below
        raw.setblocking(False)
        batch = DatagramBatch(raw, _BATCH, _MAX_DATAGRAM)
        clients = self._raw_clients
        in_flight = trio.Semaphore(_IN_FLIGHT)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(raw)
                    try:
                        received = batch.receive()
                    except OSError:  # e.g. an ICMP error from an earlier reply
                        continue
                    later: list[tuple[Coroutine[Any, Any, bytes | None], bytes]] = []
                    unsent: list[tuple[bytes, bytes]] = []
                    now = self.clock()
                    for i, (data, source) in enumerate(received):
                        client = clients.get(source) or self._raw_client(source)
                        if client is None:
                            continue  # a source port 0: nothing to answer to
                        try:
                            reply = self.answer(data, client, now)
                        except Exception:  # a bug must not take the tracker down
                            log.exception("error handling a datagram from %s",
                                          sockaddr_tuple(source))
                            continue
                        if reply is None:
                            continue
                        if isinstance(reply, bytes):
                            if not batch.queue(reply, i):
                                unsent.append((reply, source))
                        else:
                            later.append((reply, source))
                    unsent += batch.flush()
                    for reply, source in unsent:
                        await _send_when_possible(sock, reply, source)
                    if later:
                        await in_flight.acquire()
                        nursery.start_soon(self._finish_batch, later, sock, raw, in_flight)
        finally:
            raw.detach()

    async def _finish_batch(
        self, later: list[tuple[Coroutine[Any, Any, bytes | None], bytes]],
        sock: trio.socket.SocketType, raw: socket.socket, in_flight: trio.Semaphore,
    ) -> None:
        """Await a batch's answers from the store (they travelled together) and send them."""
        started = 0
        try:
            for pending, source in later:
                started += 1
                try:
                    reply = await pending
                except Exception:
                    log.exception("error handling a datagram from %s", sockaddr_tuple(source))
                    continue
                if reply is None:
                    continue
                try:
                    raw.sendto(reply, sockaddr_tuple(source))
                except BlockingIOError:
                    await _send_when_possible(sock, reply, source)
                except OSError:
                    pass
        finally:
            in_flight.release()
            for pending, _ in later[started:]:  # cancelled: answers never awaited
                pending.close()


async def _send_when_possible(sock: trio.socket.SocketType, reply: bytes, source: bytes
                              ) -> None:
    """Send `reply` to the raw `sockaddr` `source` once the kernel takes it."""
    try:
        await sock.sendto(reply, sockaddr_tuple(source))
    except OSError:
        pass


def open_udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound UDP socket (the IPv6 wildcard also takes IPv4); raises OSError.
    `reuse_port`: SO_REUSEPORT, for workers sharing the port (the kernel spreads the
    clients over them).

    A plain socket, so that it can be made before trio runs; `serve` takes it wrapped
    with ``trio.socket.from_stdlib_socket``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
