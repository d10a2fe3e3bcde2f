"""Opening peer connections: TCP dials, the BitTorrent handshakes, plain or MSE.

`dial` connects to a peer and exchanges handshakes (plain text, or MSE when asked);
`accept` answers an incoming connection, plain or encrypted, and finds which of our
torrents it wants. Both give an `Established` connection (the stream, the peer's
handshake and the reader holding whatever came after it) or None, and never raise for
what a peer does. Which peers to dial, and whether with MSE, is `btfs.peerbook`'s.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from btfs import __version__, mse, wire
from btfs.peerstate import PeerError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
READ_SIZE = 256 * 1024
CLIENT_NAME = f"btfs {__version__}"

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]


@dataclass
class Established:
    """A connection past both handshakes."""

    stream: trio.abc.Stream
    address: tuple[str, int]
    handshake: wire.Handshake
    reader: wire.MessageReader


@dataclass(frozen=True)
class Identity:
    """Who we are in one torrent: what goes into our handshake, and whom we refuse."""

    info_hash: bytes
    peer_id: bytes
    refuses: Callable[[str], bool] = lambda host: False
    dht: Callable[[], bool] = lambda: False    # whether we run a DHT node (BEP 5 bit)

    def handshake(self) -> wire.Handshake:
        return wire.Handshake(info_hash=self.info_hash, peer_id=self.peer_id,
                              fast=True, extensions=True, dht=self.dht())


_HANDSHAKE_ERRORS = (PeerError, wire.ProtocolError, mse.MSEError, trio.TooSlowError,
                     trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def read_handshake(stream: trio.abc.Stream, reader: wire.MessageReader) -> wire.Handshake:
    """Feed the stream to `reader` until the peer's handshake is complete."""
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        while True:
            handshake = reader.handshake()
            if handshake is not None:
                return handshake
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise PeerClosedEarly("closed during the handshake")
            reader.feed(data)


class PeerClosedEarly(PeerError):
    """The peer hung up before the handshakes were done."""


def tcp_opener(bind: str | None) -> OpenStream:
    """Open TCP connections from `bind` (when its address family fits the peer's)."""

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
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

    return open_stream


async def dial(
    address: tuple[str, int], us: Identity, open_stream: OpenStream, *,
    encrypted: bool = False,
) -> Established | None:
    """Connect to a peer and exchange handshakes; None if no connection was made.

    `encrypted`: open with MSE (for peers that refuse plain text).
    """
    try:
        raw = await open_stream(*address)
    except (OSError, trio.TooSlowError) as exc:
        log.debug("cannot connect to %s:%d: %s", *address, exc)
        return None
    stream: trio.abc.Stream = raw
    try:
        hello = us.handshake().encode()
        if encrypted:
            stream, _ = await mse.initiate(raw, us.info_hash, hello)
        else:
            await stream.send_all(hello)
        reader = wire.MessageReader()
        theirs = await read_handshake(stream, reader)
        if theirs.info_hash != us.info_hash:
            raise PeerError("the peer answered for another torrent")
        if theirs.peer_id == us.peer_id:
            raise PeerError("connected to ourselves")
    except _HANDSHAKE_ERRORS as exc:
        log.debug("%s handshake with %s:%d failed: %s",
                  "encrypted" if encrypted else "plain", *address, exc)
        await close_quietly(raw)
        return None
    return Established(stream, address, theirs, reader)


async def accept(
    stream: trio.SocketStream, torrents: Mapping[bytes, Identity],
) -> tuple[Established, Identity] | None:
    """An incoming connection, plain or MSE: find its torrent and answer its handshake.

    None (and the stream closed) for a torrent we do not have, a refused host, or a
    broken handshake.
    """
    peer_stream: trio.abc.Stream = stream
    try:
        host, port = stream.socket.getpeername()[:2]
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            first = await stream.receive_some(READ_SIZE)
        if not first:
            raise PeerClosedEarly("closed before the handshake")
        reader = wire.MessageReader()
        if mse.looks_plain(first):
            reader.feed(first)
        else:
            peer_stream, plain, _ = await mse.accept(stream, first, mse.skey_lookup(torrents))
            reader.feed(plain)
        theirs = await read_handshake(peer_stream, reader)
        us = torrents.get(theirs.info_hash)
        if us is None or theirs.peer_id == us.peer_id or us.refuses(host):
            await close_quietly(stream)
            return None
        await peer_stream.send_all(us.handshake().encode())
    except _HANDSHAKE_ERRORS as exc:
        log.debug("incoming handshake failed: %s", exc)
        await close_quietly(stream)
        return None
    return Established(peer_stream, (host, port), theirs, reader), us


async def close_quietly(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
