"""Many torrents in one mount: one process, one listening port, one choker, one cache.

A `Library` holds the torrents of a mount, each with its own session (`Torrent`), swarm
(peers, picker, tracker session) and cache folder (`CACHE/INFO-HASH`, locked while in
use). What they share: the peer id, the listening port (an incoming connection is handed
to the swarm of the info-hash it asks for), the rate limits, one rechoke over every
peer of every torrent (the upload slots are global), and, with a size limit, one
bounded cache (`CacheSpace` over `btfs.cachebudget`).

Torrents come and go while mounted (`add`, `remove`): the filesystem shows each as a
folder (`LibraryView`); a removed torrent leaves the tree at once and its session stops
when the last of its open files closes. A mount of one source is a library of one
shown flat (its files at the top), which refuses `add` and `remove`.

This is the API the mount's control socket (`btfs.control`), the watched folder and an
HTTP front end use: `entries`, `get`, `find`, `add`, `remove`, `status`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from btfs import dial
from btfs.cachebudget import CacheBudget, kept_order
from btfs.cachelock import LOCK_NAME, lock_folder
from btfs.choker import Choker, PeerRates
from btfs.dht.service import DhtService
from btfs.errors import BtfsError
from btfs.lsdservice import LsdService
from btfs.magnet import Magnet
from btfs.metainfo import Metainfo, fit_name
from btfs.rates import TokenBucket
from btfs.storage import ResumeLog, Storage, adopt_named_data
from btfs.swarm import RECHOKE_INTERVAL, SharedNetwork, Swarm, SwarmConfig, make_peer_id
from btfs.swarm import open_listeners as open_peer_listeners
from btfs.torrent import Torrent

if TYPE_CHECKING:
    from btfs.metadata import MetadataSearch

log = logging.getLogger(__name__)

TRACKER_GOODBYE = 1.5
MAGNET_TIMEOUT = 180.0  # how long adding a magnet waits for its metadata (--metadata-timeout)


class LibraryError(BtfsError):
    """A request the library refuses (a duplicate, an unknown name, a flat mount)."""


def default_cache_dir(info_hash_hex: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "btfs" / info_hash_hex


def unique_name(name: str, taken: Iterable[str]) -> str:
    """`name`, or `name (2)`, `name (3)`... the first not in `taken`."""
    used = set(taken)
    base = fit_name(name)
    if base not in used:
        return base
    n = 2
    while True:
        candidate = fit_name(f"{name} ({n})")
        if candidate not in used:
            return candidate
        n += 1


@dataclass
class LibraryOptions:
    """What every torrent of a mount shares."""

    cache_root: Path | None = None  # each torrent's cache is CACHE_ROOT/INFO-HASH
    keep: bool = False
    readahead: int = 8 << 20
    network: SwarmConfig = field(default_factory=SwarmConfig)
    cache_size: int = 0  # bytes; 0: unbounded
    flat: bool = False  # one torrent, its files at the top (no add or remove)
    metadata_timeout: float = MAGNET_TIMEOUT  # a magnet added to the running mount
    log_where: str = ""  # where the mount logs, shown by `btfs status` (xattr `log`)


@dataclass
class Entry:
    """One torrent of the library."""

    meta: Metainfo
    name: str
    torrent: Torrent
    swarm: Swarm
    storage: Storage
    resume: ResumeLog
    cache_dir: Path
    lock_fd: int
    origin: Path | None = None  # the file of a watched folder it came from
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    closed: trio.Event = field(default_factory=trio.Event)

    @property
    def info_hash_hex(self) -> str:
        return self.meta.info_hash_hex

    def status(self) -> dict[str, Any]:
        torrent, swarm = self.torrent, self.swarm
        stats = swarm.stats()
        size = self.meta.info.total_length
        have = torrent.verified_bytes
        out: dict[str, Any] = {
            "name": self.name,
            "info_hash": self.info_hash_hex,
            "size": size,
            "progress": round(have / size, 4) if size else 1.0,
            "pieces": self.meta.info.num_pieces,
            "pieces_verified": len(torrent.verified),
            "peers": int(stats["peers"]),
            "download_rate": int(stats["download_rate"]),
            "upload_rate": int(stats["upload_rate"]),
            "downloaded": torrent.counters.downloaded,
            "uploaded": torrent.counters.uploaded,
            "cache_bytes": have,
            "evicted_pieces": torrent.counters.evicted,
            "cache_dir": str(self.cache_dir),
        }
        if self.origin is not None:
            out["source"] = str(self.origin)
        if torrent.problem is not None:
            out["problem"] = torrent.problem
        return out


class LibraryView(Protocol):
    """Where the library's torrents are shown (the filesystem)."""

    def show(self, entry: Entry) -> None: ...

    def hide(self, entry: Entry) -> bool:
        """Take the torrent out of view; True if nothing of it is open any more."""
        ...


