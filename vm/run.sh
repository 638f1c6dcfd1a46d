#!/usr/bin/env bash
# vfnotify end-to-end VM test: a Debian 6.12 guest under QEMU with a virtiofs share (virtiofsd)
# and vsock (vhost-device-vsock, hybrid vsock on a Unix socket). The guest runs the vfnotify
# daemon and the overlay over the share; on the host, `vfnotify host --to hvsock:...:3401` watches
# the shared folder (a private tmpfs) and tells the guest; this script only changes files there,
# and reads the guest's verdicts from its serial console: the notification checks, whether the
# overlay uses kernel FUSE passthrough, and the guest's read timings through the overlay against
# the bare virtiofs mount. See vm/README.md.
#
# Environment: VFNOTIFY_VM_CACHE (default ~/.cache/vfnotify-vm), VFNOTIFY_VM_TIMEOUT (whole guest
# run, seconds, default 480), VFNOTIFY_VM_ACCEL (kvm|tcg, default: kvm when /dev/kvm works, else
# tcg), VFNOTIFY_VM_STEP_DEADLINE (per-check guest deadline, seconds, default 30),
# VFNOTIFY_VM_VERBOSE=1 (guest dumps its logs even when every check passes), VFNOTIFY_VM_VIRTIOFS_CACHE
# (virtiofsd --cache: never (default: the overlay is the cache), auto, metadata, always),
# VFNOTIFY_VM_HOST_BACKEND (`vfnotify host --backend`: auto (default), fanotify, inotify),
# VFNOTIFY_VM_KERNEL_PKG (the guest kernel's Debian package, default linux-image-6.12-amd64;
# linux-image-amd64 for bookworm's 6.1), VFNOTIFY_VM_BENCH_MIB (the guest read timings' big
# file, MiB, default 32; 0: no timings).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VFNOTIFY_VM_CACHE:-$HOME/.cache/vfnotify-vm}
TIMEOUT=${VFNOTIFY_VM_TIMEOUT:-480}
STEP_DEADLINE=${VFNOTIFY_VM_STEP_DEADLINE:-30}
VIRTIOFS_CACHE=${VFNOTIFY_VM_VIRTIOFS_CACHE:-never}
HOST_BACKEND=${VFNOTIFY_VM_HOST_BACKEND:-auto}
BENCH_MIB=${VFNOTIFY_VM_BENCH_MIB:-32}
T0=$(date +%s)

say() { echo "vm-test: $*" >&2; }
fatal() {
    say "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------- temp dir and cleanup
WORK=$(mktemp -d /tmp/vfnotify-vm.XXXXXX)
PIDS=()
SHARE_MOUNTED=0
cleanup() {
    local rc=$?
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$SHARE_MOUNTED" = 1 ]; then
        umount "$WORK/share" 2>/dev/null || umount -l "$WORK/share" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- host packages (Debian)
APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq >"$WORK/apt.log" 2>&1 || fatal "apt-get update failed: $(tail -3 "$WORK/apt.log")"
        APT_UPDATED=1
    fi
}
need_pkgs=()
for p in qemu-system-x86 busybox-static cpio libcap-ng-dev libseccomp-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fatal "missing Debian packages ${need_pkgs[*]} (run as root to install them)"
    apt_update_once
    say "apt-get install ${need_pkgs[*]}"
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need_pkgs[@]}" >"$WORK/apt.log" 2>&1 \
        || fatal "apt-get install failed: $(tail -5 "$WORK/apt.log")"
fi

# ---------------------------------------------------------------- virtiofsd, vhost-device-vsock
mkdir -p "$CACHE/bin"
for tool in virtiofsd vhost-device-vsock; do
    if [ ! -x "$CACHE/bin/$tool" ]; then
        say "cargo install $tool (once; cached in $CACHE/bin)"
        cargo install --locked --root "$CACHE" "$tool" >"$WORK/cargo-$tool.log" 2>&1 \
            || fatal "cargo install $tool failed: $(tail -20 "$WORK/cargo-$tool.log")"
    fi
done
VIRTIOFSD=$CACHE/bin/virtiofsd
VSOCKD=$CACHE/bin/vhost-device-vsock

