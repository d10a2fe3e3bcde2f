"""Peer exchange (BEP 11, `ut_pex`): the message codec and what to tell each peer. Pure.

A `ut_pex` message is a bencoded dictionary of compact peer lists: `added` (with one
flag byte per peer in `added.f`) and `dropped`, and `added6`/`added6.f`/`dropped6` for
IPv6. Each connection has a `PexSender` (which of our connected peers to tell this peer
about, at most once a minute, as the difference since the last message) and a
`PexReceiver` (which of the peers it names to pass on to the swarm, within bounds, so a
peer cannot make us store or dial an unbounded number of addresses).

A message that is not a bencoded dictionary, or is larger than any real client's, is a
`PexError` (the connection is dropped); a field of the wrong type or length is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from btfs import bencode
from btfs.errors import BencodeError, BtfsError
from btfs.trackerwire import compact

Address = tuple[str, int]

UT_PEX_ID = 1  # the id peers use for ut_pex messages to us (our extension handshake's `m`)

# Flags of `added.f` (BEP 11)
PREFERS_ENCRYPTION = 0x01
SEED = 0x02  # a seed, or upload only
SUPPORTS_UTP = 0x04
SUPPORTS_HOLEPUNCH = 0x08
REACHABLE = 0x10  # the sender connected out to this peer: it accepts connections

SEND_INTERVAL = 60.0  # no more than one message a minute to a peer
MAX_SENT = 50  # added (and dropped) entries per message we send
MAX_PAYLOAD = 64 * 1024  # libtorrent sends at most 100 + 100 entries, a few KiB
MAX_TAKEN = 100  # added entries taken from one message (the rest are ignored)
MAX_LEARNED = 500  # distinct addresses one connection may make us dial over its life
MIN_RECEIVE_INTERVAL = 30.0  # messages sooner after the last one taken are ignored
FLOOD_WINDOW = 60.0
FLOOD_LIMIT = 6  # more messages than this within FLOOD_WINDOW: the peer is dropped


class PexError(BtfsError):
    """A peer's ut_pex message is malformed beyond repair, or the peer floods us with them."""


@dataclass(frozen=True)
class PexMessage:
    """The peers a message names: added ones with their flags, dropped ones."""

    added: dict[Address, int] = field(default_factory=dict)
    dropped: list[Address] = field(default_factory=list)


def encode(message: PexMessage) -> bytes:
    """The bencoded message; every key present (libtorrent drops `added` without `added.f`)."""
    lists: dict[bytes, list[bytes]] = {
        k: [] for k in (b"added", b"added.f", b"dropped", b"added6", b"added6.f", b"dropped6")}
    for (ip, port), flags in message.added.items():
        try:
            entry = compact.pack(ip, port)
        except ValueError:  # not an IP address: nothing a peer could dial
            continue
        six = len(entry) == compact.V6_SIZE
        lists[b"added6" if six else b"added"].append(entry)
        lists[b"added6.f" if six else b"added.f"].append(bytes([flags & 0xFF]))
    for ip, port in message.dropped:
        try:
            entry = compact.pack(ip, port)
        except ValueError:
            continue
        lists[b"dropped6" if len(entry) == compact.V6_SIZE else b"dropped"].append(entry)
    return bencode.encode({k: b"".join(v) for k, v in lists.items()})


