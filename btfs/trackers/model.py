"""What the tracker client's codecs, transport and session have in common: what we
announce, what a tracker answers, and the errors a tracker can cause."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from btfs.errors import BtfsError
from btfs.trackerwire.events import CLIENT_EVENTS

SUPPORTED_SCHEMES = ("http", "https", "udp")


class TrackerError(BtfsError):
    """A tracker could not be reached, or answered something that is not a valid answer."""


class TrackerFailure(TrackerError):
    """The tracker answered with a `failure reason` (or a UDP error packet)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AnnounceParams:
    """What we tell the tracker about ourselves and this torrent. `key` is the announce
    key (BEP 3): it lets a tracker know us again when our address changes."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str = ""
    numwant: int = 50
    key: int = field(default_factory=lambda: secrets.randbits(32))

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20 or len(self.peer_id) != 20:
            raise ValueError("info_hash and peer_id must be 20 bytes each")
        if self.event not in CLIENT_EVENTS:
            raise ValueError(f"unknown announce event {self.event!r}")


@dataclass
class AnnounceResult:
    """A tracker's answer: when to come back and whom to contact."""

    interval: float
    min_interval: float | None = None
    peers: list[tuple[str, int]] = field(default_factory=list)
    complete: int | None = None
    incomplete: int | None = None
    warning: str | None = None


@dataclass
class ScrapeResult:
    """Swarm counts for one torrent: seeders, completed downloads, leechers."""

    complete: int
    downloaded: int
    incomplete: int


def url_scheme(url: str) -> str:
    """The lower-case scheme of a tracker URL, "" if it cannot be parsed."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def unique(peers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The peers without repeats, in their order."""
    return list(dict.fromkeys(peers))
