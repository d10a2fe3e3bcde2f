from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from btfs.create import CreateOptions, default_piece_length, make_torrent
from btfs.errors import CreateError
from btfs.metainfo import parse_torrent
from tests.support.data import make_random_file, make_tree


def expected_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest()
        for i in range(0, len(data), piece_length)
    )


def test_single_file(tmp_path: Path) -> None:
    f = make_random_file(tmp_path / "movie.mp4", 200_001)
    opts = CreateOptions(
        trackers=[["http://a/announce"], ["udp://b:1", "http://c/announce"]],
        web_seeds=["http://seed/movie.mp4"],
        private=True,
        comment="made in a test",
        piece_length=32768,
        creation_date=1_700_000_000,
    )
    meta = parse_torrent(make_torrent(f, opts))
    assert meta.info.name == "movie.mp4"
    assert not meta.info.multi_file
    assert meta.info.total_length == 200_001
    assert meta.info.pieces == expected_pieces(f.read_bytes(), 32768)
    assert meta.trackers == (("http://a/announce",), ("udp://b:1", "http://c/announce"))
    assert meta.extra[b"announce"] == b"http://a/announce"
    assert meta.web_seeds == ("http://seed/movie.mp4",)
    assert meta.info.private
    assert meta.comment == "made in a test"
    assert meta.creation_date == 1_700_000_000
    assert meta.created_by is not None and meta.created_by.startswith("btfs/")


def test_folder_sorted_nested_utf8(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "Album",
        {"b.txt": 10, "a/z.bin": 20_000, "a/ä.bin": 5, "c/d/e.bin": 70_000, "empty": 0},
    )
    meta = parse_torrent(make_torrent(root, CreateOptions(piece_length=16384)))
    assert meta.info.multi_file
    assert meta.info.name == "Album"
    paths = [f.path for f in meta.info.files]
    assert paths == [("a", "z.bin"), ("a", "ä.bin"), ("b.txt",), ("c", "d", "e.bin"), ("empty",)]
    data = b"".join((root.joinpath(*p)).read_bytes() for p in paths)
    assert meta.info.pieces == expected_pieces(data, 16384)


def test_default_piece_length_aims_at_1000_to_2000_pieces() -> None:
    assert default_piece_length(1000) == 16384
    for size in (100 << 20, 512 << 20, 4 << 30, 20 << 30):
        length = default_piece_length(size)
        assert 1000 <= -(-size // length) <= 2000
    assert default_piece_length(1 << 50) == 16 << 20


@pytest.mark.parametrize("length", [1000, 16383, 3 << 14, 32 << 20])
def test_bad_piece_length(tmp_path: Path, length: int) -> None:
    f = make_random_file(tmp_path / "f", 10)
    with pytest.raises(CreateError, match="power of two"):
        make_torrent(f, CreateOptions(piece_length=length))


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CreateError, match="No such file"):
        make_torrent(tmp_path / "missing", CreateOptions())
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(CreateError, match="empty"):
        make_torrent(tmp_path / "empty", CreateOptions())
    (tmp_path / "folder").mkdir()
    with pytest.raises(CreateError, match="holds no files"):
        make_torrent(tmp_path / "folder", CreateOptions())
    f = make_random_file(tmp_path / "f", 10)
    with pytest.raises(CreateError, match="tracker URL"):
        make_torrent(f, CreateOptions(trackers=[["ftp://x"]]))
    with pytest.raises(CreateError, match="web seed URL"):
        make_torrent(f, CreateOptions(web_seeds=["udp://x:1"]))
    os.mkfifo(tmp_path / "folder" / "fifo")
    with pytest.raises(CreateError, match="not a regular file"):
        make_torrent(tmp_path / "folder", CreateOptions())


def test_symlink_loop_is_an_error(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "r", {"a": 5})
    (root / "loop").symlink_to(root)
    with pytest.raises(CreateError, match="loop"):
        make_torrent(root, CreateOptions())


def test_non_utf8_name_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (Path(os.fsdecode(bytes(root) + b"/\xff.bin"))).write_bytes(b"x")
    with pytest.raises(CreateError, match="not valid UTF-8"):
        make_torrent(root, CreateOptions())
