"""The tracker's pages for people and monitoring: /stats (HTML or JSON) and /metrics
(Prometheus text exposition format)."""

from __future__ import annotations

import html
import json
import math

from tracker.swarms import SwarmStore


def stats_json(store: SwarmStore, uptime: float) -> bytes:
    data = store.stats()
    data["uptime"] = round(uptime, 1)
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def stats_html(store: SwarmStore, uptime: float) -> bytes:
    """A small page for people."""
    s = store.stats()
    rows = [
        ("torrents", s["torrents"]),
        ("peers", s["peers"]),
        ("seeders", s["seeders"]),
        ("leechers", s["leechers"]),
        ("IPv4 peers", s["peers_ipv4"]),
        ("IPv6 peers", s["peers_ipv6"]),
        *((f"announces ({k})", v) for k, v in sorted(s["announces"].items())),
        *((f"scrapes ({k})", v) for k, v in sorted(s["scrapes"].items())),
        *((f"errors ({k})", v) for k, v in sorted(s["errors"].items())),
        ("uptime (s)", int(uptime)),
    ]
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>\n" for k, v in rows
    )
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>btfs-tracker</title>"
        "</head><body><h1>btfs-tracker</h1>\n<table>\n"
        f"{body}</table>\n</body></html>\n"
    ).encode()


def metrics_text(store: SwarmStore, uptime: float) -> bytes:
    """Prometheus text exposition format."""
    s = store.stats()
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
        lines.append(f"# HELP btfs_tracker_{name} {help_text}")
        lines.append(f"# TYPE btfs_tracker_{name} {kind}")
        lines.extend(f"btfs_tracker_{name}{labels} {value}" for labels, value in samples)

    metric("torrents", "gauge", "Torrents the tracker knows.", [("", s["torrents"])])
    metric("seeders", "gauge", "Peers that have the whole torrent.", [("", s["seeders"])])
    metric("leechers", "gauge", "Peers still downloading.", [("", s["leechers"])])
    metric("announces_total", "counter", "Announces received.",
           [(f'{{protocol="{k}"}}', v) for k, v in sorted(s["announces"].items())])
    metric("scrapes_total", "counter", "Scrapes received.",
           [(f'{{protocol="{k}"}}', v) for k, v in sorted(s["scrapes"].items())])
    metric("errors_total", "counter", "Requests answered with an error.",
           [(f'{{kind="{k}"}}', v) for k, v in sorted(s["errors"].items())])
    metric("uptime_seconds", "gauge", "Seconds since the tracker started.",
           [("", math.floor(uptime))])
    return ("\n".join(lines) + "\n").encode()
