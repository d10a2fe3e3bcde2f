"""How `btfs mount` and `btfs unmount` fail, and what the filesystem refuses.

The happy paths are in test_mount_local.py; these are the error paths: an error in the
mount process after it has forked, a mount whose process died, mounts that are not
btfs's, a large folder read in several `readdir` calls, names and attributes that do
not exist.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import pytest

from btfs import mount as mount_module
from btfs.errors import BtfsError
from tests.integration.test_mount_local import btfs, make_torrent, mount_complete
from tests.support.env import require_fuse
from tests.support.procs import HANG, Mounts, is_mounted, mount_pid, pid_alive, wait_for

pytestmark = pytest.mark.fuse


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_an_error_after_the_fork_is_reported_and_nothing_stays_mounted(
        tmp_path: Path, mounts: Mounts, foreground: bool) -> None:
    """The mount process fails to listen for peers: the one error line reaches the user
    (from the daemon through its pipe, or directly in the foreground) and exit is 1."""
    require_fuse()
    torrent, _ = make_torrent(tmp_path)
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    cache = tmp_path / "cache"
    r = btfs("mount", torrent, mnt, "--cache-dir", cache, "--bind", "10.255.255.1",
             "--no-trackers", *(["-f"] if foreground else []), timeout=HANG)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        "btfs: error: cannot listen for peers on 10.255.255.1 port 0: "
        "Cannot assign requested address"], r.stderr
    assert not is_mounted(mnt)
    assert not cache.exists(), "the failed mount left its cache behind"


def test_unmount_after_the_mount_process_died(tmp_path: Path, mounts: Mounts) -> None:
    """A crashed mount (its files answer ECONNABORTED, then "Transport endpoint is not
    connected") still unmounts cleanly: there is no process to ask, so fusermount3."""
    _, _, mnt = mount_complete(tmp_path, mounts)
    pid = mount_pid(mnt)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), HANG, "the mount process to die")
    with pytest.raises(OSError) as dead:
        os.stat(mnt / "Show")
    assert dead.value.errno in (errno.ECONNABORTED, errno.ENOTCONN), dead.value
    assert is_mounted(mnt)
    r = btfs("unmount", mnt, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(mnt)


def test_mounts_that_are_not_btfs_are_left_alone(tmp_path: Path) -> None:
    torrent, _ = make_torrent(tmp_path)
    r = btfs("unmount", "/proc")
    assert (r.returncode, r.stderr) == (2, "btfs: error: /proc is not a btfs mount (proc)\n")
    r = btfs("mount", torrent, "/proc")
    assert (r.returncode, r.stderr) == (
        2, "btfs: error: /proc is already a mount point (proc)\n")


def test_a_large_folder_is_listed_over_several_readdir_calls(tmp_path: Path,
                                                             mounts: Mounts) -> None:
    """300 names do not fit one reply buffer: the kernel comes back for the rest."""
    names = {f"folder/file number {i:04d} with a long name.bin": 1 + i % 7 for i in range(300)}
    _, _, mnt = mount_complete(tmp_path, mounts, names)
    listed = os.listdir(mnt / "Show" / "folder")
    assert sorted(listed) == sorted(Path(n).name for n in names)
    assert len(listed) == len(set(listed)) == 300


def test_missing_names_and_attributes(tmp_path: Path, mounts: Mounts) -> None:
    _, _, mnt = mount_complete(tmp_path, mounts)
    notes = mnt / "Show" / "notes.txt"
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "Show" / "no such file")
    for name in ("user.other", "user.btfs.no_such_attribute", "trusted.btfs.progress"):
        with pytest.raises(OSError) as missing:
            os.getxattr(notes, name)
        assert missing.value.errno == errno.ENODATA, name
    assert os.getxattr(notes, "user.btfs.size") == b"1234"


def test_fuse_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before anything else, in the process the user started."""
    exists, which = os.path.exists, mount_module.shutil.which
    monkeypatch.setattr(os.path, "exists", lambda p: p != "/dev/fuse" and exists(p))
    with pytest.raises(BtfsError, match="/dev/fuse is missing"):
        mount_module.check_fuse_available()
    monkeypatch.undo()
    monkeypatch.setattr(mount_module.shutil, "which",
                        lambda c: None if c == "fusermount3" else which(c))
    with pytest.raises(BtfsError, match="apt-get install fuse3"):
        mount_module.check_fuse_available()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "pyfuse3", None)  # import fails
    with pytest.raises(BtfsError, match="pyfuse3 cannot be imported"):
        mount_module.check_fuse_available()
