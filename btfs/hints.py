"""Where users commonly go wrong, and the error that puts them right.

Users of Transmission and aria2 pass the folder that *holds* a torrent's data (`share`)
where btfs wants the data itself (`share/Movie`); this module recognises that case and
says "did you mean share/Movie?" instead of checking the wrong files.
"""

from __future__ import annotations

from pathlib import Path

from btfs.errors import BtfsError
from btfs.metainfo import Info, fit_name
from btfs.storage import named_paths


def _holds_the_data(info: Info, path: Path) -> bool:
    """Whether `path` looks like the torrent's file or top folder: the right kind, and
    (for a folder) at least one of the torrent's files is in it."""
    if not info.multi_file:
        return path.is_file()
    if not path.is_dir():
        return False
    try:
        return any(p is not None and p.is_file() for p in named_paths(info, path))
    except OSError:  # e.g. a path past PATH_MAX: the seed reads it by parts; not ours to judge
        return True


def check_seed_path(info: Info, path: Path) -> None:
    """Refuse a PATH that cannot be the torrent's data, with a hint when its child
    named after the torrent can."""
    if not path.exists() and not path.is_symlink():
        raise BtfsError(f"{path} does not exist")
    if _holds_the_data(info, path):
        return
    inside = path / fit_name(info.name)
    hint = f"; did you mean {inside}?" if path.is_dir() and _holds_the_data(info, inside) else ""
    if info.multi_file and not path.is_dir():
        raise BtfsError(f"{path} is not a folder, but the torrent holds several files{hint}")
    if not info.multi_file and path.is_dir():
        raise BtfsError(f"{path} is a folder, but the torrent holds a single file{hint}")
    if hint:
        raise BtfsError(f"{path} holds none of the torrent's files{hint}")
