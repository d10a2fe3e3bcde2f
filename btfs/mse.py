"""Message Stream Encryption (MSE/PE), the receiving side.

libtorrent and Transmission open connections with an encrypted handshake first (a
Diffie-Hellman exchange, then RC4) and many never fall back to plain text, so a peer
that only speaks plain BitTorrent never receives their connections. btfs accepts both:
a connection that starts with the plain handshake is plain; anything else is taken as
MSE. After the exchange the stream is plain if the peer offers that (libtorrent does),
else RC4 (Transmission's default offers only RC4).

The steps, with A the peer that connects and B us:
    A->B  Ya, PadA          B->A  Yb, PadB          S = Ya^Xb mod P
    A->B  HASH('req1',S), HASH('req2',SKEY) xor HASH('req3',S),
          ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD), then the stream
with SKEY the info-hash, VC eight zero bytes, RC4 keyed by HASH('keyA'|'keyB', S, SKEY)
and its first 1024 bytes of keystream discarded.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from btfs.errors import BtfsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)
G = 2
KEY_BYTES = 96
VC = bytes(8)
PLAINTEXT = 0x01
RC4 = 0x02
MAX_PAD = 512
HANDSHAKE_TIMEOUT = 10.0


class MSEError(BtfsError):
    """The encrypted handshake failed (not MSE, unknown torrent, nothing we support)."""


def _sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


def _padding() -> bytes:
    """Random padding after our public key (0-63 bytes; MSE allows up to 512)."""
    return os.urandom(int.from_bytes(os.urandom(1)) % 64)


def _rc4(key: bytes) -> CipherContext:
    # Imported here: most connections are plain, and the import costs start-up time.
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher

    cipher = Cipher(ARC4(key), mode=None).encryptor()
    cipher.update(bytes(1024))
    return cipher


class KeyPair:
    """Our Diffie-Hellman half: a 160-bit secret, its public value as 96 bytes."""

    def __init__(self, secret: int | None = None) -> None:
        self.secret = secret if secret is not None else int.from_bytes(os.urandom(20), "big")
        self.public = pow(G, self.secret, P).to_bytes(KEY_BYTES, "big")

    def shared(self, other_public: bytes) -> bytes:
        y = int.from_bytes(other_public, "big")
        if not 1 < y < P - 1:
            raise MSEError("bad Diffie-Hellman public key")
        return pow(y, self.secret, P).to_bytes(KEY_BYTES, "big")


def skey_lookup(info_hashes: Iterable[bytes]) -> dict[bytes, bytes]:
    """HASH('req2', SKEY) -> info-hash, to find which torrent an encrypted peer wants."""
    return {_sha1(b"req2", h): h for h in info_hashes}


class RC4Stream(trio.abc.Stream):
    """A trio stream whose bytes are RC4-encrypted both ways."""

    def __init__(self, inner: trio.abc.Stream, encrypt: CipherContext,
                 decrypt: CipherContext) -> None:
        self.inner = inner
        self._encrypt = encrypt
        self._decrypt = decrypt

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(self._encrypt.update(bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        return self._decrypt.update(data) if data else b""

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Incoming:
    """Bytes from the stream, with what was read ahead kept for the next step."""

    def __init__(self, stream: trio.abc.Stream, initial: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(initial)

    async def fill(self, n: int) -> None:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(4096)
            if not data:
                raise MSEError("closed during the encrypted handshake")
            self.buffer += data

    async def take(self, n: int) -> bytes:
        await self.fill(n)
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def skip_to(self, marker: bytes, limit: int) -> None:
        """Drop bytes up to and including `marker`, which must come within `limit` bytes."""
        while True:
            at = self.buffer.find(marker)
            if at >= 0:
                del self.buffer[: at + len(marker)]
                return
            if len(self.buffer) >= limit + len(marker):
                raise MSEError("no encrypted-handshake marker where it should be")
            data = await self.stream.receive_some(4096)
            if not data:
                raise MSEError("closed during the encrypted handshake")
            self.buffer += data


async def accept(
    stream: trio.abc.Stream, initial: bytes, skeys: dict[bytes, bytes],
    *, allow_plaintext: bool = True,
) -> tuple[trio.abc.Stream, bytes, bytes]:
    """Answer an encrypted handshake that began with `initial`.

    Returns the stream to use from now on, the plain bytes that came with the
    handshake (the peer's BitTorrent handshake, usually) and the info-hash.
    """
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        incoming = _Incoming(stream, initial)
        ya = await incoming.take(KEY_BYTES)
        ours = KeyPair()
        await stream.send_all(ours.public + _padding())
        secret = ours.shared(ya)
        await incoming.skip_to(_sha1(b"req1", secret), MAX_PAD)
        mask = await incoming.take(20)
        req3 = _sha1(b"req3", secret)
        req2 = bytes(a ^ b for a, b in zip(mask, req3, strict=True))
        info_hash = skeys.get(req2)
        if info_hash is None:
            raise MSEError("encrypted handshake for a torrent we do not have")
        decrypt = _rc4(_sha1(b"keyA", secret, info_hash))
        encrypt = _rc4(_sha1(b"keyB", secret, info_hash))
        head = decrypt.update(await incoming.take(14))
        vc, provide, pad_len = head[:8], *struct.unpack(">IH", head[8:])
        if vc != VC:
            raise MSEError("encrypted handshake verification failed")
        if pad_len > MAX_PAD:
            raise MSEError("encrypted handshake padding too long")
        decrypt.update(await incoming.take(pad_len))
        (ia_len,) = struct.unpack(">H", decrypt.update(await incoming.take(2)))
        ia = decrypt.update(await incoming.take(ia_len))
        if provide & PLAINTEXT and allow_plaintext:
            select = PLAINTEXT
        elif provide & RC4:
            select = RC4
        else:
            raise MSEError(f"peer offers no method we support (crypto_provide {provide:#x})")
        await stream.send_all(encrypt.update(VC + struct.pack(">IH", select, 0)))
        rest = bytes(incoming.buffer)
        if select == RC4:
            return RC4Stream(stream, encrypt, decrypt), ia + decrypt.update(rest), info_hash
        return stream, ia + rest, info_hash


def looks_plain(initial: bytes) -> bool:
    """Could these first bytes be the plain BitTorrent handshake?"""
    protocol = b"\x13BitTorrent protocol"
    n = min(len(initial), len(protocol))
    return initial[:n] == protocol[:n]


async def initiate(
    stream: trio.abc.Stream, info_hash: bytes, payload: bytes,
    *, provide: int = PLAINTEXT | RC4,
) -> tuple[trio.abc.Stream, int]:
    """Open an encrypted handshake carrying `payload` (our BitTorrent handshake).

    Returns the stream to use from now on and the method the peer selected.
    """
    with trio.fail_after(HANDSHAKE_TIMEOUT):
        ours = KeyPair()
        await stream.send_all(ours.public + _padding())
        incoming = _Incoming(stream, b"")
        secret = ours.shared(await incoming.take(KEY_BYTES))
        encrypt = _rc4(_sha1(b"keyA", secret, info_hash))
        decrypt = _rc4(_sha1(b"keyB", secret, info_hash))
        mask = bytes(a ^ b for a, b in zip(_sha1(b"req2", info_hash), _sha1(b"req3", secret),
                                           strict=True))
        await stream.send_all(
            _sha1(b"req1", secret) + mask
            + encrypt.update(VC + struct.pack(">IHH", provide, 0, len(payload)) + payload)
        )
        await incoming.skip_to(decrypt.update(VC), MAX_PAD)
        select, pad_len = struct.unpack(">IH", decrypt.update(await incoming.take(6)))
        if pad_len > MAX_PAD:
            raise MSEError("encrypted handshake padding too long")
        decrypt.update(await incoming.take(pad_len))
        if select not in (PLAINTEXT, RC4) or not select & provide:
            raise MSEError(f"peer selected an unknown method {select:#x}")
        rest = bytes(incoming.buffer)
        if select == RC4:
            wrapped = RC4Stream(stream, encrypt, decrypt)
            return _Prefixed(wrapped, decrypt.update(rest)), select
        return _Prefixed(stream, rest), select


class _Prefixed(trio.abc.Stream):
    """A stream that first hands out bytes already read from it."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self.prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.prefix:
            out, self.prefix = self.prefix, b""
            return out
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
