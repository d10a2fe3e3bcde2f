"""The strict helper itself: a missing requirement skips on a laptop and fails under CI.

`BTFS_REQUIRE_FUSE=1` (what .ci/run sets) must turn every missing tool, module or IPv6
loopback into a failure, and any other skip too, or a broken CI machine would pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import env, net

NO_TOOL = "btfs-no-such-tool-7f3a"
NO_MODULE = "btfs_no_such_module_7f3a"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["strict", "lenient"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "strict":
        monkeypatch.setenv("BTFS_REQUIRE_FUSE", "1")
    else:
        monkeypatch.delenv("BTFS_REQUIRE_FUSE", raising=False)
    return str(request.param)


def outcome_of_missing(mode: str) -> type[BaseException]:
    return pytest.fail.Exception if mode == "strict" else pytest.skip.Exception


def test_missing_tool(mode: str) -> None:
    with pytest.raises(outcome_of_missing(mode), match=f"{NO_TOOL} not found: apt-get install x"):
        env.require_tool(NO_TOOL, "x")


def test_missing_python_module(mode: str) -> None:
    with pytest.raises(outcome_of_missing(mode), match=f"pip install {NO_MODULE}"):
        env.require_python_module(NO_MODULE, NO_MODULE)


def test_missing_ipv6_loopback(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "ipv6_loopback_available", lambda: False)
    with pytest.raises(outcome_of_missing(mode), match="IPv6"):
        env.require_ipv6_loopback()


def test_present_requirements_pass_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTFS_REQUIRE_FUSE", "1")
    sh = env.require_tool("sh", "dash")
    assert os.path.isabs(sh) and Path(sh).name == "sh"
    env.require_python_module("trio", "trio")
    monkeypatch.setattr(net, "ipv6_loopback_available", lambda: True)
    env.require_ipv6_loopback()


def test_only_the_value_1_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("0", "", "yes"):
        monkeypatch.setenv("BTFS_REQUIRE_FUSE", value)
        assert not env.strict()
    monkeypatch.setenv("BTFS_REQUIRE_FUSE", "1")
    assert env.strict()


SKIPPING = f"""
import pytest

def test_bare_skip():
    pytest.skip("no reason")

@pytest.mark.skipif(True, reason="a skipif mark")
def test_skipif():
    pass

def test_importorskip():
    pytest.importorskip("{NO_MODULE}")

@pytest.fixture
def skipping_fixture():
    pytest.skip("in a fixture")

def test_fixture_skips(skipping_fixture):
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
"""

WHOLE_FILE_SKIPPED = f"""
import pytest

pytest.importorskip("{NO_MODULE}")

def test_never_collected():
    pass
"""


def run_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
               strict: bool) -> pytest.RunResult:
    """Our strict-mode plugin in a separate pytest process, on the files made."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    if strict:
        monkeypatch.setenv("BTFS_REQUIRE_FUSE", "1")
    else:
        monkeypatch.delenv("BTFS_REQUIRE_FUSE", raising=False)
    return pytester.runpytest_subprocess("-p", "tests.support.strictmode",
                                         "-p", "no:cacheprovider", "-rA")


def test_every_kind_of_skip_fails_in_strict_mode(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_skipping=SKIPPING)
    lenient = run_pytest(pytester, monkeypatch, strict=False)
    lenient.assert_outcomes(passed=1, skipped=4, xfailed=1)
    strict = run_pytest(pytester, monkeypatch, strict=True)
    strict.assert_outcomes(passed=1, failed=2, errors=2, xfailed=1)  # setup skips: errors
    strict.stdout.fnmatch_lines(["*makes a skip a failure: Skipped: a skipif mark"])


def test_a_file_skipped_whole_fails_in_strict_mode(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_whole=WHOLE_FILE_SKIPPED)
    lenient = run_pytest(pytester, monkeypatch, strict=False)
    lenient.assert_outcomes(skipped=1)
    assert lenient.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    strict = run_pytest(pytester, monkeypatch, strict=True)
    strict.assert_outcomes(errors=1)
    assert strict.ret != pytest.ExitCode.OK
    strict.stdout.fnmatch_lines([f"*makes a skip a failure*{NO_MODULE}*"])
