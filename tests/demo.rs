//! The demo, as a newcomer runs it: every step behaves as shown, and `--json` says so.

mod common;

#[test]
fn demo_json_reports_every_step_ok() {
    if !common::fuse_ready("demo_json_reports_every_step_ok") {
        return;
    }
    let demo_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains("vfnotify-demo-"))
            .map(String::from)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let mounts_before = demo_mounts();
    // The demo bounds every wait itself (10 s to start, 5 s per step).
    let out = common::vfnotify()
        .args(["demo", "--json"])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("demo --json is not JSON ({e}): {stdout}\n{stderr}"));
    let steps = doc["steps"].as_array().expect("steps");
    assert!(steps.len() >= 6, "{doc}");
    for s in steps {
        assert_eq!(s["stale_before"], true, "cache not in play: {s}");
        assert_eq!(
            s["fresh_after"], true,
            "not fresh after the notification: {s}"
        );
        assert_eq!(s["events_ok"], true, "events missing: {s}");
        assert!(s["latency_ms"].as_f64().is_some_and(|l| l < 1000.0), "{s}");
    }
    assert_eq!(doc["ok"], true);
    assert!(out.status.success(), "{stderr}");
    // Nothing left behind: no mount, no temporary folder.
    let left: Vec<_> = demo_mounts().difference(&mounts_before).cloned().collect();
    assert!(left.is_empty(), "demo left a mount behind: {left:?}");
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("vfnotify-demo-")
        })
        .filter(|e| {
            e.metadata()
                .map(|m| m.modified().unwrap().elapsed().unwrap().as_secs() < 60)
                .unwrap_or(false)
        })
        .count();
    assert_eq!(leftovers, 0, "demo left its temporary folder behind");
    // Nor a process it started (the daemon and the overlay get SIGTERM at the end).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("vfnotify-demo-") && !c.contains("demo --json"))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo left processes running: {alive:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
