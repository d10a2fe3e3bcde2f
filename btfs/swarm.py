"""One torrent's swarm: peer connections, web seeds, the picker, the choker, trackers.

The swarm is the trio shell around the pure cores: the picker (which block to ask
whom), the choker (whom to upload to), the peer book (whom to dial), the assembly of
blocks into pieces and the smart ban (`btfs.assembly`: whom to blame for a piece that
fails its hash), and the read path's decisions (`btfs.urgency`). It owns the listening
socket, the tracker session, the peer connections (it is their `PeerHost`) and the web
seeds' workers (their `WebSeedHost`). A whole piece goes to `Torrent.piece_downloaded`,
the only place a piece becomes verified.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import random
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from btfs import __version__, dial, pex, wire
from btfs.assembly import Assembly, Culprit, PartialPiece
from btfs.choker import Choker, PeerRates
from btfs.dht.service import DhtService
from btfs.errors import BtfsError
from btfs.lsdservice import LsdService, run_lsd
from btfs.metainfo import Metainfo
from btfs.peer import PeerConnection
from btfs.peerbook import PeerBook
from btfs.peerstate import (
    MAX_PIPELINE,
    STREAMING_PIPELINE,
    GotHave,
    GotPieces,
    LostHave,
    PeerError,
    PeerState,
)
from btfs.picker import BLOCK_SIZE as BLOCK
from btfs.picker import Block, Picker, Priority
from btfs.rates import RateMeter, TokenBucket
from btfs.torrent import Torrent
from btfs.trackers import TrackerSession
from btfs.trackerwire import compact
from btfs.urgency import spread, worth_preempting
from btfs.waiting import NoPeersNotice
from btfs.webseed import WebSeed
from btfs.webseeding import WebSeedSource

log = logging.getLogger(__name__)

RECHOKE_INTERVAL = 10.0
CONNECT_INTERVAL = 1.0
MAX_HALF_OPEN = 8
PEER_SOURCES = ("trackers", "dht", "pex", "lsd", "--peer", "incoming")  # --peer: and x.pe
MAX_FOUND_TRACKED = 10_000
DHT_INTERVAL = 15 * 60.0
DHT_RETRY = 60.0


def make_peer_id() -> bytes:
    """Azureus style (BEP 20): `-BT` is taken, so `-BF` + version, then 12 random bytes."""
    major, minor, patch = (int(x) for x in __version__.split(".")[:3])
    return f"-BF{major}{minor}{patch:02d}-".encode()[:8] + os.urandom(12)


@dataclass
class SwarmConfig:
    """What a swarm may do: the network options of download, seed and mount, and more."""

    max_peers: int = 60
    max_upload_rate: int = 0
    max_download_rate: int = 0
    seed: bool = True
    lazy: bool = False
    peers: list[tuple[str, int]] = field(default_factory=list)
    bind: str | None = None
    port: int = 0
    trackers: bool = True
    web_seeds: bool = True
    upload_slots: int = 4
    dht: bool = True
    dht_routers: list[str] | None = None   # HOST:PORT to join through; None: the defaults
    dht_state: Path | None = None          # the nodes of the last run; None: not saved
    peer_id: bytes | None = None           # the metadata phase's, so trackers see one peer
    found: dict[tuple[str, int], str] = field(default_factory=dict)  # ... and its peers
    pex: bool = True  # peer exchange (BEP 11); never for private torrents
    lsd: bool = True  # local service discovery (BEP 14); never for private torrents


@dataclass
class SharedNetwork:
    """What the swarms of one process share (a library): the port their peers reach them
    on (its listener hands them connections: `Swarm.adopt`), the rate limits, and one
    rechoke over all their peers (`rechoke_soon` asks for it)."""

    port: int
    download_bucket: TokenBucket
    upload_bucket: TokenBucket
    rechoke_soon: Callable[[], None]


class Swarm:
    """Everything one torrent does on the network; the `PeerHost` of its connections."""

    def __init__(
        self, meta: Metainfo, torrent: Torrent, config: SwarmConfig,
        peer_id: bytes | None = None,
        open_stream: dial.OpenStream | None = None,
        dht: DhtService | None = None,
        lsd: LsdService | None = None,
        shared: SharedNetwork | None = None,
    ) -> None:
        self.meta = meta
        self.torrent = torrent
        self.info = meta.info
        self.config = config
        self.peer_id = peer_id or config.peer_id or make_peer_id()
        self.dht = dht if self.uses_dht else None
        self.lsd = lsd  # the process's, shared by a library's torrents; else the swarm's own
        self.dht_lookups = 0
        self.rng = random.Random()
        info = meta.info
        self.picker = Picker(info.num_pieces, info.piece_length, info.total_length, rng=self.rng)
        for piece in torrent.verified:
            self.picker.piece_verified(piece)
        if config.lazy:
            self.picker.set_priority(range(info.num_pieces), Priority.SKIP)
        self.choker = Choker(slots=config.upload_slots, rng=self.rng)
        self.peers: dict[bytes, PeerConnection] = {}
        self.book = PeerBook(self.rng)
        self.connecting: set[tuple[str, int]] = set()
        self.assembly = Assembly(info.piece_size, self.picker.block_size)
        self.web_seeds: dict[bytes, WebSeedSource] = {}
        self.download_meter = RateMeter()
        self.upload_meter = RateMeter()
        self.shared = shared
        self.download_bucket = (shared.download_bucket if shared is not None
                                else TokenBucket(config.max_download_rate))
        self.upload_bucket = (shared.upload_bucket if shared is not None
                              else TokenBucket(config.max_upload_rate))
        self.completed = trio.Event()
        self.on_complete: Callable[[], None] = lambda: None
        self.on_listening: Callable[[int], None] = lambda port: None
        if torrent.complete:
            self.completed.set()
        self.nursery: trio.Nursery | None = None
        self.listen_port = 0
        self.tracker_session: TrackerSession | None = None
        self.identity = dial.Identity(meta.info_hash, self.peer_id, self._refuses,
                                      dht=lambda: self.dht_port() > 0)
        self._open_stream = open_stream or dial.tcp_opener(config.bind)
        self._rechoke_soon = trio.Event()
        self._dial_soon = trio.Event()
        self.found: dict[str, int] = dict.fromkeys(PEER_SOURCES, 0)
        self.found_by: dict[tuple[str, int], str] = {}
        self.no_peers = NoPeersNotice()
        self.add_candidates(config.peers, "--peer")
        for address, source in config.found.items():
            self.add_candidates([address], source)
        torrent.on_urgent = self._urgent
        torrent.on_readahead = self._readahead
        torrent.on_verified = self._verified
        torrent.on_unverified = self.picker.piece_unverified
        torrent.on_evicted = self._evicted
        torrent.on_disk_full = self._disk_full
        torrent.network_attributes = self.attributes

    @property
    def banned(self) -> set[str]:
        return self.book.banned

    # Hooks from the torrent (reads) ------------------------------------------------------

    def _urgent(self, pieces: list[int]) -> None:
        """A read waits on `pieces`: make room at the peers that have them, and request
        the pieces' blocks at once, spread over those peers by expected arrival."""
        now = trio.current_time()
        for piece in pieces:
            self.picker.set_deadline(piece, now)
        serving = [p for p in self.peers.values() if any(x in p.state.have for x in pieces)]
        for peer in serving:
            if not peer.state.am_interested:
                peer.update_interest(pieces)
            self._preempt(peer, now)
        self._share_urgent(pieces, serving, now)
        self.kick_all()

    def _share_urgent(self, pieces: list[int], serving: list[PeerConnection],
                      now: float) -> None:
        """Ask for the blocks of `pieces` not yet asked of anyone, spread over the peers
        in `serving` and the web seeds, past their pipeline targets."""
        needed = self.picker.unrequested(pieces)
        if not needed:
            return
        seeds = [w for w in self.web_seeds.values() if not w.dropped]
        for source, count in urgent_shares(serving, seeds, needed, now):
            source.request_urgent(count)

    def _preempt(self, peer: PeerConnection, now: float) -> None:
        """Cancel the background requests queued at `peer` when they would hold up a read;
        the picker hands them out later."""
        in_flight = peer.state.in_flight
        if not worth_preempting(len(in_flight) * BLOCK, peer.download_meter.value(now)):
            return
        background = self.picker.background_blocks(in_flight)
        if not background:
            return
        for block in background:
            peer.state.cancel(block)
        peer.flush()
        self.picker.release(peer.peer_id, background)

    def _readahead(self, reader: int, pieces: range) -> None:
        self.picker.set_readahead(reader, pieces)
        if self.config.lazy:
            for peer in list(self.peers.values()):
                if not peer.state.am_interested:
                    peer.update_interest(pieces)
        self.kick_all()

    def _verified(self, piece: int) -> None:
        self.picker.piece_verified(piece)
        for peer in list(self.peers.values()):
            peer.send_have(piece)
        plen = self.info.piece_length
        self._blame(piece, self.assembly.passed(
            piece, lambda begin, n: self.torrent.storage.read(piece * plen + begin, n)))
        if self.torrent.complete and not self.completed.is_set():
            log.info("download complete: %d pieces verified", self.info.num_pieces)
            self.completed.set()
            self.on_complete()
            if self.tracker_session is not None:
                self.tracker_session.completed()
            for peer in list(self.peers.values()):
                if peer.state.peer_is_seed:
                    self.book.known_seeds.add(peer.address)
                    peer.close()

    def _evicted(self, piece: int) -> None:
        """A bounded cache evicted the piece: fetched again only when a read wants it."""
        self.picker.piece_unverified(piece)
        self.picker.set_priority((piece,), Priority.SKIP)
        for peer in list(self.peers.values()):
            peer.send_donthave(piece)

    def _disk_full(self, full: bool) -> None:
        """The cache disk filled (background download pauses) or has room again."""
        if not full:
            self.kick_all()

    def kick_all(self) -> None:
        for peer in list(self.peers.values()):
            peer.kick()
        for source in self.web_seeds.values():
            source.kick()

    # PeerHost: what connections tell the swarm -----------------------------------------------

    def pick(self, peer: PeerConnection, has: Container[int], count: int, *,
             urgent_only: bool = False, patience: float | None = None) -> list[Block]:
        """Blocks to ask `peer` for; while the cache disk is full, only what a read needs."""
        urgent_only = urgent_only or self.torrent.disk_full
        return self.picker.pick(peer.peer_id, has, count, trio.current_time(),
                                urgent_only=urgent_only, patience=patience)

    def pieces_changed(self, peer: PeerConnection,
                       event: GotHave | LostHave | GotPieces) -> None:
        if isinstance(event, GotHave):
            self.picker.peer_have(event.piece)
            return
        if isinstance(event, LostHave):
            self.picker.forget_pieces((event.piece,))
            return
        if event.old.count:
            self.picker.forget_pieces(event.old)
        have = peer.state.have
        self.picker.peer_bitfield(have)
        if have.all() and self.torrent.complete:
            self.book.known_seeds.add(peer.address)
            raise PeerError("both sides are seeds")

    # WebSeedHost: what web seeds' workers ask of the swarm ----------------------------------

    def pick_for(self, source: bytes, has: Container[int], count: int, *,
                 urgent_only: bool = False) -> list[Block]:
        return self.picker.pick(source, has, count, trio.current_time(),
                                urgent_only=urgent_only or self.torrent.disk_full)

    def give_back(self, source: bytes, blocks: Sequence[Block]) -> None:
        self.picker.release(source, blocks)
        self.kick_all()

    @property
    def complete(self) -> bool:
        return self.torrent.complete

    def released(self, peer: PeerConnection, blocks: Sequence[Block]) -> None:
        self.picker.release(peer.peer_id, blocks)
        self.kick_all()

    def wasted(self, size: int) -> None:
        self.torrent.counters.wasted += size

    def may_request(self, peer: PeerConnection) -> None:
        """The peer unchoked us (or allowed a piece): if a read waits on pieces it has, its
        share of their blocks goes out now, all at once, not a pipeline at a time (a peer
        idle for a while has no measured rate, so its pipeline would be the minimum)."""
        waiting = [p for p in self.picker.deadlines if p in peer.state.have]
        if waiting:
            self._share_urgent(waiting, [peer], trio.current_time())
        peer.kick()

    def pipeline_limit(self) -> int:
        """Shallow pipelines while a file is open and no reader is short of its read-ahead
        (what is in flight then is background a seek would queue behind); deep ones while
        a reader needs the throughput."""
        if self.torrent.reading and not self.picker.reader_short():
            return STREAMING_PIPELINE
        return MAX_PIPELINE

    def interest_changed(self, peer: PeerConnection) -> None:
        unchoked = sum(1 for p in self.peers.values() if not p.state.am_choking)
        gained = peer.state.peer_interested and unchoked < self.config.upload_slots
        lost = not peer.state.peer_interested and not peer.state.am_choking
        if gained or lost:
            self._ask_rechoke()

    def receive_delay(self, size: int) -> float:
        return self.download_bucket.delay(size, trio.current_time())

    def send_delay(self, size: int) -> float:
        return self.upload_bucket.delay(size, trio.current_time())

    async def read_blocks(self, requests: Sequence[wire.Request]) -> list[bytes | None]:
        """Blocks to upload, each piece's bytes checked against its SHA-1 first."""
        return await self.torrent.read_blocks_for_upload(
            [(r.index, r.begin, r.length) for r in requests])

    def uploaded(self, peer: PeerConnection, size: int) -> None:
        self.upload_meter.add(size, trio.current_time())
        self.torrent.counters.uploaded += size

    def peers_exchanged(self, peer: PeerConnection, peers: dict[tuple[str, int], int]) -> None:
        """Peers `peer` named by peer exchange: candidates, but never ourselves."""
        us = {(ip, self.listen_port) for ip in (self.config.bind, _ip(peer.state.yourip)) if ip}
        fresh = {a: f for a, f in peers.items() if a not in us}
        for address, flags in fresh.items():
            if flags & pex.SEED and len(self.book.known_seeds) < MAX_FOUND_TRACKED:
                self.book.known_seeds.add(address)
        if fresh:
            log.info("%s:%d named %d peer(s) by peer exchange", *peer.address, len(fresh))
        self.add_candidates(fresh, "pex")

    def connected_peers(self) -> dict[tuple[str, int], int]:
        return {address: p.pex_flags for p in self.peers.values()
                if (address := p.listen_address) is not None}

    def peer_gone(self, peer: PeerConnection, closed_by_peer: bool) -> None:
        now = trio.current_time()
        self.book.session_ended(peer.address[0], now - peer.started, closed_by_peer, now)
        if self.peers.get(peer.peer_id) is peer:
            del self.peers[peer.peer_id]
            self._dial_soon.set()
            self.picker.peer_gone(peer.peer_id, peer.state.have)
            self.kick_all()
            if peer.state.am_choking is False:
                self._ask_rechoke()

    def _ask_rechoke(self) -> None:
        if self.shared is not None:
            self.shared.rechoke_soon()
        else:
            self._rechoke_soon.set()

    # Blocks arriving ------------------------------------------------------------------------

    def dht_port(self) -> int:
        return self.dht.port if self.dht is not None and self.dht.running else 0

    def dht_node_seen(self, peer: PeerConnection, port: int) -> None:
        if self.dht is not None and self.dht.running:
            self.dht.add_node((peer.address[0], port))

    def block_received(self, peer: PeerConnection, block: Block, data: bytes) -> None:
        self.block_from(peer.peer_id, block, data)

    def block_from(self, source: bytes, block: Block, data: bytes) -> None:
        """Keep a block of a peer or web seed; when its piece is whole, verify it."""
        result = self.picker.block_received(source, block)
        for other in result.cancel:
            conn = self.peers.get(other)
            if conn is not None:
                conn.send_cancel(block)
        if not result.accepted:
            self.torrent.counters.wasted += len(data)
            return
        self.download_meter.add(len(data), trio.current_time())
        self.torrent.counters.downloaded += len(data)
        self.assembly.add(source, block, data)
        if result.piece_complete:
            assert self.nursery is not None
            self.nursery.start_soon(self._verify, block.piece,
                                    self.assembly.take(block.piece))

    async def _verify(self, piece: int, partial: PartialPiece) -> None:
        if await self.torrent.piece_downloaded(piece, partial.data):
            return
        self.picker.piece_failed(piece)
        log.warning("piece %d failed its hash check (sent by %d source(s))", piece,
                    len(set(partial.senders.values())))
        self._blame(piece, self.assembly.failed(
            piece, partial, self._host_of,
            lambda source: source in self.peers or source in self.web_seeds))
        self.kick_all()

    def _host_of(self, source: bytes) -> str | None:
        conn = self.peers.get(source)
        return conn.address[0] if conn is not None else None

    def _blame(self, piece: int, culprits: list[Culprit]) -> None:
        for c in culprits:
            web_seed = self.web_seeds.get(c.source)
            if web_seed is not None:
                web_seed.hash_failed(piece)
                continue
            conn = self.peers.get(c.source)
            if c.host is not None and self.book.ban(c.host):
                log.warning("banning %s: %s", c.host, c.reason)
            if conn is not None:
                conn.close()

    # Peers ----------------------------------------------------------------------------------

    def add_candidates(self, addresses: Iterable[tuple[str, int]],
                       source: str = "--peer") -> None:
        """Peers to dial, learnt from `source` (one of `PEER_SOURCES`); each address is
        counted once, under the first source that named it, for `btfs status`."""
        addresses = list(addresses)
        for address in addresses:
            self._count_found(address, source)
        self.book.add(addresses)
        self._dial_soon.set()

    def _count_found(self, address: tuple[str, int], source: str) -> None:
        if address not in self.found_by:
            if len(self.found_by) < MAX_FOUND_TRACKED:
                self.found_by[address] = source
            self.found[source] = self.found.get(source, 0) + 1

    def _refuses(self, host: str) -> bool:
        return self.book.refused(host, trio.current_time())

    def _admit(self, peer: PeerConnection) -> bool:
        if peer.peer_id in self.peers or self._refuses(peer.address[0]):
            return False
        if len(self.peers) >= self.config.max_peers:
            return False
        self.peers[peer.peer_id] = peer
        return True

    async def run_peer(self, connection: dial.Established, *, outgoing: bool = False) -> None:
        """Run an established connection until it ends (if there is room for it)."""
        info = self.info
        state = PeerState(info.num_pieces, info.piece_size, self.torrent.verified,
                          self.picker.wanted, fast=connection.handshake.fast,
                          now=trio.current_time(), raw_info=self.meta.raw_info,
                          pex_enabled=self.config.pex and not info.private)
        peer = PeerConnection(self, state, connection, outgoing=outgoing)
        if not self._admit(peer):
            await dial.close_quietly(connection.stream)
            return
        await peer.run(listen_port=self.listen_port)

    async def adopt(self, connection: dial.Established) -> None:
        """Run a connection the shared listener accepted for this torrent, in the swarm's
        own nursery (it ends with the swarm), until it ends."""
        self._count_found(connection.address, "incoming")
        if self.nursery is None:
            await dial.close_quietly(connection.stream)
            return
        done = trio.Event()

        async def run() -> None:
            try:
                await self.run_peer(connection)
            finally:
                done.set()

        try:
            self.nursery.start_soon(run)
        except RuntimeError:  # the swarm just ended
            await dial.close_quietly(connection.stream)
            return
        await done.wait()

    async def _serve_incoming(self, stream: trio.SocketStream) -> None:
        accepted = await dial.accept(stream, {self.meta.info_hash: self.identity})
        if accepted is not None:
            self._count_found(accepted[0].address, "incoming")
            await self.run_peer(accepted[0])

    def rechoke(self) -> None:
        now = trio.current_time()
        rates = [
            PeerRates(
                peer_id=p.peer_id,
                interested=p.state.peer_interested,
                download_rate=p.download_meter.value(now),
                upload_rate=p.upload_meter.value(now),
                is_seed=p.state.peer_is_seed,
            )
            for p in self.peers.values()
        ]
        unchoke = self.choker.rechoke(now, rates, we_are_seed=self.torrent.complete)
        for peer in list(self.peers.values()):
            peer.set_choking(peer.peer_id not in unchoke)

    def stats(self) -> dict[str, float]:
        now = trio.current_time()
        return {
            "peers": len(self.peers),
            "download_rate": self.download_meter.value(now),
            "upload_rate": self.upload_meter.value(now),
            "downloaded": self.torrent.counters.downloaded,
            "uploaded": self.torrent.counters.uploaded,
            "verified": len(self.torrent.verified),
            "pieces": self.info.num_pieces,
        }

    def attributes(self) -> dict[str, str]:
        s = self.stats()
        return {
            "peers": str(int(s["peers"])),
            "download_rate": str(int(s["download_rate"])),
            "upload_rate": str(int(s["upload_rate"])),
            "downloaded": str(int(s["downloaded"])),
            "uploaded": str(int(s["uploaded"])),
            "listen_port": str(self.listen_port),
            "peer_sources": json.dumps({k: v for k, v in self.found.items() if v}),
            "dht_nodes": str(self.dht.nodes_known if self.dht else 0),
            **({"trackers": json.dumps(self.tracker_session.report(trio.current_time()))}
               if self.tracker_session is not None else {}),
        }

    def transfer_totals(self) -> tuple[int, int, int]:
        """(uploaded, downloaded, left) as trackers want them."""
        counters = self.torrent.counters
        left = self.info.total_length - self.torrent.verified_bytes
        return counters.uploaded, counters.downloaded, max(0, left)

    # Running ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, announce, connect and rechoke until cancelled; starts with the port."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if self.shared is None:
                try:
                    listeners = await open_listeners(self.config.bind, self.config.port)
                except OSError as exc:
                    where = f"{self.config.bind or 'all addresses'} port {self.config.port}"
                    raise BtfsError(f"cannot listen for peers on {where}: "
                                    f"{exc.strerror or exc}") from None
                self.listen_port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, self._serve_incoming, listeners)
                nursery.start_soon(self._rechoke_loop)
            else:
                self.listen_port = self.shared.port
            nursery.start_soon(self._connect_loop)
            if self.config.trackers and self.meta.trackers:
                self.tracker_session = TrackerSession(
                    tiers=[list(t) for t in self.meta.trackers],
                    info_hash=self.meta.info_hash,
                    peer_id=self.peer_id,
                    port=self.listen_port,
                    stats=self.transfer_totals,
                    on_peers=lambda peers: self.add_candidates(peers, "trackers"),
                    bind=self.config.bind,
                )
                nursery.start_soon(self.tracker_session.run)
            if self.uses_dht and (self.dht is not None or self.shared is None):
                if self.dht is None:
                    self.dht = DhtService(self.config.dht_routers,
                                          state_path=self.config.dht_state, rng=self.rng)
                    await nursery.start(self.dht.run, self.config.bind, self.listen_port)
                nursery.start_soon(self._dht_loop)
            if self.config.lsd and not self.info.private:
                if self.lsd is not None:
                    self.lsd.register(self.meta.info_hash,
                                      lambda peers: self.add_candidates(peers, "lsd"))
                    nursery.start_soon(self._unregister_lsd_at_exit, self.lsd)
                elif self.shared is None:
                    nursery.start_soon(functools.partial(
                        run_lsd, self.meta.info_hash, self.listen_port,
                        lambda peers: self.add_candidates(peers, "lsd"),
                        bind=self.config.bind))
            if self.config.web_seeds:
                for url in self.meta.web_seeds:
                    source = WebSeedSource(WebSeed(url, self.info, bind=self.config.bind), self)
                    self.web_seeds[source.id] = source
                    nursery.start_soon(source.run)
            if self.shared is None:
                log.info("listening on port %d", self.listen_port)
            self.on_listening(self.listen_port)
            task_status.started(self.listen_port)

    async def _unregister_lsd_at_exit(self, lsd: LsdService) -> None:
        try:
            await trio.sleep_forever()
        finally:
            lsd.unregister(self.meta.info_hash)

    @property
    def uses_dht(self) -> bool:
        """BEP 27: a private torrent's peers come from its trackers only."""
        return self.config.dht and not self.info.private

    async def _dht_loop(self) -> None:
        """Look the torrent up in the DHT and announce us, at start and every 15 minutes
        (sooner while that found nobody and we have no peer: after 1 minute, then 2, 4...)."""
        assert self.dht is not None
        retry = DHT_RETRY
        while True:
            found = await self.dht.lookup(
                self.meta.info_hash, lambda peers: self.add_candidates(peers, "dht"),
                announce_port=self.listen_port)
            self.dht_lookups += 1
            log.info("DHT: %d peers for the torrent (%d nodes known)", found,
                     self.dht.nodes_known)
            if found or self.peers:
                retry = DHT_RETRY
                await trio.sleep(DHT_INTERVAL)
            else:  # 1, 2, 4... minutes: a library of idle torrents must not flood the DHT
                await trio.sleep(retry)
                retry = min(DHT_INTERVAL, retry * 2)

    async def stop(self, grace: float = 3.0) -> None:
        """Say goodbye to the trackers (bounded) and close every connection."""
        for peer in list(self.peers.values()):
            peer.close()
        if self.tracker_session is not None:
            with trio.move_on_after(grace):
                await self.tracker_session.stop(timeout=grace)

    async def _rechoke_loop(self) -> None:
        while True:
            with trio.move_on_after(RECHOKE_INTERVAL):
                await self._rechoke_soon.wait()
            self._rechoke_soon = trio.Event()
            self.rechoke()
            await trio.sleep(0.2)

    async def _connect_loop(self) -> None:
        """Keep dialling known peers while there is room; retry failed ones later."""
        while True:
            self._dial_soon = trio.Event()
            self._dial_some()
            alone = self.no_peers.observe(trio.current_time(), len(self.peers),
                                          not self.torrent.complete)
            if alone is not None:
                log.info("no peers for %.0f s (%d address%s known to try)", alone,
                         len(self.book.candidates),
                         "" if len(self.book.candidates) == 1 else "es")
            # No peer known: nothing to retry; sleep until one is, or the next notice (a
            # library of idle torrents must not wake each of them every second).
            due = self.no_peers.due()
            timeout = (CONNECT_INTERVAL if self.book.candidates
                       else max(0.0, due - trio.current_time()) if due is not None
                       else float("inf"))
            with trio.move_on_after(timeout):
                await self._dial_soon.wait()

    def _dial_some(self) -> None:
        if self.torrent.complete and not self.config.seed:
            return
        room = min(self.config.max_peers - len(self.peers) - len(self.connecting),
                   MAX_HALF_OPEN - len(self.connecting))
        if room <= 0:
            return
        busy = self.connecting | {p.address for p in self.peers.values()}
        assert self.nursery is not None
        for address, encrypted in self.book.due(trio.current_time(), room, busy,
                                                complete=self.torrent.complete):
            self.connecting.add(address)
            self.nursery.start_soon(self._dial, address, encrypted)

    async def _dial(self, address: tuple[str, int], encrypted: bool) -> None:
        """Dial (plain or MSE, as the book says), then run the connection until it ends."""
        connection = None
        try:
            connection = await dial.dial(address, self.identity, self._open_stream,
                                         encrypted=encrypted)
            self.connecting.discard(address)
            if connection is not None:
                await self.run_peer(connection, outgoing=True)
        finally:
            self.connecting.discard(address)
            self.book.dial_ended(address, connection is not None, encrypted,
                                 trio.current_time())


