"""`btfs-tracker` as a running process: HTTP and UDP announces, scrape, stats, metrics,
malformed input, signals (SIGHUP whitelist reload, SIGTERM saving the state), IPv6.

Every client socket binds its own loopback address, so each test peer has a distinct IP
as real peers would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest

from btfs.bencode import decode
from tests.support import env
from tests.support.net import next_loopback_ipv4
from tests.support.procs import Processes, wait_for

pytestmark = pytest.mark.timeout(90)

HASH = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
OTHER = bytes.fromhex("fedcba9876543210fedcba9876543210fedcba98")
PROTOCOL_ID = 0x41727101980

Addr = tuple[str, int]


# ------------------------------------------------------------------ the process


def start_tracker(
    procs: Processes, host: str, *args: str | Path, env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], Addr, Addr]:
    """Start the tracker on port 0 of `host`; return it and its bound HTTP and UDP addresses.

    `prefix`: a command that runs the tracker (e.g. `prlimit` with its options).
    """
    bracketed = f"[{host}]" if ":" in host else host
    proc = procs.start(
        [*prefix, sys.executable, "-m", "tracker", "--http", f"{bracketed}:0",
         "--udp", f"{bracketed}:0", "--access-log", *map(str, args)],
        env=env, name="btfs-tracker",
    )
    found: dict[str, Addr] = {}

    def ready() -> bool:
        for line in procs.output(proc).splitlines():
            kind, _, address = line.partition(" ")
            if kind in ("http", "udp") and address:
                ip, _, port = address.rpartition(":")
                found[kind] = (ip.strip("[]"), int(port))
        return len(found) == 2 or proc.poll() is not None

    wait_for(ready, 20, "the tracker's bound addresses")
    assert len(found) == 2, procs.output(proc)
    assert found["http"][0] == host and found["udp"][0] == host
    return proc, found["http"], found["udp"]


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# ------------------------------------------------------------------ a tiny HTTP client


def http_request(
    server: Addr, raw: bytes, source: str | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """Send one raw request with `Connection: close`; return the status and body."""
    with socket.socket(family_of(server[0]), socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(server)
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(server: Addr, target: str, source: str | None = None) -> tuple[int, bytes]:
    return http_request(
        server, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), source
    )


def announce_query(info_hash: bytes = HASH, peer_id: bytes = b"-lt0000-aaaaaaaaaaaa", *,
                   port: int = 6881, left: int = 1000, event: str = "", compact: int = 1,
                   **extra: object) -> str:
    """A query like libtorrent's: percent-encoded binary, key, numwant, compact."""
    params = {"info_hash": quote_from_bytes(info_hash), "peer_id": quote_from_bytes(peer_id),
              "port": port, "uploaded": 0, "downloaded": 0, "left": left, "corrupt": 0,
              "key": "7f3a9b21", "numwant": 200, "compact": compact, "no_peer_id": 1,
              "supportcrypto": 1, "redundant": 0, **extra}
    if event:
        params["event"] = event
    return "&".join(f"{k}={v}" for k, v in params.items())


def http_announce(server: Addr, source: str | None = None, **kw: object) -> dict[bytes, object]:
    status, body = get(server, "/announce?" + announce_query(**kw), source)  # type: ignore[arg-type]
    assert status == 200
    d = decode(body)
    assert isinstance(d, dict), body
    return d


def compact_peers(blob: bytes, size: int = 6) -> set[Addr]:
    family = socket.AF_INET if size == 6 else socket.AF_INET6
    return {(socket.inet_ntop(family, blob[i:i + size - 2]),
             int.from_bytes(blob[i + size - 2:i + size], "big"))
            for i in range(0, len(blob), size)}


# ------------------------------------------------------------------ a tiny UDP client


