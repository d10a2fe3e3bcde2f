"""The `btfs` command line: argument parsing and the one place errors become messages.

A `BtfsError` (bad input) prints one line, `btfs: error: ...`, and exits 2, like a
usage error; other failures of the outside world (a full disk) exit 1. No traceback
reaches the user for either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from btfs import __version__
from btfs.addresses import parse_peer
from btfs.errors import BtfsError, MetainfoError, Unavailable
from btfs.magnet import Magnet, is_magnet, parse_magnet
from btfs.metainfo import MAX_TORRENT_FILE_SIZE, Metainfo, load_torrent, parse_torrent
from btfs.mount_options import port_argument, positive_int
from btfs.progress import ProgressBar
from btfs.units import parse_size

if TYPE_CHECKING:
    from btfs.swarm import SwarmConfig

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
PROGRESS_MIN_BYTES = 64 << 20
DEFAULT_METADATA_TIMEOUT = 180  # a magnet's metadata: give up after this long


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btfs",
        description="Mount torrents as read-only filesystems that stream from the swarm.",
    )
    parser.add_argument("--version", action="version", version=f"btfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = sub.add_parser(
        "create",
        help="make a .torrent of a file or folder",
        description="Make a .torrent of a file or a folder (folders: every file, sorted, "
        "nested folders kept).",
    )
    create.add_argument("path", metavar="PATH", type=Path, help="the file or folder to share")
    create.add_argument(
        "-o", "--output", metavar="FILE",
        help="where to write the .torrent ('-' for standard output; default: NAME.torrent)",
    )
    create.add_argument(
        "-t", "--tracker", metavar="URL", action="append", default=[],
        help="announce URL (http, https or udp); repeat for one tier each, "
        "or give 'URL1,URL2' for several in one tier; the first is 'announce'",
    )
    create.add_argument(
        "-w", "--web-seed", metavar="URL", action="append", default=[],
        help="HTTP URL where the same data is served (BEP 19); repeatable",
    )
    create.add_argument("-p", "--private", action="store_true", help="private torrent (BEP 27)")
    create.add_argument("-c", "--comment", metavar="TEXT", help="free-text comment")
    create.add_argument(
        "-l", "--piece-length", metavar="SIZE", type=size_argument,
        help="piece size, a power of two from 16K to 16M "
        "(default: chosen for about 1000-2000 pieces)",
    )
    create.add_argument(
        "--no-date", action="store_true", help="leave out the creation date (reproducible output)"
    )
    create.add_argument("-f", "--force", action="store_true", help="overwrite FILE if it exists")
    create.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    create.set_defaults(handler=cmd_create)

    info = sub.add_parser(
        "info",
        help="show what a .torrent or magnet URI holds",
        description="Show a torrent's name, info-hash, size, pieces, files, trackers and more.",
    )
    info.add_argument("source", metavar="SOURCE",
                      help="a .torrent file, its http(s) URL, or a magnet URI")
    info.add_argument("--json", action="store_true", help="print JSON for programs")
    info.set_defaults(handler=cmd_info)

    mount = sub.add_parser(
        "mount",
        help="mount torrents as a read-only filesystem",
        description="Mount a torrent's files at MOUNTPOINT; reading a file fetches the pieces "
        "that read needs first. Several sources, or --watch DIR, make a library: a folder "
        "per torrent, torrents added and removed while mounted ('btfs add', 'btfs remove'). "
        "Returns once the mount is live and keeps running in the "
        "background. Also callable as 'btfs SOURCE MOUNTPOINT -o OPTIONS' (mount helper).",
    )
    mount.add_argument("sources", metavar="SOURCE", nargs="*",
                       help="a .torrent file or a magnet URI (its metadata is fetched from "
                       "peers first, found through trackers, the DHT, --peer); several make "
                       "a library")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                       help="an empty directory")
    mount.add_argument("-f", "--foreground", action="store_true",
                       help="stay in the foreground, logging to standard error")
    mount.add_argument("--cache-dir", metavar="DIR", type=Path,
                       help="where downloaded data lives (default: "
                       "$XDG_CACHE_HOME/btfs/INFO-HASH); data already there is checked and used")
    mount.add_argument("--keep", action="store_true",
                       help="keep the cache at unmount; the next mount starts with it verified")
    mount.add_argument("--watch", metavar="DIR", type=Path,
                       help="a library of every .torrent (and .magnet file holding a URI) in "
                       "DIR, following the files that come and go")
    mount.add_argument("--cache-size", metavar="SIZE", type=size_argument, default=0,
                       help="keep at most SIZE of verified pieces in the cache, evicting the "
                       "least recently read (then only what is read is fetched; default: "
                       "no limit)")
    mount.add_argument("--readahead", metavar="SIZE", type=size_argument, default=8 << 20,
                       help="how far ahead of a sequential reader to fetch (default 8M)")
    mount.add_argument("--allow-other", action="store_true",
                       help="let other users read the mount (FUSE allow_other)")
    mount.add_argument("--log", metavar="FILE", type=Path, dest="log_file",
                       help="write the background process's log to FILE (default: "
                       "btfs.log in the cache folder; 'btfs status' says where)")
    mount.add_argument("-q", "--quiet", action="store_true",
                       help="print nothing on success")
    mount.add_argument("--lazy", action="store_true",
                       help="fetch only what is read and its read-ahead (default: fetch the "
                       "whole torrent in the background and seed it)")
    mount.add_argument("-o", metavar="OPTIONS", dest="options", action="append", default=[],
                       help="comma-separated mount options: keep, lazy, readahead=SIZE, "
                       "watch=DIR, cache_size=SIZE, "
                       "cache_dir=DIR, log=FILE, peer=HOST:PORT (repeatable), bind=ADDR, "
                       "port=N, max_download_rate=RATE, max_upload_rate=RATE, max_peers=N, "
                       "no_trackers, no_dht, dht_bootstrap=HOST:PORT (repeatable), "
                       "metadata_timeout=SECONDS, no_lsd, "
                       "http=[ADDR:]PORT, http_token=T, http_token_file=FILE, "
                       "allow_other, allow_root, and FUSE options (nodev, nosuid, noexec, "
                       "noatime, ...); fstab-only options such as _netdev, noauto, nofail "
                       "and x-systemd.* are ignored")
    add_network_options(mount)
    http = mount.add_argument_group("HTTP streaming")
    http.add_argument("--http", metavar="[ADDR:]PORT",
                      help="also serve the files over HTTP (Range, M3U playlists, a web page); "
                      "ADDR defaults to 127.0.0.1, any other address needs a token")
    http.add_argument("--http-token", metavar="TOKEN",
                      help="the token HTTP clients must send (header 'Authorization: Bearer "
                      "TOKEN' or ?token=TOKEN)")
    http.add_argument("--http-token-file", metavar="FILE", type=Path,
                      help="read the token from FILE instead (it stays out of 'ps')")
    mount.set_defaults(handler=cmd_mount)

    download = sub.add_parser(
        "download",
        help="download a whole torrent into a folder",
        description="Fetch every piece of the torrent into DIR/NAME, verifying each, and exit "
        "0 when complete. Interrupted or killed, the same command resumes where it stopped "
        "(a resume log DIR/.NAME.btfs-resume lists the verified pieces until completion).",
    )
    download.add_argument("source", metavar="SOURCE", help="a .torrent file or a magnet URI")
    download.add_argument("-o", "--output", metavar="DIR", type=Path, default=Path("."),
                          help="folder to download into (default: the current folder)")
    download.add_argument("--seed-after", action="store_true",
                          help="keep seeding once complete, until SIGINT or SIGTERM")
    add_network_options(download)
    download.set_defaults(handler=cmd_download)

    seed = sub.add_parser(
        "seed",
        help="serve the data of a torrent to other peers",
        description="Check the data at PATH (the file, or the torrent's top folder) against "
        "the piece hashes, then serve the pieces that match until SIGINT or SIGTERM "
        "(announcing 'stopped' to the trackers). PATH is only ever read.",
    )
    seed.add_argument("source", metavar="SOURCE", help="a .torrent file")
    seed.add_argument("path", metavar="PATH", type=Path, help="the data the torrent describes")
    add_network_options(seed, magnets=False)
    seed.set_defaults(handler=cmd_seed)

    add = sub.add_parser(
        "add",
        help="add a torrent to a mounted library",
        description="Add SOURCE to the library mounted at MOUNTPOINT (a folder named after "
        "the torrent appears); prints one line. For a magnet, waits for its metadata.",
    )
    add.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    add.add_argument("source", metavar="SOURCE", help="a .torrent file or a magnet URI")
    add.set_defaults(handler=cmd_add)

    remove = sub.add_parser(
        "remove",
        help="remove a torrent from a mounted library",
        description="Take a torrent out of the library mounted at MOUNTPOINT: its folder "
        "goes at once, its session stops once its open files are closed, and its cache is "
        "deleted (unless the mount keeps it); prints one line.",
    )
    remove.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    remove.add_argument("name", metavar="NAME|INFOHASH")
    remove.set_defaults(handler=cmd_remove)

    unmount = sub.add_parser(
        "unmount",
        help="unmount a btfs mount and stop its process",
        description="Unmount MOUNTPOINT: waiting reads fail, the process announces 'stopped' "
        "and exits; returns once the mount is gone.",
    )
    unmount.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    unmount.set_defaults(handler=cmd_unmount)

    status = sub.add_parser(
        "status",
        help="show a mount's progress, peers and rates",
        description="Per torrent and per file: progress, pieces, pieces that reads wait on "
        "and, for the torrent, peers and rates. Without MOUNTPOINT: every btfs mount. "
        "--json prints a list with one object per mount.",
    )
    status.add_argument("mountpoints", metavar="MOUNTPOINT", type=Path, nargs="*")
    status.add_argument("--json", action="store_true", help="print JSON for programs")
    status.set_defaults(handler=cmd_status)

    units = sub.add_parser(
        "install-units",
        help="install the systemd units and example configuration",
        description="Write btfs@.service and btfs-tracker.service to PREFIX/etc/systemd/system "
        "(their ExecStart pointing at this installation's commands), the examples to "
        "PREFIX/etc/btfs/, and /etc/default/btfs-tracker if it does not exist. "
        "Then run 'systemctl daemon-reload'.",
    )
    units.add_argument("--prefix", type=Path, default=Path("/"),
                       help="install under this root instead of / (for packaging)")
    units.set_defaults(handler=cmd_install_units)
    return parser


def add_network_options(parser: argparse.ArgumentParser, *, magnets: bool = True) -> None:
    net = parser.add_argument_group("network")
    net.add_argument("--peer", metavar="HOST:PORT", action="append", default=[],
                     dest="peers", type=peer_argument,
                     help="connect to this peer too ([IPv6]:PORT for IPv6); repeatable")
    net.add_argument("--bind", metavar="ADDR",
                     help="listen on, and connect from, this address (default: all)")
    net.add_argument("--port", metavar="N", type=port_argument, default=0,
                     help="port to listen on for peers (default 0: any free port)")
    net.add_argument("--max-download-rate", metavar="RATE", type=size_argument, default=0,
                     help="bytes per second, with K/M suffixes (default: unlimited)")
    net.add_argument("--max-upload-rate", metavar="RATE", type=size_argument, default=0,
                     help="bytes per second, with K/M suffixes (default: unlimited)")
    net.add_argument("--max-peers", metavar="N", type=positive_int, default=60,
                     help="most peer connections at once (default 60)")
    net.add_argument("--no-trackers", action="store_true",
                     help="do not announce to the torrent's trackers (use --peer)")
    net.add_argument("--no-dht", action="store_true",
                     help="do not use the DHT to find peers (private torrents never do)")
    net.add_argument("--dht-bootstrap", metavar="HOST:PORT", action="append", default=[],
                     type=dht_node_argument,
                     help="join the DHT through this node; repeatable (default: the public "
                     "routers, or $BTFS_DHT_ROUTERS, plus the nodes of the last run)")
    if magnets:
        net.add_argument("--metadata-timeout", metavar="SECONDS", type=positive_int,
                         default=DEFAULT_METADATA_TIMEOUT,
                         help="for a magnet: give up when no peer gave the torrent's metadata "
                         f"within this time (default {DEFAULT_METADATA_TIMEOUT})")
    net.add_argument("--no-lsd", action="store_true",
                     help="do not announce on, or listen to, the local network (BEP 14)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens to standard error (-vv: more)")


def network_options(args: argparse.Namespace) -> SwarmConfig:
    """The swarm's settings from the network options every networked command shares."""
    from btfs.dht.service import default_state_path
    from btfs.swarm import SwarmConfig

    return SwarmConfig(
        peers=list(args.peers),
        bind=args.bind,
        port=args.port,
        max_download_rate=args.max_download_rate,
        max_upload_rate=args.max_upload_rate,
        trackers=not args.no_trackers,
        max_peers=args.max_peers,
        dht=not args.no_dht,
        dht_routers=list(args.dht_bootstrap) or None,
        dht_state=default_state_path(),
        lsd=not args.no_lsd,
    )


