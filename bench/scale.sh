#!/usr/bin/env bash
# Scale figures of the overlay's rescan (issue 16): for each N, a tree of N files in N/100 folders
# on a tmpfs SOURCE, an overlay (cache=always, linked to a daemon) on which every entry was listed
# and statted, then
#   - a whole-mount notify (CHANNEL, no path) after one file changed: median of 3, in ms;
#   - a scoped notify of that one file (CHANNEL<TAB>RELPATH): median of 5, in ms;
#   - the overlay's RSS growth per known inode, in bytes.
# Usage: bench/scale.sh [N...]   (default: 100000). Needs root, /dev/fuse, a release build with
# the vfbench example (cargo build --release --examples). Prints one line per N, and the load.
# SCALE_VF=BINARY runs another vfnotify (an earlier build, to compare).
# SCALE_PERF=FILE also records a perf profile of the whole-mount notifications into FILE.N.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VF="${SCALE_VF:-$REPO/target/release/vfnotify}"
VB="$REPO/target/release/examples/vfbench"
SIZES=("${@:-100000}")
W=$(mktemp -d /tmp/vfscale.XXXXXX)
CTL="$W/ctl.sock"
SRC="$W/src"
MP="$W/m"
DAEMON_PID=""

cleanup() {
    if grep -qF " $MP " /proc/self/mountinfo 2>/dev/null; then umount -l "$MP" || true; fi
    [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null || true
    if grep -qF " $SRC " /proc/self/mountinfo 2>/dev/null; then umount -l "$SRC" || true; fi
    rm -rf "$W"
}
trap cleanup EXIT
die() {
    echo "scale: $*" >&2
    exit 1
}
log() { echo "scale: $*" >&2; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR]=$1} END{if(NR%2){print v[(NR+1)/2]} else {print (v[NR/2]+v[NR/2+1])/2}}'; }
ms() { timeout 600 "$VB" "$@" | awk '{print $1*1000}'; }
# CPU time (user + system, every thread) a process has used, in ms.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }

[[ -x $VF && -x $VB ]] || die "build first: cargo build --release --examples"
mkdir -p "$SRC" "$MP"
mount -t tmpfs -o size=80% tmpfs "$SRC"
"$VF" daemon --listen "unix:$W/peer.sock" --control "$CTL" >"$W/daemon.log" 2>&1 &
DAEMON_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ -S $CTL ]] && break
    sleep 0.05
done
[[ -S $CTL ]] || die "daemon control socket did not appear: $(cat "$W/daemon.log")"

echo "load before: $(cat /proc/loadavg)"
printf '%10s %10s %12s %10s %12s %8s %10s\n' N whole_ms whole_cpu_ms scoped_ms rss_B/inode known prep_s
for n in "${SIZES[@]}"; do
    tree="$SRC/t$n"
    t0=$EPOCHREALTIME
    timeout 3600 "$VB" mkfiles "$tree" "$((n / 100))" "$n" >/dev/null
    ch="scale$n"
    timeout 30 "$VF" mount "$tree" "$MP" -o "channel=$ch,control=$CTL"
    for ((i = 0; i < 100; i++)); do
        timeout 10 "$VB" notify "$CTL" "$ch" >/dev/null 2>&1 && break
        sleep 0.1
    done
    read -r pid _ <<<"$(timeout 10 "$VB" overlay "$CTL" "$MP")"
    rss0=$(timeout 10 "$VB" rss "$pid")
    timeout 3600 "$VB" statall "$MP" >/dev/null
    # The first rescan also waits for the first views of every folder (taken in the background).
    timeout 600 "$VB" notify "$CTL" "$ch" >/dev/null
    prep=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}')
    f="d0000/f000000"
    whole=""
    # SCALE_PERF=FILE: record the overlay's profile during the whole-mount notifications.
    perf_pid=""
    if [[ -n ${SCALE_PERF:-} ]]; then
        perf record -g -o "$SCALE_PERF.$n" -p "$pid" 2>/dev/null &
        perf_pid=$!
        sleep 1
    fi
    c0=$(cpu_ms "$pid")
    for ((r = 0; r < 3; r++)); do
        printf 'x' >>"$tree/$f"
        whole+="$(ms notify "$CTL" "$ch") "
    done
    cpu=$(awk -v a="$c0" -v b="$(cpu_ms "$pid")" 'BEGIN{printf "%.0f", (b-a)/3}')
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
    fi
    scoped=""
    for ((r = 0; r < 5; r++)); do
        printf 'x' >>"$tree/$f"
        scoped+="$(ms notify "$CTL" "$ch" "$f") "
    done
    read -r _ known _ _ <<<"$(timeout 10 "$VB" overlay "$CTL" "$MP")"
    rss1=$(timeout 10 "$VB" rss "$pid")
    per=$(awk -v a="$rss0" -v b="$rss1" -v k="$known" 'BEGIN{printf "%.0f", (b-a)*1024/(k>0?k:1)}')
    printf '%10s %10s %12s %10s %12s %8s %10s\n' "$n" "$(median <<<"$whole")" "$cpu" \
        "$(median <<<"$scoped")" "$per" "$known" "$prep"
    log "N=$n whole: $whole scoped: $scoped"
    umount "$MP" || umount -l "$MP"
    rm -rf "$tree"
done
echo "load after: $(cat /proc/loadavg)"
