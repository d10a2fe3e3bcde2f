"""What `btfs download` prints (issue 15): on a terminal, log lines above the progress
line, which is drawn again below them; off a terminal and without -v, a start line and
a final line and nothing else."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli_create_info import run_in_pty
from tests.support.net import next_loopback_ipv4
from tests.support.procs import HANG, Processes
from tests.support.swarm import share, start_seed, tree_digest

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def screen_lines(output: str) -> list[str]:
    """The lines a terminal shows for `output`: carriage returns move back to the start
    of the line, ESC [ K erases from the cursor to the end of the line."""
    lines = []
    for raw in output.replace("\r\n", "\n").split("\n"):
        text: list[str] = []
        column = 0
        i = 0
        while i < len(raw):
            if raw[i] == "\r":
                column = 0
            elif raw.startswith("\x1b[K", i):
                del text[column:]
                i += 3
                continue
            else:
                if column < len(text):
                    text[column] = raw[i]
                else:
                    text.append(raw[i])
                column += 1
            i += 1
        lines.append("".join(text))
    return lines


@pytest.fixture
def slow_failing_tracker() -> Iterator[str]:
    """An HTTP tracker URL whose server accepts, waits a second, then hangs up without an
    answer: the announce fails while the download is under way."""
    host = next_loopback_ipv4()
    server = socket.create_server((host, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            time.sleep(1.0)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.getsockname()[1]}/announce"
    finally:
        stop.set()
        thread.join(10)
        server.close()


def test_a_warning_goes_above_the_progress_line(tmp_path: Path, procs: Processes,
                                                slow_failing_tracker: str) -> None:
    shared = share(tmp_path, 4_000_000, piece_length=32768, trackers=[slow_failing_tracker])
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host, "--max-upload-rate", "1M")
    out = tmp_path / "out"
    out.mkdir()
    code, screen = run_in_pty(["download", str(shared.torrent), "-o", str(out), "--bind",
                               next_loopback_ipv4(), "--peer", f"{host}:{port}"])
    assert code == 0, screen
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    lines = screen_lines(screen)
    warning = re.compile(rf"^{STAMP} WARNING btfs.trackers.session: tracker "
                         rf"{re.escape(slow_failing_tracker)}: .+ \(failure 1\)$")
    assert any(warning.match(line) for line in lines), lines
    assert not any("ETA" in line and "WARNING" in line for line in lines), lines
    # The warning came while the bar was shown: erased, written, the bar drawn again.
    assert re.search(r"\r\x1b\[K" + STAMP + r" WARNING [^\n]*\n\d+/\d+ pieces ", screen), \
        repr(screen)
    assert lines[0] == (f"btfs: downloading payload.bin (3.8 MiB, 0/123 pieces verified) "
                        f"into {out}")


def test_off_a_terminal_a_start_line_and_a_final_line(tmp_path: Path,
                                                      procs: Processes) -> None:
    shared = share(tmp_path, 1_000_000, piece_length=32768)
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "btfs", "download", str(shared.torrent), "-o",
                        str(out), "--bind", next_loopback_ipv4(), "--peer", f"{host}:{port}",
                        "--no-trackers"],
                       capture_output=True, text=True, timeout=HANG, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    start, final = r.stderr.splitlines()
    assert start == (f"btfs: downloading payload.bin (976.6 KiB, 0/31 pieces verified) "
                     f"into {out}")
    assert re.fullmatch(r"btfs: payload.bin: complete, 976.6 KiB; downloaded \d+ bytes in "
                        r"[\d.]+ s \(.+/s\)", final), final
