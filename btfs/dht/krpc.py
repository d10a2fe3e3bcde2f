"""KRPC (BEP 5) messages over bencode, and the compact forms of nodes and peers. Pure.

`decode` turns one datagram into a `Query`, `Response` or `Error`, checking every field
the DHT reads (types, lengths, bounds): anything else raises `KrpcError`, which says
whether the datagram was a query with a readable transaction id (those are answered
with a KRPC error; the rest are dropped). Node ids are 160-bit ints inside the DHT and
20 bytes on the wire. Compact node info is 26 bytes (IPv4) or 38 (IPv6, BEP 32);
compact peers 6 or 18, packed by `btfs.trackerwire.compact` as tracker answers are.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from btfs import bencode
from btfs.errors import BtfsError
from btfs.trackerwire import compact

Address = tuple[str, int]
NodeId = int

ID_BYTES = 20
MAX_DATAGRAM = 4096          # larger datagrams are dropped unread
MAX_TID = 16                 # transaction ids are 2 bytes from us; others use up to ~8
MAX_TOKEN = 64
MAX_VALUES = 256             # peers kept from one get_peers answer
MAX_NODES = 64               # nodes kept from one answer (a find_node answer holds 8)
MAX_ERROR_TEXT = 256

PING = b"ping"
FIND_NODE = b"find_node"
GET_PEERS = b"get_peers"
ANNOUNCE_PEER = b"announce_peer"
METHODS = frozenset({PING, FIND_NODE, GET_PEERS, ANNOUNCE_PEER})

ERROR_GENERIC = 201
ERROR_SERVER = 202
ERROR_PROTOCOL = 203
ERROR_METHOD = 204


class KrpcError(BtfsError):
    """A datagram that is not a well-formed KRPC message.

    `tid` is set when the datagram was a query whose transaction id could be read, so
    the sender can be answered with a KRPC error `code`.
    """

    def __init__(self, reason: str, tid: bytes | None = None,
                 code: int = ERROR_PROTOCOL) -> None:
        super().__init__(reason)
        self.tid = tid
        self.code = code


@dataclass(frozen=True, slots=True)
class Contact:
    """A node as the DHT passes it around: its id and its UDP address."""

    id: NodeId
    address: Address


@dataclass(frozen=True, slots=True)
class Query:
    """A query; the fields its method does not use are left empty."""

    tid: bytes
    method: bytes
    sender: NodeId
    target: NodeId = 0                 # find_node
    info_hash: bytes = b""             # get_peers, announce_peer
    token: bytes = b""                 # announce_peer
    port: int = 0                      # announce_peer
    implied_port: bool = False         # announce_peer: use the datagram's source port
    want: frozenset[bytes] = frozenset()  # BEP 32: b"n4", b"n6"


@dataclass(frozen=True, slots=True)
class Response:
    tid: bytes
    sender: NodeId
    nodes: tuple[Contact, ...] = ()
    nodes6: tuple[Contact, ...] = ()
    values: tuple[Address, ...] = ()
    token: bytes | None = None


@dataclass(frozen=True, slots=True)
class Error:
    tid: bytes
    code: int
    message: str


Message = Query | Response | Error


# Compact forms ---------------------------------------------------------------------------


def pack_address(address: Address) -> bytes:
    """4+2 bytes for IPv4, 16+2 for IPv6; `KrpcError` for anything else."""
    try:
        return compact.pack(*address)
    except ValueError as exc:
        raise KrpcError(f"cannot pack {address!r}: {exc}") from None


def unpack_address(data: bytes) -> Address:
    """The inverse of `pack_address` (6 or 18 bytes)."""
    if len(data) not in (compact.V4_SIZE, compact.V6_SIZE):
        raise KrpcError(f"compact address of {len(data)} bytes")
    return compact.unpack(data)


def pack_nodes(contacts: list[Contact]) -> bytes:
    return b"".join(c.id.to_bytes(ID_BYTES, "big") + pack_address(c.address)
                    for c in contacts)


def _routable(host: str) -> bool:
    """Not an address no node can have (unspecified, multicast, broadcast)."""
    ip = ipaddress.ip_address(host)
    return not (ip.is_unspecified or ip.is_multicast or host == "255.255.255.255")


def unpack_nodes(data: bytes, size: int) -> tuple[Contact, ...]:
    """Compact node info of `size` (26 or 38) bytes each; ports of 0 and addresses no node
    can have (0.0.0.0, ::, multicast, broadcast) are skipped."""
    if len(data) % size:
        raise KrpcError(f"compact nodes of {len(data)} bytes, not a multiple of {size}")
    out = []
    for pos in range(0, min(len(data), MAX_NODES * size), size):
        address = unpack_address(data[pos + ID_BYTES : pos + size])
        if address[1] and _routable(address[0]):
            out.append(Contact(int.from_bytes(data[pos : pos + ID_BYTES], "big"), address))
    return tuple(out)


# Decoding --------------------------------------------------------------------------------


def _bytes(d: dict[bytes, Any], key: bytes, tid: bytes | None, size: int | None = None,
           most: int | None = None) -> bytes:
    value = d.get(key)
    if not isinstance(value, bytes):
        raise KrpcError(f"{key.decode()} missing or not a string", tid)
    if size is not None and len(value) != size:
        raise KrpcError(f"{key.decode()} of {len(value)} bytes, not {size}", tid)
    if most is not None and len(value) > most:
        raise KrpcError(f"{key.decode()} longer than {most} bytes", tid)
    return value


def _node_id(d: dict[bytes, Any], key: bytes, tid: bytes | None) -> NodeId:
    return int.from_bytes(_bytes(d, key, tid, ID_BYTES), "big")


def decode(datagram: bytes) -> Message:
    """One datagram as a KRPC message; `KrpcError` if it is not one we can use."""
    if len(datagram) > MAX_DATAGRAM:
        raise KrpcError(f"datagram of {len(datagram)} bytes")
    try:
        msg = bencode.decode(datagram)
    except BtfsError as exc:
        raise KrpcError(f"not bencode: {exc}") from exc
    if not isinstance(msg, dict):
        raise KrpcError("not a dictionary")
    tid = msg.get(b"t")
    if not isinstance(tid, bytes) or not 0 < len(tid) <= MAX_TID:
        raise KrpcError("transaction id missing or malformed")
    kind = msg.get(b"y")
    if kind == b"q":
        return _query(msg, tid)
    if kind == b"r":
        return _response(msg, tid)
    if kind == b"e":
        return _error(msg, tid)
    raise KrpcError("message type missing or unknown")


def _query(msg: dict[bytes, Any], tid: bytes) -> Query:
    method = msg.get(b"q")
    args = msg.get(b"a")
    if not isinstance(method, bytes) or not isinstance(args, dict):
        raise KrpcError("query without method or arguments", tid)
    sender = _node_id(args, b"id", tid)
    if method == PING:
        return Query(tid, method, sender)
    if method == FIND_NODE:
        return Query(tid, method, sender, target=_node_id(args, b"target", tid),
                     want=_want(args, tid))
    if method == GET_PEERS:
        return Query(tid, method, sender, info_hash=_bytes(args, b"info_hash", tid, ID_BYTES),
                     want=_want(args, tid))
    if method == ANNOUNCE_PEER:
        info_hash = _bytes(args, b"info_hash", tid, ID_BYTES)
        token = _bytes(args, b"token", tid, most=MAX_TOKEN)
        implied = args.get(b"implied_port", 0)
        port = args.get(b"port", 0)
        if not isinstance(implied, int) or not isinstance(port, int):
            raise KrpcError("port or implied_port not an integer", tid)
        if not implied and not 0 < port < 65536:
            raise KrpcError(f"port {port} out of range", tid)
        return Query(tid, method, sender, info_hash=info_hash, token=token,
                     port=port if 0 < port < 65536 else 0, implied_port=bool(implied))
    raise KrpcError(f"unknown method {method[:32]!r}", tid, ERROR_METHOD)


def _want(args: dict[bytes, Any], tid: bytes) -> frozenset[bytes]:
    want = args.get(b"want", [])
    if not isinstance(want, list) or len(want) > 8:
        raise KrpcError("want is not a short list", tid)
    return frozenset(w for w in want if w in (b"n4", b"n6"))


def _response(msg: dict[bytes, Any], tid: bytes) -> Response:
    r = msg.get(b"r")
    if not isinstance(r, dict):
        raise KrpcError("response without r")
    sender = _node_id(r, b"id", None)
    nodes = unpack_nodes(_bytes(r, b"nodes", None), 26) if b"nodes" in r else ()
    nodes6 = unpack_nodes(_bytes(r, b"nodes6", None), 38) if b"nodes6" in r else ()
    token = _bytes(r, b"token", None, most=MAX_TOKEN) if b"token" in r else None
    values: list[Address] = []
    raw_values = r.get(b"values", [])
    if not isinstance(raw_values, list):
        raise KrpcError("values is not a list")
    for value in raw_values[:MAX_VALUES]:
        if isinstance(value, bytes) and len(value) in (6, 18):
            address = unpack_address(value)
            if address[1]:
                values.append(address)
    return Response(tid, sender, nodes, nodes6, tuple(values), token)


def _error(msg: dict[bytes, Any], tid: bytes) -> Error:
    e = msg.get(b"e")
    if (not isinstance(e, list) or len(e) < 2 or not isinstance(e[0], int)
            or not isinstance(e[1], bytes)):
        raise KrpcError("error without [code, message]")
    return Error(tid, e[0], e[1][:MAX_ERROR_TEXT].decode("utf-8", "replace"))


# Encoding --------------------------------------------------------------------------------


def _id(node_id: NodeId) -> bytes:
    return node_id.to_bytes(ID_BYTES, "big")


def encode_query(tid: bytes, method: bytes, sender: NodeId, **args: Any) -> bytes:
    """A query; `args` are its arguments besides `id` (ids and hashes already as bytes)."""
    a: dict[bytes, Any] = {k.encode(): v for k, v in args.items()}
    a[b"id"] = _id(sender)
    return bencode.encode({b"t": tid, b"y": b"q", b"q": method, b"a": a})


def ping(tid: bytes, sender: NodeId) -> bytes:
    return encode_query(tid, PING, sender)


def find_node(tid: bytes, sender: NodeId, target: NodeId,
              want: tuple[bytes, ...] = ()) -> bytes:
    if want:
        return encode_query(tid, FIND_NODE, sender, target=_id(target), want=list(want))
    return encode_query(tid, FIND_NODE, sender, target=_id(target))


def get_peers(tid: bytes, sender: NodeId, info_hash: bytes) -> bytes:
    return encode_query(tid, GET_PEERS, sender, info_hash=info_hash)


def announce_peer(tid: bytes, sender: NodeId, info_hash: bytes, port: int, token: bytes,
                  implied_port: bool) -> bytes:
    return encode_query(tid, ANNOUNCE_PEER, sender, info_hash=info_hash, port=port,
                        token=token, implied_port=int(implied_port))


def response(tid: bytes, sender: NodeId, *, nodes: list[Contact] | None = None,
             nodes6: list[Contact] | None = None, values: list[bytes] | None = None,
             token: bytes | None = None) -> bytes:
    """A response; `values` are compact peers, already packed."""
    r: dict[bytes, Any] = {b"id": _id(sender)}
    if nodes is not None:
        r[b"nodes"] = pack_nodes(nodes)
    if nodes6 is not None:
        r[b"nodes6"] = pack_nodes(nodes6)
    if values:
        r[b"values"] = values
    if token is not None:
        r[b"token"] = token
    return bencode.encode({b"t": tid, b"y": b"r", b"r": r})


def error(tid: bytes, code: int, message: str) -> bytes:
    return bencode.encode({b"t": tid, b"y": b"e", b"e": [code, message.encode()]})
