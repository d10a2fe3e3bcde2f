#!/bin/sh
# Generate what a system install adds beside the commands, from their argument parsers:
#   OUTDIR/man/btfs.1, OUTDIR/man/btfs-tracker.1          (argparse-manpage, + *.include)
#   OUTDIR/bash-completion/btfs, .../btfs-tracker          (btfs.completion)
# Usage: packaging/build.sh OUTDIR [PYTHON]   (PYTHON: the one btfs is installed for)
set -eu
out=$(mkdir -p "$1" && cd "$1" && pwd)
python=${2:-python3}
here=$(cd "$(dirname "$0")" && pwd)
# Run from the source tree, so that its parsers are the ones described.
cd "$here/.."
version=$("$python" -c 'import btfs; print(btfs.__version__)')
mkdir -p "$out/man" "$out/bash-completion"
manpage() {  # manpage PROG MODULE DESCRIPTION
    "$python" -c 'import sys; from argparse_manpage.cli import main
sys.argv[0] = "argparse-manpage"; sys.exit(main())' --module "$2" --function build_parser \
        --prog "$1" --project-name btfs --version "$version" --description "$3" \
        --manual-title "btfs manual" --include "$here/$1.include" --output "$out/man/$1.1"
    # argparse-manpage wraps help text as is: a line it starts with ' or with a dot
    # not followed by a macro name would be a roff control line; \& keeps it text.
    sed -i -e "s/^'/\\\\\\&'/" -e 's/^\.\([^A-Za-z]\)/\\\&.\1/' "$out/man/$1.1"
}
manpage btfs btfs.cli "mount torrents as read-only filesystems that stream from the swarm"
manpage btfs-tracker tracker.cli "a BitTorrent tracker (HTTP and UDP)"
"$python" -m btfs.completion > "$out/bash-completion/btfs"
"$python" -c 'import sys
from btfs.completion import bash_completion
from tracker.cli import build_parser
sys.stdout.write(bash_completion(build_parser(), "btfs-tracker"))' > "$out/bash-completion/btfs-tracker"
