"""Blocks into pieces, and who to blame when a piece fails its hash. Pure.

Blocks of a piece are kept as they arrive with who sent each. A piece that fails its
SHA-1: if one source sent all of it, that source is to blame at once. If several did, a
digest of each block and its sender is kept; when the piece later passes, the senders
whose blocks differ from the good data are to blame (a "smart ban"), so an honest peer
is never punished for sharing a piece with a liar. A source is a peer id, or a web
seed's id; `host` is what a ban applies to (None: nothing to ban, e.g. a web seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from btfs.picker import Block


@dataclass
class PartialPiece:
    """Blocks of one piece as they arrive, and who sent each."""

    data: bytearray
    senders: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Suspect:
    """A block of a piece that failed its hash: who sent it, from where, and its digest."""

    source: bytes
    host: str | None
    digest: bytes


@dataclass(frozen=True)
class Culprit:
    source: bytes
    host: str | None
    reason: str


class Assembly:
    """The pieces being assembled, and the suspects of pieces that failed."""

    def __init__(self, piece_size: Callable[[int], int], block_size: int) -> None:
        self.piece_size = piece_size
        self.block_size = block_size
        self.partial: dict[int, PartialPiece] = {}
        self.suspects: dict[int, dict[int, list[Suspect]]] = {}

    def add(self, source: bytes, block: Block, data: bytes) -> None:
        partial = self.partial.get(block.piece)
        if partial is None:
            partial = self.partial[block.piece] = PartialPiece(
                bytearray(self.piece_size(block.piece)))
        partial.data[block.begin : block.begin + len(data)] = data
        partial.senders[block.begin] = source

    def take(self, piece: int) -> PartialPiece:
        """The whole piece (the picker says every block is in); no longer kept here."""
        return self.partial.pop(piece)

    def failed(self, piece: int, partial: PartialPiece,
               host_of: Callable[[bytes], str | None],
               present: Callable[[bytes], bool]) -> list[Culprit]:
        """The piece failed its hash: who to blame now (a single sender), if anyone.

        With several senders, each block's digest is kept for `passed`; a sender no longer
        `present` (a peer gone) cannot be judged later and is left out.
        """
        senders = set(partial.senders.values())
        if len(senders) == 1:
            source = next(iter(senders))
            return [Culprit(source, host_of(source), f"piece {piece} failed its hash check")]
        blocks = self.suspects.setdefault(piece, {})
        for begin, source in partial.senders.items():
            if not present(source):
                continue
            end = min(begin + self.block_size, len(partial.data))
            digest = hashlib.sha1(partial.data[begin:end]).digest()
            blocks.setdefault(begin, []).append(Suspect(source, host_of(source), digest))
        return []

    def passed(self, piece: int, read: Callable[[int, int], bytes]) -> list[Culprit]:
        """The piece passed: the senders of earlier blocks that differ from its good data.

        `read(begin, length)`: the verified piece's bytes.
        """
        blocks = self.suspects.pop(piece, None)
        if not blocks:
            return []
        culprits: list[Culprit] = []
        for begin, suspects in blocks.items():
            length = min(self.block_size, self.piece_size(piece) - begin)
            good = hashlib.sha1(read(begin, length)).digest()
            culprits.extend(Culprit(s.source, s.host, f"sent a bad block of piece {piece}")
                            for s in suspects if s.digest != good)
        return culprits
