#!/usr/bin/env bash
# pjdfstest (the Rust port, crates.io `pjdfstest`) on the vfnotify overlay over a tmpfs SOURCE and on
# native tmpfs, as root. Prints pass/fail counts for both and the tests that fail on the overlay but
# not natively. Usage: bash bench/pjdfstest.sh [PATTERN...]   (patterns filter test names)
# Logs stay in $WORK (default /tmp/vfnotify-pjdfstest).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "pjdfstest.sh: needs root" >&2; exit 1; }
WORK=${WORK:-/tmp/vfnotify-pjdfstest}
export NO_COLOR=1
export PATH="$HOME/.cargo/bin:$PATH"

command -v pjdfstest >/dev/null || cargo install --locked pjdfstest
# pjdfstest switches to two dummy users: nobody and "tests".
id tests >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin tests
NOGROUP=$(id -gn nobody)
cargo build --release --quiet
BIN=$PWD/target/release/vfnotify

mkdir -p "$WORK"/{native,src,mnt,second}
cat >"$WORK/pjdfstest.toml" <<CONF
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.05
allow_remount = false

[dummy_auth]
entries = [["nobody", "$NOGROUP"], ["tests", "tests"]]
CONF

cleanup() {
  cd /
  for m in "$WORK/mnt" "$WORK/native" "$WORK/src" "$WORK/second"; do
    mountpoint -q "$m" && umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
trap cleanup EXIT
cleanup

mount -t tmpfs tmpfs "$WORK/second"   # for the EXDEV cases (-s)
run() { # run NAME DIR
  local name=$1 dir=$2 t0=$SECONDS
  (cd "$dir" && pjdfstest -c "$WORK/pjdfstest.toml" -p "$dir" -s "$WORK/second" "${@:3}") \
    >"$WORK/$name.log" 2>&1 || true
  echo "$name: $(grep '^Summary' "$WORK/$name.log" || echo 'no summary (crashed?)') [$((SECONDS - t0)) s]"
}

mount -t tmpfs tmpfs "$WORK/native"
run native "$WORK/native" "$@"
umount "$WORK/native"

mount -t tmpfs tmpfs "$WORK/src"
chmod 755 "$WORK/src"
"$BIN" mount "$WORK/src" "$WORK/mnt" -o allow_other
run overlay "$WORK/mnt" "$@"
umount "$WORK/mnt"

failing() { awk '$NF=="FAILED"{print $1}' "$1" | sort -u; }
failing "$WORK/native.log" >"$WORK/native.failed"
failing "$WORK/overlay.log" >"$WORK/overlay.failed"
echo "failing on the overlay but not natively:"
comm -23 "$WORK/overlay.failed" "$WORK/native.failed" | sed 's/^/  /'
