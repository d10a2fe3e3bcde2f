"""The tracker's housekeeping task sleeps between its chores (it once spun a core)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tracker.cli import Service, parse_options
from tracker.store.memory import MemoryStore, SwarmStore


async def test_housekeeping_sleeps_and_saves_on_schedule(
    tmp_path: Path, mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def inline(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)  # the save, in this task: the mock clock cannot run past a thread

    monkeypatch.setattr(trio.to_thread, "run_sync", inline)
    state = tmp_path / "swarms.json"
    options = parse_options(["--http", "127.0.0.1:0", "--udp", "off", "--state", str(state),
                             "--save-every", "300"])
    service = Service(options, MemoryStore(SwarmStore()), None, None)
    passes = 0
    swarms = service.swarms
    assert swarms is not None
    original = swarms.expire

    def counting_expire(now: float) -> int:
        nonlocal passes
        passes += 1
        return original(now)

    swarms.expire = counting_expire  # type: ignore[method-assign]
    clock = mock_clock
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.housekeeping)
        await trio.lowlevel.checkpoint()
        steps = 0
        while trio.current_time() < 3600:  # an hour of tracker time
            await trio.testing.wait_all_tasks_blocked()
            steps += 1
            assert steps < 10_000, "housekeeping never blocks: it spins"
            clock.jump(1.0)
        nursery.cancel_scope.cancel()
    assert 55 <= passes <= 61  # once a minute
    assert state.exists()  # saved every 300 s
