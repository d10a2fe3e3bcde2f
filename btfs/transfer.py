"""`btfs download` and `btfs seed`: one torrent on the network, without the filesystem.

`download` writes into `DIR/NAME`, with a resume log `DIR/.NAME.btfs-resume` listing the
verified pieces (appended after each piece is written), so a restart after a crash or
`kill -9` fetches only what is missing; the log is removed once the download is
complete. With no log but data present (copied in, or an older run), the data is
hashed and every good piece kept. `seed` hashes the data at PATH, never writes to it,
and serves the pieces that match until SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from btfs.addresses import parse_peer
from btfs.cachelock import lock_folder
from btfs.dht.service import DhtService
from btfs.errors import BtfsError, Unavailable, first_leaf
from btfs.hints import check_seed_path
from btfs.lsdservice import LsdService
from btfs.magnet import Magnet
from btfs.metainfo import Info, Metainfo, fit_name
from btfs.progress import ProgressBar
from btfs.statusline import StatusLine, say, stderr_line
from btfs.storage import ResumeLog, Storage, named_paths
from btfs.swarm import Swarm, SwarmConfig
from btfs.torrent import Torrent
from btfs.units import format_duration, format_size

if TYPE_CHECKING:
    from btfs.metadata import MetadataSearch

log = logging.getLogger(__name__)
T = TypeVar("T")


class Interrupted(Exception):
    """A signal ended the run; carries the signal number for the exit status."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def resolve_magnet(magnet: Magnet, net: SwarmConfig, timeout: float | None = None) -> Metainfo:
    """Fetch a magnet's info dictionary from peers (BEP 9); BtfsError after `timeout` s.

    The fetch is the start of the session that follows: it listens on the port the swarm
    will use (chosen here when `--port` is 0, then set in `net`), its DHT node is on that
    port, and trackers are told that port and the swarm's peer id (set in `net` too).
    """
    from btfs.metadata import MetadataSearch, fetch_metadata
    from btfs.swarm import make_peer_id, open_listeners

    name = magnet.display_name or magnet.info_hash_hex
    print(f"btfs: fetching the metadata of {name} from peers", file=sys.stderr, flush=True)
    for text in magnet.peers:  # x.pe: peers the magnet names, for the download too
        try:
            address = parse_peer(text)
        except BtfsError:
            log.info("ignoring the magnet's peer %r: not HOST:PORT", text)
            continue
        if address not in net.peers:
            net.peers.append(address)
    peer_id = net.peer_id or make_peer_id()
    search = MetadataSearch()

    async def fetch() -> Metainfo:
        try:
            listeners = await open_listeners(net.bind, net.port)
        except OSError as exc:
            raise BtfsError(f"cannot listen for peers on port {net.port}: "
                            f"{exc.strerror or exc}") from None
        port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                dht = None
                if net.dht:
                    dht = DhtService(net.dht_routers, state_path=net.dht_state)
                    await nursery.start(dht.run, net.bind, port)
                    if not dht.nodes:
                        dht = None
                lsd = None
                if net.lsd:
                    lsd = LsdService(port, bind=net.bind)
                    await nursery.start(lsd.run)
                nursery.start_soon(_show_search, search)
                with trio.move_on_after(timeout if timeout is not None else math.inf):
                    meta = await fetch_metadata(magnet, peer_id, net.peers, port=port,
                                                bind=net.bind, use_trackers=net.trackers,
                                                dht=dht, lsd=lsd, search=search)
                    nursery.cancel_scope.cancel()
                    net.port, net.peer_id = port, peer_id
                    net.found = search.handed_on()
                    return meta
                raise Unavailable(f"no peer gave the metadata of {name} within {timeout:.0f} s: "
                                f"{search.summary()}")
        finally:
            stderr_line().clear()
            for listener in listeners:
                await listener.aclose()

    meta = run_trio(fetch())
    print(f"btfs: got the metadata: {meta.info.name}, {format_size(meta.info.total_length)}",
          file=sys.stderr, flush=True)
    return meta


