"""BEP 9 metadata messages and assembly (pure)."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs.extensions import (
    DATA,
    PIECE_SIZE,
    REJECT,
    REQUEST,
    MetadataAssembler,
    MetadataError,
    encode_data,
    encode_reject,
    encode_request,
    parse_message,
)

RAW = os.urandom(2 * PIECE_SIZE + 123)
HASH = hashlib.sha1(RAW).digest()


def test_messages_round_trip() -> None:
    assert parse_message(encode_request(2)).kind == REQUEST
    assert parse_message(encode_reject(1)).kind == REJECT
    m = parse_message(encode_data(1, RAW))
    assert (m.kind, m.piece, m.total_size, m.data) == (DATA, 1, len(RAW),
                                                       RAW[PIECE_SIZE : 2 * PIECE_SIZE])
    assert parse_message(encode_data(2, RAW)).data == RAW[2 * PIECE_SIZE :]


def test_assembly_in_any_order_checks_the_hash() -> None:
    a = MetadataAssembler(HASH, len(RAW))
    assert a.missing() == [0, 1, 2]
    assert a.add(2, RAW[2 * PIECE_SIZE :]) is None
    assert a.add(0, RAW[:PIECE_SIZE]) is None
    assert a.add(1, RAW[PIECE_SIZE : 2 * PIECE_SIZE]) == RAW


def test_wrong_data_is_refused() -> None:
    a = MetadataAssembler(HASH, len(RAW))
    a.add(0, RAW[:PIECE_SIZE])
    a.add(1, RAW[PIECE_SIZE : 2 * PIECE_SIZE])
    with pytest.raises(MetadataError, match="does not match"):
        a.add(2, bytes(123))
    assert a.missing() == [0, 1, 2]  # start over: which piece lied is unknown
    with pytest.raises(MetadataError):
        a.add(0, RAW[:100])  # wrong length
    with pytest.raises(MetadataError):
        a.add(7, RAW[:PIECE_SIZE])  # past the end
    with pytest.raises(MetadataError):
        MetadataAssembler(HASH, 0)
    with pytest.raises(MetadataError):
        MetadataAssembler(HASH, 1 << 30)


@pytest.mark.parametrize("payload", [b"", b"garbage", b"le", b"d8:msg_typei9ee",
                                     b"d8:msg_typei1e5:piecei0ee",  # data without total_size
                                     b"d8:msg_typei0e5:piecei-1ee"])
def test_malformed_messages(payload: bytes) -> None:
    with pytest.raises(MetadataError):
        parse_message(payload)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_metadata_errors(payload: bytes) -> None:
    try:
        m = parse_message(payload)
    except MetadataError:
        return
    assert m.kind in (REQUEST, DATA, REJECT) and m.piece >= 0
