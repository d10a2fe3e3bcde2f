"""libtorrent peers for library tests: one session seeding many torrents, and a leecher
driven step by step (which pieces it wants, which peers it knows) that counts the
BEP 6 rejects it receives.

    python -m tests.support.ltmany seed SAVE_DIR --listen 127.0.0.5:6881 T1.torrent T2...
    python -m tests.support.ltmany probe TORRENT SAVE_DIR --listen 127.0.0.6:0 --peer H:P

`seed` prints `{"seeding": N}` once every torrent seeds, then a line a second. `probe`
starts wanting only the last piece (so it is not "upload-only", which makes libtorrent
drop peers that are too) and prints a JSON line every 0.2 s (`peers`, `pieces_of`: how
many pieces each connected peer's address claims, `rejects`, `progress`, `is_seeding`); on
stdin it takes `want FIRST LAST` (those pieces, top priority), `all` (every piece),
`peer H:P` (dial one more peer, again every 2 s until done) and `quit`. `--block IP`
keeps a peer out (one that would learn of the probe by peer exchange and dial it) until a
`peer` command names it.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any


def _session(lt: Any, listen: str, alerts: int = 0) -> Any:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return lt.session({
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": host,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": alerts, "min_reconnect_time": 1, "peer_connect_timeout": 3,
        "active_downloads": -1, "active_seeds": -1, "active_limit": -1,
        "user_agent": "libtorrent-test",
    })


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def seed(lt: Any, args: argparse.Namespace) -> None:
    ses = _session(lt, args.listen)
    handles = []
    for path in args.torrents:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(path)
        params.save_path = args.save_dir
        params.flags |= lt.torrent_flags.seed_mode
        handles.append(ses.add_torrent(params))
    announced = False
    while True:
        seeding = sum(1 for h in handles if h.status().is_seeding)
        if seeding == len(handles) and not announced:
            print(json.dumps({"seeding": seeding, "listen_port": ses.listen_port()}),
                  flush=True)
            announced = True
        elif announced:
            print(json.dumps({"peers": sum(h.status().num_peers for h in handles)}),
                  flush=True)
        time.sleep(1 if announced else 0.1)


def probe(lt: Any, args: argparse.Namespace) -> None:
    ses = _session(lt, args.listen, alerts=int(lt.alert_category.peer_log))
    info = lt.torrent_info(args.torrent)
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = args.save_dir
    params.piece_priorities = [0] * (info.num_pieces() - 1) + [1]
    handle = ses.add_torrent(params)
    blocked = set(args.block)

    def apply_blocks() -> None:
        rules = lt.ip_filter()
        for ip in blocked:
            rules.add_rule(ip, ip, 1)
        ses.set_ip_filter(rules)

    apply_blocks()
    # dialled again until done: libtorrent drops a dial to a seed while it is itself
    # finished, and forgets seeds it hung up on when it finished
    dial = [_address(peer) for peer in args.peer]
    dialled = 0.0
    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("quit")

    threading.Thread(target=read_stdin, daemon=True).start()
    rejects = 0
    log = open(args.log, "a") if args.log else None  # noqa: SIM115
    while True:
        for alert in ses.pop_alerts():
            if not isinstance(alert, lt.peer_log_alert):
                continue
            message = alert.message()
            if log is not None:
                log.write(message + "\n")
                log.flush()
            if "<== REJECT" in message:
                rejects += 1
        while not commands.empty():
            words = commands.get().split()
            if not words:
                continue
            if words[0] == "quit":
                return
            if words[0] == "want":
                first, last = int(words[1]), int(words[2])
                for piece in range(first, last + 1):
                    handle.piece_priority(piece, 7)
            elif words[0] == "all":
                handle.prioritize_pieces([4] * info.num_pieces())
            elif words[0] == "peer":
                dial.append(_address(words[1]))
                blocked.discard(dial[-1][0])
                apply_blocks()
                dialled = 0.0
        s = handle.status()
        if not s.is_seeding and time.monotonic() - dialled > 2:
            for address in dial:
                handle.connect_peer(address)
            dialled = time.monotonic()
        pieces_of = {p.ip[0]: sum(p.pieces) for p in handle.get_peer_info()}
        print(json.dumps({"peers": s.num_peers, "pieces_of": pieces_of, "rejects": rejects,
                          "progress": s.progress, "is_seeding": s.is_seeding}), flush=True)
        time.sleep(0.2)


def main() -> None:
    import libtorrent as lt

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("seed")
    s.add_argument("save_dir")
    s.add_argument("torrents", nargs="+")
    s.add_argument("--listen", required=True)
    p = sub.add_parser("probe")
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--listen", required=True)
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--log", help="write libtorrent's peer log here")
    p.add_argument("--block", action="append", default=[],
                   help="refuse this IP (until a `peer` command names it)")
    args = parser.parse_args()
    if args.mode == "seed":
        seed(lt, args)
    else:
        probe(lt, args)


if __name__ == "__main__":
    main()
