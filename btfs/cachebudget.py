"""Which verified pieces to evict from a bounded cache. Pure: no clock, no disk.

Every piece stored in the cache (of any torrent of the mount) is counted with its size,
in the order it was last read (a piece stored and never read counts from when it was
stored). Before a piece is written, `make_room` reserves its size and names the pieces
to evict first so that what is stored stays within the limit: the least recently read,
skipping those the caller says are pinned (a read waits on them, they are in a reader's
read-ahead window or among an open file's last reads, or they are being read). When
only pinned pieces are left, the reservation is made anyway: the pieces being written
are the only excess (the pieces "in flight"), and the next `make_room` evicts it back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class CacheBudget(Generic[Key]):
    """Sizes of the stored pieces (keys), least recently read first, against a limit."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("the limit must be positive")
        self.limit = limit
        self.used = 0
        self._sizes: OrderedDict[Key, int] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def add(self, key: Key, size: int) -> None:
        """A piece already in the cache (restored at start): counted, as least recent."""
        if key in self._sizes:
            return
        self._sizes[key] = size
        self._sizes.move_to_end(key, last=False)
        self.used += size

    def make_room(self, key: Key, size: int, pinned: Callable[[Key], bool]) -> list[Key]:
        """Reserve `size` bytes for piece `key`, about to be written; the pieces to evict
        first (no longer counted), least recently read first."""
        evict = self.over_limit(size, pinned, exclude=key)
        if key not in self._sizes:
            self._sizes[key] = size
            self.used += size
        else:
            self._sizes.move_to_end(key)
        return evict

    def over_limit(self, extra: int, pinned: Callable[[Key], bool],
                   exclude: Key | None = None) -> list[Key]:
        """The pieces to evict (no longer counted) so that `extra` more bytes fit."""
        return self.free(self.used + extra - self.limit, pinned, exclude)

    def free(self, size: int, pinned: Callable[[Key], bool],
             exclude: Key | None = None) -> list[Key]:
        """The least recently read unpinned pieces holding at least `size` bytes (fewer
        if not enough may go), no longer counted."""
        evict: list[Key] = []
        if size <= 0:
            return evict
        for candidate, stored in self._sizes.items():
            if size <= 0:
                break
            if candidate == exclude or pinned(candidate):
                continue
            evict.append(candidate)
            size -= stored
        for candidate in evict:
            self.used -= self._sizes.pop(candidate)
        return evict

    def read(self, keys: Iterable[Key]) -> None:
        """Pieces were read: they become the most recently used."""
        for key in keys:
            if key in self._sizes:
                self._sizes.move_to_end(key)

    def remove(self, key: Key) -> None:
        """The piece is no longer in the cache (its write failed, its torrent left)."""
        size = self._sizes.pop(key, None)
        if size is not None:
            self.used -= size

    def stored(self) -> list[Key]:
        """Every counted piece, least recently read first."""
        return list(self._sizes)


def kept_order(verified: Iterable[int], saved: Iterable[int]) -> list[int]:
    """A kept cache's pieces, least recently read first: those the last mount never read
    (lowest index first), then `saved` (its order at unmount, least recent first), each
    once and only if still verified."""
    have = set(verified)
    listed = list(dict.fromkeys(p for p in saved if p in have))
    return sorted(have.difference(listed)) + listed
