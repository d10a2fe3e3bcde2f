"""Magnet URIs (BEP 9): the info-hash and hints to find the torrent's metadata."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from btfs.errors import MetainfoError
from btfs.metainfo import TRACKER_SCHEMES

MAX_MAGNET_LENGTH = 64 * 1024


@dataclass(frozen=True)
class Magnet:
    """A parsed magnet link: everything but the info dictionary itself."""

    info_hash: bytes
    display_name: str | None = None
    trackers: tuple[tuple[str, ...], ...] = ()
    web_seeds: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    exact_length: int | None = None

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()


def is_magnet(source: str) -> bool:
    return source[:7].lower() == "magnet:"


def parse_magnet(uri: str) -> Magnet:
    """Parse `magnet:?xt=urn:btih:...`; a v1 info-hash (40 hex or 32 base32 digits) is required."""
    if len(uri) > MAX_MAGNET_LENGTH:
        raise MetainfoError("magnet URI is too long")
    if not is_magnet(uri):
        raise MetainfoError("not a magnet URI (it must start with 'magnet:')")
    parts = urlsplit(uri)
    if parts.path not in ("", "/") or not parts.query:
        raise MetainfoError("malformed magnet URI: expected 'magnet:?xt=urn:btih:...'")
    try:
        params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise MetainfoError(f"malformed magnet URI: {exc}") from exc

    info_hash: bytes | None = None
    has_v2 = False
    name = None
    trackers: list[tuple[str, ...]] = []
    web_seeds: list[str] = []
    peers: list[str] = []
    length = None
    for key, value in params:
        key = key.lower()
        if key == "xt" or (key.startswith("xt.") and key[3:].isdigit()):
            lowered = value.lower()
            if lowered.startswith("urn:btih:"):
                digest = _parse_btih(value[9:])
                if info_hash is not None and info_hash != digest:
                    raise MetainfoError("magnet URI names two different info-hashes")
                info_hash = digest
            elif lowered.startswith("urn:btmh:"):
                has_v2 = True
        elif key == "dn":
            name = value
        elif key == "tr" or (key.startswith("tr.") and key[3:].isdigit()):
            if not value.startswith(TRACKER_SCHEMES):
                raise MetainfoError(f"magnet URI: unsupported tracker URL {value!r}")
            if all(value not in tier for tier in trackers):
                trackers.append((value,))
        elif key == "ws":
            if not value.startswith(("http://", "https://")):
                raise MetainfoError(f"magnet URI: unsupported web seed URL {value!r}")
            web_seeds.append(value)
        elif key == "x.pe":
            peers.append(value)
        elif key == "xl":
            if not value.isdigit():
                raise MetainfoError(f"magnet URI: 'xl' must be a byte count, not {value!r}")
            length = int(value)
    if info_hash is None:
        if has_v2:
            raise MetainfoError("BitTorrent v2-only magnet URIs (urn:btmh) are not supported")
        raise MetainfoError("magnet URI has no 'xt=urn:btih:' info-hash")
    return Magnet(
        info_hash=info_hash,
        display_name=name,
        trackers=tuple(trackers),
        web_seeds=tuple(web_seeds),
        peers=tuple(peers),
        exact_length=length,
    )


def _parse_btih(text: str) -> bytes:
    try:
        if len(text) == 40:
            return bytes.fromhex(text)
        if len(text) == 32:
            return base64.b32decode(text.upper())
    except (ValueError, binascii.Error):
        pass
    raise MetainfoError(
        f"malformed magnet info-hash {text[:50]!r}: expected 40 hex or 32 base32 digits"
    )