# ---------------------------------------------------------------- guest kernel (Debian bookworm)
# The kernel named by a meta package (default linux-image-6.12-amd64: bookworm's 6.12, which has
# FUSE passthrough; 6.1, linux-image-amd64, has none), resolved from the local apt lists on every
# run: when a security update names a new image package, the cache is replaced. Only the kernel
# and the modules are kept; the package is never installed.
KPKG=${VFNOTIFY_VM_KERNEL_PKG:-linux-image-6.12-amd64}
KDIR=$CACHE/kernel
resolve_kernel() { # META -> "IMAGE-PACKAGE VERSION" of its candidate, from the local apt lists
    local info dep
    info=$(apt-cache show --no-all-versions "$1" 2>/dev/null) && [ -n "$info" ] || return 1
    dep=$(sed -n 's/^Depends: //p' <<<"$info" | grep -o 'linux-image-[0-9][^ ,]*' | head -1)
    dep=${dep:-$1} # an image package itself (it depends on no other image)
    echo "$dep $(apt-cache show --no-all-versions "$dep" 2>/dev/null | sed -n 's/^Version: //p' | head -1)"
}
newest_612() { # fallback: the newest 6.12 amd64 image package the lists name
    apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64(-unsigned)?$' 2>/dev/null \
        | cut -d' ' -f1 | sort -V | tail -1
}
want=$(resolve_kernel "$KPKG" || true)
if [ -z "$want" ] && [ ! -f "$KDIR/package" ]; then
    apt_update_once
    want=$(resolve_kernel "$KPKG" || true)
fi
if [ -z "$want" ] && [ -z "${VFNOTIFY_VM_KERNEL_PKG:-}" ] && [ ! -f "$KDIR/package" ]; then
    fb=$(newest_612)
    [ -n "$fb" ] && want=$(resolve_kernel "$fb" || true)
    [ -n "$want" ] && say "WARNING: no $KPKG in the apt lists; falling back to ${want% *} (no security updates followed)"
fi
if [ -z "$want" ]; then
    if [ -f "$KDIR/package" ]; then
        say "WARNING: $KPKG not in the apt lists; using the cached $(cat "$KDIR/package")"
        want=$(cat "$KDIR/package")
    else
        fatal "no kernel package: $KPKG is not in the apt lists (VFNOTIFY_VM_KERNEL_PKG names another)"
    fi
fi
if [ "$(cat "$KDIR/package" 2>/dev/null)" != "$want" ] || [ ! -f "$KDIR/vmlinuz" ] || [ ! -f "$KDIR/release" ]; then
    real=${want% *}
    say "fetching the kernel package $real ${want#* } for $KPKG (cached in $KDIR)"
    [ -f "$KDIR/package" ] && say "  replacing the cached $(cat "$KDIR/package")"
    rm -rf "$KDIR"
    mkdir -p "$KDIR/deb"
    if ! (cd "$KDIR/deb" && apt-get download "$real" >"$WORK/apt.log" 2>&1); then
        # Stale lists name a version the mirror no longer has: update them, resolve again.
        [ "$APT_UPDATED" = 0 ] || fatal "apt-get download $real failed: $(tail -3 "$WORK/apt.log")"
        apt_update_once
        want=$(resolve_kernel "$KPKG") || fatal "$KPKG is not in the apt lists after apt-get update"
        real=${want% *}
        (cd "$KDIR/deb" && apt-get download "$real" >"$WORK/apt.log" 2>&1) \
            || fatal "apt-get download $real failed: $(tail -3 "$WORK/apt.log")"
    fi
    dpkg-deb -x "$KDIR"/deb/"$real"_*.deb "$KDIR/x"
    rel=$(ls "$KDIR/x/lib/modules")
    cp "$KDIR/x/boot/vmlinuz-$rel" "$KDIR/vmlinuz"
    cp "$KDIR/x/boot/config-$rel" "$KDIR/config"
    rm -rf "$KDIR/deb" "$KDIR/x/usr" "$KDIR/x/boot"
    echo "$rel" >"$KDIR/release"
    echo "$want" >"$KDIR/package"
