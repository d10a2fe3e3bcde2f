"""One peer connection on a trio stream: the I/O around `btfs.peerstate`.

The protocol state is pure (`PeerState`); this shell feeds it the messages that arrive
and the time, passes its events to the swarm through the small `PeerHost` interface, and
sends what it queued. Outgoing messages go through one outbox drained by one writer
task, so small messages (have, request) coalesce into few writes. The connection ends
at once when the peer closes it, breaks the protocol, stalls, or the swarm closes it;
`PeerHost.peer_gone` then releases its slot and its requests.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Container, Sequence
from typing import Protocol

import trio

from btfs import pex, wire
from btfs.dial import CLIENT_NAME, READ_SIZE, Established
from btfs.errors import BtfsError, first_leaf
from btfs.peerstate import (
    STREAMING_PIPELINE,
    GotBlock,
    GotDhtPort,
    GotHave,
    GotPeers,
    GotPieces,
    InterestChanged,
    LostHave,
    MayRequest,
    PeerClosed,
    PeerError,
    PeerState,
    Released,
    UploadQueued,
    Wasted,
)
from btfs.picker import Block
from btfs.rates import RateMeter

log = logging.getLogger(__name__)

SEND_TIMEOUT = 60.0
TICK = 5.0
UPLOAD_BATCH = 16
OUTBOX_HIGH_WATER = 1 << 20


class PeerHost(Protocol):
    """What a connection needs from its swarm."""

    def pick(self, peer: PeerConnection, has: Container[int], count: int, *,
             urgent_only: bool = False, patience: float | None = None) -> list[Block]: ...

    def pieces_changed(self, peer: PeerConnection,
                       event: GotHave | LostHave | GotPieces) -> None: ...

    def released(self, peer: PeerConnection, blocks: Sequence[Block]) -> None: ...

    def block_received(self, peer: PeerConnection, block: Block, data: bytes) -> None: ...

    def wasted(self, size: int) -> None: ...

    def interest_changed(self, peer: PeerConnection) -> None: ...

    def may_request(self, peer: PeerConnection) -> None:
        """The peer unchoked us or allowed a piece: requests can go out."""
        ...

    def pipeline_limit(self) -> int:
        """The most requests to keep in flight at a peer (beyond those a read waits on);
        never below `STREAMING_PIPELINE`."""
        ...

    def receive_delay(self, size: int) -> float: ...

    def send_delay(self, size: int) -> float: ...

    async def read_blocks(self, requests: Sequence[wire.Request]) -> list[bytes | None]: ...

    def uploaded(self, peer: PeerConnection, size: int) -> None: ...

    def peer_gone(self, peer: PeerConnection, closed_by_peer: bool) -> None: ...

    def dht_port(self) -> int:
        """Our DHT node's UDP port, 0 if we run none (BEP 5 PORT message)."""
        ...

    def dht_node_seen(self, peer: PeerConnection, port: int) -> None: ...

    def peers_exchanged(self, peer: PeerConnection, peers: dict[tuple[str, int], int]) -> None:
        """Peers `peer` told us of by peer exchange (address -> BEP 11 flags)."""

    def connected_peers(self) -> dict[tuple[str, int], int]:
        """Our connected peers by listening address, with their BEP 11 flags, for PEX."""


