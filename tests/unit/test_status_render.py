"""`btfs status`'s text: per open file, its read-ahead window and its last seek's wait."""

from __future__ import annotations

from btfs.status import render, typed, typed_values


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


def test_json_values_are_numbers_and_text_stays_text() -> None:
    attributes = {"size": "300", "progress": "0.3333", "peers": "1", "info_hash": "12" * 20,
                  "name": "Show", "problem": "No space left on device", "pid": "42",
                  "last_seek_wait": "0.250", "trackers": '[{"url": "udp://t:1"}]',
                  "some_new_figure": "7", "some_new_text": "hello"}
    values = typed_values(attributes)
    assert values == {"size": 300, "progress": 0.3333, "peers": 1, "info_hash": "12" * 20,
                      "name": "Show", "problem": "No space left on device", "pid": 42,
                      "last_seek_wait": 0.25, "trackers": [{"url": "udp://t:1"}],
                      "some_new_figure": 7, "some_new_text": "hello"}
    assert typed("size", "not a number") == "not a number"


def test_the_name_stands_beside_the_info_hash_and_one_peer_is_singular() -> None:
    status = {"mountpoint": "/mnt/x", "files": [],
              "torrent": {"info_hash": "ab" * 20, "name": "Big Buck Bunny", "size": 10,
                          "verified_bytes": 0, "progress": 0.0, "peers": 1,
                          "download_rate": 0, "upload_rate": 0}}
    lines = render(status).splitlines()
    assert lines[0] == f"/mnt/x: Big Buck Bunny (info-hash {'ab' * 20})"
    assert "  1 peer" in lines
    status["torrent"]["peers"] = 2
    assert "  2 peers" in render(status).splitlines()


def test_trackers_sources_and_the_log_are_shown() -> None:
    trackers = [
        {"url": "udp://down.example:6969/announce", "tier": 1, "last_announce_ago": 12.3,
         "result": "error", "error": "connection refused", "peers": None,
         "next_announce_in": 27.6},
        {"url": "http://up.example/announce", "tier": 2, "last_announce_ago": 5.0,
         "result": "ok", "error": None, "peers": 1, "next_announce_in": 1795.0},
        {"url": "http://backup.example/announce", "tier": 2, "last_announce_ago": None,
         "result": None, "error": None, "peers": None, "next_announce_in": None},
    ]
    status = {"mountpoint": "/mnt/x", "files": [],
              "torrent": {"info_hash": "ab" * 20, "size": 10, "trackers": trackers,
                          "peer_sources": {"trackers": 1, "--peer": 2, "dht": 3, "pex": 1},
                          "dht_nodes": 1, "log": "/var/cache/btfs/x/btfs.log"}}
    lines = render(status).splitlines()
    assert lines[-6:] == [
        "  tracker udp://down.example:6969/announce: error: connection refused (12 s ago); "
        "next in 28 s",
        "  tracker http://up.example/announce: 1 peer (5 s ago); next in 1795 s",
        "  tracker http://backup.example/announce: not announced yet",
        "  peers from: --peer 2, dht 3, pex 1, trackers 1",
        "  DHT: 1 node",
        "  log: /var/cache/btfs/x/btfs.log",
    ]
