"""Local service discovery (BEP 14) between two btfs processes on loopback.

No tracker, no DHT, no `--peer`: a `btfs seed` and a `btfs download` (or a mount) find
each other by their multicast announces alone (on `lo`, on the test run's own group port: see
tests/conftest.py), and the download completes byte-identical. A download started with
`--no-lsd` beside them is never heard of.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.mounting import mount_swarm
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Mounts, Processes
from tests.support.swarm import finish, share, tree_digest, wait_for_line

pytestmark = pytest.mark.timeout(120)


def test_seed_and_download_find_each_other_by_local_discovery(
    procs: Processes, tmp_path: Path,
) -> None:
    shared = share(tmp_path, 1_500_000, piece_length=32768)
    seed_host = next_loopback_ipv4()
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", seed_host,
                            "--no-trackers", "-v")
    wait_for_line(procs, seed, r"listening on port (\d+)")

    quiet_host = next_loopback_ipv4()
    (tmp_path / "quiet").mkdir()
    quiet = procs.start_btfs("download", shared.torrent, "-o", tmp_path / "quiet", "--bind",
                             quiet_host, "--no-trackers", "--no-lsd", "-v")
    wait_for_line(procs, quiet, r"listening on port (\d+)")

    out = tmp_path / "out"
    out.mkdir()
    host = next_loopback_ipv4()
    download = procs.start_btfs("download", shared.torrent, "-o", out, "--bind", host,
                                "--no-trackers", "-v")
    output = finish(procs, download, timeout=60)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    port = wait_for_line(procs, download, r"listening on port (\d+)").group(1)
    # the seed heard the download's announce (from its address, with its port) and dialled it
    seed_log = procs.output(seed)
    assert f"local peer discovery: {host}:{port}" in seed_log
    assert "lsdservice" not in procs.output(quiet) and quiet_host not in seed_log
    assert "local peer discovery off" not in output + seed_log


def test_a_mount_finds_its_seed_by_local_discovery(
    procs: Processes, mounts: Mounts, tmp_path: Path,
) -> None:
    """A mount with no tracker and no `--peer` reads its file from a seed it never was
    told of: the seed hears the mount's announce and connects."""
    shared = share(tmp_path, 700_000, piece_length=32768)
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", next_loopback_ipv4(),
                            "--no-trackers", "-v")
    wait_for_line(procs, seed, r"listening on port (\d+)")
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, shared.torrent, mnt, "--log", tmp_path / "mount.log", "-v")
    read = subprocess.run(["cat", str(mnt / shared.data.name)], capture_output=True,
                          timeout=60)
    assert read.returncode == 0 and read.stdout == shared.data.read_bytes()
    assert "local peer discovery: " in procs.output(seed)
