//! The end-to-end VM test (`vm/run.sh`): a Debian guest under QEMU with a virtiofs share and vsock,
//! running the daemon and the overlay. It installs packages and boots a VM, so it runs only when
//! asked: `VFNOTIFY_VM_TEST=1 cargo test --release --test vm -- --nocapture` (or `just vm-test`).

use std::path::Path;
use std::process::Command;

#[test]
fn vm_end_to_end() {
    if std::env::var_os("VFNOTIFY_VM_TEST").is_none_or(|v| v != "1") {
        println!(
            "SKIP vm_end_to_end: boots a QEMU guest (minutes, needs root and Debian packages); \
             run it with VFNOTIFY_VM_TEST=1 cargo test --release --test vm -- --nocapture, \
             or just vm-test"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/run.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("running bash vm/run.sh");
    assert!(status.success(), "vm/run.sh failed: {status}");
}
