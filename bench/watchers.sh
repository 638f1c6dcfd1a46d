#!/usr/bin/env bash
# vfnotify watcher survey: what real file watchers report on a vfnotify overlay for host changes,
# compared with the same changes made locally through the overlay.
#
#   bash bench/watchers.sh [WATCHER...]      (as root; `--list` names the watchers)
#
# For each watcher: a private tmpfs SOURCE under /tmp/survey-NAME, a guest daemon on a Unix
# listener, an overlay `vfnotify mount SOURCE MNT -o channel=docs,control=...` (cache=always,
# events=precise), the watcher started on MNT (recursive where it can be). Then every change kind
# is made three times from the same starting state (made through MNT): locally through MNT, on
# SOURCE followed by a scoped `vfnotify notify docs RELPATH...`, and on SOURCE followed by a
# whole-channel `vfnotify notify docs`. What the watcher printed between two markers (folders
# `zz-mark-N` made through MNT, or on SOURCE + notification for `vfnotify watch`, which reports
# host changes only) is the change's event sequence. Prints a markdown table per watcher to stdout
# (progress to stderr); raw logs stay in /tmp/survey-NAME/ (removed at the start of the next run).
#
# Normalisation before comparing: paths relative to MNT; names that exist on SOURCE neither
# before nor after the change (temporary names: `.f.txt.tmp`, `ln`'s `CuXXXXXX`, the overlay's
# `.NAME.vfnotify-N`) become `<tmp>`; consecutive identical lines are one (inotify itself merges
# them while unread); read-side events (inotify's OPEN, ACCESS, CLOSE_NOWRITE, watchdog's opened
# and closed_no_write) are left out: they come from whoever reads (the tool making a local
# change, the watcher itself listing a new folder), not from the change. Verdicts: `same` (identical sequences), `same set` (the same distinct lines
# in another order or count), `differs`. For `vfnotify watch` (no local reference) a host cell starts
# with `N lines repeated` when a change was reported more than once. Sequences of more than 24 lines are shown as counts,
# with digits in names replaced by `#`.
#
# Needs: root, /dev/fuse, cargo, jq; installs inotify-tools, libglib2.0-bin (gio), watchman
# (apt-get), chokidar (npm, into target/watchers/) and watchdog (pip, into a venv there) when
# missing. Exits 0 when every watcher was set up and surveyed (whatever they reported), 1 when a
# set-up step failed or a watcher stopped answering, 2 on bad usage. RUST_LOG (e.g.
# vfnotify=debug) reaches the daemon and the overlay, whose logs stay in /tmp/survey-NAME/. Cleans up every mount and
# process it started, also on failure or Ctrl-C. Not part of `cargo test`.

set -euo pipefail

ALL_WATCHERS=(inotifywait inotifywait-files gio node-fs-watch chokidar watchdog watchman vfnotify-watch vfnotify-watch-glob vfnotify-watch-unseen)
CASES=(create rewrite append truncate chmod utimes delete rename-within rename-across atomic-save mkdir-tree rm-tree symlink-retarget hardlink many-files)
# SURVEY_CASES="create rm-tree" runs only those change kinds.
if [[ -n "${SURVEY_CASES:-}" ]]; then
    read -r -a CASES <<<"$SURVEY_CASES"
fi

usage() {
    echo "usage: bash bench/watchers.sh [--list] [WATCHER...]" >&2
    echo "watchers: ${ALL_WATCHERS[*]}" >&2
    exit 2
}
WATCHERS=()
for a in "$@"; do
    case "$a" in
    --list)
        printf '%s\n' "${ALL_WATCHERS[@]}"
        exit 0
        ;;
    -h | --help) usage ;;
    -*) usage ;;
    *)
        ok=0
        for w in "${ALL_WATCHERS[@]}"; do [[ "$w" == "$a" ]] && ok=1; done
        ((ok)) || {
            echo "watchers.sh: unknown watcher '$a'" >&2
            usage
        }
        WATCHERS+=("$a")
        ;;
    esac
