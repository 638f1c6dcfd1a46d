#!/usr/bin/env bash
# vfnotify benchmark on the deployed stack: SOURCE is a guest's virtiofs mount under
# `virtiofsd --cache=never`, played by examples/virtiofs_standin.rs (a FUSE server over a tmpfs
# folder with entry/attribute timeouts 0 and direct I/O on every file, which counts every request
# that reaches it). Every row also says how many requests reached SOURCE during the pass.
#
#   bash bench/run.sh [full|quick] virtiofs     (as root; `just bench full virtiofs`)
#
# full: every row, RUNS runs per cell (median), < 5 minutes on 2 cores once built; quick: smaller
# sizes, one run, < 1 minute. Writes bench/RESULTS-virtiofs.md.
#
# Columns: the bare stand-in mount (what a guest has without vfnotify), vfnotify over it
# (passthrough=auto, the default), vfnotify over it with passthrough=off, and the tmpfs itself
# (native, for reference). Overlays are linked to a daemon (`channel=`, so cache=always).
# Each cell: figure (ratio to the bare stand-in, >1× = faster than bare) and the requests that
# reached SOURCE (the stand-in) during the pass; the breakdown per opcode is the second table.
#
# Needs: root, /dev/fuse, cargo, fio (installed with apt-get when missing), tar, grep, find.
# Cleans up every mount and process it started, also on failure or Ctrl-C.

set -euo pipefail

MODE=${1:-full}
if [[ "$MODE" != full && "$MODE" != quick ]] || (($# > 1)); then
    echo "usage: bash bench/run.sh [full|quick] virtiofs" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$REPO/bench/RESULTS-virtiofs.md"
CMDLINE="bash bench/run.sh $MODE virtiofs"
T_START=$EPOCHREALTIME

if [[ "$MODE" == full ]]; then
    RUNS=3 TREE_RUNS=2 SEQ_MB=512 READ_CAP=3 RR_MS=600 META_DIRS=100 META_FILES=10000
    TREE=/usr/include
else
    RUNS=1 TREE_RUNS=1 SEQ_MB=128 READ_CAP=2 RR_MS=300 META_DIRS=20 META_FILES=2000
    TREE=/usr/include/linux
fi

STEP="start"
BENCH_TAG=deployed
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $(id -u) -eq 0 ]] || die "run as root (mount(2), drop_caches, FUSE servers)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing (modprobe fuse)"
command -v cargo >/dev/null || die "cargo is missing (https://rustup.rs)"
[[ -d "$TREE" ]] || die "$TREE is missing (the tree rows copy it; apt-get install linux-libc-dev libc6-dev)"
STEP="packages"
if ! command -v fio >/dev/null; then
    log "installing fio"
    export DEBIAN_FRONTEND=noninteractive
    to 300 apt-get install -y -qq fio >/dev/null 2>&1 ||
        { to 300 apt-get update -qq && to 300 apt-get install -y -qq fio >/dev/null; }
fi

build_all
VF="$REPO/target/release/vfnotify"
VB="$REPO/target/release/examples/vfbench"
SI="$REPO/target/release/examples/virtiofs_standin"
note_load

# ---------------------------------------------------------------------------------------------
# Scratch space, cleanup.
# ---------------------------------------------------------------------------------------------
W=$(mktemp -d /tmp/vfdeploy.XXXXXX)
SRC="$W/src"   # the tmpfs behind the stand-in (the host's shared folder)
VFS="$W/vfs"   # the stand-in mount (the guest's virtiofs mount)
STATS="$W/standin.sock"
CTL="$W/ctl.sock"
MOUNTS=()
DAEMON_PID="" SI_PID="" SRC_MOUNTED=0

