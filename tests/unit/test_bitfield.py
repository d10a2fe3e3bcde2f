"""The piece bitfield: BEP 3 wire form (high bit first), strict parsing of a peer's bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs.bitfield import Bitfield, BitfieldError


def test_empty() -> None:
    bf = Bitfield(10)
    assert bf.size == 10
    assert bf.count == 0 and len(bf) == 0
    assert not bf.all()
    assert list(bf) == []
    assert bf.to_bytes() == b"\0\0"


def test_high_bit_first() -> None:
    bf = Bitfield(16)
    bf.set(0)
    assert bf.to_bytes() == b"\x80\x00"
    bf.set(7)
    assert bf.to_bytes() == b"\x81\x00"
    bf.set(8)
    assert bf.to_bytes() == b"\x81\x80"
    bf.set(15)
    assert bf.to_bytes() == b"\x81\x81"


def test_from_bytes_high_bit_first() -> None:
    bf = Bitfield.from_bytes(12, b"\xa0\x10")
    assert list(bf) == [0, 2, 11]
    assert bf.has(0) and not bf.has(1) and bf.has(2) and bf.has(11)
    assert bf.count == 3


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 17, 100, 1313])
def test_full(size: int) -> None:
    bf = Bitfield.full(size)
    assert bf.all()
    assert bf.count == size == len(bf)
    assert list(bf) == list(range(size))
    data = bf.to_bytes()
    assert len(data) == (size + 7) // 8
    # spare bits stay clear, so the wire form is accepted back
    assert Bitfield.from_bytes(size, data).all()
    if size % 8:
        assert data[-1] & ((1 << (8 - size % 8)) - 1) == 0


def test_full_known_bytes() -> None:
    assert Bitfield.full(10).to_bytes() == b"\xff\xc0"
    assert Bitfield.full(8).to_bytes() == b"\xff"
    assert Bitfield.full(1).to_bytes() == b"\x80"


def test_zero_size() -> None:
    bf = Bitfield.from_bytes(0, b"")
    assert bf.all() and bf.count == 0 and list(bf) == []
    with pytest.raises(BitfieldError):
        Bitfield.from_bytes(0, b"\0")


@pytest.mark.parametrize(
    "size, data",
    [
        (10, b"\xff"),            # too short
        (10, b"\xff\xc0\x00"),    # too long
        (8, b""),
        (8, b"\0\0"),
        (16, b"\xff"),
        (17, b"\xff\xff"),
    ],
)
def test_wrong_length(size: int, data: bytes) -> None:
    with pytest.raises(BitfieldError):
        Bitfield.from_bytes(size, data)


@pytest.mark.parametrize(
    "size, data",
    [
        (10, b"\xff\xe0"),   # bit 10 set
        (10, b"\x00\x01"),   # last spare bit
        (10, b"\x00\x3f"),   # all spare bits
        (1, b"\x40"),
        (1, b"\xc0"),
        (15, b"\x00\x01"),
    ],
)
def test_spare_bits_set(size: int, data: bytes) -> None:
    with pytest.raises(BitfieldError):
        Bitfield.from_bytes(size, data)


def test_bitfield_error_is_a_value_error() -> None:
    assert issubclass(BitfieldError, ValueError)


def test_set_is_idempotent_and_counts() -> None:
    bf = Bitfield(5)
    bf.set(3)
    bf.set(3)
    assert bf.count == 1
    for i in range(5):
        bf.set(i)
    assert bf.count == 5 and bf.all()


@pytest.mark.parametrize("i", [-1, 5, 100])
def test_set_out_of_range(i: int) -> None:
    bf = Bitfield(5)
    with pytest.raises(IndexError):
        bf.set(i)
    assert bf.count == 0


def test_contains_and_has_out_of_range() -> None:
    bf = Bitfield.full(9)
    assert 0 in bf and 8 in bf
    assert 9 not in bf and -1 not in bf and 1000 not in bf
    assert not bf.has(-1) and not bf.has(9)
    assert "1" not in bf
    assert None not in bf
    assert 1.0 not in bf


def test_from_indices() -> None:
    bf = Bitfield.from_indices(20, [19, 0, 5, 5])
    assert list(bf) == [0, 5, 19]
    assert bf.count == 3
    with pytest.raises(IndexError):
        Bitfield.from_indices(20, [20])


def test_all_only_when_every_piece_present() -> None:
    bf = Bitfield(3)
    bf.set(0)
    bf.set(2)
    assert not bf.all()
    bf.set(1)
    assert bf.all()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(n - 1, 0)), max_size=n))
))
def test_round_trip(args: tuple[int, set[int]]) -> None:
    size, indices = args
    if size == 0:
        indices = set()
    bf = Bitfield.from_indices(size, indices)
    data = bf.to_bytes()
    back = Bitfield.from_bytes(size, data)
    assert list(back) == sorted(indices)
    assert back.count == len(indices)
    assert back.to_bytes() == data
    assert back.all() == (len(indices) == size)
    for i in range(size):
        assert (i in back) == (i in indices)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100), st.binary(max_size=16))
def test_from_bytes_random(size: int, data: bytes) -> None:
    try:
        bf = Bitfield.from_bytes(size, data)
    except BitfieldError:
        return
    assert bf.to_bytes() == data
    assert bf.count == sum(bin(b).count("1") for b in data)
    assert all(0 <= i < size for i in bf)


def test_clear_takes_a_piece_out_and_keeps_the_count() -> None:
    bits = Bitfield.full(10)
    bits.clear(3)
    bits.clear(3)
    assert 3 not in bits and bits.count == 9 and not bits.all()
    assert list(bits) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    with pytest.raises(IndexError):
        bits.clear(10)
