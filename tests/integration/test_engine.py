"""`btfs download` and `btfs seed` on real loopback swarms: btfs, libtorrent and bad peers.

Every peer is a real process on its own 127.x.y.z address; the data is compared byte for
byte with the original. Trackers (HTTP/UDP) and the other clients are covered in
tests/interop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.env import require_ipv6_loopback, require_libtorrent
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import Processes
from tests.support.swarm import (
    downloaded_bytes,
    finish,
    lt_leech,
    share,
    start_download,
    start_lt_seed,
    start_seed,
    tree_digest,
    uploaded_bytes,
    wait_for_line,
)

TREE = {
    "a.bin": 70_000,
    "empty.txt": 0,
    "sub/b.bin": 300_001,
    "sub/deeper/c.bin": 1_000_000,
    "sub/ünïcode name.txt": 12_345,
}


@pytest.mark.parametrize("layout", [3_000_000, TREE], ids=["single-file", "multi-file"])
def test_download_from_btfs_seed(tmp_path: Path, procs: Processes,
                                 layout: dict[str, int] | int) -> None:
    shared = share(tmp_path, layout, piece_length=32768)
    before = tree_digest(shared.data)
    mtime = shared.data.stat().st_mtime_ns
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--peer", f"{host}:{port}", "--no-trackers")
    output = finish(procs, proc)
    assert tree_digest(out / shared.data.name) == before
    assert downloaded_bytes(output) >= shared.size
    assert not list(out.glob(".*.btfs-resume")), "resume log left after completion"
    assert tree_digest(shared.data) == before and shared.data.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("layout", [5_000_000, TREE], ids=["single-file", "multi-file"])
def test_download_from_libtorrent_seed(tmp_path: Path, procs: Processes,
                                       layout: dict[str, int] | int) -> None:
    require_libtorrent()
    shared = share(tmp_path, layout, piece_length=65536)
    host = next_loopback_ipv4()
    port = free_port(host)
    start_lt_seed(procs, shared, host, port)
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--peer", f"{host}:{port}", "--no-trackers")
    finish(procs, proc)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_seed_serves_libtorrent_leecher(tmp_path: Path, procs: Processes) -> None:
    require_libtorrent()
    shared = share(tmp_path, TREE | {"big.bin": 4_000_000}, piece_length=65536)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    leech_dir = tmp_path / "lt-leech"
    lt_leech(procs, shared.torrent, leech_dir, f"{host}:{port}")
    assert tree_digest(leech_dir / shared.data.name) == tree_digest(shared.data)


def test_download_over_ipv6(tmp_path: Path, procs: Processes) -> None:
    require_ipv6_loopback()
    shared = share(tmp_path, 1_000_000, piece_length=16384)
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", "::1",
                            "--no-trackers")
    port = int(wait_for_line(procs, seed, r"listening on port (\d+)").group(1))
    out = tmp_path / "out"
    out.mkdir()
    proc = procs.start_btfs("download", shared.torrent, "-o", out, "--bind", "::1",
                            "--peer", f"[::1]:{port}", "--no-trackers")
    finish(procs, proc)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_corrupt_peer_is_banned_and_download_correct(tmp_path: Path, procs: Processes) -> None:
    shared = share(tmp_path, 2_000_000, piece_length=32768)
    liar_host = next_loopback_ipv4()
    liar = procs.start([sys.executable, "-m", "tests.support.badpeer", "corrupt",
                        shared.torrent, "--listen", f"{liar_host}:0"], name="liar")
    liar_port = wait_for_line(procs, liar, r"listening \S+:(\d+)").group(1)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host, "--max-upload-rate", "2M")
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--no-trackers", "-v",
                    "--peer", f"{liar_host}:{liar_port}", "--peer", f"{host}:{port}")
    output = finish(procs, proc)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    assert f"banning {liar_host}" in output
    assert f"banning {host}" not in output


def test_peer_hanging_up_mid_piece(tmp_path: Path, procs: Processes) -> None:
    shared = share(tmp_path, 2_000_000, piece_length=262144)
    flaky_host = next_loopback_ipv4()
    flaky = procs.start([sys.executable, "-m", "tests.support.badpeer", "hangup",
                         shared.torrent, shared.data, "--blocks", "5",
                         "--listen", f"{flaky_host}:0"], name="flaky")
    flaky_port = wait_for_line(procs, flaky, r"listening \S+:(\d+)").group(1)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host, "--max-upload-rate", "1M")
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--no-trackers",
                    "--peer", f"{flaky_host}:{flaky_port}", "--peer", f"{host}:{port}")
    finish(procs, proc)
    assert "served 5" in procs.output(flaky), "the flaky peer never hung up mid-piece"
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_tracker_down_does_not_stop_download(tmp_path: Path, procs: Processes) -> None:
    dead = next_loopback_ipv4()
    shared = share(tmp_path, 1_000_000, piece_length=16384,
                   trackers=[f"http://{dead}:{free_port(dead)}/announce",
                             f"udp://{dead}:{free_port(dead)}/announce"])
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--peer", f"{host}:{port}")
    finish(procs, proc)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_kill_9_then_resume_fetches_only_the_rest(tmp_path: Path, procs: Processes) -> None:
    size, plen = 16 << 20, 65536
    pieces = size // plen
    shared = share(tmp_path, size, piece_length=plen)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--no-trackers", "--peer", f"{host}:{port}",
                    "--max-download-rate", "3M")
    log = out / f".{shared.data.name}.btfs-resume"
    deadline = time.monotonic() + 30
    while not (log.exists() and log.stat().st_size >= 4 * pieces // 2):
        assert proc.poll() is None and time.monotonic() < deadline, procs.output(proc)
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    verified = log.stat().st_size // 4
    assert verified < pieces
    proc = start_download(procs, shared.torrent, out, "--no-trackers", "--peer", f"{host}:{port}")
    again = downloaded_bytes(finish(procs, proc))
    missing = (pieces - verified) * plen
    assert again <= missing + size // 10, (again, missing)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


@pytest.mark.slow
def test_one_seed_five_downloads_trade_among_themselves(tmp_path: Path,
                                                        procs: Processes) -> None:
    size = 24 << 20
    shared = share(tmp_path, size, piece_length=262144)
    seed_host = next_loopback_ipv4()
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", seed_host,
                            "--no-trackers", "--max-upload-rate", "6M")
    seed_port = int(wait_for_line(procs, seed, r"listening on port (\d+)").group(1))
    hosts = [next_loopback_ipv4() for _ in range(5)]
    ports = [free_port(h) for h in hosts]
    everyone = [f"{seed_host}:{seed_port}"] + [f"{h}:{p}" for h, p in zip(hosts, ports,
                                                                          strict=True)]
    leechers = []
    for i, (h, p) in enumerate(zip(hosts, ports, strict=True)):
        out = tmp_path / f"peer{i}"
        out.mkdir()
        peers = [a for a in everyone if a != f"{h}:{p}"]
        args = [x for a in peers for x in ("--peer", a)]
        leechers.append((out, procs.start_btfs(
            "download", shared.torrent, "-o", out, "--bind", h, "--port", str(p),
            "--no-trackers", "--seed-after", *args)))
    original = tree_digest(shared.data)
    deadline = time.monotonic() + 120
    for out, proc in leechers:
        wait_for_line(procs, proc, r"complete", timeout=max(1, deadline - time.monotonic()))
        assert tree_digest(out / shared.data.name) == original
    procs.stop(seed)
    uploaded = uploaded_bytes(procs.output(seed))
    assert uploaded < 2 * size, f"the seed uploaded {uploaded} bytes for a {size}-byte torrent"


def magnet_of(torrent: Path, *extra: str) -> str:
    from btfs.metainfo import load_torrent

    return f"magnet:?xt=urn:btih:{load_torrent(torrent).info_hash_hex}" + "".join(
        f"&{e}" for e in extra)


def test_download_a_magnet_from_libtorrent(tmp_path: Path, procs: Processes) -> None:
    """BEP 9: the info dictionary comes from the peer, checked against the info-hash."""
    require_libtorrent()
    shared = share(tmp_path, TREE, piece_length=32768)
    host = next_loopback_ipv4()
    port = free_port(host)
    start_lt_seed(procs, shared, host, port)
    out = tmp_path / "out"
    proc = start_download(procs, magnet_of(shared.torrent), out, "--peer", f"{host}:{port}",
                    "--no-trackers")
    output = finish(procs, proc)
    assert "got the metadata" in output
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_download_a_magnet_from_its_x_pe_peer(tmp_path: Path, procs: Processes) -> None:
    shared = share(tmp_path, 1_000_000, piece_length=32768)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    out = tmp_path / "out"
    # a malformed x.pe is passed over, not fatal
    proc = start_download(procs, magnet_of(shared.torrent, "x.pe=nowhere",
                                           f"x.pe={host}:{port}"), out, "--no-trackers")
    finish(procs, proc)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def run_btfs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "btfs", *map(str, args)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    shared = share(tmp_path, 100_000, piece_length=16384)
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 100_000)
    (tmp_path / "tree").mkdir()
    tree = share(tmp_path / "tree", {"a.bin": 10, "b.bin": 20})
    cases = [
        (("download", shared.torrent, "-o", tmp_path / "missing"), "is not a directory"),
        (("download", shared.torrent, "--bind", "10.255.255.1", "--no-trackers"),
         "cannot listen for peers on 10.255.255.1"),
        (("download", tmp_path / "none.torrent"), "none.torrent"),
        (("download", "magnet:?xt=urn:btih:zz"), "magnet"),
        (("seed", shared.torrent, tmp_path / "absent"), "does not exist"),
        (("seed", shared.torrent, other, "--no-trackers"), "matches the torrent"),
        (("seed", shared.torrent, tmp_path), "is a folder"),
        (("seed", tree.torrent, other), "is not a folder"),
    ]
    for args, message in cases:
        r = run_btfs(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().splitlines() == [r.stderr.strip()], (args, r.stderr)
        assert r.stderr.startswith("btfs: error: ") and message in r.stderr, (args, r.stderr)
    # Malformed option values are argparse's: the usage, then one line naming the problem.
    for args, message in [(("download", shared.torrent, "--peer", "nowhere"), "HOST:PORT"),
                          (("download", shared.torrent, "--port", "70000"), "port must be")]:
        r = run_btfs(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("usage: btfs download "), (args, r.stderr)
        assert lines[-1].startswith("btfs download: error: ") and message in lines[-1], lines
        assert "Traceback" not in r.stderr


def test_progress_line_on_a_terminal(tmp_path: Path, procs: Processes) -> None:
    from tests.integration.test_cli_create_info import run_in_pty

    shared = share(tmp_path, 4_000_000, piece_length=32768)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host, "--max-upload-rate", "2M")
    out = tmp_path / "out"
    out.mkdir()
    code, screen = run_in_pty(["download", str(shared.torrent), "-o", str(out), "--bind",
                               next_loopback_ipv4(), "--peer", f"{host}:{port}",
                               "--no-trackers"])
    assert code == 0, screen
    assert "pieces" in screen and "ETA" in screen and "peers" in screen
    # the summary replaces the progress line instead of running on after it
    assert "\r\x1b[Kbtfs: payload.bin: complete" in screen
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_a_second_download_into_the_same_folder_is_refused(tmp_path: Path,
                                                           procs: Processes) -> None:
    shared = share(tmp_path, 1_000_000, piece_length=16384)
    out = tmp_path / "out"
    nobody = next_loopback_ipv4()
    first = start_download(procs, shared.torrent, out, "--no-trackers",
                     "--peer", f"{nobody}:{free_port(nobody)}")
    lock = out / f".{shared.data.name}.btfs-lock"
    deadline = time.monotonic() + 10
    while not lock.exists():
        assert time.monotonic() < deadline and first.poll() is None, procs.output(first)
        time.sleep(0.05)
    r = run_btfs("download", shared.torrent, "-o", out, "--no-trackers")
    assert r.returncode == 2 and f"in use by process {first.pid}" in r.stderr, r.stderr
    procs.stop(first)
    assert not list(out.glob(".*.btfs-lock"))