class CacheSpace:
    """The bounded cache of a mount: the trio shell around `CacheBudget` (the policy),
    shared by every torrent (`Torrent.cache`); evicts through the torrents."""

    def __init__(self, limit: int) -> None:
        self.budget: CacheBudget[tuple[int, int]] = CacheBudget(limit)
        self.owners: dict[int, Torrent] = {}

    @property
    def limit(self) -> int:
        return self.budget.limit

    @property
    def used(self) -> int:
        return self.budget.used

    def _pinned(self, key: tuple[int, int]) -> bool:
        owner = self.owners.get(key[0])
        if owner is None:
            return False
        return key[1] not in owner.verified or owner.pinned(key[1])  # unwritten: in flight

    async def adopt(self, torrent: Torrent, read_order: Iterable[int] = ()) -> None:
        """Count a torrent's verified pieces (restored from a kept cache) as read in
        `read_order` (the last mount's, least recent first); trim to the limit."""
        self.owners[id(torrent)] = torrent
        torrent.cache = self
        for piece in reversed(kept_order(torrent.verified, read_order)):
            self.budget.add((id(torrent), piece), torrent.info.piece_size(piece))
        await self._evict(self.budget.over_limit(0, self._pinned))

    def read_order(self, torrent: Torrent) -> list[int]:
        """The torrent's pieces in the cache, least recently read first."""
        key = id(torrent)
        return [piece for owner, piece in self.budget.stored() if owner == key]

    def forget(self, torrent: Torrent) -> None:
        key = id(torrent)
        for k in [k for k in self.budget.stored() if k[0] == key]:
            self.budget.remove(k)
        self.owners.pop(key, None)
        torrent.cache = None

    async def make_room(self, torrent: Torrent, piece: int, size: int) -> None:
        await self._evict(self.budget.make_room((id(torrent), piece), size, self._pinned))

    def dropped(self, torrent: Torrent, piece: int) -> None:
        self.budget.remove((id(torrent), piece))

    def read(self, torrent: Torrent, pieces: range) -> None:
        key = id(torrent)
        self.budget.read((key, p) for p in pieces)

    async def trim(self, *, pins: bool = True) -> None:
        """Evict what is over the limit (pieces pinned when they came may be free now);
        `pins=False` at shutdown, when no reader is left to keep anything."""
        pinned = self._pinned if pins else self._unwritten
        await self._evict(self.budget.over_limit(0, pinned))

    def _unwritten(self, key: tuple[int, int]) -> bool:
        owner = self.owners.get(key[0])
        return owner is not None and key[1] not in owner.verified

    async def free_up(self, size: int) -> bool:
        keys = self.budget.free(size, self._pinned)
        await self._evict(keys)
        return bool(keys)

    async def _evict(self, keys: list[tuple[int, int]]) -> None:
        """Unverify first (at once, before any await: no read may start on them), then
        punch their bytes out."""
        gone = [(self.owners[k[0]], k[1]) for k in keys if k[0] in self.owners]
        gone = [(owner, piece) for owner, piece in gone if owner.evict(piece)]
        if gone:
            log.debug("evicting %d piece(s) from the cache", len(gone))
        for owner, piece in gone:
            await owner.punch(piece)


