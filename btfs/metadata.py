"""BEP 9: the info dictionary from peers, for magnet URIs; and serving ours to others.

The codec (`encode_*`, `parse_message`, `MetadataAssembler`) is pure. `fetch_metadata`
is the trio shell: it finds peers (the magnet's trackers and `x.pe` peers, `--peer`),
asks each that supports `ut_metadata` for the 16 KiB pieces of the info dictionary,
and accepts the result only when its SHA-1 is the magnet's info-hash.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from btfs import bencode, wire
from btfs.errors import BencodeError, BtfsError, MetainfoError
from btfs.magnet import Magnet
from btfs.metainfo import Metainfo, parse_info

log = logging.getLogger(__name__)

PIECE_SIZE = 16 * 1024
MAX_METADATA = 16 << 20
OUR_EXTENSION_ID = 3  # the id peers use for ut_metadata messages to us
REQUEST, DATA, REJECT = 0, 1, 2


class MetadataError(BtfsError):
    """A peer's metadata message is malformed or its data does not hash to the torrent."""


@dataclass(frozen=True)
class MetadataMessage:
    kind: int
    piece: int
    total_size: int | None = None
    data: bytes = b""


def encode_request(piece: int) -> bytes:
    return bencode.encode({b"msg_type": REQUEST, b"piece": piece})


def encode_reject(piece: int) -> bytes:
    return bencode.encode({b"msg_type": REJECT, b"piece": piece})


def encode_data(piece: int, raw_info: bytes) -> bytes:
    chunk = raw_info[piece * PIECE_SIZE : (piece + 1) * PIECE_SIZE]
    header = {b"msg_type": DATA, b"piece": piece, b"total_size": len(raw_info)}
    return bencode.encode(header) + chunk


def parse_message(payload: bytes) -> MetadataMessage:
    """A ut_metadata message: a bencoded dictionary, then the data for `data` messages."""
    try:
        header, end = bencode.decode_prefix(payload)
    except BencodeError as exc:
        raise MetadataError(f"bad metadata message: {exc}") from exc
    if not isinstance(header, dict):
        raise MetadataError("metadata message is not a dictionary")
    kind, piece = header.get(b"msg_type"), header.get(b"piece")
    if kind not in (REQUEST, DATA, REJECT) or not isinstance(piece, int) or piece < 0:
        raise MetadataError("metadata message without a valid msg_type and piece")
    assert isinstance(kind, int)
    total = header.get(b"total_size")
    if kind == DATA and (not isinstance(total, int) or not 0 < total <= MAX_METADATA):
        raise MetadataError("metadata data message without a valid total_size")
    return MetadataMessage(kind, piece, total if isinstance(total, int) else None,
                           payload[end:] if kind == DATA else b"")


class MetadataAssembler:
    """Pieces of the info dictionary as they arrive; checks the whole against the hash."""

    def __init__(self, info_hash: bytes, size: int) -> None:
        if not 0 < size <= MAX_METADATA:
            raise MetadataError(f"metadata size {size} out of range")
        self.info_hash = info_hash
        self.size = size
        self.count = math.ceil(size / PIECE_SIZE)
        self.pieces: dict[int, bytes] = {}

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.pieces]

    def add(self, piece: int, data: bytes) -> bytes | None:
        """Keep a piece; the whole info dictionary once complete and verified, else None."""
        expected = min(PIECE_SIZE, self.size - piece * PIECE_SIZE)
        if not 0 <= piece < self.count or len(data) != expected:
            raise MetadataError(f"metadata piece {piece} of {len(data)} bytes does not fit")
        self.pieces[piece] = data
        if len(self.pieces) < self.count:
            return None
        raw = b"".join(self.pieces[i] for i in range(self.count))
        if hashlib.sha1(raw).digest() != self.info_hash:
            self.pieces.clear()
            raise MetadataError("metadata does not match the info-hash")
        return raw


def metainfo_from_magnet(magnet: Magnet, raw_info: bytes) -> Metainfo:
    """A Metainfo built from verified info bytes and the magnet's trackers and web seeds."""
    try:
        info_dict = bencode.decode(raw_info)
    except BencodeError as exc:
        raise MetainfoError(f"metadata from peers is not bencode: {exc}") from exc
    if not isinstance(info_dict, dict):
        raise MetainfoError("metadata from peers is not a dictionary")
    return Metainfo(info=parse_info(info_dict), info_hash=magnet.info_hash, raw_info=raw_info,
                    trackers=magnet.trackers, web_seeds=magnet.web_seeds)


