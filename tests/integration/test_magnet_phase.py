"""A magnet's metadata phase: what it tells trackers, and how it gives up."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from btfs import bencode
from tests.support.mounting import btfs
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Processes
from tests.support.swarm import finish, share, start_download, start_seed, tree_digest

UNUSED_HASH = "c0ffee" * 6 + "c0ff"


class RecordingTracker:
    """An HTTP tracker that records every announce's query and names no peer."""

    def __init__(self, host: str) -> None:
        self.announces: list[dict[str, bytes]] = []
        record = self.announces

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                fields = {k: urllib.parse.unquote_to_bytes(v) for k, v in
                          (part.partition("=")[::2] for part in query.split("&"))}
                record.append(fields)
                body = bencode.encode({b"interval": 1800, b"peers": b""})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/announce"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tracker() -> Iterator[RecordingTracker]:
    t = RecordingTracker(next_loopback_ipv4())
    try:
        yield t
    finally:
        t.close()


def test_the_metadata_phase_announces_as_the_session_and_stops(
        tmp_path: Path, procs: Processes, tracker: RecordingTracker) -> None:
    """Today's trackers saw port 6881 and a second peer id that never stopped: now the
    metadata phase announces the port the download then listens on, with the download's
    peer id, and `stopped` when it has the metadata."""
    shared = share(tmp_path, 400_000, piece_length=32768)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    from btfs.metainfo import load_torrent

    info_hash = load_torrent(shared.torrent).info_hash_hex
    magnet = (f"magnet:?xt=urn:btih:{info_hash}&tr={urllib.parse.quote(tracker.url)}"
              f"&x.pe={host}:{port}")
    out = tmp_path / "out"
    proc = start_download(procs, magnet, out, "--no-dht", "-v")
    output = finish(procs, proc)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    listening = int(output.split("listening on port ")[1].split()[0])
    events = [(a.get("event", b""), int(a["port"]), a["peer_id"]) for a in tracker.announces]
    assert events[0][0] == b"started"
    assert {port for _, port, _ in events} == {listening}, events
    assert len({peer_id for _, _, peer_id in events}) == 1, events
    stops = [i for i, e in enumerate(events) if e[0] == b"stopped"]
    assert stops, events
    # the metadata phase stopped before the swarm started again, and the swarm stopped too
    assert events[stops[0] + 1][0] == b"started", events
    assert events[-1][0] == b"stopped", events


def test_no_metadata_gives_up_with_what_was_tried(tmp_path: Path) -> None:
    host = next_loopback_ipv4()
    silent = f"{host}:9"  # nothing answers there
    r = btfs("download", f"magnet:?xt=urn:btih:{UNUSED_HASH}&tr=http://{host}:9/announce",
             "-o", tmp_path, "--bind", next_loopback_ipv4(), "--dht-bootstrap", silent,
             "--metadata-timeout", "3")
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"btfs: error: no peer gave the metadata of {UNUSED_HASH} "
                           "within 3 s: 0 peers from trackers (1 tracker: "), last
    assert "0 peers from the DHT (0 nodes, " in last
    assert last.endswith("0 peers from --peer or the magnet; 0 asked"), last


def test_no_metadata_without_the_dht_says_so(tmp_path: Path) -> None:
    r = btfs("download", f"magnet:?xt=urn:btih:{UNUSED_HASH}", "-o", tmp_path,
             "--bind", next_loopback_ipv4(), "--no-dht", "--metadata-timeout", "1")
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"btfs: error: no peer gave the metadata of {UNUSED_HASH} within 1 s: no trackers, "
        "DHT off, 0 peers from --peer or the magnet; 0 asked")


def test_a_private_torrent_never_uses_the_dht(tmp_path: Path, procs: Processes) -> None:
    """BEP 27: the public seed starts a DHT node, the private one does not."""
    public = share(tmp_path, 100_000, name="public")
    private_dir = tmp_path / "p"
    private_dir.mkdir()
    private = share(private_dir, 100_000, name="private")
    from btfs.create import CreateOptions, make_torrent

    private.torrent.write_bytes(make_torrent(private.data, CreateOptions(
        trackers=[], private=True, creation_date=None)))
    outputs = []
    for shared in (public, private):
        proc = procs.start_btfs("seed", shared.torrent, shared.data, "--bind",
                                next_loopback_ipv4(), "--no-trackers", "-v")
        from tests.support.swarm import wait_for_line

        wait_for_line(procs, proc, r"listening on port")
        procs.stop(proc)
        outputs.append(procs.output(proc))
    assert "DHT: node on UDP port" in outputs[0]
    assert "DHT" not in outputs[1]


def test_a_peer_without_the_metadata_names_one_that_has_it(
        tmp_path: Path, procs: Processes) -> None:
    """PEX in the metadata phase: the only peer we are given lacks the metadata but names,
    by peer exchange, the seed that has it."""
    import socket as sockets

    from btfs import pex, wire
    from btfs.extensions import ExtensionHandshake
    from btfs.metainfo import load_torrent

    shared = share(tmp_path, 300_000, piece_length=32768)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    info_hash = load_torrent(shared.torrent).info_hash
    lobby = sockets.create_server((next_loopback_ipv4(), 0))
    lobby.settimeout(30)
    named: list[bool] = []

    def knows_the_seed() -> None:
        conn, _ = lobby.accept()
        with conn:
            conn.settimeout(10)
            conn.recv(68)
            conn.sendall(wire.Handshake(info_hash, b"-XX0001-" + bytes(12), fast=True,
                                        extensions=True).encode())
            hs = ExtensionHandshake(extensions={"ut_pex": 9}, client="lobby")
            conn.sendall(wire.encode(wire.Extended(0, hs.encode())))
            message = pex.PexMessage(added={(host, port): 0x02})
            conn.sendall(wire.encode(wire.Extended(pex.UT_PEX_ID, pex.encode(message))))
            named.append(True)
            conn.recv(65536)

    thread = threading.Thread(target=knows_the_seed, daemon=True)
    thread.start()
    lobby_host, lobby_port = lobby.getsockname()
    out = tmp_path / "out"
    proc = start_download(procs, f"magnet:?xt=urn:btih:{info_hash.hex()}", out, "--no-dht",
                          "--no-lsd", "--peer", f"{lobby_host}:{lobby_port}")
    finish(procs, proc)
    thread.join(10)
    lobby.close()
    assert named
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
