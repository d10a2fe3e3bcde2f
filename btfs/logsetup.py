"""Where each command's log goes, and in what form.

`download` and `seed` log to standard error above their progress line (statusline).
A mount in the background logs to a file, by default `btfs.log` in its cache folder
(rotated at 4 MiB), so a mount that waits says why somewhere `btfs status` points at;
in the foreground it logs to standard error, which under systemd is the journal (noticed
through $JOURNAL_STREAM), where the journal adds the time and the process itself.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from btfs.statusline import StatusLineHandler, stderr_line

TIMESTAMPED = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FOR_JOURNAL = "%(levelname)s %(name)s: %(message)s"
IN_A_FILE = "%(asctime)s btfs[%(process)d] %(levelname)s %(name)s: %(message)s"
DEFAULT_LOG_NAME = "btfs.log"
ROTATE_BYTES = 4 << 20


def level_for(verbosity: int, default: int = logging.WARNING) -> int:
    if verbosity >= 2 or os.environ.get("BTFS_DEBUG"):
        return logging.DEBUG
    return logging.INFO if verbosity == 1 else default


def stderr_is_journal() -> bool:
    """Whether standard error is connected to the systemd journal (systemd sets
    JOURNAL_STREAM to its device:inode for the service's stdout/stderr)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def _install(handler: logging.Handler, level: int, fmt: str) -> None:
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)


def configure_terminal(verbosity: int) -> None:
    """download/seed: records above the progress line on standard error, timestamped."""
    _install(StatusLineHandler(stderr_line()), level_for(verbosity), TIMESTAMPED)


def default_log_file(cache_dir: Path) -> Path:
    return cache_dir / DEFAULT_LOG_NAME


def configure_mount(log_file: Path | None, to_stderr: bool, verbosity: int,
                    rotate: bool = False) -> str:
    """The mount's log: to `log_file` if given (rotated at ROTATE_BYTES if `rotate`),
    else to standard error (foreground); at INFO unless -vv. Returns where it goes, for
    `btfs status`: the file's path, "journal" or "stderr"."""
    level = level_for(verbosity, default=logging.INFO)
    if log_file is not None:
        handler: logging.Handler = (
            logging.handlers.RotatingFileHandler(log_file, maxBytes=ROTATE_BYTES, backupCount=1)
            if rotate else logging.FileHandler(log_file))
        _install(handler, level, IN_A_FILE)
        return str(log_file.absolute())
    if not to_stderr:
        _install(logging.NullHandler(), level, TIMESTAMPED)
        return "nowhere"
    if stderr_is_journal():
        _install(logging.StreamHandler(sys.stderr), level, FOR_JOURNAL)
        return "journal"
    _install(logging.StreamHandler(sys.stderr), level, TIMESTAMPED)
    return "stderr"
