"""The FUSE and child-process fixtures work here: a real mount, cleaned up even when busy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.env import require_fuse
from tests.support.hellofs import CONTENT
from tests.support.procs import Mounts, Processes, is_mounted, wait_for


def start_hellofs(procs: Processes, mountpoint: Path) -> subprocess.Popen[bytes]:
    mountpoint.mkdir()
    proc = procs.start([sys.executable, "-m", "tests.support.hellofs", str(mountpoint)],
                       name="hellofs")
    wait_for(lambda: is_mounted(mountpoint) or proc.poll() is not None, 15, "the FUSE mount")
    assert is_mounted(mountpoint), procs.output(proc)
    return proc


def test_fuse_mount_reads(tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    require_fuse()
    mnt = mounts.add(tmp_path / "mnt")
    start_hellofs(procs, mnt)
    assert (mnt / "hello.txt").read_bytes() == CONTENT
    assert [p.name for p in mnt.iterdir()] == ["hello.txt"]


def test_cleanup_unmounts_a_busy_mount_and_kills_the_process(tmp_path: Path) -> None:
    require_fuse()
    procs = Processes(tmp_path)
    mounts = Mounts()
    mnt = mounts.add(tmp_path / "mnt")
    proc = start_hellofs(procs, mnt)
    with open(mnt / "hello.txt", "rb"):  # keeps the mount busy
        mounts.cleanup()
        procs.cleanup()
        assert not is_mounted(mnt)
        assert proc.poll() is not None
