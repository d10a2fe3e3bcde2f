"""A library in one mount: many torrents from a watched folder, added and removed live,
`btfs add`/`remove`/`status` over the control socket, and a bounded cache.

The torrents are seeded by one libtorrent session (tests/support/ltmany.py), each test's
mount on its own loopback address; every read is compared with the original bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from btfs.metainfo import load_torrent
from tests.support.env import require_fuse, require_libtorrent
from tests.support.mounting import btfs
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import HANG, Mounts, Processes, is_mounted, pid_alive, wait_for
from tests.support.swarm import Shared, share, wait_for_line

pytestmark = [pytest.mark.fuse, pytest.mark.interop]

MiB = 1 << 20


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, f"user.btfs.{name}").decode()


def seed_all(procs: Processes, torrents: list[Shared], save_dir: Path) -> str:
    """One libtorrent session seeding every torrent; its HOST:PORT."""
    require_libtorrent()
    host = next_loopback_ipv4()
    port = free_port(host)
    proc = procs.start([sys.executable, "-m", "tests.support.ltmany", "seed", save_dir,
                        "--listen", f"{host}:{port}", *[t.torrent for t in torrents]],
                       name="lt-seeds")
    wait_for_line(procs, proc, r'"seeding"', timeout=120)
    return f"{host}:{port}"


def mount_library(mounts: Mounts, mnt: Path, sources: list[Path], *args: str | Path) -> int:
    """`btfs mount SOURCE... MNT ...` from a loopback address of its own; its pid."""
    require_fuse()
    mnt.mkdir(exist_ok=True)
    mounts.add(mnt)
    r = btfs("mount", *sources, mnt, *args, "--bind", next_loopback_ipv4(), "--no-trackers",
             timeout=180)
    assert r.returncode == 0, r.stderr
    assert is_mounted(mnt)
    pid = mounts.remember_pid(mnt)
    assert pid is not None
    return pid


def original(shared: Shared) -> bytes:
    return shared.data.read_bytes()


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cache_folders_open(pid: int, folders: list[Path]) -> list[str]:
    """Descriptors of the process that point into any of `folders`."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if any(target.startswith(str(f) + "/") for f in folders):
            found.append(target)
    return found


