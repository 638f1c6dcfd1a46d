//! The overlay's mount lifecycle: daemonising, SIGTERM, stale-mount recovery, SOURCE removed under
//! a live mount, the mount(8) helpers, bad arguments and read-only mounts. Helpers in
//! `common/ops.rs`.
//!
//! System calls std does not wrap go through `vfnotify::sys`.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ops::*;
use common::{MountGuard, fuse_ready, mount_type, tempdir, vfnotify, wait_mount_state};

// ------------------------------------------------------------------------------------------------
// Lifecycle

/// The pid of the `vfnotify mount` server process serving `mountpoint` (other than us).
fn find_server(mountpoint: &Path) -> Option<u32> {
    let me = std::process::id();
    let mp = mountpoint.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").ok()? {
        let e = e.ok()?;
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args
            .iter()
            .any(|a| *a == b"mount" || a.ends_with(b"mount.fuse.vfnotify"))
            && args.contains(&mp)
            // The generic helper's form: `vfnotify SOURCE MOUNTPOINT -o OPTS`.
            || args.get(2) == Some(&mp)
            && args.first().is_some_and(|a| a.ends_with(b"vfnotify"))
        {
            return Some(pid);
        }
    }
    None
}

/// Make this process the subreaper of orphans, so a daemonised server becomes our child and its
/// exit status can be read.
fn become_subreaper() {
    vfnotify::sys::set_child_subreaper().expect("prctl(PR_SET_CHILD_SUBREAPER)");
}

