//! Safe caching without a notifier (degraded mode) and the write audit (`-o audit`).

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{Daemon, poll_until};

fn overlay_state(d: &Daemon, mnt: &std::path::Path) -> Option<String> {
    let st = d.status();
    let m = mnt.display().to_string();
    st["overlays"]
        .as_array()?
        .iter()
        .find(|o| o["mountpoint"].as_str() == Some(&m))?["stats"]["state"]
        .as_str()
        .map(String::from)
}

fn notify(ctl: &std::path::Path) -> bool {
    common::notify_ok(ctl, "docs", &[])
}

#[test]
fn overlay_without_daemon_degrades_then_returns_to_long_caching() {
    degrades_then_returns("degraded_mode", "");
}

/// The same when the kernel no longer sends opens (trusted notifications, no passthrough: see
/// `overlay::fs::open_free`): without a link the overlay cannot check opens, so the short
/// timeouts must also bring a host's new content.
#[test]
fn degraded_without_opens_still_shows_host_changes() {
    degrades_then_returns("degraded_mode_open_free", ",revalidate=notify");
}

fn degrades_then_returns(test: &str, extra: &str) {
    if !common::fuse_ready(test) {
        return;
    }
    let dir = common::tempdir();
    let ctl = dir.path().join("ctl.sock");
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let mut daemon = Daemon::start_at(&ctl, &[]);
    let _m = common::MountGuard::mount(
        &src,
        &mnt,
        &format!(
            "channel=docs,control={},passthrough=off,log={}{extra}",
            ctl.display(),
            dir.path().join("overlay.log").display()
        ),
    );
    poll_until("linked", Duration::from_secs(5), || notify(&ctl));
    assert_eq!(
        overlay_state(&daemon, &mnt).as_deref(),
        Some("linked"),
        "{}",
        daemon.status()
    );
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&mnt.join("f")), 0o644);
    if extra.contains("revalidate=notify") {
        // Read once (the kernel keeps the pages), and stat again: a read from the overlay makes
        // the kernel ask for the attributes once more (the atime).
        assert_eq!(fs::read(mnt.join("f")).unwrap(), b"x");
        assert_eq!(mode(&mnt.join("f")), 0o644);
        assert!(notify(&ctl));
        poll_until("opens no longer sent", Duration::from_secs(10), || {
            daemon.status()["overlays"][0]["stats"]["open_free"] == 1
        });
    }

    // Long caching while linked: a host change stays unseen past the short timeout.
    fs::set_permissions(src.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        mode(&mnt.join("f")),
        0o644,
        "linked overlay must serve its long cache"
    );
    assert!(notify(&ctl));
    assert_eq!(mode(&mnt.join("f")), 0o600);

    // The daemon dies: the overlay degrades and a host change shows within the short timeout.
    let pid = daemon.pid();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = daemon.child.wait_timeout(Duration::from_secs(5));
    let _ = fs::remove_file(&ctl);
    fs::set_permissions(src.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(src.join("f"), b"y, from the host").unwrap();
    let start = Instant::now();
    poll_until(
        "host change visible without a notifier",
        Duration::from_secs(10),
        || mode(&mnt.join("f")) == 0o640,
    );
    poll_until(
        "host content read without a notifier",
        Duration::from_secs(10),
        || fs::read(mnt.join("f")).unwrap() == b"y, from the host",
    );
    // On Linux 6.16+ one FUSE_NOTIFY_INC_EPOCH message expired every cached name.
    let log = fs::read_to_string(dir.path().join("overlay.log")).unwrap_or_default();
    assert!(log.contains("kernel caches expired"), "{log}");
    if kernel_at_least(6, 16) {
        assert!(log.contains("(epoch)"), "INC_EPOCH not used: {log}");
    }
    // About a second (the `auto` timeouts); a generous bound for a loaded machine, far below
    // the 24 h a non-degraded cache would keep the old mode.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "degraded overlay took {:?}",
        start.elapsed()
    );

    // The daemon is back: the overlay relinks (catching up), and long caching resumes.
    let daemon2 = Daemon::start_at(&ctl, &[]);
    poll_until("relinked", Duration::from_secs(5), || notify(&ctl));
    assert_eq!(overlay_state(&daemon2, &mnt).as_deref(), Some("linked"));
    // Whatever was cached with the short timeout expires and comes back with the long one.
    std::thread::sleep(Duration::from_millis(1100));
    let _ = mode(&mnt.join("f"));
    fs::set_permissions(src.join("f"), fs::Permissions::from_mode(0o604)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_ne!(
        mode(&mnt.join("f")),
        0o604,
        "relinked overlay must serve its long cache again"
    );
    assert!(notify(&ctl));
    assert_eq!(mode(&mnt.join("f")), 0o604);
}

