"""A mount that waits says why (issue 15): its default log file, `btfs status`, and the line
`btfs mount` prints.

The torrent's only tracker is down (nothing listens on its port) and there is no peer:
reading a file would block. The log, in the cache folder by default, says that the
tracker failed and, after 30 s, that there have been no peers; `btfs status` shows the
tracker's error and when it is tried next, and where the log is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.test_mount_local import make_torrent
from tests.support.env import require_fuse
from tests.support.mounting import btfs
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import HANG, Mounts, is_mounted, wait_for

pytestmark = pytest.mark.fuse

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} btfs\[\d+\] "


def test_a_mount_whose_tracker_is_down_says_so(tmp_path: Path, mounts: Mounts) -> None:
    require_fuse()
    torrent, _ = make_torrent(tmp_path)
    host = next_loopback_ipv4()
    tracker = f"http://{host}:{free_port(host)}/announce"
    with_tracker = tmp_path / "tracked.torrent"
    r = btfs("create", tmp_path / "src" / "Show", "-o", with_tracker, "-t", tracker, "-q",
             "-l", "16K")
    assert r.returncode == 0, r.stderr
    cache = tmp_path / "cache"
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    # no LSD or DHT: the mount of another test of this run could be found on loopback
    r = btfs("mount", with_tracker, mnt, "--cache-dir", cache, "--bind", host, "--no-lsd",
             "--no-dht", timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert is_mounted(mnt)
    mounts.remember_pid(mnt)
    log = cache / "btfs.log"
    assert r.stdout == (f"btfs: mounted Show at {mnt} (log: {log}); watch it with "
                        f"'btfs status {mnt}', unmount it with 'btfs unmount {mnt}'\n")
    other = mounts.add(tmp_path / "other")
    other.mkdir()
    quiet = btfs("mount", torrent, other, "-q", "--cache-dir", tmp_path / "other-cache",
                 "--no-trackers", "--bind", host, timeout=HANG)
    assert (quiet.returncode, quiet.stdout) == (0, ""), quiet.stderr  # -q: no line

    def logged(pattern: str) -> bool:
        return log.exists() and re.search(pattern, log.read_text(), re.M) is not None

    failure = (rf"^{STAMP}WARNING btfs.trackers.session: tracker {re.escape(tracker)}: "
               r".+ \(failure 1\)$")
    wait_for(lambda: logged(failure), HANG, "the tracker's failure in the log")
    assert logged(rf"^{STAMP}INFO btfs.trackers.session: trackers of tier 1: none answered; "
                  r"next try in \d+ s$"), log.read_text()
    assert logged(rf"^{STAMP}INFO btfs.mount: mounted Show$"), log.read_text()

    [status] = json.loads(btfs("status", mnt, "--json").stdout)
    [row] = status["torrent"]["trackers"]
    assert row["url"] == tracker and row["result"] == "error" and row["error"]
    assert isinstance(row["last_announce_ago"], float)
    assert isinstance(row["next_announce_in"], float)
    assert status["torrent"]["log"] == str(log)
    assert status["torrent"]["peer_sources"] == {}
    text = btfs("status", mnt).stdout
    assert f"  tracker {tracker}: error: " in text and "; next in " in text
    assert f"  log: {log}" in text

    # Without a peer for 30 s, the log says so (then at 60 s, 120 s, ...).
    wait_for(lambda: logged(rf"^{STAMP}INFO btfs.swarm: no peers for 3\d s "
                            r"\(0 addresses known to try\)$"),
             HANG + 40, "'no peers for 30 s' in the log")
    assert logged(rf"^{STAMP}INFO btfs.trackers.session: tracker {re.escape(tracker)}: "
                  r".+ \(failure [2-9]\)$"), log.read_text()

    r = btfs("unmount", mnt, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert not cache.exists(), "the default log stays only when a live mount failed"
