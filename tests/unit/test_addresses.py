"""Peer addresses as users type them: HOST:PORT and [IPv6]:PORT."""

from __future__ import annotations

import pytest

from btfs.addresses import parse_peer
from btfs.errors import BtfsError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:6881", ("127.0.0.1", 6881)),
        ("example.com:80", ("example.com", 80)),
        ("localhost:1", ("localhost", 1)),
        ("10.0.0.2:65535", ("10.0.0.2", 65535)),
        ("[::1]:6881", ("::1", 6881)),
        ("[2001:db8::7]:51413", ("2001:db8::7", 51413)),
        ("[fe80::1%eth0]:6881", ("fe80::1%eth0", 6881)),
        ("  127.0.0.1:6881\n", ("127.0.0.1", 6881)),
        ("  [::1]:9 ", ("::1", 9)),
    ],
)
def test_parse_peer(text: str, expected: tuple[str, int]) -> None:
    assert parse_peer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "127.0.0.1",            # no port
        "example.com",
        "127.0.0.1:",           # empty port
        ":6881",                # no host
        "[]:6881",
        "127.0.0.1:0",          # port 0
        "127.0.0.1:65536",      # port too large
        "127.0.0.1:99999999",
        "127.0.0.1:-1",
        "127.0.0.1:-0",
        "127.0.0.1:http",       # not a number
        "127.0.0.1:0x1AE1",
        "127.0.0.1:68.81",
        "127.0.0.1:6881:",
        "::1:6881",             # bare IPv6 without brackets
        "2001:db8::7:51413",
        "::1",
        "[::1]",                # bracketed, no port
        "[::1]:",
        "[::1]6881",
        "[::1:6881",            # unclosed bracket
        "[::1]:0",
        "[::1]:65536",
        "[::1]:port",
    ],
)
def test_parse_peer_errors(text: str) -> None:
    with pytest.raises(BtfsError):
        parse_peer(text)


def test_error_names_the_input() -> None:
    with pytest.raises(BtfsError, match="nowhere:0"):
        parse_peer("nowhere:0")


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:6_881", "127.0.0.1:+6881", "127.0.0.1:\uff16\uff18\uff18\uff11"],
)
def test_parse_peer_port_must_be_plain_ascii_digits(text: str) -> None:
    with pytest.raises(BtfsError):
        parse_peer(text)
