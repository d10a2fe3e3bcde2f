"""btfs in swarms with real BitTorrent clients no one here wrote, through real trackers.

Transmission (`transmission-cli`), aria2 (`aria2c`) and libtorrent seed to and leech from
`btfs download` / `btfs seed`; they find each other only through a tracker (opentracker,
or our own `btfs-tracker`), over HTTP and over UDP. Everything runs on loopback, every
client on its own 127.x.y.z address, with DHT, local discovery, PEX and port mapping off.
Data is compared byte for byte with the original. Both trackers record a peer at the
address its announce comes from, so this also shows that btfs announces from its `--bind`
address.

Transmission 3.00 never dials a peer that a tracker names on 127/8 (loopback is "martian"
to it): it only takes incoming connections here, so a Transmission leecher must announce
before the peer that is to feed it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.clients import (
    Tracker,
    info_hash,
    start_aria2,
    start_btfs_tracker,
    start_opentracker,
    start_transmission,
)
from tests.support.env import require_ipv6_loopback, require_libtorrent
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import HANG, Processes, wait_for
from tests.support.swarm import (
    Shared,
    downloaded_bytes,
    finish,
    share,
    start_download,
    tree_digest,
    uploaded_bytes,
    wait_for_line,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TREE = {
    "a.bin": 1_000_000,
    "empty.txt": 0,
    "sub/b.bin": 300_001,
    "sub/deeper/c.bin": 700_000,
    "sub/ünïcode name.txt": 12_345,
}
LAYOUTS: dict[str, dict[str, int] | int] = {"single-file": 2_500_000, "multi-file": TREE}
PIECE = 32768


def tracked_share(procs: Processes, tmp: Path, tracker_kind: str, scheme: str,
                  layout: dict[str, int] | int) -> tuple[Shared, Tracker]:
    """Data, a torrent announcing to one tracker (by `scheme`), and that tracker running."""
    host = next_loopback_ipv4()
    if tracker_kind == "btfs-tracker":
        tracker = start_btfs_tracker(procs, host)
        shared = share(tmp, layout, piece_length=PIECE, trackers=[tracker.url(scheme)])
        return shared, tracker
    # opentracker must whitelist the torrent, whose info-hash depends on its URL.
    port = free_port(host)
    shared = share(tmp, layout, piece_length=PIECE,
                   trackers=[f"{scheme}://{host}:{port}/announce"])
    return shared, start_opentracker(procs, host, port, [info_hash(shared.torrent)])


def wait_for_swarm(tracker: Tracker, shared: Shared, *, seeders: int = 0, leechers: int = 0,
                   timeout: float = 30) -> None:
    """Until the tracker's scrape counts at least so many seeders and leechers: they have
    announced, so a peer announcing next is told about them (btfs would not ask again for
    30 s or more, the others for longer)."""
    ih = info_hash(shared.torrent)

    def counted() -> bool:
        counts = tracker.scrape(ih)
        return counts["complete"] >= seeders and counts["incomplete"] >= leechers

    wait_for(counted, timeout, f"{seeders} seeder(s) and {leechers} leecher(s) announced to "
             f"{tracker.host}", interval=0.2)


def start_client_seed(procs: Processes, client: str, shared: Shared, tmp: Path,
                      scheme: str) -> subprocess.Popen[bytes]:
    """A third-party seeder of `shared`, its data the original's folder (only read)."""
    host = next_loopback_ipv4()
    port = free_port(host)
    if client == "transmission":
        proc = start_transmission(procs, shared.torrent, shared.data.parent,
                                  tmp / "transmission-seed", host, port)
    elif client == "aria2":
        proc = start_aria2(procs, shared.torrent, shared.data.parent, host, port, seed=True,
                           udp_trackers=scheme == "udp")
    else:
        require_libtorrent()
        proc = procs.start([sys.executable, "-m", "tests.support.ltpeer", "seed",
                            shared.torrent, shared.data.parent, "--listen", f"{host}:{port}"],
                           name="libtorrent")
    return proc


# ------------------------------------------------------------------ 1. btfs downloads


# Each tracker over each protocol, each client with both layouts on each tracker and each
# protocol (Transmission takes ~13 s a case: it unchokes on its 10 s rechoke).
ROUTES = [("opentracker", "http", "single-file"), ("opentracker", "udp", "multi-file"),
          ("btfs-tracker", "http", "multi-file"), ("btfs-tracker", "udp", "single-file")]


