"""The `btfs-tracker` command: HTTP and UDP listeners over one swarm store, in one
process, or in `--workers N` processes sharing the ports (`tracker.workers`).

Startup binds both listeners, prints one line per bound address (``http 127.0.0.1:6969``;
tests and scripts read the real port when 0 was asked), then tells systemd ``READY=1``.
SIGTERM/SIGINT: ``STOPPING=1``, save the state, exit 0. SIGHUP re-reads the whitelist.
Bad arguments, an unreadable whitelist or an address that cannot be bound print one line
on stderr and exit 2. The swarms live in this process (`--store memory`) or in Redis
(`--store redis://HOST:PORT/DB`), where several trackers share them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import trio

from btfs.sdnotify import notify
from btfs.trackerwire.compact import normalize_ip
from tracker import snapshot
from tracker.errors import StateError
from tracker.http import HttpConfig, HttpTracker, open_http_listener
from tracker.store.base import Store
from tracker.store.memory import MemoryStore, SwarmStore
from tracker.store.redisproto import RedisAddress, parse_redis_url
from tracker.store.redisstore import RedisStore
from tracker.udp import ConnectionIds, UdpTracker, open_udp_socket
from tracker.workers import Supervisor

log = logging.getLogger("tracker")

PROG = "btfs-tracker"
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
DEFAULT_ADDRESS = "0.0.0.0:6969"
EXPIRE_EVERY = 60.0


class UsageError(Exception):
    """A problem with the command line or a file it names: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


Address = tuple[str, int]


def parse_address(text: str) -> Address | None:
    """``HOST:PORT``, ``[V6]:PORT`` or a bare ``PORT``; ``off`` or empty: None (disabled)."""
    text = text.strip()
    if text.lower() in ("", "off", "no", "none"):
        return None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise UsageError(f"bad address {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    elif text.isdigit():
        host, port_text = "0.0.0.0", text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise UsageError(f"bad address {text!r}: expected HOST:PORT")
        if ":" in host:
            raise UsageError(f"bad address {text!r}: put an IPv6 address in brackets, [::]:PORT")
    if not port_text.isdigit() or int(port_text) > 0xFFFF:
        raise UsageError(f"bad port in {text!r}")
    return _resolve(host, text), int(port_text)


def _resolve(host: str, text: str) -> str:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return host
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"cannot resolve {host!r} in {text!r}: {exc.strerror or exc}") from None
    return str(infos[0][4][0])