def test_watched_folder_of_twenty_reads_while_torrents_come_and_go(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    shares = [share(tmp_path, 600_000 + 70_001 * i, piece_length=32768, name=f"t{i:02d}",
                    seed=i + 1) for i in range(23)]
    peer = seed_all(procs, shares, tmp_path / "origin")
    watch = tmp_path / "watch"
    watch.mkdir()
    for s in shares[:20]:
        shutil.copy(s.torrent, watch / s.torrent.name)
    (watch / "notes.txt").write_text("not a torrent, not a .torrent name: ignored")
    (watch / "broken.torrent").write_bytes(b"not bencode")  # skipped, the mount stays up
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    pid = mount_library(mounts, mnt, [], "--watch", watch, "--cache-dir", cache, "--peer", peer)

    names = sorted(os.listdir(mnt))
    assert names == [s.data.name for s in shares[:20]]
    hashes = {s.data.name: xattr(mnt / s.data.name, "info_hash") for s in shares[:20]}
    assert len(set(hashes.values())) == 20 and xattr(mnt, "torrents") == "20"

    failures: list[str] = []

    def reader(s: Shared, rounds: int, seed: int) -> None:
        data = original(s)
        rng = random.Random(seed)
        path = mnt / s.data.name / s.data.name
        try:
            with open(path, "rb") as f:
                for _ in range(rounds):
                    offset = rng.randrange(len(data))
                    size = rng.choice([1, 4096, 32768, 100_000])
                    f.seek(offset)
                    if f.read(size) != data[offset : offset + size]:
                        failures.append(f"{path} at {offset}+{size}")
        except OSError as exc:
            failures.append(f"{path}: {exc}")

    threads = [threading.Thread(target=reader, args=(shares[i], 150, i)) for i in (0, 1, 2)]
    for t in threads:
        t.start()
    # meanwhile: one added by a write in place, one moved in, one as a magnet, one deleted
    (watch / shares[20].torrent.name).write_bytes(shares[20].torrent.read_bytes())
    shutil.copy(shares[21].torrent, tmp_path / "moving.torrent")
    os.rename(tmp_path / "moving.torrent", watch / shares[21].torrent.name)
    magnet = load_torrent(shares[22].torrent).info_hash_hex
    (watch / "by-uri.magnet").write_text(f"magnet:?xt=urn:btih:{magnet}&x.pe={peer}\n")
    gone = shares[5]
    gone_cache = cache / hashes[gone.data.name]
    assert gone_cache.is_dir()
    (watch / gone.torrent.name).unlink()
    for t in threads:
        t.join(HANG)
    assert not failures, failures[:5]

    for s in shares[20:23]:
        wait_for(lambda s=s: (mnt / s.data.name).exists(), HANG, f"{s.data.name} to appear")
        assert sha(mnt / s.data.name / s.data.name) == sha(s.data)
    wait_for(lambda: not (mnt / gone.data.name).exists(), HANG, "the removed folder to go")
    wait_for(lambda: not gone_cache.exists(), HANG, "the removed torrent's cache to go")
    assert gone.data.name not in os.listdir(mnt)

    # a torrent removed while a file of it is open: readable until closed, then it stops
    held = shares[7]
    held_cache = cache / hashes[held.data.name]
    with open(mnt / held.data.name / held.data.name, "rb") as f:
        r = btfs("remove", mnt, held.data.name)
        assert r.returncode == 0 and "removed" in r.stdout and "open files" in r.stdout
        assert held.data.name not in os.listdir(mnt)
        assert f.read() == original(held)
        assert held_cache.is_dir()
    wait_for(lambda: not held_cache.exists(), HANG, "the held torrent's cache to go")

    status = json.loads(btfs("status", mnt, "--json").stdout)[0]
    listed = {t["name"]: t for t in status["torrents"]}
    assert len(listed) == 21 and gone.data.name not in listed and held.data.name not in listed
    assert listed[shares[0].data.name]["cache_bytes"] > 0
    assert {"size", "progress", "peers", "download_rate", "upload_rate"} <= set(
        listed[shares[0].data.name])
    assert cache_folders_open(pid, [gone_cache, held_cache]) == []

    assert btfs("unmount", mnt).returncode == 0
    wait_for(lambda: not pid_alive(pid), HANG, "the mount process to exit")
    assert not cache.exists() or list(cache.iterdir()) == [], list(cache.iterdir())


def test_add_and_remove_answer_one_line_and_bad_input_leaves_the_mount_alone(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    shares = [share(tmp_path, 300_000 + i, piece_length=16384, name=f"s{i}", seed=i + 1)
              for i in range(3)]
    peer = seed_all(procs, shares, tmp_path / "origin")
    mnt = tmp_path / "mnt"
    mount_library(mounts, mnt, [shares[0].torrent, shares[1].torrent],
                  "--cache-dir", tmp_path / "cache", "--peer", peer)
    first = mnt / shares[0].data.name / shares[0].data.name

    def unaffected() -> None:
        assert sorted(os.listdir(mnt))[:2] == [shares[0].data.name, shares[1].data.name]
        assert first.read_bytes() == original(shares[0])

    junk = tmp_path / "junk.torrent"
    junk.write_bytes(b"d4:infoi3ee")
    other = tmp_path / "plain"
    other.mkdir()
    bad = [
        (["add", mnt, tmp_path / "s0.torrent"], "already in this mount"),
        (["add", mnt, junk], "junk.torrent"),
        (["add", mnt, tmp_path / "missing.torrent"], "missing.torrent"),
        (["add", mnt, "magnet:?xt=urn:btih:zz"], "magnet"),
        (["remove", mnt, "no such torrent"], "no torrent named"),
        (["remove", mnt, "0" * 40], "no torrent named"),
        (["add", other, shares[2].torrent], "not mounted"),
        (["remove", other, "s0.bin"], "not mounted"),
        (["add", "/proc", shares[2].torrent], "not a btfs mount"),
    ]
    for args, reason in bad:
        r = btfs(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("btfs: error:") and reason in lines[0], (
            args, r.stderr)
        assert r.stdout == ""
        unaffected()

    # a magnet: its metadata comes from the seeder
    info_hash = load_torrent(shares[2].torrent).info_hash_hex
    r = btfs("add", mnt, f"magnet:?xt=urn:btih:{info_hash}&dn=s2&x.pe={peer}", timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"added {shares[2].data.name} ({info_hash})"
    added = mnt / shares[2].data.name / shares[2].data.name
    assert added.read_bytes() == original(shares[2])
    assert xattr(mnt / shares[2].data.name, "info_hash") == info_hash

    r = btfs("remove", mnt, info_hash.upper())
    assert r.returncode == 0 and r.stdout.strip() == (
        f"removed {shares[2].data.name} ({info_hash})"), r.stderr
    assert not (mnt / shares[2].data.name).exists()
    r = btfs("remove", mnt, shares[2].data.name)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    unaffected()

    # a mount of one torrent shows its files at the top and refuses add
    single = tmp_path / "single"
    mount_library(mounts, single, [shares[2].torrent], "--cache-dir", tmp_path / "c2",
                  "--peer", peer)
    assert os.listdir(single) == [shares[2].data.name]
    r = btfs("add", single, shares[0].torrent)
    assert r.returncode == 2 and "one torrent" in r.stderr
    assert (single / shares[2].data.name).read_bytes() == original(shares[2])


class DiskUse:
    """Samples the allocated bytes under a folder (as `du` counts them) until stopped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def measure(self) -> int:
        total = 0
        for here, _, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(here, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.measure())
            self._stop.wait(0.05)

    def __enter__(self) -> DiskUse:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def read_through(path: Path, data: bytes, offset: int = 0, size: int | None = None) -> bool:
    """Read a range from the mount past the kernel's page cache; equal to `data`'s?"""
    end = len(data) if size is None else offset + size
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        f.seek(offset)
        pos = offset
        while pos < end:
            chunk = f.read(min(1 << 20, end - pos))
            if chunk != data[pos : pos + len(chunk)] or not chunk:
                return False
            pos += len(chunk)
    return True


def test_bounded_cache_stays_under_its_size_and_evicted_pieces_are_refused_and_refetched(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    piece = 256 << 10
    shares = [share(tmp_path, 64 * MiB, piece_length=piece, name=f"big{i}", seed=i + 1)
              for i in range(5)]
    seeder = seed_all(procs, shares, tmp_path / "origin")
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    host = next_loopback_ipv4()
    port = free_port(host)
    require_fuse()
    mnt.mkdir()
    mounts.add(mnt)
    r = btfs("mount", *[s.torrent for s in shares], mnt, "--cache-dir", cache,
             "--cache-size", "64M", "--bind", host, "--port", str(port), "--no-trackers",
             "--peer", seeder, timeout=120)
    assert r.returncode == 0, r.stderr
    mounts.remember_pid(mnt)
    files = [mnt / s.data.name / s.data.name for s in shares]
    datas = [original(s) for s in shares]

    # the first 8 MiB of big0 are in the cache; a libtorrent peer sees them offered
    assert read_through(files[0], datas[0], 0, 8 * MiB)
    probe_log = tmp_path / "probe.log"
    require_libtorrent()
    with open(probe_log, "wb") as out:
        probe = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ltmany", "probe", shares[0].torrent,
             tmp_path / "probe", "--listen", f"{next_loopback_ipv4()}:0",
             "--peer", f"{host}:{port}", "--log", tmp_path / "probe-peer.log",
             # the seeder, told of the probe by the mount's PEX, would serve it the
             # last piece, the one it wants to stay a downloader that the mount serves
             "--block", seeder.rpartition(":")[0]],
            stdin=subprocess.PIPE, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def mount_claims() -> int | None:
            """How many pieces the probe last saw the mount offer (None: not connected)."""
            lines = probe_log.read_text().strip().splitlines()
            return json.loads(lines[-1])["pieces_of"].get(host) if lines else None

        def probe_done() -> bool:
            lines = probe_log.read_text().strip().splitlines()
            return bool(lines) and bool(json.loads(lines[-1])["is_seeding"])

        wait_for(lambda: (mount_claims() or 0) >= 32, HANG, "the probe to see the mount's pieces")

        # 256 MiB of four other torrents read through a 64 MiB cache: du stays within the
        # limit and the pieces being written
        with DiskUse(cache) as use:
            for path, data in zip(files[1:], datas[1:], strict=True):
                assert read_through(path, data)
        limit = 64 * MiB + 8 * piece
        assert use.samples and max(use.samples) <= limit, (max(use.samples), limit)
        evicted = int(xattr(mnt / shares[0].data.name, "evicted_pieces"))
        assert evicted > 0
        status = json.loads(btfs("status", mnt, "--json").stdout)[0]
        assert status["cache_used"] <= status["cache_size"] == 64 * MiB

        # the evicted pieces are withdrawn from the probe (BEP 54 lt_donthave, which
        # libtorrent speaks; a peer that does not gets a BEP 6 reject per request)...
        def withdrawn() -> bool:
            claims = mount_claims()
            return claims is not None and claims < 32

        wait_for(withdrawn, HANG,
                 "the mount to withdraw evicted pieces from the connected probe")
        # ...and the probe, wanting them all, completes from the seeder
        assert probe.stdin is not None
        probe.stdin.write(f"all\npeer {seeder}\n".encode())
        probe.stdin.flush()
        wait_for(probe_done, HANG * 2, "the probe to complete")
        got = tmp_path / "probe" / shares[0].data.name
        assert sha(got) == sha(shares[0].data)
    finally:
        probe.kill()
        probe.wait(10)

    # the evicted range again: fetched again, the same bytes
    downloaded = int(xattr(mnt / shares[0].data.name, "downloaded"))
    assert read_through(files[0], datas[0], 0, 8 * MiB)
    assert int(xattr(mnt / shares[0].data.name, "downloaded")) > downloaded
    assert DiskUse(cache).measure() <= limit


def test_kept_cache_comes_back_within_a_smaller_limit(tmp_path: Path, procs: Processes,
                                                      mounts: Mounts) -> None:
    piece = 256 << 10
    shares = [share(tmp_path, 8 * MiB, piece_length=piece, name=f"k{i}", seed=i + 1)
              for i in range(2)]
    seeder = seed_all(procs, shares, tmp_path / "origin")
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    sources = [s.torrent for s in shares]
    mount_library(mounts, mnt, sources, "--cache-dir", cache, "--keep", "--cache-size", "6M",
                  "--peer", seeder)
    files = [mnt / s.data.name / s.data.name for s in shares]
    for path, s in zip(files, shares, strict=True):
        assert read_through(path, original(s))
    assert btfs("unmount", mnt).returncode == 0
    assert DiskUse(cache).measure() <= 6 * MiB + 64 * 1024
    for proc, _ in procs.started:
        procs.stop(proc)  # no peer from now on: what is read must come from the cache

    mount_library(mounts, mnt, sources, "--cache-dir", cache, "--keep", "--cache-size", "4M")
    status = json.loads(btfs("status", mnt, "--json").stdout)[0]
    kept = {t["name"]: t for t in status["torrents"]}
    assert status["cache_used"] == 4 * MiB == sum(t["cache_bytes"] for t in kept.values())
    assert all(t["downloaded"] == 0 for t in kept.values())
    assert DiskUse(cache).measure() <= 4 * MiB + 64 * 1024
    # the last read (k1's end) is what was kept; it reads back with no peer at all
    assert xattr(files[1], "pieces_verified") == "16"
    assert read_through(files[1], original(shares[1]), 4 * MiB, 4 * MiB)


def has_data(path: Path, offset: int) -> bool:
    """Are the bytes at `offset` of a sparse cache file stored (not a punched hole)?"""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) == offset
    except OSError:  # ENXIO: only a hole from there to the end
        return False
    finally:
        os.close(fd)


def test_a_kept_cache_is_trimmed_least_recently_read_first_across_a_remount(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    """The order pieces were read in survives the unmount: read the end of a file, then
    its start; remounted with a smaller limit, the end (read first) is what goes, not the
    pieces with the lowest indexes."""
    piece = 256 << 10
    [s] = [share(tmp_path, 8 * MiB, piece_length=piece, name="order", seed=7)]
    seeder = seed_all(procs, [s], tmp_path / "origin")
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    mount_library(mounts, mnt, [s.torrent], "--cache-dir", cache, "--keep",
                  "--cache-size", "6M", "--peer", seeder)
    path = mnt / s.data.name
    data = original(s)
    assert read_through(path, data, 6 * MiB, 2 * MiB)  # read first
    assert read_through(path, data, 0, 3 * MiB)        # read last
    assert btfs("unmount", mnt).returncode == 0
    stored = cache / "files" / "0"
    assert has_data(stored, 7 * MiB) and has_data(stored, 0)
    order = [int(w) for w in (cache / "read-order").read_text().split()]
    assert order.index(28) < order.index(0), order
    for proc, _ in procs.started:
        procs.stop(proc)

    mount_library(mounts, mnt, [s.torrent], "--cache-dir", cache, "--keep",
                  "--cache-size", "2M")
    assert DiskUse(cache).measure() <= 2 * MiB + 64 * 1024
    assert not has_data(stored, 7 * MiB)  # read first: evicted
    last = 3 * MiB - piece  # the last piece read (read-ahead stored after it may stay too)
    assert has_data(stored, last)
    assert read_through(path, data, last, piece)  # with no peer at all


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs for the cache, unmounted at teardown (lazily)."""
    from tests.support.env import missing

    folder = tmp_path / "small"
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(folder)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        missing(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def test_a_full_disk_under_a_bounded_cache_evicts_and_reads_go_on(
        tmp_path: Path, small_disk: Path, procs: Processes, mounts: Mounts) -> None:
    shares = [share(tmp_path, 16 * MiB, piece_length=256 << 10, name="large", seed=3)]
    seeder = seed_all(procs, shares, tmp_path / "origin")
    mnt = tmp_path / "mnt"
    # the limit is above what the disk holds: ENOSPC comes first, and evicts
    mount_library(mounts, mnt, [shares[0].torrent], "--cache-dir", small_disk / "cache",
                  "--cache-size", "64M", "--peer", seeder)
    path = mnt / shares[0].data.name
    assert read_through(path, original(shares[0]))
    assert read_through(path, original(shares[0]))
    assert int(xattr(mnt, "evicted_pieces")) > 0
    assert is_mounted(mnt)


def test_a_magnet_being_resolved_says_what_it_is_doing(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    """Issue 9: while a watched .magnet waits for its metadata, `btfs status` says so, with
    the DHT's nodes and the peers found and asked; the torrent appears once a peer has it."""
    from tests.integration.test_dht import start_lt

    shared = share(tmp_path, 400_000, name="later")
    info_hash = load_torrent(shared.torrent).info_hash_hex
    router = start_lt(procs, "dht", "-", "-", name="lt-dht")
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "later.magnet").write_text(f"magnet:?xt=urn:btih:{info_hash}&dn=later\n")
    mnt = tmp_path / "mnt"
    mount_library(mounts, mnt, [], "--watch", watch, "--dht-bootstrap", router)

    def resolving() -> dict[str, object] | None:
        r = btfs("status", mnt, "--json")
        assert r.returncode == 0, r.stderr
        [status] = json.loads(r.stdout)
        found = status.get("resolving", [])
        return found[0] if found and "(1 node," in found[0]["summary"] else None

    wait_for(lambda: resolving() is not None, HANG, "the magnet shown as resolving")
    entry = resolving()
    assert entry is not None and entry["name"] == "later" and entry["info_hash"] == info_hash
    text = btfs("status", mnt).stdout
    assert "resolving metadata of later: no trackers, 0 peers from the DHT (1 node," in text
    # a seeder joins the DHT: the magnet resolves and its folder appears
    from tests.integration.test_dht import start_lt as start

    start(procs, "seed", shared.torrent, shared.data.parent, nodes=(router,), name="lt-seed")
    folder = mnt / shared.data.name      # named after the torrent, once its metadata is in
    wait_for(folder.is_dir, HANG, "the magnet's folder")
    assert (folder / shared.data.name).read_bytes() == shared.data.read_bytes()
    assert "resolving" not in json.loads(btfs("status", mnt, "--json").stdout)[0]
