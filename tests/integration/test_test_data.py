"""The test data the streaming tests rely on is what it claims to be."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import net
from tests.support.data import make_random_file, mp4_top_level_boxes
from tests.support.env import require_tool


def test_media_mp4_is_h264_aac_with_index_at_end(media_mp4: Path) -> None:
    boxes = mp4_top_level_boxes(media_mp4)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") > boxes.index("mdat"), boxes
    ffprobe = require_tool("ffprobe", "ffmpeg")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(media_mp4)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    info = json.loads(out)
    codecs = sorted(s["codec_name"] for s in info["streams"])
    assert codecs == ["aac", "h264"]
    assert 5.5 < float(info["format"]["duration"]) < 6.5


def test_random_files_are_reproducible(tmp_path: Path) -> None:
    a = make_random_file(tmp_path / "a", 3 << 20, seed=5)
    b = make_random_file(tmp_path / "b", 3 << 20, seed=5)
    c = make_random_file(tmp_path / "c", 3 << 20, seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_loopback_addresses_are_distinct_and_bindable() -> None:
    addrs = {net.next_loopback_ipv4() for _ in range(300)}
    assert len(addrs) == 300
    assert "127.0.0.1" not in addrs
    for addr in list(addrs)[:5]:
        port = net.free_port(addr)
        assert 0 < port < 65536
