"""Fixtures shared by every test: loopback addresses, child processes, mounts, test data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import data, net
from tests.support.procs import Mounts, Processes

# Tests stay on loopback: no btfs the tests start joins the DHT through the public routers
# (a test that wants a DHT gives --dht-bootstrap with a loopback node).
os.environ["BTFS_DHT_ROUTERS"] = ""
# Local peer discovery (BEP 14) of every btfs a test starts stays on loopback, on a
# multicast port of this test process's own: no announce leaves the machine or reaches
# the btfs of another test run (tests share torrents made from the same random data).
os.environ["BTFS_LSD_INTERFACE"] = "127.0.0.1"
os.environ["BTFS_LSD_PORT"] = str(20000 + os.getpid() % 20000)

# Under BTFS_REQUIRE_FUSE=1 every skip is a failure (see tests/support/strictmode.py).
pytest_plugins = ["tests.support.strictmode", "pytester"]


@pytest.fixture
def loopback() -> str:
    """A loopback IPv4 address of the test's own (127.x.y.z), distinct from every other."""
    return net.next_loopback_ipv4()


@pytest.fixture
def free_port():  # type: ignore[no-untyped-def]
    """`free_port(host)` gives a TCP+UDP port free on that loopback address."""
    return net.free_port


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    """Start child processes; all of them (and their process groups) die at teardown."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    group = Processes(log_dir)
    try:
        yield group
    finally:
        group.cleanup()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(group.logs())


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Register mount points; each is unmounted (lazily if busy) at teardown."""
    registry = Mounts()
    try:
        yield registry
    finally:
        registry.cleanup()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture(scope="session")
def media_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short H.264/AAC .mp4 with its index (moov) at the end, made once per session."""
    return data.make_media_mp4(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=6)