cleanup() {
    local rc=$?
    set +e
    trap - ERR
    local i m
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        if grep -qs " $m " /proc/self/mountinfo; then
            timeout 10 umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        fi
    done
    if [[ -n "$DAEMON_PID" ]]; then
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    if [[ -n "$SI_PID" ]]; then
        kill "$SI_PID" 2>/dev/null
        wait "$SI_PID" 2>/dev/null
    fi
    if ((SRC_MOUNTED)); then
        timeout 10 umount "$SRC" 2>/dev/null || umount -l "$SRC" 2>/dev/null
    fi
    rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'echo "bench: terminated" >&2; exit 143' TERM
ulimit -n "$(ulimit -Hn)"

wait_mounted() { # wait_mounted MOUNTPOINT PID: until MOUNTPOINT is in mountinfo (10 s)
    local i
    for ((i = 0; i < 200; i++)); do
        grep -qs " $1 " /proc/self/mountinfo && return 0
        kill -0 "$2" 2>/dev/null || die "the server of $1 exited"
        sleep 0.05
    done
    die "$1 was not mounted within 10 s"
}

STEP="SOURCE"
mkdir -p "$SRC" "$VFS" "$W/m"
to 10 mount -t tmpfs -o size=12g,mode=0755 vfdeploy-src "$SRC"
SRC_MOUNTED=1
"$SI" serve "$SRC" "$VFS" --stats "$STATS" >"$W/standin.log" 2>&1 &
SI_PID=$!
MOUNTS+=("$VFS")
wait_mounted "$VFS" "$SI_PID"

STEP="daemon"
"$VF" daemon --listen "unix:$W/peer.sock" --control "$CTL" >"$W/daemon.log" 2>&1 &
DAEMON_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ -S "$CTL" ]] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die "daemon exited: $(cat "$W/daemon.log")"
    sleep 0.05
done
[[ -S "$CTL" ]] || die "daemon control socket did not appear"

COLS=(bare vf nopt trust native)
FUSECOLS=(bare vf nopt trust) # the columns whose requests reach the stand-in
declare -A HEAD=(
    [bare]="virtiofs stand-in (bare)" [vf]="vfnotify over it" [nopt]="vfnotify passthrough=off over it"
    [trust]="vfnotify trusted over it (revalidate=notify)" [native]="native tmpfs"
)
# trust: the overlay trusts its notifications, as the default revalidate=auto does while a
# `vfnotify host` feeds the daemon (the host is left out here: its own cost is in RESULTS.md).
declare -A OPTS=([vf]="" [nopt]=",passthrough=off" [trust]=",revalidate=notify")
declare -A ROOT=([bare]="$VFS" [native]="$SRC" [vf]="$W/m/vf" [nopt]="$W/m/nopt" [trust]="$W/m/trust")
base() { echo "${ROOT[$1]}/$1"; }
src_of() { echo "$SRC/$1"; }

STEP="mounts"
for c in vf nopt trust; do
    mkdir -p "${ROOT[$c]}"
    MOUNTS+=("${ROOT[$c]}")
    to 30 "$VF" mount "$VFS" "${ROOT[$c]}" -o "channel=d_$c,control=$CTL${OPTS[$c]}"
    for ((i = 0; i < 100; i++)); do
        timeout 10 "$VB" notify "$CTL" "d_$c" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ((i < 100)) || die "overlay $c did not link to the daemon"
done
for c in "${COLS[@]}"; do mkdir -p "$(src_of "$c")"; done

