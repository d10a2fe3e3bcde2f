"""UDP trackers (BEP 15), the client's pure half: requests built from `AnnounceParams`,
answers checked against the request (transaction id, action) and turned into results.
Every malformed answer is a `TrackerError`; an error packet is a `TrackerFailure`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from btfs.trackers.model import (
    AnnounceParams,
    AnnounceResult,
    ScrapeResult,
    TrackerError,
    TrackerFailure,
    unique,
)
from btfs.trackerwire import bep15, compact

A = TypeVar("A", bep15.ConnectAnswer, bep15.AnnounceAnswer, bep15.ScrapeAnswer)

_NO_IP = b"\0\0\0\0"  # "the address the packet comes from"


def udp_connect_request(txid: bytes) -> bytes:
    return bep15.ConnectRequest(txid).encode()


def parse_udp_connect_response(data: bytes, txid: bytes) -> bytes:
    """The connection id of a connect answer."""
    return _answer(data, txid, bep15.ConnectAnswer).connection_id


def udp_announce_request(connection_id: bytes, txid: bytes, params: AnnounceParams) -> bytes:
    return bep15.AnnounceRequest(
        connection_id, txid, params.info_hash, params.peer_id, max(0, params.downloaded),
        max(0, params.left), max(0, params.uploaded), params.event, _NO_IP, params.key,
        params.numwant, params.port,
    ).encode()


def parse_udp_announce_response(
    data: bytes, txid: bytes, *, ipv6: bool = False
) -> AnnounceResult:
    """An announce answer; over IPv6 its peers are 18-byte entries, over IPv4 6-byte ones."""
    answer = _answer(data, txid, bep15.AnnounceAnswer)
    try:
        peers = compact.decode_peers(answer.peers, compact.V6_SIZE if ipv6 else compact.V4_SIZE)
    except ValueError as exc:
        raise TrackerError(str(exc)) from None
    return AnnounceResult(
        interval=float(answer.interval),
        peers=unique(peers),
        complete=answer.seeders,
        incomplete=answer.leechers,
    )


def udp_scrape_request(
    connection_id: bytes, txid: bytes, info_hashes: Sequence[bytes]
) -> bytes:
    return bep15.ScrapeRequest(connection_id, txid, list(info_hashes)).encode()


def parse_udp_scrape_response(
    data: bytes, txid: bytes, info_hashes: Sequence[bytes]
) -> dict[bytes, ScrapeResult]:
    """A scrape answer: one entry per info-hash, in the order they were asked."""
    entries = _answer(data, txid, bep15.ScrapeAnswer).entries
    if len(entries) < len(info_hashes):
        raise TrackerError(f"UDP tracker answer of {len(data)} bytes is too short")
    return {h: ScrapeResult(*entry) for h, entry in zip(info_hashes, entries, strict=False)}


_ACTIONS = {bep15.ConnectAnswer: "connect", bep15.AnnounceAnswer: "announce",
            bep15.ScrapeAnswer: "scrape", bep15.ErrorAnswer: "error"}


def _answer(data: bytes, txid: bytes, kind: type[A]) -> A:
    """The answer in `data` to request `txid`, which must be of `kind`."""
    try:
        answer = bep15.decode_answer(data)
    except bep15.MalformedPacket as exc:
        if exc.txid is not None and exc.txid != txid:
            raise TrackerError("UDP tracker answer has the wrong transaction id") from None
        raise TrackerError(f"UDP tracker: {exc.reason}") from None
    if answer.txid != txid:
        raise TrackerError("UDP tracker answer has the wrong transaction id")
    if isinstance(answer, bep15.ErrorAnswer):
        raise TrackerFailure(answer.message)
    if not isinstance(answer, kind):
        raise TrackerError(
            f"UDP tracker answered action {_ACTIONS[type(answer)]}, expected {_ACTIONS[kind]}"
        )
    return answer
