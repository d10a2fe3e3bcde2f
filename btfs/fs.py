"""The filesystem: pyfuse3 operations over one or more torrents, read-only.

A torrent's files never change, so its inodes are made when it joins the tree. A
library (`add_folder`, `remove_folder`) gives each torrent a folder of its own at the
top; a removed folder leaves the tree at once (its name is invalidated in the kernel)
while files already open stay readable, and `on_released` is told when the last of
them closes, so the session behind it can stop. A name longer than a path component
may be (255 bytes) is shown shortened (`metainfo.fit_name`), so FUSE can always hold
it. A read is `await source.read(...)` on the torrent session: the FUSE handler waits
on the trio loop for the pieces it needs, so a player opening a file in the mount
streams it.
Files are opened with `keep_cache`: their bytes can never change once verified, so
the kernel's page cache answers repeated reads.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyfuse3
import trio

from btfs.errors import BtfsError
from btfs.metainfo import Info, fit_name

log = logging.getLogger(__name__)

XATTR_PREFIX = "user.btfs."
BLOCK_SIZE = 4096


class TorrentSource(Protocol):
    """What the filesystem needs of a torrent session."""

    @property
    def info(self) -> Info: ...

    async def read(self, offset: int, size: int, reader: int) -> bytes:
        """Verified bytes of the torrent's byte stream; `reader` names one open file handle."""
        ...

    def open_reader(self, reader: int, file_index: int) -> None:
        """File handle `reader` was opened on file `file_index` (fetch what players need)."""
        ...

    def close_reader(self, reader: int) -> None: ...

    def attributes(self, file_index: int | None) -> dict[str, str]:
        """Status figures for a file (or the whole torrent, for None), as xattr values."""
        ...


@dataclass
class Node:
    inode: int
    name: bytes
    parent: int
    is_dir: bool
    source: TorrentSource | None = None
    file_index: int | None = None
    offset: int = 0
    size: int = 0
    executable: bool = False
    mtime_ns: int = 0
    children: dict[bytes, int] = field(default_factory=dict)