done
((${#WATCHERS[@]})) || WATCHERS=("${ALL_WATCHERS[@]}")

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$REPO/target/watchers"
VF="$REPO/target/release/vfnotify"
T_START=$EPOCHREALTIME
STEP=start
FAILED=0

log() { printf '[watchers %5.1fs] %s\n' "$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*" >&2; }
die() {
    echo "watchers.sh: $*" >&2
    exit 1
}
# shellcheck disable=SC2154 # rc is set inside the trap
trap 'rc=$?; echo "watchers.sh: failed in step \"$STEP\" (line $LINENO, exit $rc)" >&2' ERR

# ---------------------------------------------------------------------------------------------
# Preconditions, packages, build.
# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (mount(2), FUSE)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing (modprobe fuse)"
command -v cargo >/dev/null || die "cargo is missing"

STEP=packages
apt_missing=()
command -v jq >/dev/null || apt_missing+=(jq)
command -v inotifywait >/dev/null || apt_missing+=(inotify-tools)
command -v gio >/dev/null || apt_missing+=(libglib2.0-bin)
command -v watchman >/dev/null || apt_missing+=(watchman)
command -v stdbuf >/dev/null || apt_missing+=(coreutils)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
if ((${#apt_missing[@]})); then
    log "apt-get install ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get install -y -qq "${apt_missing[@]}" >/dev/null 2>&1 ||
        { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq "${apt_missing[@]}" >/dev/null; } ||
        die "apt-get install ${apt_missing[*]} failed"
fi
mkdir -p "$TOOLS"
if [[ ! -f "$TOOLS/node_modules/chokidar/package.json" ]]; then
    log "npm install chokidar (into $TOOLS)"
    (cd "$TOOLS" && timeout 300 npm install --no-audit --no-fund --silent chokidar >/dev/null) ||
        die "npm install chokidar failed"
fi
if ! "$TOOLS/venv/bin/python" -c 'import watchdog' 2>/dev/null; then
    log "pip install watchdog (into $TOOLS/venv)"
    python3 -m venv "$TOOLS/venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    timeout 300 "$TOOLS/venv/bin/pip" install -q watchdog || die "pip install watchdog failed"
fi

STEP=build
log "cargo build --release"
(cd "$REPO" && cargo build --release --quiet --bin vfnotify) || die "cargo build failed"

# ---------------------------------------------------------------------------------------------
# The watcher adapters: node and python programs, written next to their packages.
# ---------------------------------------------------------------------------------------------
cat >"$TOOLS/fs-watch.cjs" <<'EOF'
// Node's fs.watch(root, {recursive: true}); prints "EVENTTYPE relpath".
const fs = require('fs');
const w = fs.watch(process.argv[2], { recursive: true }, (ev, name) => console.log(ev, name));
w.on('error', (e) => { console.error('error', e.message); process.exit(1); });
EOF
cat >"$TOOLS/chokidar.mjs" <<'EOF'
// chokidar.watch(root) with its defaults (atomic, no polling, follows symlinks); prints
// "EVENT relpath" for every event after the initial scan.
import chokidar from 'chokidar';
import path from 'node:path';
const root = process.argv[2];
const w = chokidar.watch(root, { ignoreInitial: true });
w.on('all', (ev, p) => console.log(ev, path.relative(root, p) || '.'));
w.on('error', (e) => { console.error('error', e); process.exit(1); });
w.on('ready', () => console.error('ready'));
EOF
cat >"$TOOLS/watchdog-watch.py" <<'EOF'
# watchdog's default Observer (InotifyObserver on Linux), recursive; prints
# "event_type[/dir] relpath [-> relpath]" for every event.
import os, sys, time
from watchdog.observers import Observer
from watchdog.events import FileSystemEventHandler
root = sys.argv[1]
rel = lambda p: os.path.relpath(os.fsdecode(p), root)
class H(FileSystemEventHandler):
    def on_any_event(self, e):
        dest = getattr(e, "dest_path", "")
        tail = f" -> {rel(dest)}" if dest else ""
        kind = "/dir" if e.is_directory else ""
        print(f"{e.event_type}{kind} {rel(e.src_path)}{tail}", flush=True)
obs = Observer()
print(type(obs).__name__, file=sys.stderr, flush=True)
obs.schedule(H(), root, recursive=True)
obs.start()
try:
    while obs.is_alive():
        time.sleep(1)
finally:
    obs.stop()
EOF

# ---------------------------------------------------------------------------------------------
# Set-ups, the watchers, normalisation of their output to "EVENT relpath [-> relpath]".
# ---------------------------------------------------------------------------------------------
W="" SRC="" MNT="" CTL="" NAME="" RAW="" CASEDIR=""
PIDS=()     # daemons this run started, killed by pid on teardown
WPIDS=()    # the watcher's processes, killed by pid after each case
MOUNTED=()  # mountpoints to unmount on teardown, last first
MARK_EXT="" # suffix of marker names (the glob watch only reports *.txt)
HOST_MARKS=0 # markers made on SOURCE + notification (vfnotify watch hears host changes only)
SETTLE=0.3  # seconds without new output that count as "the watcher is done"

kill_pids() { # kill_pids PID...: TERM, up to 5 s, then KILL
    local p i
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
stop_watcher() {
    ((${#WPIDS[@]})) && kill_pids "${WPIDS[@]}"
    WPIDS=()
}
teardown() {
    local m i
    stop_watcher
    ((${#PIDS[@]})) && kill_pids "${PIDS[@]}"
    PIDS=()
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        m=${MOUNTED[i]}
        if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; fi
    done
    MOUNTED=()
}
trap 'teardown' EXIT
trap 'teardown; exit 130' INT TERM

bg_daemon() { # bg_daemon OUT ERR CMD...
    local out=$1 err=$2
    shift 2
    "$@" >"$out" 2>"$err" &
    PIDS+=($!)
}
bg_watcher() { # bg_watcher OUT ERR CMD...
    local out=$1 err=$2
    shift 2
    "$@" >"$out" 2>"$err" &
    WPIDS+=($!)
}

setup_overlay() { # setup_overlay NAME: SOURCE, daemon, overlay, linked
    NAME=$1
    W=/tmp/survey-$NAME SRC=$W/src MNT=$W/mnt CTL=$W/control.sock
    STEP="$NAME: set-up"
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    mountpoint -q "$SRC" 2>/dev/null && umount "$SRC"
    rm -rf "$W"
    mkdir -p "$SRC" "$MNT"
    mount -t tmpfs -o size=256m tmpfs "$SRC" || die "$NAME: mount tmpfs $SRC failed"
    MOUNTED+=("$SRC")
    bg_daemon "$W/daemon.out" "$W/daemon.log" "$VF" --listen "unix:$W/peer.sock" --control "$CTL"
    local i
    for i in $(seq 100); do [[ -S "$CTL" ]] && break; sleep 0.1; done
    [[ -S "$CTL" ]] || die "$NAME: the daemon did not create $CTL (see $W/daemon.log)"
    "$VF" mount "$SRC" "$MNT" -o "channel=docs,control=$CTL,cache=always,events=precise,log=$W/overlay.log" ||
        die "$NAME: vfnotify mount failed (see $W/overlay.log)"
    MOUNTED+=("$MNT")
    for i in $(seq 100); do
        [[ $("$VF" status --control "$CTL" --json 2>/dev/null |
            jq -r --arg m "$MNT" '[.overlays[] | select(.mountpoint == $m and .stats.state == "linked")] | length') == 1 ]] && return 0
        sleep 0.1
    done
    die "$NAME: the overlay did not link to the daemon within 10 s"
}

setup_native() { # setup_native NAME: a plain tmpfs, no overlay (the reference for the watcher)
    NAME=$1
    W=/tmp/survey-$NAME-native MNT=$W/mnt SRC=$W/mnt CTL=""
    STEP="$NAME: native set-up"
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    rm -rf "$W"
    mkdir -p "$MNT"
    mount -t tmpfs -o size=256m tmpfs "$MNT" || die "$NAME: mount tmpfs $MNT failed"
    MOUNTED+=("$MNT")
}

watcher_options() { # per watcher: markers, settle time
    MARK_EXT="" HOST_MARKS=0 SETTLE=0.3
    case "$NAME" in
    gio) SETTLE=0.9 ;;      # GFileMonitor rate-limits "changed" (800 ms)
    chokidar) SETTLE=0.6 ;; # chokidar's atomic option holds an unlink 100 ms to merge it with an add
    watchdog) SETTLE=0.5 ;;
    watchman) SETTLE=0.6 ;;
    vfnotify-watch) HOST_MARKS=1 ;;
    vfnotify-watch-glob) HOST_MARKS=1 MARK_EXT=.txt ;;
    vfnotify-watch-unseen) HOST_MARKS=1 MARK_EXT=.pdf ;;
    esac
}

start_watcher() { # start the watcher NAME on MNT, writing $RAW; $RAW.err gets its stderr
    local err=$RAW.err i
    : >"$RAW"
    case "$NAME" in
    inotifywait) bg_watcher "$RAW" "$err" inotifywait -m -r --format '%e %w%f' "$MNT" ;;
    inotifywait-files) # the top folder and each file (as an editor watches the files it has open)
        local files=()
        mapfile -t files < <(find "$MNT" -mindepth 1 -type f)
        bg_watcher "$RAW" "$err" inotifywait -m --format '%e %w%f' "$MNT" "${files[@]}"
        ;;
    gio) bg_watcher "$RAW" "$err" stdbuf -oL gio monitor "$MNT" ;;
    node-fs-watch) bg_watcher "$RAW" "$err" node "$TOOLS/fs-watch.cjs" "$MNT" ;;
    chokidar) bg_watcher "$RAW" "$err" node "$TOOLS/chokidar.mjs" "$MNT" ;;
    watchdog) bg_watcher "$RAW" "$err" "$TOOLS/venv/bin/python" -u "$TOOLS/watchdog-watch.py" "$MNT" ;;
    watchman)
        local wm=$W/wm
        rm -rf "$wm" && mkdir -p "$wm"
        bg_watcher "$wm/server.out" "$wm/server.err" watchman --foreground --no-save-state \
            --sockname="$wm/sock" --logfile="$wm/log" --statefile="$wm/state" --pidfile="$wm/pid"
        for i in $(seq 100); do [[ -S "$wm/sock" ]] && break; sleep 0.05; done
        [[ -S "$wm/sock" ]] || die "watchman: the server did not start (see $wm/log)"
        watchman --sockname="$wm/sock" watch-project "$MNT" >"$wm/watch-project.json" 2>&1 ||
            die "watchman: watch-project $MNT failed: $(cat "$wm/watch-project.json")"
        jq -n -c --arg r "$MNT" '["subscribe", $r, "survey",
            {"expression": ["true"], "fields": ["name", "exists", "new", "type"], "empty_on_fresh_instance": true}]' \
            >"$wm/subscribe.json"
        # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
        bg_watcher "$RAW" "$err" sh -c 'exec stdbuf -oL watchman --sockname="$1" -j -p --no-pretty <"$2"' sh \
            "$wm/sock" "$wm/subscribe.json"
        ;;
    vfnotify-watch) bg_watcher "$RAW" "$err" "$VF" watch --control "$CTL" docs ;;
    vfnotify-watch-glob) bg_watcher "$RAW" "$err" "$VF" watch --control "$CTL" docs '**/*.txt' ;;
    vfnotify-watch-unseen) bg_watcher "$RAW" "$err" "$VF" watch --control "$CTL" docs '**/*.pdf' ;;
    esac
}

