"""When "no peers for N s" is logged: after 30 s alone, then at doubling intervals."""

from __future__ import annotations

from btfs.waiting import NoPeersNotice


def test_notices_come_at_30_60_120_seconds_and_start_over_with_a_peer() -> None:
    notice = NoPeersNotice()
    said = [t for t in range(0, 300) if notice.observe(float(t), 0, True) is not None]
    assert said == [30, 60, 120, 240]
    assert notice.observe(300.0, 1, True) is None  # a peer: start over
    later = [t for t in range(301, 400) if notice.observe(float(t), 0, True) is not None]
    assert later == [331, 361]


def test_nothing_to_fetch_is_no_wait_to_explain() -> None:
    notice = NoPeersNotice(first=10.0)
    assert all(notice.observe(float(t), 0, False) is None for t in range(100))
    assert notice.observe(100.0, 0, True) is None
    assert notice.observe(110.0, 0, True) == 10.0
