"""A full cache disk: the mount stays up, says why, serves what it verified, and
completes once space returns (a 64 MiB torrent with its cache on a 20 MiB tmpfs)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import missing, require_fuse
from tests.support.mounting import btfs
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Mounts, Processes, is_mounted, pid_alive, wait_for
from tests.support.swarm import share, start_seed

pytestmark = pytest.mark.fuse

SIZE = 64 << 20
CHUNK = 1 << 20



@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs, unmounted at teardown (lazily: a process may still hold a file)."""
    folder = tmp_path / "small"
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        missing(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def problem(mnt: Path) -> str:
    try:
        return os.getxattr(mnt, "user.btfs.problem").decode()
    except OSError:
        return ""


def test_a_full_cache_disk_keeps_the_mount_up(tmp_path: Path, small_disk: Path,
                                              procs: Processes, mounts: Mounts) -> None:
    require_fuse()
    shared = share(tmp_path, SIZE, piece_length=CHUNK)
    source = shared.data.read_bytes()
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.add(mnt)
    log = tmp_path / "mount.log"
    r = btfs("mount", shared.torrent, mnt, "--cache-dir", small_disk / "cache", "--no-trackers",
             "--peer", f"{host}:{port}", "--bind", next_loopback_ipv4(), "--log", log)
    assert r.returncode == 0, r.stderr
    pid = mounts.remember_pid(mnt)
    assert pid is not None

    wait_for(lambda: problem(mnt), 60, "the mount to report the full disk")
    assert "No space left on device" in problem(mnt)
    assert pid_alive(pid) and is_mounted(mnt)
    assert "No space left on device" in log.read_text()
    [status] = json.loads(btfs("status", mnt, "--json").stdout)
    assert "No space left on device" in status["torrent"]["problem"]
    assert "No space left on device" in btfs("status", mnt).stdout

    served = failed = 0
    fd = os.open(mnt / shared.data.name, os.O_RDONLY)
    try:
        for offset in range(0, SIZE, CHUNK):
            try:
                got = os.pread(fd, CHUNK, offset)
            except OSError as exc:
                assert exc.errno == errno.EIO
                failed += 1
                continue
            assert got == source[offset : offset + CHUNK]
            served += 1
    finally:
        os.close(fd)
    assert served > 0 and failed > 0, (served, failed)
    assert pid_alive(pid) and is_mounted(mnt)

    subprocess.run(["mount", "-o", "remount,size=100m", str(small_disk)], check=True,
                   timeout=30)
    wait_for(lambda: float(os.getxattr(mnt, "user.btfs.progress")) == 1.0, 60,
             "the download to complete once space returned")
    assert problem(mnt) == ""
    assert (mnt / shared.data.name).read_bytes() == source
