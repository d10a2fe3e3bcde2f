"""What the HTTP layer needs of a mount: its torrents, found by info-hash; adding and removing.

`Catalog` is the interface; `SingleTorrent` implements it for a mount of one torrent,
which cannot add or remove (a clear 409). A library mount (several torrents, added and
removed live) implements the same protocol; its errors are the `CatalogError` kinds here,
each with the HTTP status the API answers with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from btfs.errors import BtfsError
from btfs.metainfo import Info, Metainfo


class CatalogError(BtfsError):
    """An add or remove the mount refuses; `status` is the HTTP answer."""

    status = 400


class BadSource(CatalogError):
    """Not a magnet URI or a .torrent file."""

    status = 400


class UnknownTorrent(CatalogError):
    status = 404


class CannotChange(CatalogError):
    """This mount cannot add or remove torrents (it holds one), or not this one now."""

    status = 409


class ServedTorrent(Protocol):
    """One torrent as the HTTP layer reads it: the same door as FUSE reads (`Torrent`)."""

    @property
    def meta(self) -> Metainfo: ...

    @property
    def info(self) -> Info: ...

    @property
    def verified(self) -> set[int]:
        """The pieces verified so far (for progress bars)."""
        ...

    async def read(self, offset: int, size: int, reader: int) -> bytes:
        """Verified bytes of the torrent's byte stream, waiting for missing pieces first."""
        ...

    def open_reader(self, reader: int, file_index: int) -> None: ...

    def close_reader(self, reader: int) -> None: ...

    def attributes(self, file_index: int | None) -> dict[str, str]:
        """Status figures (progress, peers, rates) as `btfs status` shows them."""
        ...


class Catalog(Protocol):
    """The torrents of a mount, as the HTTP server and its API see them."""

    @property
    def can_change(self) -> bool:
        """Whether `add` and `remove` can work at all (the page shows the form either way)."""
        ...

    def torrents(self) -> Sequence[ServedTorrent]:
        """The torrents whose files can be read now, in a stable order."""
        ...

    def find(self, info_hash_hex: str) -> ServedTorrent | None:
        """The torrent of this (lower-case hex) info-hash, if the mount holds it."""
        ...

    async def add(self, source: str | bytes) -> str:
        """Add a magnet URI (str) or a .torrent file's bytes; returns the info-hash (hex).
        Raises a `CatalogError`."""
        ...

    async def remove(self, info_hash_hex: str) -> None:
        """Remove a torrent from the mount; raises a `CatalogError`."""
        ...


class SingleTorrent:
    """The catalog of an ordinary mount: one torrent, fixed for the mount's life."""

    def __init__(self, torrent: ServedTorrent) -> None:
        self.torrent = torrent

    @property
    def can_change(self) -> bool:
        return False

    def torrents(self) -> Sequence[ServedTorrent]:
        return [self.torrent]

    def find(self, info_hash_hex: str) -> ServedTorrent | None:
        return self.torrent if info_hash_hex == self.torrent.meta.info_hash_hex else None

    async def add(self, source: str | bytes) -> str:
        raise CannotChange("this mount holds one torrent; use a library mount to add torrents")

    async def remove(self, info_hash_hex: str) -> None:
        if self.find(info_hash_hex) is None:
            raise UnknownTorrent(f"no torrent {info_hash_hex} in this mount")
        raise CannotChange("this mount holds one torrent; unmount it to remove it "
                           "(a library mount can remove torrents)")