# Normalise the raw output (stdin) to "EVENT relpath [-> relpath]" lines.
normalise() {
    case "$NAME" in
    inotifywait*)
        awk -v m="$MNT/" '{ ev = $1; p = substr($0, length(ev) + 2);
            if (index(p, m) == 1) p = substr(p, length(m) + 1); sub(/\/$/, "", p); if (p == "") p = ".";
            print ev, p }'
        ;;
    gio)
        # "MNT: /abs/path: created" / "...: renamed to /abs/other" / "moved in/out ..."
        awk -v m="$MNT" 'BEGIN { ml = length(m) }
            { line = $0; if (index(line, m ": ") == 1) line = substr(line, ml + 3);
              i = index(line, ": "); p = substr(line, 1, i - 1); ev = substr(line, i + 2);
              to = ""; if (match(ev, / (to|from) \//)) { to = substr(ev, RSTART + RLENGTH - 1); ev = substr(ev, 1, RSTART - 1) }
              gsub(/ /, "-", ev);
              if (index(p, m "/") == 1) p = substr(p, ml + 2); else if (p == m) p = ".";
              if (to != "") { if (index(to, m "/") == 1) to = substr(to, ml + 2); print ev, p, "->", to } else print ev, p }'
        ;;
    watchman)
        jq -r --unbuffered 'select(.files) | .files | sort_by(.name)[] |
            "\(if .exists | not then "gone" elif .new then "new" else "changed" end)-\(.type) \(.name)"' 2>/dev/null
        ;;
    *) cat ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Markers and waiting.
