//! The overlay's link (`vfnotify::link::spawn`) with a fake overlay, against the real daemon
//! over a unix control socket: started late, restarted, bursts merged.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tempdir;
use daemon_support::{DEADLINE, Daemon, poll_until};
use serde_json::{Value, json};
use vfnotify::daemon::{DaemonConfig, spawn as spawn_daemon};
use vfnotify::link::{LinkConfig, NotifyTarget, Scope, spawn};

/// A fake overlay: records calls; `handle` takes `work` to let notifications pile up.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Vec<String>>>,
    /// Work done outside notifications (as an overlay's lookups are).
    busy: std::sync::atomic::AtomicU64,
    linked: Mutex<Vec<bool>>,
    work: Duration,
    /// Once set, what each handling takes instead (saying it goes on every second).
    slow: Mutex<Option<Duration>>,
}

impl NotifyTarget for Fake {
    fn handle(&self, scope: &Scope, progress: &mut dyn FnMut()) -> Vec<Value> {
        match *self.slow.lock().unwrap() {
            Some(slow) => {
                let start = Instant::now();
                while start.elapsed() < slow {
                    std::thread::sleep(Duration::from_secs(1).min(slow - start.elapsed()));
                    progress();
                }
            }
            None => std::thread::sleep(self.work),
        }
        self.calls.lock().unwrap().push(scope.paths().to_vec());
        Vec::new()
    }
    fn set_linked(&self, linked: bool) {
        self.linked.lock().unwrap().push(linked);
    }
    fn stats(&self) -> Value {
        json!({
            "calls": self.calls.lock().unwrap().len(),
            "busy": self.busy.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

impl Fake {
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
    fn linked(&self) -> Vec<bool> {
        self.linked.lock().unwrap().clone()
    }
}

/// `vfnotify notify --control CONTROL ARGS...`, run to its end.
fn notify_cli(control: &std::path::Path, args: &[&str]) -> std::process::Output {
    common::vfnotify()
        .args(["notify", "--control"])
        .arg(control)
        .args(args)
        .output()
        .unwrap()
}

fn link(control: PathBuf, mountpoint: PathBuf, work: Duration) -> Arc<Fake> {
    let fake = Arc::new(Fake {
        work,
        ..Default::default()
    });
    let target: Arc<dyn NotifyTarget> = fake.clone();
    spawn(
        LinkConfig {
            control,
            channel: "docs".into(),
            mountpoint,
            stats_interval: Duration::from_millis(100),
        },
        target,
    )
    .unwrap();
    fake
}

#[test]
fn link_connects_when_the_daemon_appears_and_rescans() {
    let dir = tempdir();
    let control = dir.path().join("run/control.sock");
    let mnt = dir.path().join("mnt");
    let fake = link(control.clone(), mnt.clone(), Duration::ZERO);
    std::thread::sleep(Duration::from_millis(250)); // the link is retrying meanwhile
    assert!(fake.linked().is_empty());
    let d = Daemon::start_at(&control, &[]);
    let up = Instant::now();
    poll_until("linked", DEADLINE, || fake.linked() == [true]);
    // The link retries every 100 ms: a generous bound for a loaded machine (a backoff that
    // grows would show as tens of seconds).
    assert!(
        up.elapsed() < Duration::from_secs(5),
        "linked {:?} after the daemon appeared",
        up.elapsed()
    );
    poll_until("initial full rescan", DEADLINE, || {
        fake.calls() == [Vec::<String>::new()]
    });
    let s = d.status();
    assert_eq!(s["overlays"][0]["channel"], "docs");
    assert_eq!(s["overlays"][0]["mountpoint"], json!(mnt));
    assert_eq!(s["overlays"][0]["pid"], std::process::id());
    // `notify` returns once the fake handled it.
    let o = notify_cli(&control, &["docs", "a/b"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(fake.calls().last().unwrap(), &vec!["a/b".to_string()]);
    assert_eq!(
        d.status()["overlays"][0]["stats"],
        json!({"calls": 2, "busy": 0})
    );
}

/// `--map` through a symlink to an overlay's mountpoint: the daemon keeps the folder canonical, so
/// notifications for that channel go to the overlay mounted there (not to a trigger file).
#[test]
fn a_map_through_a_symlink_reaches_the_overlay_mounted_there() {
    let dir = tempdir();
    let control = dir.path().join("control.sock");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let link_path = dir.path().join("share-link");
    std::os::unix::fs::symlink(&mnt, &link_path).unwrap();
    let map = format!("mapped={}", link_path.display());
    let d = Daemon::start_at(&control, &["--map", &map]);
    let fake = link(control.clone(), mnt.clone(), Duration::ZERO);
    poll_until("linked", DEADLINE, || fake.linked() == [true]);
    let mut c = vfnotify::control::Client::connect(&control).unwrap();
    let r = c
        .request("notify", json!({"channel": "mapped", "paths": ["x"]}))
        .unwrap();
    assert_eq!(r["overlays"], 1, "{r}");
    assert_eq!(r["handled"], 1, "{r}");
    assert_eq!(fake.calls().last().unwrap(), &vec!["x".to_string()]);
    assert_eq!(
        r["triggers"], 0,
        "no trigger file toggled in the overlay's folder: {r}"
    );
    assert!(!mnt.join(".virtiofs-refresh").exists());
    drop(d);
}

/// Statistics that change without a notification reach `status` within the stats interval.
#[test]
fn quiet_links_still_report_fresh_statistics() {
    let dir = tempdir();
    let control = dir.path().join("control.sock");
    let d = Daemon::start_at(&control, &[]);
    let fake = link(control.clone(), dir.path().join("mnt"), Duration::ZERO);
    poll_until("linked", DEADLINE, || fake.linked() == [true]);
    poll_until("first report", DEADLINE, || {
        d.status()["overlays"][0]["stats"]["calls"] == 1
    });
    fake.busy.store(7, std::sync::atomic::Ordering::Relaxed);
    poll_until("a report without a notification", DEADLINE, || {
        d.status()["overlays"][0]["stats"]["busy"] == 7
    });
    assert_eq!(fake.calls().len(), 1, "no notification was sent");
}

/// A handling that outlasts the daemon's `notify` timeout (10 s without word) but reports
/// progress: `vfnotify notify` waits for it and succeeds (as for a rescan of millions of entries).
#[test]
fn a_long_handling_that_reports_progress_outlasts_the_notify_timeout() {
    let dir = tempdir();
    let control = dir.path().join("control.sock");
    let _d = Daemon::start_at(&control, &[]);
    let fake = link(control.clone(), dir.path().join("mnt"), Duration::ZERO);
    poll_until("linked and rescanned", DEADLINE, || fake.calls().len() == 1);
    *fake.slow.lock().unwrap() = Some(Duration::from_secs(13));
    let t = Instant::now();
    let o = notify_cli(&control, &["docs", "big"]);
    assert!(
        o.status.success(),
        "notify failed after {:?}: {}",
        t.elapsed(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(t.elapsed() >= Duration::from_secs(13), "{:?}", t.elapsed());
    assert_eq!(fake.calls().last().unwrap(), &vec!["big".to_string()]);
}

#[test]
fn link_survives_a_daemon_restart() {
    let dir = tempdir();
    let control = dir.path().join("control.sock");
    let mnt = dir.path().join("mnt");
    let d1 = spawn_daemon(DaemonConfig::new(control.clone())).unwrap();
    let fake = link(control.clone(), mnt, Duration::ZERO);
    poll_until("linked", DEADLINE, || fake.linked() == [true]);
    d1.stop();
    poll_until("unlinked", DEADLINE, || fake.linked() == [true, false]);
    assert!(
        !control.exists(),
        "the in-process daemon removed its socket"
    );
    let d2 = spawn_daemon(DaemonConfig::new(control.clone())).unwrap();
    poll_until("relinked", DEADLINE, || {
        fake.linked() == [true, false, true]
    });
    // Rescanned after each link-up.
    poll_until("two rescans", DEADLINE, || {
        fake.calls().iter().filter(|c| c.is_empty()).count() == 2
    });
    let mut c = vfnotify::control::Client::connect(d2.control()).unwrap();
    let r = c
        .request("notify", json!({"channel": "docs", "paths": ["z"]}))
        .unwrap();
    assert_eq!(r["handled"], 1);
    assert_eq!(fake.calls().last().unwrap(), &vec!["z".to_string()]);
}

#[test]
fn bursts_are_merged_into_fewer_handle_calls() {
    let d = Daemon::start(&[]);
    let dir = tempdir();
    let fake = link(
        d.control.clone(),
        dir.path().join("mnt"),
        Duration::from_millis(150),
    );
    poll_until("rescanned", DEADLINE, || fake.calls().len() == 1);
    // One connection each: lines that arrive in one read are already one notification.
    for i in 0..20 {
        d.send(format!("docs\tf{i}\n").as_bytes());
    }
    poll_until("all 20 acknowledged", DEADLINE, || {
        d.status()["overlays"][0]["handled"] == 20
    });
    let calls = fake.calls();
    let scoped: Vec<&Vec<String>> = calls.iter().skip(1).collect();
    assert!(
        scoped.len() < 20,
        "{} handle calls for 20 notifications",
        scoped.len()
    );
    let mut seen: Vec<String> = scoped.iter().flat_map(|c| c.iter().cloned()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "every path handled: {calls:?}");
    // Lines written together are one notification; a whole-channel line among them makes it
    // whole-mount.
    let before = fake.calls().len();
    d.send(b"docs\tg1\ndocs\ndocs\tg2\n");
    poll_until("21 acknowledged", DEADLINE, || {
        d.status()["overlays"][0]["handled"] == 21
    });
    let after = fake.calls();
    assert!(
        after[before..].iter().any(|c| c.is_empty()),
        "the whole-channel line was handled whole-mount: {after:?}"
    );
}
