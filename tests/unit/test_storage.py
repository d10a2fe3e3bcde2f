from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs import storage as storage_module
from btfs.metainfo import NAME_MAX, FileEntry, Info, fit_name
from btfs.storage import (
    RECORD_MAGIC,
    DamagedRecord,
    Extent,
    Layout,
    Record,
    ResumeLog,
    Storage,
    StorageError,
    adopt_named_data,
)


def make_info(sizes: list[int], piece_length: int = 16, padding: set[int] | None = None) -> Info:
    files = []
    offset = 0
    for i, size in enumerate(sizes):
        pad = padding is not None and i in padding
        path = (".pad", str(i)) if pad else (f"f{i}",)
        files.append(FileEntry(path=path, length=size, offset=offset, padding=pad))
        offset += size
    count = -(-offset // piece_length)
    return Info(name="t", piece_length=piece_length, pieces=b"\0" * 20 * count,
                files=tuple(files), multi_file=True)


def test_extents_cross_files_and_skip_empty_ones() -> None:
    layout = Layout(make_info([10, 0, 5, 30]))
    assert list(layout.extents(8, 10)) == [Extent(0, 8, 2), Extent(2, 0, 5), Extent(3, 0, 3)]
    assert layout.piece_extents(0) == [Extent(0, 0, 10), Extent(2, 0, 5), Extent(3, 0, 1)]
    assert layout.piece_extents(2) == [Extent(3, 17, 13)]
    assert layout.pieces_of_file(1) == range(0)
    assert layout.pieces_of_file(3) == range(0, 3)
    assert layout.pieces_of_range(15, 2) == range(0, 2)
    with pytest.raises(ValueError):
        list(layout.extents(40, 10))


@given(st.lists(st.integers(0, 50), min_size=1, max_size=8).filter(lambda s: sum(s) > 0),
       st.data())
def test_extents_partition_any_range(sizes: list[int], data: st.DataObject) -> None:
    layout = Layout(make_info(sizes))
    total = sum(sizes)
    offset = data.draw(st.integers(0, total))
    length = data.draw(st.integers(0, total - offset))
    extents = list(layout.extents(offset, length))
    assert sum(e.length for e in extents) == length
    stream = offset
    for e in extents:
        f = layout.files[e.file_index]
        assert f.offset + e.file_offset == stream
        assert e.length > 0 and e.file_offset + e.length <= f.length
        stream += e.length


def test_write_read_round_trip_with_padding(tmp_path: Path) -> None:
    info = make_info([10, 6, 5, 27], padding={1})
    store = Storage(info, tmp_path)
    stream = bytes(random.Random(1).randbytes(48))
    stream = stream[:10] + bytes(6) + stream[16:]
    for piece in range(info.num_pieces):
        store.write_piece(piece, stream[piece * 16 : piece * 16 + info.piece_size(piece)])
    assert store.read(0, 48) == stream
    assert store.read(9, 9) == stream[9:18]
    assert (tmp_path / "t" / "f0").read_bytes() == stream[:10]
    assert not (tmp_path / "t" / ".pad").exists()
    assert (tmp_path / "t" / "f3").read_bytes() == stream[21:]
    store.close()


def test_files_are_created_sparse_at_full_size(tmp_path: Path) -> None:
    info = make_info([100, 0, 50])
    store = Storage(info, tmp_path)
    store.write_piece(0, b"x" * 16)
    store.create_empty_files()
    assert (tmp_path / "t" / "f0").stat().st_size == 100
    assert (tmp_path / "t" / "f1").stat().st_size == 0
    store.close()


def test_single_file_and_data_path(tmp_path: Path) -> None:
    info = Info(name="movie.mp4", piece_length=16, pieces=b"\0" * 40,
                files=(FileEntry(("movie.mp4",), 20, 0),), multi_file=False)
    original = tmp_path / "elsewhere.mp4"
    original.write_bytes(bytes(range(20)))
    store = Storage(info, tmp_path, read_only=True, data_path=original)
    assert store.read_piece(1) == bytes(range(16, 20))
    with pytest.raises(StorageError, match="read-only"):
        store.write_piece(0, bytes(16))
    assert original.read_bytes() == bytes(range(20))
    store.close()


def test_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    store = Storage(make_info([10]), tmp_path, read_only=True)
    with pytest.raises(StorageError, match="No such file"):
        store.read(0, 5)


def test_concurrent_io_with_few_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "MAX_OPEN_FILES", 2)
    sizes = [37] * 20
    info = make_info(sizes, piece_length=64)
    stream = random.Random(2).randbytes(sum(sizes))
    store = Storage(info, tmp_path)

    def write(piece: int) -> None:
        start = piece * 64
        store.write_piece(piece, stream[start : start + info.piece_size(piece)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(info.num_pieces)))
        results = list(pool.map(store.read_piece, range(info.num_pieces)))
    assert b"".join(results) == stream
    for i in range(20):
        assert (tmp_path / "t" / f"f{i}").read_bytes() == stream[i * 37 : i * 37 + 37]
    store.close()
    assert store.read(0, 40) == stream[:40]  # reopens its files after close


