"""The systemd units: valid, and their command lines do what the units promise.

systemd does not run inside the test machine, so each unit's ExecStart line is read from
the file and run the way systemd would (its EnvironmentFile's variables substituted, a
NOTIFY_SOCKET the test listens on), then stopped with SIGTERM as `systemctl stop` does.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_mount_local import (
    btfs_on_path,
    make_torrent,
    place_in_cache,
    sha256,
)
from tests.support.env import require_fuse, require_libtorrent, require_tool
from tests.support.procs import HANG, Mounts, Processes, is_mounted, wait_for

UNITS = Path(__file__).resolve().parents[2] / "systemd"


def unit_value(unit: Path, key: str) -> str:
    match = re.search(rf"^{key}=(.*)$", unit.read_text(), re.M)
    assert match, f"{unit.name} has no {key}="
    return match.group(1).strip()


def read_environment_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def command_line(unit: Path, env: dict[str, str], instance: str = "") -> list[str]:
    """ExecStart as systemd would run it, with our interpreter standing in for the path."""
    line = unit_value(unit, "ExecStart").replace("%i", instance)
    words = []
    for word in shlex.split(line):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:  # systemd: a bare $VAR word becomes the value's words, none if empty
            words += env.get(whole.group(1), "").split()
            continue
        word = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word)
        words.append(word)
    program = Path(words[0]).name
    module = {"btfs": "btfs", "btfs-tracker": "tracker.cli"}[program]
    return [sys.executable, "-m", module, *words[1:]]


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's, collecting what the service sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def received(self, state: str) -> bool:
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
        return any(state in m.splitlines() for m in self.messages)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("name", ["btfs@.service", "btfs-tracker.service"])
def test_units_verify(name: str) -> None:
    tool = require_tool("systemd-analyze", "systemd")
    unit = UNITS / name
    if not unit.exists():
        pytest.fail(f"{name} is missing from systemd/")
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in r.stderr.splitlines()
                if "Failed to" in line or "Unknown" in line or "bad-setting" in line]
    assert r.returncode == 0 and not problems, r.stderr


def test_mount_template_runs_as_systemd_would(
    tmp_path: Path, procs: Processes, mounts: Mounts
) -> None:
    require_fuse()
    torrent, root = make_torrent(tmp_path)
    cache = tmp_path / "cache"
    place_in_cache(root, cache)
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    conf = tmp_path / "movie.conf"
    conf.write_text(f"SOURCE={torrent}\nMOUNTPOINT={mnt}\nOPTIONS=keep,cache_dir={cache}\n")
    example = read_environment_file(UNITS / "btfs-mount.conf.example")
    assert set(example) == {"SOURCE", "MOUNTPOINT", "OPTIONS"}

    notify = NotifySocket(tmp_path / "notify")
    try:
        args = command_line(UNITS / "btfs@.service", read_environment_file(conf), "movie")
        proc = procs.start(args, env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
                           name="btfs@movie")
        wait_for(lambda: notify.received("READY=1") or proc.poll() is not None, HANG, "READY=1")
        assert notify.received("READY=1"), procs.output(proc)
        assert is_mounted(mnt)
        assert sha256(mnt / "Show" / "notes.txt") == sha256(root / "notes.txt")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HANG) == 0, procs.output(proc)
        assert notify.received("STOPPING=1")
        assert not is_mounted(mnt)
    finally:
        notify.close()


def test_tracker_unit_is_hardened() -> None:
    tool = require_tool("systemd-analyze", "systemd")
    r = subprocess.run([tool, "security", "--offline=true", "--no-pager",
                        str(UNITS / "btfs-tracker.service")],
                       capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert match, r.stdout + r.stderr
    assert float(match.group(1)) <= 2.0, r.stdout
    unit = (UNITS / "btfs-tracker.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit  # ports below 1024 still bind
    assert "DynamicUser=yes" in unit and "StateDirectory=btfs-tracker" in unit


def test_mount_template_is_hardened_as_far_as_a_fuse_mount_allows() -> None:
    """At most 5.0 (it was 9.6): a FUSE mount needs root's CAP_SYS_ADMIN, /dev/fuse and
    the host's mount namespace; docs/systemd.md gives the score and why."""
    tool = require_tool("systemd-analyze", "systemd")
    unit_path = UNITS / "btfs@.service"
    r = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit_path)],
                       capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert match, r.stdout + r.stderr
    score = float(match.group(1))
    assert score <= 5.0, r.stdout
    assert f"scores {score}" in (UNITS.parent / "docs" / "systemd.md").read_text()
    unit = unit_path.read_text()
    assert "CapabilityBoundingSet=CAP_SYS_ADMIN\n" in unit
    assert "DeviceAllow=/dev/fuse rw" in unit
    settings = {line.partition("=")[0] for line in unit.splitlines() if "=" in line
                and not line.startswith("#")}
    # Each of these gives the service its own mount namespace: the mount would not be
    # seen outside it.
    assert not settings & {"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                           "PrivateMounts", "ProtectKernelTunables", "ProtectKernelModules",
                           "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
                           "ReadOnlyPaths", "DynamicUser"}


