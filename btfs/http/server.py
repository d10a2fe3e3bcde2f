"""The HTTP server: hypercorn's protocol code on the mount's own trio loop.

hypercorn parses and writes HTTP/1.1 (h11) and HTTP/2 (h2) and runs the ASGI app; this
module owns the listening socket and the connections, for two things hypercorn's
`serve` does not give:

- a client that stops reading (a stalled TV, a paused player with a full socket buffer):
  the sockets have `TCP_USER_TIMEOUT`, so the kernel drops a connection whose sent data
  stays unacknowledged (zero window included) for `stall_timeout` seconds;
- shutdown: hypercorn writes with cancellation shielded, so a stalled client would hold
  the mount's exit; every connection's socket is closed when the server stops.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, cast

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from btfs.errors import BtfsError
from btfs.http.app import HttpApp
from btfs.http.catalog import Catalog
from btfs.http.options import HttpOptions

log = logging.getLogger(__name__)

KEEP_ALIVE = 30.0  # s an idle kept-alive connection stays open (players pause between requests)
BACKLOG = 128

class Connections:
    """The open connections, so that shutdown can close them all."""

    def __init__(self) -> None:
        self.streams: set[trio.SocketStream] = set()

    def close_all(self) -> None:
        for stream in list(self.streams):
            stream.socket.close()


def listen(options: HttpOptions) -> socket.socket:
    """The listening socket; a clear error if the address cannot be used."""
    where = options.display()
    try:
        infos = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BtfsError(f"--http {where}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                        max(1, int(options.stall_timeout * 1000)))
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BtfsError(f"cannot listen for HTTP on {where}: {exc.strerror}") from None
    return sock


def hypercorn_config() -> Config:
    config = Config()
    config.errorlog = logging.getLogger("btfs.http.hypercorn")
    config.accesslog = None
    config.keep_alive_timeout = KEEP_ALIVE
    return config


async def serve_http(catalog: Catalog, options: HttpOptions, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `catalog` on `options`' address until cancelled; `started` with the port."""
    sock = listen(options)
    port = sock.getsockname()[1]
    connections = Connections()
    app = ASGIWrapper(HttpApp(catalog, options))  # type: ignore[arg-type]
    config = hypercorn_config()
    context = WorkerContext(None)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    async def handle(stream: trio.SocketStream) -> None:
        connections.streams.add(stream)
        try:
            server = TCPServer(app, config, context, ConnectionState({}),
                               cast(Any, stream))
            await server.run()
        finally:
            connections.streams.discard(stream)
            stream.socket.close()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, [listener])
        shown = f"[{options.host}]" if ":" in options.host else options.host
        log.info("serving the mount over HTTP at http://%s:%d/", shown, port)
        task_status.started(port)
        try:
            await trio.sleep_forever()
        finally:
            connections.close_all()
            nursery.cancel_scope.cancel()
