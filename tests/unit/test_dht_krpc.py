"""The KRPC codec (pure): messages, compact forms, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btfs import bencode
from btfs.dht import krpc
from btfs.dht.krpc import Contact, KrpcError

ID_A = int.from_bytes(b"A" * 20, "big")
ID_B = int.from_bytes(b"B" * 20, "big")
HASH = b"h" * 20


def test_queries_round_trip_with_their_arguments() -> None:
    assert krpc.decode(krpc.ping(b"aa", ID_A)) == krpc.Query(b"aa", krpc.PING, ID_A)
    q = krpc.decode(krpc.find_node(b"ab", ID_A, ID_B, want=(b"n4", b"n6")))
    assert q == krpc.Query(b"ab", krpc.FIND_NODE, ID_A, target=ID_B,
                           want=frozenset({b"n4", b"n6"}))
    q = krpc.decode(krpc.get_peers(b"ac", ID_A, HASH))
    assert isinstance(q, krpc.Query) and q.method == krpc.GET_PEERS and q.info_hash == HASH
    q = krpc.decode(krpc.announce_peer(b"ad", ID_A, HASH, 6881, b"tok", implied_port=True))
    assert isinstance(q, krpc.Query)
    assert (q.info_hash, q.port, q.token, q.implied_port) == (HASH, 6881, b"tok", True)


def test_the_bep5_example_datagrams_decode() -> None:
    ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    assert krpc.decode(ping) == krpc.Query(b"aa", krpc.PING,
                                           int.from_bytes(b"abcdefghij0123456789", "big"))
    announce = (b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:"
                b"mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer"
                b"1:t2:aa1:y1:qe")
    q = krpc.decode(announce)
    assert isinstance(q, krpc.Query) and q.implied_port and q.token == b"aoeusnth"
    error = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"
    assert krpc.decode(error) == krpc.Error(b"aa", 201, "A Generic Error Ocurred")


def test_responses_carry_compact_nodes_of_26_and_38_bytes_and_peers() -> None:
    v4 = [Contact(ID_A, ("10.0.0.1", 6881)), Contact(ID_B, ("192.168.1.2", 1))]
    v6 = [Contact(ID_B, ("2001:db8::1", 51413))]
    peers = [krpc.pack_address(("1.2.3.4", 80)), krpc.pack_address(("::1", 443))]
    data = krpc.response(b"zz", ID_A, nodes=v4, nodes6=v6, values=peers, token=b"t")
    assert len(krpc.pack_nodes(v4)) == 52 and len(krpc.pack_nodes(v6)) == 38
    r = krpc.decode(data)
    assert r == krpc.Response(b"zz", ID_A, tuple(v4), tuple(v6),
                              (("1.2.3.4", 80), ("::1", 443)), b"t")


def test_compact_nodes_with_port_zero_are_skipped_and_ragged_lists_refused() -> None:
    no_port = ID_A.to_bytes(20, "big") + bytes([10, 0, 0, 1, 0, 0])
    good = no_port + krpc.pack_nodes([Contact(ID_B, ("10.0.0.2", 5))])
    assert krpc.unpack_nodes(good, 26) == (Contact(ID_B, ("10.0.0.2", 5)),)
    with pytest.raises(KrpcError):
        krpc.unpack_nodes(good + b"x", 26)


def test_a_malformed_query_names_its_transaction_and_the_error_code() -> None:
    no_target = bencode.encode({b"t": b"xy", b"y": b"q", b"q": b"find_node",
                                b"a": {b"id": b"A" * 20}})
    with pytest.raises(KrpcError) as info:
        krpc.decode(no_target)
    assert info.value.tid == b"xy" and info.value.code == krpc.ERROR_PROTOCOL
    unknown = bencode.encode({b"t": b"xy", b"y": b"q", b"q": b"vote",
                              b"a": {b"id": b"A" * 20}})
    with pytest.raises(KrpcError) as info:
        krpc.decode(unknown)
    assert info.value.code == krpc.ERROR_METHOD


def test_addresses_that_cannot_be_packed_raise_krpc_error() -> None:
    for address in (("example.org", 1), ("10.0.0.1", 0), ("10.0.0.1", 65536)):
        with pytest.raises(KrpcError):
            krpc.pack_address(address)


@pytest.mark.parametrize("value", [
    b"not bencode",
    b"li1ee",
    bencode.encode({b"y": b"q"}),                                         # no t
    bencode.encode({b"t": b"x" * 17, b"y": b"r", b"r": {}}),              # long t
    bencode.encode({b"t": b"x", b"y": b"r", b"r": {b"id": b"short"}}),
    bencode.encode({b"t": b"x", b"y": b"r", b"r": {b"id": b"A" * 20, b"nodes": 5}}),
    bencode.encode({b"t": b"x", b"y": b"r", b"r": {b"id": b"A" * 20, b"values": b"x"}}),
    bencode.encode({b"t": b"x", b"y": b"r", b"r": {b"id": b"A" * 20, b"token": b"x" * 65}}),
    bencode.encode({b"t": b"x", b"y": b"e", b"e": [b"201", b"x"]}),
    bencode.encode({b"t": b"x", b"y": b"q", b"q": b"announce_peer",
                    b"a": {b"id": b"A" * 20, b"info_hash": HASH, b"token": b"t",
                           b"port": 70000}}),
    bencode.encode({b"t": b"x", b"y": b"q", b"q": b"get_peers",
                    b"a": {b"id": b"A" * 20, b"info_hash": HASH, b"want": [b"n4"] * 9}}),
    b"d1:t1:x1:y1:r1:rd2:id20:" + b"A" * 20 + b"5:nodes" + b"9" * 30 + b":ee",  # huge length
    b"d1:t1:x" + b"l" * 100 + b"e" * 100 + b"e",                          # deep nesting
    b"x" * (krpc.MAX_DATAGRAM + 1),
])
def test_malformed_datagrams_raise_krpc_error_only(value: bytes) -> None:
    with pytest.raises(KrpcError):
        krpc.decode(value)


def test_values_of_other_lengths_are_skipped_and_long_lists_cut() -> None:
    values = [b"abc"] + [krpc.pack_address(("1.1.1.1", p)) for p in range(1, 400)]
    data = bencode.encode({b"t": b"x", b"y": b"r", b"r": {b"id": b"A" * 20,
                                                         b"values": values}})
    r = krpc.decode(data)
    assert isinstance(r, krpc.Response)
    assert len(r.values) == krpc.MAX_VALUES - 1 and r.values[0] == ("1.1.1.1", 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_krpc_error(data: bytes) -> None:
    try:
        krpc.decode(data)
    except KrpcError:
        pass


ids = st.integers(0, 2**160 - 1)
v4 = st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(0, 255),
               st.integers(0, 255)).map(lambda t: ".".join(map(str, t)))  # a node's, unicast


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=4), ids,
       st.lists(st.tuples(ids, v4, st.integers(1, 65535)), max_size=8),
       st.lists(st.tuples(v4, st.integers(1, 65535)), max_size=20),
       st.none() | st.binary(max_size=20))
def test_responses_round_trip(tid: bytes, sender: int, nodes: list[tuple[int, str, int]],
                              peers: list[tuple[str, int]], token: bytes | None) -> None:
    contacts = [Contact(i, (ip, port)) for i, ip, port in nodes]
    data = krpc.response(tid, sender, nodes=contacts,
                         values=[krpc.pack_address(p) for p in peers], token=token)
    assert krpc.decode(data) == krpc.Response(tid, sender, tuple(contacts), (),
                                              tuple(peers), token)


def test_nodes_at_addresses_no_node_can_have_are_skipped() -> None:
    good = krpc.Contact(7, ("10.1.2.3", 6881))
    packed = krpc.pack_nodes([krpc.Contact(1, ("0.0.0.0", 6881)), good,
                              krpc.Contact(2, ("239.1.1.1", 6881)),
                              krpc.Contact(3, ("255.255.255.255", 6881))])
    assert krpc.unpack_nodes(packed, 26) == (good,)
    six = krpc.pack_nodes([krpc.Contact(4, ("::", 1)), krpc.Contact(5, ("ff02::1", 1)),
                           krpc.Contact(6, ("2001:db8::1", 1))])
    assert krpc.unpack_nodes(six, 38) == (krpc.Contact(6, ("2001:db8::1", 1)),)
