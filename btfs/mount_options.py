"""The mount-helper form's `-o` options, and the argument checks the CLI shares with them.

Kept apart from `cli.py` (argument parsing) and `mount.py` (the mount's lifetime) so that
both can use it without importing each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from btfs.addresses import parse_peer
from btfs.errors import BtfsError
from btfs.http.options import HttpOptions, check_token, parse_http_address
from btfs.units import parse_size

if TYPE_CHECKING:
    from btfs.mount import MountOptions


def positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return int(text)


def port_argument(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {port}")
    return port


# Options mount(8) and systemd use for themselves; a mount helper must accept and ignore them.
# mount(8) passes "rw" unless told "ro": accepted, the mount is read-only all the same.
IGNORED_MOUNT_OPTIONS = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users",
                         "nouser", "owner", "group", "ro", "rw", "sync", "async", "nomand"}
FUSE_PASSTHROUGH = {"dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
                    "relatime", "norelatime", "strictatime", "nodiratime", "diratime",
                    "default_permissions", "dirsync", "lazytime", "nolazytime"}


def apply_mount_options(options: MountOptions, text: str) -> None:
    """Apply one `-o a,b=c` group (mount-helper form) to MountOptions."""
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, has_value, value = item.partition("=")
        key = key.replace("-", "_") if not key.startswith(("x-", "_")) else key
        if key in IGNORED_MOUNT_OPTIONS or key.startswith(("x-", "comment")):
            continue
        if key in FUSE_PASSTHROUGH and not has_value:
            options.fuse_options.append(key)
        elif key in ("fsname", "subtype", "max_read") and has_value:
            options.fuse_options.append(item)
        elif key == "keep" and not has_value:
            options.keep = True
        elif key == "allow_other" and not has_value:
            options.allow_other = True
        elif key == "allow_root" and not has_value:
            options.allow_root = True
        elif key == "foreground" and not has_value:
            options.foreground = True
        elif key == "quiet" and not has_value:
            options.quiet = True
        elif key == "readahead" and value:
            options.readahead = parse_size(value)
        elif key == "cache_dir" and value:
            options.cache_dir = Path(value)
        elif key == "log" and value:
            options.log_file = Path(value)
        elif key == "watch" and value:
            options.watch = Path(value)
        elif key == "cache_size" and value:
            options.cache_size = parse_size(value)
        elif key == "lazy" and not has_value:
            options.network.lazy = True
        elif key == "no_trackers" and not has_value:
            options.network.trackers = False
        elif key == "no_dht" and not has_value:
            options.network.dht = False
        elif key == "dht_bootstrap" and value:
            options.network.dht_routers = [*(options.network.dht_routers or []), value]
        elif key == "metadata_timeout" and value:
            try:
                options.metadata_timeout = positive_int(value)
            except argparse.ArgumentTypeError as exc:
                raise BtfsError(f"metadata_timeout: {exc}") from None
        elif key == "no_lsd" and not has_value:
            options.network.lsd = False
        elif key == "peer" and value:
            options.network.peers.append(parse_peer(value))
        elif key == "bind" and value:
            options.network.bind = value
        elif key == "port" and value:
            try:
                options.network.port = port_argument(value)
            except argparse.ArgumentTypeError as exc:
                raise BtfsError(str(exc)) from None
        elif key == "max_download_rate" and value:
            options.network.max_download_rate = parse_size(value)
        elif key == "max_upload_rate" and value:
            options.network.max_upload_rate = parse_size(value)
        elif key == "http" and value:
            set_http(options, address=value)
        elif key == "http_token" and value:
            set_http(options, token=value)
        elif key == "http_token_file" and value:
            set_http(options, token=read_token_file(Path(value)))
        elif key == "max_peers" and has_value:
            try:
                options.network.max_peers = positive_int(value)
            except argparse.ArgumentTypeError as exc:
                raise BtfsError(f"max_peers: {exc}") from None
        else:
            raise BtfsError(f"unknown mount option {item!r}")


def set_http(options: MountOptions, address: str | None = None,
             token: str | None = None) -> None:
    """`--http ADDR:PORT` and its token, from the command line or `-o http=...`."""
    http = options.http = options.http or HttpOptions()
    if address is not None:
        http.host, http.port = parse_http_address(address)
    if token is not None:
        http.token = check_token(token)


def read_token_file(path: Path) -> str:
    """The token in a file (its first line), so it is not on the command line for `ps`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise BtfsError(f"--http-token-file {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    return check_token(text)
