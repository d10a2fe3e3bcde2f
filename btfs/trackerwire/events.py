"""Announce events by name (BEP 3, BEP 21's `paused`) and by BEP 15 code."""

from __future__ import annotations

NONE = ""  # a regular announce
STARTED = "started"
COMPLETED = "completed"
STOPPED = "stopped"
PAUSED = "paused"  # BEP 21: a partial seed

CLIENT_EVENTS: tuple[str, ...] = (NONE, STARTED, COMPLETED, STOPPED)
"""What btfs itself announces."""

ANNOUNCE_EVENTS = frozenset((*CLIENT_EVENTS, PAUSED))
"""What the tracker accepts."""

UDP_CODES: dict[str, int] = {NONE: 0, COMPLETED: 1, STARTED: 2, STOPPED: 3}
UDP_EVENTS: dict[int, str] = {code: name for name, code in UDP_CODES.items()}