def format_address(address: tuple[Any, ...]) -> str:
    host = str(address[0])
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def load_whitelist(path: Path) -> set[bytes]:
    """Info-hashes, 40 hex digits one per line; ``#`` starts a comment."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read whitelist {path}: {exc.strerror or exc}") from None
    hashes: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        word = line.partition("#")[0].strip()
        if not word:
            continue
        try:
            info_hash = bytes.fromhex(word)
        except ValueError:
            info_hash = b""
        if len(info_hash) != 20:
            raise UsageError(f"{path}:{number}: not a 40-digit hex info-hash: {word[:50]!r}")
        hashes.add(info_hash)
    return hashes


def version() -> str:
    try:
        return metadata.version("btfs")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parse_store(text: str) -> list[RedisAddress] | None:
    """``memory`` (None), or Redis URLs separated by commas (the torrents are spread over
    the servers by info-hash)."""
    if text.strip().lower() == "memory":
        return None
    try:
        return [parse_redis_url(url.strip()) for url in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"--store: {exc}") from None


def read_secret(path: Path) -> bytes:
    """The UDP connection-ID secret kept in `path`, made (32 random bytes, mode 0600) if
    the file does not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot create --secret-file {path}: {exc.strerror or exc}") from None
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --secret-file {path}: {exc.strerror or exc}") from None
    if len(secret) < 16:
        raise UsageError(f"--secret-file {path}: at least 16 bytes expected")
    return secret


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A BitTorrent tracker: HTTP (BEP 3/7/23/48) and UDP (BEP 15) in one "
        "process, or several sharing a Redis store. Endpoints: /announce, /scrape, "
        "/stats (?format=json), /metrics.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    parser.add_argument(
        "--http", metavar="ADDR:PORT", default=DEFAULT_ADDRESS,
        help="HTTP listen address; [::]:PORT for IPv6 (also takes IPv4), port 0 for any "
        "free port, 'off' or '' to disable (default: %(default)s)",
    )
    parser.add_argument(
        "--udp", metavar="ADDR:PORT", default=DEFAULT_ADDRESS,
        help="UDP listen address, same forms as --http (default: %(default)s)",
    )
    parser.add_argument(
        "--interval", metavar="SECONDS", type=int, default=1800,
        help="announce interval told to clients; peers silent for two intervals are "
        "dropped (default: %(default)s)",
    )
    parser.add_argument(
        "--min-interval", metavar="SECONDS", type=int, default=60,
        help="'min interval' told to clients (default: %(default)s)",
    )
    parser.add_argument(
        "--store", metavar="URL", default="memory",
        help="where the swarms live: 'memory' (this process), or Redis, "
        "redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH[?db=DB], which several "
        "trackers can share; several Redis URLs separated by commas spread the torrents "
        "over those servers by info-hash (default: %(default)s)",
    )
    parser.add_argument(
        "--store-timeout", metavar="SECONDS", type=float, default=2.0,
        help="Redis: a command unanswered this long drops the connection and the announces "
        "waiting on it get an error (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", metavar="N", type=int, default=1,
        help="serve with N processes sharing the HTTP and UDP ports (SO_REUSEPORT); needs "
        "--store redis (default: %(default)s)",
    )
    parser.add_argument(
        "--secret-file", metavar="FILE", type=Path,
        help="the secret behind UDP connection IDs, kept in FILE (made if missing) so that "
        "IDs stay good across restarts; with Redis and no file, the secret is shared "
        "through Redis",
    )
    parser.add_argument(
        "--state", metavar="FILE", type=Path,
        help="in-memory store: keep the swarms in FILE, loaded at start, saved periodically "
        "and at exit (not used with Redis, which keeps them itself)",
    )
    parser.add_argument(
        "--save-every", metavar="SECONDS", type=float, default=300.0,
        help="how often to save --state (default: %(default)s)",
    )
    parser.add_argument(
        "--whitelist", metavar="FILE", type=Path,
        help="only track these info-hashes (40 hex digits a line, # comments); "
        "SIGHUP re-reads the file",
    )
    parser.add_argument(
        "--allow-full-scrape", action="store_true",
        help="answer /scrape without info_hash with every torrent",
    )
    parser.add_argument(
        "--trust-ip-param", action="store_true",
        help="use the address a client names (HTTP ip=, UDP IP field) instead of its source",
    )
    parser.add_argument(
        "--trusted-proxy", metavar="ADDR", action="append", default=[],
        help="honour X-Forwarded-For on HTTP connections from this address; repeatable",
    )
    parser.add_argument(
        "--max-torrents", metavar="N", type=int, default=100_000,
        help="refuse new torrents past this many (default: %(default)s)",
    )
    parser.add_argument(
        "--max-peers-per-torrent", metavar="N", type=int, default=0,
        help="refuse new peers of a torrent past this many; 0: no cap, only --max-peers "
        "bounds the tracker (default: %(default)s)",
    )
    parser.add_argument(
        "--max-peers", metavar="N", type=int, default=2_000_000,
        help="in-memory store: peers in all at most; a new one past this evicts the "
        "stalest peers first (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections", metavar="N", type=int, default=1000,
        help="concurrent HTTP connections; when full, the one that has waited longest "
        "for a request is closed, and if none waits the new one is answered 503 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-ip", metavar="N", type=int, default=32,
        help="concurrent HTTP connections from one address (an IPv6 /64 counts as one; "
        "--trusted-proxy addresses are exempt); when reached, that address's connection "
        "that has waited longest is closed (default: %(default)s)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log one line per request (logger tracker.access)"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info",
        help="log messages on stderr from this level up (default: %(default)s)",
    )
    return parser


