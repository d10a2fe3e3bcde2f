"""In-process scripted peers on trio memory streams, for tests of the peer layer's shells.

`RemoteSwarm` builds a real `Swarm` (real picker, choker, torrent and storage in a temp
folder) whose dials go to `RemotePeer`s instead of TCP: each dial opens a
`trio.testing.memory_stream_pair` and runs the peer's script on the far end, so a test
under trio's mock clock controls exactly what every peer says and when.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from btfs import bencode, extensions, mse, pex, wire
from btfs.metainfo import Metainfo, parse_torrent
from btfs.storage import Storage
from btfs.swarm import Swarm, SwarmConfig
from btfs.torrent import Torrent

REMOTE_PEX_ID = 7  # a remote's id for ut_pex, not ours, as another client's would be

# How a remote answers one request: the bytes to send, or None to reject (BEP 6).
Answer = Callable[[wire.Request, bytes], bytes | None]


def honest(request: wire.Request, data: bytes) -> bytes | None:
    return data


def make_meta(data: bytes, piece_length: int, *, private: bool = False) -> Metainfo:
    pieces = b"".join(hashlib.sha1(data[i : i + piece_length]).digest()
                      for i in range(0, len(data), piece_length))
    info: dict[bytes, bytes | int] = {b"name": b"data.bin", b"piece length": piece_length,
                                      b"length": len(data), b"pieces": pieces}
    if private:
        info[b"private"] = 1
    return parse_torrent(bencode.encode({b"info": info}))


@dataclass
class RemotePeer:
    """A peer that has every piece, unchokes at once and answers requests as `answer` says.

    `encrypted_only`: hangs up on a plain handshake and accepts MSE (as Transmission
    with encryption required does). `hang_up_at_once`: hangs up on any handshake.
    `hang_up_after`: close the connection after that many requests arrived. `silent`:
    take requests and never answer them. `rate`: send at most that many bytes/s, in the
    order requested (an uplink); `honours_cancels`: drop a queued request on `cancel`.
    `garbage_after_handshake`: send a frame no peer may send. `leech_then_stop_reading`:
    have nothing, ask for blocks, and never read again (a peer whose socket stalls).
    `unchoke_when_interested`: choke us until we say interested, and again when we are not
    (as libtorrent does); `most_queued` is then the most requests it held at once.
    `pex`: speak BEP 10 and offer `ut_pex`; once our handshake arrives, tell of these
    peers (address -> flags) in one ut_pex message. The ut_pex messages it gets from us
    are kept in `pex_received` with their (virtual) time.
    """

    data: bytes
    answer: Answer = honest
    encrypted_only: bool = False
    hang_up_after: int | None = None
    hang_up_at_once: bool = False
    silent: bool = False
    rate: float = 0.0
    honours_cancels: bool = True
    garbage_after_handshake: bool = False
    leech_then_stop_reading: bool = False
    unchoke_when_interested: bool = False
    most_queued: int = 0
    cancels: int = 0
    peer_id: bytes = field(default_factory=lambda: b"-RM0001-" + os.urandom(12))
    requests: list[wire.Request] = field(default_factory=list)
    dials: list[str] = field(default_factory=list)  # "plain" or "mse", one per dial
    dial_times: list[float] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)
    pex: dict[tuple[str, int], int] | None = None
    pex_received: list[tuple[float, pex.PexMessage]] = field(default_factory=list)

    async def run(self, stream: trio.abc.Stream, meta: Metainfo) -> None:
        try:
            await self._run(stream, meta)
        except (trio.BrokenResourceError, trio.ClosedResourceError, mse.MSEError):
            pass
        finally:
            await stream.aclose()
            self.closed.set()

    async def _run(self, stream: trio.abc.Stream, meta: Metainfo) -> None:
        first = await stream.receive_some(65536)
        reader = wire.MessageReader(num_pieces=meta.info.num_pieces)
        self.dials.append("plain" if mse.looks_plain(first) else "mse")
        self.dial_times.append(trio.current_time())
        if self.hang_up_at_once:
            return
        if mse.looks_plain(first):
            if self.encrypted_only:
                return
            reader.feed(first)
        else:
            stream, plain, _ = await mse.accept(stream, first, mse.skey_lookup([meta.info_hash]))
            reader.feed(plain)
        while reader.handshake() is None:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            reader.feed(chunk)
        reader.fast = True
        hello = wire.Handshake(meta.info_hash, self.peer_id, fast=True,
                               extensions=self.pex is not None)
        if self.leech_then_stop_reading:
            await self._leech_then_stall(stream, reader, hello, meta)
            return
        ours = extensions.ExtensionHandshake(extensions={"ut_pex": REMOTE_PEX_ID})
        await stream.send_all(hello.encode() + wire.encode(wire.HaveAll())
                              + (wire.encode(wire.Extended(0, ours.encode()))
                                 if self.pex is not None else b"")
                              + (b"" if self.unchoke_when_interested
                                 else wire.encode(wire.Unchoke())))
        if self.garbage_after_handshake:
            await stream.send_all(struct.pack(">IB", 1 << 24, 7))  # a 16 MiB "piece"
            while await stream.receive_some(65536):
                pass
            return
        queue: deque[wire.Request] = deque()
        extra: list[bytes] = []  # messages other than blocks, sent first
        wake = trio.Event()
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                nonlocal wake
                while True:
                    while (m := reader.next_message()) is not None:
                        if isinstance(m, wire.Cancel) and self.honours_cancels:
                            key = (m.index, m.begin, m.length)
                            before = len(queue)
                            kept = [r for r in queue if (r.index, r.begin, r.length) != key]
                            queue.clear()
                            queue.extend(kept)
                            self.cancels += before - len(queue)
                        if isinstance(m, wire.Extended):
                            self._on_extended(m, extra)
                            wake.set()
                        if (self.unchoke_when_interested
                                and isinstance(m, wire.Interested | wire.NotInterested)):
                            interested = isinstance(m, wire.Interested)
                            extra.append(wire.encode(wire.Unchoke() if interested
                                                     else wire.Choke()))
                            if not interested:
                                queue.clear()
                            wake.set()
                        if not isinstance(m, wire.Request):
                            continue
                        self.requests.append(m)
                        if (self.hang_up_after is not None
                                and len(self.requests) >= self.hang_up_after):
                            nursery.cancel_scope.cancel()
                            return
                        if not self.silent:
                            queue.append(m)
                            self.most_queued = max(self.most_queued, len(queue))
                            wake.set()
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        nursery.cancel_scope.cancel()
                        return
                    reader.feed(chunk)

            async def send() -> None:
                nonlocal wake
                plen = meta.info.piece_length
                while True:
                    if extra:
                        data = b"".join(extra)
                        extra.clear()
                        await stream.send_all(data)
                        continue
                    if not queue:
                        wake = trio.Event()
                        await wake.wait()
                        continue
                    m = queue.popleft()
                    if self.rate:
                        await trio.sleep(m.length / self.rate)
                    start = m.index * plen + m.begin
                    payload = self.answer(m, self.data[start : start + m.length])
                    reply: wire.Message = (wire.Piece(m.index, m.begin, payload)
                                           if payload is not None
                                           else wire.RejectRequest(m.index, m.begin, m.length))
                    await stream.send_all(wire.encode(reply))

            nursery.start_soon(receive)
            nursery.start_soon(send)

    def _on_extended(self, m: wire.Extended, extra: list[bytes]) -> None:
        if m.ext_id == 0 and self.pex is not None:
            theirs = extensions.ExtensionHandshake.decode(m.payload)
            their_id = theirs.extensions.get("ut_pex", 0)
            if their_id:
                message = pex.encode(pex.PexMessage(added=dict(self.pex)))
                extra.append(wire.encode(wire.Extended(their_id, message)))
        elif m.ext_id == REMOTE_PEX_ID:
            self.pex_received.append((trio.current_time(), pex.decode(m.payload)))

    async def _leech_then_stall(self, stream: trio.abc.Stream, reader: wire.MessageReader,
                                hello: wire.Handshake, meta: Metainfo) -> None:
        await stream.send_all(hello.encode() + wire.encode(wire.HaveNone())
                              + wire.encode(wire.Interested()))
        while not any(isinstance(m, wire.Unchoke) for m in _drain(reader)):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            reader.feed(chunk)
        size = meta.info.piece_length
        asks = [wire.Request(p, b, 16384) for p in range(meta.info.num_pieces)
                for b in range(0, size, 16384)]
        self.requests.extend(asks)
        await stream.send_all(b"".join(wire.encode(m) for m in asks))
        await trio.sleep_forever()


def _drain(reader: wire.MessageReader) -> list[wire.Message]:
    out = []
    while (m := reader.next_message()) is not None:
        out.append(m)
    return out


class RemoteSwarm:
    """A real Swarm for `data`, whose dials reach the `RemotePeer` at each address."""

    def __init__(self, tmp: Path, data: bytes, piece_length: int,
                 remotes: dict[tuple[str, int], RemotePeer], nursery: trio.Nursery,
                 *, readahead: int = 0, lockstep: bool = False, private: bool = False,
                 **config: object) -> None:
        self.meta = make_meta(data, piece_length, private=private)
        self.remotes = remotes
        self._nursery = nursery
        self._pair = (trio.testing.lockstep_stream_pair if lockstep
                      else trio.testing.memory_stream_pair)
        self.storage = Storage(self.meta.info, tmp)
        self.torrent = Torrent(self.meta, self.storage, None, readahead=readahead)
        config = {"lsd": False, **config}  # no multicast sockets in tests of the shells
        settings = SwarmConfig(bind="127.0.0.1", trackers=False, **config)  # type: ignore[arg-type]
        self.swarm = Swarm(self.meta, self.torrent, settings, open_stream=self._open)

    async def _open(self, host: str, port: int) -> trio.abc.Stream:
        remote = self.remotes.get((host, port))
        if remote is None:
            raise OSError(f"nothing listens at {host}:{port}")
        ours, theirs = self._pair()
        self._nursery.start_soon(remote.run, theirs, self.meta)
        return ours

    def dial(self, *addresses: tuple[str, int]) -> None:
        self.swarm.add_candidates(addresses)

    def close(self) -> None:
        self.torrent.close()
        self.storage.close()
