"""Web seeds driven by the swarm (BEP 19): `btfs download` and `btfs mount` with nginx.

A torrent whose `url-list` names a real nginx on loopback: the data comes from the web
seed alone when there is no peer; a web seed that is down or serves the wrong bytes is
dropped (its pieces fail their SHA-1 and are never returned) and the download completes
from a peer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from btfs.create import CreateOptions, make_torrent
from tests.support import data
from tests.support.mounting import mount_swarm
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.nginx import start_nginx
from tests.support.procs import HANG, Mounts, Processes
from tests.support.swarm import Shared, finish, start_download, start_seed, tree_digest

TREE = {"a.bin": 700_001, "sub/b.bin": 1_300_000, "c.txt": 12_345}


def shared_with_web_seed(tmp: Path, url: str) -> Shared:
    src = tmp / "origin"
    root = data.make_tree(src / "payload", TREE, seed=3)
    torrent = tmp / "payload.torrent"
    options = CreateOptions(piece_length=65536, creation_date=None, web_seeds=[url])
    torrent.write_bytes(make_torrent(root, options))
    return Shared(torrent, root, sum(TREE.values()))


def test_download_from_a_web_seed_alone(tmp_path: Path, procs: Processes) -> None:
    host = next_loopback_ipv4()
    port = free_port(host)
    shared = shared_with_web_seed(tmp_path, f"http://{host}:{port}/")
    nginx = start_nginx(procs, tmp_path / "nginx", host, port, shared.data.parent)
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--no-trackers")
    finish(procs, proc, timeout=HANG)
    assert tree_digest(out / "payload") == tree_digest(shared.data)
    statuses = {status for _, status, _ in nginx.requests()}
    assert statuses == {206}


def test_a_lying_web_seed_is_dropped_and_peers_finish(tmp_path: Path, procs: Processes) -> None:
    host = next_loopback_ipv4()
    port = free_port(host)
    shared = shared_with_web_seed(tmp_path, f"http://{host}:{port}/")
    wrong = tmp_path / "wrong"
    shutil.copytree(shared.data.parent, wrong)
    for path in (wrong / "payload").rglob("*.bin"):
        path.write_bytes(bytes(path.stat().st_size))  # same sizes, wrong bytes
    start_nginx(procs, tmp_path / "nginx", host, port, wrong)
    seed_host = next_loopback_ipv4()
    seed_port = start_seed(procs, shared, seed_host, "--max-upload-rate", "2M")
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--no-trackers", "-v",
                          "--peer", f"{seed_host}:{seed_port}")
    output = finish(procs, proc, timeout=HANG)
    assert tree_digest(out / "payload") == tree_digest(shared.data)
    assert "failed its hash check" in output
    assert "dropped" in output


def test_a_web_seed_that_is_down_does_not_stop_the_download(tmp_path: Path,
                                                              procs: Processes) -> None:
    nobody = next_loopback_ipv4()
    shared = shared_with_web_seed(tmp_path, f"http://{nobody}:{free_port(nobody)}/")
    seed_host = next_loopback_ipv4()
    seed_port = start_seed(procs, shared, seed_host)
    out = tmp_path / "out"
    proc = start_download(procs, shared.torrent, out, "--no-trackers",
                          "--peer", f"{seed_host}:{seed_port}")
    finish(procs, proc, timeout=HANG)
    assert tree_digest(out / "payload") == tree_digest(shared.data)


def test_a_mount_reads_from_a_web_seed_alone(tmp_path: Path, procs: Processes,
                                             mounts: Mounts) -> None:
    host = next_loopback_ipv4()
    port = free_port(host)
    shared = shared_with_web_seed(tmp_path, f"http://{host}:{port}/")
    start_nginx(procs, tmp_path / "nginx", host, port, shared.data.parent)
    mnt = tmp_path / "mnt"
    mount_swarm(mounts, shared.torrent, mnt, "--lazy")
    original = (shared.data / "sub" / "b.bin").read_bytes()
    with open(mnt / "payload" / "sub" / "b.bin", "rb") as f:
        f.seek(1_000_000)
        assert f.read(100_000) == original[1_000_000:1_100_000]
    assert (mnt / "payload" / "a.bin").read_bytes() == (shared.data / "a.bin").read_bytes()
