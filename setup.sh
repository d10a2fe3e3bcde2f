#!/bin/sh
# Install btfs and everything it and its tests need on Debian 12, then run a first job.
#   as root:  ./setup.sh            install, then make and inspect a demo torrent
#             ./setup.sh --no-demo  install only (what .ci/run uses)
set -eu
cd "$(dirname "$0")"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# fuse3 + libfuse3-dev + pkg-config: pyfuse3 builds against libfuse3 and mounts with fusermount3.
# The others are real peers and tools the tests run against, attr for getfattr, and
# Debian's btfs (C++, libtorrent) and wrk, which bench/stream.py and bench/tracker.py use.
apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev \
    ffmpeg transmission-cli mktorrent aria2 opentracker attr ca-certificates btfs wrk \
    systemd rsync

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

# Put the commands on root's PATH; /usr/local/bin comes before Debian's own /usr/bin/btfs.
for cmd in btfs btfs-tracker; do
    ln -sf "$PWD/.venv/bin/$cmd" "/usr/local/bin/$cmd"
done

if [ "${1:-}" = "--no-demo" ]; then
    exit 0
fi

demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
cp README.md "$demo/README.md"
btfs create "$demo/README.md" -t udp://127.0.0.1:6969 -o "$demo/readme.torrent"
btfs info "$demo/readme.torrent"
