"""`btfs mount --http`: the mount's files over HTTP, fetched from a real swarm as they are read.

The mount runs as its own process (through the CLI) with a libtorrent seeder on loopback;
curl, ffprobe and mpv read over HTTP while the same file is read through FUSE.
"""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path

import pytest

from btfs.create import CreateOptions, make_torrent
from btfs.metainfo import load_torrent
from tests.support.data import make_media_mp4
from tests.support.env import require_fuse, require_libtorrent, require_tool
from tests.support.mounting import btfs, mount_swarm
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import HANG, Mounts, Processes, pid_alive, wait_for
from tests.support.swarm import Shared, share, start_lt_seed

pytestmark = [pytest.mark.fuse, pytest.mark.interop]


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    exe = require_tool("curl", "curl")
    return subprocess.run([exe, "-sS", "--max-time", "60", *args], capture_output=True,
                          timeout=90, check=False)


def status_of(*args: str) -> int:
    result = curl("-o", "/dev/null", "-w", "%{http_code}", *args)
    return int(result.stdout or 0)


def seeded_clip(tmp_path: Path, procs: Processes) -> tuple[Shared, str]:
    require_libtorrent()
    media = make_media_mp4(tmp_path / "origin" / "clip.mp4", seconds=30, size="640x360")
    torrent = tmp_path / "clip.torrent"
    torrent.write_bytes(make_torrent(media, CreateOptions(piece_length=32768)))
    shared = Shared(torrent, media, media.stat().st_size)
    host = next_loopback_ipv4()
    port = free_port(host)
    start_lt_seed(procs, shared, host, port)
    return shared, f"{host}:{port}"


def test_players_stream_a_mount_over_http_while_it_fetches(tmp_path: Path, procs: Processes,
                                                           mounts: Mounts) -> None:
    ffprobe = require_tool("ffprobe", "ffmpeg")
    mpv = require_tool("mpv", "mpv")
    shared, peer = seeded_clip(tmp_path, procs)
    info_hash = load_torrent(shared.torrent).info_hash_hex
    http_port = free_port("127.0.0.1")
    mnt = tmp_path / "mnt"
    pid = mount_swarm(mounts, shared.torrent, mnt, "--peer", peer, "--lazy",
                      "--readahead", "256K", "--http", f"127.0.0.1:{http_port}")
    address = f"http://127.0.0.1:{http_port}/t/{info_hash}/clip.mp4"
    original = shared.data.read_bytes()

    probe = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of",
                            "default=nw=1:nk=1", address], capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert abs(float(probe.stdout) - 30) < 1
    played = subprocess.run([mpv, "--no-config", "--vo=null", "--ao=null", "--start=50%",
                             "--length=3", address], capture_output=True, text=True,
                            timeout=120)
    assert played.returncode == 0, played.stderr[-3000:]
    # while little is fetched, random ranges over HTTP (cold) and through FUSE agree
    rng = random.Random(8)
    for _ in range(12):
        start = rng.randrange(len(original))
        end = min(len(original) - 1, start + rng.randrange(1, 300_000))
        got = curl("-r", f"{start}-{end}", address)
        assert got.returncode == 0, got.stderr
        assert got.stdout == original[start : end + 1], (start, end)
        with open(mnt / "clip.mp4", "rb") as f:
            f.seek(start)
            assert f.read(end + 1 - start) == original[start : end + 1]
    # bad requests leave the mount as it was
    assert status_of(f"http://127.0.0.1:{http_port}/t/{'0' * 40}/clip.mp4") == 404
    assert status_of("--path-as-is", f"http://127.0.0.1:{http_port}/t/{info_hash}/../x") == 400
    assert status_of("-r", "99999999999-", address) == 416
    assert curl(address).stdout == original
    assert (mnt / "clip.mp4").read_bytes() == original
    api = curl(f"http://127.0.0.1:{http_port}/api/torrents")
    assert b'"can_change": false' in api.stdout
    refused = curl("-H", "Content-Type: application/json", "--data", '{"magnet": "magnet:?x"}',
                   "-w", "%{http_code}", f"http://127.0.0.1:{http_port}/api/torrents")
    assert refused.stdout.endswith(b"409") and b"holds one torrent" in refused.stdout

    assert btfs("unmount", mnt).returncode == 0
    wait_for(lambda: not pid_alive(pid), HANG, "the mount process to exit")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", http_port), 5):
        pass


