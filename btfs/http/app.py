"""The ASGI application: the mount's files with Range, playlists, the JSON API, the web page.

A file's bytes come from `torrent.read` (the door FUSE reads use), one chunk at a time,
through a reader opened for the response, so the read-ahead follows the HTTP client as it
follows a player reading the mount. The first chunk is read before the status line is
sent, so a read that cannot be answered is a clear 503/504; one that fails later ends the
connection (the length was promised). A client that goes away cancels the wait at once
(hypercorn reads the connection while the app answers and reports its end as an ASGI
`http.disconnect`).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import trio

from btfs.errors import BtfsError
from btfs.http import paths
from btfs.http.catalog import Catalog, CatalogError, ServedTorrent
from btfs.http.media import content_type, is_media, m3u, url_path, with_token
from btfs.http.options import HttpOptions, is_loopback, token_matches
from btfs.http.ranges import (
    ByteRange,
    Unsatisfiable,
    entity_tag,
    honours_if_range,
    none_match,
    parse_range,
)
from btfs.http.views import torrent_detail, torrent_summary
from btfs.metainfo import MAX_TORRENT_FILE_SIZE
from btfs.torrent import CannotStore, TorrentClosed

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

CHUNK = 256 << 10  # bytes per torrent.read of a response (kernel FUSE reads are 128 KiB)
READER_BASE = 1 << 48  # reader ids above any FUSE file handle (their tail keys stay apart)
BODY_TIMEOUT = 30.0  # s to receive a request body (an upload) before answering 408
HOST_RE = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
FILE_SECURITY = [(b"content-security-policy", b"sandbox"), (b"x-content-type-options", b"nosniff")]
PAGE_SECURITY = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; media-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
STATIC_TYPES = {"": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
STATIC_FILES = {"": "index.html", **{name: name for name in paths.STATIC_NAMES}}


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class Request:
    """What a handler needs of an ASGI HTTP scope."""

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        self.query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        self.headers: dict[str, str] = {}
        self.repeated: set[str] = set()
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key in self.headers:
                self.repeated.add(key)
            self.headers[key] = value.decode("latin-1")
        client = scope.get("client")
        self.client: tuple[str, int] | None = (client[0], client[1]) if client else None
        self.server: tuple[str, int] | None = scope.get("server")
        self.scheme: str = scope.get("scheme", "http")
        self.http_version: str = scope.get("http_version", "1.1")

    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        kind, _, value = auth.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
        given = self.query.get("token")
        return given[-1] if given else None

    def host_name(self) -> str | None:
        host = self.headers.get("host")
        if host is None or not HOST_RE.fullmatch(host):
            return None
        name = host.rsplit(":", 1)[0] if not host.endswith("]") and ":" in host else host
        return name.strip("[]")

    def base_url(self) -> str:
        """scheme://host[:port] as the client reached us (the Host header, when valid)."""
        host = self.headers.get("host")
        if host is None or not HOST_RE.fullmatch(host):
            if self.server is None:
                host = "127.0.0.1"
            else:
                address, port = self.server[0], self.server[1]
                host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return f"{self.scheme}://{host}"


