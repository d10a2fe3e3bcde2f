"""Torrents travel both ways between btfs and real tools no one here wrote.

libtorrent (Python bindings), Transmission (`transmission-create`, `transmission-show`)
and `mktorrent` make torrents that `btfs info` must read with the same info-hash; and
torrents `btfs create` makes must be read by libtorrent and Transmission the same way.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.data import make_random_file, make_tree
from tests.support.env import require_libtorrent, require_tool

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TREE = {"a.bin": 3_000_000, "sub/é tß.txt": 3, "sub/deeper/c.bin": 100_001, "z.bin": 16384}


def btfs_info(path: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "btfs", "info", "--json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def btfs_create(src: Path, out: Path, *extra: str) -> None:
    r = subprocess.run([sys.executable, "-m", "btfs", "create", str(src), "-o", str(out), "-q",
                        *extra], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def transmission_show(path: Path) -> tuple[str, list[str]]:
    """The info-hash and file names as Transmission reports them."""
    tool = require_tool("transmission-show", "transmission-cli")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    match = re.search(r"^\s*Hash: ([0-9a-f]{40})$", out, re.M)
    assert match, out
    files_part = out.split("\nFILES\n", 1)[1]
    names = [re.sub(r" \([^)]*\)$", "", line.strip()) for line in files_part.splitlines()
             if line.strip()]
    return match.group(1), names


def libtorrent_view(path: Path) -> dict[str, Any]:
    require_libtorrent()
    import libtorrent as lt

    ti = lt.torrent_info(str(path))
    fs = ti.files()
    files = []
    padding = 0
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            padding += fs.file_size(i)
        else:
            files.append((fs.file_path(i), fs.file_size(i)))
    return {
        "info_hash": str(ti.info_hashes().v1),
        "name": ti.name(),
        "files": files,
        "padding": padding,
        "num_pieces": ti.num_pieces(),
        "piece_length": ti.piece_length(),
        "total_size": ti.total_size(),
    }


def files_of(d: dict[str, Any]) -> list[tuple[str, int]]:
    return [(f["path"], f["size"]) for f in d["files"]]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "Share", TREE, seed=7)


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_btfs_torrents_read_by_libtorrent_and_transmission(
    tmp_path: Path, tree: Path, kind: str
) -> None:
    src = tree if kind == "folder" else make_random_file(tmp_path / "movie.mp4", 1_234_567)
    out = tmp_path / "x.torrent"
    btfs_create(src, out, "-t", "http://127.0.0.1:6969/announce", "-w", "http://127.0.0.1/")
    ours = btfs_info(out)

    lt_view = libtorrent_view(out)
    assert lt_view["info_hash"] == ours["info_hash"]
    assert lt_view["name"] == ours["name"]
    assert lt_view["files"] == files_of(ours)
    assert lt_view["num_pieces"] == ours["piece_count"]
    assert lt_view["piece_length"] == ours["piece_length"]

    tr_hash, tr_names = transmission_show(out)
    assert tr_hash == ours["info_hash"]
    assert sorted(tr_names) == sorted(path for path, _ in files_of(ours))


def test_mktorrent_torrents(tmp_path: Path, tree: Path) -> None:
    tool = require_tool("mktorrent", "mktorrent")
    out = tmp_path / "mk.torrent"
    subprocess.run([tool, "-a", "http://127.0.0.1:1/announce,udp://127.0.0.1:2",
                    "-a", "http://127.0.0.3:3/announce", "-l", "15", "-w", "http://127.0.0.1/x",
                    "-c", "from mktorrent", "-o", str(out), str(tree)],
                   check=True, capture_output=True, timeout=120)
    ours = btfs_info(out)
    tr_hash, tr_names = transmission_show(out)
    assert ours["info_hash"] == tr_hash == libtorrent_view(out)["info_hash"]
    assert sorted(tr_names) == sorted(path for path, _ in files_of(ours))
    assert ours["piece_length"] == 1 << 15
    assert ours["comment"] == "from mktorrent"
    assert ours["trackers"] == [["http://127.0.0.1:1/announce", "udp://127.0.0.1:2"],
                                ["http://127.0.0.3:3/announce"]]
    assert ours["total_size"] == sum(TREE.values())


def test_transmission_create_torrents(tmp_path: Path, tree: Path) -> None:
    tool = require_tool("transmission-create", "transmission-cli")
    out = tmp_path / "tr.torrent"
    subprocess.run([tool, "-o", str(out), "-t", "http://127.0.0.1:1/announce", "-p",
                    "-c", "from transmission", str(tree)],
                   check=True, capture_output=True, timeout=120)
    ours = btfs_info(out)
    tr_hash, tr_names = transmission_show(out)
    assert ours["info_hash"] == tr_hash
    assert sorted(tr_names) == sorted(path for path, _ in files_of(ours))
    assert ours["private"] is True
    assert ours["comment"] == "from transmission"


@pytest.mark.parametrize("mode", ["hybrid", "v1_canonical"])
def test_libtorrent_create_torrent_with_padding(tmp_path: Path, tree: Path, mode: str) -> None:
    require_libtorrent()
    import libtorrent as lt

    fs = lt.file_storage()
    lt.add_files(fs, str(tree))
    flags = 0 if mode == "hybrid" else lt.create_torrent.v1_only | lt.create_torrent.canonical_files
    ct = lt.create_torrent(fs, 32768, flags=flags)
    ct.add_tracker("udp://127.0.0.1:6969", 0)
    ct.add_url_seed("http://127.0.0.1/seed/")
    lt.set_piece_hashes(ct, str(tree.parent))
    out = tmp_path / "lt.torrent"
    out.write_bytes(lt.bencode(ct.generate()))

    view = libtorrent_view(out)
    assert view["padding"] > 0, "libtorrent made no padding files; the test proves nothing"
    ours = btfs_info(out)
    assert ours["info_hash"] == view["info_hash"]
    assert files_of(ours) == view["files"]
    assert ours["padding_size"] == view["padding"]
    assert ours["total_size"] + ours["padding_size"] == view["total_size"]
    assert ours["piece_count"] == view["num_pieces"]
    assert ours["trackers"] == [["udp://127.0.0.1:6969"]]
    assert ours["web_seeds"] == ["http://127.0.0.1/seed/"]
    # The layout keeps the padding: each file starts where libtorrent puts it.
    offsets = {f["path"]: f["offset"] for f in ours["files"]}
    lt_fs = lt.torrent_info(str(out)).files()
    for i in range(lt_fs.num_files()):
        if lt_fs.file_path(i) in offsets:
            assert offsets[lt_fs.file_path(i)] == lt_fs.file_offset(i)
