"""The read order a kept cache saves at unmount, and what a damaged one reads as."""

from __future__ import annotations

from pathlib import Path

from btfs.library import load_read_order, save_read_order


def test_saved_and_loaded_and_damaged_or_missing_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "read-order"
    assert load_read_order(path) == []
    save_read_order(path, [5, 0, 7])
    assert load_read_order(path) == [5, 0, 7]
    assert not (tmp_path / "read-order.tmp").exists()
    path.write_bytes(b"1 2 x\n")
    assert load_read_order(path) == []
    path.write_bytes(b"\xff\xfe")
    assert load_read_order(path) == []


def test_a_folder_that_cannot_be_written_costs_only_the_order(tmp_path: Path) -> None:
    save_read_order(tmp_path / "missing" / "read-order", [1])
    assert not (tmp_path / "missing").exists()
