"""Running `btfs` commands and mounting through the CLI, as the mount tests do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.env import require_fuse
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Mounts, is_mounted


def btfs(*args: str | Path, timeout: float = 60,
         stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """This checkout's `btfs` with the test's Python; output captured as text."""
    return subprocess.run([sys.executable, "-m", "btfs", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=stdin)


def mount(mounts: Mounts, torrent: Path | str, mnt: Path, *extra: str | Path,
          timeout: float = 60) -> int:
    """`btfs mount` in the background; the mount process's pid once the mount is live
    (it is unmounted at teardown by `mounts`)."""
    require_fuse()
    mnt.mkdir(exist_ok=True)
    mounts.add(mnt)
    r = btfs("mount", torrent, mnt, *extra, timeout=timeout)
    assert r.returncode == 0, r.stderr
    assert is_mounted(mnt), "btfs mount returned before the mount was live"
    pid = mounts.remember_pid(mnt)
    assert pid is not None
    return pid


def mount_swarm(mounts: Mounts, torrent: Path | str, mnt: Path, *extra: str | Path,
                timeout: float = 60) -> int:
    """`btfs mount` in the background from its own loopback address, with no trackers;
    the mount process's pid once it is mounted (unmounted at teardown by `mounts`).

    The cache is the test's own (beside the mount point) unless `extra` names one, so
    tests running at once never share the default cache folder of a torrent.
    """
    if not any("cache" in str(arg) for arg in extra):
        extra = ("--cache-dir", mnt.parent / f"{mnt.name}-cache", *extra)
    return mount(mounts, torrent, mnt, "--bind", next_loopback_ipv4(), "--no-trackers", *extra,
                 timeout=timeout)
