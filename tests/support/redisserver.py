"""Debian's `redis-server` as a test process on a free loopback port, stoppable and
restartable on the same port (for the tracker's Redis store tests)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import env
from tests.support.net import free_port
from tests.support.procs import Processes, wait_for


@dataclass
class RedisServer:
    procs: Processes
    workdir: Path
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        binary = env.require_tool("redis-server", "redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.procs.start(
            [binary, "--bind", self.host, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no",
             "--unixsocket", str(self.workdir / "redis.sock"), "--unixsocketperm", "700",
             *self.extra],
            name="redis-server")
        wait_for(self.ping, 20, f"redis-server on {self.host}:{self.port}", interval=0.05)

    def ping(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.procs.output(self.proc)
        try:
            return self.command(b"PING") in (b"+PONG\r\n", b"-NOAUTH Authentication required.\r\n")
        except OSError:
            return False

    def command(self, *args: bytes) -> bytes:
        """One command, its raw reply (small replies only)."""
        payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                    for a in args)
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(payload)
            return s.recv(65536)

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None


def start_redis(procs: Processes, workdir: Path, host: str, *extra: str) -> RedisServer:
    server = RedisServer(procs, workdir, host, free_port(host), extra=extra)
    server.start()
    return server
