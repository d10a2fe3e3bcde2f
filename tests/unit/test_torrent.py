"""The torrent session's own paths, without a swarm: verify-and-store, resume, closing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from btfs.create import CreateOptions, make_torrent
from btfs.metainfo import Metainfo, parse_torrent
from btfs.storage import ResumeLog, Storage
from btfs.torrent import Torrent, TorrentClosed
from tests.support.data import make_random_file

PIECE = 16384


def setup(tmp_path: Path, resume: bool = True) -> tuple[Torrent, bytes]:
    """A 3.5-piece torrent of random data, an empty download folder; (torrent, data)."""
    original = make_random_file(tmp_path / "origin" / "data.bin", 3 * PIECE + 100, seed=9)
    meta: Metainfo = parse_torrent(make_torrent(original, CreateOptions(piece_length=PIECE)))
    storage = Storage(meta.info, tmp_path / "out")
    log = ResumeLog(tmp_path / "resume", meta.info.num_pieces, len(meta.info.files)) \
        if resume else None
    return Torrent(meta, storage, log), original.read_bytes()


def piece(data: bytes, index: int) -> bytes:
    return data[index * PIECE : (index + 1) * PIECE]


async def test_a_good_piece_is_stored_once_and_a_bad_one_never(tmp_path: Path) -> None:
    torrent, data = setup(tmp_path)
    assert torrent.missing_pieces() == [0, 1, 2, 3]
    assert not await torrent.piece_downloaded(1, bytes(PIECE))
    assert torrent.counters.hash_failures == 1 and torrent.counters.wasted == PIECE
    assert not (tmp_path / "out" / "data.bin").exists()
    assert await torrent.piece_downloaded(1, piece(data, 1))
    assert torrent.missing_pieces() == [0, 2, 3]
    # the same piece again (an endgame duplicate): accepted, not written or logged again
    assert await torrent.piece_downloaded(1, piece(data, 1))
    torrent.resume.close()  # type: ignore[union-attr]
    record = ResumeLog(tmp_path / "resume", 4, 1).load()
    assert record is not None and record.pieces == {1}
    assert torrent.storage.read_piece(1) == piece(data, 1)
    torrent.storage.close()


async def test_resume_and_no_resume(tmp_path: Path) -> None:
    torrent, data = setup(tmp_path)
    for i in (0, 3):
        assert await torrent.piece_downloaded(i, piece(data, i))
    torrent.resume.close()  # type: ignore[union-attr]
    torrent.storage.close()
    again, _ = setup(tmp_path)
    said = await again.restore()
    # the record was not saved after the last write, so the file counts as changed and
    # its recorded pieces are hashed again: both good
    assert said is not None and said.startswith("2 of 4 pieces verified from the resume record")
    assert said.endswith(", 0 bad")
    assert again.missing_pieces() == [1, 2]
    without, _ = setup(tmp_path / "other", resume=False)
    assert await without.restore() is None  # no record, no data
    assert without.missing_pieces() == [0, 1, 2, 3]


async def test_a_piece_arriving_after_close_is_not_stored(tmp_path: Path) -> None:
    torrent, data = setup(tmp_path)
    torrent.close()
    assert not await torrent.piece_downloaded(0, piece(data, 0))
    assert torrent.missing_pieces() == [0, 1, 2, 3]
    assert not (tmp_path / "out" / "data.bin").exists()
    with pytest.raises(TorrentClosed, match="being closed"):
        await torrent.read(0, 10)


async def test_close_fails_a_waiting_read_and_a_piece_wakes_one(tmp_path: Path) -> None:
    torrent, data = setup(tmp_path)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def reader() -> None:
            got.append(await torrent.read(PIECE - 5, 10))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert torrent.counters.waited_pieces == {0, 1}
        assert await torrent.piece_downloaded(0, piece(data, 0))
        assert await torrent.piece_downloaded(1, piece(data, 1))
    assert got == [data[PIECE - 5 : PIECE + 5]]
    assert torrent.counters.waited_pieces == set()

    with pytest.RaisesGroup(pytest.RaisesExc(TorrentClosed, match="closed while a read waited")):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(torrent.read, 3 * PIECE, 50)
            await trio.testing.wait_all_tasks_blocked()
            torrent.close()
    torrent.storage.close()


def media_torrent(tmp_path: Path, name: str, pieces: int = 12,
                  piece_length: int = PIECE) -> Torrent:
    """A single-file torrent named `name`, with read-ahead."""
    original = make_random_file(tmp_path / "origin" / name, pieces * piece_length, seed=4)
    meta = parse_torrent(make_torrent(original, CreateOptions(piece_length=piece_length)))
    return Torrent(meta, Storage(meta.info, tmp_path / "out"), None, readahead=8 << 20)


def test_opening_a_media_file_fetches_its_head_and_tail_first(tmp_path: Path) -> None:
    torrent = media_torrent(tmp_path, "clip.MP4", pieces=40, piece_length=256 << 10)
    windows: dict[int, range] = {}
    torrent.on_readahead = windows.__setitem__
    torrent.open_reader(7, 0)
    assert windows[7] == range(0, 16)  # the head: 4 MiB
    tail_keys = [k for k in windows if k != 7]
    assert len(tail_keys) == 1 and windows[tail_keys[0]] == range(24, 40)  # the last 4 MiB
    torrent.close_reader(7)
    assert all(len(r) == 0 for r in windows.values())
    torrent.storage.close()


def test_opening_another_file_fetches_nothing_until_it_is_read(tmp_path: Path) -> None:
    torrent = media_torrent(tmp_path, "notes.txt")
    windows: dict[int, range] = {}
    torrent.on_readahead = windows.__setitem__
    torrent.open_reader(7, 0)
    assert windows == {}
    assert torrent.attributes(0)["readers"] == "1"
    torrent.storage.close()


async def test_a_read_after_a_seek_records_its_wait(
    tmp_path: Path, mock_clock: trio.testing.MockClock,
) -> None:
    """The wait of the read that follows a seek, in (virtual) seconds, per open file."""
    torrent = media_torrent(tmp_path, "notes.txt")
    data = (tmp_path / "origin" / "notes.txt").read_bytes()
    torrent.open_reader(3, 0)
    got: list[bytes] = []

    async def read() -> None:
        got.append(await torrent.read(5 * PIECE, 100, 3))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(5)
        assert await torrent.piece_downloaded(5, piece(data, 5))
    assert got == [data[5 * PIECE : 5 * PIECE + 100]]
    figures = torrent.attributes(0)
    assert figures["last_seek_wait"] == "5.000" and int(figures["readahead_window"]) > 0
    torrent.storage.close()


async def test_a_read_that_waited_takes_its_bytes_from_the_verified_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pieces a read waits on are handed to it as verified, without a read of the
    disk; a bad copy first is never handed over; later reads go to the disk again."""
    torrent, data = setup(tmp_path)
    disk_reads: list[tuple[int, int]] = []
    real_read = torrent.storage.read

    def read(offset: int, size: int) -> bytes:
        disk_reads.append((offset, size))
        return real_read(offset, size)

    monkeypatch.setattr(torrent.storage, "read", read)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def reader() -> None:
            got.append(await torrent.read(PIECE - 5, 10, 1))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not await torrent.piece_downloaded(0, bytes(PIECE))  # a liar's copy
        assert await torrent.piece_downloaded(0, piece(data, 0))
        assert await torrent.piece_downloaded(1, piece(data, 1))
    assert got == [data[PIECE - 5 : PIECE + 5]] and disk_reads == []
    assert await torrent.read(PIECE - 5, 10, 1) == data[PIECE - 5 : PIECE + 5]
    assert disk_reads == [(PIECE - 5, 10)]
    torrent.close()
    torrent.storage.close()
