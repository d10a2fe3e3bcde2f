"""Human sizes and rates: `8M` in, `1.5 MiB` out."""

from __future__ import annotations

from btfs.errors import BtfsError

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse `123`, `16K`, `8M`, `1G`, `4MiB`, `4MB` (binary multiples) into bytes."""
    raw = text.strip()
    upper = raw.upper()
    for tail in ("IB", "B"):
        if upper.endswith(tail) and len(upper) > len(tail):
            upper = upper[: -len(tail)]
            break
    suffix = upper[-1:] if upper[-1:] in _SUFFIXES else ""
    number = upper[: len(upper) - len(suffix)] if suffix else upper
    try:
        value = float(number)
    except ValueError:
        raise BtfsError(f"not a size: {text!r} (use bytes or a K/M/G suffix)") from None
    if value < 0 or value != value or value == float("inf"):
        raise BtfsError(f"not a size: {text!r}")
    return int(value * _SUFFIXES[suffix])


def format_size(n: float) -> str:
    """`1536` -> `1.5 KiB`; bytes below 1 KiB are shown exactly."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
