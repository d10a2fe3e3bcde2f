"""MSE/PE: our receiving side against our initiating side, over an in-memory stream pair."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from btfs import mse

INFO_HASH = bytes(range(20))
HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + INFO_HASH + b"-XX0001-" + bytes(12)


async def exchange(provide: int, allow_plaintext: bool = True) -> tuple[int, bytes, bytes]:
    a, b = trio.testing.memory_stream_pair()
    results: dict[str, object] = {}

    async def receiver() -> None:
        stream, plain, info_hash = await mse.accept(
            b, await b.receive_some(), mse.skey_lookup([INFO_HASH]),
            allow_plaintext=allow_plaintext,
        )
        results["plain"], results["hash"] = plain, info_hash
        while len(results["plain"]) < len(HANDSHAKE) + 5:  # type: ignore[arg-type]
            results["plain"] = results["plain"] + await stream.receive_some()  # type: ignore[operator]
        await stream.send_all(b"reply")

    async def initiator() -> None:
        stream, select = await mse.initiate(a, INFO_HASH, HANDSHAKE, provide=provide)
        await stream.send_all(b"after")
        got = b""
        while len(got) < 5:
            got += await stream.receive_some()
        results["select"], results["reply"] = select, got

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            nursery.start_soon(initiator)
    assert results["reply"] == b"reply"
    return results["select"], results["plain"], results["hash"]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("provide", "allow_plaintext", "selected"),
    [
        (mse.PLAINTEXT | mse.RC4, True, mse.PLAINTEXT),
        (mse.RC4, True, mse.RC4),
        (mse.PLAINTEXT | mse.RC4, False, mse.RC4),
        (mse.PLAINTEXT, True, mse.PLAINTEXT),
    ],
)
async def test_handshake_and_stream(provide: int, allow_plaintext: bool, selected: int) -> None:
    select, plain, info_hash = await exchange(provide, allow_plaintext)
    assert select == selected
    assert info_hash == INFO_HASH
    assert plain == HANDSHAKE + b"after"


async def test_unknown_torrent_is_refused() -> None:
    a, b = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mse.initiate, a, os.urandom(20), HANDSHAKE)
            with pytest.raises(mse.MSEError, match="torrent we do not have"):
                await mse.accept(b, await b.receive_some(), mse.skey_lookup([INFO_HASH]))
            nursery.cancel_scope.cancel()


async def test_garbage_is_refused_without_hanging() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(os.urandom(96 + 600))
    with trio.fail_after(12), pytest.raises(mse.MSEError):
        await mse.accept(b, await b.receive_some(), mse.skey_lookup([INFO_HASH]))


def test_plain_handshake_is_recognised() -> None:
    assert mse.looks_plain(HANDSHAKE[:5])
    assert mse.looks_plain(HANDSHAKE)
    assert not mse.looks_plain(b"\x13BitTorrent prot0col")


def test_key_pair_rejects_degenerate_keys() -> None:
    pair = mse.KeyPair()
    for bad in (0, 1, mse.P - 1):
        with pytest.raises(mse.MSEError):
            pair.shared(bad.to_bytes(96, "big"))
    other = mse.KeyPair()
    assert pair.shared(other.public) == other.shared(pair.public)
