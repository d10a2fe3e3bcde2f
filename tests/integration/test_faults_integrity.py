"""Bytes that never passed SHA-1 are never served: a cache changed and truncated between
two `--keep` mounts is checked at the second, and its bad pieces fetched again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.env import require_fuse
from tests.support.mounting import btfs
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Mounts, Processes, is_mounted, pid_alive
from tests.support.swarm import share, start_seed

pytestmark = pytest.mark.fuse

TREE = {"a.bin": 300_000, "b.bin": 200_000, "c.bin": 100_000}



def mount_read_unmount(mounts: Mounts, torrent: Path, mnt: Path, data: Path,
                       *args: str | Path) -> None:
    """Mount, check every byte read against the source, unmount."""
    r = btfs("mount", torrent, mnt, *args, "--bind", next_loopback_ipv4())
    assert r.returncode == 0, r.stderr
    pid = mounts.remember_pid(mnt)
    assert pid is not None
    for name in TREE:
        assert (mnt / "Set" / name).read_bytes() == (data / name).read_bytes()
    assert pid_alive(pid)
    assert btfs("unmount", mnt).returncode == 0
    assert not is_mounted(mnt)


def test_a_cache_changed_between_keep_mounts_is_checked_and_refetched(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    require_fuse()
    shared = share(tmp_path, TREE, piece_length=16384, name="Set")
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    cache, mnt, log = tmp_path / "cache", tmp_path / "mnt", tmp_path / "mount.log"
    mnt.mkdir()
    mounts.add(mnt)
    args = ["--cache-dir", cache, "--keep", "--no-trackers", "--peer", f"{host}:{port}",
            "--log", log]
    mount_read_unmount(mounts, shared.torrent, mnt, shared.data, *args)
    with open(cache / "files" / "0", "r+b") as f:  # a.bin is the cache's file 0
        f.seek(1000)
        f.write(b"XXXX")
    os.truncate(cache / "files" / "1", 1000)  # b.bin
    mount_read_unmount(mounts, shared.torrent, mnt, shared.data, *args)
    text = log.read_text()
    assert "from the resume record; 2 file(s) changed since" in text
    assert "shorter than expected" not in text
