from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.bencode import encode
from btfs.errors import BtfsError, MetainfoError
from btfs.metainfo import Metainfo, parse_torrent


def single(length: int = 100_000, piece_length: int = 32768, **extra: Any) -> dict[bytes, Any]:
    count = -(-length // piece_length)
    info = {
        b"name": b"file.bin",
        b"piece length": piece_length,
        b"pieces": b"\x01" * 20 * count,
        b"length": length,
    }
    info.update({k.encode(): v for k, v in extra.items()})
    return info


def multi(files: list[tuple[list[bytes], int]], piece_length: int = 16384) -> dict[bytes, Any]:
    total = sum(n for _, n in files)
    return {
        b"name": b"folder",
        b"piece length": piece_length,
        b"pieces": b"\x02" * 20 * max(1, -(-total // piece_length)),
        b"files": [{b"path": p, b"length": n} for p, n in files],
    }


def torrent(info: Any, **top: Any) -> bytes:
    d: dict[bytes, Any] = {b"info": info}
    names = {"announce_list": "announce-list", "url_list": "url-list"}
    d.update({names.get(k, k.replace("_", " ")).encode(): v for k, v in top.items()})
    return encode(d)


def test_single_file() -> None:
    data = torrent(single(), announce=b"http://t.example/announce", comment=b"hi")
    meta = parse_torrent(data)
    assert meta.info.name == "file.bin"
    assert meta.info.total_length == 100_000
    assert meta.info.num_pieces == 4
    assert meta.info.piece_size(3) == 100_000 - 3 * 32768
    assert meta.trackers == (("http://t.example/announce",),)
    assert meta.comment == "hi"
    assert not meta.info.multi_file
    assert meta.info.files[0].path == ("file.bin",)


def test_info_hash_is_over_raw_bytes() -> None:
    raw_info = (
        b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:" + b"a" * 20 + b"3:zzzi1ee"
    )
    data = b"d4:info" + raw_info + b"e"
    assert parse_torrent(data).info_hash == hashlib.sha1(raw_info).digest()


def test_multi_file_offsets_and_padding() -> None:
    info = multi([([b"a.bin"], 10), ([b".pad", b"16374"], 16374), ([b"sub", b"b.bin"], 5)])
    info[b"files"][1][b"attr"] = b"p"
    meta = parse_torrent(torrent(info))
    files = meta.info.files
    assert [f.offset for f in files] == [0, 10, 16384]
    assert files[1].padding
    assert [f.path for f in meta.info.visible_files] == [("a.bin",), ("sub", "b.bin")]
    assert meta.info.total_length == 16389


def test_announce_list_tiers_and_web_seeds() -> None:
    data = torrent(
        single(),
        announce=b"http://a/announce",
        announce_list=[[b"http://a/announce", b"udp://b:1"], [b"wss://no"], [b"http://c/x"]],
        url_list=b"http://seed/file.bin",
    )
    meta = parse_torrent(data)
    assert meta.trackers == (("http://a/announce", "udp://b:1"), ("http://c/x",))
    assert meta.web_seeds == ("http://seed/file.bin",)


def test_utf8_names_and_path_utf8_preferred() -> None:
    info = multi([([b"caf\xc3\xa9.txt"], 3), ([b"\xff\xfe.bin"], 3)])
    info[b"files"][1][b"path.utf-8"] = ["ünï.bin".encode()]
    meta = parse_torrent(torrent(info))
    assert [f.name for f in meta.info.files] == ["café.txt", "ünï.bin"]


def test_hybrid_v2_torrent_is_read_as_v1() -> None:
    info = single()
    info[b"meta version"] = 2
    info[b"file tree"] = {b"file.bin": {b"": {b"length": 100_000}}}
    assert parse_torrent(torrent(info)).info.num_pieces == 4


def test_private_flag() -> None:
    assert parse_torrent(torrent(single(private=1))).info.private
    assert not parse_torrent(torrent(single())).info.private


def bad_cases() -> list[tuple[bytes, str]]:
    good = torrent(single())
    cases = [
        (b"", "empty file"),
        (good[: len(good) // 2], "truncated"),
        (b"this is not a torrent", "bencode"),
        (good + b"garbage", "trailing data"),
        (encode([1, 2]), "not a bencoded dictionary"),
        (encode({b"announce": b"x"}), "missing or invalid 'info'"),
        (torrent([1]), "missing or invalid 'info'"),
        (torrent(single(name=5)), "info 'name'"),
        (torrent(single(name=b"")), "torrent name is empty"),
        (torrent(single(name=b"a/b")), "contains '/'"),
        (torrent(single(name=b"..")), "contains '..'"),
        (torrent({**single(), b"piece length": b"16"}), "'piece length'"),
        (torrent({**single(), b"piece length": 0}), "must be positive"),
        (torrent({**single(), b"pieces": b"x" * 21}), "not a multiple of 20"),
        (torrent({**single(), b"pieces": b"x" * 40}), "need 4"),
        (torrent({**single(), b"pieces": 7}), "'pieces' must be a byte string"),
        (torrent({k: v for k, v in single().items() if k != b"pieces"}), "missing 'pieces'"),
        (torrent({**single(), b"length": -5}), "'length' must be positive"),
        (torrent({**single(), b"length": 0}), "'length' must be positive"),
        (torrent({**single(), b"length": b"5"}), "'length' must be an integer"),
        (torrent({k: v for k, v in single().items() if k != b"length"}), "neither"),
        (torrent(multi([([b"a"], -1)])), "negative length"),
        (torrent(multi([([b"/etc", b"passwd"], 1)])), "absolute"),
        (torrent(multi([([], 1)])), "non-empty list"),
        (torrent(multi([([b""], 1)])), "is empty"),
        (torrent(multi([([b"..", b"x"], 1)])), "'..'"),
        (torrent(multi([([b"a\x00b"], 1)])), "NUL"),
        (torrent(multi([([b"a"], 1), ([b"a"], 1)])), "appears twice"),
        (torrent(multi([([b"a"], 1), ([b"a", b"b"], 1)])), "both a file and a folder"),
        (torrent(multi([([b"a"], 0)])), "no data"),
        (torrent({**multi([([b"a"], 1)]), b"files": b"x"}), "'files' must be"),
        (torrent({**multi([([b"a"], 1)]), b"files": [5]}), "files[0] is not a dictionary"),
        (torrent({**multi([([b"a"], 1)]), b"length": 1}), "both 'length' and 'files'"),
        (torrent({b"name": b"x", b"piece length": 16384, b"meta version": 2,
                  b"file tree": {}}), "v2-only"),
    ]
    return cases


@pytest.mark.parametrize(("data", "message"), bad_cases())
def test_bad_torrents_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(MetainfoError) as info:
        parse_torrent(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=300)
@given(st.binary(max_size=500))
def test_random_bytes_raise_only_our_error(data: bytes) -> None:
    try:
        meta = parse_torrent(data)
    except BtfsError:
        return
    check_consistent(meta)


GOOD = torrent(multi([([b"a"], 20000), ([b"b", b"c"], 30000)]), announce=b"http://x/announce")


@settings(max_examples=300)
@given(st.data())
def test_mutated_torrents_raise_only_our_error(data: st.DataObject) -> None:
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[pos:]
            if not raw:
                break
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        meta = parse_torrent(bytes(raw))
    except BtfsError:
        return
    check_consistent(meta)


def check_consistent(meta: Metainfo) -> None:
    """What the parser accepts holds together: one hash per piece, files end to end."""
    info = meta.info
    assert len(meta.info_hash) == 20
    assert len(info.pieces) == 20 * info.num_pieces
    assert (info.num_pieces - 1) * info.piece_length < info.total_length
    assert info.total_length <= info.num_pieces * info.piece_length
    offset = 0
    for f in info.files:
        assert f.offset == offset and f.length >= 0
        offset += f.length
