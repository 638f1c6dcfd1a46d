//! Faults and security: a killed overlay or daemon, a full or vanished SOURCE, hostile scopes,
//! unprivileged users, set-user-ID files. Nothing lost, no hang, no one let in.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{MountGuard, fuse_ready, mount_type, tempdir, vfnotify};
use daemon_support::{Daemon, poll_until};
use overlay_support::{Linked, Watcher, tree_digest};

/// Run `f` in a thread and fail if it does not finish within `limit` (a hang).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} hung for {limit:?}"))
}

struct TmpfsMount(std::path::PathBuf);
impl TmpfsMount {
    fn new(path: &Path, size: &str) -> TmpfsMount {
        fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        TmpfsMount(path.to_path_buf())
    }
}
impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn overlay_killed_during_a_rescan_leaves_source_intact_and_remounts() {
    if !fuse_ready("killed_during_rescan") {
        return;
    }
    let Some(mut l) = Linked::with_source("killed_during_rescan", "", |src| {
        for d in 0..20 {
            fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..500 {
                fs::write(src.join(format!("d{d}/f{f}")), b"x").unwrap();
            }
        }
    }) else {
        return;
    };
    // The kernel learns all 10,000 entries, then the host changes many of them.
    for d in 0..20 {
        for e in fs::read_dir(l.m(&format!("d{d}"))).unwrap() {
            let _ = e.unwrap().metadata();
        }
    }
    l.notify(&[]);
    for d in 0..20 {
        for f in 0..100 {
            fs::write(l.s(&format!("d{d}/new{f}")), b"n").unwrap();
        }
    }
    let before = tree_digest(&l.src);
    let mut notify = Command::new(common::bin())
        .args(["notify", "--control"])
        .arg(&l.daemon.control)
        .arg("docs")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(15));
    let pid = l.mount.as_ref().unwrap().server.pid();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = notify.wait();
    // The mountpoint is stale now; a stat that needs the server must fail (not hang). (One the
    // kernel can answer from its cache, `d0` itself, may succeed: its attributes are cached for
    // the timeout, and the overlay refreshes them after each listing.)
    let mnt = l.mnt.clone();
    let st = within(Duration::from_secs(10), "stat of a dead mount", move || {
        fs::metadata(mnt.join("d0/never-looked-up")).map(|_| ())
    });
    // ENOTCONN once the connection is down, ECONNABORTED for a request caught in its abort.
    let errno = st.unwrap_err().raw_os_error();
    assert!(
        errno == Some(libc::ENOTCONN) || errno == Some(libc::ECONNABORTED),
        "a lookup on a dead mount: {errno:?}"
    );
    assert_eq!(
        tree_digest(&l.src),
        before,
        "SOURCE changed by a killed rescan"
    );
    // Mounting the same MOUNTPOINT again works (the stale mount is detached first).
    // The old guard would unmount the new mount: its server is dead already, so forget it.
    std::mem::forget(l.mount.take());
    let opts = l.opts.clone();
    let m2 = MountGuard::mount(&l.src, &l.mnt, &opts);
    // The guard saw the stale entry in mountinfo; wait for the new server to answer.
    poll_until("the new mount serves", Duration::from_secs(10), || {
        fs::read(l.m("d3/new7")).ok().as_deref() == Some(b"n")
    });
    l.mount = Some(m2);
}

