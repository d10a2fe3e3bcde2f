"""`--http ADDR:PORT` and its token: parsed and checked before the mount starts. Pure."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from btfs.errors import BtfsError

DEFAULT_HOST = "127.0.0.1"
STALL_TIMEOUT = 60.0  # s a client may leave sent data unread before the kernel drops it
WAIT_TIMEOUT = 120.0  # s a request waits for the pieces of one chunk before it fails
MAX_TOKEN_LENGTH = 256


class HttpOptionError(BtfsError):
    """An `--http` address or token that cannot be used."""


@dataclass
class HttpOptions:
    host: str = DEFAULT_HOST
    port: int = 0
    token: str | None = None
    stall_timeout: float = STALL_TIMEOUT
    wait_timeout: float = WAIT_TIMEOUT

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self) -> None:
        """Refuse an address other machines can reach without a token."""
        if self.port == 0:
            raise HttpOptionError("an --http token was given without --http ADDR:PORT")
        if self.token is None and not self.loopback:
            raise HttpOptionError(
                f"--http on {self.host} lets other machines in, so it needs a token: give "
                "--http-token TOKEN or --http-token-file FILE (or bind 127.0.0.1)")

    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_http_address(text: str) -> tuple[str, int]:
    """`PORT`, `ADDR:PORT` or `[IPv6]:PORT` (an empty ADDR means every address)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise HttpOptionError(f"bad --http address {text!r}: write [IPv6]:PORT")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise HttpOptionError(f"bad --http address {text!r}: write [IPv6]:PORT")
        host = host or "0.0.0.0"
    else:
        host, port_text = DEFAULT_HOST, text
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise HttpOptionError(f"bad --http address {text!r}: the port must be 1-65535")
    if not host or any(c.isspace() for c in host):
        raise HttpOptionError(f"bad --http address {text!r}: no host")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_token(token: str) -> str:
    """A token as given (surrounding white space removed): printable ASCII, no spaces, so it
    fits in a header and a URL unchanged."""
    token = token.strip()
    if not token:
        raise HttpOptionError("the --http token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise HttpOptionError(f"the --http token is longer than {MAX_TOKEN_LENGTH} characters")
    if not all("!" <= c <= "~" for c in token) or any(c in "&#%+" for c in token):
        raise HttpOptionError("the --http token must be printable ASCII without spaces "
                              "or any of & # % +")
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so the time taken says nothing of the token."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