# ---------------------------------------------------------------------------------------------
MARK_N=0
alive() { kill -0 "${WPIDS[-1]}" 2>/dev/null; }
quiesce() { # until the watcher printed nothing for SETTLE seconds (at most 30 s)
    local a b t0=$SECONDS
    a=$(stat -c %s "$RAW")
    while :; do
        sleep "$SETTLE"
        b=$(stat -c %s "$RAW")
        [[ "$a" == "$b" ]] && return 0
        a=$b
        ((SECONDS - t0 < 30)) || return 0
    done
}
make_mark() { # make_mark NAME: the marker folder, locally or on the host
    if ((HOST_MARKS)); then
        mkdir "$SRC/$1"
        "$VF" notify --control "$CTL" docs "$1" >/dev/null
    else
        mkdir "$MNT/$1"
    fi
}
wait_seen() { # wait_seen NAME TRIES: the watcher reported NAME (0.05 s a try)
    local i re="$1"
    re=${re//./\\.}
    for ((i = 0; i < $2; i++)); do
        grep -Eq "$re([^0-9]|\$)" "$RAW" && return 0
        alive || return 1
        sleep 0.05
    done
    return 1
}
mark() { # mark: a new marker, and wait (10 s) until the watcher reported it; sets MARK
    MARK_N=$((MARK_N + 1))
    MARK=zz-mark-$MARK_N$MARK_EXT
    make_mark "$MARK"
    wait_seen "$MARK" 200
}
wait_ready() { # the watcher is ready once it reports a marker (a new one every 0.5 s, 60 s at most)
    local _ name
    for _ in $(seq 120); do
        MARK_N=$((MARK_N + 1))
        name=zz-ready-$MARK_N$MARK_EXT
        make_mark "$name"
        wait_seen "$name" 10 && return 0
        alive || return 1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# The change kinds: set-up (always made through MNT, before the watcher starts), the change (in
# $2: MNT or SOURCE), and the scope a host would notify.
# ---------------------------------------------------------------------------------------------
case_setup() { # case_setup CASE: through MNT
    local d=$MNT
    case "$1" in
    create) ;;
    rewrite | append | chmod | utimes | delete | hardlink | atomic-save) printf 'aaaa\n' >"$d/f.txt" ;;
    truncate) printf 'aaaaaaaaaaaa\n' >"$d/f.txt" ;;
    rename-within) printf 'x\n' >"$d/a.txt" ;;
    rename-across) mkdir "$d/d1" "$d/d2" && printf 'x\n' >"$d/d1/a.txt" ;;
    mkdir-tree) ;;
    rm-tree) mkdir -p "$d/a/b/c" && echo 1 >"$d/a/x.txt" && echo 2 >"$d/a/b/y.txt" && echo 3 >"$d/a/b/c/z.txt" ;;
    symlink-retarget) echo 1 >"$d/t1.txt" && echo 2 >"$d/t2.txt" && ln -s t1.txt "$d/link.txt" ;;
    many-files) mkdir "$d/many" ;;
    esac
}
case_change() { # case_change CASE DIR
    local d=$2 i
    case "$1" in
    create) printf 'hello\n' >"$d/new.txt" ;;
    rewrite) printf 'bbbb\n' >"$d/f.txt" ;;
    append) printf 'more\n' >>"$d/f.txt" ;;
    truncate) truncate -s 2 "$d/f.txt" ;;
    chmod) chmod 600 "$d/f.txt" ;;
    utimes) touch -d 2001-02-03 "$d/f.txt" ;;
    delete) rm "$d/f.txt" ;;
    rename-within) mv "$d/a.txt" "$d/b.txt" ;;
    rename-across) mv "$d/d1/a.txt" "$d/d2/a.txt" ;;
    atomic-save) printf 'new content\n' >"$d/.f.txt.tmp" && mv "$d/.f.txt.tmp" "$d/f.txt" ;;
    mkdir-tree) mkdir -p "$d/a/b/c" && echo 1 >"$d/a/x.txt" && echo 2 >"$d/a/b/y.txt" && echo 3 >"$d/a/b/c/z.txt" ;;
    rm-tree) rm -rf "$d/a" ;;
    symlink-retarget) ln -sfn t2.txt "$d/link.txt" ;;
    hardlink) ln "$d/f.txt" "$d/g.txt" ;;
    many-files) for i in $(seq 1000); do echo "$i" >"$d/many/f$i.txt"; done ;;
    esac
}
case_scope() {
    case "$1" in
    create) echo new.txt ;;
    rewrite | append | truncate | chmod | utimes | delete) echo f.txt ;;
    rename-within) echo a.txt b.txt ;;
    rename-across) echo d1/a.txt d2/a.txt ;;
    atomic-save) echo .f.txt.tmp f.txt ;;
    mkdir-tree | rm-tree) echo a ;;
    symlink-retarget) echo link.txt ;;
    hardlink) echo f.txt g.txt ;;
    many-files) echo many ;;
    esac
}
# shellcheck disable=SC2016 # the backquotes are markdown
case_title() {
    case "$1" in
    create) echo 'create `new.txt` with content' ;;
    rewrite) echo 'rewrite `f.txt`, same size' ;;
    append) echo 'append to `f.txt`' ;;
    truncate) echo '`truncate -s 2 f.txt`' ;;
    chmod) echo '`chmod 600 f.txt`' ;;
    utimes) echo '`touch -d 2001-02-03 f.txt`' ;;
    delete) echo '`rm f.txt`' ;;
    rename-within) echo '`mv a.txt b.txt`' ;;
    rename-across) echo '`mv d1/a.txt d2/a.txt`' ;;
    atomic-save) echo 'atomic save: `.f.txt.tmp` renamed over `f.txt`' ;;
    mkdir-tree) echo '`mkdir -p a/b/c` + 3 files' ;;
    rm-tree) echo '`rm -rf a` (a/b/c + 3 files)' ;;
    symlink-retarget) echo '`ln -sfn t2.txt link.txt`' ;;
    hardlink) echo '`ln f.txt g.txt`' ;;
    many-files) echo '1,000 new files in `many/`' ;;
    esac
}


