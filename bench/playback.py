"""Playback from a mount on a swarm of limited bandwidth: ours against Debian's `btfs`.

Several libtorrent seeders, each capped at `--seeder-rate` bytes/s of upload, found
through opentracker, serve one large random file (1 MiB pieces). A simulated player
reads the mounted file as a media player does: it waits for `--need` seconds of media
before playing (startup, and after every seek), then plays at `--bitrate`, keeping at
most `--readahead` seconds read ahead; every `--seek-every` seconds of media it seeks to
a random place. A stall is the playhead catching up with the bytes read.

The physical limit of a startup or seek is the bytes it waits for (`need` seconds of
media, rounded out to whole pieces) divided by what the whole swarm can upload.

    .venv/bin/python bench/playback.py [--size 300M] [--seeders 3] \\
        [--seeder-rate 1.5M] [--bitrate 1.5M] [--seeks 5] [--clients debian,ours] \\
        [--web-seed-only]

`--web-seed-only`: no seeders; the torrent's one source is a web seed (BEP 19), nginx on
loopback limited to `--seeders` x `--seeder-rate` in all (per connection: that over the
two connections a client opens).

Needs: opentracker, nginx, /usr/bin/btfs (apt-get install btfs), libtorrent (pip).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from stream import Mount, find_file, info_hash, run, stop_all  # noqa: E402

from btfs.units import format_size, parse_size  # noqa: E402
from tests.support.data import make_random_file  # noqa: E402
from tests.support.net import free_port  # noqa: E402

TRACKER_IP = "127.0.0.4"
WEB_SEED_IP = "127.0.0.9"
PIECE = 1 << 20
CHUNK = 128 * 1024  # what a player asks of the kernel at a time


class LimitedSwarm:
    """opentracker and `count` libtorrent seeders, each capped at `rate` bytes/s upload."""

    def __init__(self, work: Path, torrent: Path, data_dir: Path, port: int, count: int,
                 rate: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        whitelist = work / "whitelist"
        whitelist.write_text(info_hash(torrent) + "\n")
        self.procs.append(subprocess.Popen(
            ["opentracker", "-i", TRACKER_IP, "-p", str(port), "-P", str(port),
             "-w", str(whitelist)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        logs = []
        for i in range(count):
            log_path = work / f"seeder-{i}.log"
            with open(log_path, "w") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tests.support.ltpeer", "seed", str(torrent),
                     str(data_dir), "--listen", f"127.0.0.{10 + i}:0",
                     "--upload-limit", str(rate)],
                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True))
            logs.append(log_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(p.stat().st_size for p in logs):
            time.sleep(0.1)
        time.sleep(2)  # the seeders' first announce

    def close(self) -> None:
        stop_all(self.procs)


@dataclass
class Playback:
    startup: float = 0.0
    seeks: list[float] = field(default_factory=list)
    stalls: int = 0
    stalled: float = 0.0


class Player:
    """Reads a file as a player does: `need` s buffered to start, `readahead` s at most."""

    def __init__(self, path: Path, bitrate: int, need: float, readahead: float) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.size = path.stat().st_size
        self.bitrate = bitrate
        self.need = int(need * bitrate)
        self.readahead = int(readahead * bitrate)
        self.result = Playback()

    def _read(self, offset: int) -> int:
        n = len(os.pread(self.fd, CHUNK, offset))
        if n == 0:
            raise EOFError
        return offset + n

    def buffer_from(self, start: int) -> tuple[float, int]:
        """Read until `need` bytes from `start` are in; the wait and the end read."""
        t = time.monotonic()
        end = start
        while end - start < self.need and end < self.size:
            end = self._read(end)
        return time.monotonic() - t, end

    def play(self, start: int, media_seconds: float) -> None:
        """Buffer, then play from `start` for `media_seconds`, reading ahead; count stalls.

        The playhead moves at the bitrate from the moment playback starts, minus the
        time spent stalled; a stall lasts from the moment the playhead reaches the end
        of what was read until the read that was under way returns.
        """
        wait, end = self.buffer_from(start)
        if self.result.startup == 0.0 and not self.result.seeks:
            self.result.startup = wait
        else:
            self.result.seeks.append(wait)
        began = time.monotonic()
        stalled = 0.0
        while time.monotonic() - began - stalled < media_seconds and end < self.size:
            playhead = start + (time.monotonic() - began - stalled) * self.bitrate
            if end - playhead >= self.readahead:
                time.sleep(0.02)
                continue
            reached = began + stalled + (end - start) / self.bitrate  # playhead hits `end`
            end = self._read(end)
            done = time.monotonic()
            if done > reached:
                self.result.stalls += 1
                self.result.stalled += done - reached
                stalled += done - reached

    def close(self) -> None:
        os.close(self.fd)


class WebSeedOnly:
    """nginx serving the data folder, each connection limited to `rate` bytes/s."""

    def __init__(self, work: Path, data_dir: Path, host: str, port: int, rate: int) -> None:
        from tests.support.nginx import start_nginx
        from tests.support.procs import Processes

        logs = work / "nginx-logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(logs)
        start_nginx(self.procs, work / "nginx", host, port, data_dir,
                    locations=f"limit_rate {rate};")

    def close(self) -> None:
        self.procs.cleanup()


def measure(client: str, torrent: Path, work: Path, args: argparse.Namespace) -> Playback:
    m = Mount(client, torrent, work / f"{client}-mnt", work / f"{client}-cache")
    try:
        path = find_file(m.mnt)
        player = Player(path, args.bitrate, args.need, args.readahead)
        rng = random.Random(args.seed)
        start = 0
        try:
            for _ in range(args.seeks + 1):
                player.play(start, args.seek_every)
                start = rng.randrange(0, player.size - 30 * args.bitrate) // 4096 * 4096
            return player.result
        finally:
            player.close()
    finally:
        m.close()
        shutil.rmtree(work / f"{client}-cache", ignore_errors=True)


def physical_limit(need: float, bitrate: int, swarm_rate: int) -> float:
    """Whole pieces holding `need` s of media from a random place, over the swarm's rate."""
    pieces = -(-int(need * bitrate) // PIECE) + 1  # a random start straddles one more
    return pieces * PIECE / swarm_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("300M"))
    parser.add_argument("--seeders", type=int, default=3)
    parser.add_argument("--seeder-rate", type=parse_size, default=parse_size("1.5M"))
    parser.add_argument("--bitrate", type=parse_size, default=parse_size("1.5M"))
    parser.add_argument("--need", type=float, default=2.0)
    parser.add_argument("--readahead", type=float, default=4.0)
    parser.add_argument("--seek-every", type=float, default=10.0)
    parser.add_argument("--seeks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", default="debian,ours")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/btfs-playback"))
    parser.add_argument("--web-seed-only", action="store_true")
    args = parser.parse_args()
    work = args.workdir
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    big = data / "movie.bin"
    if not big.exists() or big.stat().st_size != args.size:
        make_random_file(big, args.size, seed=1)
    port = free_port(TRACKER_IP)
    torrent = work / "movie.torrent"
    source = ["-w", f"http://{WEB_SEED_IP}:{port}/movie.bin"] if args.web_seed_only \
        else ["-t", f"http://{TRACKER_IP}:{port}/announce"]
    run([sys.executable, "-m", "btfs", "create", str(big), "-o", str(torrent), "-f", "-q",
         "-l", "1M", *source])
    swarm_rate = args.seeders * args.seeder_rate
    limit = physical_limit(args.need, args.bitrate, swarm_rate)
    results: dict[str, Playback] = {}
    clients = args.clients.split(",")
    for client in clients:
        swarm: LimitedSwarm | WebSeedOnly
        if args.web_seed_only:
            swarm = WebSeedOnly(work, data, WEB_SEED_IP, port, swarm_rate // 2)
        else:
            swarm = LimitedSwarm(work, torrent, data, port, args.seeders, args.seeder_rate)
        try:
            results[client] = measure(client, torrent, work, args)
        finally:
            swarm.close()
    sources = "a web seed alone, " if args.web_seed_only else ""
    print(f"{format_size(args.size)} file, 1 MiB pieces; {sources}{args.seeders} x "
          f"{format_size(args.seeder_rate)}/s; stream {format_size(args.bitrate)}/s; "
          f"wait for {args.need:g} s of media, read ahead {args.readahead:g} s, "
          f"seek every {args.seek_every:g} s")
    print(f"physical limit of a startup or seek: {limit:.2f} s")
    for client, r in results.items():
        seeks = " ".join(f"{s:.2f}" for s in r.seeks)
        median = statistics.median(r.seeks) if r.seeks else float("nan")
        # Seeks into data fetched before (by the background download) wait for nothing.
        fetched = [s for s in r.seeks if s > 0.05]
        cold = statistics.median(fetched) if fetched else float("nan")
        print(f"{client:8s} startup {r.startup:6.2f} s  seek median {median:6.2f} s "
              f"({median / limit:4.1f}x limit), of seeks that fetched {cold:6.2f} s "
              f"({cold / limit:4.1f}x)  stalls {r.stalls} ({r.stalled:.1f} s)  seeks: {seeks}")


if __name__ == "__main__":
    main()
