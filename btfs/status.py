"""`btfs status`: a mount's figures, read from the extended attributes it exposes.

The mount process is the only one that knows them; xattrs let any process (and
`getfattr`) ask without a control socket of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from btfs.errors import BtfsError
from btfs.mount import find_mount, mount_table
from btfs.units import format_size

PREFIX = "user.btfs."


def read_attributes(path: Path) -> dict[str, str]:
    values = {}
    for name in os.listxattr(path):
        if name.startswith(PREFIX):
            values[name[len(PREFIX) :]] = os.getxattr(path, name).decode(errors="replace")
    return values


# How each attribute's text becomes a JSON value for `btfs status --json`: attributes are
# text (xattrs are bytes), but programs want numbers as numbers.
INTEGERS = frozenset({
    "size", "verified_bytes", "pieces", "pieces_verified", "pieces_waited_on", "peers",
    "download_rate", "upload_rate", "downloaded", "uploaded", "listen_port", "pid",
    "readers", "readahead_window",
})
FLOATS = frozenset({"progress", "last_seek_wait"})
TEXTS = frozenset({"info_hash", "name", "path", "problem", "log", "resolving"})
STRUCTURED = frozenset({"trackers", "peer_sources"})  # JSON text in the attribute


def typed(key: str, text: str) -> Any:
    """An attribute's value as the JSON type it stands for (text when it is not one)."""
    try:
        if key in INTEGERS:
            return int(text)
        if key in FLOATS:
            return float(text)
        if key in STRUCTURED:
            return json.loads(text)
    except ValueError:
        return text
    if key not in TEXTS:  # an attribute this version does not know: a number if it is one
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def typed_values(values: dict[str, str]) -> dict[str, Any]:
    return {key: typed(key, text) for key, text in values.items()}


def btfs_mounts() -> list[Path]:
    return [Path(point) for point, fstype in mount_table() if fstype == "fuse.btfs"]


def collect(mountpoint: Path) -> dict[str, Any]:
    """The whole mount's figures and each file's, as a JSON-ready dict."""
    absolute = Path(os.path.abspath(mountpoint))
    fstype = find_mount(absolute)
    if fstype is None:
        raise BtfsError(f"{mountpoint} is not mounted")
    if fstype != "fuse.btfs":
        raise BtfsError(f"{mountpoint} is not a btfs mount ({fstype})")
    try:
        summary = read_attributes(absolute)
        files = []
        for folder, _, names in os.walk(absolute):
            for name in sorted(names):
                path = Path(folder) / name
                entry: dict[str, Any] = {"path": str(path.relative_to(absolute))}
                entry.update(typed_values(read_attributes(path)))
                files.append(entry)
    except OSError as exc:
        raise BtfsError(f"{mountpoint}: {exc.strerror}") from exc
    return {"mountpoint": str(absolute), "torrent": typed_values(summary), "files": files}


def render_failed(status: dict[str, Any]) -> str:
    """A mount that did not answer `btfs status`: what it said, and the way out when the
    btfs behind it is gone (a mount left by a killed process)."""
    point = status["mountpoint"]
    error = str(status["error"])
    line = f"{point}: not answering: {error}"
    if "not connected" in error:
        line += f"\n  its btfs process is gone; `btfs unmount {point}` removes the mount"
    return line


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def render(status: dict[str, Any]) -> str:
    t = status["torrent"]
    name = f"{t['name']} " if t.get("name") else ""
    lines = [f"{status['mountpoint']}: {name}(info-hash {t.get('info_hash', '?')})"]
    size = int(t.get("size", 0))
    have = int(t.get("verified_bytes", 0))
    lines.append(
        f"  progress {float(t.get('progress', 0)) * 100:.1f}%  "
        f"{format_size(have)} of {format_size(size)}  "
        f"pieces {t.get('pieces_verified', '?')}/{t.get('pieces', '?')}  "
        f"waited on {t.get('pieces_waited_on', '0')}"
    )
    if t.get("problem"):
        lines.append(f"  problem: {t['problem']}")
    if t.get("resolving"):
        lines.append(f"  resolving metadata: {t['resolving']}")
    if "peers" in t:
        lines.append(f"  {plural(int(t['peers']), 'peer')}")
    for key, label in (("download_rate", "down"), ("upload_rate", "up")):
        if key in t:
            lines.append(f"  {label} {format_size(float(t[key]))}/s")
    lines += [f"  {line}" for line in tracker_lines(t.get("trackers"))]
    sources = t.get("peer_sources")
    if isinstance(sources, dict) and sources:
        lines.append("  peers from: " + ", ".join(
            f"{name} {count}" for name, count in sorted(sources.items())))
    if "dht_nodes" in t:
        lines.append(f"  DHT: {plural(int(t['dht_nodes']), 'node')}")
    if t.get("log"):
        lines.append(f"  log: {t['log']}")
    for f in status["files"]:
        line = (f"  {float(f.get('progress', 0)) * 100:5.1f}%  "
                f"{format_size(int(f.get('size', 0))):>10}"
                f"  waited on {f.get('pieces_waited_on', '0'):>4}  {f['path']}")
        if "readers" in f:
            line += (f"  (open: read-ahead {format_size(int(f.get('readahead_window', 0)))}"
                     + (f", last seek waited {float(f['last_seek_wait']):.2f} s"
                        if "last_seek_wait" in f else "") + ")")
        lines.append(line)
    return "\n".join(lines)


def _seconds(value: float) -> str:
    return f"{value:.0f} s"


def tracker_lines(trackers: Any) -> list[str]:
    """One line per tracker: its last answer (peers, or the error) and when, and when the
    next announce is due."""
    if not isinstance(trackers, list):
        return []
    lines = []
    for t in trackers:
        if not isinstance(t, dict):
            continue
        ago = t.get("last_announce_ago")
        if ago is None:
            what = "not announced yet"
        elif t.get("error"):
            what = f"error: {t['error']} ({_seconds(ago)} ago)"
        else:
            what = f"{plural(int(t.get('peers') or 0), 'peer')} ({_seconds(ago)} ago)"
        due = t.get("next_announce_in")
        then = f"; next in {_seconds(due)}" if isinstance(due, int | float) else ""
        lines.append(f"tracker {t.get('url')}: {what}{then}")
    return lines