clean_mount() { # remove everything through MNT (each case starts empty)
    find "$MNT" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
}

# seg FROM TO KNOWN: the normalised lines strictly between the first report of marker FROM and
# of TO, marker lines and read-side events left out, names not in KNOWN as <tmp>, consecutive
# duplicates merged.
seg() {
    local from=$1 to=$2 known=$3
    normalise <"$RAW" | awk -v from="$from" -v to="$to" -v known="$known" '
        BEGIN { while ((getline l < known) > 0) k[l] = 1; state = 0 }
        function ismark(p, m) { return p == m || index(p, m "/") == 1 }
        function tmp(p,   n, parts, base) {
            if (p == "." || p in k || p ~ /(^|\/)zz-(mark|ready)-/) return p
            n = split(p, parts, "/"); base = (n > 1) ? substr(p, 1, length(p) - length(parts[n])) : ""
            return base "<tmp>" }
        NF == 0 { next }
        {
            if (state == 0) { if (ismark($2, from)) state = 1; next }
            if (ismark($2, to)) exit
            if ($0 ~ /zz-(mark|ready)-/) next
            if ($1 ~ /^((OPEN|ACCESS|CLOSE_NOWRITE|CLOSE|ISDIR),?)+$/ || $1 ~ /^(opened|closed_no_write)(\/dir)?$/) next
            out = $1 " " tmp($2); if ($3 == "->") out = out " -> " tmp($4)
            if (out != last) print out; last = out
        }'
}
cell() {
    local n
    n=$(wc -l <"$1")
    if ((n == 0)); then
        echo "(nothing)"
    elif ((n > 24)); then
        sed -E 's/[0-9]+/#/g' "$1" | sort | uniq -c | awk '{ c = $1; $1 = ""; printf "%s%d× %s", (NR > 1 ? "; " : ""), c, substr($0, 2) }'
        echo
    else
        awk '{ printf "%s%s", (NR > 1 ? "; " : ""), $0 }' "$1"
        echo
    fi
}
dups() { # dups SEQ: "**N lines repeated**: " when a change was reported more than once (a structured watch reports each once)
    local n
    n=$(sort "$1" | uniq -d | wc -l)
    ((n == 0)) || printf '**%d lines repeated**: ' "$n"
}
verdict() { # verdict LOCAL HOST
    if cmp -s "$1" "$2"; then
        echo same
    elif [[ $(sort -u "$1") == $(sort -u "$2") ]]; then
        echo "same set"
    else
        echo differs
    fi
}

