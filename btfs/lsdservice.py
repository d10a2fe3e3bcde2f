"""Local service discovery's trio shell: the multicast sockets around `btfs.lsd.LsdCore`.

One UDP socket per address family, bound to the BEP 14 group and port, member of the
group on one interface, looping our datagrams back (other processes on this host hear
them: two btfs on one machine find each other). The interface is the `--bind` address
when it is an IPv4 one (announces then leave from it, so peers dial the address we
listen on), else `$BTFS_LSD_INTERFACE` (an IPv4 address; the tests use `127.0.0.1`), else
the system's choice; IPv6 only when neither is set. `$BTFS_LSD_PORT` moves the group's
port (tests keep to their own). A host where a family has no multicast route runs
without it: one line in the log, never an error.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from btfs.lsd import GROUP_V4, GROUP_V6, PORT, Address, LsdCore

log = logging.getLogger(__name__)

INTERFACE_ENV = "BTFS_LSD_INTERFACE"
PORT_ENV = "BTFS_LSD_PORT"
RECEIVE_SIZE = 2048


@dataclass
class _Channel:
    """One family's socket and where its announces go."""

    sock: trio.socket.SocketType
    group: str
    host_header: str


def settings(bind: str | None) -> tuple[str | None, bool, int]:
    """(IPv4 interface address or None for the system's, whether to try IPv6, port)."""
    port = PORT
    text = os.environ.get(PORT_ENV, "")
    if text.isdigit() and 0 < int(text) < 65536:
        port = int(text)
    interface = os.environ.get(INTERFACE_ENV) or None
    ipv6 = interface is None
    if bind:
        try:
            address = ipaddress.ip_address(bind)
        except ValueError:
            address = None
        if address is not None and not address.is_unspecified:
            # Announces must come from the address we listen on.
            if address.version == 4:
                return bind, False, port
            return None, False, port  # an IPv6 --bind: no interface to pick by address
    return interface, ipv6, port


async def _open_v4(interface: str | None, port: int) -> _Channel:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind((GROUP_V4, port))
        local = socket.inet_aton(interface or "0.0.0.0")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(GROUP_V4) + local)
        if interface:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    except OSError:
        sock.close()
        raise
    return _Channel(sock, GROUP_V4, f"{GROUP_V4}:{port}")


async def _open_v6(port: int) -> _Channel:
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((GROUP_V6, port))
        mreq = socket.inet_pton(socket.AF_INET6, GROUP_V6) + (0).to_bytes(4, "little")
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    except OSError:
        sock.close()
        raise
    return _Channel(sock, GROUP_V6, f"[{GROUP_V6}]:{port}")


async def open_channels(bind: str | None) -> tuple[list[_Channel], int]:
    """The families that work here, and the group's port; one line in the log when none
    does (a host with no multicast route), a debug line for a family that does not."""
    interface, ipv6, port = settings(bind)
    channels = []
    failed = []
    try:
        channels.append(await _open_v4(interface, port))
    except OSError as exc:
        failed.append(f"IPv4 ({interface or 'default interface'}): {exc.strerror or exc}")
    if ipv6 and socket.has_ipv6:
        try:
            channels.append(await _open_v6(port))
        except OSError as exc:
            failed.append(f"IPv6: {exc.strerror or exc}")
    if failed:
        log.log(logging.DEBUG if channels else logging.INFO,
                "local peer discovery off on %s", "; ".join(failed))
    return channels, port


class LsdService:
    """The process's local discovery: one set of sockets for every torrent of a mount (a
    library of a thousand torrents must not open a thousand), each torrent's peers to its
    own callback."""

    def __init__(self, listen_port: int, *, bind: str | None = None) -> None:
        self.listen_port = listen_port
        self.bind = bind
        self.core = LsdCore([], secrets.token_hex(8), 0.0)
        self.torrents: dict[bytes, Callable[[list[Address]], None]] = {}
        self._service: _Service | None = None

    def register(self, info_hash: bytes, on_peers: Callable[[list[Address]], None]) -> None:
        self.torrents[info_hash] = on_peers
        self.core.add(info_hash, trio.current_time())
        if self._service is not None:
            self._service.wake.set()

    def unregister(self, info_hash: bytes) -> None:
        self.torrents.pop(info_hash, None)
        self.core.remove(info_hash)

    def _heard(self, peer: Address, info_hashes: list[bytes]) -> None:
        for info_hash in info_hashes:
            on_peers = self.torrents.get(info_hash)
            if on_peers is not None:
                on_peers([peer])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Announce the registered torrents and hear others until cancelled; starts at
        once (without sockets, and so without LSD, where multicast does not work)."""
        channels, port = await open_channels(self.bind)
        task_status.started()
        if not channels:
            return
        self.core.next_announce = trio.current_time()
        self._service = _Service(self.core, channels, self.listen_port, port, self._heard)
        try:
            async with trio.open_nursery() as nursery:
                for channel in channels:
                    nursery.start_soon(self._service.receive, channel)
                await self._service.announce()
        finally:
            for channel in channels:
                channel.sock.close()


async def run_lsd(info_hash: bytes, listen_port: int, on_peers: Callable[[list[Address]], None],
                  *, bind: str | None = None) -> None:
    """Announce `info_hash` and pass on the peers announcing it, until cancelled."""
    service = LsdService(listen_port, bind=bind)
    service.register(info_hash, on_peers)
    await service.run()


class _Service:
    def __init__(self, core: LsdCore, channels: list[_Channel], listen_port: int, port: int,
                 on_heard: Callable[[Address, list[bytes]], None]) -> None:
        self.core = core
        self.senders = list(channels)
        self.listen_port = listen_port
        self.port = port
        self.on_heard = on_heard
        self.wake = trio.Event()

    async def announce(self) -> None:
        core = self.core
        while True:
            now = trio.current_time()
            if core.announce_due(now) and core.info_hashes:
                for channel in list(self.senders):
                    for message in core.messages(channel.host_header, self.listen_port):
                        try:
                            await channel.sock.sendto(message, (channel.group, self.port))
                        except OSError as exc:
                            # No route to the group (no multicast route, a network gone):
                            # that family stops announcing; hearing others goes on.
                            log.info("local peer discovery cannot announce to %s: %s",
                                     channel.group, exc.strerror or exc)
                            self.senders.remove(channel)
                            break
                core.announced(now)
            self.wake = trio.Event()
            wait = core.wait(trio.current_time()) if core.info_hashes else float("inf")
            with trio.move_on_after(wait):
                await self.wake.wait()  # a newcomer heard, or a torrent added

    async def receive(self, channel: _Channel) -> None:
        while True:
            try:
                data, source = await channel.sock.recvfrom(RECEIVE_SIZE)
            except OSError as exc:
                log.debug("local peer discovery: %s", exc)
                await trio.sleep(1)
                continue
            heard = self.core.receive_for(data, source[0], trio.current_time())
            if heard is not None:
                log.info("local peer discovery: %s:%d", *heard[0])
                self.on_heard(*heard)
                self.wake.set()
