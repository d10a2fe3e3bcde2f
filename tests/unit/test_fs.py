"""The filesystem's operations called directly, for what the kernel never asks of a real
mount (it answers "." and "..", EISDIR, EROFS, ENOTDIR and reads past the end itself) and
for several torrents in one tree, which `btfs mount` does not make yet."""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest

from btfs.errors import BtfsError
from btfs.fs import TorrentFS
from btfs.metainfo import FileEntry, Info


def info(name: str, files: dict[str, int]) -> Info:
    entries, offset = [], 0
    for path, size in files.items():
        entries.append(FileEntry(tuple(path.split("/")), size, offset))
        offset += size
    return Info(name=name, piece_length=16384, pieces=b"\0" * 20 * (-(-offset // 16384)),
                files=tuple(entries), multi_file=True)


class Source:
    """A torrent session whose bytes are all verified: byte i of the stream is i % 251."""

    def __init__(self, info: Info) -> None:
        self.info = info
        self.closed: list[int] = []
        self.opened: list[tuple[int, int]] = []

    async def read(self, offset: int, size: int, reader: int) -> bytes:
        return bytes(i % 251 for i in range(offset, offset + size))

    def open_reader(self, reader: int, file_index: int) -> None:
        self.opened.append((reader, file_index))

    def close_reader(self, reader: int) -> None:
        self.closed.append(reader)

    def attributes(self, file_index: int | None) -> dict[str, str]:
        return {"size": "0"}


def errno_of(excinfo: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return excinfo.value.errno


async def test_two_torrents_share_a_folder_and_clashes_are_refused() -> None:
    a = Source(info("Shared", {"a.bin": 10}))
    b = Source(info("Shared", {"b.bin": 20, "sub/c.bin": 5}))
    fs = TorrentFS([(a, 0), (b, None)])
    shared = await fs.lookup(pyfuse3.ROOT_INODE, b"Shared")
    names = {n for n in fs.nodes[shared.st_ino].children}
    assert names == {b"a.bin", b"b.bin", b"sub"}
    with pytest.raises(BtfsError, match=r"both have 'Shared/a\.bin'"):
        TorrentFS([(a, 0), (Source(info("Shared", {"a.bin": 3})), 0)])
    with pytest.raises(BtfsError, match=r"'a\.bin' is a file and a folder"):
        TorrentFS([(a, 0), (Source(info("Shared", {"a.bin/x": 3})), 0)])


async def test_what_the_kernel_would_have_refused() -> None:
    source = Source(info("T", {"f.bin": 100, "d/g.bin": 5}))
    fs = TorrentFS([(source, 0)])
    top = (await fs.lookup(pyfuse3.ROOT_INODE, b"T")).st_ino
    f = (await fs.lookup(top, b"f.bin")).st_ino
    assert (await fs.lookup(top, b".")).st_ino == top
    assert (await fs.lookup(top, b"..")).st_ino == pyfuse3.ROOT_INODE
    for call, code in [(fs.getattr(12345), errno.ENOENT), (fs.lookup(top, b"nope"), errno.ENOENT),
                       (fs.opendir(f, None), errno.ENOTDIR), (fs.open(top, os.O_RDONLY, None),
                                                              errno.EISDIR),
                       (fs.open(f, os.O_WRONLY, None), errno.EROFS),
                       (fs.read(999, 0, 10), errno.EBADF)]:
        with pytest.raises(pyfuse3.FUSEError) as refused:
            await call
        assert errno_of(refused) == code
    assert not await fs.access(f, os.W_OK, None) and await fs.access(f, os.R_OK, None)
    handle = (await fs.open(f, os.O_RDONLY, None)).fh
    assert await fs.read(handle, 98, 10) == bytes([98, 99])
    assert await fs.read(handle, 100, 10) == b""
    assert await fs.read(handle, 5, 0) == b""
    await fs.release(handle)
    assert source.closed == [handle]
    with pytest.raises(pyfuse3.FUSEError):
        await fs.read(handle, 0, 1)


async def test_library_folders_come_and_go_and_open_files_outlive_their_folder() -> None:
    fs = TorrentFS([])
    a = Source(info("Movie", {"a.mkv": 10}))
    b = Source(info("Show", {"s1/e1.mkv": 20, "notes.txt": 3}))
    fs.add_folder(a, "Movie", 0)
    folder = fs.add_folder(b, "Show", None)
    with pytest.raises(BtfsError, match="already in this mount"):
        fs.add_folder(Source(info("X", {"x": 1})), "Show", 0)
    assert sorted(fs.nodes[pyfuse3.ROOT_INODE].children) == [b"Movie", b"Show"]
    assert sorted(fs.nodes[folder].children) == [b"notes.txt", b"s1"]  # no second "Show"
    assert fs.total_size == 33
    notes = (await fs.lookup(folder, b"notes.txt")).st_ino
    handle = (await fs.open(notes, os.O_RDONLY, None)).fh
    released: list[object] = []
    fs.on_released = released.append
    assert fs.remove_folder(b) is False  # a file is open: the session stays for now
    with pytest.raises(pyfuse3.FUSEError):
        await fs.lookup(pyfuse3.ROOT_INODE, b"Show")
    assert fs.total_size == 10
    assert await fs.read(handle, 0, 3) == bytes(range(20, 23))  # still readable
    await fs.release(handle)
    assert released == [b] and notes not in fs.nodes and folder not in fs.nodes
    assert fs.remove_folder(a) is True and fs.remove_folder(a) is True
    assert fs.nodes[pyfuse3.ROOT_INODE].children == {}
