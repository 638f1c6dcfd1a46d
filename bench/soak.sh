#!/usr/bin/env bash
# Soak: the daemon and a linked overlay (cache=always, events=precise) over a tmpfs SOURCE, under
# a long load of notification lines (examples/soak.rs: many connections, paced, some lines with
# real host changes on SOURCE, a recursive inotify watcher on the overlay) while fsx loops on a
# file in the overlay. Then the final state and final events are checked, the daemon's and the
# overlay server's RSS and fd counts compared with those before the load, and the counters read.
# Usage: bash bench/soak.sh [SECONDS [NOTIFICATIONS]]   (defaults 600 and 1,000,000)
#        bash bench/soak.sh quick                       (60 s, 100,000)
# As root. Writes the summary to docs/soak.md (its own block per mode) and exits 1 on any failed
# check. WORK (default /tmp/vfnotify-soak) is removed on exit; KEEP=1 keeps its logs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "soak.sh: needs /dev/fuse" >&2; exit 1; }

if [ "${1:-}" = quick ]; then
  MODE=quick SECS=60 LINES=100000
else
  MODE=full SECS=${1:-600} LINES=${2:-1000000}
fi
CONNS=${CONNS:-32}
PER_CONN=${PER_CONN:-1000}
FILES=${FILES:-200}
DIRS=${DIRS:-10}
FSX_OPS=${FSX_OPS:-10000}        # operations per fsx run; runs loop until the deadline
# Bounds (see docs/soak.md for how they were chosen).
DAEMON_RSS_MAX_KIB=${DAEMON_RSS_MAX_KIB:-$((32 * 1024))}
OVERLAY_RSS_MAX_KIB=${OVERLAY_RSS_MAX_KIB:-$((64 * 1024))}
FD_SLACK=${FD_SLACK:-2}

WORK=${WORK:-/tmp/vfnotify-soak}
SRC=$WORK/src MNT=$WORK/mnt PEER=$WORK/peer.sock CTL=$WORK/control.sock CHANNEL=soak
export PATH="$HOME/.cargo/bin:$PATH"

command -v fsx >/dev/null || cargo install --locked fsx
cargo build --release --quiet --bin vfnotify --example soak
BIN=$REPO/target/release/vfnotify
DRV=$REPO/target/release/examples/soak

