"""The DHT against real software on loopback: libtorrent's and aria2's nodes and peers.

Each node has its own 127.0.0.x address. Nothing here reaches the public routers: btfs
joins through `--dht-bootstrap` only (tests/conftest.py empties the default list) and
libtorrent through `--dht-node` only (tests/support/ltpeer.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.clients import start_aria2
from tests.support.env import require_libtorrent, require_tool
from tests.support.mounting import mount_swarm
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import Mounts, Processes
from tests.support.swarm import (
    Shared,
    finish,
    share,
    start_download,
    start_seed,
    tree_digest,
    wait_for_line,
)

TIMEOUT = 150  # a lookup is retried every 15 s while it finds nobody


def magnet(shared: Shared) -> str:
    from btfs.metainfo import load_torrent

    return f"magnet:?xt=urn:btih:{load_torrent(shared.torrent).info_hash_hex}"


def start_lt(procs: Processes, mode: str, torrent: Path | str, save: Path | str, *,
             nodes: tuple[str, ...] = (), name: str = "libtorrent") -> str:
    """A libtorrent session with its DHT on (a bare node for mode "dht"); its HOST:PORT."""
    require_libtorrent()
    host = next_loopback_ipv4()
    port = free_port(host)
    args = [sys.executable, "-m", "tests.support.ltpeer", mode, str(torrent), str(save),
            "--listen", f"{host}:{port}", "--dht"]
    for node in nodes:
        args += ["--dht-node", node]
    proc = procs.start(args, name=name)
    wait_for_line(procs, proc, r'"listen_port"')
    return f"{host}:{port}"


def lt_reports(procs: Processes, proc: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in procs.output(proc).splitlines()
            if line.startswith("{")]


def test_download_a_bare_magnet_found_through_libtorrents_dht(
        tmp_path: Path, procs: Processes) -> None:
    """libtorrent seeds with the DHT on and no tracker; a magnet with only xt= resolves and
    downloads, its only way in one libtorrent DHT node."""
    shared = share(tmp_path, {"a.bin": 300_000, "b/c.bin": 500_000}, piece_length=32768)
    router = start_lt(procs, "dht", "-", "-", name="lt-dht")
    start_lt(procs, "seed", shared.torrent, shared.data.parent, nodes=(router,),
             name="lt-seed")
    out = tmp_path / "out"
    proc = start_download(procs, magnet(shared), out, "--dht-bootstrap", router, "-v")
    output = finish(procs, proc, timeout=TIMEOUT)
    assert "got the metadata" in output
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_mount_a_bare_magnet_found_through_the_dht(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    shared = share(tmp_path, 2_000_000, piece_length=65536)
    router = start_lt(procs, "dht", "-", "-", name="lt-dht")
    start_lt(procs, "seed", shared.torrent, shared.data.parent, nodes=(router,),
             name="lt-seed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount_swarm(mounts, magnet(shared), mnt, "--dht-bootstrap", router, timeout=TIMEOUT)
    assert (mnt / shared.data.name).read_bytes() == shared.data.read_bytes()


def test_libtorrent_announces_to_our_node_and_btfs_finds_it_there(
        tmp_path: Path, procs: Processes) -> None:
    """Our node answers libtorrent's get_peers and stores its announce_peer (token
    checked); another btfs process then gets that peer from our node."""
    (tmp_path / "x").mkdir()
    other = share(tmp_path / "x", 100_000, name="other")
    host = next_loopback_ipv4()
    port = start_seed(procs, other, host)       # our node: a btfs seeding another torrent
    ours = f"{host}:{port}"
    shared = share(tmp_path, 1_500_000, piece_length=32768)
    start_lt(procs, "seed", shared.torrent, shared.data.parent, nodes=(ours,), name="lt-seed")
    out = tmp_path / "out"
    proc = start_download(procs, magnet(shared), out, "--dht-bootstrap", ours, "-vv")
    finish(procs, proc, timeout=TIMEOUT)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_libtorrent_finds_a_btfs_seed_through_the_dht(tmp_path: Path, procs: Processes) -> None:
    """btfs seed announces itself (announce_peer to libtorrent's node); a libtorrent
    leecher given only the magnet finds it there and completes."""
    shared = share(tmp_path, 1_500_000, piece_length=32768)
    router = start_lt(procs, "dht", "-", "-", name="lt-dht")
    start_seed(procs, shared, next_loopback_ipv4(), "--dht-bootstrap", router)
    out = tmp_path / "lt-out"
    out.mkdir()
    require_libtorrent()
    host = next_loopback_ipv4()
    leecher = procs.start([sys.executable, "-m", "tests.support.ltpeer", "leech",
                           magnet(shared), out, "--listen", f"{host}:{free_port(host)}",
                           "--dht", "--dht-node", router, "--exit-when-done"],
                          name="lt-leech")
    try:
        leecher.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(procs.output(leecher)[-2000:]) from None
    assert leecher.returncode == 0, procs.output(leecher)[-2000:]
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_aria2_finds_a_btfs_seed_through_our_dht_node(tmp_path: Path, procs: Processes) -> None:
    """aria2's DHT enters through our node (a btfs seed of another torrent), where the
    btfs seed of the torrent announced itself; aria2, given a bare magnet, completes."""
    require_tool("aria2c", "aria2")
    (tmp_path / "x").mkdir()
    other = share(tmp_path / "x", 100_000, name="other")
    host = next_loopback_ipv4()
    node = f"{host}:{start_seed(procs, other, host)}"
    shared = share(tmp_path, 1_500_000, piece_length=32768)
    start_seed(procs, shared, next_loopback_ipv4(), "--dht-bootstrap", node)
    out = tmp_path / "aria2-out"
    out.mkdir()
    aria_host = next_loopback_ipv4()
    proc = start_aria2(procs, magnet(shared), out, aria_host, free_port(aria_host),
                       seed=False, extra=("--enable-dht=true", f"--dht-entry-point={node}",
                              f"--dht-listen-port={free_port(aria_host)}",
                              "--dht-file-path=" + str(tmp_path / "aria2-dht.dat"),
                              "--bt-enable-lpd=false", "--enable-peer-exchange=false"))
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(procs.output(proc)[-3000:]) from None
    assert proc.returncode == 0, procs.output(proc)[-3000:]
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_the_nodes_of_the_last_run_are_saved(tmp_path: Path, procs: Processes) -> None:
    """A process that joined saves its nodes; the next one rejoins from them alone."""
    from btfs.dht.service import DhtService

    cache = tmp_path / "cache"
    router = start_lt(procs, "dht", "-", "-", name="lt-dht")
    shared = share(tmp_path, 100_000)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    host = next_loopback_ipv4()
    proc = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", host,
                            "--no-trackers", "--dht-bootstrap", router, "-v", env=env)
    wait_for_line(procs, proc, r"DHT: \d+ peers for the torrent \([1-9]\d* nodes known\)",
                  timeout=60)
    procs.stop(proc)
    state = cache / "btfs" / "dht-nodes"
    assert state.exists()
    saved = DhtService([], state_path=state)._load()
    assert f"{saved[4][0][0]}:{saved[4][0][1]}" == router


def test_port_messages_tell_each_side_of_the_others_node(
        tmp_path: Path, procs: Processes) -> None:
    """BEP 5 PORT: a libtorrent leecher that knows no DHT node connects to a btfs seed
    (whose node knows none either) and each side's table gains the other's node."""
    require_libtorrent()
    shared = share(tmp_path, 2_000_000, piece_length=32768)
    host = next_loopback_ipv4()
    proc = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", host,
                            "--no-trackers", "-v")
    port = int(wait_for_line(procs, proc, r"listening on port (\d+)").group(1))
    out = tmp_path / "lt-out"
    out.mkdir()
    lt_host = next_loopback_ipv4()
    leecher = procs.start([sys.executable, "-m", "tests.support.ltpeer", "leech",
                           shared.torrent, out, "--listen", f"{lt_host}:{free_port(lt_host)}",
                           "--dht", "--peer", f"{host}:{port}"], name="lt-leech")
    wait_for_line(procs, leecher, r'"dht_nodes": [1-9]', timeout=60)
    # and ours learnt libtorrent's node: its next lookup (every minute while it finds no
    # one) finds... no peer, but reports a node known; check the table through the log
    wait_for_line(procs, proc, r"DHT: \d+ peers for the torrent \([1-9]\d* nodes known\)",
                  timeout=90)


def test_a_magnet_mount_is_live_while_resolving_and_says_so(
        tmp_path: Path, procs: Processes, mounts: Mounts) -> None:
    """`btfs mount MAGNET` mounts at once (empty) and waits for the metadata: meanwhile
    `btfs status` and the root's xattrs say "resolving metadata" with the DHT's nodes and
    the peers found; once a seeder joins, the files are there and the command returns."""
    import threading

    from tests.support.mounting import btfs
    from tests.support.procs import HANG, is_mounted, wait_for

    shared = share(tmp_path, 600_000, name="late")
    router = start_lt(procs, "dht", "-", "-", name="lt-dht")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.add(mnt)
    result: list[subprocess.CompletedProcess[str]] = []
    command = threading.Thread(target=lambda: result.append(btfs(
        "mount", magnet(shared) + "&dn=late", mnt, "--cache-dir", tmp_path / "cache",
        "--bind", next_loopback_ipv4(), "--dht-bootstrap", router, timeout=TIMEOUT)))
    command.start()
    try:
        wait_for(lambda: is_mounted(mnt), HANG, "the mount, before the metadata")
        assert os.listdir(mnt) == []

        def resolving() -> str:
            try:
                return os.getxattr(mnt, "user.btfs.resolving").decode()
            except OSError:
                return ""

        wait_for(lambda: "(1 node," in resolving(), HANG, "the DHT's node in the status")
        assert resolving().startswith("no trackers, 0 peers from the DHT (1 node, ")
        status = btfs("status", mnt)
        assert "resolving metadata: no trackers, 0 peers from the DHT" in status.stdout
        assert f"{mnt}: late (info-hash " in status.stdout
        start_lt(procs, "seed", shared.torrent, shared.data.parent, nodes=(router,),
                 name="lt-seed")
        command.join(TIMEOUT)
        assert result and result[0].returncode == 0, result
        assert "btfs: mounted late at" in result[0].stdout
        assert (mnt / shared.data.name).read_bytes() == shared.data.read_bytes()
        assert resolving() == ""
    finally:
        command.join(TIMEOUT)


def test_a_magnet_mount_that_finds_no_metadata_fails_and_unmounts(
        tmp_path: Path, mounts: Mounts) -> None:
    from tests.support.mounting import btfs
    from tests.support.procs import is_mounted

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.add(mnt)
    r = btfs("mount", "magnet:?xt=urn:btih:" + "ab" * 20, mnt, "--cache-dir",
             tmp_path / "cache", "--bind", next_loopback_ipv4(), "--no-dht",
             "--metadata-timeout", "2", timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"btfs: error: no peer gave the metadata of {'ab' * 20} within 2 s: no trackers, "
        "DHT off, 0 peers from --peer or the magnet; 0 asked")
    assert not is_mounted(mnt)
    assert not (tmp_path / "cache").exists()
