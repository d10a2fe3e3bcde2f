"""A deliberately misbehaving BitTorrent peer, for tests of how btfs copes with one.

    python -m tests.support.badpeer corrupt TORRENT --listen 127.0.0.7:7000
    python -m tests.support.badpeer hangup TORRENT DATA --listen 127.0.0.8:7000 --blocks 20

`corrupt` claims every piece and answers every request with random bytes. `hangup`
serves real blocks from DATA (the torrent's single file) but closes each connection
after `--blocks` blocks, in the middle of a piece. It prints `listening HOST:PORT`
once ready, and `served N` / `closed` lines as it goes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import trio

from btfs import wire
from btfs.metainfo import load_torrent


async def serve(mode: str, torrent: Path, data: Path | None, host: str, port: int,
                blocks: int) -> None:
    meta = load_torrent(torrent)
    info = meta.info
    peer_id = b"-XX0001-" + os.urandom(12)

    async def handle(stream: trio.SocketStream) -> None:
        reader = wire.MessageReader(num_pieces=info.num_pieces)
        served = 0
        try:
            while (theirs := reader.handshake()) is None:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                reader.feed(chunk)
            if theirs.info_hash != meta.info_hash:
                return
            hs = wire.Handshake(meta.info_hash, peer_id, fast=theirs.fast, extensions=False)
            await stream.send_all(hs.encode())
            reader.fast = theirs.fast
            first = wire.HaveAll() if theirs.fast else wire.BitfieldMessage(
                bytes([0xFF]) * (info.num_pieces // 8)
                + (bytes([(0xFF << (8 - info.num_pieces % 8)) & 0xFF])
                   if info.num_pieces % 8 else b"")
            )
            await stream.send_all(wire.encode(first) + wire.encode(wire.Unchoke()))
            while True:
                while (m := reader.next_message()) is not None:
                    if not isinstance(m, wire.Request):
                        continue
                    if mode == "corrupt":
                        payload = os.urandom(m.length)
                    else:
                        assert data is not None
                        payload = _read(data, m.index * info.piece_length + m.begin,
                                        m.length)
                    await stream.send_all(wire.encode(wire.Piece(m.index, m.begin, payload)))
                    served += 1
                    if mode == "hangup" and served >= blocks:
                        print(f"served {served}", flush=True)
                        return
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                reader.feed(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, wire.ProtocolError):
            return
        finally:
            print("closed", flush=True)
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    await trio.serve_listeners(handle, listeners)


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["corrupt", "hangup"])
    parser.add_argument("torrent", type=Path)
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--blocks", type=int, default=20)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if args.mode == "hangup" and args.data is None:
        sys.exit("hangup needs DATA")
    trio.run(serve, args.mode, args.torrent, args.data, host.strip("[]"), int(port), args.blocks)


if __name__ == "__main__":
    main()