/// Wait for a (reparented) child to exit; its exit code, or None on timeout.
fn reap(pid: u32, deadline: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let r = vfnotify::sys::waitpid(pid as i32, libc::WNOHANG);
        if let Ok(Some(status)) = r {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if r.is_err() {
            // Not our child (no subreaper): fall back to watching /proc.
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Some(-1);
            }
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn daemonised_mount_returns_when_live_and_exits_0_on_umount() {
    if !fuse_ready("daemonised_mount_returns_when_live_and_exits_0_on_umount") {
        return;
    }
    become_subreaper();
    let src = tempdir();
    let mnt = tempdir();
    fs::write(src.path().join("present"), b"p").unwrap();
    let out = vfnotify()
        .arg("mount")
        .arg(src.path())
        .arg(mnt.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Live the moment the command returned: no polling.
    assert_eq!(mount_type(mnt.path()).as_deref(), Some("fuse.vfnotify"));
    assert_eq!(fs::read(mnt.path().join("present")).unwrap(), b"p");
    let pid = find_server(mnt.path()).expect("background server process");
    let st = Command::new("umount").arg(mnt.path()).status().unwrap();
    assert!(st.success());
    assert_eq!(reap(pid, DEADLINE), Some(0), "background server exit code");
    assert_eq!(mount_type(mnt.path()), None);
}

#[test]
fn sigterm_unmounts_and_exits_0() {
    let Some(mut fx) = setup("sigterm_unmounts_and_exits_0", "", false) else {
        return;
    };
    kill(fx.m.server.pid(), libc::SIGTERM);
    let st =
        fx.m.server
            .wait_timeout(DEADLINE)
            .expect("server did not exit on SIGTERM");
    assert_eq!(st.code(), Some(0), "{st}");
    assert_eq!(
        mount_type(fx.mnt.path()),
        None,
        "still mounted after SIGTERM"
    );
}

#[test]
fn stale_mount_is_detached_by_the_next_mount() {
    let Some(mut fx) = setup("stale_mount_is_detached_by_the_next_mount", "", false) else {
        return;
    };
    fs::write(fx.s("f"), b"v").unwrap();
    kill(fx.m.server.pid(), libc::SIGKILL);
    fx.m.server
        .wait_timeout(DEADLINE)
        .expect("killed server reaped");
    assert_eq!(eno(fs::metadata(fx.mnt.path())), libc::ENOTCONN);
    // A new (daemonising) mount of the same MOUNTPOINT detaches the stale one.
    become_subreaper();
    let out = vfnotify()
        .arg("mount")
        .arg(fx.src.path())
        .arg(fx.mnt.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "remount failed: {stderr}");
    assert!(
        stderr.contains("stale"),
        "no word of the stale mount: {stderr}"
    );
    assert_eq!(fs::read(fx.o("f")).unwrap(), b"v");
    let pid = find_server(fx.mnt.path());
    let st = Command::new("umount").arg(fx.mnt.path()).status().unwrap();
    assert!(st.success());
    if let Some(pid) = pid {
        assert_eq!(reap(pid, DEADLINE), Some(0));
    }
    assert_eq!(mount_type(fx.mnt.path()), None, "stale mount left behind");
}

#[test]
fn source_removed_under_a_live_mount_errors_without_hanging() {
    let Some(mut fx) = setup(
        "source_removed_under_a_live_mount_errors_without_hanging",
        "cache=never",
        true,
    ) else {
        return;
    };
    // Known before the removal.
    let _ = fs::metadata(fx.o("docs/README.md")).unwrap();
    let _ = fs::read_dir(fx.o("docs")).unwrap().count();
    let st = Command::new("rm")
        .arg("-rf")
        .arg(fx.src.path())
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = fx.mnt.path().to_path_buf();
    let res = with_deadline(Duration::from_secs(15), move || {
        let ok = |e: i32| [libc::ENOENT, libc::ESTALE, libc::EIO].contains(&e);
        let mut report = Vec::new();
        let e = eno(fs::metadata(mnt.join("docs/README.md")));
        report.push(("stat known file", e, ok(e)));
        let e = eno(fs::read(mnt.join("hello.txt")));
        report.push(("read file", e, ok(e)));
        let e = eno(fs::write(mnt.join("new"), b"x"));
        report.push(("create", e, ok(e)));
        let e = eno(fs::create_dir(mnt.join("newdir")));
        report.push(("mkdir", e, ok(e)));
        // A listing of a removed directory is empty or an error, never the old names.
        let listing = fs::read_dir(mnt.join("docs")).map(|d| d.count());
        report.push((
            "readdir",
            eno(fs::read_dir(mnt.join("docs"))),
            !matches!(listing, Ok(n) if n > 0),
        ));
        report
    })
    .expect("an operation on the overlay hung after SOURCE was removed");
    for (op, e, good) in &res {
        assert!(
            good,
            "{op}: errno {e} (want ENOENT/ESTALE/EIO) — all: {res:?}"
        );
    }
    let st = Command::new("umount").arg(fx.mnt.path()).status().unwrap();
    assert!(st.success(), "umount after SOURCE removal");
    let st =
        fx.m.server
            .wait_timeout(DEADLINE)
            .expect("server exits after umount");
    assert_eq!(st.code(), Some(0));
}

/// Removes the helper link it created.
struct HelperLink(Option<PathBuf>);
impl Drop for HelperLink {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn mount_helper_via_mount_t() {
    if !fuse_ready("mount_helper_via_mount_t") {
        return;
    }
    let helper = Path::new("/sbin/mount.fuse.vfnotify");
    let _cleanup = if fs::symlink_metadata(helper).is_ok() {
        eprintln!("note: {} exists already, using it", helper.display());
        HelperLink(None)
    } else {
        match std::os::unix::fs::symlink(common::bin(), helper) {
            Ok(()) => HelperLink(Some(helper.to_path_buf())),
            Err(e) => {
                eprintln!("SKIP mount_helper_via_mount_t: /sbin not writable ({e})");
                return;
            }
        }
    };
    become_subreaper();
    let src = tempdir();
    let mnt = tempdir();
    fs::write(src.path().join("present"), b"p").unwrap();
    let out = Command::new("mount")
        .args(["-t", "fuse.vfnotify"])
        .arg(src.path())
        .arg(mnt.path())
        .args(["-o", "channel=x,cache=auto"])
        .stdin(Stdio::null())
        .output()
        .expect("mount(8)");
    assert!(
        out.status.success(),
        "mount -t fuse.vfnotify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Live when mount(8) returned.
    assert_eq!(mount_type(mnt.path()).as_deref(), Some("fuse.vfnotify"));
    assert_eq!(fs::read(mnt.path().join("present")).unwrap(), b"p");
    let pid = find_server(mnt.path());
    let st = Command::new("umount").arg(mnt.path()).status().unwrap();
    assert!(st.success());
    wait_mount_state(mnt.path(), None, DEADLINE);
    if let Some(pid) = pid {
        assert_eq!(reap(pid, DEADLINE), Some(0));
    }
}

/// The fuse3 package's generic helper, as mount(8) runs it for `-t fuse.vfnotify` when our own
/// `mount.fuse.vfnotify` link is not installed (argv as seen with strace): it runs `vfnotify
/// SOURCE MOUNTPOINT -o OPTS` through `sh -c`, finding `vfnotify` on PATH. (mount(8) itself
/// hands helpers no PATH, so sh's default one applies: install `vfnotify` in /usr/local/bin,
/// /usr/bin or /bin.)
#[test]
fn generic_mount_fuse3_helper_needs_only_vfnotify_on_path() {
    if !fuse_ready("generic_mount_fuse3_helper_needs_only_vfnotify_on_path") {
        return;
    }
    let Some(helper) = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        assert!(
            std::env::var_os("VFNOTIFY_REQUIRE_FUSE").is_none(),
            "mount.fuse3 is missing (apt-get install fuse3)"
        );
        eprintln!("SKIP generic_mount_fuse3_helper_needs_only_vfnotify_on_path: no mount.fuse3");
        return;
    };
    become_subreaper();
    let bin = tempdir();
    std::os::unix::fs::symlink(common::bin(), bin.path().join("vfnotify")).unwrap();
    let src = tempdir();
    let mnt = tempdir();
    fs::write(src.path().join("present"), b"p").unwrap();
    let out = Command::new(helper)
        .arg(src.path())
        .arg(mnt.path())
        .args(["-o", "rw,cache=auto,nosuid,nodev", "-t", "fuse.vfnotify"])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
        .stdin(Stdio::null())
        .output()
        .expect("mount.fuse3");
    let guard = MountGuard {
        mountpoint: mnt.path().to_path_buf(),
        server: common::ChildGuard(None),
    };
    assert!(
        out.status.success(),
        "{} -t fuse.vfnotify: {}",
        helper.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Live when the helper returned, with the options asked for.
    assert_eq!(mount_type(mnt.path()).as_deref(), Some("fuse.vfnotify"));
    assert_eq!(fs::read(mnt.path().join("present")).unwrap(), b"p");
    let flags = statvfs(mnt.path()).f_flag;
    assert_ne!(flags & libc::ST_NOSUID, 0, "nosuid");
    assert_ne!(flags & libc::ST_NODEV, 0, "nodev");
    let pid = find_server(mnt.path()).expect("the overlay's server process");
    let st = Command::new("umount").arg(mnt.path()).status().unwrap();
    assert!(st.success());
    wait_mount_state(mnt.path(), None, DEADLINE);
    drop(guard);
    assert_eq!(reap(pid, DEADLINE), Some(0));
}

#[test]
fn unknown_option_exits_2_naming_it() {
    let src = tempdir();
    let mnt = tempdir();
    let out = vfnotify()
        .arg("mount")
        .arg(src.path())
        .arg(mnt.path())
        .args(["-f", "-o", "cache=never,frobnicate_me"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("frobnicate_me"), "{e}");
    assert_eq!(mount_type(mnt.path()), None);
}

#[test]
fn source_not_a_directory_exits_2() {
    let dir = tempdir();
    let mnt = tempdir();
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    for src in [file.clone(), dir.path().join("missing")] {
        let out = vfnotify()
            .arg("mount")
            .arg(&src)
            .arg(mnt.path())
            .arg("-f")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", src.display());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("SOURCE"), "{e}");
    }
    assert_eq!(mount_type(mnt.path()), None);
}

#[test]
fn read_only_option_refuses_writes() {
    let Some(fx) = setup("read_only_option_refuses_writes", "ro", true) else {
        return;
    };
    assert_eq!(eno(fs::write(fx.o("new"), b"x")), libc::EROFS);
    assert_eq!(
        eno(OpenOptions::new().write(true).open(fx.o("hello.txt"))),
        libc::EROFS
    );
    assert_eq!(eno(fs::remove_file(fx.o("hello.txt"))), libc::EROFS);
    assert_eq!(eno(fs::create_dir(fx.o("d"))), libc::EROFS);
    assert_eq!(
        eno(fs::set_permissions(
            fx.o("hello.txt"),
            fs::Permissions::from_mode(0o600)
        )),
        libc::EROFS
    );
    assert!(fx.s("hello.txt").exists() && !fx.s("new").exists());
    assert!(fs::read(fx.o("hello.txt")).is_ok());
}

#[test]
fn read_only_option_makes_a_read_only_mount() {
    let Some(fx) = setup("read_only_option_makes_a_read_only_mount", "ro", true) else {
        return;
    };
    assert_ne!(
        statvfs(fx.mnt.path()).f_flag & libc::ST_RDONLY,
        0,
        "ST_RDONLY"
    );
    assert_eq!(eno(access(&fx.o("hello.txt"), libc::W_OK)), libc::EROFS);
}