fi
KREL=$(cat "$KDIR/release")
MODDIR=$KDIR/x/lib/modules/$KREL
# FUSE passthrough (6.9+, CONFIG_FUSE_PASSTHROUGH): the guest then checks the overlay uses it.
if grep -qx 'CONFIG_FUSE_PASSTHROUGH=y' "$KDIR/config" 2>/dev/null; then KPT=1; else KPT=0; fi

# ---------------------------------------------------------------- vfnotify and the guest watcher
say "cargo build --release"
(cd "$REPO" && cargo build --release --quiet) || fatal "cargo build --release failed"
TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
VFN=$TARGET_DIR/release/vfnotify
[ -x "$VFN" ] || fatal "no $VFN after the build"
guest_tool() { # NAME: vm/NAME.rs built with plain rustc into the cache (once, or when newer)
    if [ ! -x "$CACHE/$1" ] || [ "$REPO/vm/$1.rs" -nt "$CACHE/$1" ]; then
        rustc -O -C strip=symbols --edition 2024 -o "$CACHE/$1" "$REPO/vm/$1.rs" \
            || fatal "building vm/$1.rs failed"
    fi
}
guest_tool inotify-log
guest_tool read-bench
WATCHER=$CACHE/inotify-log

# ---------------------------------------------------------------- initramfs
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,etc,lib/modules,proc,sys,dev,run,tmp,share,mnt}
cp /bin/busybox "$ROOT/bin/busybox"
file_of_module() {
    local f
    f=$(find "$MODDIR/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -1)
    [ -n "$f" ] || fatal "kernel module $1 not in $MODDIR"
    echo "$f"
}
# The module uncompressed in the initramfs (busybox insmod takes plain .ko; Debian's 6.12
# compresses them all with xz): $ROOT/lib/modules/NAME.ko.
unpack_module() {
    local f out=$ROOT/lib/modules/$1.ko
    f=$(file_of_module "$1")
    case "$f" in
    *.ko) cp "$f" "$out" ;;
    *.ko.xz) xz -dc "$f" >"$out" || fatal "xz -d $f failed (install xz-utils)" ;;
    *.ko.zst) zstd -qdc "$f" >"$out" || fatal "zstd -d $f failed (install zstd)" ;;
    esac
}
ORDER=()
add_module() { # dependencies first (from the module's own .modinfo `depends=`)
    local m=$1 dep seen
    for seen in "${ORDER[@]}"; do [ "$seen" = "$m" ] && return 0; done
    unpack_module "$m"
    for dep in $(tr '\0' '\n' <"$ROOT/lib/modules/$m.ko" | grep -a '^depends=' | head -1 | cut -d= -f2 | tr ',' ' '); do
        add_module "$dep"
    done
    ORDER+=("$m")
}
for m in virtio_pci virtiofs fuse vsock vmw_vsock_virtio_transport; do
    # Built in (=y) in some kernels (6.12: virtio_pci, fuse, virtiofs): then there is no .ko and
    # nothing to load.
    if [ -n "$(find "$MODDIR/kernel" -name "$m.ko*" | head -1)" ]; then add_module "$m"; fi
done
printf '%s\n' "${ORDER[@]}" >"$ROOT/etc/modules.order"
say "guest kernel $KREL ($(cut -d' ' -f1 "$KDIR/package")), modules: ${ORDER[*]:-none}, FUSE passthrough: $([ "$KPT" = 1 ] && echo yes || echo no)"

copy_with_libs() { # BIN DEST: the binary and the shared libraries ldd names, at their paths
    cp "$1" "$ROOT$2"
    local lib
    for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
}
copy_with_libs "$VFN" /usr/bin/vfnotify
copy_with_libs "$WATCHER" /usr/bin/inotify-log
copy_with_libs "$CACHE/read-bench" /usr/bin/read-bench
cp "$REPO/vm/init" "$ROOT/init"
chmod 755 "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.gz"

