"""Torrent sessions never hand out bytes that fail SHA-1, whatever happens to the disk.

Each test builds a small torrent over real files in tmp_path, then changes, truncates or
fills what is on disk, and checks what reads, uploads and the start-up check do.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import trio

from btfs import torrent as torrent_module
from btfs.metainfo import FileEntry, Info, Metainfo
from btfs.storage import ResumeLog, Storage, WriteError
from btfs.torrent import CannotStore, Torrent

PLEN = 64


def make_meta(sizes: list[int], seed: int = 0) -> tuple[Metainfo, bytes]:
    """A multi-file torrent of random bytes; returns it and its byte stream."""
    stream = random.Random(seed).randbytes(sum(sizes))
    files, offset = [], 0
    for i, size in enumerate(sizes):
        files.append(FileEntry((f"f{i}",), size, offset))
        offset += size
    hashes = b"".join(hashlib.sha1(stream[i : i + PLEN]).digest()
                      for i in range(0, len(stream), PLEN))
    info = Info(name="t", piece_length=PLEN, pieces=hashes, files=tuple(files),
                multi_file=True)
    return Metainfo(info=info, info_hash=b"\0" * 20, raw_info=b""), stream


def open_session(meta: Metainfo, cache: Path) -> Torrent:
    storage = Storage(meta.info, cache / "files", by_index=True)
    resume = ResumeLog(cache / "resume", meta.info.num_pieces, len(meta.info.files))
    return Torrent(meta, storage, resume)


def overwrite(path: Path, offset: int, data: bytes) -> None:
    """Change bytes of a file in place, as a user (or bit rot) would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


async def fill(torrent: Torrent, stream: bytes) -> None:
    for piece in range(torrent.info.num_pieces):
        assert await torrent.piece_downloaded(piece, stream[piece * PLEN : (piece + 1) * PLEN])


async def close(torrent: Torrent) -> None:
    torrent.close()
    await torrent.save_resume()
    torrent.storage.close()
    assert torrent.resume is not None
    torrent.resume.close()


async def test_a_cache_changed_or_truncated_between_sessions_is_checked(tmp_path: Path) -> None:
    meta, stream = make_meta([300, 200, 140])
    first = open_session(meta, tmp_path)
    assert await first.restore() is None
    await fill(first, stream)
    await close(first)

    overwrite(tmp_path / "files" / "0", 100, bytes(b ^ 0xFF for b in stream[100:104]))  # piece 1
    os.truncate(tmp_path / "files" / "2", 30)  # file 2 is bytes 500-639: pieces 8 and 9 lose bytes

    second = open_session(meta, tmp_path)
    line = await second.restore()
    assert "from the resume record" in line and "2 file(s) changed" in line
    assert second.verified == set(range(10)) - {1, 8, 9}
    assert await second.read(0, 64) == stream[:64]
    await close(second)
    third = open_session(meta, tmp_path)  # the bad pieces stay out of the record
    await third.restore()
    assert third.verified == set(range(10)) - {1, 8, 9}
    await close(third)


@pytest.mark.parametrize("record", [b"", b"\x00\x00\x00\x01" * 50])
async def test_a_damaged_record_means_the_data_is_checked(tmp_path: Path, record: bytes) -> None:
    meta, stream = make_meta([300, 200])
    first = open_session(meta, tmp_path)
    await first.restore()
    await fill(first, stream)
    await close(first)
    overwrite(tmp_path / "files" / "1", 0, b"x")  # piece 4 (bytes 256-319) is now bad
    (tmp_path / "resume").write_bytes(record)
    second = open_session(meta, tmp_path)
    line = await second.restore()
    assert "checked the data" in line and "damaged" in line
    assert second.verified == set(range(8)) - {4}
    await close(second)


async def test_a_file_changed_during_the_session_is_refetched_not_served(tmp_path: Path) -> None:
    meta, stream = make_meta([256, 256])
    torrent = open_session(meta, tmp_path)
    await torrent.restore()
    await fill(torrent, stream)
    unverified: list[int] = []
    torrent.on_unverified = unverified.append

    async def refetch(pieces: list[int]) -> None:
        for p in pieces:
            assert await torrent.piece_downloaded(p, stream[p * PLEN : (p + 1) * PLEN])

    async with trio.open_nursery() as nursery:
        torrent.on_urgent = lambda pieces: nursery.start_soon(refetch, pieces)
        overwrite(tmp_path / "files" / "1", 0, b"bad!")  # piece 4
        assert await torrent.read(200, 200) == stream[200:400]
        assert unverified == [4]
        os.truncate(tmp_path / "files" / "0", 100)  # pieces 1-3 short
        assert await torrent.read(0, 512) == stream
        assert sorted(unverified) == [1, 2, 3, 4]
    await close(torrent)


