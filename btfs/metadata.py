"""BEP 9: the info dictionary from peers, for magnet URIs.

The codec and the assembly are pure (`btfs.extensions`); this is the trio shell:
`fetch_metadata` finds peers (the magnet's trackers, the DHT, `x.pe` peers, `--peer`), asks
each that supports `ut_metadata` for the 16 KiB pieces of the info dictionary, and
accepts the result only when its SHA-1 is the magnet's info-hash. Serving our own info
dictionary to others is part of every connection (`btfs.peerstate`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from btfs import bencode, pex, wire
from btfs.dht.service import DhtService
from btfs.dial import CLIENT_NAME, read_handshake, tcp_opener
from btfs.errors import BencodeError, BtfsError, MetainfoError
from btfs.extensions import (
    DATA,
    REJECT,
    UT_METADATA_ID,
    ExtensionHandshake,
    MetadataAssembler,
    encode_request,
    parse_message,
)
from btfs.lsdservice import LsdService
from btfs.magnet import Magnet
from btfs.metainfo import Metainfo, parse_info
from btfs.trackers import TrackerSession

log = logging.getLogger(__name__)

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

DHT_RETRY_EMPTY = 15.0     # a DHT lookup that found nobody is repeated after this long
DHT_RETRY = 60.0           # ... and one that found peers
MAX_PEX_PEERS = 100        # peers taken from one peer's exchange message
MAX_HANDED_ON = 2000       # peers found that the session's swarm is given
PEX_WAIT = 15.0            # how long a peer without the metadata may take to name others


@dataclass
class MetadataSearch:
    """What a metadata fetch has tried so far: for the status line and the final error."""

    found: dict[str, int] = field(default_factory=lambda: {
        "tracker": 0, "dht": 0, "pex": 0, "lsd": 0, "peer": 0})
    asked: int = 0            # peers we connected to or tried to
    without: int = 0          # ... that answered without the metadata
    trackers: int = 0
    trackers_off: bool = False
    tracker_errors: dict[str, str] = field(default_factory=dict)
    dht: DhtService | None = None
    dht_lookups: int = 0
    peers: dict[tuple[str, int], str] = field(default_factory=dict)  # each with its source

    def handed_on(self) -> dict[tuple[str, int], str]:
        """The peers found, by the swarm's source names: the session goes on with them."""
        names = {"tracker": "trackers", "peer": "--peer"}
        return {a: names.get(source, source) for a, source in self.peers.items()}

    def summary(self) -> str:
        """E.g. "0 peers from trackers (1 tracker: connection refused), 3 peers from the
        DHT (12 nodes, 1 lookup), 0 peers from --peer or the magnet; 3 asked, 1 without
        the metadata"."""
        f = self.found
        if self.trackers_off:
            parts = ["trackers off"]
        elif not self.trackers:
            parts = ["no trackers"]
        else:
            where = f"{self.trackers} {'tracker' if self.trackers == 1 else 'trackers'}"
            if self.tracker_errors:
                where += ": " + "; ".join(sorted(set(self.tracker_errors.values())))
            parts = [f"{_peers(f['tracker'])} from trackers ({where})"]
        if self.dht is None:
            parts.append("DHT off")
        else:
            parts.append(f"{_peers(f['dht'])} from the DHT ("
                         f"{_count(self.dht.nodes_known, 'node')}, "
                         f"{_count(self.dht_lookups, 'lookup')})")
        if f["pex"] or f["lsd"]:
            parts.append(f"{_peers(f['pex'])} from peer exchange, {f['lsd']} from the LAN")
        parts.append(f"{_peers(f['peer'])} from --peer or the magnet")
        asked = f"{self.asked} asked"
        if self.without:
            asked += f", {self.without} without the metadata"
        return ", ".join(parts) + "; " + asked


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _peers(n: int) -> str:
    return _count(n, "peer")