# ---------------------------------------------------------------- host daemons
# The shared folder is a private tmpfs: the host watcher's fanotify filesystem mark then sees
# this test's changes only (on this machine's own filesystem it would see the whole machine).
SHARE=$WORK/share
mkdir -p "$SHARE"
[ "$(id -u)" = 0 ] || fatal "run as root (the shared folder is a private tmpfs mount)"
mount -t tmpfs -o size=$((64 + 2 * BENCH_MIB))m,mode=0755 vfnotify-vm-share "$SHARE" || fatal "mount tmpfs at $SHARE"
SHARE_MOUNTED=1
echo "vfnotify vm test" >"$SHARE/.vm-share"
# What the guest's read timings read (made before the host watcher starts: no notifications):
# bench/big.bin and a tree of 200 small files (1-3 KiB) in 10 folders.
if [ "$BENCH_MIB" -gt 0 ]; then
    mkdir -p "$SHARE/bench/tree"
    head -c "$((BENCH_MIB << 20))" /dev/urandom >"$SHARE/bench/big.bin"
    for d in $(seq -w 0 9); do
        mkdir "$SHARE/bench/tree/d$d"
        for f in $(seq -w 0 19); do head -c $((1024 + 100 * 10#$f)) /dev/urandom >"$SHARE/bench/tree/d$d/f$f"; done
    done
fi
FS_SOCK=$WORK/virtiofs.sock
VS_SOCK=$WORK/vhost-vsock.sock
HV_SOCK=$WORK/vm.vsock
SERIAL=$WORK/serial.log
: >"$SERIAL"

wait_socket() { # PATH PID NAME LOG
    for _ in $(seq 100); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || fatal "$3 exited: $(tail -5 "$4")"
        sleep 0.1
    done
    fatal "$3 did not create $1: $(tail -5 "$4")"
}
# The guest's device back ends: each serves one guest and exits when it goes, so a second boot
# (see boot_guest) gets new ones.
BACKENDS=()
start_backends() {
    local p
    for p in "${BACKENDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    BACKENDS=()
    rm -f "$FS_SOCK" "$VS_SOCK" "$HV_SOCK"
    "$VIRTIOFSD" --socket-path="$FS_SOCK" --shared-dir="$SHARE" --cache="$VIRTIOFS_CACHE" --sandbox=none \
        >>"$WORK/virtiofsd.log" 2>&1 &
    PIDS+=($!)
    BACKENDS+=($!)
    wait_socket "$FS_SOCK" $! virtiofsd "$WORK/virtiofsd.log"
    "$VSOCKD" --vm "guest-cid=3,uds-path=$HV_SOCK,socket=$VS_SOCK" >>"$WORK/vsock.log" 2>&1 &
    PIDS+=($!)
    BACKENDS+=($!)
    wait_socket "$VS_SOCK" $! vhost-device-vsock "$WORK/vsock.log"
}
start_backends
# The host side: watches SHARE, connects to the guest daemon over hybrid vsock (retrying with
# backoff until the guest is up), tells it each change.
HOST_CTL=$WORK/host.sock
start_host() {
    "$VFN" host --watch "docs=$SHARE" --to "hvsock:$HV_SOCK:3401" --control "$HOST_CTL" \
        --backend "$HOST_BACKEND" -d >>"$WORK/host.log" 2>&1 &
    HOST_PID=$!
    PIDS+=("$HOST_PID")
    wait_socket "$HOST_CTL" "$HOST_PID" "vfnotify host" "$WORK/host.log"
}
start_host
say "host watcher: $(grep -m1 -o 'watching with [a-z]*' "$WORK/host.log" || echo started) (pid $HOST_PID)"

# KVM only when it really runs this kernel: /dev/kvm may exist and still not run a normal guest
# (a nested or paravirtual KVM such as kvm-pvm hangs as the kernel starts). Probe: the kernel's
# first line on the serial console within 10 s.
kvm_boots() {
    [ -w /dev/kvm ] || return 1
    local log=$WORK/probe.log pid ok=1
    qemu-system-x86_64 -machine q35 -accel kvm -cpu host -m 256M -kernel "$KDIR/vmlinuz" \
        -append "earlyprintk=ttyS0 console=ttyS0 panic=-1" -display none -monitor none \
        -serial "file:$log" -no-reboot >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        if grep -qa 'Linux version' "$log" 2>/dev/null; then ok=0; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return $ok
}
ACCEL=${VFNOTIFY_VM_ACCEL:-}
if [ -z "$ACCEL" ]; then
    if kvm_boots; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in
kvm) CPU=host ;;
*) CPU=max ;;
esac
# The guest kernel under TCG has been seen to oops while booting, before init runs (an int3 in
# sched_clock_cpu during sched_init_debug; QEMU's cross-vCPU code patching, nothing of ours):
# such a boot is made again, once, and said so.
BOOTS=0
boot_guest() {
    BOOTS=$((BOOTS + 1))
    : >"$SERIAL"
    BOOT0=$(date +%s)
    qemu-system-x86_64 \
        -machine q35 -accel "$ACCEL" -cpu "$CPU" -smp 2 -m 512M \
        -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
        -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.gz" \
        -append "console=ttyS0 panic=-1 quiet loglevel=3 VM_DEADLINE=$STEP_DEADLINE VM_VERBOSE=${VFNOTIFY_VM_VERBOSE:-} VM_PASSTHROUGH=$KPT VM_BENCH=$BENCH_MIB" \
        -chardev socket,id=fs0,path="$FS_SOCK" -device vhost-user-fs-pci,chardev=fs0,tag=share \
        -chardev socket,id=vs0,path="$VS_SOCK" -device vhost-user-vsock-pci,chardev=vs0 \
        -display none -monitor none -serial "file:$SERIAL" -no-reboot \
        >"$WORK/qemu.log" 2>&1 &
    QEMU=$!
    PIDS+=("$QEMU")
}
# A boot that crashed before init said anything: the kernel's first oops or panic line, or nothing.
boot_crash() {
    tr -d '\r' <"$SERIAL" | grep -q -a '^VFNOTIFY-VM ' && return 1
    tr -d '\r' <"$SERIAL" | grep -a -m1 -E 'Oops|Kernel panic|BUG:|general protection fault' || return 1
}
say "booting the guest (accel=$ACCEL, virtiofsd --cache=$VIRTIOFS_CACHE)"
boot_guest

