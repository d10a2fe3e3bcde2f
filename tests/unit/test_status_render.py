"""`btfs status`'s text: per open file, its read-ahead window and its last seek's wait."""

from __future__ import annotations

from btfs.status import render


def test_open_files_show_their_read_ahead_and_last_seek_wait() -> None:
    status = {
        "mountpoint": "/mnt/x",
        "torrent": {"info_hash": "ab" * 20, "size": "300", "verified_bytes": "100",
                    "progress": "0.3333", "pieces": "3", "pieces_verified": "1"},
        "files": [
            {"path": "movie.mkv", "size": "200", "progress": "0.5", "readers": "1",
             "readahead_window": str(4 << 20), "last_seek_wait": "0.734"},
            {"path": "notes.txt", "size": "100", "progress": "0"},
        ],
    }
    lines = render(status).splitlines()
    movie = next(line for line in lines if "movie.mkv" in line)
    assert "(open: read-ahead 4.0 MiB, last seek waited 0.73 s)" in movie
    notes = next(line for line in lines if "notes.txt" in line)
    assert "open" not in notes
