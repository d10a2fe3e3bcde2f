"""A one-file pyfuse3 filesystem, to prove the FUSE test machinery before btfs mounts exist.

    python -m tests.support.hellofs MOUNTPOINT
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any

import pyfuse3
import trio

CONTENT = b"hello from fuse\n"
NAME = b"hello.txt"
FILE_INODE = pyfuse3.ROOT_INODE + 1


class HelloFS(pyfuse3.Operations):
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        if inode == pyfuse3.ROOT_INODE:
            entry.st_mode = stat.S_IFDIR | 0o555
            entry.st_nlink = 2
        elif inode == FILE_INODE:
            entry.st_mode = stat.S_IFREG | 0o444
            entry.st_size = len(CONTENT)
            entry.st_nlink = 1
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        entry.st_ino = inode
        return entry

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if parent != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE_INODE)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(token, NAME, await self.getattr(FILE_INODE), 1)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return CONTENT[off : off + size]


def main() -> None:
    mountpoint = sys.argv[1]
    options = set(pyfuse3.default_options)
    options.add("fsname=hellofs")
    pyfuse3.init(HelloFS(), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=os.path.ismount(mountpoint))


if __name__ == "__main__":
    main()
