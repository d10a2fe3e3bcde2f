"""The HTTP layer's `Catalog` over a mount's `Library`: its torrents, adding and removing.

Every mount is a library (one torrent shown flat, or a folder per torrent), so this is the
catalog of every mount; a flat mount refuses add and remove as `btfs add` does (409).
"""

from __future__ import annotations

from collections.abc import Sequence

from btfs.errors import BtfsError
from btfs.http.catalog import BadSource, CannotChange, ServedTorrent, UnknownTorrent
from btfs.library import Library, LibraryError
from btfs.magnet import Magnet, parse_magnet
from btfs.metainfo import Metainfo, parse_torrent


class LibraryCatalog:
    """A `Catalog` of the library's torrents, as they are at each call."""

    def __init__(self, library: Library) -> None:
        self.library = library

    @property
    def can_change(self) -> bool:
        return not self.library.options.flat

    def torrents(self) -> Sequence[ServedTorrent]:
        return [entry.torrent for entry in self.library.entries.values()]

    def find(self, info_hash_hex: str) -> ServedTorrent | None:
        try:
            entry = self.library.get(bytes.fromhex(info_hash_hex))
        except ValueError:
            return None
        return entry.torrent if entry is not None else None

    async def add(self, source: str | bytes) -> str:
        if not self.can_change:
            raise CannotChange("this mount holds one torrent with its files at the top: "
                               "mount several sources or --watch DIR for a library")
        parsed: Metainfo | Magnet
        try:
            parsed = parse_magnet(source) if isinstance(source, str) else parse_torrent(source)
        except BtfsError as exc:
            raise BadSource(str(exc)) from None
        try:
            entry = await self.library.add(parsed)
        except LibraryError as exc:
            raise CannotChange(str(exc)) from None
        return entry.meta.info_hash_hex

    async def remove(self, info_hash_hex: str) -> None:
        if self.find(info_hash_hex) is None:
            raise UnknownTorrent(f"no torrent {info_hash_hex} in this mount")
        try:
            await self.library.remove(info_hash_hex)
        except LibraryError as exc:
            raise CannotChange(str(exc)) from None
