# Shared by bench/run.sh and bench/deployed.sh (sourced): logging with the run's clock, failure
# with the step's name, and commands with a time limit. Needs T_START, STEP and BENCH_TAG.

log() { printf '[%s %5.1fs] %s\n' "$BENCH_TAG" "$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*" >&2; }
die() {
    echo "bench: $*" >&2
    exit 1
}
# Run a command with a time limit; a timeout or failure names the step.
to() {
    local secs=$1
    shift
    if ! timeout -k 5 "$secs" "$@"; then
        die "step '$STEP' failed or timed out after ${secs}s: $*"
    fi
}
trap 'rc=$?; echo "bench: failed in step \"$STEP\" (line $LINENO, exit $rc)" >&2' ERR

# Build the binary and the examples (REPO: the repository).
build_all() {
    STEP="build"
    log "building (cargo build --release --bins --examples)"
    (cd "$REPO" && to 1800 cargo build --release --bins --examples --quiet) || die "build failed"
}
# T_BUILT and LOAD0 for the report; a warning when other work shares the machine.
note_load() {
    T_BUILT=$EPOCHREALTIME
    LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
    if awk -v l="${LOAD0%% *}" 'BEGIN{exit !(l > 1.0)}'; then
        log "warning: load average $LOAD0 — other work on this machine will skew the figures"
    fi
}
