"""`btfs mount` on a real swarm: reads fetch from a libtorrent seeder, the mount seeds back.

Each test mounts through the CLI in a child process (pyfuse3 allows one session per
process), with a libtorrent seeder on its own loopback address.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.data import make_media_mp4
from tests.support.env import require_fuse, require_libtorrent, require_tool
from tests.support.mounting import btfs, mount_swarm
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import HANG, Mounts, Processes, is_mounted, pid_alive, wait_for
from tests.support.swarm import Shared, lt_leech, share, start_lt_seed, tree_digest

pytestmark = [pytest.mark.fuse, pytest.mark.interop]

TREE = {
    "Season 1/e01.mkv": 1_500_001,
    "Season 1/e02.mkv": 700_000,
    "notes.txt": 1234,
    "Season 1/extras/ä b.bin": 65_536,
    "empty.dat": 0,
}


def seeded(tmp_path: Path, procs: Processes, layout: dict[str, int] | int,
           piece_length: int = 32768) -> tuple[Shared, str]:
    require_libtorrent()
    shared = share(tmp_path, layout, piece_length=piece_length)
    host = next_loopback_ipv4()
    port = free_port(host)
    start_lt_seed(procs, shared, host, port)
    return shared, f"{host}:{port}"


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, f"user.btfs.{name}").decode()


@pytest.mark.parametrize("layout", [3_000_001, TREE], ids=["single-file", "multi-file"])
def test_files_and_random_reads_match_the_original(tmp_path: Path, procs: Processes,
                                                   mounts: Mounts,
                                                   layout: dict[str, int] | int) -> None:
    shared, peer = seeded(tmp_path, procs, layout)
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, shared.torrent, mnt, "--peer", peer, "--lazy")
    name = shared.data.name
    rng = random.Random(5)
    files = ([Path(name)] if isinstance(layout, int)
             else [Path(name) / rel for rel in sorted(layout)])
    # 200 random reads first, while little is fetched: offsets and sizes across pieces
    for _ in range(200):
        rel = rng.choice(files)
        original = (shared.data.parent / rel).read_bytes()
        if not original:
            continue
        offset = rng.randrange(len(original))
        size = rng.choice([1, 100, 4096, 32768, 32769, 200_000])
        with open(mnt / rel, "rb") as f:
            f.seek(offset)
            assert f.read(size) == original[offset : offset + size], (rel, offset, size)
    assert tree_digest(mnt / name) == tree_digest(shared.data)


def test_media_plays_from_the_middle_while_little_is_fetched(tmp_path: Path, procs: Processes,
                                                              mounts: Mounts) -> None:
    ffprobe = require_tool("ffprobe", "ffmpeg")
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    require_libtorrent()
    media = make_media_mp4(tmp_path / "origin" / "movie.mp4", seconds=40, size="640x360")
    from btfs.create import CreateOptions, make_torrent

    torrent = tmp_path / "movie.torrent"
    torrent.write_bytes(make_torrent(media, CreateOptions(piece_length=32768)))
    shared = Shared(torrent, media, media.stat().st_size)
    host = next_loopback_ipv4()
    port = free_port(host)
    start_lt_seed(procs, shared, host, port)
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, torrent, mnt, "--peer", f"{host}:{port}", "--lazy", "--readahead", "256K")
    movie = mnt / "movie.mp4"

    probe = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration",
                            "-of", "default=nw=1:nk=1", str(movie)],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert abs(float(probe.stdout) - 40) < 1
    after_probe = float(xattr(mnt, "progress"))

    decode = subprocess.run([ffmpeg, "-v", "error", "-ss", "20", "-i", str(movie), "-t", "5",
                             "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0, decode.stderr
    after_decode = float(xattr(mnt, "progress"))
    print(f"fetched after ffprobe: {after_probe:.1%}, after decoding 5 s from the middle: "
          f"{after_decode:.1%} of {shared.size} bytes")
    assert after_probe < 0.25
    assert after_decode < 0.5


def test_finished_mount_seeds_a_libtorrent_leecher(tmp_path: Path, procs: Processes,
                                                   mounts: Mounts) -> None:
    shared, peer = seeded(tmp_path, procs, TREE)
    mnt = tmp_path / "mnt"
    host = next_loopback_ipv4()
    port = free_port(host)
    r = btfs("mount", shared.torrent, mnt.mkdir() or mnt, "--peer", peer, "--no-trackers",
             "--bind", host, "--port", str(port))
    mounts.add(mnt)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: xattr(mnt, "progress") == "1.0000", 60, "the mount to finish")
    # the original seeder leaves: the leecher can only get the data from the mount
    for proc, _ in procs.started:
        procs.stop(proc)
    leech = tmp_path / "leech"
    lt_leech(procs, shared.torrent, leech, f"{host}:{port}")
    assert tree_digest(leech / shared.data.name) == tree_digest(shared.data)
    assert int(xattr(mnt, "uploaded")) >= shared.size


def test_keep_then_remount_reads_everything_without_downloading(tmp_path: Path,
                                                                 procs: Processes,
                                                                 mounts: Mounts) -> None:
    shared, peer = seeded(tmp_path, procs, 2_000_000)
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, shared.torrent, mnt, "--peer", peer, "--keep", "--cache-dir", cache)
    wait_for(lambda: xattr(mnt, "progress") == "1.0000", 60, "the mount to finish")
    assert btfs("unmount", mnt).returncode == 0
    for proc, _ in procs.started:
        procs.stop(proc)
    mount_swarm(mounts, shared.torrent, mnt, "--keep", "--cache-dir", cache)
    assert xattr(mnt, "progress") == "1.0000"
    assert hashlib.sha256((mnt / shared.data.name).read_bytes()).digest() == \
        hashlib.sha256(shared.data.read_bytes()).digest()
    assert xattr(mnt, "downloaded") == "0"


def test_unmount_while_a_read_waits_for_an_absent_seeder(tmp_path: Path, procs: Processes,
                                                         mounts: Mounts) -> None:
    shared = share(tmp_path, 1_000_000, piece_length=32768)
    nobody = next_loopback_ipv4()
    mnt = tmp_path / "mnt"
    pid = mount_swarm(mounts, shared.torrent, mnt, "--peer", f"{nobody}:{free_port(nobody)}")
    target = mnt / shared.data.name
    reader = subprocess.Popen([sys.executable, "-c", f"open({str(target)!r}, 'rb').read(10)"],
                              stderr=subprocess.PIPE)
    wait_for(lambda: int(xattr(target, "pieces_waited_on")) > 0 or reader.poll() is not None,
             HANG, "the read to wait on a piece")
    assert reader.poll() is None, "the read should be waiting for a piece"
    assert btfs("unmount", mnt).returncode == 0
    wait_for(lambda: not pid_alive(pid), HANG, "the mount process to exit")
    assert not is_mounted(mnt)
    _, stderr = reader.communicate(timeout=HANG)
    assert reader.returncode != 0
    assert b"[Errno " in stderr, stderr  # an I/O error, not some other failure


def test_mount_a_magnet(tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    """The metadata is fetched from the peer before the mount goes live."""
    from btfs.metainfo import load_torrent

    shared, peer = seeded(tmp_path, procs, TREE)
    magnet = f"magnet:?xt=urn:btih:{load_torrent(shared.torrent).info_hash_hex}"
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, magnet, mnt, "--peer", peer)
    assert tree_digest(mnt / shared.data.name) == tree_digest(shared.data)


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_mount_finds_a_btfs_seed_through_btfs_tracker(tmp_path: Path, procs: Processes,
                                                      mounts: Mounts, scheme: str) -> None:
    """No --peer: the mount and the seed meet through our tracker, then the mount is
    counted as a seed once it has everything."""
    from tests.support.clients import info_hash, start_btfs_tracker

    tracker = start_btfs_tracker(procs, next_loopback_ipv4(), "--interval", "60")
    shared = share(tmp_path, TREE, piece_length=32768, trackers=[tracker.url(scheme)])
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind",
                            next_loopback_ipv4())
    from tests.support.swarm import wait_for_line

    wait_for_line(procs, seed, r"listening on port")
    wait_for(lambda: tracker.scrape(info_hash(shared.torrent))["complete"] == 1, 20,
             "the seed's announce")
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.add(mnt)
    r = btfs("mount", shared.torrent, mnt, "--bind", next_loopback_ipv4())
    assert r.returncode == 0, r.stderr
    assert tree_digest(mnt / shared.data.name) == tree_digest(shared.data)
    wait_for(lambda: tracker.scrape(info_hash(shared.torrent))["complete"] == 2, 20,
             "the mount to announce 'completed'")


def test_a_second_mount_of_the_same_cache_is_refused(tmp_path: Path, procs: Processes,
                                                     mounts: Mounts) -> None:
    """Two processes must never write (or, at unmount, delete) each other's data."""
    shared = share(tmp_path, 100_000, piece_length=16384)
    cache = tmp_path / "cache"
    first = tmp_path / "one"
    pid = mount_swarm(mounts, shared.torrent, first, "--cache-dir", cache)
    second = tmp_path / "two"
    second.mkdir()
    r = btfs("mount", shared.torrent, second, "--cache-dir", cache, "--no-trackers")
    assert r.returncode != 0
    assert f"in use by process {pid}" in r.stderr and "--cache-dir" in r.stderr, r.stderr
    assert not is_mounted(second)
    assert btfs("unmount", first).returncode == 0
    assert not cache.exists(), "the cache, lock included, is removed without --keep"