# ---------------------------------------------------------------- the host's scripted changes
# Only changes: the host watcher notifies the guest. Step 8 is made while the watcher is stopped:
# it reaches the guest as the whole channel the watcher sends after it reconnects.
HOST_ERRORS=()
HOST_STATUS=""
host_connected() { "$VFN" host status --control "$HOST_CTL" 2>/dev/null | grep -q '\[connected\]'; }
wait_host_connected() {
    for _ in $(seq 600); do
        host_connected && return 0
        kill -0 "$HOST_PID" 2>/dev/null || break
        sleep 0.1
    done
    say "HOST the watcher is not connected to the guest: $(tail -3 "$WORK/host.log")"
    HOST_ERRORS+=("host watcher not connected")
    return 1
}
stop_host() {
    kill "$HOST_PID" 2>/dev/null || true
    wait "$HOST_PID" 2>/dev/null || true
    rm -f "$HOST_CTL"
}
# After each change, `vfnotify host sync` (the cross-VM barrier): it must return 0, i.e. the
# guest daemon answered the hello over hybrid vsock and acknowledged once its overlay had handled
# the change (step 8: once it had handled the whole channel sent after the reconnection).
SYNCS=0
host_sync() {
    local out
    if out=$("$VFN" host sync --control "$HOST_CTL" --timeout "${STEP_DEADLINE}s" 2>&1); then
        SYNCS=$((SYNCS + 1))
    else
        say "HOST sync after step $1 failed: $(tr '\n' ' ' <<<"$out")"
        HOST_ERRORS+=("vfnotify host sync after step $1")
    fi
}
host_step() {
    if [ "$1" = 1 ]; then wait_host_connected || true; fi
    kill -0 "$HOST_PID" 2>/dev/null || HOST_ERRORS+=("vfnotify host exited before step $1")
    cd "$SHARE"
    case $1 in
    1) printf 'hello\n' >new.txt ;;
    2) printf 'hello, world: version 2\n' >new.txt ;;
    3) printf 'HELLO, WORLD: VERSION 3\n' >new.txt ;;
    4) mv new.txt renamed.txt ;;
    5) chmod 600 renamed.txt ;;
    6) rm renamed.txt ;;
    7) mkdir sub && printf 'inner\n' >sub/inner.txt ;;
    8) stop_host && printf 'whole\n' >whole.txt && start_host && { wait_host_connected || true; } ;;
    9) rm -r sub ;;
    10) HOST_STATUS=$("$VFN" host status --control "$HOST_CTL" 2>&1 | sed -n '/^guests:/,/^counters:/p' | tr '\n' ' ' | sed 's/  */ /g') ;;
    *) ;;
    esac
    case $1 in [1-9]) host_sync "$1" ;; esac
    cd - >/dev/null
}
lines() { tr -d '\r' <"$SERIAL" | grep -a '^VFNOTIFY-VM ' || true; }

