"""Skip-or-fail decisions for tests that need FUSE or third-party tools.

On a developer's machine a missing tool skips the test with the reason; under CI
(`BTFS_REQUIRE_FUSE=1`, set by `.ci/run`, which installs everything) it fails instead,
so a broken install can never pass as a row of skips.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

STRICT = os.environ.get("BTFS_REQUIRE_FUSE") == "1"


def _missing(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (BTFS_REQUIRE_FUSE=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def require_tool(command: str, package: str) -> str:
    """Return the tool's full path, or skip/fail naming the Debian package that provides it."""
    path = shutil.which(command)
    if path is None:
        _missing(f"{command} not found: apt-get install {package}")
    assert path is not None
    return path


def require_python_module(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        _missing(f"Python module {module} not installed: pip install {pip_name}")


def require_fuse() -> None:
    """FUSE needs the device, fusermount3 and pyfuse3."""
    if not os.path.exists("/dev/fuse"):
        _missing("/dev/fuse is absent (no FUSE in this kernel or container)")
    require_tool("fusermount3", "fuse3")
    require_python_module("pyfuse3", "pyfuse3")
