"""Third-party BitTorrent programs and trackers as test processes, all on loopback.

Transmission (`transmission-cli`), aria2 (`aria2c`), opentracker and our own
`btfs-tracker` (libtorrent is tests.support.ltpeer), each started through `Processes` so
that a test's teardown kills them whatever happened. Every helper turns off what could
reach beyond the machine: local peer discovery, peer exchange, UPnP/NAT-PMP port mapping
and DHT (aria2 needs its DHT socket for UDP trackers: it then gets no bootstrap node).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

from btfs import bencode
from btfs.metainfo import load_torrent
from tests.support import env
from tests.support.procs import Processes, wait_for


def info_hash(torrent: Path) -> bytes:
    return load_torrent(torrent).info_hash


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ------------------------------------------------------------------ trackers


@dataclass
class Tracker:
    """A running tracker: its announce URLs and (ours only) a scrape over HTTP."""

    proc: subprocess.Popen[bytes]
    host: str
    http_port: int
    udp_port: int

    @property
    def http(self) -> str:
        return f"http://{bracket(self.host)}:{self.http_port}/announce"

    @property
    def udp(self) -> str:
        return f"udp://{bracket(self.host)}:{self.udp_port}/announce"

    def url(self, scheme: str) -> str:
        return self.http if scheme == "http" else self.udp

    def scrape(self, info_hash: bytes) -> dict[str, int]:
        """`GET /scrape?info_hash=...`: {"complete", "downloaded", "incomplete"} (zeros if
        the tracker does not know the torrent)."""
        url = (f"http://{bracket(self.host)}:{self.http_port}/scrape"
               f"?info_hash={quote_from_bytes(info_hash, safe='')}")
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = bencode.decode(response.read())
        assert isinstance(answer, dict), answer
        files = answer.get(b"files", {})
        entry = files.get(info_hash, {})
        return {key: int(entry.get(key.encode(), 0))
                for key in ("complete", "downloaded", "incomplete")}


def start_btfs_tracker(procs: Processes, host: str, *args: str) -> Tracker:
    """`python -m tracker` (btfs-tracker) on any free HTTP and UDP ports of `host`."""
    proc = procs.start([sys.executable, "-m", "tracker", "--http", f"{bracket(host)}:0",
                        "--udp", f"{bracket(host)}:0", "--access-log", *args],
                       name="btfs-tracker")
    found: dict[str, int] = {}

    def ready() -> bool:
        for line in procs.output(proc).splitlines():
            kind, _, address = line.partition(" ")
            if kind in ("http", "udp") and address:
                found[kind] = int(address.rpartition(":")[2])
        return len(found) == 2 or proc.poll() is not None

    wait_for(ready, 20, "btfs-tracker's bound addresses")
    assert len(found) == 2, procs.output(proc)
    return Tracker(proc, host, found["http"], found["udp"])


def start_opentracker(procs: Processes, host: str, port: int,
                      info_hashes: list[bytes]) -> Tracker:
    """Debian's opentracker on `host:port` (HTTP and UDP), whitelisting `info_hashes`.

    Debian builds it with a whitelist (`-w`), read after it drops to user `nobody`, so the
    file lives in a world-readable temporary folder (pytest's tmp_path is 0700), removed
    once the whitelist is loaded. It answers before that: this waits until a whitelisted
    probe torrent is accepted. It records peers by their packets' source address.
    """
    binary = env.require_tool("opentracker", "opentracker")
    root = Path(tempfile.mkdtemp(prefix="btfs-opentracker-"))
    root.chmod(0o755)
    probe = os.urandom(20)
    whitelist = root / "whitelist"
    whitelist.write_text("".join(h.hex() + "\n" for h in [*info_hashes, probe]))
    whitelist.chmod(0o644)
    proc = procs.start([binary, "-i", host, "-p", str(port), "-P", str(port),
                        "-w", str(whitelist)], cwd=root, name="opentracker")
    try:
        url = (f"http://{bracket(host)}:{port}/announce?info_hash="
               f"{quote_from_bytes(probe, safe='')}&peer_id={'p' * 20}&port=1"
               "&uploaded=0&downloaded=0&left=0&event=started&compact=1")
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, procs.output(proc)
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if b"failure reason" not in response.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "opentracker did not start serving"
            time.sleep(0.05)
    finally:
        # Only SIGHUP would read the whitelist again.
        shutil.rmtree(root, ignore_errors=True)
    return Tracker(proc, host, port, port)


# ------------------------------------------------------------------ Transmission


def start_transmission(procs: Processes, torrent: Path, data_dir: Path, config_dir: Path,
                       host: str, port: int) -> subprocess.Popen[bytes]:
    """`transmission-cli` on `host:port`: it seeds if `data_dir` holds the data (after
    verifying it), else downloads into it and then seeds, until stopped (SIGINT lets it
    say `stopped` to UDP trackers; SIGTERM kills it at once).

    Quirks of 3.00 that tests must allow for: it learns of peers only from trackers (no
    way to give it one), and never dials those on 127/8 (to it "martian"), so on loopback
    it only takes incoming connections; it does not create zero-length files.
    """
    binary = env.require_tool("transmission-cli", "transmission-cli")
    config_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "bind-address-ipv4": host,
        "bind-address-ipv6": "::1",
        "peer-port": port,
        "peer-port-random-on-start": False,
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": False,
        "utp-enabled": False,
        "port-forwarding-enabled": False,
        "blocklist-enabled": False,
        "rpc-enabled": False,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "speed-limit-up-enabled": False,
        "speed-limit-down-enabled": False,
        "encryption": 1,  # preferred, the default
        "message-level": 2,
        "start-added-torrents": True,
    }
    (config_dir / "settings.json").write_text(json.dumps(settings, indent=1))
    return procs.start([binary, "-w", data_dir, "-g", config_dir, "-p", str(port), "-ep",
                        "-M", "-U", "-D", torrent], name="transmission")


# ------------------------------------------------------------------ aria2


def start_aria2(procs: Processes, torrent: Path | str, data_dir: Path, host: str, port: int, *,
                seed: bool, udp_trackers: bool = False,
                extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`aria2c` bound to `host`, listening on `port`, with only the torrent's trackers.

    seed=True: verify the data in `data_dir`, then seed it until stopped. seed=False:
    download into `data_dir` and exit (0) as soon as it is complete (`--seed-time=0`).
    aria2 only speaks to UDP trackers when its DHT is on (it shares the DHT's UDP socket):
    `udp_trackers=True` turns DHT on, with no entry point and its routing table in
    `data_dir`'s parent, so it knows no node and talks to no one but the tracker.
    """
    binary = env.require_tool("aria2c", "aria2")
    data_dir.mkdir(parents=True, exist_ok=True)
    state = data_dir.parent / f".aria2-{port}"
    state.mkdir(exist_ok=True)
    args = [
        binary, "--no-conf", "--interface", host, "--listen-port", str(port),
        f"--enable-dht={'true' if udp_trackers else 'false'}", "--enable-dht6=false",
        "--dht-listen-port", str(port), "--dht-file-path", str(state / "dht.dat"),
        "--bt-enable-lpd=false", "--enable-peer-exchange=false",
        "--check-integrity=true", "--bt-seed-unverified=false", "--file-allocation=none",
        "--summary-interval=0", "--show-console-readout=false", "--enable-color=false",
        "--console-log-level=notice", "--log", str(state / "aria2.log"), "--log-level=info",
        "--dir", str(data_dir),
    ]
    args += ["--seed-ratio=0.0"] if seed else ["--seed-time=0"]
    return procs.start([*args, *extra, str(torrent)], name="aria2c")
