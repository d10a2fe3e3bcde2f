"""`btfs create` and `btfs info` as a user runs them: real processes, exit codes, output."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from btfs.bencode import encode
from btfs.metainfo import parse_torrent
from tests.support.data import make_random_file, make_tree
from tests.unit.test_metainfo import bad_cases


def btfs(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "btfs", *map(str, args)],
        capture_output=True, text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL,
    )


def test_create_then_info_json(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "Show", {"s01/e01.mkv": 300_000, "s01/e02.mkv": 200_000,
                                          "notes é.txt": 42})
    out = tmp_path / "show.torrent"
    r = btfs("create", root, "-o", out, "-t", "http://127.0.0.1:6969/announce",
             "-t", "udp://127.0.0.1:6969,http://127.0.0.2:80/announce",
             "-w", "http://127.0.0.1:8000/", "--comment", "hello", "-p")
    assert r.returncode == 0, r.stderr
    meta = parse_torrent(out.read_bytes())
    assert meta.info_hash_hex in r.stdout
    r = btfs("info", out, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["info_hash"] == meta.info_hash_hex
    assert d["name"] == "Show"
    assert d["total_size"] == 500_042
    assert d["private"] is True
    assert d["comment"] == "hello"
    assert d["trackers"] == [["http://127.0.0.1:6969/announce"],
                             ["udp://127.0.0.1:6969", "http://127.0.0.2:80/announce"]]
    assert d["web_seeds"] == ["http://127.0.0.1:8000/"]
    assert [(f["path"], f["size"]) for f in d["files"]] == [
        ("Show/notes é.txt", 42), ("Show/s01/e01.mkv", 300_000), ("Show/s01/e02.mkv", 200_000)]
    assert d["piece_count"] * d["piece_length"] >= d["total_size"]
    text = btfs("info", out).stdout
    for needle in ("Show", meta.info_hash_hex, "tier 2: udp://127.0.0.1:6969", "Private:      yes",
                   "Show/s01/e02.mkv", "hello"):
        assert needle in text


def test_create_default_output_name_and_no_overwrite(tmp_path: Path) -> None:
    make_random_file(tmp_path / "clip.bin", 1000)
    assert btfs("create", "clip.bin", "-q", cwd=tmp_path).returncode == 0
    assert (tmp_path / "clip.bin.torrent").exists()
    r = btfs("create", "clip.bin", cwd=tmp_path)
    assert r.returncode == 2
    assert "already exists" in r.stderr
    assert btfs("create", "clip.bin", "--force", "-q", cwd=tmp_path).returncode == 0


def test_create_to_stdout_and_info_from_stdin(tmp_path: Path) -> None:
    make_random_file(tmp_path / "f", 5000)
    raw = subprocess.run([sys.executable, "-m", "btfs", "create", str(tmp_path / "f"), "-o", "-",
                          "--no-date"], capture_output=True, timeout=60, check=True).stdout
    meta = parse_torrent(raw)
    assert meta.creation_date is None
    r = subprocess.run([sys.executable, "-m", "btfs", "info", "-", "--json"], input=raw,
                       capture_output=True, timeout=60, check=True)
    assert json.loads(r.stdout)["info_hash"] == meta.info_hash_hex


def test_reproducible_with_no_date(tmp_path: Path) -> None:
    make_random_file(tmp_path / "f", 70_000)
    a = btfs("create", tmp_path / "f", "-o", tmp_path / "a.torrent", "--no-date", "-q")
    b = btfs("create", tmp_path / "f", "-o", tmp_path / "b.torrent", "--no-date", "-q")
    assert a.returncode == b.returncode == 0
    assert (tmp_path / "a.torrent").read_bytes() == (tmp_path / "b.torrent").read_bytes()


def test_info_of_magnet(tmp_path: Path) -> None:
    uri = "magnet:?xt=urn:btih:" + "ab" * 20 + "&dn=Thing&tr=udp://127.0.0.1:1"
    d = json.loads(btfs("info", uri, "--json").stdout)
    assert d["kind"] == "magnet"
    assert d["info_hash"] == "ab" * 20
    assert d["name"] == "Thing"
    assert d["trackers"] == [["udp://127.0.0.1:1"]]
    assert "Info-hash:    " + "ab" * 20 in btfs("info", uri).stdout


def check_one_line_error(r: subprocess.CompletedProcess[str], needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("btfs: error: ")
    assert needle in lines[0]


@pytest.mark.parametrize(("data", "message"), bad_cases())
def test_bad_torrent_is_one_line_exit_2(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.torrent"
    path.write_bytes(data)
    check_one_line_error(btfs("info", path), message)


@pytest.mark.parametrize(
    ("source", "message"),
    [("magnet:?xt=urn:btih:12345", "malformed magnet info-hash"),
     ("magnet:?dn=nothing", "no 'xt=urn:btih:'"),
     ("/nonexistent/file.torrent", "No such file"),
     ("/", "Is a directory")],
)
def test_bad_sources_are_one_line_exit_2(source: str, message: str) -> None:
    check_one_line_error(btfs("info", source), message)


def test_create_errors_are_one_line(tmp_path: Path) -> None:
    check_one_line_error(btfs("create", tmp_path / "nope"), "No such file")
    make_random_file(tmp_path / "f", 10)
    check_one_line_error(btfs("create", tmp_path / "f", "-l", "1000", "-o", tmp_path / "x"),
                         "power of two")
    check_one_line_error(btfs("create", tmp_path / "f", "-t", "ftp://x", "-o", tmp_path / "x"),
                         "tracker URL")
    r = btfs("create", tmp_path / "f", "-l", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr


def test_huge_piece_length_in_torrent_is_rejected(tmp_path: Path) -> None:
    info = {b"name": b"x", b"piece length": 1 << 40, b"length": 5, b"pieces": b"a" * 20}
    (tmp_path / "t").write_bytes(encode({b"info": info}))
    check_one_line_error(btfs("info", tmp_path / "t"), "larger than 512 MiB")


def run_in_pty(args: list[str]) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; return exit status and what it drew."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-m", "btfs", *args])
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(80 << 20)
    code, screen = run_in_pty(["create", str(big), "-o", str(tmp_path / "a.torrent")])
    assert code == 0
    assert "Hashing [" in screen and "100.0%" in screen
    r = btfs("create", big, "-o", tmp_path / "b.torrent")
    assert r.returncode == 0
    assert r.stderr == ""