def dht_node_argument(text: str) -> str:
    from btfs.dht.service import split_host_port

    try:
        split_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def configure_logging(verbosity: int) -> None:
    from btfs.logsetup import configure_terminal

    configure_terminal(verbosity)


def peer_argument(text: str) -> tuple[str, int]:
    try:
        return parse_peer(text)
    except BtfsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except BtfsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_source(source: str) -> Metainfo | Magnet:
    """A .torrent path, '-' for a .torrent on standard input, a magnet URI, or the
    http(s) URL of a .torrent."""
    if is_magnet(source):
        return parse_magnet(source)
    from btfs.torrenturl import fetch_torrent, is_url

    if is_url(source):
        return fetch_torrent(source)
    if source == "-":
        data = sys.stdin.buffer.read(MAX_TORRENT_FILE_SIZE + 1)
        if len(data) > MAX_TORRENT_FILE_SIZE:
            raise MetainfoError(f"standard input: larger than {MAX_TORRENT_FILE_SIZE} bytes, "
                                "not a torrent")
        return parse_torrent(data)
    return load_torrent(source)


def cmd_info(args: argparse.Namespace) -> int:
    from btfs.describe import describe, render_text

    d = describe(load_source(args.source))
    if args.json:
        print(json.dumps(d, indent=2, ensure_ascii=False))
    else:
        print(render_text(d))
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    tiers = [[u.strip() for u in flag.split(",") if u.strip()] for flag in args.tracker]
    from btfs.create import CreateOptions, make_torrent

    options = CreateOptions(
        trackers=[t for t in tiers if t],
        web_seeds=args.web_seed,
        private=args.private,
        comment=args.comment,
        piece_length=args.piece_length,
    )
    if args.no_date:
        options.creation_date = None
    out = args.output
    if out is None:
        name = args.path.resolve().name if args.path.name in ("", ".", "..") else args.path.name
        out = f"{name}.torrent"
    if out != "-" and os.path.exists(out) and not args.force:
        raise BtfsError(f"{out} already exists (use --force to overwrite)")
    if out != "-":
        check_output_folder(Path(out))

    bar: ProgressBar | None = None

    def start(total: int) -> None:
        nonlocal bar
        if not args.quiet and total >= PROGRESS_MIN_BYTES:
            bar = ProgressBar("Hashing", total)

    def progress(done: int) -> None:
        if bar is not None:
            bar.update(done)

    data = make_torrent(args.path, options, on_start=start, on_progress=progress)
    if bar is not None:
        bar.close()
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    _write_atomically(Path(out), data)
    if not args.quiet:
        meta = parse_torrent(data)
        count = meta.info.num_pieces
        print(f"{out}: {meta.info_hash_hex} {count} piece{'' if count == 1 else 's'}")
    return 0


