"""Where a mount's log goes: a file (timestamped), the journal (no timestamp: the journal
adds it), or standard error; and the status line that log records go above."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from btfs.logsetup import configure_mount
from btfs.statusline import StatusLine, StatusLineHandler


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_a_log_file_is_timestamped_at_info(tmp_path: Path) -> None:
    log = tmp_path / "btfs.log"
    assert configure_mount(log, False, 0, rotate=True) == str(log)
    logging.getLogger("btfs.test").info("hello %s", "there")
    logging.getLogger("btfs.test").debug("not at INFO")
    for handler in logging.getLogger().handlers:
        handler.flush()
    [line] = log.read_text().splitlines()
    assert line.endswith(f" btfs[{os.getpid()}] INFO btfs.test: hello there")
    assert line[:4].isdigit() and line[4] == "-"


def test_stderr_that_is_the_journal_is_told_apart() -> None:
    """systemd sets JOURNAL_STREAM to the device:inode of the stream it gave the service."""
    program = ("import logging, os, sys\n"
               "from btfs.logsetup import configure_mount\n"
               "st = os.fstat(2)\n"
               "if sys.argv[1] == 'journal':\n"
               "    os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
               "print(configure_mount(None, True, 0))\n"
               "logging.getLogger('btfs.x').info('waiting')\n")
    for kind, where in (("journal", "journal"), ("plain", "stderr")):
        r = subprocess.run([sys.executable, "-c", program, kind], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{where}\n"
        if kind == "journal":
            assert r.stderr == "INFO btfs.x: waiting\n"
        else:
            assert r.stderr.endswith(" INFO btfs.x: waiting\n") and r.stderr[:4].isdigit()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_record_goes_above_the_status_line_which_is_drawn_again() -> None:
    screen = FakeTerminal()
    line = StatusLine(screen)
    handler = StatusLineHandler(line)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    line.show("3/10 pieces")
    handler.emit(logging.LogRecord("x", logging.WARNING, "", 0, "tracker down", None, None))
    line.clear()
    assert screen.getvalue() == ("\r3/10 pieces\x1b[K"
                                 "\r\x1b[KWARNING tracker down\n3/10 pieces\x1b[K"
                                 "\r\x1b[K")


def test_off_a_terminal_there_is_no_status_line() -> None:
    out = io.StringIO()
    line = StatusLine(out)
    line.show("3/10 pieces")
    line.write_above("btfs: done")
    assert out.getvalue() == "btfs: done\n"