@dataclass
class Options:
    """The validated command line."""

    http: Address | None
    udp: Address | None
    args: argparse.Namespace
    redis: list[RedisAddress] | None = None


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        http = parse_address(args.http)
        udp = parse_address(args.udp)
        if http is None and udp is None:
            raise UsageError("both --http and --udp are off: nothing to serve")
        if args.max_peers_per_torrent < 0:
            raise UsageError("--max-peers-per-torrent cannot be negative")
        for name in ("interval", "max_torrents", "max_peers",
                     "max_connections", "max_connections_per_ip"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if args.min_interval < 0 or args.save_every <= 0:
            raise UsageError("--min-interval and --save-every cannot be negative")
        redis = parse_store(args.store)
        if args.workers < 1:
            raise UsageError("--workers must be at least 1")
        if args.workers > 1 and redis is None:
            raise UsageError("--workers needs swarms the workers share: add "
                             "--store redis://HOST:PORT/DB")
        if not 0 < args.store_timeout <= 60:
            raise UsageError("--store-timeout must be above 0 and at most 60 seconds")
        proxies = []
        for proxy in args.trusted_proxy:
            resolved = parse_address(f"[{proxy}]:0" if ":" in proxy else f"{proxy}:0")
            assert resolved is not None
            proxies.append(normalize_ip(resolved[0]))
        args.trusted_proxy = frozenset(proxies)
        if args.state is not None and not args.state.parent.is_dir():
            raise UsageError(f"--state: no such directory {args.state.parent}")
    except UsageError as exc:
        parser.error(str(exc))
    return Options(http, udp, args, redis)


# ------------------------------------------------------------------ state file


def read_state(path: Path, store_kwargs: dict[str, Any], now: float) -> SwarmStore:
    """The saved swarms, or an empty store (with a warning) if the file is unusable.

    A file that is not a state this version wrote is renamed with a `.corrupt` suffix
    first, so that the next save does not destroy what may still be worth a look.
    """
    try:
        data = json.loads(path.read_bytes())
        store = snapshot.load(data, now, **store_kwargs)
    except FileNotFoundError:
        return SwarmStore(**store_kwargs)
    except OSError as exc:
        log.warning("ignoring state file %s: %s", path, exc)
        return SwarmStore(**store_kwargs)
    except (ValueError, StateError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError as move_error:
            log.error("state file %s is unusable (%s) and cannot be moved aside: %s; the "
                      "next save replaces it", path, exc, move_error)
        else:
            log.warning("state file %s is unusable (%s): moved to %s, starting empty",
                        path, exc, aside)
        return SwarmStore(**store_kwargs)
    log.info("loaded %d torrents, %d peers from %s", store.torrents, store.peers, path)
    return store


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically: temp file in the same folder, fsync, rename, fsync folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(data, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------ the service


class Service:
    """The running tracker: store, listeners, housekeeping and signals.

    `ready` is called once the listeners are up: by default it prints the bound
    addresses and tells systemd; a worker process tells its supervisor instead.
    """

    def __init__(self, options: Options, store: Store,
                 http_sock: socket.socket | None, udp_sock: socket.socket | None,
                 connection_ids: ConnectionIds | None = None,
                 ready: Callable[[], None] | None = None) -> None:
        self.options = options
        self.args = options.args
        self.store = store
        self.swarms = store.swarms if isinstance(store, MemoryStore) else None
        self.http_sock = http_sock
        self.udp_sock = udp_sock
        self.connection_ids = connection_ids or ConnectionIds()
        self.ready = ready or self._announce_ready
        self.save_failed = False

    def _announce_ready(self) -> None:
        for name, sock in (("http", self.http_sock), ("udp", self.udp_sock)):
            if sock is not None:
                print(name, format_address(sock.getsockname()), flush=True)
        notify("READY=1")

    async def run(self) -> None:
        args = self.args
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                if isinstance(self.store, RedisStore):
                    await nursery.start(self.store.run)
                if self.http_sock is not None:
                    http = HttpTracker(self.store, HttpConfig(
                        trust_ip_param=args.trust_ip_param,
                        trusted_proxies=args.trusted_proxy,
                        allow_full_scrape=args.allow_full_scrape,
                        max_connections=args.max_connections,
                        max_connections_per_ip=args.max_connections_per_ip,
                        access_log=args.access_log,
                    ))
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.http_sock))
                    await nursery.start(http.serve, [listener])
                if self.udp_sock is not None:
                    udp = UdpTracker(self.store, self.connection_ids,
                                     trust_ip_param=args.trust_ip_param,
                                     access_log=args.access_log)
                    await nursery.start(udp.serve, trio.socket.from_stdlib_socket(self.udp_sock))
                nursery.start_soon(self.housekeeping)
                self.ready()
                log.info("ready")
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self.reload_whitelist()
                    else:
                        log.info("stopping on %s", signal.Signals(signum).name)
                        break
                notify("STOPPING=1")
                nursery.cancel_scope.cancel()
        if args.state is not None and self.swarms is not None:
            self.save()

    async def housekeeping(self) -> None:
        """Expire silent peers every minute; save the state every --save-every seconds."""
        now = trio.current_time()  # trio's clock: deadlines for trio.sleep_until
        next_expire = now + EXPIRE_EVERY
        next_save = now + self.args.save_every
        while True:
            await trio.sleep_until(min(next_expire, next_save))
            now = trio.current_time()
            if now >= next_expire:
                dropped = await self.store.maintain(time.time())
                if dropped:
                    log.debug("expired %d peers", dropped)
                next_expire = now + EXPIRE_EVERY
            if now >= next_save:
                if self.args.state is not None and self.swarms is not None:
                    data = snapshot.dump(self.swarms)
                    try:
                        await trio.to_thread.run_sync(write_state, self.args.state, data)
                    except OSError as exc:
                        log.error("cannot save state to %s: %s", self.args.state, exc)
                next_save = trio.current_time() + self.args.save_every

    def save(self) -> None:
        assert self.swarms is not None
        try:
            write_state(self.args.state, snapshot.dump(self.swarms))
        except OSError as exc:
            log.error("cannot save state to %s: %s", self.args.state, exc)
            self.save_failed = True
            return
        log.info("saved %d torrents, %d peers to %s", self.swarms.torrents, self.swarms.peers,
                 self.args.state)

    def reload_whitelist(self) -> None:
        if self.args.whitelist is None:
            log.info("SIGHUP: no --whitelist to reload")
            return
        try:
            hashes = load_whitelist(self.args.whitelist)
        except UsageError as exc:
            log.error("whitelist not reloaded: %s", exc)
            return
        self.store.set_whitelist(hashes)
        log.info("whitelist reloaded: %d info-hashes", len(hashes))


def _bind(kind: str, address: Address | None, reuse_port: bool = False
          ) -> socket.socket | None:
    if address is None:
        return None
    try:
        if kind == "http":
            return open_http_listener(*address, reuse_port=reuse_port)
        return open_udp_socket(*address, reuse_port=reuse_port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {kind} {format_address(address)}: {exc.strerror or exc}"
        ) from None


def setup_logging(args: argparse.Namespace, tag: str = "") -> None:
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, force=True,
        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s",
    )
    if args.access_log:
        logging.getLogger("tracker.access").setLevel(logging.INFO)


