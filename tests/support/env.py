"""Skip-or-fail decisions for tests that need FUSE, third-party tools or IPv6.

On a developer's machine a missing tool skips the test with the reason; under CI
(`BTFS_REQUIRE_FUSE=1`, set by `.ci/run`, which installs everything) it fails instead,
so a broken install can never pass as a row of skips. Every such check in the suite goes
through this module; and in strict mode tests/support/strictmode.py turns any other skip
into a failure too, so one that bypasses this module cannot hide either.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from tests.support import net


def strict() -> bool:
    """Whether a missing requirement fails the test (CI) rather than skipping it."""
    return os.environ.get("BTFS_REQUIRE_FUSE") == "1"


def missing(reason: str) -> None:
    """Skip for `reason`, or fail under strict mode (CI)."""
    if strict():
        pytest.fail(f"{reason} (BTFS_REQUIRE_FUSE=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def require_tool(command: str, package: str) -> str:
    """Return the tool's full path, or skip/fail naming the Debian package that provides it."""
    path = shutil.which(command)
    if path is None:
        missing(f"{command} not found: apt-get install {package}")
    assert path is not None
    return path


def require_python_module(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        missing(f"Python module {module} not installed: pip install {pip_name}")


def require_libtorrent() -> None:
    """libtorrent's Python bindings, the real peer most swarm tests run against."""
    require_python_module("libtorrent", "libtorrent")


def require_fuse() -> None:
    """FUSE needs the device, fusermount3 and pyfuse3."""
    if not os.path.exists("/dev/fuse"):
        missing("/dev/fuse is absent (no FUSE in this kernel or container)")
    require_tool("fusermount3", "fuse3")
    require_python_module("pyfuse3", "pyfuse3")


def require_ipv6_loopback() -> None:
    """An IPv6 loopback address (::1) to bind; Linux has one unless IPv6 is disabled."""
    if not net.ipv6_loopback_available():
        missing("no IPv6 loopback (::1) to bind here")
