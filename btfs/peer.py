"""One peer connection on a trio stream: handshakes, messages in and out, requests, uploads.

The wire format is `btfs.wire`'s (pure) and block choice is the swarm's picker; this
module is the I/O between them. Outgoing messages go through one outbox drained by one
writer task, so small messages (have, request) coalesce into few writes. A connection
keeps many requests in flight (sized to the peer's rate), sends a keep-alive when it has
said nothing for a while, and drops a peer that is silent too long, does not deliver,
or breaks the protocol. Uploads are served only while we unchoke the peer.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from btfs import __version__, metadata, mse, wire
from btfs.bitfield import Bitfield, BitfieldError
from btfs.errors import BtfsError, first_leaf
from btfs.picker import Block
from btfs.rates import RateMeter
from btfs.storage import Storage

if TYPE_CHECKING:
    from btfs.swarm import Swarm

log = logging.getLogger(__name__)

BLOCK = 16 * 1024
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
KEEPALIVE_INTERVAL = 90.0
IDLE_TIMEOUT = 180.0
SNUB_TIMEOUT = 60.0
SEND_TIMEOUT = 60.0
MIN_PIPELINE = 32
MAX_PIPELINE = 400
PIPELINE_SECONDS = 1.0
MAX_PEER_REQUESTS = 500
READ_SIZE = 256 * 1024
UPLOAD_BATCH = 16
OUTBOX_HIGH_WATER = 1 << 20
CLIENT_NAME = f"btfs {__version__}"


class PeerError(BtfsError):
    """A peer broke the protocol or lied; the connection is dropped."""


class PeerConnection:
    """A connected peer after both handshakes."""

    def __init__(
        self,
        swarm: Swarm,
        stream: trio.abc.Stream,
        address: tuple[str, int],
        handshake: wire.Handshake,
        reader: wire.MessageReader,
    ) -> None:
        self.swarm = swarm
        self.stream = stream
        self.address = address
        self.key = handshake.peer_id
        self.fast = handshake.fast
        self.extensions = handshake.extensions
        self.reader = reader
        reader.fast = self.fast
        reader.set_num_pieces(swarm.info.num_pieces)
        self.client = ""
        self.their_metadata_id = 0
        self.have = Bitfield(swarm.info.num_pieces)
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.allowed_fast: set[int] = set()
        self.peer_reqq = MAX_PIPELINE
        self.in_flight: set[Block] = set()
        self.download_meter = RateMeter(window=2.0)
        self.upload_meter = RateMeter(window=2.0)
        self.upload_queue: deque[wire.Request] = deque()
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._outbox_wake = trio.Event()
        self._outbox_drained = trio.Event()
        self._wake = trio.Event()
        self._upload_wake = trio.Event()
        now = trio.current_time()
        self._last_sent = now
        self._last_block = now
        self._cancel_scope = trio.CancelScope()
        self.closed = False
        self._trace = log.isEnabledFor(logging.DEBUG)

    @property
    def peer_is_seed(self) -> bool:
        return self.have.all()

    def __repr__(self) -> str:
        return f"<peer {self.address[0]}:{self.address[1]} {self.client or '?'}>"

    # Sending ---------------------------------------------------------------------------

    def queue(self, *messages: wire.Message) -> None:
        """Send soon, in order, coalesced with whatever else is waiting."""
        if self.closed:
            return
        if self._trace:
            log.debug("%s -> %s", self, ", ".join(_brief(m) for m in messages))
        for m in messages:
            data = wire.encode(m)
            self._outbox.append(data)
            self._outbox_bytes += len(data)
        self._outbox_wake.set()

    def send_have(self, piece: int) -> None:
        self.queue(wire.Have(piece))
        if self.am_interested and piece in self.have:
            self.update_interest()

    def send_cancel(self, block: Block) -> None:
        if block in self.in_flight:
            self.in_flight.discard(block)
            self.queue(wire.Cancel(block.piece, block.begin, block.length))

    def set_choking(self, choke: bool) -> None:
        if choke == self.am_choking:
            return
        self.am_choking = choke
        if choke:
            rejected = list(self.upload_queue)
            self.upload_queue.clear()
            self.queue(wire.Choke())
            if self.fast:
                self.queue(*(wire.RejectRequest(r.index, r.begin, r.length) for r in rejected))
        else:
            self.queue(wire.Unchoke())

    def kick(self) -> None:
        """Something changed (a read waits, a piece arrived): reconsider requests now."""
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._cancel_scope.cancel()

    # Running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Exchange state, then run until the peer or the swarm ends the connection."""
        with self._cancel_scope:
            try:
                self._introduce()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer_loop)
                    nursery.start_soon(self._receive_loop)
                    nursery.start_soon(self._request_loop)
                    nursery.start_soon(self._upload_loop)
                    nursery.start_soon(self._timer_loop)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
                log.debug("connection to %s:%d ended: %s", *self.address, first_leaf(group))
            except* BtfsError as group:
                log.info("dropping %s:%d: %s", *self.address, first_leaf(group))
            except* Exception as group:
                # A bug of ours must cost this one connection, never the whole download.
                log.error("dropping %s:%d after an internal error", *self.address,
                          exc_info=first_leaf(group))
        self.closed = True
        self.swarm.peer_gone(self)
        self.in_flight.clear()
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    def _introduce(self) -> None:
        """Our pieces first (BEP 6 wants them first), then the extension handshake."""
        swarm = self.swarm
        verified = swarm.torrent.verified
        count = swarm.info.num_pieces
        if self.fast and len(verified) == count:
            self.queue(wire.HaveAll())
        elif self.fast and not verified:
            self.queue(wire.HaveNone())
        elif verified:
            self.queue(wire.BitfieldMessage(Bitfield.from_indices(count, verified).to_bytes()))
        if self.extensions:
            yourip = None
            try:
                yourip = ipaddress.ip_address(self.address[0]).packed
            except ValueError:
                pass
            ext = wire.ExtensionHandshake(
                extensions={"ut_metadata": metadata.OUR_EXTENSION_ID},
                client=CLIENT_NAME, reqq=MAX_PEER_REQUESTS,
                listen_port=swarm.listen_port or None, yourip=yourip,
                metadata_size=len(swarm.meta.raw_info),
            )
            self.queue(wire.Extended(0, ext.encode()))

    async def _writer_loop(self) -> None:
        while True:
            if not self._outbox:
                self._outbox_drained.set()
                self._outbox_wake = trio.Event()
                await self._outbox_wake.wait()
                continue
            data = b"".join(self._outbox)
            self._outbox.clear()
            self._outbox_bytes = 0
            with trio.move_on_after(SEND_TIMEOUT) as scope:
                await self.stream.send_all(data)
            if scope.cancelled_caught:
                raise PeerError(f"not reading for {SEND_TIMEOUT:.0f} s")
            self._last_sent = trio.current_time()

    async def _receive_loop(self) -> None:
        swarm = self.swarm
        reader = self.reader
        data: bytes | bytearray = b""  # what came with the handshake is in the reader
        while True:
            try:
                while (message := reader.next_message()) is not None:
                    self._handle(message)
            except (wire.ProtocolError, BitfieldError) as exc:
                raise PeerError(str(exc)) from exc
            delay = swarm.download_bucket.delay(len(data), trio.current_time())
            if delay:
                await trio.sleep(delay)
            with trio.move_on_after(IDLE_TIMEOUT) as scope:
                data = await self.stream.receive_some(READ_SIZE)
            if scope.cancelled_caught:
                raise PeerError(f"silent for {IDLE_TIMEOUT:.0f} s")
            if not data:
                return
            reader.feed(data)

    async def _timer_loop(self) -> None:
        while True:
            await trio.sleep(10)
            now = trio.current_time()
            if now - self._last_sent >= KEEPALIVE_INTERVAL:
                self.queue(wire.KeepAlive())
            if self.in_flight and now - self._last_block > SNUB_TIMEOUT:
                raise PeerError(f"sent none of {len(self.in_flight)} requested blocks "
                                f"in {SNUB_TIMEOUT:.0f} s")

    # Receiving --------------------------------------------------------------------------

    def _handle(self, m: wire.Message) -> None:
        picker = self.swarm.picker
        num_pieces = self.swarm.info.num_pieces
        if self._trace and not isinstance(m, wire.Piece):
            log.debug("%s <- %s", self, _brief(m))
        if isinstance(m, wire.Piece):
            self._on_piece(m)
        elif isinstance(m, wire.Request):
            self._on_request(m)
        elif isinstance(m, wire.Have):
            self._check_index(m.index)
            if not self.have.has(m.index):
                self.have.set(m.index)
                picker.peer_have(m.index)
                if not self.am_interested and picker.wanted(m.index):
                    self.update_interest([m.index])
        elif isinstance(m, wire.BitfieldMessage):
            self._replace_have(Bitfield.from_bytes(num_pieces, m.bits))
        elif isinstance(m, wire.HaveAll):
            self._replace_have(Bitfield.full(num_pieces))
        elif isinstance(m, wire.HaveNone):
            self._replace_have(Bitfield(num_pieces))
        elif isinstance(m, wire.Unchoke):
            self.peer_choking = False
            self.kick()
        elif isinstance(m, wire.Choke):
            self.peer_choking = True
            dropped = {b for b in self.in_flight if b.piece not in self.allowed_fast}
            self.in_flight -= dropped
            picker.release(self.key, dropped)
            if dropped:
                self.swarm.kick_all()
        elif isinstance(m, wire.Interested):
            self.peer_interested = True
            self.swarm.peer_interest_changed(self)
        elif isinstance(m, wire.NotInterested):
            self.peer_interested = False
            self.swarm.peer_interest_changed(self)
        elif isinstance(m, wire.Cancel):
            key = (m.index, m.begin, m.length)
            self.upload_queue = deque(
                r for r in self.upload_queue if (r.index, r.begin, r.length) != key
            )
        elif isinstance(m, wire.RejectRequest):
            block = Block(m.index, m.begin, m.length)
            if block in self.in_flight:
                self.in_flight.discard(block)
                picker.release(self.key, [block])
                self.swarm.kick_all()
        elif isinstance(m, wire.AllowedFast):
            if 0 <= m.index < num_pieces:
                self.allowed_fast.add(m.index)
                self.kick()
        elif isinstance(m, wire.Extended):
            self._on_extended(m)

    def _on_extended(self, m: wire.Extended) -> None:
        if m.ext_id == 0:
            ext = wire.ExtensionHandshake.decode(m.payload)
            if ext.client:
                self.client = ext.client
            if ext.reqq:
                self.peer_reqq = max(1, min(ext.reqq, MAX_PIPELINE))
            self.their_metadata_id = ext.extensions.get("ut_metadata", 0)
        elif m.ext_id == metadata.OUR_EXTENSION_ID and self.their_metadata_id:
            try:
                request = metadata.parse_message(m.payload)
            except metadata.MetadataError as exc:
                raise PeerError(str(exc)) from exc
            if request.kind != metadata.REQUEST:
                return
            raw = self.swarm.meta.raw_info
            if request.piece * metadata.PIECE_SIZE < len(raw):
                reply = metadata.encode_data(request.piece, raw)
            else:
                reply = metadata.encode_reject(request.piece)
            self.queue(wire.Extended(self.their_metadata_id, reply))

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.swarm.info.num_pieces:
            raise PeerError(f"piece index {index} out of range")

    def _replace_have(self, have: Bitfield) -> None:
        picker = self.swarm.picker
        if self.have.count:
            picker.forget_pieces(self.have)
        self.have = have
        picker.peer_bitfield(have)
        self.update_interest()
        if have.all() and self.swarm.torrent.complete:
            self.swarm.known_seeds.add(self.address)
            raise PeerError("both sides are seeds")

    def update_interest(self, candidates: Iterable[int] | None = None) -> None:
        """Tell the peer whether it has a piece we want (all its pieces, or `candidates`)."""
        picker = self.swarm.picker
        pieces = self.have if candidates is None else (p for p in candidates if p in self.have)
        wanted = any(picker.wanted(p) for p in pieces)
        if candidates is not None and not wanted and self.am_interested:
            return
        if wanted != self.am_interested:
            self.am_interested = wanted
            self.queue(wire.Interested() if wanted else wire.NotInterested())
            if wanted:
                self.kick()

    def _on_piece(self, m: wire.Piece) -> None:
        block = Block(m.index, m.begin, len(m.data))
        if block not in self.in_flight:
            self.swarm.torrent.counters.wasted += len(m.data)
            return
        self.in_flight.discard(block)
        now = trio.current_time()
        self._last_block = now
        self.download_meter.add(len(m.data), now)
        self.swarm.block_received(self, block, m.data)
        if len(self.in_flight) <= self.pipeline_target() * 3 // 4:
            self.kick()

    def _on_request(self, m: wire.Request) -> None:
        info = self.swarm.info
        valid = (
            0 <= m.index < info.num_pieces
            and 0 < m.length <= BLOCK
            and m.begin >= 0
            and m.begin + m.length <= info.piece_size(m.index)
        )
        if not valid:
            raise PeerError(f"bad request {m.index}:{m.begin}+{m.length}")
        if self.am_choking or m.index not in self.swarm.torrent.verified:
            if self.fast:
                self.queue(wire.RejectRequest(m.index, m.begin, m.length))
            return
        if len(self.upload_queue) >= MAX_PEER_REQUESTS:
            raise PeerError("too many outstanding requests")
        self.upload_queue.append(m)
        self._upload_wake.set()

    # Requesting -------------------------------------------------------------------------

    def pipeline_target(self) -> int:
        rate = self.download_meter.value(trio.current_time())
        target = math.ceil(rate * PIPELINE_SECONDS / BLOCK)
        return max(min(MIN_PIPELINE, self.peer_reqq), min(target, self.peer_reqq, MAX_PIPELINE))

    async def _request_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            self._fill_requests()
            with trio.move_on_after(1.0):
                await self._wake.wait()

    def request_urgent(self, blocks: int) -> None:
        """Ask now for blocks a read waits on, past the pipeline target if need be."""
        if not self.am_interested or (self.peer_choking and not self.allowed_fast):
            return
        room = min(blocks, self.peer_reqq - len(self.in_flight))
        has = self.have if not self.peer_choking else _Only(self.have, self.allowed_fast)
        picked = self.swarm.picker.pick(self.key, has, room, trio.current_time(),
                                        urgent_only=True)
        if picked:
            self.in_flight.update(picked)
            self.queue(*(wire.Request(b.piece, b.begin, b.length) for b in picked))

    def _fill_requests(self) -> None:
        if not self.am_interested:
            return
        if self.peer_choking and not self.allowed_fast:
            return
        room = self.pipeline_target() - len(self.in_flight)
        if room <= 0:
            return
        has: object = self.have if not self.peer_choking else _Only(self.have, self.allowed_fast)
        assert isinstance(has, Bitfield | _Only)
        blocks = self.swarm.picker.pick(self.key, has, room, trio.current_time())
        if not blocks:
            return
        self.in_flight.update(blocks)
        self.queue(*(wire.Request(b.piece, b.begin, b.length) for b in blocks))

    # Uploading --------------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        swarm = self.swarm
        storage = swarm.torrent.storage
        plen = swarm.info.piece_length
        while True:
            if not self.upload_queue:
                self._upload_wake = trio.Event()
                await self._upload_wake.wait()
                continue
            batch = [self.upload_queue.popleft()
                     for _ in range(min(UPLOAD_BATCH, len(self.upload_queue)))]
            size = sum(r.length for r in batch)
            wait = swarm.upload_bucket.delay(size, trio.current_time())
            if wait:
                await trio.sleep(wait)
            if self.am_choking:
                continue
            blocks = await trio.to_thread.run_sync(_read_blocks, storage, plen, batch)
            self.queue(*(wire.Piece(r.index, r.begin, d) for r, d in zip(batch, blocks,
                                                                         strict=True)))
            now = trio.current_time()
            self.upload_meter.add(size, now)
            swarm.upload_meter.add(size, now)
            swarm.torrent.counters.uploaded += size
            while self._outbox_bytes > OUTBOX_HIGH_WATER:
                self._outbox_drained = trio.Event()
                await self._outbox_drained.wait()