run_case() { # run_case CASE MODE(local|native|scoped|whole): a fresh watcher over the set-up state
    local c=$1 mode=$2 m1 m2
    STEP="$NAME: $c ($mode)"
    RAW=$CASEDIR/$c.$mode.raw
    clean_mount
    case_setup "$c"
    start_watcher
    wait_ready || {
        echo "watchers.sh: $NAME did not report a marker within 60 s ($c, $mode): $(tail -c 600 "$RAW.err")" >&2
        return 1
    }
    quiesce
    mark || return 1
    m1=$MARK
    quiesce
    find "$SRC" -mindepth 1 -printf '%P\n' >"$CASEDIR/$c.$mode.known"
    [[ -n "$CTL" ]] && replay_counters >"$CASEDIR/$c.$mode.before"
    case "$mode" in
    local | native) case_change "$c" "$MNT" ;;
    scoped)
        case_change "$c" "$SRC"
        # shellcheck disable=SC2046 # the scope is a list of words
        "$VF" notify --control "$CTL" docs $(case_scope "$c") >/dev/null
        ;;
    whole)
        case_change "$c" "$SRC"
        "$VF" notify --control "$CTL" docs >/dev/null
        ;;
    esac
    find "$SRC" -mindepth 1 -printf '%P\n' >>"$CASEDIR/$c.$mode.known"
    [[ -n "$CTL" ]] && replay_counters >"$CASEDIR/$c.$mode.after"
    quiesce
    mark || {
        echo "watchers.sh: $NAME stopped reporting markers ($c, $mode): $(tail -c 600 "$RAW.err")" >&2
        return 1
    }
    m2=$MARK
    stop_watcher
    seg "$m1" "$m2" "$CASEDIR/$c.$mode.known" >"$CASEDIR/$c.$mode"
}

