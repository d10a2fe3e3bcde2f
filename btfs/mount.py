"""`btfs mount` and `btfs unmount`: checks, going to the background, the mount's lifetime.

The command returns only once the mount is live (the background process reports over a
pipe), so `mount` and scripts can use the files at once. Shutdown, whatever starts it
(`btfs unmount`, `fusermount3 -u`, `umount`, SIGINT, SIGTERM), fails the reads still
waiting for pieces with EIO first, so the process always exits and never hangs.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from btfs.cachelock import LOCK_NAME, lock_folder, note_owner, remove_stale_locks
from btfs.errors import BtfsError, first_leaf
from btfs.http.options import HttpOptions
from btfs.library import MAGNET_TIMEOUT, Entry, Library, LibraryOptions, default_cache_dir
from btfs.logsetup import configure_mount, default_log_file
from btfs.magnet import Magnet
from btfs.metainfo import Metainfo
from btfs.sdnotify import notify
from btfs.swarm import SwarmConfig

if TYPE_CHECKING:
    from btfs.fs import TorrentFS

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 2.0
MOUNT_POLL_INTERVAL = 0.5


class MountError(BtfsError):
    """The mount cannot be made (mount point, FUSE, options)."""


@dataclass
class MountOptions:
    mountpoint: Path
    foreground: bool = False
    cache_dir: Path | None = None
    keep: bool = False
    readahead: int = 8 << 20
    allow_other: bool = False
    allow_root: bool = False
    fuse_options: list[str] = field(default_factory=list)
    network: SwarmConfig = field(default_factory=SwarmConfig)  # peers, rates, --lazy...
    log_file: Path | None = None
    verbose: int = 0
    metadata_timeout: int = 0        # -o metadata_timeout=; 0: the command line's
    lock_fds: dict[bytes, int] = field(default_factory=dict)  # cache folders locked up front
    watch: Path | None = None  # a library of every .torrent and .magnet file in this folder
    cache_size: int = 0  # bytes; 0: the cache keeps everything
    library: bool = False  # a folder per torrent (several sources, or a watched folder)
    http: HttpOptions | None = None  # --http: serve the files over HTTP too
    quiet: bool = False  # no line on success
    log_where: str = ""  # where the log goes (for `btfs status`), set by logging's set-up


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "btfs"


def mount_table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process can see."""
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 4 and right:
                entries.append((_unescape(fields[4]), right.split()[0]))
    return entries


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def find_mount(path: Path) -> str | None:
    """The filesystem type mounted exactly at `path`, or None."""
    target = os.path.abspath(path)
    found = None
    for point, fstype in mount_table():
        if point == target:
            found = fstype
    return found


def check_fuse_available() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: this kernel or container has no FUSE")
    if shutil.which("fusermount3") is None:
        raise MountError("fusermount3 not found: install it with 'apt-get install fuse3'")
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        raise MountError(f"pyfuse3 cannot be imported ({exc}): reinstall btfs") from exc


def check_mountpoint(path: Path) -> Path:
    """The absolute mount point, after refusing every kind of unusable one."""
    absolute = Path(os.path.abspath(path))
    fstype = find_mount(absolute)
    if fstype == "fuse.btfs":
        raise MountError(f"{path} is already a btfs mount (unmount it with 'btfs unmount')")
    if fstype is not None:
        raise MountError(f"{path} is already a mount point ({fstype})")
    try:
        st = absolute.stat()
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as exc:
        raise MountError(f"mount point {path}: {exc.strerror}") from None
    if not os.path.isdir(absolute):
        raise MountError(f"mount point {path} is not a directory")
    if any(absolute.iterdir()):
        raise MountError(f"mount point {path} is not empty")
    if not os.access(absolute, os.W_OK) and st.st_uid != os.getuid() and os.getuid() != 0:
        raise MountError(f"mount point {path} is not yours to mount on")
    return absolute


def fsname(name: str) -> str:
    """The torrent's name as the mount's source in /proc/mounts (`fsname=`): FUSE splits
    options at commas and the mount table at white space, so those are replaced."""
    cleaned = "".join("_" if ch in ",\\" or ch.isspace() or not ch.isprintable() else ch
                      for ch in name)
    return cleaned[:200] or "btfs"


def fuse_mount_options(options: MountOptions, name: str = "btfs") -> set[str]:
    result = {"subtype=btfs", "ro", "default_permissions"}
    if not any(o.startswith("fsname=") for o in options.fuse_options):
        result.add(f"fsname={fsname(name)}")
    if options.allow_other:
        result.add("allow_other")
    if options.allow_root:
        result.add("allow_root")
    result.update(options.fuse_options)
    return result