def decode(payload: bytes) -> PexMessage:
    """The peers a message names (entries with port 0 left out); `PexError` if it is not a
    bencoded dictionary or is too large. A field of the wrong type or a length that is not
    whole entries is ignored; flags that do not match their list count as 0."""
    if len(payload) > MAX_PAYLOAD:
        raise PexError(f"ut_pex message of {len(payload)} bytes")
    try:
        d = bencode.decode(payload)
    except BencodeError as exc:
        raise PexError(f"bad ut_pex message: {exc}") from exc
    if not isinstance(d, dict):
        raise PexError("ut_pex message is not a dictionary")
    message = PexMessage()
    for key, size in ((b"added", compact.V4_SIZE), (b"added6", compact.V6_SIZE)):
        entries = _entries(d.get(key), size)
        flags = d.get(key + b".f")
        if not isinstance(flags, bytes) or len(flags) != len(entries):
            flags = bytes(len(entries))
        for entry, flag in zip(entries, flags, strict=True):
            if entry[-2:] != b"\0\0":
                message.added.setdefault(compact.unpack(entry), flag)
    for key, size in ((b"dropped", compact.V4_SIZE), (b"dropped6", compact.V6_SIZE)):
        message.dropped.extend(compact.unpack(e) for e in _entries(d.get(key), size)
                               if e[-2:] != b"\0\0")
    return message


def _entries(value: object, size: int) -> list[bytes]:
    if not isinstance(value, bytes) or len(value) % size:
        return []
    return [value[i : i + size] for i in range(0, len(value), size)]


class PexSender:
    """What one peer has been told: the next message is the difference from that.

    The first message lists up to `MAX_SENT` of our connected peers; each later one, no
    sooner than `SEND_INTERVAL` after the last, those connected since (added) and those
    gone (dropped), at most `MAX_SENT` each. Nothing is sent while nothing changed.
    """

    def __init__(self) -> None:
        self.told: dict[Address, int] = {}  # what the peer believes we are connected to
        self.last_sent: float | None = None

    def due(self, now: float) -> bool:
        return self.last_sent is None or now - self.last_sent >= SEND_INTERVAL

    def message(self, now: float, connected: Mapping[Address, int],
                exclude: Iterable[Address] = ()) -> bytes | None:
        """The message to send now, or None (not due, or nothing new).

        `connected`: our connected peers by listening address, with their flags;
        `exclude`: the recipient's own addresses (it is not told about itself).
        """
        if not self.due(now):
            return None
        skip = set(exclude)
        current = {a: f for a, f in connected.items() if a not in skip}
        added = {a: f for a, f in current.items() if self.told.get(a) != f}
        added = dict(list(added.items())[:MAX_SENT])
        dropped = [a for a in self.told if a not in current][:MAX_SENT]
        if not added and not dropped:
            return None
        for address in dropped:
            del self.told[address]
        self.told.update(added)
        self.last_sent = now
        return encode(PexMessage(added, dropped))


class PexReceiver:
    """Which peers of a connection's messages reach the swarm, within bounds.

    At most `MAX_TAKEN` new addresses from one message and `MAX_LEARNED` over the
    connection's life; a message sooner than `MIN_RECEIVE_INTERVAL` after the last one
    taken is ignored, and more than `FLOOD_LIMIT` in `FLOOD_WINDOW` is a `PexError`.
    """

    def __init__(self) -> None:
        self.learned: set[Address] = set()
        self.last_taken: float | None = None
        self.arrivals: list[float] = []
        self.ignored = 0

    def receive(self, payload: bytes, now: float) -> dict[Address, int]:
        """The new peers (address -> flags) a message names that the swarm may dial."""
        self.arrivals = [t for t in self.arrivals if now - t < FLOOD_WINDOW] + [now]
        if len(self.arrivals) > FLOOD_LIMIT:
            raise PexError(f"{len(self.arrivals)} ut_pex messages within "
                           f"{FLOOD_WINDOW:.0f} s")
        message = decode(payload)
        if self.last_taken is not None and now - self.last_taken < MIN_RECEIVE_INTERVAL:
            self.ignored += 1
            return {}
        self.last_taken = now
        room = min(MAX_TAKEN, MAX_LEARNED - len(self.learned))
        fresh: dict[Address, int] = {}
        for address, flags in message.added.items():
            if len(fresh) >= room:
                break
            address = (compact.normalize_ip(address[0]), address[1])
            if address not in self.learned:
                fresh[address] = flags
        self.learned.update(fresh)
        return fresh
