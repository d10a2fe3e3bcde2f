"""A fixed-size set of piece indices with the BEP 3 wire form (high bit first)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class BitfieldError(ValueError):
    """Wire bytes that cannot be a bitfield for this torrent."""


class Bitfield:
    """Which of `size` pieces are present; counts kept so `all()` is O(1)."""

    __slots__ = ("_bits", "count", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._bits = bytearray((size + 7) // 8)
        self.count = 0

    @classmethod
    def full(cls, size: int) -> Bitfield:
        bf = cls(size)
        for i in range(size):
            bf.set(i)
        return bf

    @classmethod
    def from_indices(cls, size: int, indices: Iterable[int]) -> Bitfield:
        bf = cls(size)
        for i in indices:
            bf.set(i)
        return bf

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Bitfield:
        """Parse a peer's bitfield; wrong length or spare bits set are protocol errors."""
        if len(data) != (size + 7) // 8:
            raise BitfieldError(f"bitfield of {len(data)} bytes for {size} pieces")
        spare = len(data) * 8 - size
        if spare and data[-1] & ((1 << spare) - 1):
            raise BitfieldError("bitfield has spare bits set")
        bf = cls(size)
        bf._bits[:] = data
        bf.count = sum(bin(b).count("1") for b in data)
        return bf

    def has(self, i: int) -> bool:
        return 0 <= i < self.size and bool(self._bits[i >> 3] & (0x80 >> (i & 7)))

    def __contains__(self, i: object) -> bool:
        return isinstance(i, int) and self.has(i)

    def set(self, i: int) -> None:
        if not 0 <= i < self.size:
            raise IndexError(i)
        mask = 0x80 >> (i & 7)
        if not self._bits[i >> 3] & mask:
            self._bits[i >> 3] |= mask
            self.count += 1

    def clear(self, i: int) -> None:
        if not 0 <= i < self.size:
            raise IndexError(i)
        mask = 0x80 >> (i & 7)
        if self._bits[i >> 3] & mask:
            self._bits[i >> 3] &= ~mask & 0xFF
            self.count -= 1

    def all(self) -> bool:
        return self.count == self.size

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        bits = self._bits
        for byte_index, byte in enumerate(bits):
            if not byte:
                continue
            base = byte_index * 8
            for bit in range(8):
                if byte & (0x80 >> bit):
                    yield base + bit

    def to_bytes(self) -> bytes:
        return bytes(self._bits)