class HttpApp:
    """The ASGI application over a mount's `Catalog`."""

    def __init__(self, catalog: Catalog, options: HttpOptions) -> None:
        self.catalog = catalog
        self.options = options
        self._readers = itertools.count(READER_BASE)
        self._file_index: dict[str, dict[tuple[str, ...], int]] = {}
        static = resources.files("btfs.http") / "static"
        self.static = {key: (static / name).read_bytes() for key, name in STATIC_FILES.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the server closes the connection
        request = Request(scope)
        sent = [False]

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent[0] = True
            await send(message)

        try:
            await self._handle(request, receive, tracked)
        except HttpError as error:
            if not sent[0]:
                await _send_error(tracked, request, error)
        except Exception:
            log.exception("internal error answering %s %r", request.method, request.raw_path)
            if not sent[0]:
                await _send_error(tracked, request, HttpError(500, "internal error"))

    async def _handle(self, request: Request, receive: Receive, send: Send) -> None:
        try:
            route = paths.route(request.raw_path)
        except paths.BadPath as exc:
            raise HttpError(400, str(exc)) from None
        if isinstance(route, paths.Page):  # the page's own files hold nothing of the mount's
            self._methods(request, "GET", "HEAD")
            await self._page(request, send, route.name)
            return
        self._authorise(request)
        if isinstance(route, paths.Playlist):
            self._methods(request, "GET", "HEAD")
            await self._playlist(request, send, route.info_hash)
        elif isinstance(route, paths.FileRequest):
            self._methods(request, "GET", "HEAD")
            await self._file(request, receive, send, route)
        elif isinstance(route, paths.TorrentList):
            await self._torrent_list(request, receive, send)
        elif isinstance(route, paths.TorrentItem):
            await self._torrent_item(request, send, route.info_hash)
        else:
            raise HttpError(404, "no such page")

    def _authorise(self, request: Request) -> None:
        token = self.options.token
        if token is not None:
            if not token_matches(token, request.token()):
                raise HttpError(401, "a token is needed: send 'Authorization: Bearer TOKEN' "
                                "or add ?token=TOKEN",
                                [(b"www-authenticate", b'Bearer realm="btfs"')])
            return
        # No token means a loopback address: refuse a Host that names another machine,
        # so a web page whose name was rebound to 127.0.0.1 cannot read the API.
        name = request.host_name()
        if "host" in request.headers and (name is None or not (
                is_loopback(name) or name == self.options.host)):
            raise HttpError(403, "the Host header must name this machine (localhost or its "
                            "address); use --http-token to serve other names")

    @staticmethod
    def _methods(request: Request, *allowed: str) -> None:
        if request.method not in allowed:
            raise HttpError(405, f"{request.method} is not allowed here",
                            [(b"allow", ", ".join(allowed).encode())])

    # The page and its files ------------------------------------------------------------

    async def _page(self, request: Request, send: Send, name: str) -> None:
        body = self.static[name]
        suffix = name[name.rfind("."):] if name else ""
        headers = [(b"content-type", STATIC_TYPES[suffix].encode()),
                   (b"cache-control", b"no-cache"), *PAGE_SECURITY]
        await _send_whole(send, request, 200, headers, body)

    async def _playlist(self, request: Request, send: Send, info_hash: str | None) -> None:
        if info_hash is None:
            torrents: Sequence[ServedTorrent] = self.catalog.torrents()
            name = "btfs"
        else:
            found = self.catalog.find(info_hash)
            if found is None:
                raise HttpError(404, f"no torrent {info_hash} in this mount")
            torrents, name = [found], found.info.name
        token = request.token() if self.options.token is not None else None
        base = request.base_url()
        entries = []
        for torrent in torrents:
            for f in torrent.info.files:
                if not f.padding and is_media(f.path[-1]):
                    url = base + url_path(torrent.meta.info_hash_hex, f.path)
                    entries.append(("/".join(f.path), with_token(url, token)))
        headers = [(b"content-type", b"audio/x-mpegurl; charset=utf-8"),
                   (b"content-disposition", _disposition("inline", name + ".m3u")),
                   (b"cache-control", b"no-store")]
        await _send_whole(send, request, 200, headers, m3u(entries).encode())

    # A torrent's files -----------------------------------------------------------------

    def _find_file(self, torrent: ServedTorrent, path: tuple[str, ...]) -> int | None:
        key = torrent.meta.info_hash_hex
        table = self._file_index.get(key)
        if table is None:
            table = {f.path: i for i, f in enumerate(torrent.info.files) if not f.padding}
            self._file_index[key] = table
        return table.get(path)

    async def _file(self, request: Request, receive: Receive, send: Send,
                    route: paths.FileRequest) -> None:
        torrent = self.catalog.find(route.info_hash)
        if torrent is None:
            raise HttpError(404, f"no torrent {route.info_hash} in this mount")
        index = self._find_file(torrent, route.path)
        if index is None:
            raise HttpError(404, "no such file in this torrent")
        f = torrent.info.files[index]
        etag = entity_tag(route.info_hash, index)
        headers: Headers = [
            (b"accept-ranges", b"bytes"), (b"etag", etag.encode()),
            (b"content-type", content_type(f.path[-1]).encode()),
            (b"content-disposition", _disposition("inline", f.path[-1])),
            *FILE_SECURITY,
        ]
        if none_match(request.headers.get("if-none-match"), etag):
            await _send_whole(send, request, 304, headers, b"")
            return
        wanted: ByteRange | None = None
        if request.method == "GET" and honours_if_range(request.headers.get("if-range"), etag):
            try:
                if "range" in request.repeated:
                    raise Unsatisfiable("more than one Range header")
                wanted = parse_range(request.headers.get("range"), f.length)
            except Unsatisfiable as exc:
                raise HttpError(416, str(exc), [(b"content-range", f"bytes */{f.length}".encode()),
                                                (b"accept-ranges", b"bytes")]) from None
        if wanted is None:
            status, start, stop = 200, 0, f.length
        else:
            status, start, stop = 206, wanted.start, wanted.stop
            headers.append((b"content-range", wanted.content_range().encode()))
        headers.append((b"content-length", str(stop - start).encode()))
        if request.method == "HEAD" or start == stop:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        reader = next(self._readers)
        torrent.open_reader(reader, index)
        failed: HttpError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                try:
                    await self._stream(torrent, reader, f.offset, start, stop,
                                       send, status, headers)
                except HttpError as exc:  # kept out of the nursery's exception group
                    failed = exc
                nursery.cancel_scope.cancel()
        finally:
            torrent.close_reader(reader)
        if failed is not None:
            raise failed

    async def _stream(self, torrent: ServedTorrent, reader: int, base: int, start: int,
                      stop: int, send: Send, status: int, headers: Headers) -> None:
        position = start
        first = True
        while position < stop:
            size = min(CHUNK, stop - position)
            try:
                with trio.fail_after(self.options.wait_timeout):
                    data = await torrent.read(base + position, size, reader)
            except (BtfsError, trio.TooSlowError) as exc:
                if first:
                    raise _read_error(exc) from None
                log.info("ending a response after %d bytes: %s", position - start,
                         _read_error(exc))
                return  # unfinished body: the server closes the connection
            if len(data) != size:
                log.warning("a read of %d bytes gave %d: ending the response", size, len(data))
                if first:
                    raise HttpError(500, "the torrent's data is shorter than its metainfo says")
                return
            if first:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                first = False
            position += len(data)
            await send({"type": "http.response.body", "body": data,
                        "more_body": position < stop})

    # The API ---------------------------------------------------------------------------

    async def _torrent_list(self, request: Request, receive: Receive, send: Send) -> None:
        self._methods(request, "GET", "HEAD", "POST")
        if request.method == "POST":
            source = await self._read_source(request, receive)
            try:
                info_hash = await self.catalog.add(source)
            except CatalogError as exc:
                raise HttpError(exc.status, str(exc)) from None
            except BtfsError as exc:
                raise HttpError(400, str(exc)) from None
            await _send_json(send, request, 201, {"info_hash": info_hash},
                             [(b"location", f"/api/torrents/{info_hash}".encode())])
            return
        detail = request.query.get("files", ["0"])[-1] not in ("", "0")
        view = torrent_detail if detail else torrent_summary
        body = {"can_change": self.catalog.can_change,
                "torrents": [view(t) for t in self.catalog.torrents()]}
        await _send_json(send, request, 200, body)

    async def _read_source(self, request: Request, receive: Receive) -> str | bytes:
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind not in ("application/json", "application/x-bittorrent"):
            raise HttpError(415, "send a magnet as application/json {\"magnet\": URI} or a "
                            ".torrent file as application/x-bittorrent")
        body = await _read_body(request, receive, MAX_TORRENT_FILE_SIZE)
        if kind == "application/x-bittorrent":
            return body
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "the body is not JSON") from None
        magnet = data.get("magnet") if isinstance(data, dict) else None
        if not isinstance(magnet, str) or not magnet.strip():
            raise HttpError(400, "expected {\"magnet\": \"magnet:?xt=urn:btih:...\"}")
        return magnet.strip()

    async def _torrent_item(self, request: Request, send: Send, info_hash: str) -> None:
        self._methods(request, "GET", "HEAD", "DELETE")
        if request.method == "DELETE":
            try:
                await self.catalog.remove(info_hash)
            except CatalogError as exc:
                raise HttpError(exc.status, str(exc)) from None
            self._file_index.pop(info_hash, None)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        torrent = self.catalog.find(info_hash)
        if torrent is None:
            raise HttpError(404, f"no torrent {info_hash} in this mount")
        await _send_json(send, request, 200, torrent_detail(torrent))


