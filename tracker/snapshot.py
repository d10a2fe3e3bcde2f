"""The tracker's saved state: a `SwarmStore` as JSON-ready data, and back.

    {"format": "btfs-tracker-state", "version": 1,
     "torrents": {"<info-hash hex>": {"downloaded": N,
       "peers": [["<peer_id hex>", "<compact address hex>", seed 0/1, last_seen]]}}}

Loading validates the whole document before it builds anything: a state this version did
not write is a `StateError`, never a half-loaded store.
"""

from __future__ import annotations

import math
from typing import Any

from tracker.errors import StateError
from tracker.store.memory import SavedPeer, SwarmStore

FORMAT = "btfs-tracker-state"
VERSION = 1


def dump(store: SwarmStore) -> dict[str, Any]:
    """The store's swarms, peers with their last announce time (wall clock)."""
    torrents: dict[str, Any] = {}
    for info_hash, swarm in store.swarms():
        torrents[info_hash.hex()] = {
            "downloaded": swarm.downloaded,
            "peers": [
                [peer_id.hex(), compact.hex(), int(seed), last_seen]
                for peer_id, compact, seed, last_seen in swarm.records()
            ],
        }
    return {"format": FORMAT, "version": VERSION, "torrents": torrents}


def load(data: Any, now: float, **store_kwargs: Any) -> SwarmStore:
    """A store rebuilt from `dump` output, without the peers expired by `now`.

    `store_kwargs` are `SwarmStore`'s (limits and whitelist apply to the loaded state).
    """
    store = SwarmStore(**store_kwargs)
    for info_hash, downloaded, peers in _parse(data):
        if not store.restore(info_hash, downloaded, peers, now):
            break
    return store


def _parse(data: Any) -> list[tuple[bytes, int, list[SavedPeer]]]:
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or data.get("version") != VERSION
        or not isinstance(data.get("torrents"), dict)
    ):
        raise StateError("not a btfs-tracker state file")
    torrents = []
    try:
        for info_hash_hex, entry in data["torrents"].items():
            info_hash = bytes.fromhex(info_hash_hex)
            downloaded = entry["downloaded"]
            rows = entry["peers"]
            if (
                len(info_hash) != 20
                or type(downloaded) is not int
                or downloaded < 0
                or not isinstance(rows, list)
            ):
                raise ValueError(info_hash_hex)
            torrents.append((info_hash, downloaded, [_peer(row) for row in rows]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateError(f"malformed tracker state near {str(exc)[:60]!r}") from None
    return torrents


def _peer(row: Any) -> SavedPeer:
    peer_hex, compact_hex, seed, last_seen = row
    peer_id = bytes.fromhex(peer_hex)
    compact = bytes.fromhex(compact_hex)
    if (
        len(peer_id) != 20
        or len(compact) not in (6, 18)
        or compact[-2:] == b"\0\0"
        or seed not in (0, 1)
        or type(last_seen) not in (int, float)
        or not math.isfinite(last_seen)  # JSON as Python reads it has NaN and Infinity
    ):
        raise ValueError(peer_hex)
    return peer_id, compact, bool(seed), float(last_seen)
