"""`btfs install-units`: put the systemd units and example configuration in place.

The units in the source tree name `/usr/local/bin/btfs` and `/usr/local/bin/btfs-tracker`
(where ./setup.sh links the commands); installed from elsewhere, the ExecStart lines are
rewritten to the commands this btfs runs as, so the units start this very installation.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from btfs.errors import BtfsError

UNIT_FILES = ("btfs@.service", "btfs-tracker.service")
CONFIG_EXAMPLES = {"btfs-mount.conf.example": "etc/btfs/example.conf.example",
                   "fstab.example": "etc/btfs/fstab.example",
                   "btfs-tracker.default": "etc/default/btfs-tracker"}


@dataclass(frozen=True)
class Installed:
    path: Path
    replaced: bool


def units_source() -> Path:
    """The folder holding the shipped units: the source tree, or the installed data."""
    candidates = [Path(__file__).resolve().parent.parent / "systemd",
                  Path(sys.prefix) / "share" / "btfs" / "systemd"]
    for folder in candidates:
        if (folder / "btfs@.service").exists():
            return folder
    raise BtfsError("cannot find the systemd unit files of this installation")


def command_path(name: str) -> str:
    """Absolute path of one of our commands beside the running interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BtfsError(f"cannot find the {name} command")
    return found


def install_units(prefix: Path, overwrite_config: bool = False) -> list[Installed]:
    """Write the units to PREFIX/etc/systemd/system and the examples under PREFIX/etc."""
    source = units_source()
    done: list[Installed] = []
    unit_dir = prefix / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for name in UNIT_FILES:
        src = source / name
        if not src.exists():
            continue
        text = src.read_text()
        text = text.replace("/usr/local/bin/btfs-tracker", command_path("btfs-tracker"))
        text = text.replace("/usr/local/bin/btfs ", command_path("btfs") + " ")
        target = unit_dir / name
        done.append(Installed(target, target.exists()))
        target.write_text(text)
        target.chmod(0o644)
    for name, rel in CONFIG_EXAMPLES.items():
        src = source / name
        target = prefix / rel
        if not src.exists():
            continue
        if target.exists() and not overwrite_config and not name.endswith(".example"):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        done.append(Installed(target, target.exists()))
        shutil.copyfile(src, target)
    return done
