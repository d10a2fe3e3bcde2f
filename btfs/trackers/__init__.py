"""The tracker client: HTTP(S) and UDP announces and scrapes, tiers, and a per-torrent session.

- `model`: what we announce (`AnnounceParams`), what trackers answer, `TrackerError`.
- `http`, `udp`: the pure codecs (URLs and bencoded answers; BEP 15 packets on top of
  the shared `btfs.trackerwire.bep15`).
- `tiers`: the announce-list (BEP 12).
- `transport`: one announce or scrape over the network (trio), UDP connection ids.
- `session`: `TrackerSession`, a torrent kept announced to every tier.

Specifications: BEP 3 (announce), BEP 7 (`peers6`), BEP 12 (announce-list tiers),
BEP 15 (UDP trackers), BEP 23 (compact peers), BEP 48 (scrape).
"""

from btfs.trackers.model import (
    AnnounceParams,
    AnnounceResult,
    ScrapeResult,
    TrackerError,
    TrackerFailure,
)
from btfs.trackers.session import TrackerSession
from btfs.trackers.tiers import TrackerTiers
from btfs.trackers.transport import CONNECTION_IDS, ConnectionIds, announce, scrape

__all__ = [
    "CONNECTION_IDS",
    "AnnounceParams",
    "AnnounceResult",
    "ConnectionIds",
    "ScrapeResult",
    "TrackerError",
    "TrackerFailure",
    "TrackerSession",
    "TrackerTiers",
    "announce",
    "scrape",
]