class Library:
    """The torrents of one mount and what they share (see the module's docstring)."""

    def __init__(self, options: LibraryOptions) -> None:
        self.options = options
        self.peer_id = options.network.peer_id or make_peer_id()
        self.dht: DhtService | None = None  # one node for every torrent, on the peer port
        self.lsd: LsdService | None = None  # one set of multicast sockets for every torrent
        self.entries: dict[bytes, Entry] = {}  # by info-hash, in the order added
        self.closing: list[Entry] = []  # removed, waiting for their open files to close
        self.view: LibraryView | None = None
        self.cache = CacheSpace(options.cache_size) if options.cache_size > 0 else None
        net = options.network
        self.choker = Choker(slots=net.upload_slots)
        self.shared = SharedNetwork(
            port=0,
            download_bucket=TokenBucket(net.max_download_rate),
            upload_bucket=TokenBucket(net.max_upload_rate),
            rechoke_soon=self._rechoke_soon_set,
        )
        self._rechoke_soon = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.searches: dict[bytes, tuple[Magnet, MetadataSearch]] = {}  # magnets resolving
        self.locks: dict[bytes, int] = {}  # folders locked before the mount went to the background
        self.on_change: Callable[[], None] = lambda: None

    # The API --------------------------------------------------------------------------

    def get(self, info_hash: bytes) -> Entry | None:
        return self.entries.get(info_hash)

    def find(self, name_or_hash: str) -> Entry:
        """The torrent with this folder name or info-hash (hex, any case); LibraryError."""
        text = name_or_hash.strip()
        if len(text) == 40:
            try:
                found = self.entries.get(bytes.fromhex(text))
            except ValueError:
                found = None
            if found is not None:
                return found
        for entry in self.entries.values():
            if entry.name == text or entry.name == text.rstrip("/"):
                return entry
        raise LibraryError(f"no torrent named {name_or_hash!r} in this mount")

    async def add(self, source: Metainfo | Magnet, origin: Path | None = None) -> Entry:
        """Start a torrent's session and show it; its entry (`entry.name` is its folder).
        A magnet's metadata is fetched from peers first (up to its timeout)."""
        if self.options.flat and self.entries:
            raise LibraryError("this mount holds one torrent with its files at the top: "
                               "mount several sources or --watch DIR for a library")
        existing = self.entries.get(source.info_hash)
        if existing is not None:
            raise LibraryError(f"{existing.info_hash_hex} is already in this mount as "
                               f"{existing.name!r}")
        found: dict[tuple[str, int], str] = {}
        if isinstance(source, Magnet):
            meta, found = await self._metadata(source)
        else:
            meta = source
        existing = self.entries.get(meta.info_hash)  # added meanwhile
        if existing is not None:
            raise LibraryError(f"{meta.info_hash_hex} is already in this mount as "
                               f"{existing.name!r}")
        if any(e.meta.info_hash == meta.info_hash for e in self.closing):
            raise LibraryError(f"{meta.info_hash_hex} is being removed (files of it are "
                               "still open): add it again once they are closed")
        entry = await self._open(meta, origin)
        for address, found_by in found.items():
            entry.swarm.add_candidates([address], found_by)
        try:
            assert self._nursery is not None, "the library is not running"
            await self._nursery.start(self._run_swarm, entry)
            self.entries[meta.info_hash] = entry
            if self.view is not None:
                self.view.show(entry)
        except BaseException:
            self.entries.pop(meta.info_hash, None)
            with trio.CancelScope(shield=True):
                await self._close(entry, quiet=True)
            raise
        log.info("added %s (%s) as %r", meta.info.name, meta.info_hash_hex, entry.name)
        self.on_change()
        return entry

    async def remove(self, name_or_hash: str) -> tuple[Entry, bool]:
        """Take a torrent out of the mount; (its entry, whether it stopped already: else
        it stops when the last of its open files closes)."""
        if self.options.flat:
            raise LibraryError("this mount holds one torrent with its files at the top: "
                               "unmount it instead")
        entry = self.find(name_or_hash)
        return entry, await self.remove_entry(entry)

    async def remove_entry(self, entry: Entry) -> bool:
        del self.entries[entry.meta.info_hash]
        released = self.view.hide(entry) if self.view is not None else True
        log.info("removed %r (%s)%s", entry.name, entry.info_hash_hex,
                 "" if released else ": it stops when its open files close")
        self.on_change()
        if released:
            await self._close(entry)
        else:
            self.closing.append(entry)
        return released

    def released(self, entry: Entry) -> None:
        """The last open file of a removed torrent closed: stop it now."""
        if entry in self.closing and self._nursery is not None:
            self._nursery.start_soon(self._close_removed, entry)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "torrents": [e.status() for e in self.entries.values()],
            "listen_port": self.shared.port,
        }
        if self.closing:
            out["closing"] = [e.name for e in self.closing]
        if self.searches:
            out["resolving"] = [
                {"info_hash": magnet.info_hash_hex, "name": magnet.display_name or "",
                 "found": dict(search.found), "asked": search.asked,
                 "without_metadata": search.without, "summary": search.summary()}
                for magnet, search in self.searches.values()]
        if self.dht is not None:
            out["dht_nodes"] = self.dht.nodes_known
        if self.cache is not None:
            out["cache_size"] = self.cache.limit
            out["cache_used"] = self.cache.used
        return out

    # Running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for peers (one port for all), rechoke, run the swarms, until cancelled."""
        net = self.options.network
        try:
            listeners = await open_peer_listeners(net.bind, net.port)
        except OSError as exc:
            where = f"{net.bind or 'all addresses'} port {net.port}"
            raise BtfsError(f"cannot listen for peers on {where}: "
                            f"{exc.strerror or exc}") from None
        self.shared.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(trio.serve_listeners, self._serve_incoming, listeners)
            if net.lsd:
                self.lsd = LsdService(self.shared.port, bind=net.bind)
                await nursery.start(self.lsd.run)
            if net.dht:
                self.dht = DhtService(net.dht_routers, state_path=net.dht_state)
                await nursery.start(self.dht.run, net.bind, self.shared.port)
            nursery.start_soon(self._rechoke_loop)
            log.info("listening on port %d", self.shared.port)
            task_status.started(self.shared.port)

    async def close(self) -> None:
        """Stop every torrent (trackers told 'stopped' at once, bounded)."""
        entries = [*self.entries.values(), *self.closing]
        self.entries.clear()
        self.closing.clear()
        for entry in entries:
            entry.torrent.close()
        with trio.CancelScope(shield=True):
            if self.cache is not None and self.options.keep:
                await self.cache.trim(pins=False)  # the kept cache within its limit
            async with trio.open_nursery() as nursery:
                for entry in entries:
                    nursery.start_soon(self._close, entry)

    def close_torrents(self) -> None:
        """Fail every waiting read now (shutdown begins)."""
        for entry in [*self.entries.values(), *self.closing]:
            entry.torrent.close()

    async def _run_swarm(self, entry: Entry, *,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with entry.scope:
            try:
                await entry.swarm.run(task_status=task_status)
            except BtfsError as exc:  # one torrent's failure must not end the mount
                log.error("%s: %s", entry.name, exc)
        entry.closed.set()

    async def _serve_incoming(self, stream: trio.SocketStream) -> None:
        identities = {h: e.swarm.identity for h, e in self.entries.items()}
        accepted = await dial.accept(stream, identities)
        if accepted is None:
            return
        connection, us = accepted
        entry = self.entries.get(us.info_hash)
        if entry is None:  # removed during the handshake
            await dial.close_quietly(connection.stream)
            return
        await entry.swarm.adopt(connection)

    def _rechoke_soon_set(self) -> None:
        self._rechoke_soon.set()

    async def _rechoke_loop(self) -> None:
        while True:
            with trio.move_on_after(RECHOKE_INTERVAL):
                await self._rechoke_soon.wait()
            self._rechoke_soon = trio.Event()
            self.rechoke()
            await trio.sleep(0.2)

    def rechoke(self) -> None:
        """One choker over every torrent's peers: the upload slots are the mount's. A peer
        of a torrent we have whole is ranked by what we send it (seeding), others by what
        they send us (tit-for-tat)."""
        now = trio.current_time()
        rates, connections = [], {}
        for info_hash, entry in self.entries.items():
            complete = entry.torrent.complete
            for peer in entry.swarm.peers.values():
                key = info_hash + peer.peer_id
                connections[key] = peer
                rates.append(PeerRates(
                    peer_id=key, interested=peer.state.peer_interested,
                    download_rate=(peer.upload_meter if complete
                                   else peer.download_meter).value(now),
                    upload_rate=peer.upload_meter.value(now),
                    is_seed=peer.state.peer_is_seed))
        unchoke = self.choker.rechoke(now, rates, we_are_seed=False)
        for key, peer in connections.items():
            peer.set_choking(key not in unchoke)

    # Opening and closing one torrent -----------------------------------------------------

    async def _metadata(self, magnet: Magnet) -> tuple[Metainfo, dict[tuple[str, int], str]]:
        """The magnet's metadata, and the peers found meanwhile (for its swarm)."""
        from btfs.addresses import parse_peer
        from btfs.metadata import MetadataSearch, fetch_metadata

        net = self.options.network
        peers = list(net.peers)
        for text in magnet.peers:
            try:
                peers.append(parse_peer(text))
            except BtfsError:
                continue
        search = MetadataSearch()
        self.searches[magnet.info_hash] = (magnet, search)
        try:
            with trio.move_on_after(self.options.metadata_timeout):
                meta = await fetch_metadata(
                    magnet, self.peer_id, peers, port=self.shared.port, bind=net.bind,
                    use_trackers=net.trackers,
                    dht=self.dht if self.dht is not None and self.dht.running else None,
                    lsd=self.lsd, search=search)
                return meta, search.handed_on()
        finally:
            del self.searches[magnet.info_hash]
        raise LibraryError(f"no peer gave the metadata of {magnet.info_hash_hex} within "
                           f"{self.options.metadata_timeout:.0f} s: {search.summary()}")

    def cache_dir(self, meta: Metainfo | Magnet) -> Path:
        root = self.options.cache_root
        if self.options.flat and root is not None:
            return root
        return root / meta.info_hash_hex if root is not None else default_cache_dir(
            meta.info_hash_hex)

    async def _open(self, meta: Metainfo, origin: Path | None) -> Entry:
        """The torrent's session, restored from its cache folder (locked)."""
        cache = self.cache_dir(meta)
        lock_fd = self.locks.pop(meta.info_hash, -1)
        if lock_fd < 0:
            lock_fd = lock_folder(cache, what="--cache-dir")
        storage = Storage(meta.info, cache / "files", by_index=True)
        resume = ResumeLog(cache / "resume", meta.info.num_pieces, len(meta.info.files))
        readahead = self.options.readahead
        if self.cache is not None:  # read-ahead is pinned: keep it well within the cache
            readahead = min(readahead, self.cache.limit // 4)
        torrent = Torrent(meta, storage, resume, readahead=readahead)
        name = (fit_name(meta.info.name) if self.options.flat else
                unique_name(meta.info.name, [e.name for e in self.entries.values()]))
        network = self.options.network
        if self.cache is not None and not network.lazy:
            # A bounded cache holds what is read: fetching the rest would only evict it.
            network = SwarmConfig(**{**network.__dict__, "lazy": True})
        try:
            moved = await trio.to_thread.run_sync(adopt_named_data, storage, cache / "data")
            if moved:
                log.info("moved %d file(s) from %s into the cache", moved, cache / "data")
            restored = await torrent.restore()
            if restored:
                log.info("%s: %s", meta.info.name, restored)
            if self.cache is not None:
                order = await trio.to_thread.run_sync(load_read_order, cache / READ_ORDER)
                await self.cache.adopt(torrent, order)
            swarm = Swarm(meta, torrent, network, peer_id=self.peer_id, shared=self.shared,
                          dht=self.dht, lsd=self.lsd)
            if self.options.log_where:
                shown, where = swarm.attributes, self.options.log_where
                torrent.network_attributes = lambda: shown() | {"log": where}
        except BaseException:
            storage.close()
            resume.close()
            os.close(lock_fd)
            raise
        return Entry(meta, name, torrent, swarm, storage, resume, cache, lock_fd, origin)

    async def _close_removed(self, entry: Entry) -> None:
        if entry in self.closing:
            self.closing.remove(entry)
            await self._close(entry)

    async def _close(self, entry: Entry, quiet: bool = False) -> None:
        """Stop the torrent's session; keep or delete its cache; free its folder's lock."""
        torrent = entry.torrent
        torrent.close()
        with trio.CancelScope(shield=True):
            if not quiet:
                await entry.swarm.stop(grace=TRACKER_GOODBYE)
            entry.scope.cancel()
            if self.cache is not None:
                if self.options.keep:  # what a window held past the limit may go now
                    await self.cache.trim()
                    await trio.to_thread.run_sync(save_read_order, entry.cache_dir / READ_ORDER,
                                                  self.cache.read_order(torrent))
                self.cache.forget(torrent)
            if self.options.keep:
                await torrent.save_resume()
            entry.storage.close()
            entry.resume.close()
            if not self.options.keep:
                await trio.to_thread.run_sync(
                    remove_cache, entry.storage, entry.resume, entry.cache_dir)
            else:  # the kept cache must not name a process that has ended (see cachelock)
                (entry.cache_dir / LOCK_NAME).unlink(missing_ok=True)
            os.close(entry.lock_fd)
        self.on_change()


READ_ORDER = "read-order"  # a kept cache's pieces, least recently read first


def save_read_order(path: Path, pieces: list[int]) -> None:
    """Write the order in which a kept cache's pieces were last read (for the next mount's
    evictions); a failure costs only that order, so it is logged, not raised."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(" ".join(map(str, pieces)) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot save the read order of %s: %s", path.parent, exc.strerror)


def load_read_order(path: Path) -> list[int]:
    """The saved read order, or none if it is missing or unreadable (then the lowest pieces
    count as least recently read)."""
    try:
        return [int(word) for word in path.read_text().split()]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring the read order in %s: %s", path, exc)
        return []


def remove_cache(storage: Storage, resume: ResumeLog, cache: Path) -> None:
    """Delete only what this torrent put there, then the folders it leaves empty."""
    folders: set[Path] = {cache}
    for path in [*storage.paths, resume.path, cache / LOCK_NAME, cache / READ_ORDER]:
        if path is None:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc.strerror)
        parent = path.parent
        while parent != cache and cache in parent.parents:
            folders.add(parent)
            parent = parent.parent
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
