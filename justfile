# vfnotify developer recipes. `cargo install just` if you do not have it.

prefix := "/usr/local"

# Debug build.
build:
    cargo build

# The README's test command (as root: FUSE tests skip with a reason without /dev/fuse or root).
test:
    cargo test --release

# The model test with N random cases (`cargo test` runs 48): host changes, notifications and guest
# operations checked against SOURCE (as root; docs/conformance.md). `just model 10000` takes a few
# minutes here.
model n="1000":
    VFNOTIFY_REQUIRE_FUSE=1 VFNOTIFY_MODEL_CASES={{n}} cargo test --release --test model model_random_interleavings -- --nocapture

# rustfmt and clippy, as CI runs them.
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Benchmark against native and peers: `just bench` (full, < 5 min) or `just bench quick` (< 1 min);
# `just bench full ext4` puts SOURCE on an ext4 loop image (bench/RESULTS-ext4.md);
# `just bench full virtiofs` measures the deployed stack, SOURCE a stand-in for a virtiofs mount
# under `virtiofsd --cache=never` with the requests reaching it counted (bench/RESULTS-virtiofs.md).
bench mode="full" fs="tmpfs":
    bash bench/run.sh {{mode}} {{fs}}

# The one-command tour.
demo *args:
    cargo run --release -- demo {{args}}

# Long soak: 1,000,000 notifications while fsx and a watcher run (minutes; not in `test`).
soak:
    bash bench/soak.sh

# Install the binary, the mount(8) helper link and the systemd unit.
install:
    cargo build --release
    install -Dm755 target/release/vfnotify {{prefix}}/bin/vfnotify
    install -d /sbin
    ln -sf {{prefix}}/bin/vfnotify /sbin/mount.fuse.vfnotify
    install -Dm644 contrib/vfnotify.service /etc/systemd/system/vfnotify.service
    @echo "installed: {{prefix}}/bin/vfnotify, /sbin/mount.fuse.vfnotify, /etc/systemd/system/vfnotify.service"

# End-to-end test in a Debian 6.1 guest under QEMU: virtiofs share + vsock, daemon and overlay (minutes; not in `test`).
vm-test:
    bash vm/run.sh
