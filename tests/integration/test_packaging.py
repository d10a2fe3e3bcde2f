"""What a system install adds beside the commands (issue 15): man pages and bash
completion generated from the argument parsers, and the mount(8) helper
`mount.fuse.btfs` that makes `mount -t fuse.btfs` run this btfs, not Debian's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from btfs.errors import BtfsError
from btfs.mounthelper import mount_arguments
from tests.integration.test_mount_local import make_torrent, place_in_cache, sha256
from tests.support.env import require_fuse, require_python_module, require_tool
from tests.support.procs import HANG, Mounts, is_mounted, pid_alive, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_python_module("argparse_manpage", "argparse-manpage")
    out = tmp_path_factory.mktemp("packaging")
    r = subprocess.run(["sh", str(REPO / "packaging" / "build.sh"), str(out), sys.executable],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def read_man_page(page: Path) -> str:
    man = require_tool("man", "man-db")
    r = subprocess.run([man, "--warnings", "-P", "cat", "-l", str(page)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "MANWIDTH": "100"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # no troff warning: every line renders as text
    return r.stdout


def test_man_pages_render_and_describe_every_command(built: Path) -> None:
    text = read_man_page(built / "man" / "btfs.1")
    assert "btfs - mount torrents as read-only filesystems" in text
    for command in ("create", "info", "mount", "download", "seed", "unmount", "status",
                    "install-units"):
        assert f"COMMAND 'btfs {command}'" in text, command
    for heading in ("EXIT STATUS", "FILES", "NOTES", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading
    words = " ".join(text.replace("\u2010\n", "").split())  # joined, hyphenation undone
    assert "give 'URL1,URL2' for several in one tier" in words  # a line began with a quote
    assert "mount.fuse.btfs" in words and "/usr/bin/btfs" in words
    tracker = read_man_page(built / "man" / "btfs-tracker.1")
    assert "btfs-tracker - a BitTorrent tracker" in tracker
    assert "--http ADDR:PORT" in tracker and "/etc/default/btfs-tracker" in tracker


def complete(script: Path, function: str, *words: str) -> list[str]:
    """What bash offers for the last of `words` with the generated completion."""
    bash = require_tool("bash", "bash")
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = (f"source {script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
               f"{function} 2>/dev/null\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    r = subprocess.run([bash, "-c", program], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line]


def test_bash_completion(built: Path, tmp_path: Path) -> None:
    btfs = built / "bash-completion" / "btfs"
    assert complete(btfs, "_btfs", "btfs", "mo") == ["mount"]
    assert complete(btfs, "_btfs", "btfs", "mount", "--cache-d") == ["--cache-dir"]
    assert complete(btfs, "_btfs", "btfs", "mount", "--ca") == ["--cache-dir", "--cache-size"]
    assert complete(btfs, "_btfs", "btfs", "status", "--j") == ["--json"]
    assert complete(btfs, "_btfs", "btfs", "download", "x.torrent", "--port", "") == []
    (tmp_path / "movie.torrent").write_bytes(b"")
    assert complete(btfs, "_btfs", "btfs", "info", str(tmp_path / "mov")) == [
        str(tmp_path / "movie.torrent")]
    tracker = built / "bash-completion" / "btfs-tracker"
    assert complete(tracker, "_btfs_tracker", "btfs-tracker", "--log-level", "w") == [
        "warning"]
    assert "--http" in complete(tracker, "_btfs_tracker", "btfs-tracker", "--")


def test_mount_helper_arguments() -> None:
    assert mount_arguments(["/t/movie.torrent", "/mnt/movie", "-n", "-o", "ro,keep",
                            "-t", "fuse.btfs"]) == [
        "mount", "/t/movie.torrent", "/mnt/movie", "-o", "ro,keep", "-q"]
    assert mount_arguments(["a.torrent", "/mnt", "-sv", "-oallow_other"]) == [
        "mount", "a.torrent", "/mnt", "-o", "allow_other", "-q"]
    assert mount_arguments(["a.torrent", "/mnt", "-f", "-o", "ro"]) is None  # fake
    for bad, message in ((["a.torrent"], "usage"), (["a", "b", "-x"], "unknown flag -x"),
                         (["a", "b", "-N", "/proc/1/ns/mnt"], "not supported"),
                         (["a", "b", "-o"], "-o needs a value")):
        with pytest.raises(BtfsError, match=message):
            mount_arguments(bad)


def test_mount_helper_mounts_quietly_with_the_torrent_name_as_source(
        tmp_path: Path, mounts: Mounts) -> None:
    """As mount(8) runs /sbin/mount.fuse.btfs: this btfs mounts, prints nothing, and
    /proc/mounts shows the torrent's name where Debian's btfs shows 'btfs'."""
    require_fuse()
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    helper = [sys.executable, "-m", "btfs.mounthelper"]
    r = subprocess.run([*helper, str(torrent), str(mnt), "-f", "-o", "ro"],
                       capture_output=True, text=True, timeout=HANG)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "") and not is_mounted(mnt)
    r = subprocess.run([*helper, str(torrent), str(mnt), "-n", "-o",
                        f"rw,keep,no_trackers,cache_dir={cache}", "-t", "fuse.btfs"],
                       capture_output=True, text=True, timeout=HANG)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert is_mounted(mnt)
    mounts.remember_pid(mnt)
    with open("/proc/self/mounts") as f:
        [entry] = [line.split() for line in f if line.split()[1] == str(mnt)]
    assert entry[0] == "Show" and entry[2] == "fuse.btfs", entry
    assert sha256(mnt / "Show" / "notes.txt") == sha256(root / "notes.txt")


def test_setup_installs_the_pages_the_completion_and_the_helper() -> None:
    setup = (REPO / "setup.sh").read_text()
    assert "packaging/build.sh build/packaging .venv/bin/python" in setup
    assert "/usr/local/share/man/man1" in setup
    assert "/usr/local/share/bash-completion/completions" in setup
    assert '.venv/bin/mount.fuse.btfs" /usr/sbin/mount.fuse.btfs' in setup
    scripts = (REPO / "pyproject.toml").read_text()
    assert '"mount.fuse.btfs" = "btfs.mounthelper:main"' in scripts


def test_mount_8_runs_our_helper_before_mount_fuse3(tmp_path: Path) -> None:
    """`mount -t fuse.btfs` as fstab does, with mount.fuse.btfs in /usr/sbin: put there
    through an overlay in a private mount namespace (so the machine's /usr/sbin is not
    touched), mount(8) runs it, not mount.fuse3 and whatever `btfs` PATH finds first."""
    require_fuse()
    unshare = require_tool("unshare", "util-linux")
    require_tool("mount", "mount")
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    helper = tmp_path / "mount.fuse.btfs"
    helper.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\nPYTHONPATH={REPO} '
                      f'exec {sys.executable} -m btfs.mounthelper "$@"\n')
    helper.chmod(0o755)
    for folder in ("upper", "work"):
        (tmp_path / folder).mkdir()
    script = f"""
