from __future__ import annotations

import pytest

from btfs.errors import BtfsError
from btfs.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [("123", 123), ("16K", 16384), ("16k", 16384), ("8M", 8 << 20), ("1MiB", 1 << 20),
     ("2MB", 2 << 20), ("1.5M", 3 << 19), ("1G", 1 << 30), ("0", 0)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1K", "abc", "1X", "nan", "inf"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BtfsError):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 << 30) == "3.0 GiB"
