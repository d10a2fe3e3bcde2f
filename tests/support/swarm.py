"""Torrents with real data, and btfs/libtorrent peers on loopback, for engine tests."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from btfs.create import CreateOptions, make_torrent
from tests.support import data
from tests.support.env import require_libtorrent
from tests.support.procs import Processes


@dataclass
class Shared:
    """A torrent file and the original data it was made from."""

    torrent: Path
    data: Path
    size: int


def share(tmp: Path, layout: dict[str, int] | int, *, piece_length: int | None = None,
          trackers: list[str] | None = None, name: str = "payload", seed: int = 1) -> Shared:
    """Make random data (one file of `layout` bytes, or a tree) and a torrent of it."""
    src = tmp / "origin"
    src.mkdir(exist_ok=True)
    if isinstance(layout, int):
        path = data.make_random_file(src / f"{name}.bin", layout, seed=seed)
        size = layout
    else:
        path = data.make_tree(src / name, layout, seed=seed)
        size = sum(layout.values())
    options = CreateOptions(
        trackers=[[t] for t in (trackers or [])],
        piece_length=piece_length,
        creation_date=None,
    )
    torrent = tmp / f"{name}.torrent"
    torrent.write_bytes(make_torrent(path, options))
    return Shared(torrent, path, size)


def wait_for_line(procs: Processes, proc: subprocess.Popen[bytes], pattern: str,
                  timeout: float = 30.0) -> re.Match[str]:
    """Wait until the process's output has a line matching `pattern`; fail if it exits."""
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while True:
        match = regex.search(procs.output(proc))
        if match:
            return match
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {pattern!r}:\n"
                                 f"{procs.output(proc)[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} within {timeout} s:\n"
                                 f"{procs.output(proc)[-3000:]}")
        time.sleep(0.05)


def start_seed(procs: Processes, shared: Shared, host: str, *extra: str) -> int:
    """`btfs seed` on `host`; returns its port once it listens."""
    proc = procs.start_btfs("seed", shared.torrent, shared.data, "--bind", host,
                            "--no-trackers", *extra)
    return int(wait_for_line(procs, proc, r"listening on port (\d+)").group(1))


def start_lt_seed(procs: Processes, shared: Shared, host: str,
                  port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A libtorrent seeder of `shared` (its data directory is the original's folder);
    `extra`: more `tests.support.ltpeer` options."""
    require_libtorrent()
    proc = procs.start([sys.executable, "-m", "tests.support.ltpeer", "seed", shared.torrent,
                        shared.data.parent, "--listen", f"{host}:{port}", *extra],
                       name="libtorrent")
    wait_for_line(procs, proc, r'"state": "seeding"')
    return proc


def lt_leech(procs: Processes, torrent: Path, out: Path, peer: str,
             timeout: float = 60) -> None:
    """A libtorrent leecher that gets the whole torrent from `peer` (HOST:PORT) into `out`."""
    require_libtorrent()
    from tests.support.net import next_loopback_ipv4

    out.mkdir(exist_ok=True)
    leecher = procs.start([sys.executable, "-m", "tests.support.ltpeer", "leech", torrent, out,
                           "--listen", f"{next_loopback_ipv4()}:0", "--peer", peer,
                           "--exit-when-done"], name="lt-leech")
    leecher.wait(timeout)
    assert leecher.returncode == 0, procs.output(leecher)[-3000:]


def start_download(procs: Processes, torrent: Path | str, out: Path,
                   *args: str) -> subprocess.Popen[bytes]:
    """`btfs download` into `out` from its own loopback address."""
    from tests.support.net import next_loopback_ipv4

    out.mkdir(parents=True, exist_ok=True)
    return procs.start_btfs("download", torrent, "-o", out, "--bind",
                            next_loopback_ipv4(), *args)


def finish(procs: Processes, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    """Wait for a command that must succeed; its output."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"did not finish in {timeout} s:\n"
                             f"{procs.output(proc)[-3000:]}") from None
    output = procs.output(proc)
    assert proc.returncode == 0, output[-3000:]
    return output


def tree_digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under `path` (or of `path` itself), by relative name."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*")) if p.is_file()
    }


def downloaded_bytes(output: str) -> int:
    match = re.search(r"downloaded (\d+) bytes", output)
    assert match, f"no completion line in:\n{output[-3000:]}"
    return int(match.group(1))


def uploaded_bytes(output: str) -> int:
    match = re.search(r"uploaded (\d+) bytes", output)
    assert match, f"no upload total in:\n{output[-3000:]}"
    return int(match.group(1))
