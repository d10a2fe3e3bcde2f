"""`--workers N`: N tracker processes sharing the listening ports, and their supervisor.

Each worker is a fork of the supervisor made before any event loop runs; it binds its own
HTTP and UDP sockets with SO_REUSEPORT, so the kernel spreads connections and datagrams
over the workers, and one worker's death leaves the others' sockets serving. The
supervisor does no serving: it starts the workers, waits until each says it is ready (a
byte on a pipe), then reports readiness once; it forwards SIGHUP, stops every worker on
SIGTERM/SIGINT, and starts a worker again (after a back-off) when one dies.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable

log = logging.getLogger("tracker.workers")

SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
RESTART_FIRST = 1.0
RESTART_MAX = 30.0

Worker = Callable[[int, int], int]  # (index, ready fd) -> exit status


class Supervisor:
    """Forks and watches the workers; see the module docstring."""

    def __init__(self, count: int, worker: Worker) -> None:
        self.count = count
        self.worker = worker
        self.children: dict[int, int] = {}  # pid -> worker index
        self.restart_at: dict[int, float] = {}  # worker index -> when to start it again
        self.backoff: dict[int, float] = {}
        self.failed = False

    def _spawn(self, index: int, ready_w: int, ready_r: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(ready_r)
                os.environ.pop("NOTIFY_SOCKET", None)  # only the supervisor speaks to systemd
                for sig in SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                status = self.worker(index, ready_w)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(status)
        self.children[pid] = index

    def run(self, on_ready: Callable[[], None], on_stopping: Callable[[], None]) -> int:
        """Start the workers; serve until a stop signal; the exit status."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        ready_r, ready_w = os.pipe()
        os.set_blocking(ready_r, False)
        for index in range(self.count):
            self._spawn(index, ready_w, ready_r)
        ready = 0
        deadline = time.monotonic() + START_TIMEOUT
        while ready < self.count:
            if time.monotonic() > deadline:
                log.error("workers not ready after %g s", START_TIMEOUT)
                return self._stop(1)
            readable, _, _ = select.select([ready_r], [], [], 0.2)
            if readable:
                ready += len(os.read(ready_r, 64))
            info = signal.sigtimedwait(SIGNALS, 0)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                on_stopping()
                return self._stop(0)
            if self._reap(starting=True):
                log.error("a worker exited while starting")
                return self._stop(1)
        on_ready()
        log.info("%d workers ready", self.count)
        while True:
            timeout = 1.0
            if self.restart_at:
                timeout = max(0.0, min(self.restart_at.values()) - time.monotonic())
            info = signal.sigtimedwait(SIGNALS, timeout)
            try:
                os.read(ready_r, 64)  # restarted workers saying they are ready
            except BlockingIOError:
                pass
            if info is not None:
                if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    log.info("stopping on %s", signal.Signals(info.si_signo).name)
                    on_stopping()
                    return self._stop(0)
                if info.si_signo == signal.SIGHUP:
                    for pid in self.children:
                        _kill(pid, signal.SIGHUP)
                self._reap(starting=False)
            now = time.monotonic()
            for index, when in list(self.restart_at.items()):
                if when <= now:
                    del self.restart_at[index]
                    log.info("starting worker %d again", index)
                    self._spawn(index, ready_w, ready_r)

    def _reap(self, starting: bool) -> bool:
        """Collect dead workers; schedule their restart. True if any died."""
        died = False
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            index = self.children.pop(pid, None)
            if index is None:
                continue
            died = True
            if starting:
                self.failed = True
                continue
            delay = self.backoff.get(index, RESTART_FIRST)
            self.backoff[index] = min(2 * delay, RESTART_MAX)
            log.warning("worker %d (pid %d) %s; starting it again in %g s", index, pid,
                        _describe(status), delay)
            self.restart_at[index] = time.monotonic() + delay
        return died

    def _stop(self, status: int) -> int:
        for pid in self.children:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.children and time.monotonic() < deadline:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            # A worker still starting may not handle SIGTERM yet: killed by it is a stop.
            exit_code = os.waitstatus_to_exitcode(code)
            if self.children.pop(pid, None) is not None and exit_code not in (
                    0, -signal.SIGTERM):
                log.error("worker pid %d %s while stopping", pid, _describe(code))
                status = status or 1
        for pid in self.children:
            log.error("worker pid %d did not stop in %g s: killed", pid, STOP_TIMEOUT)
            _kill(pid, signal.SIGKILL)
            status = 1
        return status


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
