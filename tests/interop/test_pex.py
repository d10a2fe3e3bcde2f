"""Peer exchange (BEP 11) with libtorrent, both ways, on loopback.

No tracker and no DHT: each side is given one peer by address and must learn the other
one from a `ut_pex` message. libtorrent sends its first ut_pex message as soon as it has
two peers, and dials the peers it learns at once (`do_connect_boost`). The seeders run
with PEX off (`--no-pex`): told of the other side by PEX, they would dial it themselves,
and the test would not show who learnt from whom.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import require_libtorrent
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import Processes, wait_for
from tests.support.swarm import finish, share, start_lt_seed, tree_digest, wait_for_line

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SIZE = 2_000_000
PIECE = 32768


def reports(procs: Processes, proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The status lines a `tests.support.ltpeer` process printed, one a second."""
    return [json.loads(line) for line in procs.output(proc).splitlines()
            if line.startswith("{") and line.endswith("}")]


def last_report(procs: Processes, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    lines = reports(procs, proc)
    assert lines, procs.output(proc)[-3000:]
    return lines[-1]


def uploaded_to(procs: Processes, proc: subprocess.Popen[bytes], ip: str) -> int:
    """The most payload a libtorrent peer reported having sent to the peer(s) at `ip`
    (a peer leaves the list when its connection ends)."""
    return max((sum(p["uploaded"] for p in r["peer_list"] if p["ip"] == ip)
                for r in reports(procs, proc)), default=0)


def start_btfs_download(procs: Processes, torrent: Path, out: Path, host: str,
                        *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """`btfs download -v` bound to `host`, and its port once it listens."""
    out.mkdir(parents=True, exist_ok=True)
    proc = procs.start_btfs("download", torrent, "-o", out, "--bind", host, "--no-trackers",
                            "-v", *args)
    return proc, int(wait_for_line(procs, proc, r"listening on port (\d+)").group(1))


def start_lt_leech(procs: Processes, torrent: Path, out: Path, host: str, *args: str,
                   name: str = "lt-leech") -> subprocess.Popen[bytes]:
    require_libtorrent()
    out.mkdir(exist_ok=True)
    proc = procs.start([sys.executable, "-m", "tests.support.ltpeer", "leech", torrent, out,
                        "--listen", f"{host}:{free_port(host)}", *args], name=name)
    wait_for_line(procs, proc, r'"listen_port": [1-9]')
    return proc


def test_btfs_learns_a_seeder_from_libtorrent_and_downloads_from_it(
    procs: Processes, tmp_path: Path,
) -> None:
    """btfs is given only a libtorrent leecher (slow: it downloads at 20 KB/s); the leecher
    tells it of the seeder it dialled; btfs dials that seeder and gets the data from it."""
    shared = share(tmp_path, SIZE, piece_length=PIECE)
    seed_host = next_loopback_ipv4()
    seed_port = free_port(seed_host)
    seeder = start_lt_seed(procs, shared, seed_host, seed_port, "--no-pex")
    middle_host = next_loopback_ipv4()
    middle = start_lt_leech(procs, shared.torrent, tmp_path / "middle", middle_host,
                            "--peer", f"{seed_host}:{seed_port}", "--download-limit", "20000")
    middle_port = last_report(procs, middle)["listen_port"]
    wait_for(lambda: last_report(procs, middle)["peers"] >= 1, 30, "the leecher reaches the seeder")

    out = tmp_path / "out"
    btfs_host = next_loopback_ipv4()
    download, _ = start_btfs_download(procs, shared.torrent, out, btfs_host,
                                      "--peer", f"{middle_host}:{middle_port}")
    output = finish(procs, download, timeout=60)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    assert f"{middle_host}:{middle_port} named" in output  # the leecher's ut_pex message
    # The seeder, which btfs could only know of from the leecher, sent it most of the data:
    # what it uploaded to anyone but the leecher, in a report after btfs finished.
    after = len(reports(procs, seeder)) + 1
    wait_for(lambda: len(reports(procs, seeder)) > after, 10, "the seeder's next report")
    report = last_report(procs, seeder)
    to_middle = sum(p["uploaded"] for p in report["peer_list"] if p["ip"] == middle_host)
    assert report["total_upload"] - to_middle > SIZE // 2, report


def test_libtorrent_learns_a_seeder_from_btfs(procs: Processes, tmp_path: Path) -> None:
    """A libtorrent leecher given only btfs (which uploads at 20 KB/s) learns from btfs's
    ut_pex message of the libtorrent seeder btfs dialled, connects to it and completes."""
    shared = share(tmp_path, SIZE, piece_length=PIECE)
    seed_host = next_loopback_ipv4()
    seed_port = free_port(seed_host)
    # 300 KB/s out: the leecher's transfer spans several of the seeder's one-a-second
    # reports, which only list connected peers (a loopback transfer at full speed could end,
    # and the finished leecher hang up, between two of them)
    seeder = start_lt_seed(procs, shared, seed_host, seed_port, "--no-pex",
                           "--upload-limit", "300000")
    # btfs stays a leecher for a while (100 KB/s in), so it keeps its seeder connected
    btfs_host = next_loopback_ipv4()
    _, btfs_port = start_btfs_download(
        procs, shared.torrent, tmp_path / "btfs", btfs_host, "--peer", f"{seed_host}:{seed_port}",
        "--seed-after", "--max-download-rate", "100K", "--max-upload-rate", "20K")
    leech_host = next_loopback_ipv4()
    leecher = start_lt_leech(procs, shared.torrent, tmp_path / "lt", leech_host,
                             "--peer", f"{btfs_host}:{btfs_port}", "--exit-when-done")
    leecher.wait(60)
    assert leecher.returncode == 0, procs.output(leecher)[-3000:]
    assert tree_digest(tmp_path / "lt" / shared.data.name) == tree_digest(shared.data)
    # The leecher reached the seeder, which nobody but btfs named to it (by ut_pex), and
    # got most of the data there (btfs uploads at 20 KB/s).
    assert uploaded_to(procs, seeder, leech_host) > SIZE // 2