def _brief(m: wire.Message) -> str:
    if isinstance(m, wire.Piece):
        return f"Piece({m.index}, {m.begin}, {len(m.data)} bytes)"
    if isinstance(m, wire.BitfieldMessage | wire.Extended):
        return f"{type(m).__name__}({len(encode_safe(m))} bytes)"
    return repr(m)


def encode_safe(m: wire.Message) -> bytes:
    return wire.encode(m)


def _read_blocks(storage: Storage, piece_length: int, batch: list[wire.Request]) -> list[bytes]:
    return [storage.read(r.index * piece_length + r.begin, r.length) for r in batch]


class _Only:
    """The peer's pieces narrowed to the allowed-fast set (while it chokes us)."""

    def __init__(self, have: Bitfield, allowed: set[int]) -> None:
        self.have = have
        self.allowed = allowed

    def __contains__(self, piece: object) -> bool:
        return piece in self.allowed and piece in self.have


# Connecting -------------------------------------------------------------------------------


async def read_handshake(stream: trio.abc.Stream, reader: wire.MessageReader) -> wire.Handshake:
    """Feed the stream to `reader` until the peer's handshake is complete."""
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        while True:
            handshake = reader.handshake()
            if handshake is not None:
                return handshake
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise PeerError("closed during the handshake")
            reader.feed(data)