def make_store(options: Options, whitelist: set[bytes] | None) -> Store:
    """The store the options name (the memory store loads --state)."""
    args = options.args
    if options.redis is not None:
        if args.state is not None:
            log.info("--state is not used: the swarms live in Redis")
        return RedisStore(options.redis, interval=args.interval,
                          min_interval=args.min_interval,
                          max_peers_per_torrent=args.max_peers_per_torrent,
                          whitelist=whitelist, timeout=args.store_timeout)
    store_kwargs: dict[str, Any] = {
        "interval": args.interval,
        "min_interval": args.min_interval,
        "max_torrents": args.max_torrents,
        "max_peers_per_torrent": args.max_peers_per_torrent,
        "max_peers": args.max_peers,
        "whitelist": whitelist,
    }
    if args.state is not None:
        return MemoryStore(read_state(args.state, store_kwargs, time.time()))
    return MemoryStore(SwarmStore(**store_kwargs))


def connection_ids(options: Options, store: Store, secret: bytes | None) -> ConnectionIds:
    """UDP connection IDs under the --secret-file secret, or `secret` adopted from Redis
    once connected (the one every tracker on that Redis uses)."""
    ids = ConnectionIds(secret)
    if options.args.secret_file is None and isinstance(store, RedisStore):
        store.on_secret = ids.adopt
    return ids