async def _show_search(search: MetadataSearch) -> None:
    """The metadata fetch's status line on a terminal (log lines go above it), redrawn
    every second; nothing off a terminal."""
    while True:
        stderr_line().show(f"btfs: resolving metadata: {search.summary()}")
        await trio.sleep(1)


def resume_path(meta: Metainfo, out_dir: Path) -> Path:
    return out_dir / fit_name(f".{meta.info.name}.btfs-resume")


def check_names(info: Info, out_dir: Path) -> None:
    """Refuse, up front, a torrent whose files cannot be created under `out_dir`.

    Over-long names are shortened (`fit_name`); what is left to refuse is a path longer
    than the system takes, or a folder whose filesystem takes shorter names than 255.
    """
    path_max = os.pathconf(out_dir, "PC_PATH_MAX")
    name_max = os.pathconf(out_dir, "PC_NAME_MAX")
    base = out_dir.absolute()
    for path in named_paths(info, base / fit_name(info.name)):
        if path is None:
            continue
        size = len(os.fsencode(path))
        if size >= path_max:
            raise BtfsError(f"{info.name[:60]}...: a file's path would be {size} bytes in "
                            f"{out_dir}, longer than this system takes ({path_max - 1})")
        if any(len(os.fsencode(part)) > name_max for part in path.relative_to(base).parts):
            raise BtfsError(f"{out_dir} takes names of {name_max} bytes at most, "
                            f"shorter than {info.name[:60]!r} needs")


def download(meta: Metainfo, out_dir: Path, net: SwarmConfig, *, seed_after: bool) -> int:
    if not out_dir.is_dir():
        raise BtfsError(f"{out_dir} is not a directory")
    check_names(meta.info, out_dir)
    lock = out_dir / fit_name(f".{meta.info.name}.btfs-lock")
    fd = lock_folder(out_dir, name=lock.name, what="-o")
    try:
        return _run(_download(meta, out_dir, net, seed_after))
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def seed(meta: Metainfo, path: Path, net: SwarmConfig) -> int:
    check_seed_path(meta.info, path)
    return _run(_seed(meta, path, net))


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        return run_trio(main)
    except Interrupted as exc:
        return 128 + exc.signum


def run_trio(main: Coroutine[Any, Any, T]) -> T:
    """trio.run of a coroutine; a project error inside exception groups comes out alone."""
    async def wrapper() -> T:
        return await main

    try:
        return trio.run(wrapper)
    except BaseExceptionGroup as group:
        leaf = first_leaf(group)
        if isinstance(leaf, Interrupted | BtfsError | OSError | KeyboardInterrupt):
            raise leaf from None
        raise


async def _download(meta: Metainfo, out_dir: Path, net: SwarmConfig, seed_after: bool) -> int:
    info = meta.info
    storage = Storage(info, out_dir)
    resume = ResumeLog(resume_path(meta, out_dir), info.num_pieces, len(info.files))
    torrent = Torrent(meta, storage, resume, readahead=0)
    try:
        if await trio.Path(resume.path).exists() or not await trio.to_thread.run_sync(
                _any_exists, storage):
            restored = await torrent.restore()
            if restored:
                log.info("resuming: %s", restored)
        else:
            await _check(torrent, "checking existing data")
        # Zero-length files: no piece ever writes them. Made when the data is complete,
        # already at start or as the last piece arrives (on_complete).
        if torrent.complete:
            await trio.to_thread.run_sync(storage.create_empty_files)
            if not seed_after:
                say(f"btfs: {info.name}: already complete")
                return 0
        swarm = Swarm(meta, torrent, replace(net, seed=seed_after))
        swarm.on_listening = lambda port: say(
            f"btfs: downloading {info.name} ({format_size(info.total_length)}, "
            f"{len(torrent.verified)}/{info.num_pieces} pieces verified) into {out_dir}")
        started = trio.current_time()

        def on_complete() -> None:
            storage.create_empty_files()
            _report_complete(swarm, started)

        swarm.on_complete = on_complete
        status = await _serve(swarm, show_progress=True, until_complete=not seed_after,
                              resumable=True)
        if torrent.complete:
            resume.close()
            resume.path.unlink(missing_ok=True)
        return status
    finally:
        if not torrent.complete:
            with trio.CancelScope(shield=True):
                await torrent.save_resume()
        resume.close()
        storage.close()