def our_handshake(swarm: Swarm) -> wire.Handshake:
    return wire.Handshake(info_hash=swarm.meta.info_hash, peer_id=swarm.peer_id,
                          fast=True, extensions=True)


_HANDSHAKE_ERRORS = (PeerError, wire.ProtocolError, trio.TooSlowError,
                     trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def open_connection(
    host: str, port: int, bind: str | None
) -> trio.SocketStream:
    """A TCP connection from `bind` (when its address family fits) to host:port."""
    local = None
    if bind:
        try:
            same_family = (ipaddress.ip_address(bind).version
                           == ipaddress.ip_address(host).version)
        except ValueError:
            same_family = False
        if same_family:
            local = bind
    with trio.fail_after(CONNECT_TIMEOUT):
        return await trio.open_tcp_stream(host, port, local_address=local)


async def connect(
    swarm: Swarm, address: tuple[str, int], on_connected: Callable[[], None] = lambda: None,
    *, encrypted: bool = False,
) -> bool:
    """Dial a peer, exchange handshakes and run the connection until it ends.

    `encrypted`: open with MSE (for peers that refuse plain text; the swarm tries it
    when a plain handshake fails). False if no connection was made.
    """
    try:
        socket_stream = await open_connection(address[0], address[1], swarm.config.bind)
    except (OSError, trio.TooSlowError) as exc:
        log.debug("cannot connect to %s:%d: %s", *address, exc)
        return False
    stream: trio.abc.Stream = socket_stream
    try:
        hello = our_handshake(swarm).encode()
        if encrypted:
            stream, _ = await mse.initiate(socket_stream, swarm.meta.info_hash, hello)
        else:
            await stream.send_all(hello)
        reader = wire.MessageReader(num_pieces=swarm.info.num_pieces)
        theirs = await read_handshake(stream, reader)
        if theirs.info_hash != swarm.meta.info_hash:
            raise PeerError("the peer answered for another torrent")
        if theirs.peer_id == swarm.peer_id:
            raise PeerError("connected to ourselves")
    except (*_HANDSHAKE_ERRORS, mse.MSEError) as exc:
        log.debug("%s handshake with %s:%d failed: %s",
                  "encrypted" if encrypted else "plain", *address, exc)
        await socket_stream.aclose()
        return False
    on_connected()
    await _run_peer(swarm, stream, address, theirs, reader)
    return True


async def serve_incoming(stream: trio.SocketStream, lookup: dict[bytes, Swarm]) -> None:
    """An incoming connection, plain or encrypted (MSE): find its torrent, answer, run."""
    peer_stream: trio.abc.Stream = stream
    try:
        host, port = stream.socket.getpeername()[:2]
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            first = await stream.receive_some(READ_SIZE)
        if not first:
            raise PeerError("closed before the handshake")
        reader = wire.MessageReader()
        if mse.looks_plain(first):
            reader.feed(first)
        else:
            peer_stream, plain, _ = await mse.accept(stream, first, mse.skey_lookup(lookup))
            reader.feed(plain)
        theirs = await read_handshake(peer_stream, reader)
        swarm = lookup.get(theirs.info_hash)
        if swarm is None or theirs.peer_id == swarm.peer_id or host in swarm.banned:
            await stream.aclose()
            return
        await peer_stream.send_all(our_handshake(swarm).encode())
    except (*_HANDSHAKE_ERRORS, mse.MSEError) as exc:
        log.debug("incoming handshake failed: %s", exc)
        await stream.aclose()
        return
    await _run_peer(swarm, peer_stream, (host, port), theirs, reader)


async def _run_peer(swarm: Swarm, stream: trio.abc.Stream, address: tuple[str, int],
                    theirs: wire.Handshake, reader: wire.MessageReader) -> None:
    peer = PeerConnection(swarm, stream, address, theirs, reader)
    if not swarm.peer_connected(peer):
        await stream.aclose()
        return
    await peer.run()
