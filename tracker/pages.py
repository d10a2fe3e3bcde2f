"""The tracker's pages for people and monitoring: /stats (HTML or JSON) and /metrics
(Prometheus text exposition format), from the figures a store's `stats` gives.

Counters (announces, scrapes, errors) are the answering process's own; swarm figures
(torrents, peers) are the store's, and are left out while the store cannot be reached.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

_SWARM_ROWS = (("torrents", "torrents"), ("peers", "peers"), ("seeders", "seeders"),
               ("leechers", "leechers"), ("IPv4 peers", "peers_ipv4"),
               ("IPv6 peers", "peers_ipv6"))


def stats_json(stats: dict[str, Any], uptime: float) -> bytes:
    data = dict(stats)
    data["uptime"] = round(uptime, 1)
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def _table(rows: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>\n"
        for k, v in rows
    )


def stats_html(s: dict[str, Any], uptime: float) -> bytes:
    """A small page for people: totals, then the torrents with the most peers."""
    rows: list[tuple[str, Any]] = [
        (label, s.get(key, "unavailable")) for label, key in _SWARM_ROWS]
    store = s.get("store")
    if store is not None:
        rows.append(("store", f"{store['kind']}, {'up' if store['up'] else 'DOWN'}"))
    if "evicted" in s:
        rows.append(("peers evicted", s["evicted"]))
    rows += [
        *((f"announces ({k})", v) for k, v in sorted(s["announces"].items())),
        *((f"scrapes ({k})", v) for k, v in sorted(s["scrapes"].items())),
        *((f"errors ({k})", v) for k, v in sorted(s["errors"].items())),
        ("uptime (s)", int(uptime)),
    ]
    top = s.get("top", [])
    torrents = "".join(
        f"<tr><td><code>{html.escape(t['info_hash'])}</code></td><td>{t['peers']}</td>"
        f"<td>{t['seeders']}</td><td>{t['leechers']}</td><td>{t['completed']}</td></tr>\n"
        for t in top
    )
    if not torrents:
        torrents = '<tr><td colspan="5">none</td></tr>\n'
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>btfs-tracker</title>"
        "</head><body><h1>btfs-tracker</h1>\n<table>\n"
        f"{_table(rows)}</table>\n"
        f"<h2>Torrents with the most peers (top {len(top)})</h2>\n"
        "<table class=\"torrents\">\n<tr><th>info-hash</th><th>peers</th><th>seeders</th>"
        "<th>leechers</th><th>completed</th></tr>\n"
        f"{torrents}</table>\n</body></html>\n"
    ).encode()


def metrics_text(s: dict[str, Any], uptime: float) -> bytes:
    """Prometheus text exposition format."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
        lines.append(f"# HELP btfs_tracker_{name} {help_text}")
        lines.append(f"# TYPE btfs_tracker_{name} {kind}")
        lines.extend(f"btfs_tracker_{name}{labels} {value}" for labels, value in samples)

    if "torrents" in s:
        metric("torrents", "gauge", "Torrents the tracker knows.", [("", s["torrents"])])
        metric("seeders", "gauge", "Peers that have the whole torrent.", [("", s["seeders"])])
        metric("leechers", "gauge", "Peers still downloading.", [("", s["leechers"])])
    if "evicted" in s:
        metric("evicted_total", "counter",
               "Peers evicted (the stalest first) to keep within --max-peers.",
               [("", s["evicted"])])
    metric("announces_total", "counter", "Announces received by this process.",
           [(f'{{protocol="{k}"}}', v) for k, v in sorted(s["announces"].items())])
    metric("scrapes_total", "counter", "Scrapes received by this process.",
           [(f'{{protocol="{k}"}}', v) for k, v in sorted(s["scrapes"].items())])
    metric("errors_total", "counter", "Requests this process answered with an error.",
           [(f'{{kind="{k}"}}', v) for k, v in sorted(s["errors"].items())])
    store = s.get("store")
    if store is not None:
        metric("store_up", "gauge", "1 while the shared store (Redis) answers, else 0.",
               [("", int(store["up"]))])
        metric("store_connection_failures_total", "counter",
               "Connections to the store lost, and attempts that failed.",
               [("", store["connection_failures"])])
    metric("uptime_seconds", "gauge", "Seconds since the tracker started.",
           [("", math.floor(uptime))])
    return ("\n".join(lines) + "\n").encode()
