//! The end-to-end VM test (`vm/run.sh`): a Debian 6.12 guest under QEMU with a virtiofs share and
//! vsock, running the daemon and the overlay (with kernel FUSE passthrough, checked in the guest).
//! The guest also reports read timings through the overlay against the bare virtiofs mount
//! (`VFNOTIFY-VM BENCH` lines, ratios; shown with `--nocapture`); only a failing measurement fails.
//!
//! It runs when its tools are present (root, `qemu-system-x86_64`, and virtiofsd,
//! vhost-device-vsock and the guest kernel cached by an earlier `just vm-test` in
//! `~/.cache/vfnotify-vm`), or when asked with `VFNOTIFY_VM_TEST=1` (which lets `vm/run.sh`
//! install what is missing: about 10 minutes the first time). `VFNOTIFY_VM_TEST=0` skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cache() -> PathBuf {
    std::env::var_os("VFNOTIFY_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/vfnotify-vm")
        })
}

/// Why the tools are not all here, if they are not.
fn missing_tools() -> Option<String> {
    let c = cache();
    for p in ["bin/virtiofsd", "bin/vhost-device-vsock", "kernel"] {
        if !c.join(p).exists() {
            return Some(format!(
                "{} is missing (run `just vm-test` once)",
                c.join(p).display()
            ));
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").exists()))
        .unwrap_or(false);
    if !on_path {
        return Some("qemu-system-x86_64 is not installed".into());
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("it needs root".into());
    }
    None
}

#[test]
fn vm_end_to_end() {
    let asked = std::env::var("VFNOTIFY_VM_TEST").ok();
    if asked.as_deref() == Some("0") {
        println!("SKIP vm_end_to_end: VFNOTIFY_VM_TEST=0");
        return;
    }
    if asked.as_deref() != Some("1") {
        if let Some(why) = missing_tools() {
            println!(
                "SKIP vm_end_to_end: {why}; run it with `just vm-test` or \
                 VFNOTIFY_VM_TEST=1 cargo test --release --test vm -- --nocapture"
            );
            return;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/run.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("running bash vm/run.sh");
    assert!(status.success(), "vm/run.sh failed: {status}");
}