# Fetching (trio) -------------------------------------------------------------------------


async def fetch_metadata(
    magnet: Magnet,
    peer_id: bytes,
    peers: Iterable[tuple[str, int]] = (),
    *,
    bind: str | None = None,
    use_trackers: bool = True,
    on_status: Callable[[str], None] = lambda text: None,
) -> Metainfo:
    """Ask peers for the torrent's info dictionary until one gives a verified copy.

    `peers` (the caller's, with the magnet's `x.pe` ones) and, with `use_trackers`, those
    the magnet's trackers name.
    """
    from btfs.peer import open_connection
    from btfs.trackers import TrackerSession

    candidates: list[tuple[str, int]] = list(peers)
    wake = trio.Event()
    tried: set[tuple[str, int]] = set()
    result: list[bytes] = []

    def add(addresses: list[tuple[str, int]]) -> None:
        nonlocal wake
        candidates.extend(a for a in addresses if a not in tried)
        wake.set()

    async def one_peer(address: tuple[str, int]) -> None:
        """Ask one peer, again after 2 s, 6 s, 18 s... if it fails (until another answers)."""
        for attempt in range(8):
            if attempt:
                await trio.sleep(min(60.0, 2.0 * 3 ** (attempt - 1)))
            try:
                with trio.fail_after(30):
                    stream = await open_connection(address[0], address[1], bind)
                    try:
                        raw = await _metadata_from(stream, magnet.info_hash, peer_id)
                    finally:
                        await stream.aclose()
            except (OSError, trio.TooSlowError, trio.BrokenResourceError,
                    trio.ClosedResourceError, BtfsError) as exc:
                log.debug("no metadata from %s:%d: %s", *address, exc)
                continue
            if raw is None:
                return
            if not result:
                result.append(raw)
                nursery.cancel_scope.cancel()
            return

    async with trio.open_nursery() as nursery:
        if use_trackers and magnet.trackers:
            session = TrackerSession(
                tiers=[list(t) for t in magnet.trackers], info_hash=magnet.info_hash,
                peer_id=peer_id, port=6881, stats=lambda: (0, 0, 1), on_peers=add, bind=bind,
            )
            nursery.start_soon(session.run)
        on_status("looking for peers that have the torrent's metadata")
        while not result:
            for address in candidates:
                if address not in tried:
                    tried.add(address)
                    nursery.start_soon(one_peer, address)
            candidates.clear()
            wake = trio.Event()
            with trio.move_on_after(5):
                await wake.wait()
    return metainfo_from_magnet(magnet, result[0])


async def _metadata_from(stream: trio.abc.Stream, info_hash: bytes,
                         peer_id: bytes) -> bytes | None:
    """Handshake, then the ut_metadata exchange with one peer; None if it has none."""
    from btfs.peer import CLIENT_NAME, read_handshake

    await stream.send_all(wire.Handshake(info_hash, peer_id, fast=True, extensions=True).encode())
    reader = wire.MessageReader()
    theirs = await read_handshake(stream, reader)
    if theirs.info_hash != info_hash or not theirs.extensions:
        return None
    reader.fast = theirs.fast
    ours = wire.ExtensionHandshake(extensions={"ut_metadata": OUR_EXTENSION_ID},
                                   client=CLIENT_NAME)
    await stream.send_all(wire.encode(wire.Extended(0, ours.encode())))
    assembler: MetadataAssembler | None = None
    their_id = 0
    while True:
        message = reader.next_message()
        if message is None:
            data = await stream.receive_some(65536)
            if not data:
                return None
            reader.feed(data)
            continue
        if not isinstance(message, wire.Extended):
            continue
        if message.ext_id == 0:
            hs = wire.ExtensionHandshake.decode(message.payload)
            their_id = hs.extensions.get("ut_metadata", 0)
            if not their_id or not hs.metadata_size:
                return None
            assembler = MetadataAssembler(info_hash, hs.metadata_size)
            order = assembler.missing()
            random.shuffle(order)
            await stream.send_all(b"".join(
                wire.encode(wire.Extended(their_id, encode_request(p))) for p in order))
        elif message.ext_id == OUR_EXTENSION_ID and assembler is not None:
            m = parse_message(message.payload)
            if m.kind == REJECT:
                return None
            if m.kind == DATA:
                raw = assembler.add(m.piece, m.data)
                if raw is not None:
                    return raw