def test_example_config_is_current() -> None:
    text = (UNITS / "btfs-mount.conf.example").read_text()
    assert "come with the swarm engine" not in text and "magnet URI" in text


def test_install_units(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "btfs", "install-units", "--prefix", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    for name in ("btfs@.service", "btfs-tracker.service"):
        exec_start = unit_value(unit_dir / name, "ExecStart")
        program = shlex.split(exec_start)[0]
        assert Path(program).is_absolute() and os.access(program, os.X_OK), exec_start
    assert (tmp_path / "etc" / "btfs" / "example.conf.example").exists()
    assert (tmp_path / "etc" / "btfs" / "fstab.example").exists()
    default = tmp_path / "etc" / "default" / "btfs-tracker"
    assert read_environment_file(default)["HTTP"] == "0.0.0.0:6969"
    default.write_text("HTTP=127.0.0.1:1\n")
    subprocess.run([sys.executable, "-m", "btfs", "install-units", "--prefix", str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    assert default.read_text() == "HTTP=127.0.0.1:1\n", "an edited config was overwritten"


def test_tracker_unit_runs_as_systemd_would(tmp_path: Path, procs: Processes) -> None:
    """ExecStart of btfs-tracker.service: READY=1, serves, saves its swarms on SIGTERM."""
    import urllib.request
    from urllib.parse import quote_from_bytes

    from btfs.bencode import decode
    from tests.support.net import next_loopback_ipv4

    host = next_loopback_ipv4()
    env = read_environment_file(UNITS / "btfs-tracker.default")
    env.update(HTTP=f"{host}:0", UDP=f"{host}:0")
    state_dir = tmp_path / "state"
    (state_dir / "btfs-tracker").mkdir(parents=True)
    unit = UNITS / "btfs-tracker.service"
    info_hash = bytes(range(20))

    def announce(http: str, peer_id: bytes, port: int) -> dict[bytes, object]:
        url = (f"http://{http}/announce?info_hash={quote_from_bytes(info_hash)}"
               f"&peer_id={quote_from_bytes(peer_id)}&port={port}&uploaded=0&downloaded=0"
               f"&left=100&compact=1&event=started")
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = decode(response.read())
        assert isinstance(answer, dict) and b"failure reason" not in answer, answer
        return answer

    def start() -> tuple[subprocess.Popen[bytes], NotifySocket, str]:
        notify = NotifySocket(tmp_path / f"notify{len(procs.started)}")
        args = [a.replace("%S", str(state_dir)) for a in command_line(unit, env)]
        proc = procs.start(args, env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
                           name="btfs-tracker")
        wait_for(lambda: notify.received("READY=1") or proc.poll() is not None, HANG, "READY=1")
        assert notify.received("READY=1"), procs.output(proc)
        match = re.search(r"^http (\S+)$", procs.output(proc), re.M)
        assert match, procs.output(proc)
        return proc, notify, match.group(1)

    proc, notify, http = start()
    try:
        first = announce(http, b"-AA0001-aaaaaaaaaaaa", 6881)
        assert first[b"peers"] == b""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HANG) == 0, procs.output(proc)
        assert notify.received("STOPPING=1")
        assert (state_dir / "btfs-tracker" / "swarms.json").exists()
    finally:
        notify.close()
    proc, notify, http = start()
    try:
        second = announce(http, b"-BB0001-bbbbbbbbbbbb", 6882)
        # the restarted tracker still knows the first peer: host and port 6881
        peers = second[b"peers"]
        assert isinstance(peers, bytes) and len(peers) == 6
        assert peers[-2:] == (6881).to_bytes(2, "big")
    finally:
        notify.close()
        procs.stop(proc)


def test_mount_t_fuse_btfs_from_a_libtorrent_seeder(
    tmp_path: Path, procs: Processes, mounts: Mounts
) -> None:
    """`mount -t fuse.btfs -o peer=HOST:PORT movie.torrent /mnt/x`, then `umount`."""
    require_fuse()
    mount_cmd = require_tool("mount", "mount")
    require_libtorrent()
    from tests.support.net import free_port, next_loopback_ipv4
    from tests.support.procs import pid_alive
    from tests.support.swarm import share, start_lt_seed

    shared = share(tmp_path, 3_000_000, piece_length=65536, name="movie")
    host = next_loopback_ipv4()
    port = free_port(host)
    start_lt_seed(procs, shared, host, port)
    env = btfs_on_path(tmp_path)
    mnt = mounts.add(tmp_path / "mnt")
    mnt.mkdir()
    r = subprocess.run([mount_cmd, "-t", "fuse.btfs", "-o", f"peer={host}:{port}",
                        str(shared.torrent), str(mnt)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    pid = mounts.remember_pid(mnt)
    assert pid is not None
    assert sha256(mnt / "movie.bin") == sha256(shared.data)
    subprocess.run(["umount", str(mnt)], check=True, timeout=30)
    wait_for(lambda: not pid_alive(pid), HANG, "the btfs process to exit after umount")
    assert not is_mounted(mnt)