next=1
result=""
while :; do
    now=$(date +%s)
    if lines | grep -q '^VFNOTIFY-VM DONE '; then
        result=done
        break
    fi
    if [ "$BOOTS" -lt 2 ] && [ "$next" = 1 ] && crash=$(boot_crash); then
        kill "$QEMU" 2>/dev/null || true
        wait "$QEMU" 2>/dev/null || true
        mkdir -p "$CACHE"
        tr -d '\r' <"$SERIAL" >"$CACHE/crashed-boot-serial.log"
        say "the guest kernel crashed while booting, before init ($crash); booting again (its serial log: $CACHE/crashed-boot-serial.log)"
        start_backends
        boot_guest
        continue
    fi
    if ! kill -0 "$QEMU" 2>/dev/null; then
        result="qemu exited before DONE"
        break
    fi
    if [ $((now - BOOT0)) -ge "$TIMEOUT" ]; then
        result="timeout after ${TIMEOUT}s (last step announced: $((next - 1)))"
        break
    fi
    if lines | grep -q "^VFNOTIFY-VM STEP $next READY"; then
        say "step $next: $(lines | grep "^VFNOTIFY-VM STEP $next READY" | cut -d' ' -f5-)"
        host_step "$next"
        next=$((next + 1))
        continue
    fi
    sleep 0.2
done
# Let the guest power off by itself.
for _ in $(seq 100); do kill -0 "$QEMU" 2>/dev/null || break; sleep 0.1; done
T1=$(date +%s)

mkdir -p "$CACHE"
tr -d '\r' <"$SERIAL" >"$CACHE/last-serial.log"
echo
lines | grep -v '^VFNOTIFY-VM STEP ' || true
echo
pass=$(lines | grep -c '^VFNOTIFY-VM CHECK .* ok$' || true)
fail=$(lines | grep -c '^VFNOTIFY-VM CHECK .* FAIL' || true)
[ -n "$HOST_STATUS" ] && say "host watcher: $HOST_STATUS"
say "host syncs acknowledged: $SYNCS of 9"
say "guest serial log: $CACHE/last-serial.log"
say "runtime: $((T1 - T0)) s in all, guest $((T1 - BOOT0)) s (accel=$ACCEL)"
if [ "$result" != done ]; then
    say "FAILED: $result"
    tail -n 40 "$CACHE/last-serial.log" >&2
    tail -n 5 "$WORK/qemu.log" "$WORK/virtiofsd.log" "$WORK/vsock.log" "$WORK/host.log" >&2 || true
    exit 1
fi
# Checks the guest must have made (a guest that skipped them fails too).
required=()
[ "$KPT" = 1 ] && required+=(passthrough)
[ "$BENCH_MIB" -gt 0 ] && required+=(bench)
for c in "${required[@]}"; do
    lines | grep -q "^VFNOTIFY-VM CHECK $c " || HOST_ERRORS+=("no CHECK $c from the guest")
done
echo "vm-test: $pass passed, $fail failed"
if [ "$fail" -ne 0 ] || [ ${#HOST_ERRORS[@]} -ne 0 ] || [ "$pass" -eq 0 ]; then
    say "FAILED: $pass checks passed, $fail failed, ${#HOST_ERRORS[@]} host errors${HOST_ERRORS[*]:+: ${HOST_ERRORS[*]}}"
    exit 1
fi
