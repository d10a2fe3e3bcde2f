"""Which HTTP connections the tracker keeps open, as a pure table.

Limits: `max_total` connections in all and `max_per_address` from one source address (an
IPv6 /64 counts as one address: a host has a whole /64 to open connections from). When a
limit is reached, a new connection takes the place of the connection that has waited
longest for a request (nothing is owed to it: it is between requests, or in the middle
of one it sends too slowly); if every connection is busy answering, the new one is
refused. So a client that holds many idle connections open only ever costs its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)


def limit_key(ip: str) -> str:
    """The address a connection counts against: the IP, or for IPv6 its /64."""
    if ":" not in ip:
        return ip
    try:
        network = ipaddress.IPv6Network((ip, 64), strict=False)
    except ValueError:
        return ip
    return str(network)


class ConnectionTable(Generic[H]):
    """Open connections by handle (anything hashable naming one), and which of them wait.

    `open` admits a connection and says which others to close for it; the shell reports
    `waiting` before it reads a request and `busy` once bytes have come, and `close`
    when the connection ends (also for one it was told to close: then it is a no-op).
    """

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._address: dict[H, str] = {}
        self._count: dict[str, int] = {}
        # Waiting connections, longest waiting first (dicts keep insertion order).
        self._waiting: dict[H, None] = {}
        self._waiting_from: dict[str, dict[H, None]] = {}

    def __len__(self) -> int:
        return len(self._address)

    def open(self, handle: H, address: str, *, exempt: bool = False) -> tuple[bool, list[H]]:
        """Admit `handle` from `address` (a `limit_key`): (admitted, handles to close).

        `exempt`: not held to the per-address limit (a trusted proxy speaks for many).
        """
        evicted: list[H] = []
        if not exempt and self._count.get(address, 0) >= self.max_per_address:
            victim = next(iter(self._waiting_from.get(address, ())), None)
            if victim is None:
                return False, evicted
            self._forget(victim)
            evicted.append(victim)
        if len(self._address) >= self.max_total:
            victim = self.longest_waiting()
            if victim is None:
                return False, evicted
            self._forget(victim)
            evicted.append(victim)
        self._address[handle] = address
        self._count[address] = self._count.get(address, 0) + 1
        self.waiting(handle)
        return True, evicted

    def waiting(self, handle: H) -> None:
        """`handle` waits for a request (or the rest of one): it may be closed for another."""
        address = self._address.get(handle)
        if address is None or handle in self._waiting:
            return
        self._waiting[handle] = None
        self._waiting_from.setdefault(address, {})[handle] = None

    def busy(self, handle: H) -> None:
        """Bytes came on `handle`: it is the most recently active again, and not evictable
        until it waits once more."""
        if handle not in self._waiting:
            return
        del self._waiting[handle]
        address = self._address[handle]
        waiting = self._waiting_from[address]
        del waiting[handle]
        if not waiting:
            del self._waiting_from[address]

    def touch(self, handle: H) -> None:
        """A waiting `handle` had a request and is waiting again, at once (`busy` then
        `waiting`, in one step): the most recently active."""
        if handle not in self._waiting:
            self.waiting(handle)
            return
        del self._waiting[handle]
        self._waiting[handle] = None
        waiting = self._waiting_from[self._address[handle]]
        del waiting[handle]
        waiting[handle] = None

    def close(self, handle: H) -> None:
        """`handle` has ended."""
        if handle in self._address:
            self._forget(handle)

    def longest_waiting(self) -> H | None:
        """The connection that has waited longest, if any waits."""
        return next(iter(self._waiting), None)

    def evict(self) -> H | None:
        """Take the longest waiting connection out of the table (to close it), if any."""
        victim = self.longest_waiting()
        if victim is not None:
            self._forget(victim)
        return victim

    def _forget(self, handle: H) -> None:
        self.busy(handle)
        address = self._address.pop(handle)
        left = self._count[address] - 1
        if left:
            self._count[address] = left
        else:
            del self._count[address]
