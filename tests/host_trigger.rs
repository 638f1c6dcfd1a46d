//! A trigger-mode guest (no overlay: the daemon toggles `.virtiofs-refresh` in the shared folder)
//! whose share `vfnotify host` watches: the guest's own toggle is a change of the shared folder,
//! and sending it back would make the guest toggle again, forever. The host ignores the trigger
//! file's name (`--ignore-name`), and the guest ignores a notification of its own trigger file.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/host.rs"]
mod host_support;

use std::fs;
use std::time::{Duration, Instant};

use daemon_support::{Daemon, poll_until};
use host_support::{Host, Tmpfs};

const BACKENDS: [&str; 2] = ["fanotify", "inotify"];

#[test]
fn a_trigger_mode_guest_on_a_watched_share_toggles_once_per_change() {
    if !host_support::root_ready("host_trigger_loop") {
        return;
    }
    for backend in BACKENDS {
        let tmp = Tmpfs::new();
        let docs = tmp.path.join("docs");
        fs::create_dir_all(&docs).unwrap();
        let map = format!("docs={}", docs.display());
        let guest = Daemon::start(&["--map", &map, "--coalesce-ms", "0"]);
        let watch = format!("docs={}", docs.display());
        let to = format!("unix:{}", guest.peer.display());
        let host = Host::start(&["--watch", &watch, "--backend", backend, "--to", &to]);
        host.wait_connected(std::slice::from_ref(&to));
        // The first line (the whole channel, sent at connection) toggles once.
        poll_until("the first toggle", Duration::from_secs(10), || {
            guest.counter("triggers_ok") >= 1
        });
        fs::write(docs.join("report.txt"), b"v1").unwrap();
        poll_until("the change's toggle", Duration::from_secs(10), || {
            guest.counter("triggers_ok") >= 2
        });
        // Quiet for a while: no further toggles (a loop runs at tens per second).
        let t = Instant::now();
        let before = guest.counter("triggers_ok");
        while t.elapsed() < Duration::from_millis(1500) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let after = guest.counter("triggers_ok");
        assert_eq!(
            after,
            before,
            "{backend}: the guest kept toggling ({before} → {after}); host: {}",
            host.log_text()
        );
        assert!(
            after <= 3,
            "{backend}: {after} toggles for one change and the connection's first line"
        );
        assert!(
            host.counter("ignored_names") >= 1,
            "{backend}: the host saw no toggle to ignore: {}",
            host.status()
        );
        // A notification naming the trigger file itself (another host tool watching the share)
        // does not toggle it again.
        guest.send(b"docs\t.virtiofs-refresh\n");
        poll_until("the own-trigger line", Duration::from_secs(10), || {
            guest.counter("own_trigger") >= 1
        });
        assert_eq!(guest.counter("triggers_ok"), after, "{backend}");
        // A real change still toggles.
        fs::write(docs.join("report.txt"), b"v2").unwrap();
        poll_until(
            "the second change's toggle",
            Duration::from_secs(10),
            || guest.counter("triggers_ok") > after,
        );
    }
}

#[test]
fn ignore_name_must_be_a_file_name() {
    let out = common::vfnotify()
        .args([
            "host",
            "--watch",
            "docs=/tmp",
            "--to",
            "unix:/nonexistent",
            "--ignore-name",
            "a/b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ignore-name") && err.contains("a/b"), "{err}");
}
