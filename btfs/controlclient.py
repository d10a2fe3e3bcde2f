"""The commands' side of the control socket (`btfs.control`): `btfs add`, `btfs remove` and
`btfs status` of a library ask the running mount and print its one-line answer."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path
from typing import Any

from btfs.control import ANSWER_TIMEOUT, ControlError
from btfs.magnet import is_magnet, parse_magnet
from btfs.mount import find_mount


def control_socket_of(mountpoint: Path) -> Path:
    """The socket the btfs mount at `mountpoint` listens on; ControlError otherwise."""
    absolute = Path(os.path.abspath(mountpoint))
    fstype = find_mount(absolute)
    if fstype is None:
        raise ControlError(f"{mountpoint} is not mounted")
    if fstype != "fuse.btfs":
        raise ControlError(f"{mountpoint} is not a btfs mount ({fstype})")
    try:
        return Path(os.fsdecode(os.getxattr(absolute, "user.btfs.control")))
    except OSError:
        raise ControlError(f"{mountpoint}: this btfs mount has no control socket "
                           "(made by an older btfs?)") from None


def ask(mountpoint: Path, request: dict[str, Any],
        timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """Send one request to the mount; its answer when ok, ControlError with its reason."""
    path = control_socket_of(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"{mountpoint}: no answer within {timeout:.0f} s") from None
        except OSError as exc:
            raise ControlError(f"{mountpoint}: cannot reach its control socket {path}: "
                               f"{exc.strerror or exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"{mountpoint}: the mount gave no answer") from None
    if not isinstance(answer, dict):
        raise ControlError(f"{mountpoint}: the mount gave no answer")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error") or "refused"))
    return answer


def add_request(source: str) -> dict[str, Any]:
    """The request that adds `source` (a .torrent file, checked here, or a magnet URI)."""
    from btfs.metainfo import load_torrent

    if is_magnet(source):
        parse_magnet(source)
        return {"op": "add", "magnet": source}
    load_torrent(source)  # refuse what is not a torrent before asking the mount
    data = Path(source).read_bytes()
    return {"op": "add", "torrent": base64.b64encode(data).decode()}


def library_status(mountpoint: Path) -> dict[str, Any] | None:
    """`btfs status` of a library (None for a mount of one torrent, shown flat)."""
    absolute = Path(os.path.abspath(mountpoint))
    if find_mount(absolute) != "fuse.btfs":
        return None
    try:
        os.getxattr(absolute, "user.btfs.torrents")
    except OSError:
        return None
    answer = ask(absolute, {"op": "status"}, timeout=30)
    answer.pop("ok", None)
    answer.pop("message", None)
    return {"mountpoint": str(absolute)} | answer


def render_library(status: dict[str, Any]) -> str:
    """`btfs status` of a library: one line per torrent, and the shared figures."""
    from btfs.units import format_size

    torrents = status.get("torrents", [])
    head = (f"{status['mountpoint']}: {len(torrents)} torrent(s), "
            f"port {status.get('listen_port', '?')}")
    if "dht_nodes" in status:
        head += f", DHT {status['dht_nodes']} nodes"
    if "cache_size" in status:
        head += (f", cache {format_size(int(status['cache_used']))} of "
                 f"{format_size(int(status['cache_size']))}")
    lines = [head]
    for t in torrents:
        line = (f"  {float(t['progress']) * 100:5.1f}%  {format_size(int(t['size'])):>10}  "
                f"peers {t['peers']:>3}  down {format_size(float(t['download_rate']))}/s  "
                f"up {format_size(float(t['upload_rate']))}/s  "
                f"cache {format_size(int(t['cache_bytes']))}  {t['name']}")
        if t.get("problem"):
            line += f"  (problem: {t['problem']})"
        lines.append(line)
    for name in status.get("closing", []):
        lines.append(f"  removed, closing when its files close: {name}")
    for magnet in status.get("resolving", []):
        lines.append(f"  resolving metadata of {magnet['name'] or magnet['info_hash']}: "
                     f"{magnet['summary']}")
    return "\n".join(lines)
