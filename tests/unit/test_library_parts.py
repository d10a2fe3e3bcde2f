"""The library's small parts: unique folder names, inotify records, mount options."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from btfs.errors import BtfsError
from btfs.library import unique_name
from btfs.mount import MountOptions
from btfs.mount_options import apply_mount_options
from btfs.watch import IN_CLOSE_WRITE, IN_DELETE, is_candidate, parse_events


def test_clashing_names_are_made_unique() -> None:
    assert unique_name("Movie", []) == "Movie"
    assert unique_name("Movie", ["Movie"]) == "Movie (2)"
    assert unique_name("Movie", ["Movie", "Movie (2)", "Other"]) == "Movie (3)"
    long = "x" * 300
    first = unique_name(long, [])
    assert len(first.encode()) <= 255 and unique_name(long, [first]) != first


def test_inotify_records_and_candidates() -> None:
    def record(mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16)
        return struct.pack("iIII", 1, mask, 0, len(padded)) + padded

    data = record(IN_CLOSE_WRITE, b"a.torrent") + record(IN_DELETE, "é.magnet".encode())
    assert parse_events(data) == [(IN_CLOSE_WRITE, "a.torrent"), (IN_DELETE, "é.magnet")]
    assert parse_events(data[:10]) == []
    assert is_candidate("A.TORRENT") and is_candidate("x.magnet")
    assert not is_candidate(".a.torrent.part") and not is_candidate(".hidden.torrent")
    assert not is_candidate("notes.txt")


def test_library_mount_options() -> None:
    options = MountOptions(mountpoint=Path("/mnt"))
    apply_mount_options(options, "watch=/srv/torrents,cache_size=64M,keep")
    assert options.watch == Path("/srv/torrents") and options.cache_size == 64 << 20
    with pytest.raises(BtfsError):
        apply_mount_options(options, "cache_size=lots")