REPLAY_COUNTERS=(events_replayed replay_failed replay_retries replay_unheld tree_collapsed)
replay_counters() { # the overlay's replay counters, one "name value" a line
    "$VF" status --control "$CTL" --json |
        jq -r --arg m "$MNT" '.overlays[] | select(.mountpoint == $m) | .stats as $s |
            $ARGS.positional[] | "\(.) \($s[.] // 0)"' --args "${REPLAY_COUNTERS[@]}"
}
counter_note() { # counter_note CASE MODE: "replay_failed +3, ..." for the counters other than events_replayed that moved
    local b=$CASEDIR/$1.$2.before a=$CASEDIR/$1.$2.after
    [[ -f "$b" && -f "$a" ]] || return 0
    join "$b" "$a" | awk '$1 != "events_replayed" && $3 != $2 { printf "%s%s +%d", (n++ ? ", " : ""), $1, $3 - $2 }'
}

run_cases() { # run_cases MODE...: every change kind in each MODE
    local c mode
    for c in "${CASES[@]}"; do
        for mode in "$@"; do run_case "$c" "$mode" || return 1; done
    done
}

survey_watcher() { # the table for one watcher; returns 1 when the watcher failed
    local native=1
    [[ "$1" == vfnotify-watch* ]] && native=0
    CASEDIR=/tmp/survey-$1-cases
    rm -rf "$CASEDIR"
    mkdir -p "$CASEDIR"
    setup_overlay "$1"
    watcher_options
    log "$NAME: on the overlay"
    run_cases local scoped whole || return 1
    "$VF" status --control "$CTL" --json |
        jq -c '.overlays[0].stats | {events_replayed, replay_failed, replay_retries, tree_collapsed, revalidate_unreported}' >"$CASEDIR/stats.json"
    teardown
    if ((native)); then
        setup_native "$1"
        log "$NAME: on a plain tmpfs"
        run_cases native || return 1
        teardown
    fi
    report "$1" "$native"
}