def _tell_ready(fd: int) -> None:
    os.write(fd, b"r")


def _stopping() -> None:
    notify("STOPPING=1")


def run_workers(options: Options, whitelist: set[bytes] | None, secret: bytes | None) -> int:
    """`--workers N`: reserve the ports, fork the workers (`tracker.workers`), each binding
    its own SO_REUSEPORT sockets on them, and supervise them."""
    args = options.args
    probes: list[socket.socket] = []
    try:
        # Reserve the ports (and learn them when 0 was asked): a TCP socket bound without
        # listening takes no connections; the UDP one is closed once the workers bound.
        http_probe = udp_probe = None
        if options.http is not None:
            http_probe = open_http_listener(*options.http, reuse_port=True, listen=False)
            probes.append(http_probe)
            options.http = (options.http[0], http_probe.getsockname()[1])
        if options.udp is not None:
            udp_probe = open_udp_socket(*options.udp, reuse_port=True)
            probes.append(udp_probe)
            options.udp = (options.udp[0], udp_probe.getsockname()[1])
    except OSError as exc:
        for sock in probes:
            sock.close()
        sys.stderr.write(f"{PROG}: error: cannot listen: {exc.strerror or exc}\n")
        return EXIT_BAD_INPUT
    shared_secret = secret if secret is not None else os.urandom(32)

    def worker(index: int, ready_fd: int) -> int:
        setup_logging(args, f"[worker {index}]")
        for sock in probes:
            sock.close()
        try:
            http_sock = _bind("http", options.http, reuse_port=True)
            udp_sock = _bind("udp", options.udp, reuse_port=True)
        except UsageError as exc:
            log.error("%s", exc)
            return EXIT_BAD_INPUT
        store = make_store(options, whitelist)
        ids = connection_ids(options, store, shared_secret)
        service = Service(options, store, http_sock, udp_sock, ids,
                          ready=lambda: _tell_ready(ready_fd))
        trio.run(service.run)
        return 0

    def ready() -> None:
        if udp_probe is not None:
            udp_probe.close()
        for name, address in (("http", options.http), ("udp", options.udp)):
            if address is not None:
                print(name, format_address(address), flush=True)
        notify("READY=1")

    try:
        return Supervisor(args.workers, worker).run(ready, _stopping)
    finally:
        for sock in probes:
            sock.close()


def tune_malloc() -> None:
    """Have glibc map every block of 128 KiB or more with mmap, and resize it with mremap.

    The in-memory store's columns are large buffers that grow by small steps; glibc's
    default (a threshold that rises after the first large free) moves them into the heap,
    where each growth copies the buffer and leaves the old one as a hole that RSS keeps:
    about 10 bytes a tracked peer (bench/tracker.py). Not glibc: nothing to do.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(128 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tracker until SIGTERM/SIGINT; the exit status."""
    options = parse_options(argv)
    tune_malloc()
    args = options.args
    setup_logging(args)
    try:
        whitelist = load_whitelist(args.whitelist) if args.whitelist is not None else None
        secret = read_secret(args.secret_file) if args.secret_file is not None else None
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_BAD_INPUT
    if args.workers > 1:
        return run_workers(options, whitelist, secret)
    socks: list[socket.socket] = []
    try:
        http_sock = _bind("http", options.http)
        if http_sock is not None:
            socks.append(http_sock)
        udp_sock = _bind("udp", options.udp)
        if udp_sock is not None:
            socks.append(udp_sock)
    except UsageError as exc:
        for sock in socks:
            sock.close()
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_BAD_INPUT
    store = make_store(options, whitelist)
    service = Service(options, store, http_sock, udp_sock,
                      connection_ids(options, store, secret))
    trio.run(service.run)
    return EXIT_FAILURE if service.save_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