async def test_uploads_hash_each_piece_once_and_refuse_changed_ones(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    meta, stream = make_meta([256, 192])
    data = tmp_path / "seeded" / "t"
    data.mkdir(parents=True)
    (data / "f0").write_bytes(stream[:256])
    (data / "f1").write_bytes(stream[256:])
    storage = Storage(meta.info, data.parent, read_only=True)
    torrent = Torrent(meta, storage, None)
    assert await torrent.check_data() == 7
    hashed: list[int] = []
    real = Torrent._bad_pieces

    def counting(self: Torrent, pieces: set[int]) -> set[int]:
        hashed.extend(pieces)
        return real(self, pieces)

    monkeypatch.setattr(Torrent, "_bad_pieces", counting)
    unverified: list[int] = []
    torrent.on_unverified = unverified.append
    requests = [(0, 0, 16), (0, 16, 16), (5, 32, 32), (6, 60, 4), (6, 0, 65), (7, 0, 1)]
    got = await torrent.read_blocks_for_upload(requests)
    assert got == [stream[0:16], stream[16:32], stream[352:384], stream[444:448], None, None]
    assert hashed == []  # the start-up check counts as the first

    overwrite(data / "f1", 100, b"changed")  # piece 5 (bytes 320-383 of the stream)
    got = await torrent.read_blocks_for_upload([(5, 0, 16), (2, 0, 16)])
    assert got == [None, stream[128:144]]
    assert unverified == [5] and 5 not in torrent.verified
    assert sorted(hashed) == [4, 5, 6]  # the changed file's verified pieces, once
    hashed.clear()
    got = await torrent.read_blocks_for_upload([(4, 0, 16), (4, 16, 16), (5, 0, 16)])
    assert got == [stream[256:272], stream[272:288], None]
    assert hashed == []
    storage.close()


async def test_a_piece_verified_in_this_run_is_hashed_from_disk_before_its_first_upload(
        tmp_path: Path) -> None:
    meta, stream = make_meta([128])
    torrent = open_session(meta, tmp_path)
    await torrent.restore()
    await fill(torrent, stream)
    overwrite(tmp_path / "files" / "0", 0, b"rot")  # the mtime moves; suppose it did not:
    st = os.stat(tmp_path / "files" / "0")
    known = torrent.storage.known_stamp(0)
    assert known is not None
    os.utime(tmp_path / "files" / "0", ns=(st.st_atime_ns, known[2]))
    assert await torrent.read_blocks_for_upload([(0, 0, 16), (1, 0, 16)]) == [
        None, stream[64:80]]
    await close(torrent)


class FullDisk(Storage):
    """Storage whose writes fail until `space` is set."""

    space = False

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self.space:
            raise WriteError(f"{self.root}: No space left on device")
        super().write(offset, data)

    def free_space(self) -> int | None:
        return 1 << 30 if self.space else 0


async def test_a_full_disk_fails_the_reads_that_need_space_and_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torrent_module, "SPACE_POLL", 0.01)
    meta, stream = make_meta([256])
    storage = FullDisk(meta.info, tmp_path / "files", by_index=True)
    torrent = Torrent(meta, storage, None)
    await torrent.restore()
    storage.space = True
    assert await torrent.piece_downloaded(0, stream[:64])
    storage.space = False
    states: list[bool] = []
    torrent.on_disk_full = states.append
    stored: list[bool] = []

    async def store(piece: int) -> None:
        stored.append(await torrent.piece_downloaded(piece, stream[piece * 64 :][:64]))

    async with trio.open_nursery() as nursery:
        reads: list[BaseException] = []
        failed = trio.Event()

        async def read_piece_2() -> None:
            try:
                await torrent.read(128, 10)
            except CannotStore as exc:
                reads.append(exc)
                failed.set()

        nursery.start_soon(read_piece_2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(store, 2)
        await failed.wait()
        assert "No space left on device" in str(reads[0])
        assert states == [True] and torrent.disk_full
        assert "No space left" in torrent.attributes(None)["problem"]
        assert await torrent.read(0, 64) == stream[:64]  # verified pieces stay readable
        with pytest.raises(CannotStore):
            await torrent.read(192, 10)
        storage.space = True
    assert stored == [True] and states == [True, False] and not torrent.disk_full
    assert await torrent.read(128, 64) == stream[128:192]
    storage.close()
