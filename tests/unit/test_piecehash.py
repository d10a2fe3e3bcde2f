from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from btfs import piecehash
from btfs.piecehash import DataError, Segment, hash_pieces
from tests.support.data import make_random_file


def reference(data: bytes, piece_length: int) -> list[bytes | None]:
    return [
        hashlib.sha1(data[i : i + piece_length]).digest()
        for i in range(0, len(data), piece_length)
    ]


@pytest.mark.parametrize("batch_bytes", [16384, 1 << 20, 4 << 20])
def test_pieces_span_files_and_padding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_bytes: int
) -> None:
    monkeypatch.setattr(piecehash, "BATCH_BYTES", batch_bytes)
    a = make_random_file(tmp_path / "a", 40_000, seed=1)
    b = make_random_file(tmp_path / "b", 0, seed=2)
    c = make_random_file(tmp_path / "c", 100_003, seed=3)
    segments = [Segment(a, 40_000), Segment(None, 9152), Segment(b, 0), Segment(c, 100_003)]
    data = a.read_bytes() + bytes(9152) + c.read_bytes()
    assert hash_pieces(segments, 16384) == reference(data, 16384)
    assert hash_pieces(segments, 16384, workers=1) == reference(data, 16384)


def test_progress_reaches_total(tmp_path: Path) -> None:
    f = make_random_file(tmp_path / "f", 300_000)
    seen: list[int] = []
    hash_pieces([Segment(f, 300_000)], 32768, on_progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 300_000


def test_short_or_missing_file_raises_unless_missing_ok(tmp_path: Path) -> None:
    f = make_random_file(tmp_path / "f", 50_000)
    segments = [Segment(f, 70_000), Segment(tmp_path / "gone", 20_000)]
    with pytest.raises(DataError, match="shorter than expected"):
        hash_pieces(segments, 16384)
    result = hash_pieces(segments, 16384, missing_ok=True)
    expected = reference(f.read_bytes(), 16384)
    assert result[:3] == expected[:3]
    assert result[3:] == [None] * (len(result) - 3)
    with pytest.raises(DataError, match="No such file"):
        hash_pieces([Segment(tmp_path / "gone", 5)], 16384)
