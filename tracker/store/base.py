"""The interface every swarm store offers the HTTP and UDP shells, and what they share.

A store's `announce` checks the request at once (raising `BadRequest` or
`AnnounceRefused` synchronously) and returns an awaitable answer. The in-memory store's
answer is already there (`Ready`: awaiting it never suspends); the Redis store's is a
reply still on its way, so a shell can start many announces (a batch of datagrams)
before it awaits the first, and they travel to Redis in one write. Awaiting may raise
`AnnounceRefused` or `StoreUnavailable`. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from btfs.trackerwire import compact as compact_address
from btfs.trackerwire.events import ANNOUNCE_EVENTS
from tracker.errors import ERROR_KINDS, BadRequest

DEFAULT_NUMWANT = 50
MAX_NUMWANT = 200
TOP_TORRENTS = 20  # rows of the per-torrent view of /stats

# Which address families a caller wants peers of (UDP answers carry one family only).
WANT_V4 = 1
WANT_V6 = 2
WANT_BOTH = WANT_V4 | WANT_V6

ScrapeEntry = tuple[int, int, int]  # (complete, downloaded, incomplete)

T = TypeVar("T")


class Ready(Generic[T]):
    """An answer that is already known, as an awaitable that never suspends."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        yield from ()  # a generator that returns at once
        return self.value


class Outcome(Protocol):
    """What an announce answers: the counts, and the chosen peers in the forms the
    encoders need."""

    complete: int
    incomplete: int
    interval: int
    min_interval: int

    def compact4(self) -> bytes: ...

    def compact6(self) -> bytes: ...

    def entries(self) -> list[tuple[bytes, str, int]]:
        """(peer_id, ip, port) of every chosen peer, IPv4 first (non-compact answers)."""
        ...


@dataclass(slots=True)
class PackedOutcome:
    """An `Outcome` as packed strings: the compact entries of each family, and (when asked
    for) the 20-byte peer ids in the same order."""

    peers4: bytes
    peers6: bytes
    complete: int
    incomplete: int
    interval: int
    min_interval: int
    ids4: bytes = b""
    ids6: bytes = b""

    def compact4(self) -> bytes:
        return self.peers4

    def compact6(self) -> bytes:
        return self.peers6

    def entries(self) -> list[tuple[bytes, str, int]]:
        found: list[tuple[bytes, str, int]] = []
        for blob, ids, size in ((self.peers4, self.ids4, 6), (self.peers6, self.ids6, 18)):
            for n, at in enumerate(range(0, len(blob), size)):
                ip, port = compact_address.unpack(blob[at : at + size])
                found.append((ids[20 * n : 20 * n + 20], ip, port))
        return found

    def addresses4(self) -> list[tuple[str, int]]:
        return [compact_address.unpack(self.peers4[i : i + 6])
                for i in range(0, len(self.peers4), 6)]

    def addresses6(self) -> list[tuple[str, int]]:
        return [compact_address.unpack(self.peers6[i : i + 18])
                for i in range(0, len(self.peers6), 18)]


class Counters:
    """What one tracker process has answered: announces and scrapes by protocol, errors by
    kind. Per process even when the swarms are shared (each worker counts its own)."""

    __slots__ = ("announces", "errors", "scrapes")

    def __init__(self) -> None:
        self.announces: dict[str, int] = {"http": 0, "udp": 0}
        self.scrapes: dict[str, int] = {"http": 0, "udp": 0}
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"announces": dict(self.announces), "scrapes": dict(self.scrapes),
                "errors": dict(self.errors)}


def clamp_numwant(numwant: int) -> int:
    """A client's numwant as the stores use it: negative means the default."""
    if numwant < 0:
        return DEFAULT_NUMWANT
    return min(numwant, MAX_NUMWANT)


def check_announce(
    info_hash: bytes, peer_id: bytes, ip: str, port: int, uploaded: int, downloaded: int,
    left: int, event: str, compact: bytes | None,
) -> bytes:
    """Validate an announce's fields; the peer's packed address. Raises `BadRequest`."""
    if len(info_hash) != 20:
        raise BadRequest("info_hash must be 20 bytes")
    if len(peer_id) != 20:
        raise BadRequest("peer_id must be 20 bytes")
    if uploaded < 0 or downloaded < 0 or left < 0:
        raise BadRequest("negative uploaded, downloaded or left")
    if event not in ANNOUNCE_EVENTS:
        raise BadRequest(f"unknown event {event[:20]!r}")
    if compact is None:
        try:
            return compact_address.pack(ip, port)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    if len(compact) not in (6, 18):
        raise BadRequest("invalid compact address")
    return compact


def top_rows(rows: Iterable[tuple[bytes, int, int, int]], count: int) -> list[dict[str, Any]]:
    """The per-torrent view: (info_hash, complete, downloaded, incomplete) rows, the
    `count` torrents with the most peers first (ties by info-hash)."""
    ranked = sorted(rows, key=lambda r: (-(r[1] + r[3]), r[0]))[:count]
    return [{"info_hash": h.hex(), "peers": c + i, "seeders": c, "leechers": i,
             "completed": d} for h, c, d, i in ranked]


class Store(Protocol):
    """What the shells use; see the module docstring for the awaitable answers."""

    interval: int
    min_interval: int
    counters: Counters

    @property
    def available(self) -> bool:
        """Whether announces can be answered now (False while Redis is unreachable)."""
        ...

    def announce(
        self, info_hash: bytes, peer_id: bytes, ip: str, port: int, uploaded: int,
        downloaded: int, left: int, event: str, numwant: int, now: float, *,
        protocol: str = "http", families: int = WANT_BOTH, compact: bytes | None = None,
        with_ids: bool = False,
    ) -> Awaitable[Outcome]: ...

    def scrape(
        self, hashes: list[bytes], now: float, *, protocol: str = "http"
    ) -> Awaitable[dict[bytes, ScrapeEntry]]: ...

    def scrape_all(self, now: float, *, protocol: str = "http"
                   ) -> Awaitable[dict[bytes, ScrapeEntry]]: ...

    def count_error(self, kind: str) -> None: ...

    def stats(self, now: float, top: int = TOP_TORRENTS) -> Awaitable[dict[str, Any]]:
        """Counters of this process, swarm figures of the store, and the `top` torrents."""
        ...

    def set_whitelist(self, whitelist: set[bytes] | None) -> None: ...

    def maintain(self, now: float) -> Awaitable[int]:
        """Periodic upkeep (expiry); the number of peers dropped."""
        ...
