"""The DHT's trio shell: UDP sockets on the peer port, the node cores, lookups for swarms.

One `DhtService` per process: a `DhtNode` per address family (IPv4, and IPv6 where the
machine has it and `bind` allows), each on a UDP socket bound to the same port as the TCP
peer listener (BEP 5: the port a PORT message names). Every datagram goes to the node's
`receive`; `tick` runs when `next_tick` says; what they return is sent. Lookups wait on
an event set after every datagram, so a swarm learns each peer as its answer arrives.

The nodes of the last run are saved to `state_path` when the service stops and loaded
when it starts, so a restart rejoins without the public routers. Our node id is not: the
processes of one user share the file, and two nodes with one id would not see each other.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import trio

from btfs import bencode
from btfs.dht import krpc
from btfs.dht.krpc import Address
from btfs.dht.node import DhtNode, Outgoing, Search
from btfs.errors import BencodeError

log = logging.getLogger(__name__)

# The routers other clients bootstrap from (libtorrent, Transmission, uTorrent).
DEFAULT_ROUTERS = (
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
)
ROUTERS_ENV = "BTFS_DHT_ROUTERS"   # replaces DEFAULT_ROUTERS: comma-separated HOST:PORT
LOOKUP_WAIT = 30.0                 # a lookup gives up after this long
RESOLVE_WAIT = 10.0                # a router's name must resolve within this
MAX_SAVED_NODES = 200


def default_routers() -> list[str]:
    """DEFAULT_ROUTERS, or `$BTFS_DHT_ROUTERS` (comma-separated; empty: none)."""
    value = os.environ.get(ROUTERS_ENV)
    if value is None:
        return list(DEFAULT_ROUTERS)
    return [part.strip() for part in value.split(",") if part.strip()]


def default_state_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "btfs" / "dht-nodes"


def split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class DhtService:
    """The process's DHT node(s) on UDP, for every swarm (and magnet) of the process."""

    def __init__(self, routers: Sequence[str] | None, *, state_path: Path | None = None,
                 rng: random.Random | None = None) -> None:
        """`routers`: HOST:PORT to join through; None: `default_routers()`."""
        self.routers = list(routers) if routers is not None else default_routers()
        self.state_path = state_path
        self.rng = rng or random.Random()
        self.nodes: dict[int, DhtNode] = {}
        self.port = 0
        self._sockets: dict[int, trio.socket.SocketType] = {}
        self._changed = trio.Event()
        self._wake = trio.Event()
        self._joining = trio.Event()   # set once the routers are known (or not found)
        self.running = False

    # What swarms and status use ----------------------------------------------------------------

    @property
    def nodes_known(self) -> int:
        """Nodes in the routing tables (all families)."""
        return sum(len(node.table) for node in self.nodes.values())

    async def lookup(self, info_hash: bytes, on_peers: Callable[[list[Address]], None], *,
                     announce_port: int | None = None, wait: float = LOOKUP_WAIT) -> int:
        """get_peers for `info_hash` on every family (and announce_peer with
        `announce_port`); each peer goes to `on_peers` as it is found. Returns how many."""
        if not self.nodes:
            return 0
        with trio.move_on_after(RESOLVE_WAIT):
            await self._joining.wait()  # a lookup seeded by the routers, not by nobody
        now = trio.current_time()
        searches: list[Search] = []
        for node in self.nodes.values():
            if announce_port:
                searches.append(node.announce(info_hash, announce_port, now))
            else:
                searches.append(node.get_peers(info_hash, now))
        self._wake.set()
        found = 0
        with trio.move_on_after(wait):
            while True:
                for search in searches:
                    peers = search.take_peers()
                    if peers:
                        found += len(peers)
                        on_peers(peers)
                if all(search.done for search in searches):
                    break
                changed = self._changed
                with trio.move_on_after(1.0):
                    await changed.wait()
        return found

    def add_node(self, address: Address) -> None:
        """A node we heard of (a peer's PORT message): pinged, kept if it answers."""
        node = self.nodes.get(6 if ":" in address[0] else 4)
        if node is not None:
            node.add_node(address, trio.current_time())
            self._wake.set()

    # Running ------------------------------------------------------------------------------------

    async def run(self, bind: str | None, port: int, *,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the sockets on `port` (UDP), join, and serve until cancelled; then save
        the nodes. Starts (with the port) even if no socket could be opened: the DHT is
        then off, with one line in the log saying why."""
        saved = self._load()
        node_id: int | None = None
        now = trio.current_time()
        families = [4, 6] if bind is None else [6 if ":" in bind else 4]
        for family in families:
            try:
                sock = await _open_socket(family, bind, port)
            except OSError as exc:
                level = logging.DEBUG if family == 6 and bind is None else logging.WARNING
                log.log(level, "DHT: no IPv%d UDP socket on port %d: %s", family, port,
                        exc.strerror or exc)
                continue
            self._sockets[family] = sock
            self.nodes[family] = DhtNode(random.Random(self.rng.getrandbits(64)), now,
                                         node_id=node_id, family=family)
            node_id = self.nodes[family].id   # BEP 32: one id for both families
        if not self.nodes:
            task_status.started(port)
            return
        self.port = port
        try:
            async with trio.open_nursery() as nursery:
                for family, node in self.nodes.items():
                    if saved.get(family):
                        node.bootstrap(saved[family], now)
                    nursery.start_soon(self._receive_loop, family)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._join_through_routers, saved)
                self.running = True
                log.info("DHT: node on UDP port %d (%s), %d saved nodes", port,
                         "+".join(f"IPv{f}" for f in self.nodes),
                         sum(len(v) for v in saved.values()))
                task_status.started(port)
                await trio.sleep_forever()
        finally:
            self.running = False
            self._save()
            for sock in self._sockets.values():
                sock.close()

    async def _join_through_routers(self, saved: dict[int, list[Address]]) -> None:
        """Resolve the routers (in the background: a slow name server must not hold up
        the swarm) and join through them and the saved nodes."""
        try:
            routers = await self._resolve(self.routers)
        finally:
            self._joining.set()
        now = trio.current_time()
        for family, node in self.nodes.items():
            contacts = saved.get(family, []) + routers.get(family, [])
            if routers.get(family):
                node.bootstrap(contacts, now)
        self._wake.set()
        log.info("DHT: %d routers", sum(len(v) for v in routers.values()))

    async def _resolve(self, routers: Iterable[str]) -> dict[int, list[Address]]:
        """The routers' addresses by family, looked up at once; a name that does not
        resolve within `RESOLVE_WAIT` is logged and left out."""
        result: dict[int, list[Address]] = {4: [], 6: []}

        async def one(text: str) -> None:
            try:
                host, port = split_host_port(text)
            except ValueError as exc:
                log.warning("DHT: ignoring bootstrap node %s", exc)
                return
            try:
                with trio.fail_after(RESOLVE_WAIT):
                    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except (OSError, trio.TooSlowError) as exc:
                log.info("DHT: bootstrap node %s not found: %s", text, exc)
                return
            for family, _, _, _, sockaddr in infos:
                key = 6 if family == socket.AF_INET6 else 4
                address = (str(sockaddr[0]), int(sockaddr[1]))
                if key in self.nodes and address not in result[key]:
                    result[key].append(address)

        async with trio.open_nursery() as nursery:
            for text in routers:
                nursery.start_soon(one, text)
        return result

    async def _receive_loop(self, family: int) -> None:
        sock = self._sockets[family]
        node = self.nodes[family]
        while True:
            try:
                data, sockaddr = await sock.recvfrom(65536)
            except OSError as exc:   # e.g. ICMP port unreachable reported on Linux
                log.debug("DHT: receive: %s", exc)
                continue
            host = str(sockaddr[0])
            if family == 6 and host.startswith("::ffff:"):
                continue
            await self._send(family, node.receive(data, (host, int(sockaddr[1])),
                                                  trio.current_time()))
            self._notify()

    async def _tick_loop(self) -> None:
        while True:
            now = trio.current_time()
            for family, node in self.nodes.items():
                await self._send(family, node.take_outgoing() + node.tick(now))
            self._notify()
            due = min(node.next_tick(now) for node in self.nodes.values())
            self._wake = trio.Event()
            with trio.move_on_at(max(due, now + 0.01)):
                await self._wake.wait()

    async def _send(self, family: int, outgoing: list[Outgoing]) -> None:
        sock = self._sockets[family]
        for out in outgoing:
            try:
                await sock.sendto(out.data, out.address)
            except OSError as exc:
                if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPERM,
                                     errno.EAFNOSUPPORT, errno.EINVAL):
                    log.debug("DHT: send to %s:%d: %s", *out.address, exc)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # Saved nodes --------------------------------------------------------------------------------

    def _load(self) -> dict[int, list[Address]]:
        """The saved nodes by family; nothing if the file is missing or not ours."""
        if self.state_path is None:
            return {}
        try:
            data = bencode.decode(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, BencodeError) as exc:
            log.info("DHT: ignoring the saved nodes in %s: %s", self.state_path, exc)
            return {}
        if not isinstance(data, dict):
            return {}
        saved: dict[int, list[Address]] = {}
        for family, key, size in ((4, b"nodes", 6), (6, b"nodes6", 18)):
            blob = data.get(key)
            if isinstance(blob, bytes) and len(blob) % size == 0:
                saved[family] = [krpc.unpack_address(blob[i:i + size])
                                 for i in range(0, min(len(blob), MAX_SAVED_NODES * size), size)]
        return saved

    def _save(self) -> None:
        """Write the good nodes (most recently seen first); atomically."""
        if self.state_path is None or not self.nodes:
            return
        now = trio.current_time()
        state: dict[bytes, bytes] = {}
        for family, node in self.nodes.items():
            good = sorted(node.table.nodes(), key=lambda n: -n.last_seen)
            addresses = [n.address for n in good if n.good(now)]
            if addresses:
                state[b"nodes" if family == 4 else b"nodes6"] = b"".join(
                    krpc.pack_address(a) for a in addresses[:MAX_SAVED_NODES])
        if not state:
            return          # nothing learnt: keep what an earlier run saved
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
            tmp.write_bytes(bencode.encode(state))
            tmp.replace(self.state_path)
        except OSError as exc:
            log.info("DHT: cannot save the nodes to %s: %s", self.state_path, exc)


async def _open_socket(family: int, bind: str | None, port: int) -> trio.socket.SocketType:
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    sock = trio.socket.socket(af, socket.SOCK_DGRAM)
    try:
        if family == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((bind or ("::" if family == 6 else "0.0.0.0"), port))
    except BaseException:
        sock.close()
        raise
    return sock
