"""Where new users go wrong, and the exact message that puts them right (issue 15).

The parent folder given to `seed`, a URL given to `info`, an output folder that does not
exist, Ctrl-C on a partial seed, and lock files left by a process that died.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from btfs.cachelock import LOCK_NAME
from btfs.metainfo import load_torrent
from tests.integration.test_mount_local import make_torrent
from tests.support.mounting import btfs, mount
from tests.support.net import next_loopback_ipv4
from tests.support.procs import HANG, Mounts, Processes, is_mounted, mount_pid, pid_alive, wait_for
from tests.support.swarm import share, wait_for_line


def one_error(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    return r.stderr.rstrip("\n")


def test_seed_given_the_parent_folder_asks_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    single = share(tmp_path / "one", 50_000, name="Movie")
    parent = single.data.parent  # .../one/origin, which holds Movie.bin
    r = btfs("seed", single.torrent, parent, "--no-trackers")
    assert one_error(r) == (f"btfs: error: {parent} is a folder, but the torrent holds a "
                            f"single file; did you mean {parent / 'Movie.bin'}?")

    (tmp_path / "many").mkdir()
    tree = share(tmp_path / "many", {"a.mkv": 30_000, "sub/b.srt": 100}, name="Movie")
    parent = tree.data.parent
    r = btfs("seed", tree.torrent, parent, "--no-trackers")
    assert one_error(r) == (f"btfs: error: {parent} holds none of the torrent's files; "
                            f"did you mean {parent / 'Movie'}?")
    # A folder that holds neither: no hint to give, the plain error.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = btfs("seed", single.torrent, empty, "--no-trackers")
    assert one_error(r) == (f"btfs: error: {empty} is a folder, but the torrent holds a "
                            "single file")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on a loopback address serving a folder: (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(folder), **kw)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((next_loopback_ipv4(), 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_info_of_a_url_fetches_the_torrent(tmp_path: Path, web: tuple[str, Path]) -> None:
    base, folder = web
    torrent, _ = make_torrent(tmp_path)
    shutil.copyfile(torrent, folder / "show.torrent")
    (folder / "junk.torrent").write_bytes(b"<html>not a torrent</html>")
    local = btfs("info", torrent, "--json")
    remote = btfs("info", f"{base}/show.torrent", "--json", timeout=HANG)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout

    r = btfs("info", f"{base}/missing.torrent", timeout=HANG)
    assert one_error(r) == f"btfs: error: {base}/missing.torrent: HTTP 404 (not found)"
    r = btfs("info", f"{base}/junk.torrent", timeout=HANG)
    assert one_error(r).startswith(f"btfs: error: {base}/junk.torrent: not a valid torrent")
    r = btfs("info", "ftp://example.org/x.torrent")
    assert one_error(r) == ("btfs: error: ftp://example.org/x.torrent: only http:// and "
                            "https:// URLs are accepted (or a .torrent file, or a magnet URI)")
    for text in (r.stderr, btfs("info", "http://127.0.0.1:1/x.torrent", timeout=HANG).stderr):
        assert "No such file or directory" not in text


def test_create_into_a_missing_folder_names_the_users_path(tmp_path: Path) -> None:
    data = tmp_path / "f.txt"
    data.write_text("hello\n")
    out = tmp_path / "missing" / "dir" / "x.torrent"
    r = btfs("create", data, "-o", out)
    assert one_error(r) == (f"btfs: error: cannot write {out}: the folder "
                            f"{out.parent} does not exist")
    assert not (tmp_path / "missing").exists()


def test_ctrl_c_on_a_partial_seed_exits_0_as_the_docs_say(tmp_path: Path,
                                                          procs: Processes) -> None:
    shared = share(tmp_path, 200_000, piece_length=16384)
    with open(shared.data, "r+b") as f:  # spoil the first piece: a partial seed
        f.write(b"\0" * 100)
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", next_loopback_ipv4(),
                            "--no-trackers")
    wait_for_line(procs, seed, r"listening on port (\d+)")
    seed.send_signal(signal.SIGINT)
    assert seed.wait(HANG) == 0, procs.output(seed)
    output = procs.output(seed)
    assert "only 12 of 13 pieces" in output and "uploaded 0 bytes" in output, output
    assert "resume" not in output, output
    usage = (Path(__file__).resolve().parents[2] / "docs" / "usage.md").read_text()
    assert "SIGINT or SIGTERM, which announce\n`stopped` to the trackers and exit 0" in usage


def test_lock_files_are_gone_after_unmount(tmp_path: Path, mounts: Mounts) -> None:
    """--keep keeps the cache but not the lock naming a process that has ended."""
    torrent, _ = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    mount(mounts, torrent, mnt, "--cache-dir", cache, "--keep", "--no-trackers")
    assert (cache / LOCK_NAME).exists()
    r = btfs("unmount", mnt, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert cache.is_dir() and not (cache / LOCK_NAME).exists()


def test_unmount_of_a_dead_mount_removes_its_stale_lock(tmp_path: Path,
                                                        mounts: Mounts) -> None:
    """A mount killed with SIGKILL leaves its lock in the default cache; `btfs unmount`
    removes it, and leaves a lock held by a live process alone."""
    torrent, _ = make_torrent(tmp_path)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    run = [sys.executable, "-m", "btfs"]
    r = subprocess.run([*run, "mount", torrent, mnt, "--no-trackers"], env=env,
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    lock = tmp_path / "xdg" / "btfs" / load_torrent(torrent).info_hash_hex / LOCK_NAME
    pid = mount_pid(mnt)
    assert pid is not None and lock.read_text().strip() == str(pid)
    held = tmp_path / "xdg" / "btfs" / "other"  # a live holder's lock stays
    held.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from pathlib import Path; "
                               "from btfs.cachelock import lock_folder; "
                               f"lock_folder(Path({str(held)!r})); print('ok', flush=True); "
                               "sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ok\n"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), HANG, "the mount process to die")
        r = subprocess.run([*run, "unmount", mnt], env=env, capture_output=True, text=True,
                           timeout=HANG)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
        assert not lock.exists(), "the dead mount's lock is still there"
        assert (held / LOCK_NAME).exists()
    finally:
        holder.kill()
        holder.wait(10)

