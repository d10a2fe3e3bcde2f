"""The HTTP server in the test's own trio loop, over real torrents on disk, and clients for it.

`verified_torrent` is a torrent whose data is all on disk and checked (what a finished
mount serves); `empty_torrent` has none, so a test feeds pieces itself with
`torrent.piece_downloaded` and sees requests wait for them. Clients run as processes
(`curl`, `ffprobe`, `mpv`) through `trio.run_process`, so the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from btfs.create import CreateOptions, make_torrent
from btfs.http.catalog import Catalog, SingleTorrent
from btfs.http.options import HttpOptions
from btfs.http.server import serve_http
from btfs.metainfo import Metainfo, parse_torrent
from btfs.storage import Storage
from btfs.torrent import Torrent
from tests.support.env import require_tool

CLIENT_TIMEOUT = 60.0


@dataclass
class Served:
    torrent: Torrent
    meta: Metainfo
    origin: Path  # the file or folder the torrent was made of

    @property
    def info_hash(self) -> str:
        return self.meta.info_hash_hex

    def original(self, rel: str) -> bytes:
        """A file's original bytes by its path inside the torrent."""
        if not self.meta.info.multi_file:
            return self.origin.read_bytes()
        return (self.origin / rel).read_bytes()


def make_meta(origin: Path, piece_length: int = 32768) -> Metainfo:
    return parse_torrent(make_torrent(origin, CreateOptions(piece_length=piece_length,
                                                            creation_date=None)))


async def verified_torrent(origin: Path, piece_length: int = 32768) -> Served:
    """A torrent over `origin` itself, every piece checked: nothing to wait for."""
    meta = make_meta(origin, piece_length)
    folder = origin.parent
    torrent = Torrent(meta, Storage(meta.info, folder))
    await torrent.check_data()
    assert torrent.complete
    return Served(torrent, meta, origin)


def empty_torrent(origin: Path, cache: Path, piece_length: int = 32768) -> Served:
    """A torrent of `origin` with an empty cache: reads wait for pieces the test feeds."""
    meta = make_meta(origin, piece_length)
    return Served(Torrent(meta, Storage(meta.info, cache, by_index=True)), meta, origin)


async def feed_pieces(served: Served, pieces: range | list[int] | None = None) -> None:
    """Hand the torrent pieces as if they came from the swarm."""
    info = served.meta.info
    stream = b"".join(
        served.original("/".join(f.path)) if not f.padding else bytes(f.length)
        for f in info.files)
    for p in pieces if pieces is not None else range(info.num_pieces):
        start = p * info.piece_length
        assert await served.torrent.piece_downloaded(p, stream[start : start + info.piece_size(p)])


@asynccontextmanager
async def serving(catalog: Catalog | Served, **options: Any) -> AsyncIterator[int]:
    """Serve on a free loopback port for the block's length; yields the port."""
    if isinstance(catalog, Served):
        catalog = SingleTorrent(catalog.torrent)
    opts = HttpOptions(**{"host": "127.0.0.1", "port": 0, **options})
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(serve_http, catalog, opts)
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def curl(url: str, *args: str, seconds: float = CLIENT_TIMEOUT) -> Reply:
    """One request with curl; the status, the (last) headers and the body."""
    exe = require_tool("curl", "curl")
    with trio.fail_after(seconds + 5):
        result = await trio.run_process(
            [exe, "-sS", "--max-time", str(int(seconds)), "-D", "/dev/stderr", *args, url],
            capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    head = result.stderr.decode("latin-1").split("\r\n\r\n")[-2]
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = result.stdout
    if "-I" in args:  # curl writes a HEAD's headers to the output too
        body = body.split(b"\r\n\r\n", 1)[1]
    return Reply(status, headers, body)


async def raw_request(port: int, request: bytes, *, read: bool = True) -> bytes:
    """Send bytes as they are and read until the server closes (or nothing if not `read`)."""
    with trio.fail_after(CLIENT_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            if not read:
                return b""
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
            return b"".join(chunks)


def readers(served: Served, file_index: int = 0) -> int:
    return int(served.torrent.attributes(file_index).get("readers", 0))


async def wait_until(predicate: Any, what: str, seconds: float = 30.0) -> None:
    """Poll a condition the server's tasks change (they have no event to wait on)."""
    try:
        with trio.fail_after(seconds):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from None


class MemoryLibrary:
    """A `Catalog` that can add and remove, as a library mount's will: torrents given as
    .torrent bytes, or as magnets whose metadata the test has (no swarm here: a torrent
    whose data the test holds is served verified, any other waits for pieces)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.served: dict[str, Served] = {}
        self.known: dict[str, tuple[Path, int]] = {}  # info-hash -> (origin, piece length)

    def know(self, origin: Path, piece_length: int = 32768) -> Metainfo:
        meta = make_meta(origin, piece_length)
        self.known[meta.info_hash_hex] = (origin, piece_length)
        return meta

    @property
    def can_change(self) -> bool:
        return True

    def torrents(self) -> list[Torrent]:
        return [s.torrent for s in self.served.values()]

    def find(self, info_hash_hex: str) -> Torrent | None:
        served = self.served.get(info_hash_hex)
        return served.torrent if served is not None else None

    async def add(self, source: str | bytes) -> str:
        from btfs.errors import BtfsError
        from btfs.http.catalog import BadSource, CannotChange
        from btfs.magnet import parse_magnet

        try:
            key = (parse_magnet(source).info_hash_hex if isinstance(source, str)
                   else parse_torrent(source).info_hash_hex)
        except BtfsError as exc:
            raise BadSource(str(exc)) from None
        if key in self.served:
            raise CannotChange(f"{key} is already in the library")
        origin = self.known.get(key)
        if origin is None:
            if isinstance(source, str):
                raise BadSource(f"no peer has the metadata of {key}")
            meta = parse_torrent(source)
            cache = self.cache / key
            self.served[key] = Served(Torrent(meta, Storage(meta.info, cache, by_index=True)),
                                      meta, cache)
        else:
            self.served[key] = await verified_torrent(*origin)
        return key

    async def remove(self, info_hash_hex: str) -> None:
        from btfs.http.catalog import UnknownTorrent

        served = self.served.pop(info_hash_hex, None)
        if served is None:
            raise UnknownTorrent(f"no torrent {info_hash_hex}")
        served.torrent.close()


def make_media_webm(path: Path, seconds: int = 8, size: str = "320x240",
                    bitrate: str = "300k") -> Path:
    """A VP9/Opus .webm (what every Chromium build plays) from ffmpeg's test sources."""
    import subprocess

    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", bitrate,
         "-g", "25", "-c:a", "libopus", "-b:a", "48k", "-shortest", str(path)],
        check=True, timeout=300)
    return path
