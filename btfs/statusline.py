"""The last line of a terminal kept for a redrawn status (a progress bar), with log lines
and messages written above it, so a warning never lands in the middle of the bar.

Off a terminal there is no status line: `show` draws nothing and `write_above` is a plain
write. One lock orders writers (log records may come from worker threads).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

ERASE_LINE = "\r\x1b[K"


class StatusLine:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.text = ""
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        """Draw `text` as the status line, in place of the previous one."""
        if not self.enabled:
            return
        with self._lock:
            self.text = text
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def clear(self) -> None:
        """Remove the status line (the cursor stays at the start of the empty line)."""
        with self._lock:
            if self.text:
                self.stream.write(ERASE_LINE)
                self.stream.flush()
            self.text = ""

    def write_above(self, line: str) -> None:
        """Write a whole line; the status line, if shown, is drawn again below it."""
        with self._lock:
            if self.text:
                self.stream.write(ERASE_LINE)
            self.stream.write(line + "\n")
            if self.text:
                self.stream.write(f"{self.text}\x1b[K")
            self.stream.flush()


class StatusLineHandler(logging.Handler):
    """A logging handler writing each record above a status line."""

    def __init__(self, line: StatusLine) -> None:
        super().__init__()
        self.line = line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.line.write_above(self.format(record))
        except Exception:
            self.handleError(record)


_stderr: StatusLine | None = None


def stderr_line() -> StatusLine:
    """The status line of this process's standard error (one for everyone who draws)."""
    global _stderr
    if _stderr is None or _stderr.stream is not sys.stderr:
        _stderr = StatusLine(sys.stderr)
    return _stderr


def say(message: str) -> None:
    """Print a message line on standard error, above any status line."""
    stderr_line().write_above(message)
