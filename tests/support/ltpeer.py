"""A real libtorrent peer in its own process, for tests and benchmarks.

    python -m tests.support.ltpeer seed TORRENT SAVE_DIR --listen 127.0.0.5:6881
    python -m tests.support.ltpeer leech TORRENT SAVE_DIR --listen 127.0.0.6:6882 \
        [--peer 127.0.0.2:7000]... [--exit-when-done]
    python -m tests.support.ltpeer dht - - --listen 127.0.0.7:6883      (a DHT node only)

It prints one JSON line per second on stdout (`state`, `progress`, `peers`,
`download_rate`, `upload_rate`, `total_upload`..., and `peer_list`: each connected peer's
`ip`, `port`, `source` (libtorrent's flags: 1 tracker, 4 PEX, 32 incoming...) and payload
`uploaded`/`downloaded`), the first once it listens, with `listen_port`.
`--upload-limit`/`--download-limit` (bytes/s) hold on loopback too.
Local discovery, UPnP and NAT-PMP are off: only trackers in the torrent, `--peer`
addresses and the peers other peers name by peer exchange (on, libtorrent's default) are
used, all on loopback in tests (`--no-pex`: not PEX either). The DHT is off unless
`--dht`: then it runs on loopback (the settings that keep libtorrent's DHT off
127.0.0.0/8 are turned off), joins only through `--dht-node` addresses (never the
public routers), and TORRENT may be a magnet URI for `leech`. The JSON lines then have
`dht_nodes`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType
from typing import Any


def main() -> None:
    import libtorrent as lt

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["seed", "leech", "dht"])
    parser.add_argument("torrent")
    parser.add_argument("save_dir")
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0: any)")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--exit-when-done", action="store_true")
    parser.add_argument("--upload-limit", type=int, default=0)
    parser.add_argument("--download-limit", type=int, default=0)
    parser.add_argument("--dht", action="store_true")
    parser.add_argument("--dht-node", action="append", default=[])
    parser.add_argument("--no-pex", action="store_true",
                        help="ignore peer exchange: dial only --peer and tracker peers")
    args = parser.parse_args()
    dht = args.dht or args.mode == "dht"

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    settings = {
        "listen_interfaces": listen,
        "outgoing_interfaces": host,
        "enable_dht": dht,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "user_agent": "libtorrent-test",
        "alert_mask": 0,
        "upload_rate_limit": args.upload_limit,
        "download_rate_limit": args.download_limit,
        "min_reconnect_time": 1,
        # TCP only, as btfs speaks: libtorrent's uTP (LEDBAT) crawls on loopback.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "peer_connect_timeout": 3,
        "tracker_completion_timeout": 10,
        "tracker_receive_timeout": 5,
        "announce_ip": host if ":" not in host else "",
    }
    ses = lt.session(settings)
    if args.upload_limit or args.download_limit:
        # Loopback peers fall in libtorrent's "local" peer class, which ignores rate
        # limits: put every address in the global class so the limits hold in tests.
        classes = lt.ip_filter()
        everyone = 1 << lt.session.global_peer_class_id
        classes.add_rule("0.0.0.0", "255.255.255.255", everyone)
        classes.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", everyone)
        ses.set_peer_class_filter(classes)
        # libtorrent hands out rate-limit quota once a tick (500 ms by default), so a capped
        # peer sends in half-second bursts; a real uplink is a steady pipe.
        ses.apply_settings({"tick_interval": 20})
    handle = None
    if args.mode != "dht":
        if args.torrent.startswith("magnet:"):
            params = lt.parse_magnet_uri(args.torrent)
        else:
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(args.torrent)
        params.save_path = args.save_dir
        if args.mode == "seed":
            params.flags |= lt.torrent_flags.seed_mode
        if args.no_pex:
            params.flags |= lt.torrent_flags.disable_pex
        handle = ses.add_torrent(params)

    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    deadline = time.monotonic() + 30
    while ses.listen_port() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for node in args.dht_node:
        node_host, _, node_port = node.rpartition(":")
        ses.add_dht_node((node_host.strip("[]"), int(node_port)))
    for peer in args.peer if handle is not None else []:
        peer_host, _, peer_port = peer.rpartition(":")
        handle.connect_peer((peer_host.strip("[]"), int(peer_port)))

    first = True
    last_dht_announce = 0.0
    while not stop:
        if dht and handle is not None and time.monotonic() - last_dht_announce >= 5 \
                and ses.status().dht_nodes > 0:
            # libtorrent spreads DHT announces over dht_announce_interval (15 min): a test
            # cannot wait for that, so announce (get_peers + announce_peer) every 5 s.
            handle.force_dht_announce()
            last_dht_announce = time.monotonic()
        if handle is None:
            print(json.dumps({"listen_port": ses.listen_port(),
                              "dht_nodes": ses.status().dht_nodes}), flush=True)
            for _ in range(10):
                if not stop:
                    time.sleep(0.1)
            continue
        s = handle.status()
        report = {
            "listen_port": ses.listen_port(),
            "dht_nodes": ses.status().dht_nodes if dht else 0,
            "state": str(s.state),
            "progress": s.progress,
            "is_seeding": s.is_seeding,
            "peers": s.num_peers,
            "download_rate": s.download_rate,
            "upload_rate": s.upload_rate,
            "total_download": s.total_payload_download,
            "total_upload": s.total_payload_upload,
            "peer_list": [
                {"ip": p.ip[0], "port": p.ip[1], "source": int(p.source),
                 "uploaded": p.total_upload, "downloaded": p.total_download}
                for p in handle.get_peer_info()
            ],
        }
        print(json.dumps(report), flush=True)
        if first:
            first = False
        if args.exit_when_done and s.is_seeding:
            break
        for peer in args.peer if s.num_peers == 0 else []:
            peer_host, _, peer_port = peer.rpartition(":")
            handle.connect_peer((peer_host.strip("[]"), int(peer_port)))
        for _ in range(10):
            if stop:
                break
            time.sleep(0.1)
    if handle is not None:
        say_stopped(lt, ses, handle)
    sys.exit(0)


def say_stopped(lt: Any, ses: Any, handle: Any, timeout: float = 2.0) -> None:
    """Pause, and wait (bounded) for the trackers to answer the `stopped` announce: exiting
    at once would cut off UDP trackers' (the session's destructor does not wait for them)."""
    trackers = len(handle.trackers())
    ses.apply_settings({"alert_mask": int(lt.alert.category_t.tracker_notification)})
    ses.pause()
    answered = 0
    deadline = time.monotonic() + timeout
    while trackers and answered < trackers and time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.tracker_reply_alert | lt.tracker_error_alert):
                answered += 1


if __name__ == "__main__":
    main()
