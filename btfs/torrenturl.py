"""A .torrent named by an http:// or https:// URL, fetched before use (as Debian's btfs and
aria2 accept them); any other URL is refused by name, never taken for a file name."""

from __future__ import annotations

import http
import re
from collections.abc import Mapping

import trio

from btfs.errors import MetainfoError
from btfs.httpclient import HttpClient, HttpError
from btfs.metainfo import MAX_TORRENT_FILE_SIZE, Metainfo, parse_torrent

FETCH_TIMEOUT = 30.0
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: str) -> bool:
    """Whether SOURCE is written as a URL (`scheme://...`) rather than a path."""
    return _URL.match(source) is not None


def _reason(status: int) -> str:
    try:
        return f"HTTP {status} ({http.HTTPStatus(status).phrase.lower()})"
    except ValueError:
        return f"HTTP {status}"


def fetch_torrent(url: str, bind: str | None = None,
                  timeout: float = FETCH_TIMEOUT) -> Metainfo:
    """GET the .torrent at `url` and parse it; every failure is one MetainfoError
    naming the URL."""
    scheme = url.partition("://")[0].lower()
    if scheme not in ("http", "https"):
        raise MetainfoError(f"{url}: only http:// and https:// URLs are accepted "
                            "(or a .torrent file, or a magnet URI)")

    def check_head(status: int, headers: Mapping[str, str]) -> None:
        if status != 200:
            raise HttpError(_reason(status))

    async def get() -> bytes:
        client = HttpClient(bind=bind, keep_alive=False)
        try:
            with trio.fail_after(timeout):
                response = await client.get(url, max_body=MAX_TORRENT_FILE_SIZE,
                                            check_head=check_head)
        except trio.TooSlowError:
            raise HttpError(f"no answer within {timeout:g} s") from None
        finally:
            await client.aclose()
        return response.body

    try:
        data = trio.run(get)
    except HttpError as exc:
        raise MetainfoError(f"{url}: {exc}") from None
    try:
        return parse_torrent(data)
    except MetainfoError as exc:
        raise MetainfoError(f"{url}: {exc}") from None
