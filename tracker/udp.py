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
import time
from collections.abc import Callable
from typing import Any

import trio

from btfs.trackerwire import compact as compact_address
from btfs.trackerwire.bep15 import (
    AnnounceRequest,
    ConnectRequest,
    MalformedPacket,
    decode_request,
    encode_announce,
    encode_connect,
    encode_error,
    encode_scrape,
)
from tracker.errors import RequestError
from tracker.swarms import WANT_V4, WANT_V6, SwarmStore

log = logging.getLogger("tracker.udp")
access_log = logging.getLogger("tracker.access")

MAX_PEERS6 = 66  # 20 + 66 * 18 bytes stays below IPv6's safe 1232-byte payload
_MAX_DATAGRAM = 2048
_BATCH = 64  # datagrams answered per wakeup before other tasks get a turn


class ConnectionIds:
    """Stateless connection IDs: 8 bytes of a keyed BLAKE2b over the client's address and
    the current time window, under a random per-process secret. An ID is accepted in the
    window it was made in and the next one, so it lives one to two windows."""

    def __init__(self, secret: bytes | None = None, window: float = 60.0) -> None:
        self.secret = secret if secret is not None else os.urandom(32)
        self.window = window

    def _mac(self, address: bytes, window: int) -> bytes:
        msg = window.to_bytes(8, "big", signed=True) + address
        return hashlib.blake2b(msg, key=self.secret, digest_size=8).digest()

    def make(self, address: bytes, now: float) -> bytes:
        """An ID for a client at `address` (any bytes naming it, e.g. its packed ip+port)."""
        return self._mac(address, int(now // self.window))

    def check(self, connection_id: bytes, address: bytes, now: float) -> bool:
        window = int(now // self.window)
        return hmac.compare_digest(connection_id, self._mac(address, window)) or (
            hmac.compare_digest(connection_id, self._mac(address, window - 1))
        )


class UdpTracker:
    """Answers BEP 15 datagrams from a `SwarmStore`; `serve` runs one socket."""

    def __init__(
        self,
        store: SwarmStore,
        connection_ids: ConnectionIds | None = None,
        trust_ip_param: bool = False,
        access_log: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ids = connection_ids or ConnectionIds()
        self.trust_ip_param = trust_ip_param
        self.access_log = access_log
        self.clock = clock

    def handle(self, data: bytes, source: tuple[Any, ...]) -> bytes | None:
        """The reply to one datagram from `source` (a socket address), or None to drop it."""
        try:
            client = compact_address.pack(source[0].partition("%")[0], source[1])
        except ValueError:
            return None  # a source port 0 or an odd address: nothing to answer to
        try:
            request = decode_request(data)
        except MalformedPacket as exc:
            self.store.count_error("udp_malformed")
            return None if exc.txid is None else encode_error(exc.txid, exc.reason)
        txid = request.txid
        now = self.clock()
        if isinstance(request, ConnectRequest):
            return encode_connect(txid, self.ids.make(client, now))
        if not self.ids.check(request.connection_id, client, now):
            self.store.count_error("udp_connection_id")
            return encode_error(txid, "bad connection id")
        try:
            if isinstance(request, AnnounceRequest):
                return self._announce(request, client, now)
            files = self.store.scrape(request.info_hashes, protocol="udp")
            return encode_scrape(txid, [files[h] for h in request.info_hashes])
        except RequestError as exc:
            self.store.count_error(exc.kind)
            return encode_error(txid, exc.reason)

    def _announce(self, request: AnnounceRequest, client: bytes, now: float) -> bytes:
        v6 = len(client) == 18
        address = client[:-2]
        if self.trust_ip_param and not v6 and request.ip != b"\0\0\0\0":
            address = request.ip
        numwant = request.numwant
        if v6 and (numwant < 0 or numwant > MAX_PEERS6):
            numwant = min(MAX_PEERS6, 50 if numwant < 0 else numwant)
        compact = address + request.port.to_bytes(2, "big")
        result = self.store.announce(
            request.info_hash, request.peer_id, "", request.port, request.uploaded,
            request.downloaded, request.left, request.event, numwant, now,
            protocol="udp", families=WANT_V6 if v6 else WANT_V4, compact=compact,
        )
        if self.access_log:
            ip, port = compact_address.unpack(client)
            access_log.info("%s:%d udp announce %s %s", ip, port, request.info_hash.hex(),
                            request.event or "-")
        peers = result.peers6 if v6 else result.peers4
        return encode_announce(
            request.txid, result.interval, result.incomplete, result.complete,
            b"".join([p.compact for p in peers]),
        )

    async def serve(
        self,
        sock: trio.socket.SocketType,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive and answer datagrams until cancelled.

        Datagrams are read and answered with plain non-blocking calls on the socket, up
        to `_BATCH` per wakeup: a trio socket call per datagram costs a trip through the
        scheduler, several times the work of an announce.
        """
        raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())  # detached below
        raw.setblocking(False)
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(raw)
                for _ in range(_BATCH):
                    try:
                        data, source = raw.recvfrom(_MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except OSError:  # e.g. an ICMP error from an earlier reply
                        continue
                    try:
                        reply = self.handle(data, source)
                    except Exception:  # a bug must not take the tracker down
                        log.exception("error handling a datagram from %s", source)
                        continue
                    if reply is not None:
                        try:
                            raw.sendto(reply, source)
                        except BlockingIOError:  # the send buffer is full: wait for room
                            try:
                                await sock.sendto(reply, source)
                            except OSError:
                                pass
                        except OSError:
                            pass
        finally:
            raw.detach()


def open_udp_socket(host: str, port: int) -> socket.socket:
    """A bound UDP socket (the IPv6 wildcard also takes IPv4); raises OSError.

    A plain socket, so that it can be made before trio runs; `serve` takes it wrapped
    with ``trio.socket.from_stdlib_socket``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