def _report_complete(swarm: Swarm, started: float) -> None:
    """One line on stderr when the download completes (exact bytes, for scripts too)."""
    elapsed = max(trio.current_time() - started, 1e-6)
    got = swarm.torrent.counters.downloaded
    line = stderr_line()
    line.clear()  # the progress line is done
    line.write_above(f"btfs: {swarm.info.name}: complete, "
                     f"{format_size(swarm.info.total_length)}; downloaded {got} bytes in "
                     f"{elapsed:.1f} s ({format_size(got / elapsed)}/s)")


def _any_exists(storage: Storage) -> bool:
    return any(p is not None and p.exists() for p in storage.paths)


async def _seed(meta: Metainfo, path: Path, net: SwarmConfig) -> int:
    info = meta.info
    storage = Storage(info, path.parent, read_only=True, data_path=path)
    torrent = Torrent(meta, storage, None, readahead=0)
    try:
        good = await _check(torrent, "checking")
        if good == 0:
            raise BtfsError(f"none of the data at {path} matches the torrent")
        if good < info.num_pieces:
            say(f"btfs: warning: only {good} of {info.num_pieces} pieces at {path} match; "
                "serving those")
        swarm = Swarm(meta, torrent, replace(net, seed=True))
        swarm.on_listening = lambda port: say(
            f"btfs: seeding {info.name} ({good}/{info.num_pieces} pieces), "
            f"listening on port {port}")
        try:
            return await _serve(swarm, show_progress=False, until_complete=False)
        finally:
            say(f"btfs: {info.name}: uploaded {torrent.counters.uploaded} bytes")
    finally:
        storage.close()


async def _check(torrent: Torrent, label: str) -> int:
    bar = ProgressBar(label, torrent.info.total_length)
    try:
        return await torrent.check_data(on_progress=bar.update)
    finally:
        bar.close()


async def _serve(swarm: Swarm, *, show_progress: bool, until_complete: bool,
                 resumable: bool = False) -> int:
    """Run the swarm until complete (download) or a signal; then say goodbye.

    A signal ends a seed with 0 (serving until told to stop is its job, whatever share
    of the data it had); it ends an unfinished download (`resumable`) with 128+N."""
    received: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, nursery.cancel_scope, received)
            await nursery.start(swarm.run)
            if show_progress and stderr_line().enabled:
                nursery.start_soon(_show_progress, swarm, stderr_line())
            if until_complete:
                await swarm.completed.wait()
                nursery.cancel_scope.cancel()
            else:
                await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await swarm.stop()
            swarm.torrent.close()
    if received:
        if resumable and not swarm.torrent.complete:
            done = len(swarm.torrent.verified) / max(1, swarm.info.num_pieces)
            say(f"btfs: stopped at {done:.0%}; run the same command again to resume")
            raise Interrupted(received[0])
        return 0
    return 0


async def _watch_signals(scope: trio.CancelScope, received: list[int]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: stopping", signal.Signals(signum).name)
            received.append(signum)
            scope.cancel()
            return


async def _show_progress(swarm: Swarm, line: StatusLine) -> None:
    info = swarm.info
    try:
        while True:
            s = swarm.stats()
            verified_bytes = swarm.torrent.verified_bytes
            left = info.total_length - verified_bytes
            rate = s["download_rate"]
            eta = format_duration(left / rate) if rate > 0 and left else "-"
            peers = int(s["peers"])
            line.show(
                f"{int(s['verified'])}/{info.num_pieces} pieces "
                f"{verified_bytes / max(1, info.total_length):6.1%}  "
                f"down {format_size(rate)}/s  up {format_size(s['upload_rate'])}/s  "
                f"{peers} peer{'' if peers == 1 else 's'}  ETA {eta}"
            )
            if swarm.torrent.complete:
                break
            await trio.sleep(0.5)
    finally:
        line.clear()  # the summary line or the error takes its place
