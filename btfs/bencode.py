"""Bencode: a strict decoder for untrusted bytes, and the encoder.

The decoder is our own because a torrent's info-hash is the SHA-1 of the info
dictionary's bytes exactly as they stand in the file: `decode_with_spans` reports where
each top-level value starts and ends. It also never recurses without bound, never
raises anything but `BencodeError`, and names the byte offset of the problem.
Encoding is `bencode.py`'s (byte strings stay bytes with ``encoding=None``).
"""

from __future__ import annotations

from typing import Any

import bencodepy

from btfs.errors import BencodeError

Value = int | bytes | list[Any] | dict[bytes, Any]

MAX_DEPTH = 64

_encoder = bencodepy.Bencode(encoding=None)
_DIGITS = frozenset(b"0123456789")


def encode(value: Any) -> bytes:
    """Bencode ints, bytes, str (as UTF-8), lists and dicts (keys sorted as bytes)."""
    try:
        return bytes(_encoder.encode(value))
    except Exception as exc:  # bencodepy raises its own assorted types
        raise BencodeError(f"cannot bencode {type(value).__name__}: {exc}") from exc


def decode(data: bytes) -> Value:
    """Decode exactly one bencoded value that fills `data`."""
    value, end = _Decoder(data).value(0, 0)
    if end != len(data):
        raise BencodeError(f"trailing data after the bencoded value at byte {end}")
    return value


def decode_prefix(data: bytes) -> tuple[Value, int]:
    """Decode one value at the start of `data`; return it and where it ends (BEP 9 messages)."""
    return _Decoder(data).value(0, 0)


def decode_with_spans(data: bytes) -> tuple[dict[bytes, Any], dict[bytes, tuple[int, int]]]:
    """Decode a top-level dictionary and report the byte span of each of its values."""
    if not data.startswith(b"d"):
        raise BencodeError("not a bencoded dictionary")
    dec = _Decoder(data)
    result: dict[bytes, Any] = {}
    spans: dict[bytes, tuple[int, int]] = {}
    pos = 1
    while True:
        if pos >= len(data):
            raise BencodeError(f"truncated: dictionary not closed at byte {pos}")
        if data[pos] == ord("e"):
            pos += 1
            break
        key, pos = dec.string(pos)
        if key in result:
            raise BencodeError(f"duplicate dictionary key {key!r} at byte {pos}")
        start = pos
        result[key], pos = dec.value(pos, 1)
        spans[key] = (start, pos)
    if pos != len(data):
        raise BencodeError(f"trailing data after the bencoded value at byte {pos}")
    return result, spans


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        data = self.data
        if pos >= len(data):
            raise BencodeError(f"truncated: value expected at byte {pos}")
        if depth > MAX_DEPTH:
            raise BencodeError(f"nested deeper than {MAX_DEPTH} levels at byte {pos}")
        c = data[pos]
        if c == ord("i"):
            return self.integer(pos)
        if c in _DIGITS:
            return self.string(pos)
        if c == ord("l"):
            items: list[Any] = []
            pos += 1
            while True:
                if pos >= len(data):
                    raise BencodeError(f"truncated: list not closed at byte {pos}")
                if data[pos] == ord("e"):
                    return items, pos + 1
                item, pos = self.value(pos, depth + 1)
                items.append(item)
        if c == ord("d"):
            result: dict[bytes, Any] = {}
            pos += 1
            while True:
                if pos >= len(data):
                    raise BencodeError(f"truncated: dictionary not closed at byte {pos}")
                if data[pos] == ord("e"):
                    return result, pos + 1
                if data[pos] not in _DIGITS:
                    raise BencodeError(f"dictionary key is not a string at byte {pos}")
                key, pos = self.string(pos)
                if key in result:
                    raise BencodeError(f"duplicate dictionary key {key!r} at byte {pos}")
                result[key], pos = self.value(pos, depth + 1)
        raise BencodeError(f"unexpected byte {bytes([c])!r} at byte {pos}")

    def integer(self, pos: int) -> tuple[int, int]:
        end = self.data.find(b"e", pos + 1, pos + 40)
        if end < 0:
            if self.data.find(b"e", pos + 1) < 0 and len(self.data) - pos < 40:
                raise BencodeError(f"truncated: integer not closed at byte {pos}")
            raise BencodeError(f"malformed integer at byte {pos}")
        text = self.data[pos + 1 : end]
        digits = text[1:] if text.startswith(b"-") else text
        if (
            not digits
            or not all(ch in _DIGITS for ch in digits)
            or (digits.startswith(b"0") and (len(digits) > 1 or text.startswith(b"-")))
        ):
            raise BencodeError(f"malformed integer {text[:20]!r} at byte {pos}")
        return int(text), end + 1

    def string(self, pos: int) -> tuple[bytes, int]:
        data = self.data
        colon = data.find(b":", pos, pos + 21)
        if colon < 0:
            if data.find(b":", pos) < 0 and len(data) - pos < 21:
                raise BencodeError(f"truncated: string length not closed at byte {pos}")
            raise BencodeError(f"malformed string length at byte {pos}")
        text = data[pos:colon]
        if not text or not all(ch in _DIGITS for ch in text) or (
            text.startswith(b"0") and len(text) > 1
        ):
            raise BencodeError(f"malformed string length {text[:20]!r} at byte {pos}")
        length = int(text)
        start = colon + 1
        end = start + length
        if end > len(data):
            raise BencodeError(
                f"truncated: string of {length} bytes at byte {pos} runs past the end"
            )
        return data[start:end], end
