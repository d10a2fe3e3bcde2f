"""Child processes and FUSE mounts that are always cleaned up, even when a test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class Processes:
    """Starts child processes in their own process group, their output kept in log files."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> subprocess.Popen[bytes]:
        label = name or Path(str(args[0])).name
        log = self.log_dir / f"{len(self.started):02d}-{label}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.started.append((proc, log))
        return proc

    def start_btfs(self, *args: str | os.PathLike[str], **kw: object) -> subprocess.Popen[bytes]:
        """Run this checkout's `btfs` command with the test's Python."""
        return self.start([sys.executable, "-m", "btfs", *args], name="btfs", **kw)  # type: ignore[arg-type]

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        for p, log in self.started:
            if p is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """SIGTERM the process group, SIGKILL what is left after `timeout` seconds."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        # Children of a finished leader may still run in its group.
        _signal_group(proc, signal.SIGKILL)
        return proc.returncode

    def cleanup(self) -> None:
        for proc, _ in reversed(self.started):
            self.stop(proc)

    def logs(self) -> str:
        parts = []
        for p, log in self.started:
            tail = log.read_text(errors="replace")[-4000:]
            parts.append(f"----- {log.name} (exit {p.returncode}) -----\n{tail}")
        return "\n".join(parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """From the mount table alone: resolving the mount point itself would ask its
    filesystem, which hangs when the btfs behind it does."""
    absolute = os.path.abspath(path)
    target = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == target:
                return True
    return False


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace(
        "\\134", "\\"
    )


def unmount(path: str | os.PathLike[str]) -> None:
    """`fusermount3 -u`, and lazily (`-z`) if the mount is busy or the plain unmount hangs
    on a btfs that no longer answers."""
    if not is_mounted(path):
        return
    try:
        result = subprocess.run(
            ["fusermount3", "-u", str(path)], capture_output=True, timeout=30, check=False
        )
        if result.returncode == 0 or not is_mounted(path):
            return
    except subprocess.TimeoutExpired:
        pass
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30,
                   check=False)


# A deadline that only catches a hang, never a measure of speed: what a test waits for
# happens in well under a second, but CI machines are shared and slow (and run coverage).
HANG = 60.0


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate()` until true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def mount_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid a btfs mount reports in its root's `user.btfs.pid`, if it answers."""
    try:
        return int(os.getxattr(path, "user.btfs.pid"))
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Mounts:
    """Mount points a test created; each is unmounted at teardown whatever happened,
    and a background btfs process behind it is killed if it does not exit by itself."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.pids: set[int] = set()

    def add(self, path: Path) -> Path:
        self.paths.append(path)
        return path

    def remember_pid(self, path: Path) -> int | None:
        """Call while the mount is healthy: a hung one would block the query itself."""
        pid = mount_pid(path)
        if pid is not None:
            self.pids.add(pid)
        return pid

    def cleanup(self) -> None:
        """Unmount, wait for each btfs to exit, kill what did not, and detach any mount
        a killed btfs left behind, so no test leaves a dead mount for the next."""
        try:
            for path in reversed(self.paths):
                unmount(path)
        finally:
            deadline = time.monotonic() + 5
            for pid in self.pids:
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if pid_alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for path in self.paths:
                if is_mounted(path):
                    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True,
                                   timeout=30, check=False)
