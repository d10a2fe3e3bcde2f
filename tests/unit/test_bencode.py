from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btfs.bencode import MAX_DEPTH, decode, decode_prefix, decode_with_spans, encode
from btfs.errors import BencodeError

values = st.recursive(
    st.integers(min_value=-(10**36), max_value=10**36) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.binary(max_size=10), children, max_size=5),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_bencode_error(data: bytes) -> None:
    try:
        value = decode(data)
    except BencodeError:
        return
    assert decode(encode(value)) == value  # what it accepts is a real bencode value


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"i12", "truncated"),
        (b"i-0e", "malformed integer"),
        (b"i03e", "malformed integer"),
        (b"ie", "malformed integer"),
        (b"i1x2e", "malformed integer"),
        (b"5:abc", "runs past the end"),
        (b"05:abcde", "malformed string length"),
        (b"l1:a", "list not closed"),
        (b"d1:ai1e", "dictionary not closed"),
        (b"di1ei2ee", "not a string"),
        (b"d1:ai1e1:ai2ee", "duplicate"),
        (b"i1ei2e", "trailing data"),
        (b"x", "unexpected byte"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(BencodeError, match=message):
        decode(data)


def test_depth_is_bounded() -> None:
    deep = b"l" * (MAX_DEPTH + 5) + b"e" * (MAX_DEPTH + 5)
    with pytest.raises(BencodeError, match="nested deeper"):
        decode(deep)
    ok = b"l" * 10 + b"e" * 10
    assert decode(ok) == [[[[[[[[[[]]]]]]]]]]


def test_spans_cover_raw_bytes_even_when_not_canonical() -> None:
    # Keys out of order inside info: re-encoding would change the bytes, the span must not.
    raw_info = b"d4:name1:x6:lengthi1ee"
    data = b"d8:announce3:url4:info" + raw_info + b"e"
    top, spans = decode_with_spans(data)
    start, end = spans[b"info"]
    assert data[start:end] == raw_info
    assert top[b"info"] == {b"name": b"x", b"length": 1}
    assert encode(top[b"info"]) != raw_info


def test_decode_prefix_reports_end() -> None:
    value, end = decode_prefix(b"d8:msg_typei1e5:piecei0eeRAWBYTES")
    assert value == {b"msg_type": 1, b"piece": 0}
    assert end == len(b"d8:msg_typei1e5:piecei0ee")


def test_encode_sorts_keys_and_encodes_text() -> None:
    assert encode({b"b": 1, b"a": [b"x", "y"]}) == b"d1:al1:x1:ye1:bi1ee"