DPID= OPID= FSXPID= SAMPLERPID=
cleanup() {
  local rc=$?
  cd /
  for p in $SAMPLERPID $FSXPID; do kill "$p" 2>/dev/null || true; done
  [ -n "$FSXPID" ] && pkill -P "$FSXPID" 2>/dev/null || true   # fsx itself, child of the loop
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  if [ -n "$OPID" ]; then
    for _ in $(seq 50); do kill -0 "$OPID" 2>/dev/null || break; sleep 0.1; done
    kill "$OPID" 2>/dev/null || true
  fi
  if [ -n "$DPID" ]; then
    kill "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
  fi
  mountpoint -q "$SRC" 2>/dev/null && { umount "$SRC" 2>/dev/null || umount -l "$SRC"; }
  if [ "${KEEP:-0}" = 1 ]; then
    echo "soak: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A previous run killed hard may have left mounts behind.
for m in "$MNT" "$SRC"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
rm -rf "$WORK"
mkdir -p "$SRC" "$MNT" "$WORK/fsx-artifacts"
mount -t tmpfs -o size=256m tmpfs "$SRC"

kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
status() { "$BIN" status --control "$CTL" --json; }
now() { date +%s.%N; }

# Daemon, then the overlay linked to it.
T_START=$(now)
"$BIN" daemon --listen "unix:$PEER" --control "$CTL" >"$WORK/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
status >/dev/null || { echo "soak: daemon did not come up" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
"$BIN" mount "$SRC" "$MNT" -o "channel=$CHANNEL,control=$CTL,log=$WORK/overlay.log"
for _ in $(seq 100); do
  [ "$(status | jq '.overlays | length')" -ge 1 ] && break
  sleep 0.1
done
OPID=$(status | jq -r '.overlays[0].pid // empty')
PG=$(pgrep -f "vfnotify mount.*$MNT" || true)
[ -n "$OPID" ] && [ "$OPID" = "$PG" ] ||
  { echo "soak: overlay server pid: status says '$OPID', pgrep '$PG'" >&2; exit 1; }

# The driver's files (through the overlay) and fsx's folder and file, so that the "before"
# figures include the steady state of the tree, not its creation.
DRV_ARGS=(--peer "$PEER" --control "$CTL" --channel "$CHANNEL" --src "$SRC" --mnt "$MNT"
  --secs "$SECS" --lines "$LINES" --conns "$CONNS" --per-conn "$PER_CONN" --files "$FILES" --dirs "$DIRS")
"$DRV" "${DRV_ARGS[@]}" --setup-only >/dev/null
mkdir -p "$MNT/fsx"
: >"$MNT/fsx/fsxfile"
sleep 1
D_RSS0=$(kib "$DPID") D_FD0=$(fds "$DPID") O_RSS0=$(kib "$OPID") O_FD0=$(fds "$OPID")

# fsx, as bench/fsx.sh configures it (every operation it has), looped until the deadline.
cp bench/fsx.toml "$WORK/fsx.toml"
T_LOAD=$(now)
END=$(awk "BEGIN{printf \"%d\", $T_LOAD + $SECS}")
# A failed run is recorded (its log kept) and the loop goes on, so fsx runs the whole time.
(
  seed=1 runs=0 failed=
  while [ "$(date +%s)" -lt "$END" ]; do
    if (cd "$WORK/fsx-artifacts" && nice -n 5 fsx -N "$FSX_OPS" -S "$seed" -f "$WORK/fsx.toml" \
        -P "$WORK/fsx-artifacts" "$MNT/fsx/fsxfile") >"$WORK/fsx-$seed.log" 2>&1; then
      rm -f "$WORK/fsx-$seed.log"
    else
      failed="$failed${failed:+ }$seed"
    fi
    runs=$((runs + 1)) seed=$((seed + 1))
    echo "runs=$runs failed_seeds=$failed" >"$WORK/fsx.result"
  done
  [ -z "$failed" ]
) &
FSXPID=$!

# RSS/fd samples every 15 s, for the peak and the trend.
(
  while :; do
    echo "$(date +%s) $(kib "$DPID") $(fds "$DPID") $(kib "$OPID") $(fds "$OPID")" >>"$WORK/samples"
    sleep 15
  done
) &
SAMPLERPID=$!

echo "soak ($MODE): $LINES lines over $SECS s on $CONNS connections; fsx looping; logs in $WORK" >&2
DRV_RC=0
"$DRV" "${DRV_ARGS[@]}" >"$WORK/driver.out" 2>"$WORK/driver.err" || DRV_RC=$?
T_DRV=$(now)
FSX_RC=0
wait "$FSXPID" || FSX_RC=$?
FSXPID=
T_END=$(now)
kill "$SAMPLERPID" 2>/dev/null || true
wait "$SAMPLERPID" 2>/dev/null || true
SAMPLERPID=

# After: everything closed (fsx done, driver gone); give the daemon a moment to close peers.
sleep 2
D_RSS1=$(kib "$DPID") D_FD1=$(fds "$DPID") O_RSS1=$(kib "$OPID") O_FD1=$(fds "$OPID")
D_HWM=$(hwm "$DPID") O_HWM=$(hwm "$OPID")
D_FDMAX=$(awk 'm<$3{m=$3} END{print m+0}' "$WORK/samples")
O_FDMAX=$(awk 'm<$5{m=$5} END{print m+0}' "$WORK/samples")

drv() { sed -n "s/^$1=//p" "$WORK/driver.out"; }
SENT=$(drv sent)
SENT=${SENT:-0}
# The daemon reads what the driver wrote asynchronously: wait for it to catch up (or not).
for _ in $(seq 100); do
  [ "$(status | jq '.counters.received')" -ge "$SENT" ] && break
  sleep 0.1
done
ST=$(status)
j() { jq -r "$1" <<<"$ST"; }
RECEIVED=$(j .counters.received) COALESCED=$(j .counters.coalesced)
DROPPED=$(j '[.counters.dropped | to_entries[] | .value] | add')
DROPPED_NZ=$(j '[.counters.dropped | to_entries[] | select(.value > 0) | "\(.key) \(.value)"] | join(", ")')
CONNECTIONS=$(j .counters.connections)
OV_NOTIF=$(j '.overlays[0].stats.notifications') OV_RESCANS=$(j '.overlays[0].stats.rescans')
OV_REPLAYED=$(j '.overlays[0].stats.events_replayed') OV_RFAILED=$(j '.overlays[0].stats.replay_failed')
OV_INVFAILED=$(j '.overlays[0].stats.inval_failed') OV_SCANERR=$(j '.overlays[0].stats.scan_errors')
OV_DELIVERED=$(j '.overlays[0].delivered') OV_HANDLED=$(j '.overlays[0].handled')
FSX_RUNS=$(sed -n 's/^runs=\([0-9]*\) .*/\1/p' "$WORK/fsx.result" 2>/dev/null)
FSX_FAILED=$(sed -n 's/^runs=[0-9]* failed_seeds=//p' "$WORK/fsx.result" 2>/dev/null)
FSX_NFAILED=$(wc -w <<<"$FSX_FAILED")

# Checks.
FAILS=0
ROWS=()
check() { # check NAME FIGURE BOUND OK(0/1)
  local r=PASS
  [ "$4" = 1 ] || { r=FAIL; FAILS=$((FAILS + 1)); }
  ROWS+=("| $1 | $2 | $3 | $r |")
}
yes() { if eval "$1"; then echo 1; else echo 0; fi; }
mib() { awk "BEGIN{printf \"%.1f MiB\", $1 / 1024}"; }

NV=$(drv final_not_visible) ME=$(drv final_missed_events)
check "notifications received by the daemon" "sent $SENT (load $(drv load_sent) + final $(drv final_sent)), received $RECEIVED" "received = sent" \
  "$(yes "[ '$RECEIVED' = '$SENT' ] && [ '$SENT' -gt 0 ]")"
check "lines dropped by the daemon" "${DROPPED}${DROPPED_NZ:+ ($DROPPED_NZ)}" "0" "$(yes "[ '$DROPPED' = 0 ]")"
check "final state visible through the overlay" "$((FILES - ${NV:-$FILES}))/$FILES files, all within $(drv final_visible_ms) ms" "all, within 5 s" \
  "$(yes "[ '$NV' = 0 ]")"
check "final event seen by the watcher" "$((FILES - ${ME:-$FILES}))/$FILES files, last at $(drv final_event_max_ms) ms" "all, within 5 s" \
  "$(yes "[ '$ME' = 0 ]")"
check "fsx on the overlay" "${FSX_RUNS:-0} runs × $FSX_OPS ops, $FSX_NFAILED failed${FSX_FAILED:+ (seeds $FSX_FAILED)}" "every run clean" \
  "$(yes "[ '$FSX_RC' = 0 ] && [ '${FSX_RUNS:-0}' -ge 1 ] && [ '$FSX_NFAILED' = 0 ]")"
check "driver and watcher clean" "driver exit $DRV_RC, send errors $(drv send_errors), change errors $(drv change_errors), inotify overflows $(drv watch_overflows), quiesced $(drv quiesced)" "0, 0, 0, 0, true" \
  "$(yes "[ '$(drv send_errors)' = 0 ] && [ '$(drv change_errors)' = 0 ] && [ '$(drv watch_overflows)' = 0 ] && [ '$(drv quiesced)' = true ]")"
check "overlay replays" "events_replayed $OV_REPLAYED, replay_failed $OV_RFAILED, inval_failed $OV_INVFAILED, scan_errors $OV_SCANERR" "replay_failed 0" \
  "$(yes "[ '$OV_RFAILED' = 0 ]")"
check "daemon RSS" "$(mib "$D_RSS0") → $(mib "$D_RSS1") (peak $(mib "$D_HWM"))" "after < $(mib "$DAEMON_RSS_MAX_KIB")" \
  "$(yes "[ '$D_RSS1' -lt '$DAEMON_RSS_MAX_KIB' ]")"
check "overlay server RSS" "$(mib "$O_RSS0") → $(mib "$O_RSS1") (peak $(mib "$O_HWM"))" "after < $(mib "$OVERLAY_RSS_MAX_KIB")" \
  "$(yes "[ '$O_RSS1' -lt '$OVERLAY_RSS_MAX_KIB' ]")"
check "daemon fds" "$D_FD0 → $D_FD1 (max sampled $D_FDMAX)" "growth ≤ $FD_SLACK" \
  "$(yes "[ $((D_FD1 - D_FD0)) -le '$FD_SLACK' ]")"
check "overlay server fds" "$O_FD0 → $O_FD1 (max sampled $O_FDMAX)" "growth ≤ $FD_SLACK" \
  "$(yes "[ $((O_FD1 - O_FD0)) -le '$FD_SLACK' ]")"

RESULT=PASS
[ "$FAILS" = 0 ] || RESULT="FAIL ($FAILS)"
dur() { awk "BEGIN{printf \"%.0f s\", $2 - $1}"; }
BLOCK=$(
  cat <<EOF
### Last $MODE run: $RESULT

$(date -u '+%Y-%m-%d %H:%M UTC'), Linux $(uname -r), $(nproc) cores (shared), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted src changes').
Load: $LINES lines asked over $SECS s on $CONNS connections (new one every $PER_CONN lines), $FILES files in $DIRS folders.
Durations: load $(drv load_secs) s, quiesce $(drv quiesce_secs) s, driver total $(dur "$T_LOAD" "$T_DRV"), fsx loop $(dur "$T_LOAD" "$T_END"), whole run $(dur "$T_START" "$T_END").

| check | figure | bound | result |
| --- | --- | --- | --- |
$(printf '%s\n' "${ROWS[@]}")

| counters | |
| --- | --- |
| daemon | received $RECEIVED, coalesced $COALESCED, dropped $DROPPED, connections $CONNECTIONS |
| overlay | notifications $OV_NOTIF, rescans $OV_RESCANS, events_replayed $OV_REPLAYED, replay_failed $OV_RFAILED (daemon delivered $OV_DELIVERED, acknowledged $OV_HANDLED) |
| driver | host changes: $(drv changes_write) writes, $(drv changes_rename) renames, $(drv changes_chmod) chmods; $(drv connections) connections |
| watcher | $(drv events_total) events ($(drv events_modify) IN_MODIFY, $(drv events_close_write) IN_CLOSE_WRITE, $(drv events_attrib) IN_ATTRIB, $(drv events_moved_from)/$(drv events_moved_to) IN_MOVED_FROM/TO, $(drv events_other) other); files that never had an event: $(drv files_without_event) |
EOF
)
echo
echo "$BLOCK"

# docs/soak.md: replace this mode's block between its markers (the prose around it is kept).
DOC=$REPO/docs/soak.md
BEGIN="<!-- soak:$MODE:begin -->" ENDM="<!-- soak:$MODE:end -->"
[ -f "$DOC" ] || printf '# Soak\n\n%s\n%s\n' "$BEGIN" "$ENDM" >"$DOC"
grep -qF "$BEGIN" "$DOC" || printf '\n%s\n%s\n' "$BEGIN" "$ENDM" >>"$DOC"
printf '%s\n' "$BLOCK" >"$WORK/block"
awk -v b="$BEGIN" -v e="$ENDM" -v f="$WORK/block" '
  $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
  $0 == e { skip = 0 }
  !skip { print }' "$DOC" >"$WORK/doc" && cat "$WORK/doc" >"$DOC"
echo "soak: written to docs/soak.md" >&2

if [ "$FAILS" != 0 ]; then
  for f in driver.err fsx.result; do
    [ -s "$WORK/$f" ] && { echo "--- $f (tail)" >&2; tail -20 "$WORK/$f" >&2; }
  done
  for f in "$WORK"/fsx-*.log; do [ -e "$f" ] && { echo "--- $f (tail)" >&2; tail -20 "$f" >&2; }; done
  exit 1
fi
