"""Where each open file is being read, and what to fetch ahead of it. Pure.

A reader is one open file handle. While its reads stay sequential its read-ahead window
doubles, up to the mount's `--readahead`; a seek starts it again at `SEEK_WINDOW`, since a
player waits for a few seconds of media there and the pieces after the first should be
asked for at once, not one by one. Players read a media file's index before playing,
often at its end (an MP4's `moov`, Matroska's cues), so opening one asks for its head and
its last few MiB (no more than the read-ahead each) first. The windows are byte ranges
keyed for the picker: the reader itself, and `tail_key(reader)` for a media tail.
"""

from __future__ import annotations

from dataclasses import dataclass

SEEK_WINDOW = 4 << 20
MEDIA_TAIL = 4 << 20
MEDIA_SUFFIXES = (".mp4", ".m4v", ".m4a", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts",
                  ".mpg", ".mpeg", ".wmv", ".flv", ".ogv", ".ogg", ".mp3", ".flac", ".opus")
NEARBY = 128 << 10  # a read this far behind the last one still counts as sequential

# (picker key, start, length): a byte range of the torrent to fetch ahead.
Window = tuple[int, int, int]


@dataclass
class ReaderState:
    """Where one reader is reading, to size its read-ahead window."""

    next_offset: int = -1
    window: int = 0
    sequential_reads: int = 0
    file_index: int | None = None
    last_seek_wait: float | None = None  # seconds the last read after a seek waited


def tail_key(reader: int) -> int:
    """The picker key of a reader's media tail (file handles are positive)."""
    return -1 - reader


class Readers:
    """The open readers of one torrent and their read-ahead windows."""

    def __init__(self, readahead: int, total_length: int) -> None:
        self.readahead = readahead
        self.total_length = total_length
        self.states: dict[int, ReaderState] = {}

    def open(self, reader: int, file_index: int, name: str, offset: int,
             length: int) -> list[Window]:
        """File `file_index` (`name`, at `offset` in the torrent) was opened: for a media
        file, its head and tail to fetch first."""
        state = self.states.setdefault(reader, ReaderState())
        state.file_index = file_index
        if self.readahead <= 0 or not name.lower().endswith(MEDIA_SUFFIXES):
            return []
        head = min(length, SEEK_WINDOW, self.readahead)
        tail = min(length, MEDIA_TAIL, self.readahead)
        return [(reader, offset, head), (tail_key(reader), offset + length - tail, tail)]

    def advance(self, reader: int, offset: int, size: int) -> tuple[ReaderState, Window | None]:
        """A read of `size` bytes at `offset`: the reader's state and its new window."""
        state = self.states.setdefault(reader, ReaderState())
        if offset == state.next_offset or (
            state.next_offset >= 0 and 0 <= state.next_offset - offset <= NEARBY
        ):
            state.sequential_reads += 1
            state.window = min(max(state.window * 2, SEEK_WINDOW), self.readahead)
        else:
            state.sequential_reads = 0
            state.window = min(SEEK_WINDOW, self.readahead)
        state.next_offset = offset + size
        if self.readahead <= 0 or state.window <= 0:
            return state, None
        end = min(self.total_length, state.next_offset + state.window)
        return state, (reader, state.next_offset, end - state.next_offset)

    def close(self, reader: int) -> list[int]:
        """The reader was closed: the picker keys whose windows end."""
        if self.states.pop(reader, None) is None:
            return []
        return [reader, tail_key(reader)]
