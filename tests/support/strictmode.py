"""A pytest plugin (loaded by tests/conftest.py): under BTFS_REQUIRE_FUSE=1 a skip is a failure.

tests/support/env.py already fails rather than skips in strict mode; this catches every
other way a test or a whole file can skip (a `skipif` mark, `pytest.importorskip`, a bare
`pytest.skip`, at collection or at run time), so CI cannot pass on tests that never ran.
An expected failure (`xfail`) is not a skip and is left alone.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support.env import strict


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not strict() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"skipped, and BTFS_REQUIRE_FUSE=1 makes a skip a failure: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                         pytest.TestReport]:
    report = yield
    _fail_if_skipped(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_if_skipped(report)
    return report