def test_resume_log_survives_torn_record(tmp_path: Path) -> None:
    path = tmp_path / "state" / "resume"
    log = ResumeLog(path, num_pieces=100, num_files=2)
    assert log.load() is None
    stamps = [(1, 10, 123), None]
    log.rewrite(set(), stamps)
    log.append([3, 7])
    log.append([99])
    log.close()
    with open(path, "ab") as f:
        f.write(b"\x00\x00")  # a crash mid-record
    assert log.load() == Record(((10, 123), None), frozenset({3, 7, 99}))
    log.rewrite({1, 2}, [(5, 20, 456), (6, 0, 1)])
    assert log.load() == Record(((20, 456), (0, 1)), frozenset({1, 2}))
    log.append([5])
    log.close()
    path.unlink()
    log.append([4])  # a record begun by an append knows no stamps
    log.close()
    assert log.load() == Record((None, None), frozenset({4}))
    log.append([50])
    log.close()
    with pytest.raises(DamagedRecord, match="does not have"):
        ResumeLog(path, num_pieces=4, num_files=2).load()
    with pytest.raises(DamagedRecord, match="another torrent"):
        ResumeLog(path, num_pieces=100, num_files=3).load()


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x01\x00\x00\x00\x02",
                                     b"garbage " * 40, "header"])
def test_a_damaged_resume_record_is_never_trusted(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "resume"
    log = ResumeLog(path, num_pieces=8, num_files=1)
    if content == "header":
        log.rewrite({0, 1}, [(1, 10, 5)])
        raw = bytearray(path.read_bytes())
        raw[len(RECORD_MAGIC) + 9] ^= 1  # the file's size in the header
        path.write_bytes(bytes(raw))
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(DamagedRecord):
        log.load()


def test_cache_files_are_named_by_index_and_named_data_is_adopted(tmp_path: Path) -> None:
    long_name = "é" * 200 + ".mkv"
    info = Info(name="T" * 300, piece_length=16, pieces=b"\0" * 40,
                files=(FileEntry(("a", long_name), 10, 0), FileEntry(("b.txt",), 20, 10)),
                multi_file=True)
    store = Storage(info, tmp_path / "files", by_index=True)
    assert store.paths == [tmp_path / "files" / "0", tmp_path / "files" / "1"]
    named = tmp_path / "data" / fit_name("T" * 300)
    (named / "a").mkdir(parents=True)
    (named / "a" / fit_name(long_name)).write_bytes(b"0123456789")
    (tmp_path / "data" / "other.txt").write_text("not the torrent's")
    assert adopt_named_data(store, tmp_path / "data") == 1
    assert store.read(0, 10) == b"0123456789"
    assert not named.exists()
    assert (tmp_path / "data" / "other.txt").exists()
    store.close()


def test_fit_name_shortens_stably_and_keeps_the_extension() -> None:
    assert fit_name("movie.mp4") == "movie.mp4"
    long = "ü" * 200 + ".mkv"
    short = fit_name(long)
    assert len(short.encode()) <= NAME_MAX
    assert short.endswith(".mkv") and short.startswith("ü" * 100)
    assert fit_name(long) == short
    assert fit_name("ü" * 199 + "x.mkv") != short
    assert len(fit_name("x" * 1000).encode()) == NAME_MAX


def test_own_writes_move_the_known_stamp_and_other_changes_do_not(tmp_path: Path) -> None:
    info = make_info([32])
    store = Storage(info, tmp_path, by_index=True)
    store.set_known(0, store.stamp(0))
    store.write_piece(0, b"a" * 16)
    assert store.changed_files(0, 32) == []
    with open(tmp_path / "0", "r+b") as f:
        f.seek(20)
        f.write(b"zz")
    os.utime(tmp_path / "0", ns=(0, 1))
    assert store.changed_files(0, 16) == [0]
    store.write_piece(1, b"b" * 16)  # does not hide the change it did not make
    assert store.changed_files(0, 16) == [0]
    store.close()


def test_a_file_shorter_than_the_torrent_says_is_a_storage_error(tmp_path: Path) -> None:
    store = Storage(make_info([40]), tmp_path, read_only=True)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f0").write_bytes(bytes(30))  # truncated behind btfs's back
    assert store.read(0, 30) == bytes(30)
    with pytest.raises(StorageError, match="shorter than expected"):
        store.read(20, 20)
    store.close()


def test_write_piece_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    store = Storage(make_info([40]), tmp_path)
    with pytest.raises(ValueError, match="must be 16 bytes"):
        store.write_piece(0, bytes(15))
    with pytest.raises(ValueError, match="must be 8 bytes"):
        store.write_piece(2, bytes(16))  # the short last piece
    assert not (tmp_path / "t" / "f0").exists()


def test_read_only_storage_creates_no_empty_files(tmp_path: Path) -> None:
    store = Storage(make_info([10, 0]), tmp_path, read_only=True)
    store.create_empty_files()
    assert not (tmp_path / "t").exists()


def test_a_file_read_then_written_gets_a_writable_descriptor(tmp_path: Path) -> None:
    info = make_info([32])
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f0").write_bytes(bytes(32))
    store = Storage(info, tmp_path)
    assert store.read_piece(1) == bytes(16)  # caches a read-only descriptor
    store.write_piece(1, b"y" * 16)
    assert store.read_piece(1) == b"y" * 16
    store.close()
    assert (tmp_path / "t" / "f0").read_bytes() == bytes(16) + b"y" * 16


def test_unreadable_resume_log_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "resume").mkdir()  # a folder where the log should be
    with pytest.raises(StorageError, match="resume"):
        ResumeLog(tmp_path / "resume", num_pieces=4, num_files=1).load()


def test_resume_log_rewritten_while_open_for_appending(tmp_path: Path) -> None:
    log = ResumeLog(tmp_path / "resume", num_pieces=10, num_files=1)
    log.rewrite({1}, [None])
    log.append([1, 2, 3])
    log.rewrite({2, 3}, [None])  # compaction closes the open descriptor of the old file
    log.append([7])
    log.close()
    record = ResumeLog(tmp_path / "resume", num_pieces=10, num_files=1).load()
    assert record is not None and record.pieces == {2, 3, 7}
