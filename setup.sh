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
# Debian's btfs (C++, libtorrent) and wrk, which bench/stream.py and bench/tracker.py use;
# curl, mpv and chromium (+ chromium-driver, for selenium) are the HTTP streaming tests' clients.
apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev \
    ffmpeg transmission-cli mktorrent aria2 opentracker attr ca-certificates btfs wrk nginx-light \
    redis-server systemd rsync curl mpv chromium chromium-driver man-db groff-base bash-completion

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

# Put the commands on root's PATH; /usr/local/bin comes before Debian's own /usr/bin/btfs.
for cmd in btfs btfs-tracker; do
    ln -sf "$PWD/.venv/bin/$cmd" "/usr/local/bin/$cmd"
done
# mount -t fuse.btfs and /etc/fstab: mount(8) runs /sbin/mount.fuse.btfs before mount.fuse3,
# so this btfs mounts whatever PATH says (Debian's btfs uses the type fuse.btfs too).
ln -sf "$PWD/.venv/bin/mount.fuse.btfs" /usr/sbin/mount.fuse.btfs
# Man pages and bash completion, generated from the argument parsers.
packaging/build.sh build/packaging .venv/bin/python
install -D -m 644 -t /usr/local/share/man/man1 build/packaging/man/btfs.1 \
    build/packaging/man/btfs-tracker.1
install -D -m 644 -t /usr/local/share/bash-completion/completions \
    build/packaging/bash-completion/btfs build/packaging/bash-completion/btfs-tracker
mandb -q 2>/dev/null || true

if [ "${1:-}" = "--no-demo" ]; then
    exit 0
fi

# The main job, end to end on this machine: share a file, seed it, mount the torrent
# elsewhere and read the file back through the mount (fetched from the seed).
demo=$(mktemp -d)
seed_pid=
cleanup() {
    if [ -d "$demo/mnt" ]; then btfs unmount "$demo/mnt" 2>/dev/null || true; fi
    if [ -n "$seed_pid" ]; then kill "$seed_pid" 2>/dev/null || true; wait "$seed_pid" 2>/dev/null || true; fi
    rm -rf "$demo"
}
trap cleanup EXIT
head -c 32M /dev/urandom > "$demo/sample.bin"
btfs create "$demo/sample.bin" -o "$demo/sample.torrent"
btfs info "$demo/sample.torrent"
btfs seed "$demo/sample.torrent" "$demo/sample.bin" --bind 127.0.0.1 --no-trackers 2> "$demo/seed.log" &
seed_pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$demo/seed.log")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$demo/seed.log"; exit 1; }
if [ -e /dev/fuse ]; then
    mkdir "$demo/mnt"
    btfs mount "$demo/sample.torrent" "$demo/mnt" --peer "127.0.0.1:$port" --no-trackers
    cmp "$demo/mnt/sample.bin" "$demo/sample.bin"
    echo "read sample.bin back through the mount: identical to the original"
    btfs status "$demo/mnt"
    btfs unmount "$demo/mnt"
else
    echo "no /dev/fuse here: downloading instead of mounting"
    mkdir "$demo/out"
    btfs download "$demo/sample.torrent" -o "$demo/out" --peer "127.0.0.1:$port" --no-trackers
    cmp "$demo/out/sample.bin" "$demo/sample.bin"
fi
