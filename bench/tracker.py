"""The tracker: announces per second, CPU per announce and memory per peer, ours (with
its in-memory store, and with Redis behind one or two worker processes) against
opentracker.

All trackers run in the same invocation on loopback, one torrent, under the same load
generators; every run starts a fresh tracker (and a fresh redis-server for the Redis
ones) and warms it up first. Trackers: `ours` (in memory), `redis` (ours with
--store redis://..., one process), `redis2` (the same with --workers 2), `opentracker`.

- http: `wrk -t1 -c50 -d10s` with a Lua script that sends /announce requests over
  keep-alive connections, each from the next peer of a pool of distinct peers
  (percent-encoded 20-byte info_hash and peer_id, a distinct port per peer: opentracker
  tells peers apart by address and port, ours by peer_id), numwant=50, compact.
  opentracker closes the connection after every answer, so wrk reconnects for it.
- http-client: the same, with info_hash and peer_id encoded as libtorrent and
  Transmission do: unreserved bytes (A-Z a-z 0-9 - . _ ~) left as they are, the others
  as %XX (the peer_id prefix `-BB0001-` stays readable, as a real client's does).
- http-close: the http-client requests with libtorrent's headers (User-Agent,
  Accept-Encoding, `Connection: close`): a connection per announce, as libtorrent and
  aria2 announce (wrk reconnects after each answer, as it does against opentracker).
- udp: a generator in this file (a child process) keeps one request in flight on each of
  50 sockets and does BEP 15 connect + announce for each peer, as distinct clients do.
- udp-keepid: the same, but each socket connects once and reuses its connection ID.
  The generator is Python: its CPU use is printed, and near 100% of a core the figure is
  the generator's limit, not the tracker's.
- memory: a fresh tracker, VmRSS before and after N distinct peers announce once over UDP
  (sources spread over 127.0.1.x so that opentracker, too, sees distinct peers).

    .venv/bin/python bench/tracker.py [--duration 10] [--rounds 3] [--connections 50]
        [--pool 50000] [--peers 100000]
        [--only http,http-client,http-close,udp,udp-keepid,memory]
        [--trackers ours,redis,redis2,opentracker] [--profile FILE]

For the Redis runs the tracker's CPU is its processes' together (the supervisor and the
workers), Redis's own CPU per announce is printed apart, and so are the Redis commands
and bytes (in and out) per announce, read from INFO before and after the run.

Needs wrk, opentracker and redis-server (Debian packages). The machine has 2 cores that
the generator and the tracker share with whatever else runs: runs are interleaved and the best of
`--rounds` counts, and each tracker's CPU time per announce is printed, which noise
disturbs less than the rate. `--profile FILE` runs ours under cProfile (FILE.http.prof,
FILE.udp.prof, ...) and prints the top functions.

One file of about 650 lines on purpose: the UDP load generator is this same script run
as a child process, so a benchmark run needs nothing but this file, wrk and opentracker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INFO_HASH = hashlib.sha1(b"btfs bench/tracker.py").digest()
HOST = "127.0.0.1"
MAX_POOL = 64000  # peers are told apart by port (opentracker): 1024 + index
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROTOCOL_ID = 0x41727101980
_CONNECT = struct.Struct("!QI4s")
_ANNOUNCE = struct.Struct("!8sI4s20s20sqqqI4sIiH")
_REPLY_HEAD = struct.Struct("!I4s")
_ANNOUNCE_REPLY = struct.Struct("!I4sIII")


# ------------------------------------------------------------------ helpers


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pct(data: bytes) -> str:
    return "".join(f"%{b:02X}" for b in data)


def peer_id(index: int) -> bytes:
    return b"-BB0001-" + index.to_bytes(12, "big")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its children (workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


class Redis:
    """A fresh redis-server for one run, and its figures."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.dir = work / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", HOST, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=(self.dir / "log").open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.command("PING") == "PONG":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def command(self, *args: str) -> str:
        """One command; a simple or bulk string reply as text."""
        payload = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(payload)
            data = b""
            while b"\r\n" not in data:
                data += s.recv(1 << 16)
            head, _, rest = data.partition(b"\r\n")
            if head[:1] != b"$":
                return head[1:].decode()
            size = int(head[1:])
            while len(rest) < size + 2:
                rest += s.recv(1 << 16)
        return rest[:size].decode()

    def figures(self) -> dict[str, float]:
        """Commands run, bytes in and out, CPU seconds, so far."""
        info = self.command("INFO", "all")
        values: dict[str, float] = {}
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key in ("total_commands_processed", "total_net_input_bytes",
                       "total_net_output_bytes", "used_cpu_sys", "used_cpu_user"):
                values[key] = float(value)
        values["total_commands_processed"] -= 1  # this INFO
        return values

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def http_announce(port: int, index: int, numwant: int = 0) -> bytes:
    """One announce over HTTP (a fresh connection); the raw bencoded body."""
    query = (
        f"info_hash={pct(INFO_HASH)}&peer_id={pct(peer_id(index))}&port={1024 + index}"
        f"&uploaded=0&downloaded=0&left=1000&compact=1&numwant={numwant}"
    )
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(f"GET /announce?{query} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).partition(b"\r\n\r\n")[2]


def swarm_size(body: bytes) -> int:
    """complete + incomplete of a bencoded announce answer (-1 on a failure)."""
    complete = re.search(rb"8:completei(\d+)e", body)
    incomplete = re.search(rb"10:incompletei(\d+)e", body)
    if complete is None or incomplete is None:
        return -1
    return int(complete.group(1)) + int(incomplete.group(1))


# ------------------------------------------------------------------ trackers


@dataclass
class Tracker:
    name: str
    proc: subprocess.Popen[bytes]
    http_port: int | None = None
    udp_port: int | None = None
    log: Path | None = None
    redis: Redis | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.redis is not None:
            self.redis.stop()


def start_ours(work: Path, http: bool, udp: bool, profile: Path | None = None,
               source: Path = REPO, workers: int = 0) -> Tracker:
    """Ours; `workers` 0: the in-memory store, else Redis (a fresh redis-server) with that
    many worker processes."""
    redis = Redis(work) if workers else None
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [
        "-m", "tracker",
        "--http", f"{HOST}:0" if http else "off",
        "--udp", f"{HOST}:0" if udp else "off",
        "--max-peers-per-torrent", "10000000", "--max-peers", "10000000",
        "--log-level", "warning",
    ]
    if redis is not None:
        cmd += ["--store", f"redis://{HOST}:{redis.port}/0", "--workers", str(workers)]
    if "max-connections-per-ip" in (source / "tracker" / "cli.py").read_text():
        # The load generators are one address with 50 connections, which the per-address
        # limit (32 by default) is there to refuse; real clients are many addresses.
        cmd += ["--max-connections-per-ip", "1000"]
    log = work / "ours.log"
    proc = subprocess.Popen(cmd, cwd=source, stdout=subprocess.PIPE,
                            stderr=log.open("ab"))
    name = "ours" if not workers else ("redis" if workers == 1 else f"redis{workers}")
    tracker = Tracker(name, proc, log=log, redis=redis)
    assert proc.stdout is not None
    for _ in range(int(http) + int(udp)):
        line = proc.stdout.readline().decode().split()
        if not line:
            raise RuntimeError(f"ours did not start: {log.read_text()[-2000:]}")
        port = int(line[1].rpartition(":")[2])
        if line[0] == "http":
            tracker.http_port = port
        else:
            tracker.udp_port = port
    return tracker


def start_opentracker(work: Path) -> Tracker:
    http_port = free_port()
    udp_port = free_port(socket.SOCK_DGRAM)
    whitelist = work / "whitelist"  # read as nobody after it drops privileges
    whitelist.write_text(INFO_HASH.hex() + "\n")
    whitelist.chmod(0o644)
    log = work / "opentracker.log"
    proc = subprocess.Popen(
        ["opentracker", "-i", HOST, "-p", str(http_port), "-P", str(udp_port),
         "-w", str(whitelist)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    tracker = Tracker("opentracker", proc, http_port, udp_port, log)
    deadline = time.monotonic() + 15
    while True:  # it answers before the whitelist is loaded: wait for a real answer
        try:
            if swarm_size(http_announce(http_port, MAX_POOL + 1)) >= 0:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            tracker.stop()
            raise RuntimeError(f"opentracker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    stop_probe(tracker)
    return tracker


def stop_probe(tracker: Tracker) -> None:
    """Take the probe peer out again (an announce with event=stopped)."""
    assert tracker.http_port is not None
    index = MAX_POOL + 1
    query = (
        f"info_hash={pct(INFO_HASH)}&peer_id={pct(peer_id(index))}&port={1024 + index}"
        f"&uploaded=0&downloaded=0&left=1000&event=stopped"
    )
    with socket.create_connection((HOST, tracker.http_port), timeout=5) as s:
        s.sendall(f"GET /announce?{query} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
        while s.recv(65536):
            pass


# ------------------------------------------------------------------ HTTP: wrk

WRK_LUA = r"""
-- Announces for one torrent, each from the next peer of a pool of distinct peers.
local info_hash = "@INFO_HASH@"
local pool = @POOL@
local nthreads = @THREADS@
local hex = {}
local unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
for b = 0, 255 do
  local c = string.char(b)
  if @CLIENT@ and string.find(unreserved, c, 1, true) then hex[b] = c
  else hex[b] = string.format("%%%02X", b) end
end
local prefix = "@PREFIX@"  -- "-BB0001-" and 8 zero bytes
local counter = 0
local threads_made = 0

function setup(thread)
  thread:set("tid", threads_made)
  threads_made = threads_made + 1
end

function request()
  local i = (counter * nthreads + (tid or 0)) % pool
  counter = counter + 1
  local pid = prefix .. hex[math.floor(i / 16777216) % 256] .. hex[math.floor(i / 65536) % 256]
              .. hex[math.floor(i / 256) % 256] .. hex[i % 256]
  return wrk.format("GET", "/announce?info_hash=" .. info_hash .. "&peer_id=" .. pid
                    .. "&port=" .. (1024 + i)
                    .. "&uploaded=0&downloaded=0&left=1000&compact=1&numwant=50")
end
"""


@dataclass
class Result:
    tracker: str
    protocol: str
    rate: float  # announces/s
    cpu: float = 0.0  # tracker CPU, fraction of one core
    gen_cpu: float | None = None  # load generator CPU, fraction of one core
    swarm: int = 0
    notes: list[str] = field(default_factory=list)
    redis: dict[str, float] | None = None  # per announce: Redis CPU us, commands, bytes


def client_quote(data: bytes) -> str:
    """%-encoding as libtorrent and Transmission do it: unreserved bytes as they are."""
    unreserved = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    return "".join(chr(b) if b in unreserved else f"%{b:02X}" for b in data)


def redis_per_announce(before: dict[str, float], after: dict[str, float], wall: float,
                       announces: float) -> dict[str, float]:
    if announces <= 0:
        return {}
    cpu = (after["used_cpu_sys"] + after["used_cpu_user"] - before["used_cpu_sys"]
           - before["used_cpu_user"])
    return {
        "cpu_us": cpu / announces * 1e6,
        "cpu_share": cpu / wall,
        "commands": (after["total_commands_processed"] - before["total_commands_processed"])
        / announces,
        "bytes_in": (after["total_net_input_bytes"] - before["total_net_input_bytes"])
        / announces,
        "bytes_out": (after["total_net_output_bytes"] - before["total_net_output_bytes"])
        / announces,
    }


def run_wrk(tracker: Tracker, args: argparse.Namespace, work: Path,
            client: bool = False, close: bool = False) -> Result:
    assert tracker.http_port is not None
    script = work / "announce.lua"
    quote = client_quote if client else pct
    script.write_text(
        WRK_LUA.replace("@INFO_HASH@", quote(INFO_HASH))
        .replace("@PREFIX@", quote(peer_id(0)[:16]))
        .replace("@CLIENT@", "true" if client else "false")
        .replace("@POOL@", str(args.pool))
        .replace("@THREADS@", str(args.threads))
    )
    url = f"http://{HOST}:{tracker.http_port}/"
    base = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-s", str(script)]
    for header in CLOSE_HEADERS if close else ():
        base += ["-H", header]
    if args.warmup > 0:
        subprocess.run([*base, "-d", f"{args.warmup:g}s", url], check=True, capture_output=True)
    cpu0 = cpu_seconds(tracker.pid)
    redis0 = tracker.redis.figures() if tracker.redis else None
    gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run([*base, "-d", f"{args.duration:g}s", url], check=True,
                         capture_output=True, text=True).stdout
    wall = time.monotonic() - t0
    redis1 = tracker.redis.figures() if tracker.redis else None
    gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_seconds(tracker.pid) - cpu0) / wall
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    result = Result(tracker.name, "http", float(match.group(1)), cpu,
                    (gen1.ru_utime + gen1.ru_stime - gen0.ru_utime - gen0.ru_stime) / wall)
    found = re.search(r"Non-2xx or 3xx responses: \d+", out)
    if found:
        result.notes.append(found.group(0))
    requests = re.search(r"(\d+) requests in", out)
    if redis0 is not None and redis1 is not None and requests:
        result.redis = redis_per_announce(redis0, redis1, wall, float(requests.group(1)))
    result.swarm = swarm_size(http_announce(tracker.http_port, MAX_POOL + 1)) - 1
    stop_probe(tracker)
    if args.verbose:
        print(out)
    return result


# ------------------------------------------------------------------ UDP generator


class _Flow:
    """One socket with one request in flight: connect, then announce, for each peer."""

    __slots__ = ("conn_id", "peers", "port", "sent", "sock", "source", "txid", "want")

    def __init__(self, sock: socket.socket, peers: Iterator[int]) -> None:
        self.sock = sock
        self.peers = peers
        self.conn_id = b""
        self.txid = b""
        self.want = 0  # the action whose reply we wait for
        self.port = 0  # peer index being announced
        self.sent = 0.0
        self.source = sock.getsockname()


def udpgen(host: str, port: int, duration: float, jobs: list[tuple[str, Iterator[int]]],
           reuse: bool) -> dict[str, Any]:
    """Drive BEP 15 connect + announce on one socket per job until `duration` passes or
    every job's peers are done. A job is (source ip, iterator of peer indexes)."""
    ep = select.epoll()
    flows: dict[int, _Flow] = {}
    counter = 0
    announces = connects = timeouts = errors = 0
    swarm = 0
    announce = _ANNOUNCE.pack
    connect = _CONNECT.pack
    monotonic = time.monotonic

    def send_connect(flow: _Flow) -> None:
        nonlocal counter
        counter += 1
        flow.txid = counter.to_bytes(4, "big")
        flow.want = 0
        flow.sent = monotonic()
        flow.sock.send(connect(PROTOCOL_ID, 0, flow.txid))

    def send_announce(flow: _Flow) -> None:
        nonlocal counter
        counter += 1
        flow.txid = counter.to_bytes(4, "big")
        flow.want = 1
        flow.sent = monotonic()
        i = flow.port
        flow.sock.send(announce(flow.conn_id, 1, flow.txid, INFO_HASH, peer_id(i),
                                0, 1000, 0, 0, b"\0\0\0\0", 0, 50, 1024 + i % MAX_POOL))

    def next_peer(flow: _Flow) -> bool:
        nxt = next(flow.peers, None)
        if nxt is None:
            ep.unregister(flow.sock.fileno())
            del flows[flow.sock.fileno()]
            return False
        flow.port = nxt
        if reuse and flow.conn_id:
            send_announce(flow)
        else:
            send_connect(flow)
        return True

    for source, peers in jobs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.connect((host, port))
        sock.setblocking(False)
        flows[sock.fileno()] = _Flow(sock, peers)
        ep.register(sock.fileno(), select.EPOLLIN)
    for each in list(flows.values()):
        next_peer(each)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    deadline = t0 + duration
    next_check = t0 + 0.5
    poll = ep.poll
    unpack_head = _REPLY_HEAD.unpack_from
    while flows:
        for fd, _ in poll(0.1):
            flow = flows.get(fd)
            if flow is None:
                continue
            try:
                data = flow.sock.recv(2048)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:
                errors += 1
                continue
            action, txid = unpack_head(data)
            if txid != flow.txid:
                continue  # a late answer to a resent request
            if action == 0 and flow.want == 0:
                connects += 1
                flow.conn_id = data[8:16]
                send_announce(flow)
            elif action == 1 and flow.want == 1:
                announces += 1
                _, _, _, leechers, seeders = _ANNOUNCE_REPLY.unpack_from(data)
                if leechers + seeders > swarm:
                    swarm = leechers + seeders
                next_peer(flow)
            else:
                errors += 1
                flow.conn_id = b""
                send_connect(flow)  # and then the announce again
        now = time.monotonic()
        if now >= next_check:
            if now >= deadline:
                break
            next_check = now + 0.5
            for each in list(flows.values()):
                if each.sent < now - 2:
                    timeouts += 1
                    each.conn_id = b""
                    send_connect(each)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "announces": announces, "connects": connects, "timeouts": timeouts, "errors": errors,
        "wall": wall, "swarm": swarm,
        "cpu": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall,
    }


def _cycle(start: int, step: int, pool: int) -> Iterator[int]:
    i = start
    while True:
        yield i % pool
        i += step


def udpgen_main(argv: list[str]) -> int:
    """The child process: `tracker.py udpgen PORT DURATION SOCKETS POOL REUSE|EACH` (a
    timed run over a pool) or `... fill PORT SOCKETS FIRST COUNT` (each peer once)."""
    mode = argv[0]
    if mode == "run":
        port, duration, nsock, pool = int(argv[1]), float(argv[2]), int(argv[3]), int(argv[4])
        jobs = [(HOST, _cycle(k, nsock, pool)) for k in range(nsock)]
        out = udpgen(HOST, port, duration, jobs, reuse=argv[5] == "reuse")
    else:
        port, nsock, first, count = int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
        # Peer i comes from 127.0.1.(1 + i // MAX_POOL), port field 1024 + i % MAX_POOL.
        jobs = []
        for group in range(first // MAX_POOL, (first + count - 1) // MAX_POOL + 1):
            lo = max(first, group * MAX_POOL)
            hi = min(first + count, (group + 1) * MAX_POOL)
            source = f"127.0.1.{1 + group}"
            jobs += [(source, iter(range(lo + k, hi, nsock))) for k in range(nsock)]
        out = udpgen(HOST, port, 3600, jobs, reuse=True)
    print(json.dumps(out))
    return 0


def run_udpgen(tracker: Tracker, *argv: object) -> dict[str, Any]:
    assert tracker.udp_port is not None
    cmd = [sys.executable, __file__, "udpgen", str(argv[0]), str(tracker.udp_port),
           *map(str, argv[1:])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


def run_udp(tracker: Tracker, args: argparse.Namespace, reuse: bool) -> Result:
    mode = "reuse" if reuse else "each"
    if args.warmup > 0:
        run_udpgen(tracker, "run", args.warmup, args.connections, args.pool, mode)
    cpu0 = cpu_seconds(tracker.pid)
    redis0 = tracker.redis.figures() if tracker.redis else None
    t0 = time.monotonic()
    out = run_udpgen(tracker, "run", args.duration, args.connections, args.pool, mode)
    wall = time.monotonic() - t0
    cpu = (cpu_seconds(tracker.pid) - cpu0) / wall
    result = Result(tracker.name, "udp", out["announces"] / out["wall"], cpu, out["cpu"],
                    out["swarm"])
    if tracker.redis is not None and redis0 is not None:
        result.redis = redis_per_announce(redis0, tracker.redis.figures(), wall,
                                          float(out["announces"]))
    if out["timeouts"] or out["errors"]:
        result.notes.append(f"timeouts {out['timeouts']}, errors {out['errors']}")
    return result


def run_memory(tracker: Tracker, args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(RSS before, RSS after, peers in the swarm, peers announced)."""
    warm = 1000
    run_udpgen(tracker, "fill", args.connections, 0, warm)
    time.sleep(0.5)
    before = rss_bytes(tracker.pid)
    out = run_udpgen(tracker, "fill", args.connections, warm, args.peers)
    time.sleep(0.5)
    after = rss_bytes(tracker.pid)
    return before, after, int(out["swarm"]), args.peers


# ------------------------------------------------------------------ main


def print_profile(path: Path, label: str) -> None:
    import pstats

    print(f"\n--- cProfile of ours, {label} (top 25 by own time) ---")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(25)


PROTOCOLS = ("http", "http-client", "http-close", "udp", "udp-keepid")
# libtorrent's announce headers but Host (wrk sends that): a connection per announce.
CLOSE_HEADERS = ("User-Agent: libtorrent/2.0.9", "Accept-Encoding: gzip", "Connection: close")
OURS = {"ours": 0, "redis": 1, "redis2": 2}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["udpgen"]:
        return udpgen_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each tracker and protocol, interleaved; the best "
                        "counts (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=50,
                        help="wrk connections / UDP sockets (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--pool", type=int, default=50000,
                        help=f"distinct peers cycled through, at most {MAX_POOL}")
    parser.add_argument("--peers", type=int, default=100_000,
                        help="peers announced for the memory figure")
    parser.add_argument("--only", default="http,http-client,http-close,udp,udp-keepid,memory",
                        help="udp: connect + announce per peer; udp-keepid: one connect "
                        "per socket, its connection ID reused (default: %(default)s)")
    parser.add_argument("--trackers", default="ours,redis,redis2,opentracker")
    parser.add_argument("--profile", type=Path,
                        help="run ours under cProfile, writing FILE.http.prof etc.")
    parser.add_argument("--ours-from", type=Path, default=REPO, metavar="DIR",
                        help="run the `tracker` package found in DIR (e.g. an older "
                        "checkout, to compare; default: this one)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.pool <= MAX_POOL:
        parser.error(f"--pool must be 1..{MAX_POOL}")
    only = args.only.split(",")
    names = args.trackers.split(",")
    if shutil.which("wrk") is None and any(p.startswith("http") for p in only):
        parser.error("wrk is missing: apt-get install wrk")
    if shutil.which("opentracker") is None and "opentracker" in names:
        parser.error("opentracker is missing: apt-get install opentracker")
    if shutil.which("redis-server") is None and {"redis", "redis2"} & set(names):
        parser.error("redis-server is missing: apt-get install redis-server")

    work = Path(tempfile.mkdtemp(prefix="btfs-bench-tracker-"))
    work.chmod(0o755)  # opentracker reads the whitelist as nobody
    results: list[Result] = []
    memory: dict[str, tuple[int, int, int, int]] = {}
    print(f"one torrent, {args.pool} distinct peers cycled, {args.connections} connections, "
          f"{args.duration:g} s per run after {args.warmup:g} s warm-up, best of "
          f"{args.rounds}; {os.cpu_count()} CPUs shared by generator and tracker",
          flush=True)
    try:
        for round_ in range(args.rounds):
            for proto in (p for p in PROTOCOLS if p in only):
                for name in names:
                    prof = (args.profile.with_suffix(f".{proto}.prof")
                            if args.profile and name == "ours" else None)
                    http = proto.startswith("http")
                    t = (start_ours(work, http, not http, prof, args.ours_from, OURS[name])
                         if name in OURS else start_opentracker(work))
                    try:
                        if http:
                            r = run_wrk(t, args, work, client=proto != "http",
                                        close=proto == "http-close")
                        else:
                            r = run_udp(t, args, reuse=proto == "udp-keepid")
                    finally:
                        t.stop()
                    r.protocol = proto
                    results.append(r)
                    print(f"  round {round_ + 1}: {name:<12} {proto:<10} "
                          f"{r.rate:>9,.0f}/s", flush=True)
        if "memory" in only:
            for name in (n for n in names if n in ("ours", "opentracker")):
                t = (start_ours(work, False, True, source=args.ours_from) if name == "ours"
                     else start_opentracker(work))
                try:
                    memory[name] = run_memory(t, args)
                finally:
                    t.stop()
                print(f"  memory: {name} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(results, memory)
    if args.profile:
        for proto in PROTOCOLS:
            path = args.profile.with_suffix(f".{proto}.prof")
            if path.exists():
                print_profile(path, proto)
    return 0


def report(results: list[Result], memory: dict[str, tuple[int, int, int, int]]) -> None:
    runs: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        runs.setdefault((r.tracker, r.protocol), []).append(r)
    best = {key: max(rs, key=lambda r: r.rate) for key, rs in runs.items()}
    order = ["ours", "redis", "redis2", "opentracker"]
    if best:
        print()
        print(f"{'tracker':<12} {'protocol':<11} {'announces/s':>11} {'vs ot':>6} "
              f"{'CPU':>5} {'CPU us/ann':>10} {'gen CPU':>8} {'swarm':>6}  all runs")
        for (name, proto), r in sorted(best.items(), key=lambda kv: (
                PROTOCOLS.index(kv[0][1]),
                order.index(kv[0][0]) if kv[0][0] in order else 9)):
            other = best.get(("opentracker", proto))
            vs = f"{r.rate / other.rate:.2f}x" if name != "opentracker" and other else ""
            us = f"{r.cpu / r.rate * 1e6:.0f}" if r.rate else "-"
            gen = f"{r.gen_cpu:.0%}" if r.gen_cpu is not None else "-"
            every = " ".join(f"{x.rate / 1000:.1f}k" for x in runs[(name, proto)])
            print(f"{name:<12} {proto:<11} {r.rate:>11,.0f} {vs:>6} {r.cpu:>5.0%} "
                  f"{us:>10} {gen:>8} {r.swarm:>6}  {every}")
            if r.redis:
                x = r.redis
                print(f"{'':<25}redis-server: {x['cpu_share']:.0%} CPU, {x['cpu_us']:.0f} us, "
                      f"{x['commands']:.2f} commands, {x['bytes_in']:.0f} bytes in and "
                      f"{x['bytes_out']:.0f} out per announce")
            for note in r.notes:
                print(f"{'':<25}{note}")
        print("(CPU: the tracker's processes', of one core; gen CPU: the load generator's; "
              "swarm: peers the tracker holds after the run)")
    if memory:
        print()
        print(f"{'tracker':<12} {'RSS before':>12} {'RSS after':>12} {'peers':>8} "
              f"{'bytes/peer':>11}")
        for name, (before, after, swarm, peers) in memory.items():
            print(f"{name:<12} {before / 2**20:>10.1f}Mi {after / 2**20:>10.1f}Mi "
                  f"{swarm:>8} {(after - before) / peers:>11.0f}")
    print()
    print("goals:")

    def per(r: Result) -> float:
        return r.cpu / r.rate * 1e6 if r.rate else float("inf")

    for proto, limit in (("http", 2.0), ("http-client", 2.0), ("http-close", 2.0),
                         ("udp", 3.0), ("udp-keepid", 3.0)):
        ours, ot = best.get(("ours", proto)), best.get(("opentracker", proto))
        if ours and ot and ours.cpu and ot.cpu:
            ratio = per(ours) / per(ot)
            print(f"  CPU per announce, ours <= {limit:g}x opentracker's over {proto}: "
                  f"{per(ours):.0f} us vs {per(ot):.0f} us, {ratio:.2f}x, "
                  f"{'met' if ratio <= limit else 'NOT met'}")
    if memory.get("ours"):
        before, after, _, peers = memory["ours"]
        size = (after - before) / peers
        print(f"  memory per tracked peer <= 64 bytes: {size:.0f}, "
              f"{'met' if size <= 64 else 'NOT met'}")
    http = best.get(("ours", "http"))
    udp = best.get(("ours", "udp"))
    if http and udp:
        print(f"  (UDP ours / ours over HTTP: {udp.rate / http.rate:.2f}x by rate, "
              f"{per(http) / per(udp):.2f}x by CPU per announce)")
    for r in best.values():
        if r.gen_cpu is not None and r.gen_cpu > 0.85:
            tool = "wrk" if r.protocol.startswith("http") else "the UDP generator"
            print(f"  note: {tool} used {r.gen_cpu:.0%} of a core against {r.tracker} "
                  f"({r.protocol}): that figure is (also) the generator's limit")
    if best.get(("opentracker", "http")):
        print("  note: opentracker closes every HTTP connection after one answer, so wrk "
              "reconnects for each request (its 'read' socket errors)")


if __name__ == "__main__":
    raise SystemExit(main())