report() { # report NAME NATIVE: the markdown table of one watcher
    local c d=$CASEDIR l n s w vs vw vn
    echo
    echo "### $1"
    echo
    if (($2)); then
        echo "| change | local, through the overlay | same watcher on a plain tmpfs | host + scoped notify | host + whole-channel notify |"
        echo "| --- | --- | --- | --- | --- |"
    else
        echo "| change | local, through the overlay | host + scoped notify | host + whole-channel notify |"
        echo "| --- | --- | --- | --- |"
    fi
    for c in "${CASES[@]}"; do
        l=$(cell "$d/$c.local")
        if (($2)); then
            vn=$(verdict "$d/$c.local" "$d/$c.native")
            vs=$(verdict "$d/$c.local" "$d/$c.scoped")
            vw=$(verdict "$d/$c.local" "$d/$c.whole")
            n=$vn s=$vs w=$vw
            [[ "$vn" == same ]] || n="**$vn**: $(cell "$d/$c.native")"
            [[ "$vs" == same ]] || s="**$vs**: $(cell "$d/$c.scoped")"
            [[ "$vw" == same ]] || w="**$vw**: $(cell "$d/$c.whole")"
            if [[ "$vs" != same && "$vw" != same ]] && cmp -s "$d/$c.scoped" "$d/$c.whole"; then w="$vw, as scoped"; fi
            echo "| $(case_title "$c") | ${l//|/\\|} | ${n//|/\\|} | ${s//|/\\|} | ${w//|/\\|} |"
        else
            s="$(dups "$d/$c.scoped")$(cell "$d/$c.scoped")"
            w="$(dups "$d/$c.whole")$(cell "$d/$c.whole")"
            cmp -s "$d/$c.scoped" "$d/$c.whole" && w="as scoped"
            echo "| $(case_title "$c") | ${l//|/\\|} | ${s//|/\\|} | ${w//|/\\|} |"
        fi
    done
    echo
    echo "Overlay counters after the run: \`$(cat "$d/stats.json")\`"
    local notes=() note mode
    for c in "${CASES[@]}"; do
        for mode in local scoped whole; do
            note=$(counter_note "$c" "$mode")
            [[ -n "$note" ]] && notes+=("$c ($mode): $note")
        done
    done
    if ((${#notes[@]})); then
        echo
        echo "Replay counters that moved: $(printf '%s; ' "${notes[@]}" | sed 's/; $//')."
    fi
}

# A folder no guest client ever listed, and a deep change in it: does a glob watch hear it?
survey_unseen() {
    setup_overlay vfnotify-watch-unseen
    watcher_options
    mkdir -p "$SRC/unseen" "$SRC/other"
    echo old >"$SRC/unseen/old.txt"
    RAW=$W/raw
    start_watcher
    wait_ready || {
        echo "watchers.sh: vfnotify watch did not report its first marker" >&2
        return 1
    }
    local rows=() how f scope got
    for how in file parent whole; do
        f=unseen/deep-$how/report.pdf
        case "$how" in
        file) scope=$f ;;
        parent) scope=unseen ;;
        whole) scope="" ;;
        esac
        mkdir -p "$SRC/$(dirname "$f")"
        echo pdf >"$SRC/$f"
        # shellcheck disable=SC2086 # an empty scope is no argument
        "$VF" notify --control "$CTL" docs $scope >/dev/null
        got=no
        wait_seen "create $f" 60 && got=yes
        rows+=("| host makes \`$f\`, then \`vfnotify notify docs${scope:+ $scope}\` | $got | $(grep -F "deep-$how" "$RAW" | awk '{ printf "%s%s", (NR > 1 ? "; " : ""), $0 }') |")
    done
    echo
    echo "### vfnotify watch docs '**/*.pdf', folder never listed by a guest client"
    echo
    echo "\`unseen/\` (with \`old.txt\`) exists on SOURCE before the mount; nothing lists it through the overlay."
    echo
    echo "| host change | reported | lines |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Overlay counters: \`$("$VF" status --control "$CTL" --json | jq -c '.overlays[0].stats | {reach_entries, reach_truncated}')\`"
}

echo "## Watchers on a vfnotify overlay"
echo
echo "$(uname -sr); $(inotifywait --help 2>&1 | head -1); gio $(dpkg-query -W -f '${Version}' libglib2.0-bin 2>/dev/null);"
echo "node $(node --version), chokidar $(jq -r .version "$TOOLS/node_modules/chokidar/package.json");"
echo "watchdog $("$TOOLS/venv/bin/python" -c 'import watchdog.version as v; print(v.VERSION_STRING)');"
echo "watchman $(watchman --version 2>/dev/null); $("$VF" --version)."
for w in "${WATCHERS[@]}"; do
    log "$w"
    if [[ "$w" == vfnotify-watch-unseen ]]; then
        survey_unseen || FAILED=1
    else
        survey_watcher "$w" || FAILED=1
    fi
    teardown
done
log "done"
exit "$FAILED"