def _ip(packed: bytes | None) -> str | None:
    """An address in text form from its 4 or 16 bytes (as `yourip` carries it)."""
    if packed is None:
        return None
    try:
        return compact.normalize_ip(str(ipaddress.ip_address(packed)))
    except ValueError:
        return None


def urgent_shares(peers: Sequence[PeerConnection], seeds: Sequence[WebSeedSource],
                  blocks: int, now: float) -> list[tuple[PeerConnection | WebSeedSource, int]]:
    """How many of a waiting read's `blocks` to ask of each peer that may be asked and
    each web seed, by expected arrival (rate, and what each already has in flight)."""
    able = [p for p in peers if p.state.requestable() is not None]
    rates = [p.download_meter.value(now) for p in able] + [w.rate(now) for w in seeds]
    queued = [len(p.state.in_flight) * BLOCK for p in able] + [w.queued for w in seeds]
    sources: list[PeerConnection | WebSeedSource] = [*able, *seeds]
    counts = spread(rates, queued, blocks, BLOCK)
    return [(p, n) for p, n in zip(sources, counts, strict=True) if n]


async def open_listeners(bind: str | None, port: int) -> list[trio.SocketListener]:
    """TCP listeners on `bind` (all addresses if None, IPv4 and IPv6 on one port)."""
    if bind:
        return await trio.open_tcp_listeners(port, host=bind)
    listeners = await trio.open_tcp_listeners(port, host="0.0.0.0")
    actual = listeners[0].socket.getsockname()[1]
    try:
        listeners += await trio.open_tcp_listeners(actual, host="::")
    except OSError as exc:
        log.debug("no IPv6 listener: %s", exc)
    return listeners