class UdpClient:
    def __init__(self, server: Addr, source: str | None = None) -> None:
        self.server = server
        self.sock = socket.socket(family_of(server[0]), socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        if source:
            self.sock.bind((source, 0))
        self.tx = 0

    def close(self) -> None:
        self.sock.close()

    def exchange(self, packet: bytes) -> bytes:
        self.sock.sendto(packet, self.server)
        return self.sock.recv(65536)

    def next_tx(self) -> bytes:
        self.tx += 1
        return self.tx.to_bytes(4, "big")

    def connect(self) -> bytes:
        tx = self.next_tx()
        reply = self.exchange(struct.pack("!QI4s", PROTOCOL_ID, 0, tx))
        assert reply[:8] == b"\0\0\0\0" + tx and len(reply) == 16
        return reply[8:]

    def announce(self, peer_id: bytes, *, info_hash: bytes = HASH, port: int = 6881,
                 left: int = 1000, event: int = 0, cid: bytes | None = None) -> bytes:
        cid = cid if cid is not None else self.connect()
        tx = self.next_tx()
        reply = self.exchange(struct.pack("!8sI4s20s20sqqqI4sIiH", cid, 1, tx, info_hash,
                                          peer_id, 0, left, 0, event, b"\0" * 4, 1, -1, port))
        assert reply[4:8] == tx
        return reply

    def scrape(self, *hashes: bytes) -> list[tuple[int, int, int]]:
        cid = self.connect()
        tx = self.next_tx()
        reply = self.exchange(struct.pack("!8sI4s", cid, 2, tx) + b"".join(hashes))
        assert reply[:8] == b"\0\0\0\x02" + tx, reply
        return [struct.unpack_from("!III", reply, 8 + 12 * i) for i in range(len(hashes))]


def udp_action(reply: bytes) -> int:
    return int.from_bytes(reply[:4], "big")


# ------------------------------------------------------------------ tests


def test_http_and_udp_share_swarms(loopback: str, procs: Processes) -> None:
    _, http, udp = start_tracker(procs, loopback)
    a, b, c = next_loopback_ipv4(), next_loopback_ipv4(), next_loopback_ipv4()

    first = http_announce(http, a, peer_id=b"A" * 20, port=7001, event="started")
    assert first[b"peers"] == b"" and first[b"incomplete"] == 1
    assert first[b"interval"] == 1800 and first[b"min interval"] == 60

    client = UdpClient(udp, b)
    try:
        reply = client.announce(b"B" * 20, port=7002, left=0, event=2)
        assert udp_action(reply) == 1
        interval, leechers, seeders = struct.unpack_from("!III", reply, 8)
        assert (interval, leechers, seeders) == (1800, 1, 1)
        assert compact_peers(reply[20:]) == {(a, 7001)}

        d = http_announce(http, c, peer_id=b"C" * 20, port=7003)
        assert compact_peers(d[b"peers"]) == {(a, 7001), (b, 7002)}  # type: ignore[arg-type]
        d = http_announce(http, c, peer_id=b"C" * 20, port=7003, compact=0, no_peer_id=0)
        assert sorted((p[b"ip"], p[b"port"], p[b"peer id"])  # type: ignore[union-attr, attr-defined]
                      for p in d[b"peers"]) == [  # type: ignore[union-attr, attr-defined]
            (a.encode(), 7001, b"A" * 20), (b.encode(), 7002, b"B" * 20)]

        # A seed is not sent seeds: B (seed) sees only leechers A and C.
        reply = client.announce(b"B" * 20, port=7002, left=0)
        assert compact_peers(reply[20:]) == {(a, 7001), (c, 7003)}

        # A completes; `stopped` removes C at once.
        http_announce(http, a, peer_id=b"A" * 20, port=7001, left=0, event="completed")
        d = http_announce(http, c, peer_id=b"C" * 20, port=7003, event="stopped")
        assert d[b"peers"] == b""
        reply = client.announce(b"B" * 20, port=7002, left=0)
        assert compact_peers(reply[20:]) == set()
        assert struct.unpack_from("!II", reply, 12) == (0, 2)

        # Scrape over both protocols.
        status, body = get(http, f"/scrape?info_hash={quote_from_bytes(HASH)}"
                                 f"&info_hash={quote_from_bytes(OTHER)}")
        assert status == 200
        assert decode(body) == {b"files": {
            HASH: {b"complete": 2, b"downloaded": 1, b"incomplete": 0},
            OTHER: {b"complete": 0, b"downloaded": 0, b"incomplete": 0}}}
        assert client.scrape(HASH, OTHER) == [(2, 1, 0), (0, 0, 0)]
    finally:
        client.close()

    status, body = get(http, "/stats?format=json")
    stats = json.loads(body)
    assert status == 200
    assert (stats["torrents"], stats["seeders"], stats["leechers"]) == (1, 2, 0)
    assert stats["announces"] == {"http": 5, "udp": 3}
    status, body = get(http, "/stats")
    assert status == 200 and b"<table>" in body
    status, body = get(http, "/metrics")
    text = body.decode()
    assert status == 200
    for line in ("btfs_tracker_torrents 1", "btfs_tracker_seeders 2", "btfs_tracker_leechers 0",
                 'btfs_tracker_announces_total{protocol="http"} 5',
                 'btfs_tracker_announces_total{protocol="udp"} 3',
                 'btfs_tracker_errors_total{kind="bad_request"} 0'):
        assert line + "\n" in text, text
    assert get(http, "/nothing-here")[0] == 404


def test_keep_alive(loopback: str, procs: Processes) -> None:
    _, http, _ = start_tracker(procs, loopback)
    with socket.create_connection(http, timeout=10) as s:
        for n in range(3):
            s.sendall(f"GET /announce?{announce_query(peer_id=bytes([65 + n]) * 20)} HTTP/1.1"
                      "\r\nHost: t\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            header, _, body = head.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in header.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += s.recv(4096)
            assert decode(body)[b"incomplete"] == n + 1  # type: ignore[index]


def test_malformed_requests_are_answered_and_serving_goes_on(
    loopback: str, procs: Processes
) -> None:
    proc, http, udp = start_tracker(procs, loopback)

    def failure(target: str) -> bytes:
        status, body = get(http, target)
        assert status == 200
        d = decode(body)
        assert isinstance(d, dict) and set(d) == {b"failure reason"}, d
        reason = d[b"failure reason"]
        assert isinstance(reason, bytes)
        return reason

    assert b"info_hash" in failure("/announce?" + announce_query(info_hash=b"short"))
    assert b"peer_id" in failure("/announce?" + announce_query(peer_id=b"x"))
    assert b"port" in failure("/announce?" + announce_query(port=0))
    assert b"port" in failure("/announce?" + announce_query(port=70000))
    assert b"negative" in failure("/announce?" + announce_query(left=-5))
    assert b"event" in failure("/announce?" + announce_query(event="exploded"))
    assert b"info_hash" in failure("/announce?peer_id=x")
    assert b"full scrape" in failure("/scrape")
    # A huge numwant is clamped, not refused.
    assert b"peers" in http_announce(http, numwant=10**12)

    # Oversized headers: 431 and the connection is closed.
    status, _ = http_request(
        http, b"GET /announce HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert status == 431
    status, _ = http_request(http, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400
    # A client that connects and says nothing does not block others.
    idle = socket.create_connection(http, timeout=10)
    try:
        assert b"peers" in http_announce(http)
    finally:
        idle.close()

    # Garbage datagrams: too short is dropped, the rest get an error packet.
    client = UdpClient(udp)
    try:
        client.sock.sendto(b"x", udp)
        client.sock.sendto(b"\0" * 15, udp)
        reply = client.exchange(b"\xff" * 16)
        assert udp_action(reply) == 3 and b"unknown action" in reply[8:]
        reply = client.exchange(struct.pack("!QI4s", 12345, 0, b"txid"))
        assert udp_action(reply) == 3 and reply[4:8] == b"txid"
        reply = client.announce(b"U" * 20, cid=b"\0" * 8)
        assert udp_action(reply) == 3 and b"connection id" in reply[8:]
        reply = client.exchange(client.connect() + b"\0\0\0\x01txid" + b"short")
        assert udp_action(reply) == 3
        assert udp_action(client.announce(b"U" * 20)) == 1
    finally:
        client.close()
    assert proc.poll() is None
    stats = json.loads(get(http, "/stats?format=json")[1])
    assert stats["errors"]["bad_request"] >= 7
    assert stats["errors"]["udp_connection_id"] == 1
    assert stats["errors"]["http_protocol"] == 2


def test_header_block_over_8_kib_is_refused_however_it_arrives(
    loopback: str, procs: Processes
) -> None:
    """1,000 small headers (10.9 KB) sent at once were accepted; docs say 8 KiB."""
    _, http, _ = start_tracker(procs, loopback)
    target = "/announce?" + announce_query()
    many = "".join(f"X-{n}: v\r\n" for n in range(1000))
    request = f"GET {target} HTTP/1.1\r\nHost: t\r\n{many}\r\n".encode()
    assert len(request) > 10_000
    assert http_request(http, request)[0] == 431
    fitting = f"GET {target} HTTP/1.1\r\nHost: t\r\n{many[:7000]}\r\n\r\n".encode()
    assert http_request(http, fitting)[0] == 200


def open_connections(server: Addr, source: str, count: int) -> list[socket.socket]:
    """`count` connections from `source` that send nothing."""
    conns = []
    for _ in range(count):
        s = socket.socket(family_of(server[0]), socket.SOCK_STREAM)
        conns.append(s)
        s.bind((source, 0))
        s.connect(server)
    return conns


def still_open(conns: list[socket.socket]) -> list[int]:
    """The indexes of the connections the tracker has not closed."""
    alive = []
    for n, s in enumerate(conns):
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                alive.append(n)  # it said something: not closed yet
        except BlockingIOError:
            alive.append(n)
        except OSError:
            pass
    return alive


def test_idle_connections_from_one_address_cannot_starve_others(
    loopback: str, procs: Processes
) -> None:
    """The probe: one client holding about 1,100 idle connections made 15 of 16 requests
    from another fail with 503. Now one address keeps at most --max-connections-per-ip
    (32 by default), its longest waiting closed first, and others are served."""
    _, http, _ = start_tracker(procs, loopback)
    hog = open_connections(http, next_loopback_ipv4(), 1100)
    try:
        wait_for(lambda: len(still_open(hog)) <= 32, 30, "the hog's connections to be closed")
        assert still_open(hog) == list(range(1100 - 32, 1100))
        other = next_loopback_ipv4()
        statuses = [get(http, "/announce?" + announce_query(peer_id=bytes([65 + n]) * 20),
                        other)[0] for n in range(16)]
        assert statuses == [200] * 16
    finally:
        for s in hog:
            s.close()


def test_a_full_tracker_closes_the_longest_waiting_connection_first(
    loopback: str, procs: Processes
) -> None:
    _, http, _ = start_tracker(procs, loopback, "--max-connections", "20",
                               "--max-connections-per-ip", "20")
    hog = open_connections(http, next_loopback_ipv4(), 20)
    newcomer: list[socket.socket] = []
    try:
        time.sleep(0.5)
        assert still_open(hog) == list(range(20))
        # An announce that closes its connection (libtorrent's) is answered as it arrives
        # and holds no place: a full tracker serves it and keeps every connection.
        assert b"peers" in http_announce(http, next_loopback_ipv4())
        time.sleep(0.5)
        assert still_open(hog) == list(range(20))
        # A connection that stays needs a place: the longest waiting one goes.
        newcomer = open_connections(http, next_loopback_ipv4(), 1)
        wait_for(lambda: still_open(hog) == list(range(1, 20)), 10, "the oldest to go")
        assert still_open(newcomer) == [0]
    finally:
        for s in hog + newcomer:
            s.close()


def test_out_of_file_descriptors_one_log_line_and_serving_goes_on(
    loopback: str, procs: Processes
) -> None:
    """At EMFILE the listener logged a traceback every 0.1 s (218 of them). Now: one line,
    idle connections closed to make room, back-off when there are none."""
    proc, http, _ = start_tracker(procs, loopback, "--max-connections-per-ip", "1000",
                                  prefix=("prlimit", "--nofile=40"))
    hog = open_connections(http, next_loopback_ipv4(), 100)
    try:
        wait_for(lambda: len(still_open(hog)) < 40, 30, "idle connections to be closed")
        assert still_open(hog)[-1] == 99  # the newest are kept
        other = next_loopback_ipv4()
        for n in range(5):
            assert b"peers" in http_announce(http, other, peer_id=bytes([65 + n]) * 20)
    finally:
        for s in hog:
            s.close()
    assert proc.poll() is None
    log = procs.output(proc)
    assert "Traceback" not in log, log
    assert len([line for line in log.splitlines() if "cannot accept" in line]) == 1, log


def test_corrupt_state_file_is_kept_aside(
    loopback: str, procs: Processes, tmp_path: Path
) -> None:
    """A corrupt --state was overwritten by an empty state at the first save."""
    state = tmp_path / "swarms.json"
    state.write_bytes(b'{"format": "btfs-tracker-state", "version": 1, "torr')
    proc, http, _ = start_tracker(procs, loopback, "--state", state)
    aside = tmp_path / "swarms.json.corrupt"
    assert aside.read_bytes().endswith(b'"torr')
    assert f"moved to {aside}" in procs.output(proc)
    http_announce(http, peer_id=b"A" * 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert HASH.hex() in json.loads(state.read_text())["torrents"]
    assert aside.read_bytes().endswith(b'"torr')


@pytest.mark.slow
def test_silent_connection_is_closed(loopback: str, procs: Processes) -> None:
    _, http, _ = start_tracker(procs, loopback)
    with socket.create_connection(http, timeout=30) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\n")  # and never finishes
        start = time.monotonic()
        assert s.recv(4096) == b""
        assert time.monotonic() - start > 5  # closed at the request time-out, not at once


def test_sighup_reloads_whitelist(loopback: str, procs: Processes, tmp_path: Path) -> None:
    whitelist = tmp_path / "whitelist"
    whitelist.write_text(f"# allowed torrents\n{HASH.hex()}  # the one\n\n")
    proc, http, udp = start_tracker(procs, loopback, "--whitelist", whitelist)
    assert b"peers" in http_announce(http, info_hash=HASH)
    d = http_announce(http, info_hash=OTHER)
    assert b"not registered" in d[b"failure reason"]  # type: ignore[operator]

    whitelist.write_text(f"{OTHER.hex().upper()}\n")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "whitelist reloaded" in procs.output(proc), 10, "the reload")
    assert b"peers" in http_announce(http, info_hash=OTHER)
    assert b"failure reason" in http_announce(http, info_hash=HASH)
    client = UdpClient(udp)
    try:
        assert udp_action(client.announce(b"U" * 20, info_hash=HASH)) == 3
        assert udp_action(client.announce(b"U" * 20, info_hash=OTHER)) == 1
    finally:
        client.close()

    # A broken file is reported and the old list stays.
    whitelist.write_text("not-a-hash\n")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "not reloaded" in procs.output(proc), 10, "the refusal")
    assert b"peers" in http_announce(http, info_hash=OTHER)
    assert proc.poll() is None


def test_sigterm_saves_state_and_restart_remembers(
    loopback: str, procs: Processes, tmp_path: Path
) -> None:
    state = tmp_path / "swarms.json"
    notify_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(10)
    try:
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        proc, http, _ = start_tracker(procs, loopback, "--state", state, env=env)
        assert notify.recv(4096) == b"READY=1"
        a = next_loopback_ipv4()
        http_announce(http, a, peer_id=b"A" * 20, port=7001, left=0, event="completed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, procs.output(proc)
        assert notify.recv(4096) == b"STOPPING=1"
    finally:
        notify.close()
    saved = json.loads(state.read_text())
    assert HASH.hex() in saved["torrents"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    proc, http, _ = start_tracker(procs, loopback, "--state", state)
    d = http_announce(http, peer_id=b"B" * 20, port=7002)
    assert compact_peers(d[b"peers"]) == {(a, 7001)}  # type: ignore[arg-type]
    assert (d[b"complete"], d[b"incomplete"]) == (1, 1)
    status, body = get(http, f"/scrape?info_hash={quote_from_bytes(HASH)}")
    assert status == 200
    assert decode(body)[b"files"][HASH][b"downloaded"] == 1  # type: ignore[index]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0


def test_ipv6_listener(procs: Processes) -> None:
    env.require_ipv6_loopback()
    _, http, udp = start_tracker(procs, "::1")
    d = http_announce(http, peer_id=b"A" * 20, port=7001)
    assert d[b"peers"] == b""
    d = http_announce(http, peer_id=b"B" * 20, port=7002)
    assert compact_peers(d[b"peers6"], 18) == {("::1", 7001)}  # type: ignore[arg-type]
    assert d[b"peers"] == b""
    client = UdpClient(udp)
    try:
        reply = client.announce(b"C" * 20, port=7003)
        assert udp_action(reply) == 1
        assert compact_peers(reply[20:], 18) == {("::1", 7001), ("::1", 7002)}
    finally:
        client.close()


def run_tracker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", *args], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "nonsense"], "bad address"),
        (["--http", "127.0.0.1:99999"], "bad port"),
        (["--http", "::1:80"], "brackets"),
        (["--http", "off", "--udp", ""], "nothing to serve"),
        (["--interval", "0"], "--interval"),
        (["--whitelist", "/nonexistent/list"], "cannot read whitelist"),
        (["--state", "/nonexistent/dir/state.json"], "no such directory"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], message: str) -> None:
    r = run_tracker("--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", *args)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("btfs-tracker: error:") and message in r.stderr, r.stderr


def test_unbindable_address(loopback: str) -> None:
    with socket.socket() as taken:
        taken.bind((loopback, 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_tracker("--http", f"{loopback}:{port}", "--udp", "off")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"btfs-tracker: error: cannot listen on http {loopback}:{port}: "
                                "Address already in use")


def test_help_and_console_script() -> None:
    r = run_tracker("--help")
    assert r.returncode == 0
    for option in ("--http", "--udp", "--interval", "--state", "--whitelist",
                   "--allow-full-scrape", "--trust-ip-param", "--trusted-proxy",
                   "--max-torrents", "--max-peers-per-torrent", "--max-connections",
                   "--max-connections-per-ip", "--access-log", "--log-level"):
        assert option in r.stdout
    script = Path(sys.executable).parent / "btfs-tracker"
    if script.exists():
        r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "--trusted-proxy" in r.stdout
