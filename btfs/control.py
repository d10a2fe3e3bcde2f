"""The mount's control socket: `btfs add`, `btfs remove` and `btfs status` of a library.

The running mount listens on a Unix socket in its runtime folder (`$XDG_RUNTIME_DIR/btfs`,
`/run/btfs` for root, else `/tmp/btfs-UID`; the folder is the owner's alone, the socket
0600, and a connection from another user is refused by its credentials). The mount's
root names the socket in its `user.btfs.control` xattr, so a command finds it from the
mount point. One request per connection, one JSON line each way:

    {"op": "add", "torrent": BASE64} | {"op": "add", "magnet": URI}
    {"op": "remove", "name": NAME-OR-INFO-HASH}
    {"op": "status"}
    -> {"ok": true, "message": ONE-LINE, ...} | {"ok": false, "error": ONE-LINE}

The commands' side is `btfs.controlclient`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

import trio

from btfs.errors import BtfsError
from btfs.library import Library
from btfs.magnet import is_magnet, parse_magnet
from btfs.metainfo import MAX_TORRENT_FILE_SIZE, parse_torrent

log = logging.getLogger(__name__)

MAX_REQUEST = MAX_TORRENT_FILE_SIZE * 4 // 3 + 4096  # a torrent in base64, and the rest
REQUEST_TIMEOUT = 10.0  # to send the request
ANSWER_TIMEOUT = 150.0  # a magnet's metadata may take 2 minutes


class ControlError(BtfsError):
    """The mount cannot be asked (not a btfs mount, no socket) or refused the request."""


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "btfs"
    if os.getuid() == 0:
        return Path("/run/btfs")
    return Path(tempfile.gettempdir()) / f"btfs-{os.getuid()}"


def socket_path(pid: int | None = None) -> Path:
    return runtime_dir() / f"mount-{pid or os.getpid()}.sock"


def _private_folder(folder: Path) -> None:
    """Make the folder (0700), or refuse one another user could write to."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ControlError(f"{folder} is not a folder of this user's")
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)


# The server, in the mount's process -------------------------------------------------------

async def serve_control(library: Library, *,
                        task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer requests on the mount's socket until cancelled; removes it at the end."""
    path = socket_path()
    _private_folder(path.parent)
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started(path)

        async def serve_one(stream: trio.SocketStream) -> None:
            await _serve_one(library, stream)

        await trio.serve_listeners(serve_one, [listener])
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def _peer_uid(stream: trio.SocketStream) -> int | None:
    try:
        raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                       struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", raw)[1])


async def _serve_one(library: Library, stream: trio.SocketStream) -> None:
    async with stream:
        uid = _peer_uid(stream)
        if uid not in (os.getuid(), 0):
            log.warning("control socket: refused a connection of user %s", uid)
            return
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                raw = await _read_line(stream)
            answer = await handle(library, json.loads(raw))
        except trio.TooSlowError:
            return
        except (ValueError, UnicodeDecodeError):
            answer = {"ok": False, "error": "not a request (one JSON line expected)"}
        except BtfsError as exc:
            answer = {"ok": False, "error": one_line(str(exc))}
        try:
            await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while b"\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ControlError("request too large")
    return bytes(data.split(b"\n", 1)[0])


def one_line(text: str) -> str:
    return " ".join(text.split())


async def handle(library: Library, request: Any) -> dict[str, Any]:
    """One request's answer (BtfsError for a refusal)."""
    if not isinstance(request, dict):
        raise ControlError("not a request (a JSON object expected)")
    op = request.get("op")
    if op == "status":
        return {"ok": True, "message": f"{len(library.entries)} torrent(s)"} | library.status()
    if op == "add":
        if isinstance(request.get("magnet"), str):
            if not is_magnet(request["magnet"]):
                raise ControlError("not a magnet URI")
            source: Any = parse_magnet(request["magnet"])
        elif isinstance(request.get("torrent"), str):
            try:
                data = base64.b64decode(request["torrent"], validate=True)
            except (binascii.Error, ValueError):
                raise ControlError("the torrent is not valid base64") from None
            source = parse_torrent(data)
        else:
            raise ControlError("add needs 'torrent' (base64) or 'magnet'")
        entry = await library.add(source)
        return {"ok": True, "message": f"added {entry.name} ({entry.info_hash_hex})",
                "name": entry.name, "info_hash": entry.info_hash_hex}
    if op == "remove":
        name = request.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError("remove needs 'name' (a folder name or an info-hash)")
        entry, stopped = await library.remove(name)
        tail = "" if stopped else " (it stops once its open files are closed)"
        return {"ok": True, "message": f"removed {entry.name} ({entry.info_hash_hex}){tail}",
                "name": entry.name, "info_hash": entry.info_hash_hex}
    raise ControlError(f"unknown request {op!r}")
