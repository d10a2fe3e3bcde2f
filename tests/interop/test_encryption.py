"""Message Stream Encryption with a peer that will not talk in plain text.

Transmission with `"encryption": 2` (required) refuses plain BitTorrent: btfs, as a
downloader and as a seed, must fall back to an encrypted connection (MSE with RC4 for
the whole stream, since that is all Transmission offers) and move the data over it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from btfs.metainfo import load_torrent
from tests.support.env import require_tool
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import Processes, wait_for
from tests.support.swarm import share, tree_digest, wait_for_line

pytestmark = pytest.mark.interop


def start_tracker(procs: Processes) -> str:
    host = next_loopback_ipv4()
    proc = procs.start([sys.executable, "-m", "tracker", "--http", f"{host}:0", "--udp", "off",
                        "--interval", "60"], name="btfs-tracker")
    address = wait_for_line(procs, proc, r"http (\S+)").group(1)
    return f"http://{address}/announce"


def seeders(announce: str, info_hash: bytes) -> int:
    """`complete` for the torrent in the tracker's scrape (0 if it does not know it yet)."""
    import urllib.request
    from urllib.parse import quote_from_bytes

    from btfs.bencode import decode

    url = announce.replace("/announce", "/scrape") + f"?info_hash={quote_from_bytes(info_hash)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = decode(response.read())
    files = answer.get(b"files", {}) if isinstance(answer, dict) else {}
    entry = files.get(info_hash, {}) if isinstance(files, dict) else {}
    return int(entry.get(b"complete", 0)) if isinstance(entry, dict) else 0


def transmission(procs: Processes, tmp: Path, torrent: Path, data_dir: Path) -> int:
    """Transmission on 127.0.0.1 (it binds no other address) requiring encryption; its port."""
    tool = require_tool("transmission-cli", "transmission-cli")
    conf = tmp / "transmission"
    conf.mkdir()
    (conf / "settings.json").write_text(json.dumps({
        "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
        "utp-enabled": False, "port-forwarding-enabled": False, "rpc-enabled": False,
        "encryption": 2, "peer-port": (port := free_port("127.0.0.1")),
        "peer-port-random-on-start": False,
    }))
    procs.start([tool, "-g", conf, "-w", data_dir, torrent], name="transmission")
    return port


def test_download_from_a_seeder_that_requires_encryption(tmp_path: Path,
                                                         procs: Processes) -> None:
    tracker = start_tracker(procs)
    shared = share(tmp_path, 2_000_000, piece_length=32768, trackers=[tracker])
    transmission(procs, tmp_path, shared.torrent, shared.data.parent)
    info_hash = load_torrent(shared.torrent).info_hash
    wait_for(lambda: seeders(tracker, info_hash) >= 1, 60, "Transmission to announce as a seed")
    out = tmp_path / "out"
    out.mkdir()
    proc = procs.start_btfs("download", shared.torrent, "-o", out, "--bind",
                            next_loopback_ipv4())
    proc.wait(90)
    assert proc.returncode == 0, procs.output(proc)[-3000:]
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_seed_serves_a_leecher_that_requires_encryption(tmp_path: Path,
                                                        procs: Processes) -> None:
    tracker = start_tracker(procs)
    shared = share(tmp_path, 2_000_000, piece_length=32768, trackers=[tracker])
    leech_dir = tmp_path / "leech"
    leech_dir.mkdir()
    port = transmission(procs, tmp_path, shared.torrent, leech_dir)
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind",
                            next_loopback_ipv4(), "-vv", "--peer", f"127.0.0.1:{port}")
    target = leech_dir / shared.data.name
    wait_for(lambda: target.exists() and tree_digest(target) == tree_digest(shared.data), 90,
             "Transmission to download from btfs seed")
    assert re.search(r"plain handshake with 127.0.0.1:\d+ failed", procs.output(seed))