#[test]
fn daemon_killed_and_restarted_during_a_burst_loses_nothing() {
    let Some(l) = Linked::with_source("daemon_killed_in_burst", "", |_| {}) else {
        return;
    };
    l.notify(&[]);
    let mut w = Watcher::new();
    w.add(&l.mnt);
    let peer = l.daemon.peer.clone();
    let src = l.src.clone();
    // The host keeps changing files and sending lines while the daemon dies and comes back.
    let host = std::thread::spawn(move || {
        for i in 0..400 {
            fs::write(src.join(format!("burst-{i}")), b"b").unwrap();
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&peer) {
                let _ = s.write_all(format!("docs\tburst-{i}\n").as_bytes());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        fs::write(src.join("final.txt"), b"last").unwrap();
    });
    std::thread::sleep(Duration::from_millis(60));
    let ctl = l.daemon.control.clone();
    Command::new("kill")
        .args(["-KILL", &l.daemon.pid().to_string()])
        .status()
        .unwrap();
    let _ = fs::remove_file(&ctl);
    host.join().unwrap();
    // A new daemon at the same control socket: the overlay relinks and catches up with a rescan.
    let _d2 = Daemon::start_at(&ctl, &[]);
    let start = Instant::now();
    // Relinked (the link retries every 100 ms: about a second even on a loaded machine) and
    // caught up by its rescan.
    poll_until("relinked", Duration::from_secs(10), || {
        common::notify_ok(&ctl, "docs", &[])
    });
    eprintln!("relinked after {:?}", start.elapsed());
    assert_eq!(fs::read(l.m("final.txt")).unwrap(), b"last");
    for i in 0..400 {
        assert!(
            fs::metadata(l.m(&format!("burst-{i}"))).is_ok(),
            "burst-{i} lost"
        );
    }
    let ev = w.events(Duration::from_millis(300));
    assert!(
        ev.iter().any(|e| e.name == "final.txt"),
        "watcher missed the final change"
    );
}

#[test]
fn source_full_gives_enospc_and_keeps_what_was_written() {
    if !fuse_ready("source_full") {
        return;
    }
    for opts in ["", "passthrough=off"] {
        let dir = tempdir();
        let src = dir.path().join("src");
        let _t = TmpfsMount::new(&src, "1m");
        let mnt = dir.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let _m = MountGuard::mount(&src, &mnt, opts);
        let keep: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(mnt.join("keep.bin"), &keep).unwrap();
        let mut f = fs::File::create(mnt.join("fill.bin")).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut err = None;
        for _ in 0..64 {
            if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("writing 4 MiB to a 1 MiB SOURCE must fail");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{opts}: {err}");
        drop(f);
        assert_eq!(
            fs::read(mnt.join("keep.bin")).unwrap(),
            keep,
            "{opts}: earlier data corrupted"
        );
        assert_eq!(fs::read(src.join("keep.bin")).unwrap(), keep);
    }
}

#[test]
fn source_unmounted_or_deleted_gives_errors_not_hangs() {
    if !fuse_ready("source_vanishes") {
        return;
    }
    // Deleted.
    let dir = tempdir();
    let src = dir.path().join("src");
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), b"f").unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let mut m = MountGuard::mount(&src, &mnt, "cache=never");
    assert!(fs::metadata(mnt.join("sub/f")).is_ok());
    fs::remove_dir_all(&src).unwrap();
    let mnt2 = mnt.clone();
    let (a, b, c) = within(
        Duration::from_secs(10),
        "operations on a deleted SOURCE",
        move || {
            (
                fs::metadata(mnt2.join("sub/f")).is_err(),
                fs::write(mnt2.join("new"), b"x").is_err(),
                fs::read_dir(mnt2.join("sub"))
                    .map(|d| d.count())
                    .unwrap_or(0),
            )
        },
    );
    assert!(a && b && c == 0);
    m.unmount();
    poll_until("unmounted", Duration::from_secs(5), || {
        mount_type(&mnt).is_none()
    });
    assert!(
        m.server
            .wait_timeout(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );

    // Unmounted (lazily: the overlay's own references keep it reachable, so it keeps serving).
    let dir = tempdir();
    let src = dir.path().join("src");
    let _t = TmpfsMount::new(&src, "4m");
    fs::write(src.join("f"), b"f").unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut m = MountGuard::mount(&src, &mnt, "cache=never");
    assert!(
        Command::new("umount")
            .arg("-l")
            .arg(&src)
            .status()
            .unwrap()
            .success()
    );
    let mnt2 = mnt.clone();
    within(
        Duration::from_secs(10),
        "operations on an unmounted SOURCE",
        move || {
            let _ = fs::metadata(mnt2.join("f"));
            let _ = fs::write(mnt2.join("g"), b"g");
            let _ = fs::read_dir(&mnt2).map(|d| d.count());
        },
    );
    m.unmount();
    poll_until("unmounted", Duration::from_secs(5), || {
        mount_type(&mnt).is_none()
    });
}

#[test]
fn control_socket_refuses_unprivileged_users() {
    let d = Daemon::start(&["--map", "docs=/tmp"]);
    let mode = fs::metadata(&d.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = vfnotify()
        .args(["notify", "--control"])
        .arg(&d.control)
        .arg("docs")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    assert_eq!(
        daemon_support::counter(&d.status(), "triggers_ok"),
        0,
        "an unprivileged user triggered something"
    );
    let _ = fs::remove_file("/tmp/.virtiofs-refresh");
}

#[test]
fn scopes_never_escape_the_mapping() {
    if !fuse_ready("scopes_never_escape") {
        return;
    }
    let outside = tempdir();
    fs::write(outside.path().join("secret"), b"s").unwrap();
    let o = outside.path().to_path_buf();
    let Some(l) = Linked::with_source("scopes_never_escape", "", move |src| {
        std::os::unix::fs::symlink(&o, src.join("escape")).unwrap();
        fs::create_dir(src.join("inside")).unwrap();
    }) else {
        return;
    };
    l.notify(&[]);
    let _ = fs::read_dir(l.m("inside")).map(|d| d.count());
    let mut w = Watcher::new();
    w.add_recursive(&l.mnt);
    for bad in ["../etc", "/etc", "inside/../../etc"] {
        let out = vfnotify()
            .args(["notify", "--control"])
            .arg(&l.daemon.control)
            .args(["docs", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
    }
    // A NUL inside a path over the wire is dropped and counted.
    l.daemon.send(b"docs\tinside/\0x\n");
    l.daemon.wait_counter("bad_relpath", 1);
    // A scope through a symlink that points outside SOURCE is not followed.
    let scanned = l.overlay_stats()["dirs_scanned"].as_u64().unwrap_or(0);
    fs::write(outside.path().join("new-outside"), b"n").unwrap();
    l.notify(&["escape/secret"]);
    l.notify(&["escape"]);
    let after = l.overlay_stats()["dirs_scanned"].as_u64().unwrap_or(0);
    assert!(
        after - scanned <= 2,
        "scanned {} folders for two one-name scopes",
        after - scanned
    );
    let ev = w.events(Duration::from_millis(200));
    assert!(
        ev.iter()
            .all(|e| e.name != "new-outside" && e.name != "secret"),
        "{ev:?}"
    );
    assert_eq!(fs::read_link(l.m("escape")).unwrap(), outside.path());
}

#[test]
fn two_users_get_exactly_native_permissions() {
    if !fuse_ready("two_users") {
        return;
    }
    let dir = tempdir();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let _m = MountGuard::mount(&src, &mnt, "allow_other,cache=never");
    let sh = |uid: u32, script: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let p = mnt.join("shared");
    let a = format!("{}/a.txt", p.display());
    assert!(sh(65534, &format!("umask 077; echo mine > {a}")));
    assert!(sh(65534, &format!("cat {a}")));
    assert!(
        !sh(65533, &format!("cat {a}")),
        "user B read A's private file"
    );
    assert!(
        !sh(65533, &format!("rm -f {a} && test ! -e {a}")),
        "user B removed A's file from a sticky folder"
    );
    assert!(
        !sh(65533, &format!("echo x > {}/top.txt", mnt.display())),
        "user B wrote into root's folder"
    );
    assert!(sh(65533, &format!("echo b > {}/b.txt", p.display())));
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(src.join("shared/b.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (65533, 65533));
}

#[test]
fn setuid_files_need_the_suid_option() {
    if !fuse_ready("setuid") {
        return;
    }
    let id = Path::new("/usr/bin/id");
    if !id.exists() {
        eprintln!("SKIP setuid: /usr/bin/id missing");
        return;
    }
    for (opts, want) in [
        ("allow_other,exec", "65534"),
        ("allow_other,exec,suid", "0"),
    ] {
        let dir = tempdir();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        fs::copy(id, src.join("id")).unwrap();
        fs::set_permissions(src.join("id"), fs::Permissions::from_mode(0o4755)).unwrap();
        let _m = MountGuard::mount(&src, &mnt, opts);
        let out = Command::new(mnt.join("id"))
            .arg("-u")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "with -o {opts}"
        );
    }
}
