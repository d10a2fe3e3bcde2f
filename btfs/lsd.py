"""Local service discovery (BEP 14): the BT-SEARCH message and when to send it. Pure.

Peers on one network announce the torrents they have to a multicast group:

    BT-SEARCH * HTTP/1.1\\r\\n
    Host: 239.192.152.143:6771\\r\\n
    Port: 51413\\r\\n
    Infohash: 0123456789abcdef0123456789abcdef01234567\\r\\n
    cookie: 5f3a...\\r\\n
    \\r\\n

Whoever hears an announce for a torrent it has dials the sender's address at `Port`.
`LsdCore` decides when to announce (at start, every 5 minutes, and soon after a new peer
is heard, at most once a minute) and which datagrams it hears name a peer to dial: its
own (by its cookie), malformed ones, other torrents and floods are dropped. The trio
shell (`btfs.lsdservice`) moves the datagrams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Address = tuple[str, int]

GROUP_V4 = "239.192.152.143"
GROUP_V6 = "ff15::efc0:988f"
PORT = 6771

ANNOUNCE_INTERVAL = 300.0  # announce every 5 minutes ...
MIN_ANNOUNCE_GAP = 60.0  # ... and never twice within a minute
MAX_DATAGRAM = 1400  # one Ethernet frame: real announces are ~150 bytes
MAX_INFOHASHES = 32
RECEIVE_BURST = 50.0  # datagrams taken at once, then RECEIVE_RATE a second
RECEIVE_RATE = 10.0
PEER_REPEAT = 60.0  # a peer heard again within this is not passed on again
MAX_PEERS_HEARD = 1000

_REQUEST_LINE = b"BT-SEARCH * HTTP/1.1"
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_COOKIE = re.compile(r"[\x21-\x7e]{1,64}")


class LsdError(ValueError):
    """A datagram that is not a BEP 14 announce."""


@dataclass(frozen=True)
class Announce:
    port: int
    info_hashes: tuple[bytes, ...]
    cookie: str | None = None


def encode(host: str, port: int, info_hashes: list[bytes], cookie: str | None) -> bytes:
    """The announce of `info_hashes` for a peer listening on `port`; `host` is the group
    as `Host:` names it (`239.192.152.143:6771` or `[ff15::efc0:988f]:6771`)."""
    lines = [_REQUEST_LINE.decode(), f"Host: {host}", f"Port: {port}"]
    lines += [f"Infohash: {h.hex()}" for h in info_hashes]
    if cookie is not None:
        lines.append(f"cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n\r\n").encode("ascii")


def decode(datagram: bytes) -> Announce:
    """The port, info-hashes and cookie of an announce; `LsdError` if it is not one."""
    if len(datagram) > MAX_DATAGRAM:
        raise LsdError(f"datagram of {len(datagram)} bytes")
    lines = datagram.replace(b"\r\n", b"\n").split(b"\n")
    if lines[0].strip() != _REQUEST_LINE:
        raise LsdError("not a BT-SEARCH request")
    port: int | None = None
    hashes: list[bytes] = []
    cookie: str | None = None
    for raw in lines[1:]:
        if not raw.strip():
            continue
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise LsdError("a header that is not ASCII") from None
        name, colon, value = line.partition(":")
        if not colon:
            raise LsdError(f"not a header: {line[:40]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "port":
            if not (value.isdigit() and 0 < int(value) < 65536) or port is not None:
                raise LsdError(f"bad Port: {value[:20]!r}")
            port = int(value)
        elif name == "infohash":
            if not _HEX40.fullmatch(value):
                raise LsdError(f"bad Infohash: {value[:50]!r}")
            if len(hashes) >= MAX_INFOHASHES:
                raise LsdError(f"more than {MAX_INFOHASHES} Infohash headers")
            hashes.append(bytes.fromhex(value))
        elif name == "cookie" and _COOKIE.fullmatch(value):
            cookie = value
    if port is None or not hashes:
        raise LsdError("an announce without Port or Infohash")
    return Announce(port, tuple(hashes), cookie)


class LsdCore:
    """When to announce our torrents, and which peers the announces we hear name."""

    def __init__(self, info_hashes: list[bytes], cookie: str, now: float) -> None:
        self.info_hashes = list(info_hashes)
        self.cookie = cookie
        self.last_announce: float | None = None
        self.next_announce = now
        self.tokens = RECEIVE_BURST
        self.tokens_at = now
        self.heard: dict[tuple[Address, bytes], float] = {}  # (peer, torrent)
        self.dropped = 0  # datagrams dropped: malformed or over the rate

    def announce_due(self, now: float) -> bool:
        return now >= self.next_announce

    def announced(self, now: float) -> None:
        """An announce went out (on every family the shell runs)."""
        self.last_announce = now
        self.next_announce = now + ANNOUNCE_INTERVAL

    def message(self, host: str, port: int) -> bytes:
        return encode(host, port, self.info_hashes[:MAX_INFOHASHES], self.cookie)

    def messages(self, host: str, port: int) -> list[bytes]:
        """Our announce, in as many datagrams as the torrents need (32 hashes each)."""
        return [encode(host, port, self.info_hashes[i : i + MAX_INFOHASHES], self.cookie)
                for i in range(0, len(self.info_hashes), MAX_INFOHASHES)]

    def add(self, info_hash: bytes, now: float) -> None:
        """One more torrent to announce (soon) and to hear of."""
        if info_hash not in self.info_hashes:
            self.info_hashes.append(info_hash)
            self._announce_soon(now)

    def remove(self, info_hash: bytes) -> None:
        if info_hash in self.info_hashes:
            self.info_hashes.remove(info_hash)

    def receive(self, datagram: bytes, source: str, now: float) -> list[Address]:
        """The peers (one, or none) a datagram from `source` gives us to dial."""
        heard = self.receive_for(datagram, source, now)
        return [heard[0]] if heard is not None else []

    def receive_for(self, datagram: bytes, source: str,
                    now: float) -> tuple[Address, list[bytes]] | None:
        """The peer a datagram from `source` names and which of our torrents it has
        (those not heard from it within `PEER_REPEAT`), or None."""
        self.tokens = min(RECEIVE_BURST, self.tokens + (now - self.tokens_at) * RECEIVE_RATE)
        self.tokens_at = now
        if self.tokens < 1:
            self.dropped += 1
            return None
        self.tokens -= 1
        try:
            announce = decode(datagram)
        except LsdError:
            self.dropped += 1
            return None
        if announce.cookie == self.cookie:
            return None  # our own, looped back
        peer = (source, announce.port)
        fresh = []
        newcomer = False
        for info_hash in announce.info_hashes:
            if info_hash not in self.info_hashes:
                continue
            last = self.heard.get((peer, info_hash))
            if last is not None and now - last < PEER_REPEAT:
                continue
            newcomer = newcomer or last is None
            self.heard[(peer, info_hash)] = now
            fresh.append(info_hash)
        if not fresh:
            return None
        if newcomer:
            self._announce_soon(now)  # a newcomer: let it hear of us too, not in 5 minutes
        if len(self.heard) > MAX_PEERS_HEARD:
            for old in sorted(self.heard, key=self.heard.__getitem__)[:MAX_PEERS_HEARD // 2]:
                del self.heard[old]
        return peer, fresh

    def _announce_soon(self, now: float) -> None:
        earliest = now if self.last_announce is None else self.last_announce + MIN_ANNOUNCE_GAP
        self.next_announce = min(self.next_announce, max(now, earliest))

    def wait(self, now: float) -> float:
        """Seconds until the next announce is due."""
        return max(0.0, self.next_announce - now)
