"""btfs-tracker on a Redis store (Debian's redis-server, started by each test on a free
loopback port): two trackers on one Redis are one tracker, real clients included;
`--workers`; Redis going away and coming back; UDP connection IDs across restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from btfs.create import CreateOptions, make_torrent
from btfs.metainfo import load_torrent
from tests.integration.test_tracker_service import (
    HASH,
    Addr,
    UdpClient,
    compact_peers,
    get,
    http_announce,
    start_tracker,
    udp_action,
)
from tests.support.clients import Tracker, start_aria2
from tests.support.env import require_libtorrent
from tests.support.net import free_port, next_loopback_ipv4
from tests.support.procs import Processes, wait_for
from tests.support.redisserver import RedisServer, start_redis
from tests.support.swarm import finish, share, start_lt_seed, tree_digest

pytestmark = pytest.mark.timeout(120)


def scrape(http: Addr, info_hash: bytes) -> tuple[int, int, int]:
    return Tracker(None, http[0], http[1], 0).scrape(info_hash)  # type: ignore[arg-type]


def counts(http: Addr, info_hash: bytes = HASH) -> tuple[int, int, int]:
    entry = scrape(http, info_hash)
    return entry["complete"], entry["downloaded"], entry["incomplete"]  # type: ignore[index]


@pytest.fixture
def redis(procs: Processes, tmp_path: Path) -> RedisServer:
    return start_redis(procs, tmp_path / "redis", next_loopback_ipv4())


# ------------------------------------------------------------------ two trackers, one Redis


@pytest.mark.interop
def test_two_trackers_on_one_redis_are_one_tracker(
        procs: Processes, tmp_path: Path, redis: RedisServer) -> None:
    """A libtorrent seeder announces to one tracker, an aria2 leecher to the other, and
    the leecher gets the whole torrent from the seeder the first tracker told it of."""
    require_libtorrent()
    _, http_a, _ = start_tracker(procs, next_loopback_ipv4(), "--store", redis.url)
    _, http_b, _ = start_tracker(procs, next_loopback_ipv4(), "--store", redis.url)
    shared = share(tmp_path, 1_500_000, piece_length=32768,
                   trackers=[f"http://{http_a[0]}:{http_a[1]}/announce"])
    to_b = tmp_path / "via-b.torrent"
    to_b.write_bytes(make_torrent(shared.data, CreateOptions(
        trackers=[[f"http://{http_b[0]}:{http_b[1]}/announce"]], piece_length=32768,
        creation_date=None)))
    info_hash = load_torrent(shared.torrent).info_hash
    assert load_torrent(to_b).info_hash == info_hash

    seed_host = next_loopback_ipv4()
    start_lt_seed(procs, shared, seed_host, free_port(seed_host))
    wait_for(lambda: counts(http_b, info_hash)[0] == 1, 30,
             "the seeder, announced to A, counted by B", interval=0.2)

    out = tmp_path / "aria2-out"
    leech_host = next_loopback_ipv4()
    leecher = start_aria2(procs, to_b, out, leech_host, free_port(leech_host), seed=False)
    finish(procs, leecher, timeout=60)
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    # Both trackers answer from the same swarm: the same counts, whichever is asked.
    # aria2 said `stopped` to B as it exited (it sends no `completed`): one seeder left.
    assert counts(http_a, info_hash) == counts(http_b, info_hash) == (1, 0, 0)


def test_expiry_and_stopped_hold_across_trackers(
        procs: Processes, redis: RedisServer) -> None:
    args = ("--store", redis.url, "--interval", "1", "--min-interval", "0")
    _, http_a, _ = start_tracker(procs, next_loopback_ipv4(), *args)
    _, http_b, udp_b = start_tracker(procs, next_loopback_ipv4(), *args)
    a, b, c = next_loopback_ipv4(), next_loopback_ipv4(), next_loopback_ipv4()
    http_announce(http_a, a, peer_id=b"A" * 20, port=7001, event="started")
    client = UdpClient(udp_b, b)
    try:
        reply = client.announce(b"B" * 20, port=7002, left=0)
        assert compact_peers(reply[20:]) == {(a, 7001)}
    finally:
        client.close()
    d = http_announce(http_b, c, peer_id=b"C" * 20, port=7003)
    assert compact_peers(d[b"peers"]) == {(a, 7001), (b, 7002)}  # type: ignore[arg-type]
    assert counts(http_a) == counts(http_b) == (1, 0, 2)
    # `stopped` at B removes the peer A recorded.
    http_announce(http_b, a, peer_id=b"A" * 20, port=7001, event="stopped")
    assert counts(http_a) == (1, 0, 1)
    # Two intervals (2 s) of silence: B and C are gone for both trackers.
    time.sleep(2.5)
    d = http_announce(http_a, a, peer_id=b"D" * 20, port=7004)
    assert d[b"peers"] == b"" and (d[b"complete"], d[b"incomplete"]) == (0, 1)
    assert counts(http_b) == (0, 0, 1)


# ------------------------------------------------------------------ faults


def test_redis_down_and_back(procs: Processes, redis: RedisServer) -> None:
    proc, http, udp = start_tracker(procs, next_loopback_ipv4(), "--store", redis.url)
    source = next_loopback_ipv4()
    assert http_announce(http, source, peer_id=b"A" * 20)[b"incomplete"] == 1
    client = UdpClient(udp, next_loopback_ipv4())
    try:
        cid = client.connect()
        redis.stop()
        status, body = get(http, "/announce?info_hash=" + "%00" * 20 + "&peer_id=" + "B" * 20
                           + "&port=7000&left=5", source)
        assert status == 200 and b"failure reason" in body and b"unavailable" in body, body
        reply = client.announce(b"U" * 20, cid=cid)
        assert udp_action(reply) == 3 and b"unavailable" in reply[8:], reply
        # Pages still answer: counters, the store marked down.
        metrics = get(http, "/metrics")[1].decode()
        assert "btfs_tracker_store_up 0\n" in metrics
        assert 'btfs_tracker_errors_total{kind="store_unavailable"} 2\n' in metrics
        assert get(http, "/stats")[0] == 200
        assert proc.poll() is None

        redis.start()  # same port, empty: the tracker reconnects by itself

        def serving() -> bool:
            d = http_announce(http, source, peer_id=b"C" * 20)
            return b"failure reason" not in d

        wait_for(serving, 20, "the tracker serving again after Redis came back", 0.2)
        reply = client.announce(b"U" * 20, cid=cid)  # the same connection ID
        assert udp_action(reply) == 1
        assert "btfs_tracker_store_up 1\n" in get(http, "/metrics")[1].decode()
    finally:
        client.close()
    log = procs.output(proc)
    assert "Traceback" not in log
    assert log.count("redis store: lost") == 1, log
    assert log.count("redis store: connected") == 2, log


def test_redis_unreachable_at_start(procs: Processes, tmp_path: Path) -> None:
    host = next_loopback_ipv4()
    port = free_port(host)
    proc, http, _ = start_tracker(procs, next_loopback_ipv4(),
                                  "--store", f"redis://{host}:{port}/0")
    d = http_announce(http, next_loopback_ipv4())
    assert b"unavailable" in d[b"failure reason"]  # type: ignore[operator]
    server = RedisServer(procs, tmp_path / "late-redis", host, port)
    server.start()
    wait_for(lambda: b"failure reason" not in http_announce(http, next_loopback_ipv4()), 20,
             "the tracker connected to the late Redis", 0.2)
    log = procs.output(proc)
    assert log.count("cannot reach") == 1 and "Traceback" not in log, log


def test_unix_socket_url(procs: Processes, redis: RedisServer) -> None:
    _, http, _ = start_tracker(procs, next_loopback_ipv4(), "--store",
                               f"unix://{redis.workdir / 'redis.sock'}?db=2")
    assert http_announce(http, next_loopback_ipv4())[b"incomplete"] == 1
    stats = json.loads(get(http, "/stats?format=json")[1])
    assert stats["store"] == {"kind": "redis", "up": True, "servers": 1, "servers_up": 1,
                              "connection_failures": 0}
    assert stats["torrents"] == 1 and stats["top"][0]["info_hash"] == HASH.hex()


def test_udp_connection_ids_survive_a_restart(procs: Processes, redis: RedisServer) -> None:
    host = next_loopback_ipv4()
    port = free_port(host)
    args = ("--http", f"{host}:0", "--udp", f"{host}:{port}", "--store", redis.url)
    proc = procs.start([sys.executable, "-m", "tracker", *args],
                       name="btfs-tracker")
    wait_for(lambda: "ready" in procs.output(proc), 20, "the tracker")
    client = UdpClient((host, port), next_loopback_ipv4())
    try:
        cid = client.connect()
        assert udp_action(client.announce(b"A" * 20, cid=cid)) == 1
        procs.stop(proc)
        again = procs.start([sys.executable, "-m", "tracker", *args],
                            name="btfs-tracker")
        wait_for(lambda: "ready" in procs.output(again), 20, "the tracker again")
        reply = client.announce(b"A" * 20, cid=cid)
        assert udp_action(reply) == 1, reply
    finally:
        client.close()


# ------------------------------------------------------------------ --workers


def worker_pids(supervisor: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == supervisor:
                found.append(int(entry.name))
    return found


def exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def handed_out_by_each_worker(http: Addr, expected: set[tuple[str, int]]) -> dict[int, int]:
    """For each worker (told apart by the pid /stats names, one connection each), how many
    of `expected` it hands out over repeated announces with numwant=200."""
    seen_by: dict[int, set[tuple[str, int]]] = {}
    for attempt in range(60):
        with socket.create_connection(http, timeout=10) as s:
            s.sendall(b"GET /stats?format=json HTTP/1.1\r\nHost: t\r\n\r\n")
            pid = json.loads(_read_response(s))["pid"]
            seen = seen_by.setdefault(pid, set())
            for _ in range(80):
                if seen >= expected:
                    break
                query = ("info_hash=" + "%11" * 20 + f"&peer_id=-QQ0000-{attempt:012d}"
                         "&port=1&left=1&numwant=200")
                s.sendall(f"GET /announce?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                body = _read_response(s)
                start = body.index(b"5:peers") + 7
                length, _, rest = body[start:].partition(b":")
                seen |= compact_peers(rest[:int(length)]) & expected
        if len(seen_by) >= 2 and all(s >= expected for s in seen_by.values()):
            break
    return {pid: len(s) for pid, s in seen_by.items()}


def announce_retrying(client: UdpClient, peer_id: bytes, **kw: object) -> bytes:
    """A UDP announce, sent again after a timeout as BEP 15 clients do (a datagram on
    its way to a worker that is killed is lost)."""
    for attempt in range(3):
        try:
            return client.announce(peer_id, **kw)  # type: ignore[arg-type]
        except TimeoutError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed in a body"
        body += chunk
    return body


def test_workers_share_the_swarms_and_outlive_one_another(
        procs: Processes, redis: RedisServer) -> None:
    host = next_loopback_ipv4()
    proc, http, udp = start_tracker(procs, host, "--store", redis.url, "--workers", "2")
    workers = worker_pids(proc.pid)
    assert len(workers) == 2
    source = next_loopback_ipv4()
    expected: set[tuple[str, int]] = set()
    ih = b"\x11" * 20
    # 500 peers over HTTP (a fresh connection each: spread over the workers) ...
    for n in range(500):
        status, body = get(http, "/announce?info_hash=" + "%11" * 20
                           + f"&peer_id=-HH0000-{n:012d}&port={10000 + n}&left=5&numwant=0",
                           source)
        assert status == 200 and b"failure" not in body, body
        expected.add((source, 10000 + n))
    # ... and 500 over UDP, from 50 sockets (so both workers take some).
    clients = [UdpClient(udp, source) for _ in range(50)]
    try:
        for n in range(500):
            client = clients[n % 50]
            reply = announce_retrying(client, b"-UU0000-%012d" % n, info_hash=ih,
                                      port=20000 + n)
            assert udp_action(reply) == 1, reply
            expected.add((source, 20000 + n))
        assert counts(http, ih)[2] >= 1000
        seen = handed_out_by_each_worker(http, expected)
        assert set(seen) == set(workers), (seen, workers)
        assert all(count == 1000 for count in seen.values()), seen

        # One worker killed: the other serves every new connection and datagram, and
        # connection IDs made by either stay good.
        cids = [c.connect() for c in clients]
        os.kill(workers[0], signal.SIGKILL)
        # Until it has exited, a connection the kernel already queued on its listener
        # is lost (reset); after that, the listener is out of the group.
        wait_for(lambda: exited(workers[0]), 10, "the killed worker to exit")
        for _ in range(40):
            status, body = get(http, "/scrape?info_hash=" + "%11" * 20)
            assert status == 200 and b"failure" not in body
        for client, cid in zip(clients, cids, strict=True):
            assert udp_action(announce_retrying(client, b"-UU0000-000000000001",
                                                info_hash=ih, port=20001, cid=cid)) == 1
    finally:
        for client in clients:
            client.close()
    # The supervisor starts a worker again in its place.
    wait_for(lambda: len(worker_pids(proc.pid)) == 2 and workers[0] not in
             worker_pids(proc.pid), 20, "a new worker")
    log = procs.output(proc)
    assert "was killed by SIGKILL" in log and "Traceback" not in log, log
    procs.stop(proc)
    assert proc.returncode == 0


def test_workers_need_a_shared_store() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracker", "--workers", "2"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--store" in lines[0], result.stderr


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "tracker", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("btfs-tracker ") and result.stdout.strip()[-1].isdigit()


# ------------------------------------------------------------------ systemd


def test_unit_with_redis_and_workers_runs_as_systemd_would(
        procs: Processes, redis: RedisServer, tmp_path: Path) -> None:
    """btfs-tracker.service's ExecStart with STORE= and WORKERS= from its environment
    file: READY=1 from the main process once the workers serve, STOPPING=1 and exit 0 on
    SIGTERM; the drop-in orders it after Debian's redis-server."""
    from tests.integration.test_systemd import (
        UNITS,
        NotifySocket,
        command_line,
        read_environment_file,
    )

    dropin = (UNITS / "btfs-tracker.service.d" / "redis.conf").read_text()
    assert "After=redis-server.service" in dropin and "Wants=redis-server.service" in dropin
    host = next_loopback_ipv4()
    env = read_environment_file(UNITS / "btfs-tracker.default")
    assert env["STORE"] == "memory" and env["WORKERS"] == "1"
    env.update(HTTP=f"{host}:0", UDP=f"{host}:0", STORE=redis.url, WORKERS="2")
    state_dir = tmp_path / "state"
    (state_dir / "btfs-tracker").mkdir(parents=True)
    args = [a.replace("%S", str(state_dir))
            for a in command_line(UNITS / "btfs-tracker.service", env)]
    notify = NotifySocket(tmp_path / "notify")
    try:
        proc = procs.start(args, env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
                           name="btfs-tracker")
        wait_for(lambda: notify.received("READY=1") or proc.poll() is not None, 30, "READY=1")
        assert notify.received("READY=1"), procs.output(proc)
        assert len(worker_pids(proc.pid)) == 2
        line = next(line for line in procs.output(proc).splitlines()
                    if line.startswith("http "))
        ip, _, port = line.split()[1].rpartition(":")
        assert http_announce((ip, int(port)), next_loopback_ipv4())[b"incomplete"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, procs.output(proc)
        assert notify.received("STOPPING=1")
        assert (state_dir / "btfs-tracker" / "udp-secret").exists()
    finally:
        notify.close()


# ------------------------------------------------------------------ more of the same rules


def test_password_ipv6_and_whitelist_reload_across_workers(
        procs: Processes, tmp_path: Path) -> None:
    """AUTH from the URL; IPv6 peers through Redis; SIGHUP to the supervisor reloads
    the whitelist in every worker."""
    from tests.support.env import require_ipv6_loopback

    require_ipv6_loopback()
    redis = start_redis(procs, tmp_path / "redis", next_loopback_ipv4(),
                        "--requirepass", "s3cret")
    whitelist = tmp_path / "whitelist"
    whitelist.write_text(HASH.hex() + "\n")
    proc, http, _ = start_tracker(
        procs, "::1", "--store", f"redis://:s3cret@{redis.host}:{redis.port}/0",
        "--workers", "2", "--whitelist", str(whitelist))
    d = http_announce(http, peer_id=b"A" * 20, port=7001)
    assert b"failure reason" not in d and d[b"incomplete"] == 1, d
    d = http_announce(http, peer_id=b"B" * 20, port=7002)
    assert compact_peers(d[b"peers6"], 18) == {("::1", 7001)}  # type: ignore[arg-type]
    other = bytes(range(20))
    assert b"not registered" in http_announce(http, info_hash=other)[b"failure reason"]  # type: ignore[operator]
    whitelist.write_text(HASH.hex() + "\n" + other.hex() + "\n")
    proc.send_signal(signal.SIGHUP)

    def both_reloaded() -> bool:
        return procs.output(proc).count("whitelist reloaded") == 2

    wait_for(both_reloaded, 20, "both workers reloading the whitelist")
    for n in range(10):  # fresh connections: both workers answer some of them
        d = http_announce(http, info_hash=other, peer_id=b"C%019d" % n)
        assert b"failure reason" not in d, d


def test_wrong_password_is_a_logged_store_error(procs: Processes, tmp_path: Path) -> None:
    redis = start_redis(procs, tmp_path / "redis", next_loopback_ipv4(),
                        "--requirepass", "s3cret")
    proc, http, _ = start_tracker(procs, next_loopback_ipv4(), "--store",
                                  f"redis://:wrong@{redis.host}:{redis.port}/0")
    d = http_announce(http, next_loopback_ipv4())
    assert b"unavailable" in d[b"failure reason"]  # type: ignore[operator]
    log = procs.output(proc)
    assert "AUTH refused" in log and "Traceback" not in log, log
    assert proc.poll() is None


@pytest.mark.parametrize("url", ["redis://", "http://h/0", "redis://h/x", "unix://relative"])
def test_bad_store_url_is_one_line(url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "tracker", "--store", url],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btfs-tracker: error: --store: bad Redis URL")


def test_per_torrent_cap_with_redis(procs: Processes, redis: RedisServer) -> None:
    _, http, _ = start_tracker(procs, next_loopback_ipv4(), "--store", redis.url,
                               "--max-peers-per-torrent", "2")
    for n in range(2):
        assert b"failure reason" not in http_announce(http, peer_id=b"%020d" % n)
    d = http_announce(http, peer_id=b"%020d" % 3)
    assert d[b"failure reason"] == b"swarm is full"
    assert b"failure reason" not in http_announce(http, peer_id=b"%020d" % 1)  # known peer
    metrics = get(http, "/metrics")[1].decode()
    assert 'btfs_tracker_errors_total{kind="swarm_full"} 1\n' in metrics


def test_script_flush_and_out_of_memory(procs: Processes, redis: RedisServer) -> None:
    """After SCRIPT FLUSH the scripts are sent again (EVAL); an error reply (Redis out of
    memory) is a store error, logged, and service resumes once Redis has room."""
    proc, http, _ = start_tracker(procs, next_loopback_ipv4(), "--store", redis.url)
    assert http_announce(http, peer_id=b"A" * 20)[b"incomplete"] == 1
    assert redis.command(b"SCRIPT", b"FLUSH") == b"+OK\r\n"
    assert http_announce(http, peer_id=b"B" * 20)[b"incomplete"] == 2
    assert redis.command(b"CONFIG", b"SET", b"maxmemory", b"1") == b"+OK\r\n"
    d = http_announce(http, peer_id=b"C" * 20)
    assert b"unavailable" in d[b"failure reason"], d  # type: ignore[operator]
    assert redis.command(b"CONFIG", b"SET", b"maxmemory", b"0") == b"+OK\r\n"
    assert http_announce(http, peer_id=b"C" * 20)[b"incomplete"] == 3
    log = procs.output(proc)
    assert "redis store: error reply: OOM" in log and "Traceback" not in log, log


def test_torrents_spread_over_several_redis_servers(procs: Processes, tmp_path: Path) -> None:
    """--store URL,URL: each torrent on one server (by info-hash), both trackers agree;
    with one server down, its torrents fail and the other's are served."""
    first = start_redis(procs, tmp_path / "r1", next_loopback_ipv4())
    second = start_redis(procs, tmp_path / "r2", next_loopback_ipv4())
    urls = f"{first.url},{second.url}"
    _, http_a, _ = start_tracker(procs, next_loopback_ipv4(), "--store", urls)
    _, http_b, _ = start_tracker(procs, next_loopback_ipv4(), "--store", urls)
    hashes = [bytes([n]) * 20 for n in range(1, 21)]
    for n, info_hash in enumerate(hashes):
        d = http_announce(http_a, info_hash=info_hash, peer_id=b"P%019d" % n)
        assert d[b"incomplete"] == 1, d
    for info_hash in hashes:
        assert counts(http_b, info_hash) == (0, 0, 1)
    sizes = [int(r.command(b"DBSIZE")[1:].strip()) for r in (first, second)]
    assert all(size > 0 for size in sizes), sizes  # both servers hold swarms
    stats = json.loads(get(http_b, "/stats?format=json")[1])
    assert stats["torrents"] == 20 and stats["peers"] == 20
    assert stats["store"]["servers"] == stats["store"]["servers_up"] == 2
    second.stop()
    failed = served = 0
    for n, info_hash in enumerate(hashes):
        d = http_announce(http_a, info_hash=info_hash, peer_id=b"Q%019d" % n)
        if b"failure reason" in d:
            failed += 1
        else:
            served += 1
            assert d[b"incomplete"] == 2
    assert failed and served and failed + served == 20, (failed, served)
    assert 'btfs_tracker_store_up 0\n' in get(http_a, "/metrics")[1].decode()


def test_workers_on_a_taken_port_is_one_line(redis: RedisServer) -> None:
    host = next_loopback_ipv4()
    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tracker", "--http", f"{host}:{port}", "--udp", "off",
             "--store", redis.url, "--workers", "2"],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen" in lines[0] and "Traceback" not in result.stderr
