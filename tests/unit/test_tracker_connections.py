"""The HTTP tracker's connection limits (pure table) and its listener at EMFILE."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import pytest
import trio
import trio.testing

from tracker.connections import ConnectionTable, limit_key
from tracker.http import ACCEPT_RETRY_MAX, HttpTracker
from tracker.store.memory import SwarmStore


def test_an_address_at_its_limit_displaces_its_own_longest_waiting() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=100, max_per_address=3)
    for name in ("a1", "a2", "a3"):
        assert table.open(name, "10.0.0.1") == (True, [])
    table.busy("a1")  # a request came in on a1: a2 has now waited longest
    assert table.open("a4", "10.0.0.1") == (True, ["a2"])
    assert table.open("b1", "10.0.0.2") == (True, [])  # other addresses are not touched
    table.busy("a3")
    table.busy("a4")
    assert table.open("a5", "10.0.0.1") == (False, [])  # every one of a's is busy
    table.waiting("a1")
    assert table.open("a6", "10.0.0.1") == (True, ["a1"])
    assert len(table) == 4
    table.close("a2")  # evicted earlier: its task ending changes nothing
    assert len(table) == 4


def test_a_full_table_displaces_the_longest_waiting_of_anyone() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=3, max_per_address=3)
    for name, address in (("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")):
        table.open(name, address)
    table.busy("a")
    table.waiting("a")  # a waits again, now the most recently active
    assert table.open("d", "10.0.0.4") == (True, ["b"])
    for name in ("a", "c", "d"):
        table.busy(name)
    assert table.open("e", "10.0.0.5") == (False, [])
    table.close("c")
    assert table.open("e", "10.0.0.5") == (True, [])
    assert table.evict() == "e"  # the only one waiting
    assert table.evict() is None


def test_exempt_addresses_count_only_against_the_total() -> None:
    table: ConnectionTable[int] = ConnectionTable(max_total=10, max_per_address=2)
    results = [table.open(n, "10.0.0.9", exempt=True) for n in range(10)]
    assert results == [(True, [])] * 10
    assert table.open(10, "10.0.0.9", exempt=True) == (True, [0])


def test_ipv6_counts_by_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2")
    assert limit_key("2001:db8:1:2::1") != limit_key("2001:db8:1:3::1")
    assert limit_key("192.0.2.7") == "192.0.2.7"


class FullListener:
    """A listener that is out of descriptors `failures` times, then has nothing to give
    (`tracker.http.Listening`)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[float] = []

    async def wait(self) -> None:
        if len(self.calls) >= self.failures:
            await trio.sleep_forever()

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls.append(trio.current_time())
        if len(self.calls) <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")
        raise BlockingIOError

    async def __aenter__(self) -> FullListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


async def test_out_of_descriptors_the_listener_backs_off_and_logs_one_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = HttpTracker(SwarmStore())
    listener = FullListener(failures=7)
    with caplog.at_level(logging.WARNING, logger="tracker.http"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker._accept, listener, nursery)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    waits = [round(b - a, 3) for a, b in zip(listener.calls, listener.calls[1:], strict=False)]
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, ACCEPT_RETRY_MAX, ACCEPT_RETRY_MAX]
    lines = [r for r in caplog.records if r.name == "tracker.http"]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
    assert lines[0].exc_info is None  # no traceback


async def test_out_of_descriptors_an_idle_connection_is_closed_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker = HttpTracker(SwarmStore())
    idle = trio.CancelScope()
    tracker.connections.open(idle, "10.0.0.1")
    listener = FullListener(failures=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker._accept, listener, nursery)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert idle.cancel_called
    # The first retry came at once, since a descriptor was being freed; the next one
    # found nothing to close and waited.
    assert [round(t, 3) for t in listener.calls] == [0.0, 0.0, 0.1]


def test_touch_makes_a_waiting_connection_the_most_recent() -> None:
    table: ConnectionTable[str] = ConnectionTable(max_total=3, max_per_address=2)
    for handle, address in (("a", "x"), ("b", "x"), ("c", "y")):
        assert table.open(handle, address) == (True, [])
    table.touch("a")  # a request came on "a" and was answered: "b" has waited longest
    assert table.longest_waiting() == "b"
    assert table.open("d", "x") == (True, ["b"])  # x's own longest waiting goes
    table.busy("c")
    table.touch("c")  # (not waiting: it waits from now on)
    assert table.evict() == "a" and table.evict() == "d" and table.evict() == "c"
