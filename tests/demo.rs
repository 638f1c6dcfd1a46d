//! The demo, as a newcomer runs it: every step behaves as shown, and `--json` says so.

mod common;

#[test]
fn demo_json_reports_every_step_ok() {
    if !common::fuse_ready("demo_json_reports_every_step_ok") {
        return;
    }
    // The demo bounds every wait itself (10 s to start, 5 s per step). Its pieces are named by
    // its pid (`vfnotify-demo-PID`): look for those only, as other demos may run meanwhile.
    let child = common::vfnotify()
        .args(["demo", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run demo");
    let ours = format!("vfnotify-demo-{}/", child.id());
    let out = child.wait_with_output().expect("run demo");
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
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&ours),
        "demo left a mount behind: {mounts}"
    );
    assert!(
        !std::env::temp_dir().join(&ours).exists(),
        "demo left its temporary folder behind"
    );
    // Nor a process it started (the daemon and the overlay get SIGTERM at the end).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&ours))
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

/// `vfnotify demo > file 2>&1`: progress redraws belong on a terminal only, so the file has each
/// step's result on a line of its own (no `[1/6] create ...\r` glued to it); and with a stdout
/// that has no reader the demo ends quietly (status 0, no panic) and cleans up.
#[test]
fn demo_output_to_a_file_has_one_line_per_step_result() {
    if !common::fuse_ready("demo_output_to_a_file_has_one_line_per_step_result") {
        return;
    }
    let dir = common::tempdir();
    let log = dir.path().join("demo.out");
    let run = || {
        let file = std::fs::File::create(&log).unwrap();
        let st = common::vfnotify()
            .arg("demo")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .expect("run demo");
        (st, std::fs::read_to_string(&log).unwrap())
    };
    let (mut st, mut out) = run();
    // A step whose stale view could not be shown (the kernel's cache was not in play: seen once
    // in CI under load), while it was fresh after and had its events, is a demonstration that
    // did not come off, not a fault of the output: run once more (freshness and events stay
    // checked by the demo's exit status).
    let only_not_stale = |out: &str| {
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
        let bad: Vec<&&str> = rows
            .iter()
            .filter(|l| l.contains("| NO |") || l.contains("| no |") || !l.contains("as expected"))
            .filter(|l| !l.starts_with("| step") && !l.starts_with("| ---"))
            .collect();
        !bad.is_empty() && bad.iter().all(|l| l.contains("| NO | yes | as expected |"))
    };
    if !st.success() && only_not_stale(&out) {
        eprintln!("demo: a step's stale view was not shown; running it once more:\n{out}");
        (st, out) = run();
    }
    assert!(st.success(), "{out}");
    assert!(
        !out.contains('\r'),
        "progress redrawn into a file:\n{out:?}"
    );
    let results: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" step ") && l.contains(": host "))
        .collect();
    assert!(results.len() >= 6, "{out}");
    for (i, line) in results.iter().enumerate() {
        assert!(
            line.starts_with(&format!("ok  step {}: host ", i + 1)),
            "a result line that does not start the line: {line:?}"
        );
    }

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = common::vfnotify()
        .arg("demo")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run demo");
    let ours = format!("vfnotify-demo-{}/", child.id());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ours), "demo left its mount behind");
    assert!(
        !std::env::temp_dir().join(&ours).exists(),
        "demo left its temporary folder behind"
    );
}