def mount(sources: list[Metainfo | Magnet], options: MountOptions) -> int:
    """Mount one torrent (its files at the top) or a library (several sources, or a
    watched folder: a folder per torrent); in the background unless `foreground`.
    Returns the exit status."""
    check_fuse_available()
    if options.watch is not None:
        if not options.watch.is_dir():
            raise MountError(f"--watch {options.watch}: not a folder")
        options.watch = Path(os.path.abspath(options.watch))
    if options.http is not None:
        options.http.check()
    options.mountpoint = check_mountpoint(options.mountpoint)
    library = options.library = options.watch is not None or len(sources) != 1
    seen: set[bytes] = set()
    for meta in sources:
        if meta.info_hash in seen:
            raise MountError(f"{source_name(meta)} ({meta.info_hash_hex}) is given twice")
        seen.add(meta.info_hash)
        if not library:
            folder = options.cache_dir or default_cache_dir(meta.info_hash_hex)
        else:
            folder = (options.cache_dir / meta.info_hash_hex if options.cache_dir
                      else default_cache_dir(meta.info_hash_hex))
        options.lock_fds[meta.info_hash] = lock_folder(folder, what="--cache-dir")
    if options.foreground:
        options.log_where = configure_mount(options.log_file, True, options.verbose)
        return _serve_and_report(sources, options, ready=lambda: None)
    if options.log_file is None:
        options.log_file = default_mount_log(sources, options)
        try:
            options.log_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MountError(f"cannot make the log's folder {options.log_file.parent}: "
                             f"{exc.strerror}") from None
    return _daemonize(sources, options)


def default_mount_log(sources: list[Metainfo | Magnet], options: MountOptions) -> Path:
    """A single torrent's mount logs into its cache folder (removed with it unless
    --keep); a library into the cache root, one file per mount point."""
    if not options.library:
        meta = sources[0]
        return default_log_file(options.cache_dir or default_cache_dir(meta.info_hash_hex))
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in options.mountpoint.name)
    return (options.cache_dir or cache_root()) / f"btfs-library-{name}.log"


def source_name(source: Metainfo | Magnet) -> str:
    if isinstance(source, Magnet):
        return source.display_name or source.info_hash_hex
    return source.name


def success_line(sources: list[Metainfo | Magnet], options: MountOptions) -> str:
    """What `btfs mount` prints once the mount is live: what, where, how to watch it and
    how to unmount it."""
    where = options.mountpoint
    what = (source_name(sources[0]) if not options.library else
            f"a library of {len(sources)} torrent{'' if len(sources) == 1 else 's'}"
            + (f" watching {options.watch}" if options.watch is not None else ""))
    return (f"btfs: mounted {what} at {where} (log: {options.log_file}); "
            f"watch it with 'btfs status {where}', unmount it with 'btfs unmount {where}'")


