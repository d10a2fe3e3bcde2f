"""`mount.fuse.btfs`: what mount(8) runs for the filesystem type `fuse.btfs`.

mount(8) looks for `/sbin/mount.fuse.btfs` before the generic `mount.fuse3`, which would
run whichever `btfs` comes first on its PATH (Debian's own btfs package is `/usr/bin/btfs`
and uses the same type). Installed as a link to this installation's script, it makes
`mount -t fuse.btfs` and /etc/fstab use this btfs whatever PATH says.

mount(8) calls it as `mount.fuse.btfs SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS]
[-t TYPE]`; it becomes `btfs mount SPEC DIR -o OPTIONS -q` (quiet, as mount helpers are).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from btfs.errors import BtfsError


def mount_arguments(argv: Sequence[str]) -> list[str] | None:
    """The `btfs` arguments for mount(8)'s; None for a fake mount (`-f`: do nothing)."""
    positional: list[str] = []
    options: list[str] = []
    fake = False
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-o", "-t", "-N"):
            if i + 1 >= len(words):
                raise BtfsError(f"mount.fuse.btfs: {word} needs a value")
            if word == "-o":
                options.append(words[i + 1])
            elif word == "-N":
                raise BtfsError("mount.fuse.btfs: -N (another mount namespace) is not "
                                "supported")
            i += 2
            continue
        if word.startswith("-o") and len(word) > 2:
            options.append(word[2:])
        elif word.startswith("-") and len(word) > 1:
            unknown = set(word[1:]) - set("sfnvr")
            if unknown:
                raise BtfsError(f"mount.fuse.btfs: unknown flag {word}")
            fake = fake or "f" in word
            if "r" in word:
                options.append("ro")
        else:
            positional.append(word)
        i += 1
    if len(positional) != 2:
        raise BtfsError("mount.fuse.btfs: usage: mount.fuse.btfs SOURCE MOUNTPOINT "
                        "[-o OPTIONS]")
    if fake:
        return None
    source, mountpoint = positional
    return ["mount", source, mountpoint, *(f for o in options for f in ("-o", o)), "-q"]


def main(argv: Sequence[str] | None = None) -> int:
    from btfs.cli import EXIT_BAD_INPUT
    from btfs.cli import main as btfs_main

    try:
        arguments = mount_arguments(sys.argv[1:] if argv is None else argv)
    except BtfsError as exc:
        print(f"btfs: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if arguments is None:
        return 0
    return btfs_main(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