def _read_error(exc: BaseException) -> HttpError:
    if isinstance(exc, trio.TooSlowError):
        return HttpError(504, "the pieces this range needs did not arrive in time")
    if isinstance(exc, TorrentClosed):
        return HttpError(503, "the mount is shutting down or the torrent was removed")
    if isinstance(exc, CannotStore):
        return HttpError(503, str(exc))
    return HttpError(500, f"cannot read: {exc}")


def _disposition(kind: str, filename: str) -> bytes:
    ascii_name = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    encoded = quote(filename, safe="")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}".encode()


async def _read_body(request: Request, receive: Receive, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    with trio.move_on_after(BODY_TIMEOUT) as scope:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client went away")
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                raise HttpError(413, f"the body is larger than {limit} bytes")
            chunks.append(body)
            if not message.get("more_body", False):
                return b"".join(chunks)
    assert scope.cancelled_caught
    raise HttpError(408, f"the body did not arrive within {BODY_TIMEOUT:.0f} s")


async def _cancel_on_disconnect(receive: Receive, cancel_scope: trio.CancelScope) -> None:
    """Cancel the response (and its wait for pieces) once the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass
    cancel_scope.cancel()


async def _send_whole(send: Send, request: Request, status: int, headers: Headers,
                      body: bytes) -> None:
    if status != 304:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body",
                "body": b"" if request.method == "HEAD" or status == 304 else body})


async def _send_json(send: Send, request: Request, status: int, data: object,
                     extra: Headers | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
               *(extra or [])]
    await _send_whole(send, request, status, headers, json.dumps(data).encode())


async def _send_error(send: Send, request: Request, error: HttpError) -> None:
    if error.status >= 500:
        log.warning("%s %r: %d %s", request.method, request.raw_path, error.status, error)
    else:
        log.debug("%s %r: %d %s", request.method, request.raw_path, error.status, error)
    await _send_json(send, request, error.status, {"error": str(error)}, error.headers)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

