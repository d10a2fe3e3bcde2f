"""A one-line progress bar on a terminal; silent when stderr is not a terminal.

It is drawn as the status line of standard error (`btfs.statusline`), so log records and
messages printed meanwhile go above it and it is drawn again below them.
"""

from __future__ import annotations

import time

from btfs.statusline import StatusLine, stderr_line
from btfs.units import format_duration, format_size


class ProgressBar:
    """Redraws at most ten times a second so that drawing never costs throughput."""

    def __init__(self, label: str, total: int, line: StatusLine | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.line = line if line is not None else stderr_line()
        self.enabled = self.line.enabled
        self.start = time.monotonic()
        self._last_draw = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= 0.1 or done >= self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        fraction = min(self.done / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "-" * (width - filled)
        self.line.show(
            f"{self.label} [{bar}] {fraction * 100:5.1f}% "
            f"{format_size(self.done)}/{format_size(self.total)} "
            f"{format_size(rate)}/s ETA {format_duration(eta)}"
        )

    def close(self) -> None:
        """The bar's last state stays on screen as a line of its own."""
        if self.enabled:
            self._draw(time.monotonic())
            text = self.line.text
            self.line.clear()
            self.line.write_above(text)
