"""HTTP streaming against FUSE reads of the same mount: time to first byte and throughput.

A libtorrent seeder on loopback serves a torrent of N random files (default 20 x 16 MiB,
1 MiB pieces). Each phase mounts the torrent fresh (`--lazy`, its own cache, `--http`), so
"cold" means fetched from the seeder during the read; "warm" is a second read of the same
file, whose pieces are now in the cache (FUSE warm is served by the kernel's page cache;
"cached pieces" reads a file another path fetched, cold in the page cache).

- one client: HTTP (curl) of file 0 and FUSE (1 MiB reads) of file 1, cold then warm, then
  each path on the file the other fetched;
- 20 clients at once: 20 curl processes, then 20 FUSE reader threads, each on its own
  file, cold (fresh mount) and warm (again).

    .venv/bin/python bench/http.py [--files 20] [--file-size 16M] [--workdir /tmp/btfs-http]

Needs: curl, FUSE, libtorrent (pip). Prints one table (time to first byte in ms, MB/s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from btfs.create import CreateOptions, make_torrent  # noqa: E402
from btfs.metainfo import parse_torrent  # noqa: E402
from btfs.units import parse_size  # noqa: E402
from tests.support.data import make_random_file  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procs import is_mounted, unmount  # noqa: E402

SEEDER_IP = "127.0.0.7"
MOUNT_IP = "127.0.0.8"
FIRST = 64 * 1024

Sample = tuple[float, float, int]  # (seconds to first byte, seconds in all, bytes)


class Mount:
    """A fresh `btfs mount --lazy --http` of the torrent from the seeder."""

    def __init__(self, work: Path, name: str, torrent: Path, peer: str) -> None:
        self.mnt = work / f"{name}-mnt"
        self.cache = work / f"{name}-cache"
        shutil.rmtree(self.cache, ignore_errors=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.port = free_port("127.0.0.1")
        result = subprocess.run(
            [sys.executable, "-m", "btfs", "mount", str(torrent), str(self.mnt), "--lazy",
             "--cache-dir", str(self.cache), "--peer", peer, "--no-trackers",
             "--bind", MOUNT_IP, "--http", f"127.0.0.1:{self.port}"],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0 or not is_mounted(self.mnt):
            raise RuntimeError(f"mount failed: {result.stderr}")
        deadline = time.monotonic() + 60  # connected to the seeder: measure reads, not dials
        while int(os.getxattr(self.mnt, "user.btfs.peers")) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the mount did not connect to the seeder")
            time.sleep(0.05)

    def close(self) -> None:
        unmount(self.mnt)
        shutil.rmtree(self.cache, ignore_errors=True)


def curl_get(url: str) -> Sample:
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "--max-time", "600", "-w",
         "%{time_pretransfer} %{time_starttransfer} %{time_total} %{size_download}", url],
        capture_output=True, text=True, timeout=660, check=True).stdout.split()
    pre, first, total, size = float(out[0]), float(out[1]), float(out[2]), int(out[3])
    return first - pre, total - pre, size


def fuse_read(path: Path) -> Sample:
    start = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = len(os.read(fd, FIRST))
        first = time.monotonic() - start
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
    finally:
        os.close(fd)
    return first, time.monotonic() - start, size


def at_once(jobs: list[tuple[str, str]], read: object) -> tuple[list[Sample], float]:
    """Run every job in its own thread at once; their samples and the wall time."""
    samples: list[Sample | None] = [None] * len(jobs)

    def one(i: int, target: str) -> None:
        samples[i] = read(target)  # type: ignore[operator]

    threads = [threading.Thread(target=one, args=(i, target)) for i, (_, target) in
               enumerate(jobs)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    assert all(s is not None for s in samples)
    return [s for s in samples if s is not None], wall


def row(label: str, samples: list[Sample], wall: float | None = None) -> str:
    firsts = [s[0] * 1000 for s in samples]
    rates = [s[2] / 1e6 / s[1] for s in samples]
    total = sum(s[2] for s in samples) / 1e6
    aggregate = total / (wall if wall is not None else sum(s[1] for s in samples))
    if len(samples) == 1:
        return f"| {label} | {firsts[0]:.1f} | | {rates[0]:.0f} | |"
    return (f"| {label} | {statistics.median(firsts):.1f} | {max(firsts):.1f} | "
            f"{statistics.median(rates):.1f} (min {min(rates):.1f}) | {aggregate:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--file-size", type=parse_size, default=parse_size("16M"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/btfs-http-bench"))
    args = parser.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data" / "payload"
    names = [f"file{i:02d}.bin" for i in range(args.files)]
    for i, name in enumerate(names):
        make_random_file(data / name, args.file_size, seed=i)
    torrent = work / "payload.torrent"
    torrent.write_bytes(make_torrent(data, CreateOptions(piece_length=1 << 20,
                                                         creation_date=None)))
    info_hash = parse_torrent(torrent.read_bytes()).info_hash_hex
    seed_port = free_port(SEEDER_IP)
    seeder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ltpeer", "seed", str(torrent), str(data.parent),
         "--listen", f"{SEEDER_IP}:{seed_port}"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, start_new_session=True)
    assert seeder.stdout is not None
    seeder.stdout.readline()  # it listens
    peer = f"{SEEDER_IP}:{seed_port}"
    lines = ["| reads | first byte, ms (median) | max | MB/s per client | MB/s in all |",
             "| --- | --- | --- | --- | --- |"]
    try:
        m = Mount(work, "single", torrent, peer)
        try:
            url = f"http://127.0.0.1:{m.port}/t/{info_hash}/"
            files = [m.mnt / "payload" / n for n in names]
            far = len(names) // 2  # beyond the read-ahead of file 0
            lines.append(row("HTTP, cold", [curl_get(url + names[0])]))
            lines.append(row("FUSE, cold", [fuse_read(files[far])]))
            lines.append(row("HTTP, warm", [curl_get(url + names[0])]))
            lines.append(row("FUSE, warm (page cache)", [fuse_read(files[far])]))
            lines.append(row("HTTP, cached pieces", [curl_get(url + names[far])]))
            lines.append(row("FUSE, cached pieces", [fuse_read(files[0])]))
        finally:
            m.close()
        n = args.files
        m = Mount(work, "many-http", torrent, peer)
        try:
            url = f"http://127.0.0.1:{m.port}/t/{info_hash}/"
            jobs = [(name, url + name) for name in names]
            lines.append(row(f"HTTP, {n} clients, cold", *at_once(jobs, curl_get)))
            lines.append(row(f"HTTP, {n} clients, warm", *at_once(jobs, curl_get)))
        finally:
            m.close()
        m = Mount(work, "many-fuse", torrent, peer)
        try:
            jobs = [(name, str(m.mnt / "payload" / name)) for name in names]
            lines.append(row(f"FUSE, {n} readers, cold",
                             *at_once(jobs, lambda p: fuse_read(Path(p)))))
            lines.append(row(f"FUSE, {n} readers, warm (page cache)",
                             *at_once(jobs, lambda p: fuse_read(Path(p)))))
        finally:
            m.close()
    finally:
        os.killpg(seeder.pid, 15)
        seeder.wait(10)
    print(f"{args.files} files of {args.file_size / 2**20:.0f} MiB, 1 MiB pieces, "
          f"libtorrent seeder on loopback")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
