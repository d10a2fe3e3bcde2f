"""What `btfs info` shows: a torrent or magnet as a JSON-ready dict and as text."""

from __future__ import annotations

import datetime
from typing import Any

from btfs.magnet import Magnet
from btfs.metainfo import Metainfo
from btfs.units import format_size


def describe(source: Metainfo | Magnet) -> dict[str, Any]:
    """A plain dict (str keys, JSON types) with everything `btfs info` reports."""
    if isinstance(source, Magnet):
        return {
            "kind": "magnet",
            "name": source.display_name,
            "info_hash": source.info_hash_hex,
            "total_size": source.exact_length,
            "piece_length": None,
            "piece_count": None,
            "private": None,
            "files": None,
            "trackers": [list(t) for t in source.trackers],
            "web_seeds": list(source.web_seeds),
            "peers": list(source.peers),
            "comment": None,
            "created_by": None,
            "creation_date": None,
        }
    info = source.info
    files = info.visible_files
    root = (info.name,) if info.multi_file else ()
    return {
        "kind": "torrent",
        "name": info.name,
        "info_hash": source.info_hash_hex,
        "total_size": sum(f.length for f in files),
        "padding_size": sum(f.length for f in info.files if f.padding),
        "piece_length": info.piece_length,
        "piece_count": info.num_pieces,
        "private": info.private,
        "multi_file": info.multi_file,
        "files": [
            {"path": "/".join(root + f.path), "size": f.length, "offset": f.offset}
            for f in files
        ],
        "trackers": [list(t) for t in source.trackers],
        "web_seeds": list(source.web_seeds),
        "comment": source.comment,
        "created_by": source.created_by,
        "creation_date": source.creation_date,
    }


def render_text(d: dict[str, Any]) -> str:
    lines = [
        f"Name:         {_clean(d['name']) if d['name'] else '(unknown until metadata arrives)'}",
        f"Info-hash:    {d['info_hash']}",
    ]
    if d["total_size"] is not None:
        lines.append(f"Size:         {format_size(d['total_size'])} ({d['total_size']} bytes)")
    if d["kind"] == "torrent":
        lines.append(
            f"Pieces:       {d['piece_count']} of {format_size(d['piece_length'])}"
            f" ({d['piece_length']} bytes)"
        )
        lines.append(f"Private:      {'yes' if d['private'] else 'no'}")
    if d["creation_date"] is not None:
        try:
            when = datetime.datetime.fromtimestamp(d["creation_date"], datetime.UTC)
            lines.append(f"Created:      {when:%Y-%m-%d %H:%M:%S} UTC")
        except (OverflowError, OSError, ValueError):
            lines.append(f"Created:      {d['creation_date']} (not a valid date)")
    if d["created_by"]:
        lines.append(f"Created by:   {_clean(d['created_by'])}")
    if d["comment"]:
        lines.append(f"Comment:      {_clean(d['comment'])}")
    lines.append("Trackers:" + ("" if d["trackers"] else "     none"))
    for n, tier in enumerate(d["trackers"], 1):
        lines.append(f"  tier {n}: {', '.join(_clean(u) for u in tier)}")
    if d["web_seeds"]:
        lines.append("Web seeds:")
        lines.extend(f"  {_clean(u)}" for u in d["web_seeds"])
    if d.get("peers"):
        lines.append("Peers:")
        lines.extend(f"  {_clean(p)}" for p in d["peers"])
    if d["files"] is not None:
        lines.append(f"Files ({len(d['files'])}):")
        width = max(len(str(f["size"])) for f in d["files"])
        lines.extend(f"  {f['size']:>{width}}  {_clean(f['path'])}" for f in d["files"])
    return "\n".join(lines)


def _clean(text: str) -> str:
    """Control characters from a torrent must not reach the user's terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)
