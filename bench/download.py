"""Whole-torrent download: `btfs download` against a libtorrent leecher, same seeder, same run.

A libtorrent seeder on loopback serves one random file (default 512 MiB, 1 MiB pieces);
each client downloads it from scratch through `--peer` alone (no tracker), in turn, a
few rounds. Prints wall time, MB/s, peak RSS and the ratio ours/libtorrent.

    .venv/bin/python bench/download.py [--size 512M] [--piece-length 1M] [--rounds 3] \
        [--workdir /tmp/btfs-bench-dl] [--profile FILE]

`--profile FILE` runs our download once more under cProfile and writes the stats there
(`python -m pstats FILE`). Needs libtorrent (pip).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from btfs.create import CreateOptions, make_torrent  # noqa: E402
from btfs.units import parse_size  # noqa: E402
from tests.support.data import make_random_file  # noqa: E402
from tests.support.net import free_port  # noqa: E402

SEEDER = "127.0.0.51"
OURS = "127.0.0.52"
THEIRS = "127.0.0.53"


def run_timed(args: list[str], out_dir: Path) -> tuple[float, float]:
    """Run a download command; (seconds, its peak RSS in MB via wait4)."""
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stdout is not None
        raise RuntimeError(f"{args[:4]} failed:\n{proc.stdout.read().decode()[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"))
    parser.add_argument("--piece-length", type=parse_size, default=parse_size("1M"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/btfs-bench-dl"))
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "seed").mkdir(parents=True)
    data = make_random_file(work / "seed" / "big.bin", args.size, seed=7)
    torrent = work / "big.torrent"
    torrent.write_bytes(make_torrent(data, CreateOptions(piece_length=args.piece_length,
                                                         creation_date=None)))
    port = free_port(SEEDER)
    seeder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ltpeer", "seed", str(torrent), str(work / "seed"),
         "--listen", f"{SEEDER}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    try:
        assert seeder.stdout is not None
        while json.loads(seeder.stdout.readline())["state"] != "seeding":
            pass
        results: dict[str, list[tuple[float, float]]] = {"btfs": [], "libtorrent": []}
        for _ in range(args.rounds):
            for client in ("btfs", "libtorrent"):
                out = work / f"out-{client}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if client == "btfs":
                    cmd = [sys.executable, "-m", "btfs", "download", str(torrent), "-o", str(out),
                           "--bind", OURS, "--peer", f"{SEEDER}:{port}", "--no-trackers"]
                else:
                    cmd = [sys.executable, "-m", "tests.support.ltpeer", "leech", str(torrent),
                           str(out), "--listen", f"{THEIRS}:0", "--peer", f"{SEEDER}:{port}",
                           "--exit-when-done"]
                results[client].append(run_timed(cmd, out))
                shutil.rmtree(out, ignore_errors=True)
        if args.profile:
            out = work / "out-profile"
            out.mkdir()
            run_timed([sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m", "btfs",
                       "download", str(torrent), "-o", str(out), "--bind", OURS,
                       "--peer", f"{SEEDER}:{port}", "--no-trackers"], out)
    finally:
        os.killpg(seeder.pid, signal.SIGTERM)
        seeder.wait(10)

    mb = args.size / 1e6
    print(f"{args.size >> 20} MiB, {args.piece_length >> 10} KiB pieces, libtorrent seeder on "
          f"loopback, {args.rounds} rounds (the libtorrent leecher's time includes starting "
          "a Python process and libtorrent)")
    print(f"{'client':<12}{'median s':>10}{'MB/s':>10}{'best s':>10}{'peak RSS MB':>14}")
    medians = {}
    for client, runs in results.items():
        times = [t for t, _ in runs]
        medians[client] = statistics.median(times)
        print(f"{client:<12}{medians[client]:>10.2f}{mb / medians[client]:>10.1f}"
              f"{min(times):>10.2f}{max(r for _, r in runs):>14.1f}")
    print(f"throughput ratio btfs/libtorrent: {medians['libtorrent'] / medians['btfs']:.2f}x "
          "(goal >= 0.5x)")


if __name__ == "__main__":
    main()