def load_torrent_source(source: str, net: SwarmConfig,
                        timeout: float | None = None) -> Metainfo:
    """The torrent: read from a file, or, for a magnet URI, its metadata fetched from peers."""
    from btfs.transfer import resolve_magnet

    loaded = load_source(source)
    if isinstance(loaded, Magnet):
        return resolve_magnet(loaded, net, timeout)
    return loaded


def cmd_download(args: argparse.Namespace) -> int:
    from btfs.transfer import download

    configure_logging(args.verbose)
    net = network_options(args)
    meta = load_torrent_source(args.source, net, timeout=args.metadata_timeout)
    return download(meta, args.output, net, seed_after=args.seed_after)


def cmd_seed(args: argparse.Namespace) -> int:
    from btfs.transfer import seed

    configure_logging(args.verbose)
    source = load_source(args.source)
    if isinstance(source, Magnet):
        raise BtfsError("seeding needs the .torrent file: a magnet URI does not say what "
                        "the data should be")
    return seed(source, args.path, network_options(args))


def cmd_mount(args: argparse.Namespace) -> int:
    from btfs.mount import MountOptions, mount
    from btfs.mount_options import apply_mount_options, read_token_file, set_http

    options = MountOptions(
        mountpoint=args.mountpoint,
        foreground=args.foreground,
        cache_dir=args.cache_dir,
        keep=args.keep,
        watch=args.watch,
        cache_size=args.cache_size,
        readahead=args.readahead,
        allow_other=args.allow_other,
        log_file=args.log_file,
        network=network_options(args),
        verbose=args.verbose,
        quiet=args.quiet,
    )
    options.network.lazy = args.lazy
    if args.http is not None:
        set_http(options, address=args.http)
    if args.http_token is not None:
        set_http(options, token=args.http_token)
    if args.http_token_file is not None:
        set_http(options, token=read_token_file(args.http_token_file))
    for group in args.options:
        apply_mount_options(options, group)
    sources = list(args.sources)
    if options.watch is not None and sources in ([str(options.watch)], ["none"], ["library"]):
        sources = []  # the mount helper's SOURCE field of a watched library (fstab)
    if not sources and options.watch is None:
        raise BtfsError("mount needs a SOURCE, several, or --watch DIR")
    options.metadata_timeout = options.metadata_timeout or args.metadata_timeout
    if len(sources) == 1 and options.watch is None and is_magnet(sources[0]):
        # fetched by the mount itself, live meanwhile (btfs status shows how it goes)
        return mount([load_source(sources[0])], options)
    metas: list[Metainfo | Magnet] = [
        load_torrent_source(source, options.network, timeout=options.metadata_timeout)
        for source in sources]
    return mount(metas, options)


