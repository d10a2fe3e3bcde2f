from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs.errors import BtfsError, MetainfoError
from btfs.magnet import parse_magnet

HASH = bytes(range(20))


def test_hex_hash_and_fields() -> None:
    m = parse_magnet(
        f"magnet:?xt=urn:btih:{HASH.hex().upper()}&dn=My+Movie%20(2020)"
        "&tr=http%3A%2F%2Ft.example%2Fannounce&tr=udp://u.example:80&ws=http://seed/x"
        "&x.pe=127.0.0.2:6881&xl=1234"
    )
    assert m.info_hash == HASH
    assert m.display_name == "My Movie (2020)"
    assert m.trackers == (("http://t.example/announce",), ("udp://u.example:80",))
    assert m.web_seeds == ("http://seed/x",)
    assert m.peers == ("127.0.0.2:6881",)
    assert m.exact_length == 1234


def test_base32_hash() -> None:
    b32 = base64.b32encode(HASH).decode()
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32}").info_hash == HASH
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32.lower()}").info_hash == HASH


def test_hybrid_magnet_keeps_v1_hash() -> None:
    uri = f"magnet:?xt=urn:btih:{HASH.hex()}&xt=urn:btmh:1220{'ab' * 32}"
    assert parse_magnet(uri).info_hash == HASH


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com", "must start with 'magnet:'"),
        ("magnet:", "malformed magnet URI"),
        ("magnet:?dn=x", "no 'xt=urn:btih:'"),
        ("magnet:?xt=urn:btih:1234", "malformed magnet info-hash"),
        ("magnet:?xt=urn:btih:" + "zz" * 20, "malformed magnet info-hash"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "malformed magnet info-hash"),
        ("magnet:?xt=urn:btmh:1220" + "ab" * 32, "v2-only"),
        (f"magnet:?xt=urn:btih:{HASH.hex()}&tr=ftp://x", "unsupported tracker"),
        (f"magnet:?xt=urn:btih:{HASH.hex()}&xl=-3", "'xl'"),
        (f"magnet:?xt=urn:btih:{HASH.hex()}&xt=urn:btih:{'00' * 20}", "two different"),
        ("magnet:?xt", "malformed magnet URI"),
    ],
)
def test_malformed(uri: str, message: str) -> None:
    with pytest.raises(MetainfoError, match=message.replace("(", r"\(")):
        parse_magnet(uri)


@given(st.text(max_size=200))
def test_random_text_raises_only_our_error(text: str) -> None:
    for candidate in (text, "magnet:?" + text, "magnet:?xt=urn:btih:" + text):
        try:
            parse_magnet(candidate)
        except BtfsError:
            pass
