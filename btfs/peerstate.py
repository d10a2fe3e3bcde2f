"""One peer connection's protocol state, fed messages and the time. Pure.

What each side has said and promised: choke and interest both ways, the peer's pieces,
the allowed-fast set, our requests in flight, the peer's requests waiting for upload,
the peer's extension ids, and the clocks behind keep-alive and time-outs. `receive`
takes one decoded message and returns what the swarm must hear of it (`events`);
whatever must go back to the peer is appended to `outbox`, which the trio shell
(`btfs.peer`) drains. A message that breaks the protocol raises `PeerError`.

The state knows the torrent only through what it is given: the number and sizes of
pieces, our verified pieces (a live container), whether a piece is wanted, and the
info dictionary's bytes for BEP 9 requests. Block choice stays with the picker.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

from btfs import extensions, pex, wire
from btfs.bitfield import Bitfield, BitfieldError
from btfs.errors import BtfsError
from btfs.picker import Block

BLOCK = 16 * 1024
KEEPALIVE_INTERVAL = 90.0
IDLE_TIMEOUT = 180.0
SNUB_TIMEOUT = 60.0
MIN_PIPELINE = 8
MAX_PIPELINE = 400
# While a file of the torrent is open: at most 1 MiB asked of a peer ahead of a read that
# may come (a seek's piece queues behind what is in flight, and what is already in the
# sockets' buffers cannot be cancelled); 1 MiB per round trip is still 10 MB/s per peer
# at 100 ms.
STREAMING_PIPELINE = 64
PIPELINE_SECONDS = 0.3  # short: a read's requests must not queue behind seconds of others
MAX_PEER_REQUESTS = 500
MIN_PATIENCE = 0.25  # a block a read waits on is asked of a second peer after 0.25-1 s
MAX_PATIENCE = 1.0


class PeerError(BtfsError):
    """A peer broke the protocol, lied or stalled; the connection is dropped."""


class PeerClosed(PeerError):
    """The peer ended the connection (EOF or reset)."""


# What the swarm must hear of a message ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class GotHave:
    """The peer announced one more piece."""

    piece: int


@dataclass(frozen=True, slots=True)
class LostHave:
    """The peer no longer has a piece it announced (BEP 54 `lt_donthave`)."""

    piece: int


@dataclass(frozen=True, slots=True)
class GotPieces:
    """The peer's whole piece set was replaced (bitfield, have-all, have-none); `old` was it."""

    old: Bitfield


@dataclass(frozen=True, slots=True)
class GotBlock:
    """A block we asked for."""

    block: Block
    data: bytes


@dataclass(frozen=True, slots=True)
class Wasted:
    """Bytes of a block nobody asked this peer for (cancelled, or a stray)."""

    size: int


@dataclass(frozen=True, slots=True)
class Released:
    """Requests the peer will not answer (it choked us, or rejected them)."""

    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class MayRequest:
    """The peer unchoked us or allowed a piece: requests can go out now."""


@dataclass(frozen=True, slots=True)
class InterestChanged:
    """The peer became interested or not interested in our pieces."""


@dataclass(frozen=True, slots=True)
class GotDhtPort:
    """BEP 5: the peer runs a DHT node on this UDP port of its address."""

    port: int


@dataclass(frozen=True, slots=True)
class UploadQueued:
    """A request of the peer's was accepted for upload."""


@dataclass(frozen=True, slots=True)
class GotPeers:
    """Peers the peer told us of by peer exchange (BEP 11), new to this connection."""

    peers: dict[tuple[str, int], int]  # address -> BEP 11 flags


Event = (GotHave | LostHave | GotPieces | GotBlock | Wasted | Released | MayRequest
         | InterestChanged | UploadQueued | GotDhtPort | GotPeers)


class _AllowedOnly:
    """The peer's pieces narrowed to the allowed-fast set (while it chokes us)."""

    def __init__(self, have: Bitfield, allowed: set[int]) -> None:
        self.have = have
        self.allowed = allowed

    def __contains__(self, piece: object) -> bool:
        return piece in self.allowed and piece in self.have


