"""Issue 16's smaller points: a read interrupted by unmount fails with EIO (as the docs
say), `btfs unmount` returns once the process is gone, `btfs info -` reads a bounded
amount of standard input."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.integration.test_mount_local import blocked_reader
from tests.support.env import require_fuse
from tests.support.mounting import btfs
from tests.support.procs import Mounts, pid_alive, wait_for
from tests.support.swarm import share

pytestmark = pytest.mark.fuse



@pytest.mark.parametrize("how", ["btfs unmount", "SIGTERM"])
def test_a_read_waiting_at_unmount_fails_with_eio_and_unmount_waits_for_the_process(
        tmp_path: Path, mounts: Mounts, how: str) -> None:
    require_fuse()
    shared = share(tmp_path, 1 << 20, piece_length=65536)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.add(mnt)
    r = btfs("mount", shared.torrent, mnt, "--no-trackers", "--lazy",
             "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    pid = mounts.remember_pid(mnt)
    assert pid is not None
    target = mnt / shared.data.name
    thread, outcome = blocked_reader(target)
    wait_for(lambda: int(os.getxattr(target, "user.btfs.pieces_waited_on")) > 0, 10,
             "the read to wait on pieces")
    if how == "btfs unmount":
        assert btfs("unmount", mnt).returncode == 0
        assert not pid_alive(pid), "btfs unmount returned before the process exited"
    else:
        os.kill(pid, 15)
        wait_for(lambda: not pid_alive(pid), 10, "the process to exit")
    thread.join(10)
    assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.EIO, outcome
    assert not (tmp_path / "cache").exists()


def test_info_reads_at_most_a_torrent_s_worth_of_standard_input(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(200 << 20)
    with open(big, "rb") as stdin:
        r = btfs("info", "-", stdin=stdin.fileno())
    assert r.returncode == 2
    assert r.stderr.strip() == ("btfs: error: standard input: larger than 67108864 bytes, "
                                "not a torrent")
