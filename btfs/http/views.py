"""The JSON the API answers with: torrents, their figures and their files. Pure.

A file's progress bar is its verified pieces folded into at most `BAR_CELLS` cells, each
the percentage verified of the pieces it covers, so a 20,000-piece file still costs the
page a few hundred bytes.
"""

from __future__ import annotations

from typing import Any

from btfs.http.catalog import ServedTorrent
from btfs.http.media import content_type, is_media, url_path

BAR_CELLS = 100
FIGURES = ("peers", "download_rate", "upload_rate", "downloaded", "uploaded")


def bar(pieces: range, verified: set[int], cells: int = BAR_CELLS) -> list[int]:
    """Percent verified in each of min(cells, len(pieces)) equal slices of `pieces`."""
    count = len(pieces)
    if count == 0:
        return [100]
    n = min(cells, count)
    out = []
    for i in range(n):
        lo, hi = pieces.start + i * count // n, pieces.start + (i + 1) * count // n
        have = sum(1 for p in range(lo, hi) if p in verified)
        out.append(have * 100 // (hi - lo))
    return out


def file_pieces(torrent: ServedTorrent, index: int) -> range:
    info = torrent.info
    f = info.files[index]
    if f.length == 0:
        return range(0)
    return range(f.offset // info.piece_length, (f.offset + f.length - 1) // info.piece_length + 1)


def torrent_summary(torrent: ServedTorrent) -> dict[str, Any]:
    info = torrent.info
    values = torrent.attributes(None)
    h = torrent.meta.info_hash_hex
    summary: dict[str, Any] = {
        "info_hash": h,
        "name": info.name,
        "size": info.total_length,
        "verified_bytes": int(values.get("verified_bytes", 0)),
        "progress": float(values.get("progress", 0)),
        "pieces": info.num_pieces,
        "pieces_verified": int(values.get("pieces_verified", 0)),
        "file_count": sum(1 for f in info.files if not f.padding),
        "playlist": f"/t/{h}.m3u",
    }
    for key in FIGURES:
        if key in values:
            summary[key] = int(values[key])
    if "problem" in values:
        summary["problem"] = values["problem"]
    return summary


def torrent_detail(torrent: ServedTorrent) -> dict[str, Any]:
    detail = torrent_summary(torrent)
    files = []
    verified = torrent.verified
    for index, f in enumerate(torrent.info.files):
        if f.padding:
            continue
        values = torrent.attributes(index)
        files.append({
            "index": index,
            "path": "/".join(f.path),
            "size": f.length,
            "progress": float(values.get("progress", 0)),
            "readers": int(values.get("readers", 0)),
            "url": url_path(torrent.meta.info_hash_hex, f.path),
            "type": content_type(f.path[-1]),
            "media": is_media(f.path[-1]),
            "bar": bar(file_pieces(torrent, index), verified),
        })
    detail["files"] = files
    return detail