class PeerState:
    """Both sides' protocol state for one connection, after the handshakes."""

    def __init__(
        self,
        num_pieces: int,
        piece_size: Callable[[int], int],
        ours: Container[int],
        wanted: Callable[[int], bool],
        *,
        fast: bool,
        now: float,
        raw_info: bytes = b"",
        pex_enabled: bool = False,
    ) -> None:
        self.num_pieces = num_pieces
        self.piece_size = piece_size
        self.ours = ours
        self.wanted = wanted
        self.fast = fast
        self.raw_info = raw_info
        self.have = Bitfield(num_pieces)
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.allowed_fast: set[int] = set()
        self.in_flight: set[Block] = set()
        self.upload_queue: deque[wire.Request] = deque()
        self.peer_reqq = MAX_PIPELINE
        self.client = ""
        self.their_metadata_id = 0
        self.their_pex_id = 0
        self.their_donthave_id = 0
        self.listen_port: int | None = None  # from their extension handshake
        self.yourip: bytes | None = None  # our address as the peer sees it
        self.prefers_encryption = False
        self.upload_only = False
        self.pex_enabled = pex_enabled  # never for private torrents (BEP 27)
        self.pex_sender = pex.PexSender()
        self.pex_receiver = pex.PexReceiver()
        self.outbox: list[wire.Message] = []
        self.last_sent = now
        self.last_received = now
        self.last_block = now

    @property
    def peer_is_seed(self) -> bool:
        return self.have.all()

    def take_outbox(self) -> list[wire.Message]:
        out, self.outbox = self.outbox, []
        return out

    # Our side ----------------------------------------------------------------------------

    def introduce(self, *, listen_port: int, client: str, yourip: bytes | None,
                  extensions_enabled: bool, dht_port: int = 0) -> None:
        """Our pieces first (BEP 6 wants them first), then the extension handshake, then
        our DHT node's port (BEP 5; `dht_port` only when both handshakes said DHT)."""
        verified = [p for p in range(self.num_pieces) if p in self.ours]
        if self.fast and len(verified) == self.num_pieces:
            self.outbox.append(wire.HaveAll())
        elif self.fast and not verified:
            self.outbox.append(wire.HaveNone())
        elif verified:
            bits = Bitfield.from_indices(self.num_pieces, verified).to_bytes()
            self.outbox.append(wire.BitfieldMessage(bits))
        if extensions_enabled:
            ids = {"ut_metadata": extensions.UT_METADATA_ID,
                   "lt_donthave": extensions.LT_DONTHAVE_ID}
            if self.pex_enabled:
                ids["ut_pex"] = pex.UT_PEX_ID
            ext = extensions.ExtensionHandshake(
                extensions=ids,
                client=client, reqq=MAX_PEER_REQUESTS, listen_port=listen_port or None,
                yourip=yourip, metadata_size=len(self.raw_info) or None,
            )
            self.outbox.append(wire.Extended(0, ext.encode()))
        if dht_port:
            self.outbox.append(wire.Port(dht_port))

    def set_choking(self, choke: bool) -> None:
        """Choke or unchoke the peer; choking drops (and, with BEP 6, rejects) its requests."""
        if choke == self.am_choking:
            return
        self.am_choking = choke
        if not choke:
            self.outbox.append(wire.Unchoke())
            return
        rejected = list(self.upload_queue)
        self.upload_queue.clear()
        self.outbox.append(wire.Choke())
        if self.fast:
            self.outbox.extend(wire.RejectRequest(r.index, r.begin, r.length) for r in rejected)

    def update_interest(self, candidates: Iterable[int] | None = None) -> bool:
        """Tell the peer whether it has a piece we want (of all its pieces, or `candidates`).

        True when we just became interested (requests may follow).
        """
        pieces = self.have if candidates is None else (p for p in candidates if p in self.have)
        wanted = any(self.wanted(p) for p in pieces)
        if candidates is not None and not wanted and self.am_interested:
            return False
        if wanted == self.am_interested:
            return False
        self.am_interested = wanted
        self.outbox.append(wire.Interested() if wanted else wire.NotInterested())
        return wanted

    def announce(self, piece: int) -> None:
        """We verified `piece`: say so, and lose interest if it was all we wanted."""
        self.outbox.append(wire.Have(piece))
        if self.am_interested and piece in self.have:
            self.update_interest()

    def withdraw(self, piece: int) -> None:
        """We no longer have `piece` (a bounded cache evicted it): tell a peer that
        understands BEP 54, so it stops asking for it. Others are refused per request."""
        if self.their_donthave_id:
            self.outbox.append(wire.Extended(self.their_donthave_id, piece.to_bytes(4, "big")))

    def requestable(self) -> Container[int] | None:
        """The pieces we may request from now, or None while we may not request at all."""
        if not self.am_interested:
            return None
        if not self.peer_choking:
            return self.have
        if self.allowed_fast:
            return _AllowedOnly(self.have, self.allowed_fast)
        return None

    def pipeline_target(self, rate: float, limit: int = MAX_PIPELINE) -> int:
        """Requests to keep in flight: about `PIPELINE_SECONDS` of the peer's rate, at
        most `limit`."""
        target = math.ceil(rate * PIPELINE_SECONDS / BLOCK)
        return max(min(MIN_PIPELINE, self.peer_reqq),
                   min(target, self.peer_reqq, limit))

    def patience(self, rate: float, count: int) -> float | None:
        """How long the peer should need for `count` more blocks behind its queue, with a
        margin: past that, a block a read waits on is late. None while its rate is unknown."""
        if rate <= 0:
            return None
        queued = (len(self.in_flight) + count) * BLOCK  # blocks are 16 KiB but a last one
        return min(MAX_PATIENCE, max(MIN_PATIENCE, 1.5 * queued / rate))

    def request(self, blocks: Iterable[Block]) -> None:
        for b in blocks:
            self.in_flight.add(b)
            self.outbox.append(wire.Request(b.piece, b.begin, b.length))

    def cancel(self, block: Block) -> None:
        if block in self.in_flight:
            self.in_flight.discard(block)
            self.outbox.append(wire.Cancel(block.piece, block.begin, block.length))

    def take_uploads(self, count: int) -> list[wire.Request]:
        return [self.upload_queue.popleft() for _ in range(min(count, len(self.upload_queue)))]

    def exchange_peers(self, now: float, connected: dict[tuple[str, int], int],
                       exclude: Iterable[tuple[str, int]]) -> None:
        """Tell the peer, if it is time, which peers we connected to and lost (BEP 11)."""
        if not (self.pex_enabled and self.their_pex_id):
            return
        payload = self.pex_sender.message(now, connected, exclude)
        if payload is not None:
            self.outbox.append(wire.Extended(self.their_pex_id, payload))

    def pex_due(self, now: float) -> bool:
        """Whether `exchange_peers` may send now (so the swarm's list of connected peers
        is only built when it might be)."""
        return self.pex_enabled and self.their_pex_id != 0 and self.pex_sender.due(now)

    def sent(self, now: float) -> None:
        self.last_sent = now

    def tick(self, now: float) -> None:
        """Keep-alive when we said nothing for a while; drop a peer that stalls."""
        if now - self.last_sent >= KEEPALIVE_INTERVAL:
            self.outbox.append(wire.KeepAlive())
        if self.in_flight and now - self.last_block > SNUB_TIMEOUT:
            raise PeerError(f"sent none of {len(self.in_flight)} requested blocks "
                            f"in {SNUB_TIMEOUT:.0f} s")
        if now - self.last_received > IDLE_TIMEOUT:
            raise PeerError(f"silent for {IDLE_TIMEOUT:.0f} s")

    # Their side --------------------------------------------------------------------------

    def receive(self, m: wire.Message, now: float) -> list[Event]:
        """Take one message from the peer; what the swarm must hear of it."""
        self.last_received = now
        try:
            return self._receive(m, now)
        except BitfieldError as exc:
            raise PeerError(str(exc)) from exc

    def _receive(self, m: wire.Message, now: float) -> list[Event]:
        if isinstance(m, wire.Piece):
            return self._on_piece(m, now)
        if isinstance(m, wire.Request):
            return self._on_request(m)
        if isinstance(m, wire.Have):
            self._check_index(m.index)
            if self.have.has(m.index):
                return []
            self.have.set(m.index)
            if not self.am_interested and self.wanted(m.index):
                self.update_interest([m.index])
            return [GotHave(m.index)]
        if isinstance(m, wire.BitfieldMessage):
            return self._replace_have(Bitfield.from_bytes(self.num_pieces, m.bits))
        if isinstance(m, wire.HaveAll):
            return self._replace_have(Bitfield.full(self.num_pieces))
        if isinstance(m, wire.HaveNone):
            return self._replace_have(Bitfield(self.num_pieces))
        if isinstance(m, wire.Unchoke):
            self.peer_choking = False
            return [MayRequest()]
        if isinstance(m, wire.Choke):
            self.peer_choking = True
            dropped = tuple(b for b in self.in_flight if b.piece not in self.allowed_fast)
            self.in_flight.difference_update(dropped)
            return [Released(dropped)] if dropped else []
        if isinstance(m, wire.Interested | wire.NotInterested):
            interested = isinstance(m, wire.Interested)
            if interested == self.peer_interested:
                return []
            self.peer_interested = interested
            return [InterestChanged()]
        if isinstance(m, wire.Cancel):
            key = (m.index, m.begin, m.length)
            self.upload_queue = deque(
                r for r in self.upload_queue if (r.index, r.begin, r.length) != key
            )
            return []
        if isinstance(m, wire.RejectRequest):
            block = Block(m.index, m.begin, m.length)
            if block not in self.in_flight:
                return []
            self.in_flight.discard(block)
            return [Released((block,))]
        if isinstance(m, wire.AllowedFast):
            if 0 <= m.index < self.num_pieces:
                self.allowed_fast.add(m.index)
                return [MayRequest()]
            return []
        if isinstance(m, wire.Extended):
            return self._on_extended(m, now)
        if isinstance(m, wire.Port) and m.port:
            return [GotDhtPort(m.port)]
        return []

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise PeerError(f"piece index {index} out of range")

    def _replace_have(self, have: Bitfield) -> list[Event]:
        old = self.have
        self.have = have
        self.update_interest()
        return [GotPieces(old)]

    def _on_piece(self, m: wire.Piece, now: float) -> list[Event]:
        block = Block(m.index, m.begin, len(m.data))
        if block not in self.in_flight:
            return [Wasted(len(m.data))]
        self.in_flight.discard(block)
        self.last_block = now
        return [GotBlock(block, m.data)]

    def _on_request(self, m: wire.Request) -> list[Event]:
        valid = (
            0 <= m.index < self.num_pieces
            and 0 < m.length <= BLOCK
            and m.begin >= 0
            and m.begin + m.length <= self.piece_size(m.index)
        )
        if not valid:
            raise PeerError(f"bad request {m.index}:{m.begin}+{m.length}")
        if self.am_choking or m.index not in self.ours:
            if self.fast:
                self.outbox.append(wire.RejectRequest(m.index, m.begin, m.length))
            return []
        if len(self.upload_queue) >= MAX_PEER_REQUESTS:
            raise PeerError("too many outstanding requests")
        self.upload_queue.append(m)
        return [UploadQueued()]

    def _on_extended(self, m: wire.Extended, now: float) -> list[Event]:
        if m.ext_id == 0:
            try:
                ext = extensions.ExtensionHandshake.decode(m.payload)
            except wire.ProtocolError as exc:
                raise PeerError(str(exc)) from exc
            if ext.client:
                self.client = ext.client
            if ext.reqq:
                self.peer_reqq = max(1, min(ext.reqq, MAX_PIPELINE))
            self.their_metadata_id = ext.extensions.get("ut_metadata", 0)
            self.their_pex_id = ext.extensions.get("ut_pex", 0)
            self.their_donthave_id = ext.extensions.get("lt_donthave", 0)
            self.listen_port = ext.listen_port or self.listen_port
            self.yourip = ext.yourip or self.yourip
            self.prefers_encryption = ext.prefers_encryption
            self.upload_only = ext.upload_only
        elif m.ext_id == pex.UT_PEX_ID and self.pex_enabled and self.their_pex_id:
            try:
                peers = self.pex_receiver.receive(m.payload, now)
            except pex.PexError as exc:
                raise PeerError(str(exc)) from exc
            return [GotPeers(peers)] if peers else []
        elif m.ext_id == extensions.LT_DONTHAVE_ID:
            if len(m.payload) != 4:
                raise PeerError(f"lt_donthave message of {len(m.payload)} bytes")
            piece = int.from_bytes(m.payload, "big")
            self._check_index(piece)
            if piece not in self.have:
                return []
            self.have.clear(piece)
            if self.am_interested and self.wanted(piece):
                self.update_interest()
            events: list[Event] = [LostHave(piece)]
            asked = tuple(b for b in self.in_flight if b.piece == piece)
            if asked:
                self.in_flight.difference_update(asked)
                events.append(Released(asked))
            return events
        elif m.ext_id == extensions.UT_METADATA_ID and self.their_metadata_id:
            try:
                request = extensions.parse_message(m.payload)
            except extensions.MetadataError as exc:
                raise PeerError(str(exc)) from exc
            if request.kind != extensions.REQUEST:
                return []
            raw = self.raw_info
            if request.piece * extensions.PIECE_SIZE < len(raw):
                reply = extensions.encode_data(request.piece, raw)
            else:
                reply = extensions.encode_reject(request.piece)
            self.outbox.append(wire.Extended(self.their_metadata_id, reply))
        return []
