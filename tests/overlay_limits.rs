//! The overlay at scale and under `allow_other`: a 100,000-file walk, thousands of open files
//! with a low soft fd limit, and the ownership and set-id rules for other users' creates and
//! writes. Helpers in `common/ops.rs`.
//!
//! System calls std does not wrap go through `vfnotify::sys`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ops::*;
use common::{MountGuard, fuse_ready, tempdir, wait_mount_state};

// ------------------------------------------------------------------------------------------------
// Scale

#[test]
fn walk_100k_files_without_emfile() {
    if !fuse_ready("walk_100k_files_without_emfile") {
        return;
    }
    let src = tempdir();
    let mnt = tempdir();
    let t0 = Instant::now();
    for d in 0..100 {
        let dir = src.path().join(format!("d{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
    eprintln!("created 100,000 files in {:?}", t0.elapsed());
    let m = MountGuard::mount(src.path(), mnt.path(), "");
    let server = m.server.pid();
    let t = Instant::now();
    // find(1) stats every file (-printf %s needs the size); count its lines.
    let out = Command::new("find")
        .arg(mnt.path())
        .args(["-type", "f", "-printf", "%s %i\n"])
        .stderr(Stdio::piped())
        .output()
        .expect("find");
    let find_time = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "find failed: {stderr}");
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    let lines = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(lines, 100_000);
    // A second walk in Rust, statting every file by path.
    let t = Instant::now();
    let mut n = 0;
    for d in fs::read_dir(mnt.path()).unwrap() {
        let d = d.unwrap();
        for f in fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            let m =
                fs::symlink_metadata(f.path()).unwrap_or_else(|e| panic!("{:?}: {e}", f.path()));
            assert!(m.is_file());
            n += 1;
        }
    }
    assert_eq!(n, 100_000);
    let walk_time = t.elapsed();
    let fds = fs::read_dir(format!("/proc/{server}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!("find {find_time:?}, rust walk {walk_time:?}, server fds {fds}");
    assert!(fds < 5000, "server holds {fds} fds after the walk");
    assert!(
        find_time + walk_time < Duration::from_secs(60),
        "walks took {:?}",
        find_time + walk_time
    );
    drop(m);
}

#[test]
fn thousands_of_open_files_with_a_low_soft_fd_limit() {
    if !fuse_ready("thousands_of_open_files_with_a_low_soft_fd_limit") {
        return;
    }
    let src = tempdir();
    let mnt = tempdir();
    for i in 0..3000 {
        File::create(src.path().join(format!("f{i}"))).unwrap();
    }
    // The server starts the way systemd or a login shell starts it: soft limit 1024.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 1024 && exec \"$0\" mount \"$1\" \"$2\" -f")
        .arg(common::bin())
        .arg(src.path())
        .arg(mnt.path())
        .stdin(Stdio::null());
    let mut server = common::ChildGuard::spawn(&mut cmd);
    wait_mount_state(mnt.path(), Some("fuse.vfnotify"), DEADLINE);
    // This process may hold them all: raise our own soft limit to the hard one.
    let _ = vfnotify::sys::raise_nofile_limit();
    let mut open = Vec::new();
    let mut failure = None;
    for i in 0..3000 {
        match File::open(mnt.path().join(format!("f{i}"))) {
            Ok(f) => open.push(f),
            Err(e) => {
                failure = Some((i, e));
                break;
            }
        }
    }
    drop(open);
    let _ = Command::new("umount").arg(mnt.path()).status();
    let _ = server.wait_timeout(DEADLINE);
    assert!(
        failure.is_none(),
        "open through the overlay failed: {failure:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Ownership and permissions with allow_other

/// `sh -c SCRIPT` as nobody (uid and gid 65534), from `/`.
fn sh_as_nobody(script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .output()
        .expect("spawn as nobody")
}

#[test]
fn allow_other_creates_are_owned_by_the_caller() {
    let Some(fx) = setup(
        "allow_other_creates_are_owned_by_the_caller",
        "allow_other",
        false,
    ) else {
        return;
    };
    fs::set_permissions(fx.src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(fx.s("open")).unwrap();
    fs::set_permissions(fx.s("open"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(fx.s("locked")).unwrap();
    fs::set_permissions(fx.s("locked"), fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = fx.mnt.path().display().to_string();
    let script = format!(
        "set -e; cd '{mnt}'; touch open/file; mkdir open/dir; ln -s target open/link; \
         mkfifo open/fifo; echo data > open/dir/inner; \
         if out=$(touch locked/denied 2>&1); then echo CREATED; fi; echo \"$out\""
    );
    let out = sh_as_nobody(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rel in [
        "open/file",
        "open/dir",
        "open/link",
        "open/fifo",
        "open/dir/inner",
    ] {
        let m = fs::symlink_metadata(fx.s(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{rel} on SOURCE");
        let m = fs::symlink_metadata(fx.o(rel)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (65534, 65534),
            "{rel} through the overlay"
        );
    }
    // The symlink's target was not chowned (there is none: the link is dangling) and the link
    // still reads back.
    assert_eq!(
        fs::read_link(fx.s("open/link")).unwrap(),
        Path::new("target")
    );
    // Kernel permission checks: no write permission on a root-owned 0755 dir.
    assert!(
        !stdout.contains("CREATED"),
        "nobody created in a 0755 root dir"
    );
    assert!(stdout.contains("Permission denied"), "got: {stdout}");
    assert!(!fx.s("locked/denied").exists());
    // Nor can nobody chmod root's file, or read a 0600 root file.
    fs::write(fx.s("open/secret"), b"s").unwrap();
    fs::set_permissions(fx.s("open/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = sh_as_nobody(&format!(
        "cat '{mnt}/open/secret' 2>&1; chmod 777 '{mnt}/open/secret' 2>&1; true"
    ));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Permission denied"), "cat: {s}");
    assert!(s.contains("Operation not permitted"), "chmod: {s}");
    assert_eq!(
        fs::metadata(fx.s("open/secret")).unwrap().mode() & 0o777,
        0o600
    );
}

#[test]
fn setgid_directory_passes_its_group_on() {
    let Some(fx) = setup("setgid_directory_passes_its_group_on", "allow_other", false) else {
        return;
    };
    fs::set_permissions(fx.src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(fx.s("shared")).unwrap();
    std::os::unix::fs::chown(fx.s("shared"), Some(0), Some(4321)).unwrap();
    fs::set_permissions(fx.s("shared"), fs::Permissions::from_mode(0o2777)).unwrap();
    let mnt = fx.mnt.path().display().to_string();
    let out = sh_as_nobody(&format!("touch '{mnt}/shared/f' && mkdir '{mnt}/shared/d'"));
    assert!(out.status.success());
    let f = fs::metadata(fx.s("shared/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (65534, 4321));
    let d = fs::metadata(fx.s("shared/d")).unwrap();
    assert_eq!((d.uid(), d.gid()), (65534, 4321));
    assert_ne!(d.mode() & libc::S_ISGID, 0, "subdir inherits set-group-ID");
}

/// Set-user-ID and set-group-ID go on a write or truncate by a caller without CAP_FSETID and stay
/// for root, as on a local file system — with kernel passthrough (writes never reach the overlay,
/// which takes over the clearing with FUSE_HANDLE_KILLPRIV_V2), without it and without caching.
#[test]
fn writes_by_others_clear_set_id_bits() {
    for opts in [
        "allow_other",
        "allow_other,passthrough=off",
        "allow_other,cache=never",
    ] {
        let Some(fx) = setup("writes_by_others_clear_set_id_bits", opts, false) else {
            return;
        };
        fs::set_permissions(fx.src.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let files = [
            ("append", 0o6777), // written by nobody: both bits go (group execute)
            // written by nobody, not in the file's group: set-group-ID goes even without group
            // execute, as the VFS decides (setattr_should_drop_sgid; tests/posix.rs has the
            // in-group case, where it stays)
            ("keep_sgid", 0o2767),
            ("root", 0o6777),  // written by root: both stay
            ("trunc", 0o4777), // truncated by nobody: set-user-ID goes
            ("twice", 0o4777), // written by nobody, then made 4777 again by root, written again
        ];
        for (name, mode) in files {
            fs::write(fx.s(name), b"0123456789").unwrap();
            fs::set_permissions(fx.s(name), fs::Permissions::from_mode(mode)).unwrap();
        }
        let o = |n: &str| fx.o(n).display().to_string();
        let as_nobody = |script: String| {
            let out = sh_as_nobody(&script);
            assert!(
                out.status.success(),
                "{opts}: {script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        as_nobody(format!(
            "set -e; printf x >> '{}'; printf x >> '{}'; truncate -s 3 '{}'; printf x >> '{}'",
            o("append"),
            o("keep_sgid"),
            o("trunc"),
            o("twice")
        ));
        OpenOptions::new()
            .append(true)
            .open(fx.o("root"))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        fs::set_permissions(fx.o("twice"), fs::Permissions::from_mode(0o4777)).unwrap();
        as_nobody(format!("printf y >> '{}'", o("twice")));
        for (name, want, len) in [
            ("append", 0o777, 11),
            ("keep_sgid", 0o767, 11),
            ("root", 0o6777, 11),
            ("trunc", 0o777, 3),
            ("twice", 0o777, 12),
        ] {
            let src = fs::metadata(fx.s(name)).unwrap();
            assert_eq!(
                (src.mode() & 0o7777, src.len()),
                (want, len),
                "{opts}: {name} on SOURCE: mode {:o}",
                src.mode() & 0o7777
            );
            let via = fs::metadata(fx.o(name)).unwrap();
            assert_eq!(
                via.mode() & 0o7777,
                want,
                "{opts}: {name} through the overlay"
            );
        }
    }
}