@pytest.mark.parametrize(("tracker_kind", "scheme", "layout"), ROUTES,
                         ids=["-".join(r) for r in ROUTES])
@pytest.mark.parametrize("client", ["transmission", "aria2"])
def test_download_from_client_seed(tmp_path: Path, procs: Processes, client: str,
                                   tracker_kind: str, scheme: str, layout: str) -> None:
    shared, tracker = tracked_share(procs, tmp_path, tracker_kind, scheme, LAYOUTS[layout])
    before = tree_digest(shared.data)
    start_client_seed(procs, client, shared, tmp_path, scheme)
    wait_for_swarm(tracker, shared, seeders=1)
    out = tmp_path / "out"
    output = finish(procs, start_download(procs, shared.torrent, out))
    assert tree_digest(out / shared.data.name) == before
    assert downloaded_bytes(output) >= shared.size
    assert tree_digest(shared.data) == before


# ------------------------------------------------------------------ 2. btfs seeds


def start_btfs_seed(procs: Processes, shared: Shared, *args: str) -> subprocess.Popen[bytes]:
    proc = procs.start_btfs("seed", shared.torrent, shared.data, "--bind",
                            next_loopback_ipv4(), *args)
    wait_for_line(procs, proc, r"listening on port (\d+)")
    return proc


def start_client_leech(procs: Processes, client: str, shared: Shared, out: Path,
                       scheme: str, *, exit_when_done: bool) -> subprocess.Popen[bytes]:
    """A third-party leecher downloading `shared` into `out`. With `exit_when_done`,
    libtorrent and aria2 exit (0) once complete; Transmission never exits by itself."""
    host = next_loopback_ipv4()
    port = free_port(host)
    out.mkdir(parents=True, exist_ok=True)
    if client == "transmission":
        return start_transmission(procs, shared.torrent, out, out.parent / f"{out.name}-config",
                                  host, port)
    if client == "aria2":
        return start_aria2(procs, shared.torrent, out, host, port, seed=not exit_when_done,
                           udp_trackers=scheme == "udp")
    require_libtorrent()
    return procs.start([sys.executable, "-m", "tests.support.ltpeer", "leech", shared.torrent,
                        out, "--listen", f"{host}:{port}",
                        *(["--exit-when-done"] if exit_when_done else [])], name="lt-leech")


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def without_empty_files(digests: dict[str, str]) -> dict[str, str]:
    """Transmission 3.00 does not create a torrent's zero-length files."""
    return {name: digest for name, digest in digests.items() if digest != EMPTY_SHA256}


def wait_for_copy(procs: Processes, proc: subprocess.Popen[bytes], copy: Path,
                  expected: dict[str, str], timeout: float = 60) -> None:
    """Until `copy` holds the expected files (names and digests); fail if `proc` exits."""
    deadline = time.monotonic() + timeout
    while tree_digest(copy) != expected:
        assert proc.poll() is None, f"exited ({proc.returncode}):\n{procs.output(proc)[-3000:]}"
        assert time.monotonic() < deadline, (
            f"no complete copy in {timeout} s: {sorted(tree_digest(copy))}\n"
            f"{procs.output(proc)[-3000:]}")
        time.sleep(0.25)


@pytest.mark.parametrize(("tracker_kind", "scheme"),
                         [("btfs-tracker", "http"), ("opentracker", "udp")])
@pytest.mark.parametrize("client", ["libtorrent", "transmission", "aria2"])
def test_seed_serves_client_leecher(tmp_path: Path, procs: Processes, client: str,
                                    tracker_kind: str, scheme: str) -> None:
    shared, tracker = tracked_share(procs, tmp_path, tracker_kind, scheme, TREE)
    expected = tree_digest(shared.data)
    out = tmp_path / f"{client}-leech"
    if client == "transmission":
        # It never dials peers a tracker names on 127/8 ("martian" addresses to it): it
        # must be there first, for the seed to learn of it and dial it.
        leecher = start_client_leech(procs, client, shared, out, scheme, exit_when_done=True)
        wait_for_swarm(tracker, shared, leechers=1)
        seed = start_btfs_seed(procs, shared)
    else:
        seed = start_btfs_seed(procs, shared)
        wait_for_swarm(tracker, shared, seeders=1)
        leecher = start_client_leech(procs, client, shared, out, scheme, exit_when_done=True)
    if client == "transmission":
        wait_for_copy(procs, leecher, out / shared.data.name, without_empty_files(expected))
    else:
        finish(procs, leecher)
        assert tree_digest(out / shared.data.name) == expected
    procs.stop(seed)
    assert uploaded_bytes(procs.output(seed)) >= shared.size


