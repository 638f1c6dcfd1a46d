#!/usr/bin/env bash
# fsx (the Rust rewrite, crates.io `fsx`) on the vfnotify overlay over a tmpfs SOURCE, with kernel
# passthrough (default) and with -o passthrough=off, plus native tmpfs as a baseline, as root.
# Usage: bash bench/fsx.sh [NUMOPS [SEED]]   (defaults 100000, 1). Logs in $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "fsx.sh: needs root" >&2; exit 1; }
N=${1:-100000}
SEED=${2:-1}
WORK=${WORK:-/tmp/vfnotify-fsx}
export PATH="$HOME/.cargo/bin:$PATH"

command -v fsx >/dev/null || cargo install --locked fsx
cargo build --release --quiet
BIN=$PWD/target/release/vfnotify

mkdir -p "$WORK"/{native,src,mnt}
# Every operation fsx knows, including mmap, fallocate, hole punching, sendfile, copy_file_range.
cp bench/fsx.toml "$WORK/fsx.toml"

cleanup() {
  cd /
  for m in "$WORK/mnt" "$WORK/native" "$WORK/src"; do
    mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
  done
  return 0
}
trap cleanup EXIT
cleanup

status=0
run() { # run NAME DIR
  local name=$1 dir=$2 t0 t1 rc=0
  t0=$(date +%s.%N)
  (cd "$WORK" && fsx -N "$N" -S "$SEED" -f "$WORK/fsx.toml" "$dir/fsxfile") >"$WORK/$name.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  printf '%-22s %s  %d ops  %.1f s  (log %s)\n' "$name" "$([ $rc = 0 ] && echo PASS || echo "FAIL rc=$rc")" \
    "$N" "$(awk "BEGIN{print $t1 - $t0}")" "$WORK/$name.log"
  [ $rc = 0 ] || status=1
}

mount -t tmpfs tmpfs "$WORK/native"
run native-tmpfs "$WORK/native"
umount "$WORK/native"

mount -t tmpfs tmpfs "$WORK/src"
for opts in "" "passthrough=off"; do
  rm -f "$WORK/src/fsxfile"*
  "$BIN" mount "$WORK/src" "$WORK/mnt" ${opts:+-o "$opts"}
  run "overlay${opts:+-$opts}" "$WORK/mnt"
  umount "$WORK/mnt"
done
exit $status
