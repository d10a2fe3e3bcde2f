"""Web seeds (BEP 19): pieces fetched over HTTP Range requests.

`ranges` is the pure part (file URLs, torrent ranges as HTTP ranges, answer checks);
`seed.WebSeed` is the trio shell the swarm drives.
"""

from btfs.webseed.ranges import (
    FileRange,
    RangeMap,
    Segment,
    WebSeedError,
    Zeros,
    check_body,
    check_head,
    file_url,
)
from btfs.webseed.seed import WebSeed

__all__ = [
    "FileRange",
    "RangeMap",
    "Segment",
    "WebSeed",
    "WebSeedError",
    "Zeros",
    "check_body",
    "check_head",
    "file_url",
]