set -e
mount --make-rprivate /
mount -t overlay overlay \\
    -o lowerdir=/usr/sbin,upperdir={tmp_path}/upper,workdir={tmp_path}/work /usr/sbin
cp {helper} /usr/sbin/mount.fuse.btfs
trap 'umount -l {mnt} 2>/dev/null || true' EXIT
mount -t fuse.btfs -o ro,_netdev,keep,no_trackers,cache_dir={cache} {torrent} {mnt}
getfattr --only-values -n user.btfs.pid {mnt} > {tmp_path}/pid
awk '$2 == "{mnt}" {{print $1, $3}}' /proc/self/mounts
sha256sum {mnt}/Show/notes.txt
umount {mnt}
"""
    r = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True, text=True,
                       timeout=HANG)
    pid_file = tmp_path / "pid"
    try:
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "Show fuse.btfs", r.stdout
        assert lines[1].split()[0] == sha256(root / "notes.txt")
        argv = (tmp_path / "argv").read_text().split()
        assert argv[:3] == [str(torrent), str(mnt), "-o"], argv
        assert set(argv[3].split(",")) == {"ro", "_netdev", "keep", "no_trackers",
                                           f"cache_dir={cache}"}, argv
    finally:
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            pid = int(pid_file.read_text())
            try:
                wait_for(lambda: not pid_alive(pid), HANG, "the mount process to end")
            finally:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
