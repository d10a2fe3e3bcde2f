"""When to say that a swarm has had no peer for a while; pure.

A mount or a download that waits without a peer says so in its log ("no peers for 30 s"),
then again after twice as long each time (60 s, 120 s, ...), so a long wait is explained
without filling the log; a peer, or having nothing left to fetch, starts over.
"""

from __future__ import annotations

FIRST_NOTICE = 30.0


class NoPeersNotice:
    def __init__(self, first: float = FIRST_NOTICE) -> None:
        self.first = first
        self.since: float | None = None
        self.next_notice = first

    def due(self) -> float | None:
        """When the next notice is due (a time like `observe`'s `now`), if counting."""
        return None if self.since is None else self.since + self.next_notice

    def observe(self, now: float, peers: int, wanting: bool) -> float | None:
        """Seconds without a peer when a notice is due now, else None. `wanting`: there
        is still something to fetch."""
        if peers > 0 or not wanting:
            self.since = None
            self.next_notice = self.first
            return None
        if self.since is None:
            self.since = now
        alone = now - self.since
        if alone < self.next_notice:
            return None
        while self.next_notice <= alone:
            self.next_notice *= 2
        return alone