def cmd_add(args: argparse.Namespace) -> int:
    from btfs.controlclient import add_request, ask

    print(ask(args.mountpoint, add_request(args.source))["message"])
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from btfs.controlclient import ask

    print(ask(args.mountpoint, {"op": "remove", "name": args.name})["message"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from btfs.controlclient import library_status, render_library
    from btfs.status import btfs_mounts, collect, render, render_failed

    if args.mountpoints:
        results = [library_status(path) or collect(path) for path in args.mountpoints]
    else:
        # every mount, each on its own: one whose btfs died (or answers with an error)
        # is reported as such, and the others are still shown
        targets = btfs_mounts()
        if not targets:
            raise BtfsError("no btfs mounts")
        results = []
        for path in targets:
            try:
                results.append(library_status(path) or collect(path))
            except (BtfsError, OSError) as exc:
                cause = exc.__cause__ if isinstance(exc, BtfsError) else exc
                reason = (cause.strerror if isinstance(cause, OSError) and cause.strerror
                          else str(exc))
                results.append({"mountpoint": str(path), "error": reason})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(render_failed(r) if "error" in r
                        else render_library(r) if "torrents" in r else render(r)
                        for r in results))
    return 1 if any("error" in r for r in results) else 0


def cmd_install_units(args: argparse.Namespace) -> int:
    from btfs.install_units import install_units

    for item in install_units(args.prefix):
        print(f"{'replaced' if item.replaced else 'installed'} {item.path}")
    if args.prefix == Path("/"):
        print("now run: systemctl daemon-reload")
    return 0


def cmd_unmount(args: argparse.Namespace) -> int:
    from btfs.mount import unmount

    return unmount(args.mountpoint)


def check_output_folder(path: Path) -> None:
    """Before any hashing: refuse an output whose folder is missing (naming the user's
    path, not the temporary file that would be made beside it)."""
    folder = path.parent
    if not folder.exists():
        raise BtfsError(f"cannot write {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise BtfsError(f"cannot write {path}: {folder} is not a folder")


def _write_atomically(path: Path, data: bytes) -> None:
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


COMMANDS = {"create", "info", "mount", "unmount", "status", "install-units", "download", "seed",
            "add", "remove"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] not in COMMANDS and not arguments[0].startswith("-"):
        arguments.insert(0, "mount")  # the mount-helper form: btfs SOURCE MOUNTPOINT -o ...
    args = parser.parse_args(arguments)
    try:
        return int(args.handler(args))
    except Unavailable as exc:
        print(f"btfs: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BtfsError as exc:
        print(f"btfs: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as exc:
        print(f"btfs: error: {exc.filename + ': ' if exc.filename else ''}"
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