/// Mount with `opts` plus a log file; run `ops`; return the audit records logged.
fn audit_records(
    test: &str,
    opts: &str,
    ops: impl FnOnce(&std::path::Path),
) -> Option<Vec<String>> {
    if !common::fuse_ready(test) {
        return None;
    }
    let dir = common::tempdir();
    let (src, mnt, log) = (
        dir.path().join("src"),
        dir.path().join("mnt"),
        dir.path().join("overlay.log"),
    );
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    {
        let _m = common::MountGuard::mount(
            &src,
            &mnt,
            &format!("allow_other,log={}{opts}", log.display()),
        );
        ops(&mnt);
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    Some(
        text.lines()
            .filter(|l| l.contains("vfnotify::audit"))
            .map(String::from)
            .collect(),
    )
}

fn mutate(mnt: &std::path::Path) {
    fs::write(mnt.join("created.txt"), b"hello").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("created.txt"))
        .unwrap()
        .set_len(2)
        .unwrap();
    fs::set_permissions(mnt.join("created.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(mnt.join("dir")).unwrap();
    fs::rename(mnt.join("created.txt"), mnt.join("dir/renamed.txt")).unwrap();
    fs::hard_link(mnt.join("dir/renamed.txt"), mnt.join("hard.txt")).unwrap();
    std::os::unix::fs::symlink("hard.txt", mnt.join("sym")).unwrap();
    let _ = Command::new("setfattr")
        .args(["-n", "user.k", "-v", "v"])
        .arg(mnt.join("hard.txt"))
        .status();
    fs::remove_file(mnt.join("hard.txt")).unwrap();
    fs::remove_file(mnt.join("dir/renamed.txt")).unwrap();
    fs::remove_dir(mnt.join("dir")).unwrap();
    // An unprivileged user, through allow_other.
    fs::create_dir(mnt.join("open")).unwrap();
    fs::set_permissions(mnt.join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    let st = Command::new("touch")
        .arg(mnt.join("open/by-nobody"))
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn audit_logs_every_mutation_with_uid_and_path() {
    let Some(recs) = audit_records("audit_on", ",audit", mutate) else {
        return;
    };
    let has = |op: &str, path: &str| {
        recs.iter()
            .any(|r| r.contains(&format!("op=\"{op}\"")) && r.contains(&format!("path={path}")))
    };
    for (op, path) in [
        ("create", "created.txt"),
        ("open-write", ""),
        ("setattr", "created.txt"),
        ("mkdir", "dir"),
        ("rename", "created.txt"),
        ("link", "hard.txt"),
        ("symlink", "sym"),
        ("unlink", "hard.txt"),
        ("unlink", "dir/renamed.txt"),
        ("rmdir", "dir"),
    ] {
        assert!(
            recs.iter()
                .any(|r| r.contains(&format!("op=\"{op}\"")) && r.contains(path)),
            "no audit record for {op} {path}: {recs:#?}"
        );
    }
    let nobody = recs
        .iter()
        .find(|r| r.contains("open/by-nobody") && r.contains("op=\"create\""))
        .expect("record for the unprivileged create");
    assert!(
        nobody.contains("uid=65534") && nobody.contains("gid=65534"),
        "{nobody}"
    );
    assert!(nobody.contains("process=\"touch\""), "{nobody}");
    assert!(has("mkdir", "dir"));
    // One record per operation: creating one file is one create record.
    assert_eq!(
        recs.iter()
            .filter(|r| r.contains("op=\"create\"") && r.contains("path=created.txt"))
            .count(),
        1
    );
}

#[test]
fn no_audit_records_without_the_option() {
    let Some(recs) = audit_records("audit_off", "", mutate) else {
        return;
    };
    assert!(recs.is_empty(), "{recs:#?}");
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let r = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
