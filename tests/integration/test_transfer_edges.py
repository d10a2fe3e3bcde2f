"""`btfs download` and `btfs seed` when the data is already (partly) there, or only partly
right: what they check, fetch and say. (The usual runs are in test_engine.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.net import next_loopback_ipv4
from tests.support.procs import Processes
from tests.support.swarm import (
    downloaded_bytes,
    finish,
    share,
    start_download,
    start_seed,
    tree_digest,
    wait_for_line,
)

TREE = {"a.bin": 200_000, "empty.txt": 0, "sub/b.bin": 100_001}
PIECE = 32768


def test_download_of_data_already_complete_fetches_nothing(tmp_path: Path,
                                                           procs: Processes) -> None:
    """No peer at all: the data in the folder is checked, the one missing (empty) file
    made, and it says so and exits 0."""
    shared = share(tmp_path, TREE, piece_length=PIECE)
    out = tmp_path / "out"
    shutil.copytree(shared.data, out / shared.data.name)
    (out / shared.data.name / "empty.txt").unlink()
    output = finish(procs, start_download(procs, shared.torrent, out, "--no-trackers"))
    assert "btfs: payload: already complete" in output.splitlines()
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)


def test_download_over_partly_good_data_fetches_only_the_bad_pieces(tmp_path: Path,
                                                                    procs: Processes) -> None:
    shared = share(tmp_path, 1_000_000, piece_length=PIECE)
    out = tmp_path / "out"
    out.mkdir()
    damaged = bytearray(shared.data.read_bytes())
    damaged[5 * PIECE + 7] ^= 0xFF  # one byte of piece 5
    damaged[20 * PIECE : 21 * PIECE] = bytes(PIECE)  # all of piece 20
    (out / shared.data.name).write_bytes(damaged[: 29 * PIECE])  # and the end is missing
    host = next_loopback_ipv4()
    port = start_seed(procs, shared, host)
    output = finish(procs, start_download(procs, shared.torrent, out, "--no-trackers",
                                          "--peer", f"{host}:{port}"))
    assert tree_digest(out / shared.data.name) == tree_digest(shared.data)
    missing = 2 * PIECE + (shared.size - 29 * PIECE)
    assert missing <= downloaded_bytes(output) < missing + 4 * PIECE, output


def test_seed_of_partly_matching_data_serves_what_matches(tmp_path: Path,
                                                          procs: Processes) -> None:
    shared = share(tmp_path, 10 * PIECE, piece_length=PIECE)
    data = bytearray(shared.data.read_bytes())
    data[3 * PIECE] ^= 1
    copy = tmp_path / "copy" / shared.data.name
    copy.parent.mkdir()
    copy.write_bytes(data)
    seed = procs.start_btfs("seed", shared.torrent, copy, "--bind", next_loopback_ipv4(),
                            "--no-trackers")
    wait_for_line(procs, seed, r"listening on port \d+")
    lines = procs.output(seed).splitlines()
    assert f"btfs: warning: only 9 of 10 pieces at {copy} match; serving those" in lines
    assert any("seeding payload.bin (9/10 pieces)" in line for line in lines), lines