MY_DROPS=0 # ours, to tell the drop_caches of other work on the machine (/proc/vmstat) from them
vm_drops() { awk '$1 == "drop_pagecache" || $1 == "drop_slab" { n += $2 } END { print n + 0 }' /proc/vmstat; }
DROPS0=$(vm_drops)
# Reclaim by the machine itself: a DAMON scheme that pages out what was not touched for a while
# (this machine's VM runs one) takes page cache from under warm passes; refaults count the pages
# read again after any reclaim.
damon_pageout() {
    local n=0 a k
    for a in /sys/kernel/mm/damon/admin/kdamonds/*/contexts/*/schemes/*/action; do
        [[ -r "$a" ]] || continue
        k=${a%%/contexts/*}
        if [[ "$(cat "$k/state" 2>/dev/null)" == on && "$(cat "$a")" == pageout ]]; then n=$((n + 1)); fi
    done
    echo "$n"
}
refaults() { awk '$1 == "workingset_refault_file" { print $2 }' /proc/vmstat; }
REFAULTS0=$(refaults)
drop_caches() { # 3: page cache too (cold data); 2: dentries and inodes (cold metadata)
    echo "$1" >/proc/sys/vm/drop_caches
    MY_DROPS=$((MY_DROPS + ($1 == 3 ? 2 : 1)))
    cat "$VB" "$SI" "$(command -v fio)" "$(command -v find)" "$(command -v grep)" "$(command -v tar)" >/dev/null
}
# settle COL: an overlay's sync worker has done the background work (first views of folders) a
# pass queued. The settle notification itself looks up one absent name on SOURCE.
settle() {
    [[ -n "${OPTS[$1]+set}" ]] || return 0
    to 30 "$VB" notify "$CTL" "d_$1" .vfbench-settle >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Results: SAMPLES[row|col] raw values (kinds: rate bytes/s, iops, ops/s, time s);
# REQ[row|col] = "total READ OPEN LOOKUP GETATTR other" of the last run, per pass.
# ---------------------------------------------------------------------------------------------
declare -A SAMPLES=() KIND=() LABEL=() REQ=() WARM=()
ROWS=()
row() { # row ID KIND LABEL [warm]
    ROWS+=("$1")
    KIND[$1]=$2
    LABEL[$1]=$3
    [[ "${4:-}" == warm ]] && WARM[$1]=1
    return 0
}
add() { SAMPLES["$1|$2"]+="$3 "; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR]=$1} END{if(NR==0){print ""} else if(NR%2){print v[(NR+1)/2]} else {print (v[NR/2]+v[NR/2+1])/2}}'; }

counts_reset() {
    [[ "$1" == native ]] || to 10 "$SI" stats "$STATS" --reset >/dev/null
}
# counts_take ROW COL [SCALE]: the requests since counts_reset, times SCALE (per pass), as
# "TOTAL OP=N OP=N ..." (every opcode that was sent, most first).
counts_take() {
    [[ "$2" == native ]] && return 0
    local j
    j=$(to 10 "$SI" stats "$STATS" --reset)
    REQ["$1|$2"]=$(grep -o '"[A-Za-z_]*":[0-9]*' <<<"$j" | tr -d '"' | awk -F: -v s="${3:-1}" '
        $1 == "total" { t = $2 * s; next }
        $2 > 0 { printf "%d %s\n", $2 * s + 0.5, $1 }
        END { printf "%d total\n", t + 0.5 }' | sort -k1,1nr | awk '
        $2 == "total" { t = $1; next } $1 > 0 { l = l " " $2 "=" $1 } END { print t l }')
}

time_cmd() { # elapsed seconds of CMD (stdout discarded)
    local t0=$EPOCHREALTIME
    to 120 "$@" >/dev/null
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.6f\n", b-a}'
}
# timed ROW COL CMD...: one pass of CMD timed, its requests counted. A cold pass (the row is not
# warm) settles the overlay before taking the counts, so they include the background work it set
# off; a warm pass settles before the pass, and only its own requests are counted.
timed() {
    local id=$1 c=$2 v
    shift 2
    [[ -n "${WARM[$id]:-}" ]] && settle "$c"
    counts_reset "$c"
    v=$("$@")
    [[ -n "${WARM[$id]:-}" ]] || settle "$c"
    counts_take "$id" "$c"
    [[ -n "$v" ]] || die "step '$STEP': no figure from: $*"
    add "$id" "$c" "$v"
}
# fio_one COL bw|iops RW FILE ARGS...: one fio job on COL's FILE; prints bytes/s or IOPS.
fio_one() {
    local c=$1 what=$2 rw=$3 file=$4 out
    shift 4
    out=$(to 300 fio --output-format=terse --terse-version=3 --rw="$rw" --size="${SEQ_MB}M" \
        --invalidate=0 --fallocate=none "$@" --name="$c" --filename="$(base "$c")/$file") ||
        die "fio $rw ($c) failed"
    IFS=';' read -r -a f <<<"$out"
    [[ ${#f[@]} -gt 50 && ${f[4]} == 0 ]] || die "fio $rw ($c) failed: ${f[*]:0:5}"
    if [[ $what == bw ]]; then awk -v k="${f[6]}" 'BEGIN{printf "%.0f\n", k*1024}'; else echo "${f[7]}"; fi
}
# vb_timed ROW COL rate|secs VFBENCH-ARGS...: a vfbench pass (up to 5 repeats), requests per pass.
vb_timed() {
    local id=$1 c=$2 how=$3 out
    shift 3
    [[ -n "${WARM[$id]:-}" ]] && settle "$c"
    counts_reset "$c"
    out=$(to 300 "$VB" "$@")
    [[ -n "${WARM[$id]:-}" ]] || settle "$c"
    # Both stat and readdir go over META_FILES names per pass: OPS / META_FILES passes.
    counts_take "$id" "$c" "$(awk -v n="$META_FILES" '{print ($2 > 0) ? n/$2 : 1}' <<<"$out")"
    if [[ $how == rate ]]; then
        add "$id" "$c" "$(awk '{printf "%.1f", $2/$1}' <<<"$out")"
    else
        add "$id" "$c" "$(awk '{print $1}' <<<"$out")"
    fi
}

# ---------------------------------------------------------------------------------------------
# 1. Data: a ${SEQ_MB} MiB file per column, written on SOURCE directly.
# ---------------------------------------------------------------------------------------------
row seqr_cold rate "sequential read ${SEQ_MB} MiB, cold (1 MiB blocks; at most ${READ_CAP} s)"
row seqr_warm rate "sequential read ${SEQ_MB} MiB, warm" warm
row rr_warm iops "4 KiB random read, warm, QD1 (psync, ${RR_MS} ms)" warm
STEP="data"
log "$STEP (${SEQ_MB} MiB)"
to 60 dd if=/dev/urandom of="$(src_of native)/seq.bin" bs=1M count="$SEQ_MB" status=none
for c in bare vf nopt trust; do to 60 cp "$(src_of native)/seq.bin" "$(src_of "$c")/seq.bin"; done
# Caches dropped before each column's pass, not once before all of them: a column read right
# after the drop and one read after three others did not start from the same machine (one drop
# before all gave the fourth column 0.57-2.0 GB/s in successive runs by hand).
for ((r = 1; r <= RUNS; r++)); do
    for c in "${COLS[@]}"; do
        drop_caches 3
        timed seqr_cold "$c" fio_one "$c" bw read seq.bin --bs=1M --runtime="$READ_CAP"
    done
done
for c in "${COLS[@]}"; do fio_one "$c" bw read seq.bin --bs=1M --runtime="$((2 * READ_CAP))" >/dev/null; done
for ((r = 1; r <= RUNS; r++)); do
    for c in "${COLS[@]}"; do
        timed seqr_warm "$c" fio_one "$c" bw read seq.bin --bs=1M --runtime="$READ_CAP"
    done
done
RR=(--bs=4k --time_based --runtime="$RR_MS"ms --norandommap --randrepeat=0 --ioengine=psync --iodepth=1)
for ((r = 1; r <= RUNS; r++)); do
    for c in "${COLS[@]}"; do timed rr_warm "$c" fio_one "$c" iops randread seq.bin "${RR[@]}"; done
done
for c in "${COLS[@]}"; do rm -f "$(src_of "$c")/seq.bin"; done

# ---------------------------------------------------------------------------------------------
# 2. Metadata: META_FILES files in META_DIRS folders, made on SOURCE directly.
# ---------------------------------------------------------------------------------------------
M="$META_FILES files in $META_DIRS folders"
row stat_cold ops "stat, cold ($M)"
row stat_warm ops "stat, warm (per pass, up to 5)" warm
row rd_warm time "readdir, warm (all folders, per pass, up to 5)" warm
STEP="metadata"
log "$STEP ($M)"
for c in "${COLS[@]}"; do to 60 "$VB" mkfiles "$(src_of "$c")/meta" "$META_DIRS" "$META_FILES" >/dev/null; done
for ((r = 1; r <= RUNS; r++)); do
    for c in "${COLS[@]}"; do
        d="$(base "$c")/meta"
        drop_caches 2
        vb_timed stat_cold "$c" rate stat "$d" "$META_DIRS" "$META_FILES"
        vb_timed stat_warm "$c" rate stat "$d" "$META_DIRS" "$META_FILES" 5
        to 60 "$VB" readdir "$d" "$META_DIRS" >/dev/null # the first listing of each folder
        vb_timed rd_warm "$c" secs readdir "$d" "$META_DIRS" 5
    done
done
for c in "${COLS[@]}"; do rm -rf "$(src_of "$c")/meta"; done

# ---------------------------------------------------------------------------------------------
# 3. A source tree: a copy of $TREE, unpacked through each column, then walked and read.
# ---------------------------------------------------------------------------------------------
STEP="tree"
to 120 tar -cf "$W/tree.tar" -C "$TREE" .
NT=$(tar -tf "$W/tree.tar" | grep -vc '/$')
TMB=$(du -sm "$TREE" | cut -f1)
T="$TREE: $NT files, $TMB MB"
row t_untar time "untar ($T)"
row t_find_cold time "find, cold"
row t_find_warm time "find, warm" warm
row t_grep_cold time "grep -r, cold (page cache dropped)"
row t_grep_warm time "grep -r, warm" warm
row t_grep_warm2 time "grep -r, warm again" warm
row t_rebuild time "rebuild: stat + read every file again (find -newer, cat)" warm
log "$STEP ($T)"
touch "$W/stamp"
for ((r = 1; r <= TREE_RUNS; r++)); do
    for c in "${COLS[@]}"; do
        d="$(base "$c")/tree$r"
        mkdir -p "$d"
        timed t_untar "$c" time_cmd tar -xf "$W/tree.tar" -C "$d"
        drop_caches 2
        timed t_find_cold "$c" time_cmd find "$d"
        timed t_find_warm "$c" time_cmd find "$d"
        drop_caches 3
        timed t_grep_cold "$c" time_cmd grep -rc '#define' "$d"
        timed t_grep_warm "$c" time_cmd grep -rc '#define' "$d"
        timed t_grep_warm2 "$c" time_cmd grep -rc '#define' "$d"
        timed t_rebuild "$c" time_cmd find "$d" -type f ! -newer "$W/stamp" -exec cat {} +
        rm -rf "$(src_of "$c")/tree$r"
    done
done

T_END=$EPOCHREALTIME
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
OTHER_DROPS=$(($(vm_drops) - DROPS0 - MY_DROPS))
REFAULTS=$(($(refaults) - REFAULTS0))
DAMON=$(damon_pageout)

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
fmt() { # fmt KIND VALUE BARE
    awk -v k="$1" -v v="$2" -v n="$3" 'BEGIN{
        if (v == "") { print "n/a"; exit }
        if (k == "rate") { s = (v >= 1e9) ? sprintf("%.2f GB/s", v/1e9) : sprintf("%.0f MB/s", v/1e6) }
        else if (k == "iops") { s = (v >= 1e6) ? sprintf("%.2fM IOPS", v/1e6) : sprintf("%.1fk IOPS", v/1e3) }
        else if (k == "ops") { s = (v >= 1e6) ? sprintf("%.2fM/s", v/1e6) : sprintf("%.1fk/s", v/1e3) }
        else if (k == "time") { s = (v < 1e-3) ? sprintf("%.0f µs", v*1e6) : (v < 1 ? sprintf("%.1f ms", v*1e3) : sprintf("%.2f s", v)) }
        if (n > 0 && v > 0) s = s sprintf(" (%.2f×)", (k == "time") ? n/v : v/n)
        print s
    }'
}
declare -A MED=()
for id in "${ROWS[@]}"; do
    for c in "${COLS[@]}"; do MED["$id|$c"]=$(median <<<"${SAMPLES["$id|$c"]:-}"); done
done
reqs() { # "total ..." → "N req"
    awk '{ n = $1; printf (n >= 1e6 ? "%.2fM" : (n >= 1e4 ? "%.1fk" : "%d")) " req", (n >= 1e6 ? n/1e6 : (n >= 1e4 ? n/1e3 : n)) }' <<<"$1"
}
table() {
    local hdr="| | " sep="|---|" c id line
    for c in "${COLS[@]}"; do
        hdr+="${HEAD[$c]} | "
        sep+="---|"
    done
    echo "${hdr% }"
    echo "$sep"
    for id in "${ROWS[@]}"; do
        line="| ${LABEL[$id]} |"
        for c in "${COLS[@]}"; do
            line+=" $(fmt "${KIND[$id]}" "${MED["$id|$c"]}" "${MED["$id|bare"]}")"
            [[ -n "${REQ["$id|$c"]:-}" ]] && line+=" · $(reqs "${REQ["$id|$c"]}")"
            line+=" |"
        done
        echo "$line"
    done
}
breakdown() {
    local id c
    echo "| | $(for c in "${FUSECOLS[@]}"; do printf '%s | ' "${HEAD[$c]}"; done)"
    echo "|---|$(for c in "${FUSECOLS[@]}"; do printf -- '---|'; done)"
    for id in "${ROWS[@]}"; do
        printf '| %s%s |' "${LABEL[$id]}" "$([[ -n "${WARM[$id]:-}" ]] && echo " *(warm)*")"
        for c in "${FUSECOLS[@]}"; do
            printf ' %s |' "$(awk '{ s = $1; if (NF > 1) s = s ":"; for (i = 2; i <= NF; i++) { split($i, kv, "="); s = s sprintf("%s %s %d", (i > 2 ? "," : ""), kv[1], kv[2]) } print s }' <<<"${REQ["$id|$c"]:-0}")"
        done
        echo
    done
}
warm_summary() {
    local c id n sum
    for c in vf nopt trust; do
        n=0 sum=0
        for id in "${ROWS[@]}"; do
            [[ -n "${WARM[$id]:-}" ]] || continue
            read -r t _ <<<"${REQ["$id|$c"]:-0}"
            ((t == 0)) && n=$((n + 1))
            sum=$((sum + t))
        done
        echo "- ${HEAD[$c]}: $n of ${#WARM[@]} warm rows send no request to SOURCE (goal: all); $sum requests over the warm passes. Against native tmpfs (target ≥ 0.8×): $(for id in t_grep_warm t_grep_warm2 t_rebuild; do printf '%s %s; ' "${LABEL[$id]%%:*}" "$(awk -v v="${MED["$id|$c"]}" -v n="${MED["$id|native"]}" 'BEGIN{ if (v > 0 && n > 0) printf "%.2f×", n/v; else print "n/a" }')"; done)"
    done
}

KERNEL=$(uname -r)
CPU=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
RUN_SECS=$(awk -v a="$T_BUILT" -v b="$T_END" 'BEGIN{printf "%.0f", b-a}')
PT=$(grep -o '"passthrough": *[a-z]*' <<<"$("$VF" status --control "$CTL" --json)" | head -1 | awk '{print $2}')
{
    echo "# vfnotify benchmark results (deployed stack: virtiofs stand-in)"
    echo
    echo "- Command: \`$CMDLINE\` (mode $MODE; runs per cell, median: $RUNS for data and metadata, $TREE_RUNS for the tree; ${RUN_SECS} s after the build)"
    echo "- Machine: Linux $KERNEL, $(nproc) CPUs ($CPU), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; date $DATE"
    echo "- Load average (1/5/15 min) at start: $LOAD0; at end: $LOAD1. Above ~0.5 on 2 CPUs other work shared the machine: every round trip waited for a time slice, so the FUSE columns' times are upper bounds (the request counts are not affected). \`drop_caches\` by other work during the run: $OTHER_DROPS (each one turns warm page-cache reads into requests). Reclaim by the machine: DAMON pageout schemes running: $DAMON; file pages read again after a reclaim during the run (\`workingset_refault_file\`): $REFAULTS (a warm pass that finds pages gone sends \`READ\`s)."
    echo "- SOURCE: \`examples/virtiofs_standin.rs\` over a private tmpfs, standing in for a guest's virtiofs mount under \`virtiofsd --cache=never\` (entry/attribute timeouts 0, \`FOPEN_DIRECT_IO\` on every file, no READDIRPLUS, no xattrs, 2 threads; how faithful it is: Notes below). vfnotify columns mount the stand-in, linked to a daemon (\`channel=\`, cache=always); kernel passthrough negotiated: ${PT:-unknown}."
    echo "- Each cell: figure (**ratio to the bare stand-in: >1× is faster than the guest's virtiofs mount alone**) · requests that reached SOURCE during one pass (last run; warm vfbench rows: per pass). Cold = \`drop_caches\` 3 (data) or 2 (metadata) before the pass; a warm pass follows the same pass on the same files. Files are made on SOURCE directly except for the untar row; the tree rows run on the tree the untar row unpacked."
    echo
    table
    echo
    echo "## Requests reaching SOURCE per pass"
    echo
    echo "Total, then every opcode sent, most first (\`FORGET\` counts nodes: fuser hands a \`BATCH_FORGET\` over one node at a time). Cold rows count what the pass set off in the overlay's background too (first views of folders, read before the counts are taken) and the one \`LOOKUP\` of the settle notification. \`drop_caches\` by other work on the machine would show as \`READ\`s in a warm data row of the passthrough=off column."
    echo
    breakdown
    echo
    echo "## Warm passes"
    echo
    warm_summary
    if [[ -f "$REPO/bench/NOTES-virtiofs.md" ]]; then
        echo
        cat "$REPO/bench/NOTES-virtiofs.md"
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "done in $(awk -v a="$T_BUILT" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}') s after the build; wrote $OUT"
