"""Blocks into pieces and whom to blame for a piece that fails its hash (pure)."""

from __future__ import annotations

import os

from btfs.assembly import Assembly, Culprit
from btfs.picker import Block

BLOCK = 4
PIECE = 3 * BLOCK
GOOD = os.urandom(PIECE)
HOSTS = {b"a": "10.0.0.1", b"b": "10.0.0.2"}


def assembled(senders: list[bytes], data: bytes) -> Assembly:
    assembly = Assembly(lambda piece: PIECE, BLOCK)
    for i, source in enumerate(senders):
        assembly.add(source, Block(0, i * BLOCK, BLOCK), data[i * BLOCK : (i + 1) * BLOCK])
    return assembly


def test_a_single_sender_is_blamed_at_once() -> None:
    assembly = assembled([b"a"] * 3, bytes(PIECE))
    partial = assembly.take(0)
    assert bytes(partial.data) == bytes(PIECE)
    culprits = assembly.failed(0, partial, HOSTS.get, lambda s: True)
    assert culprits == [Culprit(b"a", "10.0.0.1", "piece 0 failed its hash check")]


def test_with_several_senders_only_those_whose_blocks_differ_once_it_passes() -> None:
    bad = GOOD[:BLOCK] + bytes(BLOCK) + GOOD[2 * BLOCK :]  # b sent block 1 wrong
    assembly = assembled([b"a", b"b", b"w"], bad)
    present = {b"a", b"b", b"w"}.__contains__
    assert assembly.failed(0, assembly.take(0), HOSTS.get, present) == []
    culprits = assembly.passed(0, lambda begin, n: GOOD[begin : begin + n])
    assert culprits == [Culprit(b"b", "10.0.0.2", "sent a bad block of piece 0")]
    assert assembly.passed(0, lambda begin, n: GOOD[begin : begin + n]) == []


def test_a_sender_no_longer_present_is_not_judged_later() -> None:
    bad = bytes(BLOCK) + GOOD[BLOCK:]
    assembly = assembled([b"a", b"b", b"b"], bad)
    assembly.failed(0, assembly.take(0), HOSTS.get, lambda s: s != b"a")
    assert assembly.passed(0, lambda begin, n: GOOD[begin : begin + n]) == []


def test_a_web_seed_is_blamed_without_a_host() -> None:
    bad = GOOD[:BLOCK] + bytes(2 * BLOCK)
    assembly = assembled([b"a", b"seed", b"seed"], bad)
    assembly.failed(0, assembly.take(0), HOSTS.get, lambda s: True)
    culprits = assembly.passed(0, lambda begin, n: GOOD[begin : begin + n])
    assert {c.source for c in culprits} == {b"seed"} and all(c.host is None for c in culprits)
