"""How a waiting read is served on a swarm of limited bandwidth. Pure.

Two decisions the swarm makes when a read waits: whether the background requests queued
at a peer are worth cancelling (they would hold the read up by more than `PREEMPT_AFTER`
seconds of the peer's rate), and how to spread the read's blocks over the peers that
have them (each block to the peer that would deliver it soonest, given its rate and what
it has queued), so a read is not left to the first peer alone.
"""

from __future__ import annotations

from collections.abc import Sequence

PREEMPT_AFTER = 0.05       # seconds of a peer's queue worth cancelling for a waiting read
UNKNOWN_RATE = 256 * 1024  # what a peer not yet measured is assumed to send, bytes/s


def worth_preempting(queued_bytes: int, rate: float) -> bool:
    """Would `queued_bytes` ahead at a peer sending `rate` bytes/s delay a read?"""
    return queued_bytes > 0 and (rate <= 0 or queued_bytes / rate >= PREEMPT_AFTER)


def spread(rates: Sequence[float], queued_bytes: Sequence[int], blocks: int,
           block_size: int) -> list[int]:
    """How many of `blocks` to ask of each peer (by expected arrival); 0 rates unknown."""
    if not rates:
        return []
    speeds = [r if r > 0 else UNKNOWN_RATE for r in rates]
    finish = [q / s for q, s in zip(queued_bytes, speeds, strict=True)]
    counts = [0] * len(speeds)
    for _ in range(max(0, blocks)):
        i = min(range(len(speeds)), key=lambda k: finish[k] + block_size / speeds[k])
        finish[i] += block_size / speeds[i]
        counts[i] += 1
    return counts