# ------------------------------------------------------------------ 3. clients, our tracker


def interrupt(procs: Processes, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Ctrl-C (SIGINT), which every client here handles by saying `stopped` to its
    trackers (SIGTERM kills transmission-cli at once)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    procs.stop(proc)


SWARMS = [("libtorrent", "http"), ("libtorrent", "udp"), ("aria2", "http"), ("aria2", "udp"),
          ("transmission", "http"), ("transmission", "udp")]


@pytest.mark.parametrize(("client", "scheme"), SWARMS, ids=["-".join(s) for s in SWARMS])
def test_client_swarm_through_our_tracker(tmp_path: Path, procs: Processes, client: str,
                                          scheme: str) -> None:
    """A seeder and a leecher of one client find each other through btfs-tracker alone;
    its scrape then counts both as seeders and one download, and drops them as they stop.

    Transmission 3.00 never dials a peer a tracker names on 127/8 (it deems loopback
    "martian"), so two of them cannot meet on loopback: there a libtorrent leecher joins
    last and dials both, fetching from the Transmission seeder and feeding the
    Transmission leecher.
    """
    shared, tracker = tracked_share(procs, tmp_path, "btfs-tracker", scheme, TREE)
    ih = info_hash(shared.torrent)
    expected = tree_digest(shared.data)
    seeder = start_client_seed(procs, client, shared, tmp_path, scheme)
    wait_for_swarm(tracker, shared, seeders=1)
    out = tmp_path / f"{client}-leech"
    leecher = start_client_leech(procs, client, shared, out, scheme, exit_when_done=False)
    leechers = [(leecher, out, expected)]
    if client == "transmission":
        leechers = [(leecher, out, without_empty_files(expected))]
        wait_for_swarm(tracker, shared, seeders=1, leechers=1)
        bridge_out = tmp_path / "libtorrent-leech"
        bridge = start_client_leech(procs, "libtorrent", shared, bridge_out, scheme,
                                    exit_when_done=False)
        leechers.append((bridge, bridge_out, expected))
    for proc, copy, wanted in leechers:
        wait_for_copy(procs, proc, copy / shared.data.name, wanted)
    done = {"complete": 1 + len(leechers), "downloaded": len(leechers), "incomplete": 0}
    wait_for(lambda: tracker.scrape(ih) == done, 30, f"the tracker to count {done}",
             interval=0.2)
    # transmission-cli 3.00 quits without its `stopped` announce reaching an HTTP tracker
    # (transmission/transmission#196, #1772): the tracker keeps it until it expires.
    ghosts = 1 if (client, scheme) == ("transmission", "http") else 0
    for proc, _, _ in leechers:
        interrupt(procs, proc)
    gone = {"complete": 1 + ghosts, "downloaded": len(leechers), "incomplete": 0}
    wait_for(lambda: tracker.scrape(ih) == gone, 20, f"the tracker to count {gone}",
             interval=0.2)
    interrupt(procs, seeder)  # (with Transmission over HTTP, nothing changes)
    over = {"complete": 2 * ghosts, "downloaded": len(leechers), "incomplete": 0}
    wait_for(lambda: tracker.scrape(ih) == over, 20, f"the tracker to count {over}",
             interval=0.2)


# ------------------------------------------------------------------ 4. btfs with our tracker


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_btfs_download_and_seed_find_each_other_through_our_tracker(
        tmp_path: Path, procs: Processes, scheme: str) -> None:
    shared, tracker = tracked_share(procs, tmp_path, "btfs-tracker", scheme, TREE)
    ih = info_hash(shared.torrent)
    seed = start_btfs_seed(procs, shared)
    wait_for_swarm(tracker, shared, seeders=1)
    out = tmp_path / "out"
    downloader = start_download(procs, shared.torrent, out, "--seed-after")
    wait_for_line(procs, downloader, r"downloaded \d+ bytes", timeout=60)
    expected = tree_digest(shared.data)
    assert tree_digest(out / shared.data.name) == expected
    # It announced `completed` and stays as a second seeder.
    wait_for(lambda: tracker.scrape(ih) == {"complete": 2, "downloaded": 1, "incomplete": 0},
             20, "the tracker to count the finished download", interval=0.2)
    assert procs.stop(downloader) == 0
    assert tree_digest(out / shared.data.name) == expected
    procs.stop(seed)
    assert uploaded_bytes(procs.output(seed)) >= shared.size
    # Both said `stopped` on SIGTERM.
    wait_for(lambda: tracker.scrape(ih) == {"complete": 0, "downloaded": 1, "incomplete": 0},
             HANG, "the tracker to drop both peers", interval=0.2)


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_btfs_download_announces_completed(tmp_path: Path, procs: Processes,
                                           scheme: str) -> None:
    shared, tracker = tracked_share(procs, tmp_path, "btfs-tracker", scheme, 1_000_000)
    start_btfs_seed(procs, shared)
    wait_for_swarm(tracker, shared, seeders=1)
    finish(procs, start_download(procs, shared.torrent, tmp_path / "out"))
    counts = tracker.scrape(info_hash(shared.torrent))
    assert counts == {"complete": 1, "downloaded": 1, "incomplete": 0}


def test_seed_after_has_every_file_when_complete(tmp_path: Path, procs: Processes) -> None:
    shared, tracker = tracked_share(procs, tmp_path, "btfs-tracker", "http", TREE)
    start_btfs_seed(procs, shared)
    wait_for_swarm(tracker, shared, seeders=1)
    out = tmp_path / "out"
    downloader = start_download(procs, shared.torrent, out, "--seed-after")
    wait_for_line(procs, downloader, r"downloaded \d+ bytes", timeout=60)
    # Every file, the zero-length ones included, is there once it says it is complete
    # (while it goes on seeding), not only when it exits.
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    assert downloader.poll() is None


@pytest.mark.parametrize(("tracker_kind", "scheme"), [
    ("btfs-tracker", "http"), ("btfs-tracker", "udp"),
    ("opentracker", "http"), ("opentracker", "udp"),
])
def test_btfs_stopped_reaches_tracker(tmp_path: Path, procs: Processes, tracker_kind: str,
                                      scheme: str) -> None:
    """SIGTERM: btfs seed says `stopped` (from its --bind address), and the tracker forgets
    it (btfs-tracker goes by peer id, opentracker by address and port)."""
    shared, tracker = tracked_share(procs, tmp_path, tracker_kind, scheme, 300_000)
    seed = start_btfs_seed(procs, shared)
    wait_for_swarm(tracker, shared, seeders=1)
    assert procs.stop(seed) == 0
    ih = info_hash(shared.torrent)
    wait_for(lambda: tracker.scrape(ih)["complete"] == 0, HANG, "the tracker to drop the seed",
             interval=0.2)


# ------------------------------------------------------------------ IPv6


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_ipv6_swarm_through_our_tracker(tmp_path: Path, procs: Processes, scheme: str) -> None:
    """btfs-tracker on [::1]: a btfs seed serves a libtorrent leecher, and btfs downloads
    from a libtorrent seeder, each pair finding each other through it alone."""
    require_ipv6_loopback()
    require_libtorrent()
    tracker = start_btfs_tracker(procs, "::1")
    shared = share(tmp_path, TREE, piece_length=PIECE, trackers=[tracker.url(scheme)])
    expected = tree_digest(shared.data)
    seed = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", "::1")
    wait_for_swarm(tracker, shared, seeders=1)
    lt_copy = tmp_path / "lt-leech"
    lt_copy.mkdir()
    leecher = procs.start([sys.executable, "-m", "tests.support.ltpeer", "leech", shared.torrent,
                           lt_copy, "--listen", "[::1]:0", "--exit-when-done"], name="lt-leech")
    finish(procs, leecher)
    assert tree_digest(lt_copy / shared.data.name) == expected
    procs.stop(seed)
    ih = info_hash(shared.torrent)
    wait_for(lambda: tracker.scrape(ih)["complete"] == 0, HANG, "btfs and libtorrent to stop")

    lt_seed = procs.start([sys.executable, "-m", "tests.support.ltpeer", "seed", shared.torrent,
                           shared.data.parent, "--listen", "[::1]:0"], name="lt-seed")
    wait_for_swarm(tracker, shared, seeders=1)
    out = tmp_path / "out"
    out.mkdir()
    finish(procs, procs.start_btfs("download", shared.torrent, "-o", out, "--bind", "::1"))
    assert tree_digest(out / shared.data.name) == expected
    procs.stop(lt_seed)
