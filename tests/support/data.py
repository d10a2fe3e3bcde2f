"""Real test data: random files, folder trees, and a real H.264/AAC .mp4."""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

from tests.support.env import require_tool


def make_random_file(path: Path, size: int, seed: int = 0) -> Path:
    """`size` pseudo-random bytes (reproducible by `seed`), written in 1 MiB chunks."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def make_tree(root: Path, files: dict[str, int], seed: int = 0) -> Path:
    """A folder with the given relative paths and sizes; nested folders are created."""
    for i, (rel, size) in enumerate(sorted(files.items())):
        make_random_file(root / rel, size, seed=seed * 1000 + i)
    return root


def make_media_mp4(path: Path, seconds: int = 6, size: str = "320x240") -> Path:
    """An H.264 + AAC .mp4 from ffmpeg's test sources, `moov` after `mdat` (index at the end)."""
    ffmpeg = require_tool("ffmpeg", "ffmpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
            "-c:a", "aac", "-b:a", "64k", "-shortest",
            str(path),
        ],
        check=True,
        timeout=300,
    )
    return path


def mp4_top_level_boxes(path: Path) -> list[str]:
    """The four-letter types of an ISO-BMFF file's top-level boxes, in file order."""
    boxes = []
    with open(path, "rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                f.seek(size - 16, 1)
            elif size == 0:
                boxes.append(kind.decode("latin-1"))
                break
            else:
                f.seek(size - 8, 1)
            boxes.append(kind.decode("latin-1"))
    return boxes