class TorrentFS(pyfuse3.Operations):
    """Read-only operations over the files of every mounted torrent."""

    def __init__(self, torrents: list[tuple[TorrentSource, int | None]]) -> None:
        """`torrents`: each session with its creation date (Unix time; None: now)."""
        super().__init__()
        self.uid = os.getuid()
        self.gid = os.getgid()
        now_ns = time.time_ns()
        root = Node(pyfuse3.ROOT_INODE, b"", pyfuse3.ROOT_INODE, True, mtime_ns=now_ns)
        self.nodes: dict[int, Node] = {root.inode: root}
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._handles: dict[int, Node] = {}
        self._next_handle = itertools.count(1)
        self._reads_in_flight = 0
        self._last_read = float("-inf")
        self._quiet: trio.Event | None = None
        # A library: the top folder of each torrent, the open handles per torrent, the
        # torrents removed while files of theirs were open, and the root's own xattrs.
        self.folders: dict[int, int] = {}  # id(source) -> inode of its folder
        self._open_count: dict[int, int] = {}
        self._removed: dict[int, TorrentSource] = {}
        self.on_released: Callable[[TorrentSource], None] = lambda source: None
        self.root_attributes: Callable[[], dict[str, str]] = dict
        self.mounted = False  # set once pyfuse3 serves it (the kernel can be told things)
        for source, created in torrents:
            mtime = created * 1_000_000_000 if created is not None else now_ns
            if len(torrents) == 1:
                root.mtime_ns = mtime
                root.source = source
            self._add_torrent(source, mtime)
        self.total_size = sum(n.size for n in self.nodes.values() if not n.is_dir)

    def show_at_root(self, source: TorrentSource, created: int | None) -> None:
        """The one torrent of a mount that was empty (a magnet's, once its metadata came)
        fills the root."""
        root = self.nodes[pyfuse3.ROOT_INODE]
        mtime = created * 1_000_000_000 if created is not None else time.time_ns()
        root.mtime_ns = mtime
        root.source = source
        self._add_torrent(source, mtime)
        self.total_size += source.info.total_length

    def add_folder(self, source: TorrentSource, name: str, created: int | None) -> int:
        """A library's torrent joins the tree as the top folder `name` (unique: the
        library's choice); its inode."""
        encoded = fit_name(name).encode()
        if encoded in self.nodes[pyfuse3.ROOT_INODE].children:
            raise BtfsError(f"{name!r} is already in this mount")
        mtime = created * 1_000_000_000 if created is not None else time.time_ns()
        folder = self._child_dir(pyfuse3.ROOT_INODE, encoded, mtime, source)
        self.folders[id(source)] = folder
        self._add_torrent(source, mtime, top=folder)
        self.total_size += source.info.total_length
        return folder

    def remove_folder(self, source: TorrentSource) -> bool:
        """Take a library's torrent out of the tree; True if no file of it is open (the
        session may stop now), else `on_released` says when the last one closes."""
        folder = self.folders.pop(id(source), None)
        if folder is None:
            return True
        root = self.nodes[pyfuse3.ROOT_INODE]
        name = self.nodes[folder].name
        if root.children.get(name) == folder:
            del root.children[name]
            self._forget_name(name)
        self.total_size -= source.info.total_length
        if self._open_count.get(id(source), 0):
            self._removed[id(source)] = source
            return False
        self._drop_nodes(source)
        return True

    def open_files(self, source: TorrentSource) -> int:
        return self._open_count.get(id(source), 0)

    def _forget_name(self, name: bytes) -> None:
        """Tell the kernel a top-level name is gone (it caches names for an hour)."""
        if not self.mounted:
            return
        try:
            pyfuse3.invalidate_entry_async(pyfuse3.ROOT_INODE, name)
        except Exception as exc:  # the queue is full
            log.debug("cannot invalidate %r: %s", name, exc)

    def _drop_nodes(self, source: TorrentSource) -> None:
        self._open_count.pop(id(source), None)
        for inode in [i for i, n in self.nodes.items() if n.source is source
                      and i != pyfuse3.ROOT_INODE]:
            del self.nodes[inode]

    def _add_torrent(self, source: TorrentSource, mtime_ns: int, top: int | None = None) -> None:
        info = source.info
        root_parent = pyfuse3.ROOT_INODE if top is None else top
        for index, f in enumerate(info.files):
            if f.padding:
                continue
            parts = (info.name, *f.path) if info.multi_file and top is None else f.path
            parent = root_parent
            for folder in parts[:-1]:
                parent = self._child_dir(parent, fit_name(folder).encode(), mtime_ns, source)
            name = fit_name(parts[-1]).encode()
            node = Node(
                next(self._next_inode), name, parent, False, source=source,
                file_index=index, offset=f.offset, size=f.length,
                executable=f.executable, mtime_ns=mtime_ns,
            )
            siblings = self.nodes[parent].children
            if name in siblings:
                raise BtfsError(f"two torrents in this mount both have {'/'.join(parts)!r}")
            siblings[name] = node.inode
            self.nodes[node.inode] = node

    def _child_dir(self, parent: int, name: bytes, mtime_ns: int, source: TorrentSource) -> int:
        existing = self.nodes[parent].children.get(name)
        if existing is not None:
            if not self.nodes[existing].is_dir:
                raise BtfsError(f"{name.decode(errors='replace')!r} is a file and a folder")
            return existing
        node = Node(next(self._next_inode), name, parent, True, source=source, mtime_ns=mtime_ns)
        self.nodes[node.inode] = node
        self.nodes[parent].children[name] = node.inode
        return node.inode

    def _node(self, inode: int) -> Node:
        try:
            return self.nodes[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.inode
        if node.is_dir:
            entry.st_mode = stat.S_IFDIR | 0o555
            entry.st_nlink = 2 + sum(1 for c in node.children.values() if self.nodes[c].is_dir)
            entry.st_size = 0
        else:
            entry.st_mode = stat.S_IFREG | (0o555 if node.executable else 0o444)
            entry.st_nlink = 1
            entry.st_size = node.size
        entry.st_uid = self.uid
        entry.st_gid = self.gid
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = -(-entry.st_size // 512)
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = node.mtime_ns
        # A torrent's tree never changes: the kernel may cache names and attributes for
        # long (a library's root changes: its removed names are invalidated).
        entry.entry_timeout = 3600
        entry.attr_timeout = 1 if node.inode == pyfuse3.ROOT_INODE else 3600
        return entry

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attributes(self._node(inode))

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._attributes(parent)
        if name == b"..":
            return self._attributes(self._node(parent.parent))
        child = parent.children.get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(self.nodes[child])

    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        node = self._node(fh)
        entries = sorted(node.children.items())
        for i in range(start_id, len(entries)):
            name, inode = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attributes(self.nodes[inode]), i + 1):
                return

    async def releasedir(self, fh: int) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        handle = next(self._next_handle)
        self._handles[handle] = node
        if node.source is not None and node.file_index is not None:
            key = id(node.source)
            self._open_count[key] = self._open_count.get(key, 0) + 1
            node.source.open_reader(handle, node.file_index)
        return pyfuse3.FileInfo(fh=handle, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        node = self._handles.get(fh)
        if node is None or node.source is None or node.is_dir:
            raise pyfuse3.FUSEError(errno.EBADF)
        if off >= node.size or size <= 0:
            return b""
        size = min(size, node.size - off)
        self._reads_in_flight += 1
        try:
            return await node.source.read(node.offset + off, size, fh)
        except BtfsError as exc:
            log.warning("read of %s failed: %s", node.name.decode(errors="replace"), exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            self._reads_in_flight -= 1
            self._last_read = trio.current_time()
            if self._reads_in_flight == 0 and self._quiet is not None:
                self._quiet.set()

    async def reads_answered(self, quiet: float = 0.2) -> None:
        """Until no read is in flight nor came for `quiet` s. At shutdown, reads fail with
        EIO before the FUSE connection ends (which would fail them with ENOTCONN): the
        kernel retries a failed read page by page, so one answer is not the last."""
        while True:
            while self._reads_in_flight:
                self._quiet = trio.Event()
                await self._quiet.wait()
            idle = trio.current_time() - self._last_read
            if idle >= quiet:
                return
            await trio.sleep(quiet - idle)

    async def release(self, fh: int) -> None:
        node = self._handles.pop(fh, None)
        if node is not None and node.source is not None:
            node.source.close_reader(fh)
            key = id(node.source)
            left = self._open_count.get(key, 0) - 1
            if left > 0:
                self._open_count[key] = left
                return
            self._open_count.pop(key, None)
            removed = self._removed.pop(key, None)
            if removed is not None:
                self._drop_nodes(removed)
                self.on_released(removed)

    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        return not mode & os.W_OK

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = -(-self.total_size // BLOCK_SIZE)
        data.f_bfree = data.f_bavail = 0
        data.f_files = len(self.nodes)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    def _xattrs(self, node: Node) -> dict[str, str]:
        values = node.source.attributes(node.file_index) if node.source is not None else {}
        if node.inode == pyfuse3.ROOT_INODE:
            values.update(self.root_attributes())
            values["pid"] = str(os.getpid())
        return values

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [(XATTR_PREFIX + k).encode() for k in self._xattrs(self._node(inode))]

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        key = name.decode(errors="replace")
        if not key.startswith(XATTR_PREFIX):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self._xattrs(self._node(inode)).get(key[len(XATTR_PREFIX) :])
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode()
