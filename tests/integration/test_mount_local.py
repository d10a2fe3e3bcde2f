"""`btfs mount` over data already in the cache: the filesystem as a user sees it.

These mounts need no swarm: the torrent's data is placed in `--cache-dir`, which the
mount checks piece by piece at start. What is missing stays missing, so a read of it
waits, which is how unmounting under a blocked read is shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from btfs.metainfo import load_torrent
from tests.support.data import make_tree
from tests.support.env import require_fuse, require_libtorrent, require_tool
from tests.support.mounting import btfs, mount
from tests.support.procs import HANG, Mounts, is_mounted, pid_alive, wait_for

pytestmark = pytest.mark.fuse

TREE = {"Season 1/e01.mkv": 700_001, "Season 1/e02.mkv": 300_000, "notes.txt": 1234,
        "Season 1/extras/ä b.bin": 65_536, "empty.dat": 0}



def make_torrent(tmp_path: Path, tree: dict[str, int] = TREE) -> tuple[Path, Path]:
    """A multi-file torrent of a random tree; returns (torrent, folder with the data)."""
    root = make_tree(tmp_path / "src" / "Show", tree, seed=3)
    torrent = tmp_path / "show.torrent"
    r = btfs("create", root, "-o", torrent, "-l", "16K", "-q", "-c", "test")
    assert r.returncode == 0, r.stderr
    return torrent, root


def place_in_cache(root: Path, cache: Path) -> None:
    (cache / "data").mkdir(parents=True)
    shutil.copytree(root, cache / "data" / root.name)


def mount_complete(tmp_path: Path, mounts: Mounts,
                   tree: dict[str, int] = TREE) -> tuple[Path, Path, Path]:
    """A torrent of `tree` mounted on tmp_path/mnt, all its data already in the cache;
    (torrent, folder with the original data, mount point)."""
    torrent, root = make_torrent(tmp_path, tree)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = tmp_path / "mnt"
    mount(mounts, torrent, mnt, "--cache-dir", cache)
    return torrent, root, mnt


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tree_metadata_and_contents(tmp_path: Path, mounts: Mounts) -> None:
    torrent, root, mnt = mount_complete(tmp_path, mounts)
    created = json.loads(btfs("info", torrent, "--json").stdout)["creation_date"]

    assert sorted(p.name for p in mnt.iterdir()) == ["Show"]
    for rel, size in TREE.items():
        path = mnt / "Show" / rel
        st = path.stat()
        assert st.st_size == size
        assert stat.S_IMODE(st.st_mode) == 0o444
        assert int(st.st_mtime) == created
        assert sha256(path) == sha256(root / rel)
    assert stat.S_IMODE((mnt / "Show" / "Season 1").stat().st_mode) == 0o555

    with pytest.raises(OSError):
        (mnt / "Show" / "notes.txt").write_bytes(b"no")
    with pytest.raises(OSError):
        (mnt / "Show" / "new").touch()

    find = subprocess.run(["find", str(mnt), "-type", "f"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.split("\n")
    assert len([line for line in find if line]) == len(TREE)
    du = subprocess.run(["du", "-sb", str(mnt)], capture_output=True, text=True, check=True,
                        timeout=30).stdout
    assert int(du.split()[0]) >= sum(TREE.values())
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(mnt / "Show"), str(copy)], check=True, timeout=60)
    for rel in TREE:
        assert sha256(copy / rel) == sha256(root / rel)
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", f"{mnt}/Show/", str(tmp_path / "rsync")], check=True,
                       timeout=60)
        assert sha256(tmp_path / "rsync" / "notes.txt") == sha256(root / "notes.txt")


def test_random_reads_across_piece_and_file_boundaries(tmp_path: Path, mounts: Mounts) -> None:
    _, root, mnt = mount_complete(tmp_path, mounts)
    rng = random.Random(11)
    files = [rel for rel, size in TREE.items() if size]
    originals = {rel: (root / rel).read_bytes() for rel in files}
    for _ in range(200):
        rel = rng.choice(files)
        data = originals[rel]
        offset = rng.randrange(len(data))
        size = rng.choice([1, 100, 16383, 16384, 16385, 70_000, 300_000])
        fd = os.open(mnt / "Show" / rel, os.O_RDONLY)
        try:
            got = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        assert got == data[offset : offset + size], (rel, offset, size)


def test_xattrs_and_statfs(tmp_path: Path, mounts: Mounts) -> None:
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    (cache / "data" / "Show" / "notes.txt").write_bytes(b"x" * 1234)  # corrupt: not verified
    mnt = tmp_path / "mnt"
    pid = mount(mounts, torrent, mnt, "--cache-dir", cache)
    f = mnt / "Show" / "Season 1" / "e02.mkv"
    assert os.getxattr(f, "user.btfs.progress") == b"1.0000"
    assert os.getxattr(f, "user.btfs.size") == b"300000"
    assert float(os.getxattr(mnt / "Show" / "notes.txt", "user.btfs.progress")) < 1
    assert "user.btfs.progress" in os.listxattr(f)
    # user.btfs.pid (which do_mount read) names the live process serving this mount
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[1:4] == [b"-m", b"btfs", b"mount"] and os.fsencode(mnt) in command, command
    getfattr = require_tool("getfattr", "attr")
    out = subprocess.run([getfattr, "-d", str(f)], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert 'user.btfs.progress="1.0000"' in out
    vfs = os.statvfs(mnt)
    assert vfs.f_bavail == 0
    assert vfs.f_blocks * vfs.f_frsize >= sum(TREE.values())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_padding_files_are_hidden(tmp_path: Path, mounts: Mounts) -> None:
    require_libtorrent()
    import libtorrent as lt

    root = make_tree(tmp_path / "src" / "Padded", {"a.bin": 20_000, "b.bin": 5_000}, seed=4)
    fs = lt.file_storage()
    lt.add_files(fs, str(root))
    ct = lt.create_torrent(fs, 16384, flags=lt.create_torrent.v1_only
                           | lt.create_torrent.canonical_files)
    lt.set_piece_hashes(ct, str(root.parent))
    torrent = tmp_path / "padded.torrent"
    torrent.write_bytes(lt.bencode(ct.generate()))
    assert b".pad" in torrent.read_bytes()
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = tmp_path / "mnt"
    mount(mounts, torrent, mnt, "--cache-dir", cache)
    assert sorted(p.name for p in (mnt / "Padded").iterdir()) == ["a.bin", "b.bin"]
    assert (mnt / "Padded" / "b.bin").read_bytes() == (root / "b.bin").read_bytes()
    assert float(os.getxattr(mnt, "user.btfs.progress")) == 1.0


def test_keep_then_remount_uses_the_resume_record(tmp_path: Path, mounts: Mounts) -> None:
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = tmp_path / "mnt"
    mount(mounts, torrent, mnt, "--cache-dir", cache, "--keep")
    assert btfs("unmount", mnt).returncode == 0
    assert (cache / "resume").exists()
    # The resume record is trusted for files whose size and mtime it matches, so the
    # remount does not re-hash them; everything reads back complete with nothing fetched.
    log = tmp_path / "log"
    mount(mounts, torrent, mnt, "-o", f"cache_dir={cache},keep,log={log}")
    assert float(os.getxattr(mnt, "user.btfs.progress")) == 1.0
    assert sha256(mnt / "Show" / "Season 1" / "e01.mkv") == sha256(root / "Season 1/e01.mkv")
    assert "from the resume record" in log.read_text()
    assert btfs("unmount", mnt).returncode == 0
    assert (cache / "files" / "4").exists()  # notes.txt, file 4, kept under its index


def test_cache_is_removed_without_keep(tmp_path: Path, mounts: Mounts) -> None:
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    (cache / "mine.txt").write_text("not btfs's")
    mnt = tmp_path / "mnt"
    mount(mounts, torrent, mnt, "--cache-dir", cache)
    assert btfs("unmount", mnt).returncode == 0
    assert not (cache / "data").exists()
    assert not (cache / "resume").exists()
    assert (cache / "mine.txt").read_text() == "not btfs's"


def blocked_reader(path: Path) -> tuple[threading.Thread, list[object]]:
    """A thread reading a file whose pieces can never arrive; records what the read did."""
    outcome: list[object] = []

    def read() -> None:
        try:
            with open(path, "rb") as f:
                outcome.append(f.read(65536))
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("how", ["btfs unmount", "SIGTERM", "SIGINT", "fusermount3 -u -z"])
def test_unmount_while_a_read_is_blocked(tmp_path: Path, mounts: Mounts, how: str) -> None:
    torrent, _ = make_torrent(tmp_path)
    mnt = tmp_path / "mnt"
    pid = mount(mounts, torrent, mnt, "--cache-dir", tmp_path / "empty-cache")
    target = mnt / "Show" / "Season 1" / "e01.mkv"
    thread, outcome = blocked_reader(target)
    wait_for(lambda: int(os.getxattr(target, "user.btfs.pieces_waited_on")) > 0, HANG,
             "the read to wait on pieces")
    assert thread.is_alive()
    if how == "btfs unmount":
        assert btfs("unmount", mnt, timeout=HANG).returncode == 0
    elif how.startswith("SIG"):
        os.kill(pid, getattr(signal, how))
    else:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=True, timeout=30)
    wait_for(lambda: not pid_alive(pid), HANG, "the btfs process to exit")
    wait_for(lambda: not is_mounted(mnt), HANG, "the mount to go")
    thread.join(HANG)
    assert not thread.is_alive(), "the blocked read never returned"
    assert isinstance(outcome[0], OSError), outcome
    assert not (tmp_path / "empty-cache").exists()


def test_mount_helper_form_and_options(tmp_path: Path, mounts: Mounts) -> None:
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = tmp_path / "mnt"
    require_fuse()
    mnt.mkdir()
    mounts.add(mnt)
    r = subprocess.run([sys.executable, "-m", "btfs", str(torrent), str(mnt), "-o",
                        f"ro,nodev,nosuid,noatime,_netdev,x-systemd.automount,cache_dir={cache},"
                        "readahead=4M,keep"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (mnt / "Show" / "notes.txt").read_bytes() == (root / "notes.txt").read_bytes()
    options = next(line for line in Path("/proc/self/mounts").read_text().splitlines()
                   if f" {mnt} " in line)
    assert "fuse.btfs" in options and "nodev" in options and "nosuid" in options


@pytest.mark.parametrize(
    ("setup", "message"),
    [("missing", "does not exist"), ("file", "not a directory"), ("nonempty", "not empty"),
     ("mounted", "already a btfs mount")],
)
def test_bad_mount_points(tmp_path: Path, mounts: Mounts, setup: str, message: str) -> None:
    torrent, root = make_torrent(tmp_path)
    mnt = tmp_path / "mnt"
    if setup == "file":
        mnt.write_text("x")
    elif setup == "nonempty":
        mnt.mkdir()
        (mnt / "x").write_text("x")
    elif setup == "mounted":
        cache = tmp_path / "cache"
        place_in_cache(root, cache)
        mount(mounts, torrent, mnt, "--cache-dir", cache)
    r = btfs("mount", torrent, mnt)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr


def test_bad_torrent_and_options(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    (tmp_path / "bad.torrent").write_bytes(b"d4:info")
    r = btfs("mount", tmp_path / "bad.torrent", tmp_path / "mnt")
    assert r.returncode == 2 and "truncated" in r.stderr
    torrent, _ = make_torrent(tmp_path)
    r = btfs(torrent, tmp_path / "mnt", "-o", "frobnicate")
    assert r.returncode == 2 and "unknown mount option 'frobnicate'" in r.stderr
    r = btfs("unmount", tmp_path / "mnt")
    assert r.returncode == 2 and "not mounted" in r.stderr


def test_status_command(tmp_path: Path, mounts: Mounts) -> None:
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    (cache / "data" / "Show" / "notes.txt").unlink()
    mnt = tmp_path / "mnt"
    mount(mounts, torrent, mnt, "--cache-dir", cache)
    r = btfs("status", mnt, "--json")
    assert r.returncode == 0, r.stderr
    [status] = json.loads(r.stdout)
    files = {f["path"]: f for f in status["files"]}
    assert files["Show/Season 1/e02.mkv"]["progress"] == 1.0
    assert files["Show/notes.txt"]["progress"] < 1
    assert 0 < status["torrent"]["progress"] < 1
    for key in ("size", "verified_bytes", "pieces", "peers", "pid", "listen_port"):
        assert type(status["torrent"][key]) is int, (key, status["torrent"][key])
    assert type(files["Show/notes.txt"]["size"]) is int
    assert status["torrent"]["info_hash"] == load_torrent(torrent).info_hash_hex
    assert status["torrent"]["name"] == "Show"
    text = btfs("status", mnt).stdout
    assert text.startswith(f"{mnt}: Show (info-hash {status['torrent']['info_hash']})\n")
    assert "Show/notes.txt" in text and "progress" in text
    assert str(mnt) in btfs("status").stdout
    r = btfs("status", tmp_path)
    assert r.returncode == 2 and "not mounted" in r.stderr


def test_status_of_every_mount_reports_a_dead_one_and_shows_the_rest(
        tmp_path: Path, mounts: Mounts) -> None:
    """A mount whose btfs was killed answers ENOTCONN: `btfs status` (every mount) names it
    and the way out, still shows the live mount, and exits 1; `btfs unmount` removes it."""
    torrent, _ = make_torrent(tmp_path)
    live, dead = tmp_path / "live", tmp_path / "dead"
    mount(mounts, torrent, live, "--cache-dir", tmp_path / "c1")
    pid = mount(mounts, torrent, dead, "--cache-dir", tmp_path / "c2")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), HANG, "the killed btfs to exit")
    assert is_mounted(dead)

    r = btfs("status")
    assert r.returncode == 1, r.stderr
    assert f"{live}: Show (info-hash" in r.stdout
    assert f"{dead}: not answering: Transport endpoint is not connected" in r.stdout
    assert f"btfs unmount {dead}" in r.stdout
    r = btfs("status", "--json")
    entries = {e["mountpoint"]: e for e in json.loads(r.stdout)}
    assert entries[str(dead)] == {"mountpoint": str(dead),
                                  "error": "Transport endpoint is not connected"}
    assert entries[str(live)]["torrent"]["name"] == "Show"
    named = btfs("status", dead)
    assert named.returncode == 2 and "not connected" in named.stderr

    assert btfs("unmount", dead).returncode == 0
    assert not is_mounted(dead)


def btfs_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment where `btfs` (as mount.fuse3 runs it, from PATH) is this checkout's."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "btfs"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m btfs "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_mount_t_fuse_btfs_and_umount(tmp_path: Path, mounts: Mounts) -> None:
    """What /etc/fstab does: mount(8) runs mount.fuse3, which runs `btfs` from PATH."""
    require_fuse()
    mount_cmd = require_tool("mount", "mount")
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    env = btfs_on_path(tmp_path)
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    r = subprocess.run([mount_cmd, "-t", "fuse.btfs", "-o",
                        f"ro,allow_other,keep,_netdev,cache_dir={cache}", str(torrent), str(mnt)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    pid = mounts.remember_pid(mnt)
    assert pid is not None
    assert sha256(mnt / "Show" / "Season 1" / "e01.mkv") == sha256(root / "Season 1/e01.mkv")
    subprocess.run(["umount", str(mnt)], check=True, timeout=30)
    wait_for(lambda: not pid_alive(pid), HANG, "the btfs process to exit after umount")
    assert not is_mounted(mnt)
