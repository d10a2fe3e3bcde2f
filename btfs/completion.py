"""A bash completion script generated from an argparse parser (no runtime dependency, and
no start-up of Python at each Tab): subcommands, each one's options, the choices of an
option that has them, file names for option values and arguments, and the btfs mounts
(from /proc/mounts) for the arguments named MOUNTPOINT of `unmount` and `status`.

`python -m btfs.completion` prints the script for `btfs`; packaging/build.sh writes it
(and btfs-tracker's) where bash-completion finds it.
"""

from __future__ import annotations

import argparse
import re
import sys

MOUNTED_COMMANDS = frozenset({"unmount", "status"})  # their arguments are btfs mounts
_SAFE = re.compile(r"[A-Za-z0-9_.:@%+=/-]+")


def _word(text: str) -> str:
    if _SAFE.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


FILE_METAVARS = frozenset({"FILE", "DIR", "PATH", "SOURCE", "MOUNTPOINT"})
FILES = 'compopt -o filenames; COMPREPLY=($(compgen -f -- "$cur")); return ;;'
NOTHING = "COMPREPLY=(); return ;;"  # a number, an address, a URL: nothing to offer


def _describe(parser: argparse.ArgumentParser) -> tuple[list[str], list[tuple[str, str]]]:
    """(option strings, [(case pattern of options taking a value, what completes it)])."""
    options: list[str] = []
    valued: list[tuple[str, str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
            continue
        options += action.option_strings
        if action.nargs == 0:
            continue
        pattern = "|".join(action.option_strings)
        if action.choices:
            words = _word(" ".join(str(c) for c in action.choices))
            valued.append((pattern, f'COMPREPLY=($(compgen -W {words} -- "$cur")); return ;;'))
        elif str(action.metavar) in FILE_METAVARS:
            valued.append((pattern, FILES))
        else:
            valued.append((pattern, NOTHING))
    return options, valued


def _case_body(parser: argparse.ArgumentParser, indent: str, mounted: bool) -> list[str]:
    options, valued = _describe(parser)
    lines = [f"{indent}opts={_word(' '.join(options))}"]
    if valued:
        lines.append(f'{indent}case "$prev" in')
        lines += [f"{indent}    {pattern}) {action}" for pattern, action in valued]
        lines.append(f"{indent}esac")
    if mounted:
        lines.append(f"{indent}mountpoints=1")
    return lines


def bash_completion(parser: argparse.ArgumentParser, prog: str,
                    mounted: frozenset[str] = frozenset()) -> str:
    """The completion script for the command `prog` whose arguments `parser` parses;
    the arguments of the subcommands in `mounted` are completed with the btfs mounts."""
    name = "_" + re.sub(r"\W", "_", prog)
    commands = _subparsers(parser)
    top_options, _ = _describe(parser)
    out = [
        f"# bash completion for {prog}, generated from its argument parser by",
        "# btfs.completion; do not edit.",
        f"{name}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" opts="" mountpoints="" i',
    ]
    if commands:
        out += [
            '    for ((i = 1; i < COMP_CWORD; i++)); do',
            '        case "${COMP_WORDS[i]}" in -*) ;; *) cmd="${COMP_WORDS[i]}"; break ;; esac',
            "    done",
            '    if [[ -z "$cmd" ]]; then',
            f"        COMPREPLY=($(compgen -W {_word(' '.join([*commands, *top_options]))} "
            '-- "$cur"))',
            "        return",
            "    fi",
            '    case "$cmd" in',
        ]
        for command, sub in commands.items():
            out.append(f"        {command})")
            out += _case_body(sub, " " * 12, command in mounted)
            out.append("            ;;")
        out += ["        *) compopt -o filenames; COMPREPLY=($(compgen -f -- \"$cur\")); "
                "return ;;", "    esac"]
    else:
        out += _case_body(parser, " " * 4, False)
    out += [
        '    if [[ "$cur" == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        '    elif [[ -n "$mountpoints" ]]; then',
        "        local mounts",
        "        mounts=$(awk '$3 == \"fuse.btfs\" {gsub(/\\\\040/, \" \", $2); print $2}' "
        "/proc/mounts 2>/dev/null)",
        "        local IFS=$'\\n'",
        '        COMPREPLY=($(compgen -W "$mounts" -- "$cur"))',
        "    else",
        "        compopt -o filenames",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        f"complete -F {name} {prog}",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    from btfs.cli import build_parser

    sys.stdout.write(bash_completion(build_parser(), "btfs", MOUNTED_COMMANDS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
