"""A library of many torrents in one mount: what it costs to mount, list and keep.

Makes N small torrents on the fly (one file each of 64 KiB to 1 MiB, random bytes), puts
them in a watched folder and mounts it (`btfs mount --watch`, no trackers, no peers: this
measures the library, not a swarm), then prints:

- time to mount (the command returns once every torrent is a folder);
- RSS of the mount process;
- time of `ls -R` of the mount (cold: the kernel asks for every entry) and of
  `btfs status` (over the control socket);
- CPU of the idle mount process over `--idle` seconds, in % of one core;
- time until a torrent file dropped in the folder is a folder of the mount.

    .venv/bin/python bench/library.py [--torrents 1000] [--idle 30] [--workdir /tmp/btfs-lib]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from btfs.create import CreateOptions, make_torrent  # noqa: E402
from tests.support.procs import is_mounted, mount_pid, unmount  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def btfs(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "btfs", *map(str, args)], check=True,
                          text=True, capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_torrents(folder: Path, data: Path, count: int) -> list[Path]:
    rng = __import__("random").Random(1)
    out = []
    for i in range(count):
        size = rng.choice([64 << 10, 256 << 10, 1 << 20])
        path = data / f"item-{i:04d}.bin"
        path.write_bytes(rng.randbytes(size))
        torrent = folder / f"item-{i:04d}.torrent"
        torrent.write_bytes(make_torrent(path, CreateOptions(piece_length=32768,
                                                             creation_date=None)))
        out.append(torrent)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--torrents", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/btfs-bench-library"))
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    watch, data, mnt, cache = work / "watch", work / "data", work / "mnt", work / "cache"
    for folder in (watch, data, mnt):
        folder.mkdir(parents=True)
    extra = work / "extra"
    extra.mkdir()
    t0 = time.perf_counter()
    make_torrents(watch, data, args.torrents)
    [late] = make_torrents(extra, data, 1)
    print(f"made {args.torrents} torrents in {time.perf_counter() - t0:.1f} s")

    try:
        t0 = time.perf_counter()
        btfs("mount", "--watch", watch, mnt, "--cache-dir", cache, "--no-trackers",
             "--bind", "127.0.0.1")
        mount_time = time.perf_counter() - t0
        assert is_mounted(mnt)
        pid = mount_pid(mnt)
        assert pid is not None
        folders = len(os.listdir(mnt))

        t0 = time.perf_counter()
        listing = subprocess.run(["ls", "-R", str(mnt)], check=True, capture_output=True,
                                 text=True).stdout
        ls_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        status = btfs("status", mnt).stdout
        status_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        btfs("status", mnt, "--json")
        status_json_time = time.perf_counter() - t0

        time.sleep(2)  # let the start-up settle
        rss = rss_mib(pid)
        before, t0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(pid) - before) / (time.perf_counter() - t0) * 100

        t0 = time.perf_counter()
        shutil.copy(late, watch / ("late-" + late.name))
        name = late.name.removesuffix(".torrent") + ".bin"
        while not (mnt / name).exists():
            time.sleep(0.005)
        appear = time.perf_counter() - t0

        print(f"torrents: {folders} folders; ls -R: {len(listing.splitlines())} lines; "
              f"status: {len(status.splitlines())} lines")
        print(f"time to mount: {mount_time:.2f} s")
        print(f"RSS of the mount: {rss:.0f} MiB ({rss * 1024 / folders:.0f} KiB per torrent)")
        print(f"ls -R: {ls_time:.2f} s")
        print(f"btfs status: {status_time:.2f} s (--json {status_json_time:.2f} s)")
        print(f"idle CPU over {args.idle:.0f} s: {idle_cpu:.2f}% of a core")
        print(f"a dropped .torrent is a folder after {appear * 1000:.0f} ms")
        t0 = time.perf_counter()
        btfs("unmount", mnt)
        print(f"unmount (1,000 sessions stopped, caches removed): "
              f"{time.perf_counter() - t0:.2f} s")
    finally:
        if is_mounted(mnt):
            unmount(mnt)


if __name__ == "__main__":
    main()
