"""Random 64 KiB seeks through a fresh mount on unlimited loopback, two trees interleaved.

A libtorrent seeder and opentracker on loopback serve one random file (1 MiB pieces); each
round mounts it fresh with every variant in turn (this tree, and `--before DIR`: a copy of
another commit, run as `python -m btfs` from there), reads the first 64 KiB, then times
`--seeks` random 64 KiB `pread`s while the background download runs, and with `--read` a
cold sequential read of the whole file. Prints the median, quartiles and max of each
variant's seeks over all rounds, and its cold-read MB/s per round.

    .venv/bin/python bench/seeks.py [--size 256M] [--rounds 4] [--seeks 15] \
        [--before /tmp/old-tree] [--read] [--workdir /tmp/btfs-seeks]

Needs: opentracker, libtorrent (pip). The machine is shared and noisy: compare the
variants of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bench.stream as stream  # noqa: E402
from btfs.units import parse_size  # noqa: E402
from tests.support.data import make_random_file  # noqa: E402
from tests.support.net import free_port  # noqa: E402

CHUNK = 64 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seeks", type=int, default=15)
    parser.add_argument("--before", type=Path, help="another tree to compare with")
    parser.add_argument("--read", action="store_true", help="also a cold sequential read")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/btfs-seeks"))
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    big = make_random_file(work / "data" / "big.bin", args.size, seed=5)
    torrent = work / "big.torrent"
    port = free_port(stream.TRACKER_IP)
    stream.run([sys.executable, "-m", "btfs", "create", str(big), "-o", str(torrent),
                "-l", "1M", "-t", f"http://{stream.TRACKER_IP}:{port}/announce"], cwd=REPO)
    trees = {"this": REPO} | ({"before": args.before.resolve()} if args.before else {})
    seeks: dict[str, list[float]] = {name: [] for name in trees}
    reads: dict[str, list[float]] = {name: [] for name in trees}
    swarm = stream.Swarm(work, [torrent], work / "data", port)
    try:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                m = stream.Mount("ours", torrent, work / f"mnt-{name}", work / f"cache-{name}",
                                 tree)
                try:
                    path = stream.find_file(m.mnt)
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.pread(fd, CHUNK, 0)
                        size = path.stat().st_size
                        rng = random.Random(round_)
                        for _ in range(args.seeks):
                            offset = rng.randrange(0, size - CHUNK)
                            start = time.monotonic()
                            os.pread(fd, CHUNK, offset)
                            seeks[name].append(time.monotonic() - start)
                    finally:
                        os.close(fd)
                    if args.read:
                        reads[name].append(stream.read_all(path))
                finally:
                    m.close()
                    shutil.rmtree(work / f"cache-{name}", ignore_errors=True)
    finally:
        swarm.close()
    print(f"{args.size >> 20} MiB file, 1 MiB pieces, {args.rounds} rounds of {args.seeks} "
          "random 64 KiB seeks")
    for name, times in seeks.items():
        q = statistics.quantiles(times, n=4)
        line = (f"{name:7} seek median {statistics.median(times) * 1000:5.1f} ms  "
                f"p25 {q[0] * 1000:5.1f}  p75 {q[2] * 1000:5.1f}  max {max(times) * 1000:5.1f}")
        if reads[name]:
            line += "  cold read MB/s " + " ".join(f"{r:.0f}" for r in reads[name])
        print(line)


if __name__ == "__main__":
    main()