async def fetch_metadata(
    magnet: Magnet,
    peer_id: bytes,
    peers: Iterable[tuple[str, int]] = (),
    *,
    port: int = 0,
    bind: str | None = None,
    use_trackers: bool = True,
    dht: DhtService | None = None,
    lsd: LsdService | None = None,
    search: MetadataSearch | None = None,
) -> Metainfo:
    """Ask peers for the torrent's info dictionary until one gives a verified copy.

    Peers: `peers` (the caller's, with the magnet's `x.pe` ones), with `use_trackers` those
    the magnet's trackers name, and those the DHT knows. The trackers are told `port` and
    `peer_id`, those of the session that follows, and `stopped` at the end.
    """
    search = search if search is not None else MetadataSearch()
    search.dht = dht
    search.trackers_off = bool(magnet.trackers) and not use_trackers
    open_stream = tcp_opener(bind)
    candidates: list[tuple[str, int]] = []
    wake = trio.Event()
    tried: set[tuple[str, int]] = set()
    result: list[bytes] = []

    def add(addresses: list[tuple[str, int]], source: str) -> None:
        nonlocal wake
        fresh = [a for a in addresses if a not in tried and a not in candidates]
        search.found[source] += len(fresh)
        for address in fresh:
            if len(search.peers) < MAX_HANDED_ON:
                search.peers.setdefault(address, source)
        candidates.extend(fresh)
        wake.set()

    async def one_peer(address: tuple[str, int]) -> None:
        """Ask one peer, again after 2 s, 6 s, 18 s... if it fails (until another answers)."""
        search.asked += 1
        for attempt in range(8):
            if attempt:
                await trio.sleep(min(60.0, 2.0 * 3 ** (attempt - 1)))
            try:
                with trio.fail_after(30):
                    stream = await open_stream(*address)
                    try:
                        raw = await _metadata_from(stream, magnet.info_hash, peer_id,
                                                   lambda p: add(p, "pex"))
                    finally:
                        await stream.aclose()
            except (OSError, trio.TooSlowError, trio.BrokenResourceError,
                    trio.ClosedResourceError, BtfsError) as exc:
                log.debug("no metadata from %s:%d: %s", *address, exc)
                continue
            if raw is None:
                search.without += 1
                return
            if not result:
                result.append(raw)
                nursery.cancel_scope.cancel()
            return

    async def dht_lookups(service: DhtService) -> None:
        while True:
            found = await service.lookup(magnet.info_hash, lambda p: add(p, "dht"))
            search.dht_lookups += 1
            await trio.sleep(DHT_RETRY if found else DHT_RETRY_EMPTY)

    session: TrackerSession | None = None
    try:
        async with trio.open_nursery() as nursery:
            add(list(peers), "peer")
            if use_trackers and magnet.trackers:
                session = TrackerSession(
                    tiers=[list(t) for t in magnet.trackers], info_hash=magnet.info_hash,
                    peer_id=peer_id, port=port, stats=lambda: (0, 0, 1),
                    on_peers=lambda p: add(p, "tracker"), bind=bind,
                )
                search.trackers = sum(len(t) for t in magnet.trackers)
                nursery.start_soon(session.run)
            if dht is not None:
                nursery.start_soon(dht_lookups, dht)
            if lsd is not None:
                lsd.register(magnet.info_hash, lambda p: add(p, "lsd"))
            while not result:
                for address in candidates:
                    if address not in tried:
                        tried.add(address)
                        nursery.start_soon(one_peer, address)
                candidates.clear()
                wake = trio.Event()
                with trio.move_on_after(1):
                    await wake.wait()
                if session is not None:
                    search.tracker_errors = {u: e for u, e in session.last_error.items() if e}
    finally:
        if lsd is not None:
            lsd.unregister(magnet.info_hash)
        if session is not None:
            await session.stop(timeout=3)
    return metainfo_from_magnet(magnet, result[0])


async def _metadata_from(stream: trio.abc.Stream, info_hash: bytes, peer_id: bytes,
                         on_pex: Callable[[list[tuple[str, int]]], None] = lambda p: None,
                         ) -> bytes | None:
    """Handshake, then the ut_metadata exchange with one peer; None if it has none. The
    peers it names by peer exchange meanwhile go to `on_pex` (it may lack the metadata,
    and know who has it)."""
    await stream.send_all(wire.Handshake(info_hash, peer_id, fast=True, extensions=True).encode())
    reader = wire.MessageReader()
    theirs = await read_handshake(stream, reader)
    if theirs.info_hash != info_hash or not theirs.extensions:
        return None
    reader.fast = theirs.fast
    ours = ExtensionHandshake(extensions={"ut_metadata": UT_METADATA_ID,
                                          "ut_pex": pex.UT_PEX_ID}, client=CLIENT_NAME)
    await stream.send_all(wire.encode(wire.Extended(0, ours.encode())))
    assembler: MetadataAssembler | None = None
    their_id = 0
    while True:
        message = await _next_message(stream, reader)
        if message is None:
            return None
        if not isinstance(message, wire.Extended):
            continue
        if message.ext_id == 0:
            hs = ExtensionHandshake.decode(message.payload)
            their_id = hs.extensions.get("ut_metadata", 0)
            if not their_id or not hs.metadata_size:
                # No metadata here; a peer that exchanges peers may name one that has it.
                if not hs.extensions.get("ut_pex"):
                    return None
                await _pex_only(stream, reader, on_pex)
                return None
            assembler = MetadataAssembler(info_hash, hs.metadata_size)
            order = assembler.missing()
            random.shuffle(order)
            await stream.send_all(b"".join(
                wire.encode(wire.Extended(their_id, encode_request(p))) for p in order))
        elif message.ext_id == pex.UT_PEX_ID:
            try:
                on_pex(list(pex.decode(message.payload).added)[:MAX_PEX_PEERS])
            except pex.PexError:
                return None
        elif message.ext_id == UT_METADATA_ID and assembler is not None:
            m = parse_message(message.payload)
            if m.kind == REJECT:
                return None
            if m.kind == DATA:
                raw = assembler.add(m.piece, m.data)
                if raw is not None:
                    return raw


async def _pex_only(stream: trio.abc.Stream, reader: wire.MessageReader,
                    on_pex: Callable[[list[tuple[str, int]]], None]) -> None:
    """Wait (a little) for the peers a peer without the metadata names by peer exchange."""
    with trio.move_on_after(PEX_WAIT):
        while True:
            message = await _next_message(stream, reader)
            if message is None:
                return
            if isinstance(message, wire.Extended) and message.ext_id == pex.UT_PEX_ID:
                try:
                    on_pex(list(pex.decode(message.payload).added)[:MAX_PEX_PEERS])
                except pex.PexError:
                    pass
                return


async def _next_message(stream: trio.abc.Stream,
                        reader: wire.MessageReader) -> wire.Message | None:
    """The peer's next message, reading as needed; None once it closes."""
    while True:
        message = reader.next_message()
        if message is not None:
            return message
        data = await stream.receive_some(65536)
        if not data:
            return None
        reader.feed(data)