def _daemonize(meta: list[Metainfo | Magnet], options: MountOptions) -> int:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        if not options.library and isinstance(meta[0], Magnet) and not options.quiet:
            print(f"btfs: fetching the metadata of {source_name(meta[0])} from peers; "
                  f"'btfs status {options.mountpoint}' shows how it goes", file=sys.stderr,
                  flush=True)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message == "ok":
            if not options.quiet:
                print(success_line(meta, options), flush=True)
            return 0
        if message:
            print(f"btfs: error: {message}", file=sys.stderr)
        else:
            _, status = os.waitpid(pid, 0)
            print(f"btfs: error: the mount process ended before the mount was live "
                  f"(status {os.waitstatus_to_exitcode(status)})", file=sys.stderr)
        return 1
    # The child: its own session, no terminal, reports readiness or the error on the pipe.
    os.close(read_end)
    os.setsid()
    for fd in options.lock_fds.values():
        note_owner(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    options.log_where = configure_mount(
        options.log_file, False, options.verbose,
        rotate=options.log_file == default_mount_log(meta, options))
    reported = False

    def ready() -> None:
        nonlocal reported
        os.write(write_end, b"ok")
        os.close(write_end)
        reported = True

    try:
        status = _serve_and_report(meta, options, ready, error_pipe=write_end)
    finally:
        if not reported:
            try:
                os.close(write_end)
            except OSError:
                pass
    os._exit(status)


def _serve_and_report(
    meta: list[Metainfo | Magnet], options: MountOptions, ready: Callable[[], None],
    error_pipe: int = -1,
) -> int:
    try:
        trio.run(serve, meta, options, ready)
    except BaseException as raised:  # reported (and logged), then the process ends
        exc = first_leaf(raised)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            return 1
        if isinstance(exc, BtfsError | OSError):
            message = str(exc) if isinstance(exc, BtfsError) else (
                f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        else:
            log.error("internal error", exc_info=exc)
            message = f"internal error: {exc!r}"
        if error_pipe >= 0:
            log.error("%s", message)
            try:
                os.write(error_pipe, message.encode())
            except OSError:
                pass
        else:
            print(f"btfs: error: {message}", file=sys.stderr)
        return 1
    return 0


async def serve(sources: list[Metainfo | Magnet], options: MountOptions,
                ready: Callable[[], None]) -> None:
    """Run the mount and its torrents until it is unmounted or the process is told to stop."""
    import pyfuse3

    from btfs.fs import TorrentFS

    flat = not options.library
    library = Library(LibraryOptions(
        cache_root=options.cache_dir, keep=options.keep, readahead=options.readahead,
        network=options.network, cache_size=options.cache_size, flat=flat,
        metadata_timeout=options.metadata_timeout or MAGNET_TIMEOUT,
        log_where=options.log_where))
    library.locks = dict(options.lock_fds)
    was_live = failed = False

    def live() -> None:
        nonlocal was_live
        was_live = True
        ready()

    # A mount of one magnet is live while its metadata is fetched (empty, its status in
    # the root's xattrs); the command returns once the files are there, or fails.
    pending = sources[0] if flat and isinstance(sources[0], Magnet) else None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(library.run)
            if pending is not None:
                fs = TorrentFS([])
                shown_name = source_name(pending)
            else:
                for meta in sources:
                    await library.add(meta)
                if flat:
                    entry = next(iter(library.entries.values()))
                    fs = TorrentFS([(entry.torrent, entry.meta.creation_date)])
                    shown_name = entry.meta.name
                else:
                    fs = TorrentFS([])
                    shown_name = "btfs-library"
            library.view = FolderView(fs, library, flat)
            if options.http is not None:
                from btfs.http.librarycatalog import LibraryCatalog
                from btfs.http.server import serve_http

                await nursery.start(serve_http, LibraryCatalog(library), options.http)
            try:
                pyfuse3.init(fs, str(options.mountpoint), fuse_mount_options(options, shown_name))
            except RuntimeError as exc:
                raise MountError(f"cannot mount on {options.mountpoint}: {exc}") from exc
            fs.mounted = True

            async def resolve(magnet: Magnet) -> None:
                await library.add(magnet)
                live()

            if pending is not None:
                nursery.start_soon(resolve, pending)
            try:
                await _run_mounted(library, fs, options,
                                   live if pending is None else lambda: None)
            finally:
                pyfuse3.close(unmount=True)
                nursery.cancel_scope.cancel()
    except BaseException:
        failed = True
        raise
    finally:
        for meta in sources:  # locked, never opened (a failed start): leave no trace
            fd = library.locks.pop(meta.info_hash, -1)
            if fd >= 0:
                if not options.keep:
                    _remove_lock_folder(library.cache_dir(meta))
                os.close(fd)
        await library.close()
        if not options.keep and options.log_file is not None \
                and options.log_file == default_mount_log(sources, options) \
                and not (failed and was_live):
            # The default log goes with the cache, unless the mount failed once live:
            # then no one was told why but the log.
            for path in (options.log_file, options.log_file.with_name(
                    options.log_file.name + ".1")):
                path.unlink(missing_ok=True)
            if flat:
                try:
                    options.log_file.parent.rmdir()
                except OSError:
                    pass
        notify("STOPPING=1")


def _remove_lock_folder(folder: Path) -> None:
    try:
        (folder / LOCK_NAME).unlink()
        folder.rmdir()
    except OSError:
        pass


class FolderView:
    """Shows a library's torrents in the filesystem, each as a folder of the root (a flat
    mount's one torrent is the root itself); the root's xattrs name the control socket."""

    def __init__(self, fs: TorrentFS, library: Library, flat: bool) -> None:
        self.fs = fs
        self.library = library
        self._entries: dict[int, Entry] = {}
        fs.on_released = self._released
        fs.root_attributes = self._root_attributes
        if not flat:
            for entry in library.entries.values():
                self.show(entry)

    def show(self, entry: Entry) -> None:
        self._entries[id(entry.torrent)] = entry
        if self.library.options.flat:  # a magnet's torrent, once its metadata came
            self.fs.show_at_root(entry.torrent, entry.meta.creation_date)
        else:
            self.fs.add_folder(entry.torrent, entry.name, entry.meta.creation_date)

    def hide(self, entry: Entry) -> bool:
        released = self.fs.remove_folder(entry.torrent)
        if released:
            self._entries.pop(id(entry.torrent), None)
        return released

    def _released(self, source: object) -> None:
        entry = self._entries.pop(id(source), None)
        if entry is not None:
            self.library.released(entry)

    def _root_attributes(self) -> dict[str, str]:
        from btfs.control import socket_path

        values = {"control": str(socket_path())}
        for magnet, search in self.library.searches.values():
            values["info_hash"] = magnet.info_hash_hex
            values["resolving"] = search.summary()
            if magnet.display_name:
                values["name"] = magnet.display_name
        if not self.library.options.flat:
            values["torrents"] = str(len(self.library.entries))
            values["listen_port"] = str(self.library.shared.port)
        return values


async def _run_mounted(library: Library, fs: TorrentFS, options: MountOptions,
                       ready: Callable[[], None]) -> None:
    import pyfuse3 as fuse

    from btfs.control import serve_control

    mountpoint = options.mountpoint
    stop = trio.Event()

    async def watch_mount_table() -> None:
        """A lazy unmount (`umount -l`, `fusermount3 -u -z`) detaches the mount but keeps
        the FUSE connection while files are open; noticing it is how we still exit."""
        while not stop.is_set():
            await trio.sleep(MOUNT_POLL_INTERVAL)
            if find_mount(mountpoint) != "fuse.btfs":
                log.info("%s was unmounted", mountpoint)
                stop.set()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("signal %s: unmounting", signal.Signals(signum).name)
                stop.set()
                return

    async def stopper(cancel_scope: trio.CancelScope) -> None:
        await stop.wait()
        library.close_torrents()
        with trio.move_on_after(SHUTDOWN_GRACE):
            await fs.reads_answered()
        fuse.terminate()
        await trio.sleep(SHUTDOWN_GRACE)
        log.warning("FUSE handlers still busy after %s s: cancelling them", SHUTDOWN_GRACE)
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        nursery.start_soon(watch_mount_table)
        nursery.start_soon(stopper, nursery.cancel_scope)
        await nursery.start(serve_control, library)
        if options.watch is not None:
            from btfs.watch import watch_folder

            await nursery.start(watch_folder, library, options.watch)
        ready()
        notify("READY=1")
        log.info("mounted %s", ", ".join(e.meta.name for e in library.entries.values())
                 or f"an empty library watching {options.watch}")
        await fuse.main()
        library.close_torrents()
        nursery.cancel_scope.cancel()


def unmount(mountpoint: Path, timeout: float = 10.0, exit_timeout: float = 60.0) -> int:
    """Stop the btfs process behind a mount; wait until the mount is gone and then until
    the process has exited (it may still be tidying its cache), at most `exit_timeout` s."""
    absolute = Path(os.path.abspath(mountpoint))
    fstype = find_mount(absolute)
    if fstype is None:
        raise MountError(f"{mountpoint} is not mounted")
    if fstype != "fuse.btfs":
        raise MountError(f"{mountpoint} is not a btfs mount ({fstype})")
    pid = None
    try:
        pid = int(os.getxattr(absolute, "user.btfs.pid"))
    except (OSError, ValueError):
        pass
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    if pid is None:  # the process is gone (its files answer ENOTCONN)
        _fusermount(absolute, lazy=False) or _fusermount(absolute, lazy=True)
        remove_stale_locks(cache_root())
    deadline = time.monotonic() + timeout
    while find_mount(absolute) is not None:
        if time.monotonic() > deadline:
            if _fusermount(absolute, lazy=True):
                break
            raise MountError(f"{mountpoint} is still mounted after {timeout:.0f} s")
        time.sleep(0.05)
    deadline = time.monotonic() + exit_timeout
    while pid is not None and _running(pid):
        if time.monotonic() > deadline:
            print(f"btfs: warning: {mountpoint} is unmounted but its process {pid} is still "
                  f"running after {exit_timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    return 0


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _fusermount(path: Path, lazy: bool) -> bool:
    import subprocess

    args = ["fusermount3", "-u", *(["-z"] if lazy else []), str(path)]
    result = subprocess.run(args, capture_output=True, timeout=30, check=False)
    if result.returncode != 0 and result.stderr:
        log.debug("%s: %s", " ".join(args), result.stderr.decode(errors="replace").strip())
    return result.returncode == 0
