"""Names a filesystem cannot hold: a 300-byte file name, a path past PATH_MAX.

The mount shows such a name shortened (stable suffix, extension kept) and serves every
file; `download` stores it under the shortened name, or refuses a path too long for the
system up front with one line and exit 2. Nothing dies later.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from btfs.bencode import encode
from btfs.metainfo import fit_name
from tests.support.mounting import btfs, mount
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Mounts, Processes, is_mounted, pid_alive
from tests.support.swarm import Shared, finish, start_download, start_seed

pytestmark = pytest.mark.fuse

LONG = "ü" * 148 + ".mkv"  # 300 bytes in UTF-8
PLEN = 16384



def make_torrent(tmp_path: Path, paths: list[list[str]], sizes: list[int]) -> tuple[Path, bytes]:
    """A multi-file torrent named 'Odd' with these paths; returns it and its byte stream."""
    stream = os.urandom(sum(sizes))
    pieces = b"".join(hashlib.sha1(stream[i : i + PLEN]).digest()
                      for i in range(0, len(stream), PLEN))
    files = [{b"length": size, b"path": [part.encode() for part in path]}
             for path, size in zip(paths, sizes, strict=True)]
    info = {b"name": b"Odd", b"piece length": PLEN, b"pieces": pieces, b"files": files}
    torrent = tmp_path / "odd.torrent"
    torrent.write_bytes(encode({b"info": info}))
    return torrent, stream


def place(root: Path, paths: list[list[str]], sizes: list[int], stream: bytes,
          skip: int | None = None) -> None:
    """The data as `download` would store it: names shortened by fit_name."""
    offset = 0
    for i, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        if i != skip:
            target = root.joinpath(*(fit_name(part) for part in path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(stream[offset : offset + size])
        offset += size


def test_a_300_byte_name_is_shortened_and_every_file_served(tmp_path: Path, procs: Processes,
                                                           mounts: Mounts) -> None:
    paths, sizes = [[LONG], ["ok.txt"]], [100_000, 50_000]
    torrent, stream = make_torrent(tmp_path, paths, sizes)
    r = btfs("info", torrent)
    assert r.returncode == 0 and LONG in r.stdout
    place(tmp_path / "seed" / "Odd", paths, sizes, stream)
    host = next_loopback_ipv4()
    port = start_seed(procs, Shared(torrent, tmp_path / "seed" / "Odd", len(stream)), host)

    mnt = tmp_path / "mnt"
    pid = mount(mounts, torrent, mnt, "--no-trackers", "--peer", f"{host}:{port}",
                "--bind", next_loopback_ipv4(), "--cache-dir", tmp_path / "cache")
    names = sorted(os.listdir(mnt / "Odd"))
    short = fit_name(LONG)
    assert names == sorted([short, "ok.txt"])
    assert len(short.encode()) <= 255 and short.endswith(".mkv")
    assert (mnt / "Odd" / short).read_bytes() == stream[:100_000]
    assert (mnt / "Odd" / "ok.txt").read_bytes() == stream[100_000:]
    assert pid_alive(pid) and is_mounted(mnt)

    out = tmp_path / "out"
    finish(procs, start_download(procs, torrent, out, "--no-trackers", "--peer",
                                 f"{host}:{port}"))
    assert (out / "Odd" / short).read_bytes() == stream[:100_000]
    assert (out / "Odd" / "ok.txt").read_bytes() == stream[100_000:]


def test_a_path_past_path_max_is_mounted_and_refused_by_download(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    deep = ["level-" + "d" * 4] * 600 + ["deep.bin"]  # 6600 bytes: past PATH_MAX (4096)
    paths, sizes = [deep, ["ok.txt"]], [PLEN, 50_000]  # ok.txt starts a piece
    torrent, stream = make_torrent(tmp_path, paths, sizes)
    assert btfs("info", torrent).returncode == 0

    out = tmp_path / "out"
    out.mkdir()
    r = btfs("download", torrent, "-o", out, "--no-trackers")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "longer than this system" in r.stderr
    assert list(out.iterdir()) == []

    place(tmp_path / "seed" / "Odd", paths, sizes, stream, skip=0)  # only ok.txt is there
    host = next_loopback_ipv4()
    port = start_seed(procs, Shared(torrent, tmp_path / "seed" / "Odd", len(stream)), host)
    mnt = tmp_path / "mnt"
    pid = mount(mounts, torrent, mnt, "--no-trackers", "--peer", f"{host}:{port}", "--lazy",
                "--bind", next_loopback_ipv4(), "--cache-dir", tmp_path / "cache")
    assert (mnt / "Odd" / "ok.txt").read_bytes() == stream[PLEN:]
    fd = os.open(mnt / "Odd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in deep[:-1]:  # every level, opened relative to the one above
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = step
        assert os.listdir(fd) == ["deep.bin"]
        assert os.stat("deep.bin", dir_fd=fd).st_size == PLEN
    finally:
        os.close(fd)
    assert pid_alive(pid) and is_mounted(mnt)
