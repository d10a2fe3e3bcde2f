"""Streaming from a mount: ours against Debian's `btfs` (C++, libtorrent), same swarm.

A libtorrent seeder and opentracker on loopback serve a large random file (1 MiB pieces)
and a 720p .mp4; each client mounts the torrents fresh and the script measures:

- mount to first 64 KiB read; median and max of 10 random 64 KiB seeks;
- cold full sequential read (MB/s) and a second full read (MB/s);
- `ffprobe` on the .mp4 in a fresh mount; peak RSS of the mount process.

    .venv/bin/python bench/stream.py [--size 512M] [--video-seconds 120] \
        [--clients debian,ours] [--workdir /tmp/btfs-bench]

Needs: opentracker, ffmpeg, /usr/bin/btfs (apt-get install btfs), libtorrent (pip).
Prints a table and the ratios ours/debian.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from btfs.units import parse_size  # noqa: E402
from tests.support.data import make_media_mp4, make_random_file  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procs import is_mounted, unmount  # noqa: E402

TRACKER_IP = "127.0.0.4"
SEEDER_IP = "127.0.0.5"
CHUNK = 64 * 1024


def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw)


def info_hash(torrent: Path) -> str:
    out = run([sys.executable, "-m", "btfs", "info", "--json", str(torrent)]).stdout
    return str(json.loads(out)["info_hash"])


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, then SIGKILL those still there after 5 s."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


class Swarm:
    """opentracker + a libtorrent seeder for the benchmark's torrents."""

    def __init__(self, work: Path, torrents: list[Path], data_dir: Path, port: int) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        whitelist = work / "whitelist"
        whitelist.write_text("".join(info_hash(t) + "\n" for t in torrents))
        self.tracker_port = port
        self.procs.append(subprocess.Popen(
            ["opentracker", "-i", TRACKER_IP, "-p", str(self.tracker_port),
             "-P", str(self.tracker_port), "-w", str(whitelist)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self.seeders = []
        for torrent in torrents:
            log = open(work / f"seed-{torrent.stem}.log", "w")  # noqa: SIM115
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.support.ltpeer", "seed", str(torrent),
                 str(data_dir), "--listen", f"{SEEDER_IP}:0"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True))
            self.seeders.append(work / f"seed-{torrent.stem}.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(p.stat().st_size > 0 for p in self.seeders):
                break
            time.sleep(0.1)
        time.sleep(2)  # the seeders' first announce

    @property
    def announce(self) -> str:
        return f"http://{TRACKER_IP}:{self.tracker_port}/announce"

    def close(self) -> None:
        stop_all(self.procs)


class Mount:
    """One client's mount of one torrent, its process kept to read its peak RSS."""

    def __init__(self, client: str, torrent: Path, mnt: Path, cache: Path,
                 tree: Path = REPO) -> None:
        self.mnt = mnt
        mnt.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        if client == "debian":
            args = ["/usr/bin/btfs", "-f", f"--data-directory={cache}", str(torrent), str(mnt)]
        else:
            args = [sys.executable, "-m", "btfs", "mount", "-f", "--cache-dir", str(cache),
                    str(torrent), str(mnt)]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=tree, start_new_session=True)
        deadline = time.monotonic() + 60
        while not is_mounted(mnt):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{client} did not mount {torrent}")
            time.sleep(0.01)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        unmount(self.mnt)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def find_file(mnt: Path) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = [p for p in mnt.rglob("*") if p.is_file()]
        if files:
            return files[0]
        time.sleep(0.01)
    raise RuntimeError(f"no file appeared in {mnt}")


def read_all(path: Path) -> float:
    start = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
    return path.stat().st_size / 1e6 / (time.monotonic() - start)


def measure(client: str, big: Path, video: Path, work: Path, seed: int) -> dict[str, float]:
    result: dict[str, float] = {}
    m = Mount(client, big, work / f"{client}-mnt", work / f"{client}-cache")
    try:
        path = find_file(m.mnt)
        fd = os.open(path, os.O_RDONLY)
        os.pread(fd, CHUNK, 0)
        result["first_64k_s"] = time.monotonic() - m.start
        size = path.stat().st_size
        rng = random.Random(seed)
        seeks = []
        for _ in range(10):
            offset = rng.randrange(0, size - CHUNK)
            t = time.monotonic()
            os.pread(fd, CHUNK, offset)
            seeks.append(time.monotonic() - t)
        os.close(fd)
        result["seek_median_s"] = statistics.median(seeks)
        result["seek_max_s"] = max(seeks)
        result["cold_read_MBps"] = read_all(path)
        result["second_read_MBps"] = read_all(path)
        result["peak_rss_MB"] = m.peak_rss_mb()
    finally:
        m.close()
    shutil.rmtree(work / f"{client}-cache", ignore_errors=True)
    v = Mount(client, video, work / f"{client}-vmnt", work / f"{client}-vcache")
    try:
        vpath = find_file(v.mnt)
        t = time.monotonic()
        run(["ffprobe", "-v", "error", "-show_entries", "format=duration", str(vpath)],
            timeout=300)
        result["ffprobe_s"] = time.monotonic() - t
    finally:
        v.close()
    shutil.rmtree(work / f"{client}-vcache", ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"))
    parser.add_argument("--video-seconds", type=int, default=120)
    parser.add_argument("--clients", default="debian,ours")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/btfs-bench"))
    args = parser.parse_args()
    clients = args.clients.split(",")
    work = args.workdir
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    big = data / "big.bin"
    if not big.exists() or big.stat().st_size != args.size:
        make_random_file(big, args.size, seed=1)
    video = data / "video.mp4"
    if not video.exists():
        make_media_mp4(video, seconds=args.video_seconds, size="1280x720")

    tracker_probe = free_port(TRACKER_IP)  # the announce URL must be known before the swarm
    torrents = []
    for src in (big, video):
        t = work / f"{src.stem}.torrent"
        run([sys.executable, "-m", "btfs", "create", str(src), "-o", str(t), "-f", "-q",
             "-l", "1M", "-t", f"http://{TRACKER_IP}:{tracker_probe}/announce"])
        torrents.append(t)
    swarm = Swarm(work, torrents, data, tracker_probe)
    results: dict[str, dict[str, float]] = {}
    try:
        for client in clients:
            results[client] = measure(client, torrents[0], torrents[1], work, seed=7)
    finally:
        swarm.close()

    keys = list(next(iter(results.values())))
    print(f"{args.size >> 20} MiB file, 1 MiB pieces, {args.video_seconds} s 720p video")
    print(f"{'':18s}" + "".join(f"{c:>12s}" for c in clients)
          + ("       ratio" if len(clients) == 2 else ""))
    for key in keys:
        row = [results[c][key] for c in clients]
        line = f"{key:18s}" + "".join(f"{v:12.3f}" for v in row)
        if len(clients) == 2 and row[0]:
            line += f"{row[1] / row[0]:12.2f}"
        print(line)


if __name__ == "__main__":
    main()