class PeerConnection:
    """A connected peer after both handshakes."""

    def __init__(self, host: PeerHost, state: PeerState, connection: Established, *,
                 outgoing: bool = False) -> None:
        self.host = host
        self.outgoing = outgoing  # we dialled it: its address is one that accepts
        self.state = state
        self.stream = connection.stream
        self.address = connection.address
        self.peer_id = connection.handshake.peer_id
        self.extensions = connection.handshake.extensions
        self.dht = connection.handshake.dht
        self.reader = connection.reader
        self.reader.fast = state.fast
        self.reader.set_num_pieces(state.num_pieces)
        self.download_meter = RateMeter(window=2.0)
        self.upload_meter = RateMeter(window=2.0)
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._outbox_wake = trio.Event()
        self._outbox_drained = trio.Event()
        self._wake = trio.Event()
        self._upload_wake = trio.Event()
        self._refused: set[int] = set()  # pieces whose requests we could not answer
        self._cancel_scope = trio.CancelScope()
        self.started = trio.current_time()
        self.closed = False
        self._trace = log.isEnabledFor(logging.DEBUG)

    def __repr__(self) -> str:
        return f"<peer {self.address[0]}:{self.address[1]} {self.state.client or '?'}>"

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where the peer accepts connections: the address we dialled, or its address with
        the port of its extension handshake; None if it did not say."""
        if self.outgoing:
            return self.address
        if self.state.listen_port:
            return self.address[0], self.state.listen_port
        return None

    @property
    def pex_flags(self) -> int:
        """What peer exchange says of this peer to others (BEP 11 `added.f`)."""
        flags = pex.REACHABLE if self.outgoing else 0
        if self.state.prefers_encryption:
            flags |= pex.PREFERS_ENCRYPTION
        if self.state.peer_is_seed or self.state.upload_only:
            flags |= pex.SEED
        return flags

    # What the swarm does to a connection ----------------------------------------------------

    def flush(self) -> None:
        """Send soon, in order, what the protocol state queued."""
        messages = self.state.take_outbox()
        if not messages or self.closed:
            return
        if self._trace:
            log.debug("%s -> %s", self, ", ".join(_brief(m) for m in messages))
        for m in messages:
            data = wire.encode(m)
            self._outbox.append(data)
            self._outbox_bytes += len(data)
        self._outbox_wake.set()

    def send_have(self, piece: int) -> None:
        self.state.announce(piece)
        self.flush()

    def send_donthave(self, piece: int) -> None:
        self.state.withdraw(piece)
        self.flush()

    def send_cancel(self, block: Block) -> None:
        self.state.cancel(block)
        self.flush()

    def set_choking(self, choke: bool) -> None:
        self.state.set_choking(choke)
        self.flush()

    def update_interest(self, candidates: Sequence[int] | range | None = None) -> None:
        if self.state.update_interest(candidates):
            self.kick()
        self.flush()

    def kick(self) -> None:
        """Something changed (a read waits, a piece arrived): reconsider requests now."""
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._cancel_scope.cancel()

    def request_urgent(self, blocks: int) -> None:
        """Ask now for blocks a read waits on, past the pipeline target if need be."""
        has = self.state.requestable()
        if has is None:
            return
        room = min(blocks, self.state.peer_reqq - len(self.state.in_flight))
        patience = self.state.patience(self.download_meter.value(trio.current_time()), room)
        self._request(self.host.pick(self, has, room, urgent_only=True, patience=patience))

    # Running --------------------------------------------------------------------------------

    async def run(self, *, listen_port: int) -> None:
        """Exchange state, then run until the peer or the swarm ends the connection."""
        closed_by_peer = False
        with self._cancel_scope:
            try:
                self.state.introduce(listen_port=listen_port, client=CLIENT_NAME,
                                     yourip=_packed(self.address[0]),
                                     extensions_enabled=self.extensions,
                                     dht_port=self.host.dht_port() if self.dht else 0)
                self.flush()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer_loop)
                    nursery.start_soon(self._receive_loop)
                    nursery.start_soon(self._request_loop)
                    nursery.start_soon(self._upload_loop)
                    nursery.start_soon(self._timer_loop)
            except* (PeerClosed, trio.BrokenResourceError, trio.ClosedResourceError,
                     OSError) as group:
                closed_by_peer = True
                log.debug("connection to %s:%d ended: %s", *self.address, first_leaf(group))
            except* BtfsError as group:
                log.info("dropping %s:%d: %s", *self.address, first_leaf(group))
            except* Exception as group:
                # A bug of ours must cost this one connection, never the whole download.
                log.error("dropping %s:%d after an internal error", *self.address,
                          exc_info=first_leaf(group))
        self.closed = True
        self.host.peer_gone(self, closed_by_peer)
        self.state.in_flight.clear()
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

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
            self.state.sent(trio.current_time())

    async def _receive_loop(self) -> None:
        reader = self.reader
        data: bytes | bytearray = b""  # what came with the handshake is in the reader
        while True:
            try:
                while (message := reader.next_message()) is not None:
                    self._handle(message)
            except wire.ProtocolError as exc:
                raise PeerError(str(exc)) from exc
            self.flush()
            delay = self.host.receive_delay(len(data))
            if delay:
                await trio.sleep(delay)
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                raise PeerClosed("the peer closed the connection")
            reader.feed(data)

    async def _timer_loop(self) -> None:
        while True:
            await trio.sleep(TICK)
            now = trio.current_time()
            self.state.tick(now)
            if self.state.pex_due(now):
                mine = [self.address] + [a for a in (self.listen_address,) if a is not None]
                self.state.exchange_peers(now, self.host.connected_peers(), mine)
            self.flush()

    def _handle(self, m: wire.Message) -> None:
        if self._trace and not isinstance(m, wire.Piece):
            log.debug("%s <- %s", self, _brief(m))
        now = trio.current_time()
        for event in self.state.receive(m, now):
            if isinstance(event, GotBlock):
                self.download_meter.add(len(event.data), now)
                self.host.block_received(self, event.block, event.data)
                target = self._pipeline_target(self.download_meter.value(now))
                if len(self.state.in_flight) <= target * 3 // 4:
                    self.kick()
            elif isinstance(event, GotHave | LostHave | GotPieces):
                self.host.pieces_changed(self, event)
            elif isinstance(event, Released):
                self.host.released(self, event.blocks)
            elif isinstance(event, MayRequest):
                self.host.may_request(self)
            elif isinstance(event, InterestChanged):
                self.host.interest_changed(self)
            elif isinstance(event, UploadQueued):
                self._upload_wake.set()
            elif isinstance(event, Wasted):
                self.host.wasted(event.size)
            elif isinstance(event, GotDhtPort):
                self.host.dht_node_seen(self, event.port)
            elif isinstance(event, GotPeers):
                self.host.peers_exchanged(self, event.peers)

    # Requesting ---------------------------------------------------------------------------

    async def _request_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            self._fill_requests()
            with trio.move_on_after(1.0):
                await self._wake.wait()

    def _fill_requests(self) -> None:
        has = self.state.requestable()
        if has is None:
            return
        rate = self.download_meter.value(trio.current_time())
        room = self._pipeline_target(rate) - len(self.state.in_flight)
        if room > 0:
            patience = self.state.patience(rate, room)
            self._request(self.host.pick(self, has, room, patience=patience))

    def _pipeline_target(self, rate: float) -> int:
        """The peer's pipeline target within the swarm's limit. The limit is never below
        `STREAMING_PIPELINE`, so it is asked for (it looks at every reader's window) only
        when the rate alone would go past that: not on every block of a slow peer."""
        target = self.state.pipeline_target(rate)
        if target <= STREAMING_PIPELINE:
            return target
        return self.state.pipeline_target(rate, self.host.pipeline_limit())

    def _request(self, blocks: list[Block]) -> None:
        if blocks:
            self.state.request(blocks)
            self.flush()

    # Uploading ----------------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        state = self.state
        while True:
            if not state.upload_queue:
                self._upload_wake = trio.Event()
                await self._upload_wake.wait()
                continue
            batch = state.take_uploads(UPLOAD_BATCH)
            size = sum(r.length for r in batch)
            wait = self.host.send_delay(size)
            if wait:
                await trio.sleep(wait)
            if state.am_choking:
                continue
            blocks = await self.host.read_blocks(batch)
            sent = 0
            choke = False
            for r, data in zip(batch, blocks, strict=True):
                if data is None:  # no longer verified (or evicted): not ours to give
                    # Without BEP 6 a request cannot be refused: a choke drops them all.
                    # A peer asking again for a piece it was refused (libtorrent does, at
                    # once, since a `have` cannot be taken back) is choked too, until
                    # the next rechoke, rather than rejected in a tight loop.
                    choke = choke or not state.fast or r.index in self._refused
                    self._refused.add(r.index)
                    if state.fast:
                        state.outbox.append(wire.RejectRequest(r.index, r.begin, r.length))
                else:
                    state.outbox.append(wire.Piece(r.index, r.begin, data))
                    sent += len(data)
            if choke:
                state.set_choking(True)
            self.flush()
            self.upload_meter.add(sent, trio.current_time())
            self.host.uploaded(self, sent)
            while self._outbox_bytes > OUTBOX_HIGH_WATER:
                self._outbox_drained = trio.Event()
                await self._outbox_drained.wait()


def _packed(host: str) -> bytes | None:
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return None


def _brief(m: wire.Message) -> str:
    if isinstance(m, wire.Piece):
        return f"Piece({m.index}, {m.begin}, {len(m.data)} bytes)"
    if isinstance(m, wire.BitfieldMessage | wire.Extended):
        return f"{type(m).__name__}({len(wire.encode(m))} bytes)"
    return repr(m)