def test_http_options_are_checked_before_mounting(tmp_path: Path, procs: Processes,
                                                  mounts: Mounts) -> None:
    require_fuse()
    shared = share(tmp_path, 100_000, piece_length=32768)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = ("--cache-dir", str(tmp_path / "cache"))
    cases = [
        (("--http", "0.0.0.0:8080"), "needs a token"),
        (("--http", "0.0.0.0:8080", "--http-token", "has space"), "printable ASCII"),
        (("--http-token", "abcdefgh"), "without --http"),
        (("--http", "127.0.0.1:99999"), "1-65535"),
        (("--http-token-file", str(tmp_path / "nope"), "--http", "8080"), "nope"),
        (("-o", "http=0.0.0.0:8080"), "needs a token"),
    ]
    for extra, message in cases:
        r = btfs("mount", shared.torrent, mnt, *cache, "--no-trackers", *extra)
        assert r.returncode != 0 and message in r.stderr, (extra, r.stderr)
        assert "Traceback" not in r.stderr
    # A port already taken: the mount says so and is not left half made
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with taken:
        r = btfs("mount", shared.torrent, mnt, *cache, "--no-trackers", "--bind",
                 next_loopback_ipv4(), "--http", f"127.0.0.1:{taken.getsockname()[1]}")
        assert r.returncode != 0 and "cannot listen for HTTP" in r.stderr, r.stderr
    assert not any(mnt.iterdir())


def test_fstab_options_with_a_token_file(tmp_path: Path, procs: Processes,
                                         mounts: Mounts) -> None:
    shared = share(tmp_path, 300_000, piece_length=32768)
    seed_host = next_loopback_ipv4()
    seed_port = free_port(seed_host)
    require_libtorrent()
    start_lt_seed(procs, shared, seed_host, seed_port)
    token_file = tmp_path / "token"
    token_file.write_text("Zm9vYmFy-token\n")
    host = next_loopback_ipv4()  # not 127.0.0.1, still loopback: a token is allowed anyway
    http_port = free_port(host)
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, shared.torrent, mnt, "-o",
                f"peer={seed_host}:{seed_port},http={host}:{http_port},"
                f"http_token_file={token_file}")
    info_hash = load_torrent(shared.torrent).info_hash_hex
    address = f"http://{host}:{http_port}/t/{info_hash}/{shared.data.name}"
    assert status_of(address) == 401
    assert curl(f"{address}?token=Zm9vYmFy-token").stdout == shared.data.read_bytes()
    assert curl("-H", "Authorization: Bearer Zm9vYmFy-token", address).stdout == \
        shared.data.read_bytes()


def test_a_library_mount_adds_reads_and_removes_torrents_over_http(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    """The API of a library mount: a .torrent uploaded is added (its folder appears in the
    mount too), its files are read over HTTP from the swarm, and it is removed."""
    import json

    from tests.support.swarm import start_seed

    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    first_dir.mkdir()
    second_dir.mkdir()
    first = share(first_dir, 300_000, name="first")
    second = share(second_dir, 500_000, name="second", seed=2)
    host = next_loopback_ipv4()
    peers = [f"{host}:{start_seed(procs, s, host)}" for s in (first, second)]
    http_port = free_port("127.0.0.1")
    mnt = tmp_path / "mnt"
    api = f"http://127.0.0.1:{http_port}/api/torrents"
    empty = tmp_path / "watched"
    empty.mkdir()
    mount_swarm(mounts, first.torrent, mnt, "--watch", empty, "--http",
                f"127.0.0.1:{http_port}", *[a for p in peers for a in ("--peer", p)])
    listed = json.loads(curl(api).stdout)
    assert listed["can_change"] is True
    assert [t["name"] for t in listed["torrents"]] == ["first.bin"]
    added = curl("-H", "Content-Type: application/x-bittorrent", "--data-binary",
                 f"@{second.torrent}", "-w", "%{http_code}", api)
    assert added.stdout.endswith(b"201"), added.stdout
    second_hash = load_torrent(second.torrent).info_hash_hex
    assert curl(f"http://127.0.0.1:{http_port}/t/{second_hash}/second.bin").stdout == \
        second.data.read_bytes()
    assert (mnt / "second.bin" / "second.bin").read_bytes() == second.data.read_bytes()
    assert curl("-X", "DELETE", "-o", "/dev/null", "-w", "%{http_code}",
                f"{api}/{second_hash}").stdout in (b"200", b"204")
    assert [t["name"] for t in json.loads(curl(api).stdout)["torrents"]] == ["first.bin"]
    assert not (mnt / "second.bin").exists()
