"""The announce-list's tiers (BEP 12): which tracker URL to try next."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence

from btfs.trackers.model import SUPPORTED_SCHEMES, url_scheme

log = logging.getLogger(__name__)


class TrackerTiers:
    """The announce-list: each tier shuffled once; a URL that answers moves to its front."""

    def __init__(self, announce_list: Sequence[Sequence[str]], rng: random.Random | None = None):
        rng = rng or random.Random()
        self.tiers: list[list[str]] = []
        seen: set[str] = set()
        for tier in announce_list:
            urls = []
            for url in tier:
                url = url.strip()
                if not url or url in seen:
                    continue
                seen.add(url)
                if url_scheme(url) not in SUPPORTED_SCHEMES:
                    log.info("skipping tracker %s: unsupported scheme", url)
                    continue
                urls.append(url)
            rng.shuffle(urls)
            if urls:
                self.tiers.append(urls)

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self.tiers)

    def __len__(self) -> int:
        return len(self.tiers)

    def urls(self) -> list[str]:
        """Every URL, tier by tier, in the order they will be tried."""
        return [url for tier in self.tiers for url in tier]

    def promote(self, url: str) -> None:
        """`url` answered: it is tried first in its tier from now on."""
        for tier in self.tiers:
            if url in tier:
                tier.remove(url)
                tier.insert(0, url)
                return
