//! POSIX semantics the overlay must share with its SOURCE (issue 19), each checked against
//! SOURCE's own filesystem as the reference: attributes fresh after the overlay's own operations
//! (a folder replaced or removed, writes through a shared mapping, an ACL that changes the mode),
//! default ACLs over the umask, set-group-ID dropped by unprivileged writes, the mount options
//! `remount`, `noatime` and `nodiratime`, and file handles (`open_by_handle_at`); `O_TMPFILE`
//! is refused (fuser 0.18 cannot serve it; see docs/conformance.md).

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use daemon_support::{DEADLINE, poll_until};
use overlay_support::{Linked, Watcher};
use vfnotify::sys;

/// Whether setfacl/getfacl are here; without them the ACL tests skip, unless
/// `VFNOTIFY_REQUIRE_FUSE` is set (CI installs the `acl` package), where a skip fails.
fn acl_tools(test: &str) -> bool {
    if Command::new("setfacl").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("VFNOTIFY_REQUIRE_FUSE").is_none(),
        "{test}: setfacl is missing (apt-get install acl)"
    );
    eprintln!("SKIP {test}: setfacl is missing");
    false
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `sh -c SCRIPT` as nobody (uid/gid 65534, no supplementary groups).
fn sh_as_nobody(script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .output()
        .expect("spawn as nobody")
}

/// A linked overlay whose SOURCE (and mountpoint) other users may reach, with a folder next to
/// SOURCE on the same filesystem, `native`, to do the same things to directly.
fn open_to_all(test: &str, opts: &str) -> Option<(Linked, PathBuf)> {
    let l = Linked::new(test, opts)?;
    let top = l.src.parent().unwrap().to_path_buf();
    let native = top.join("native");
    fs::create_dir(&native).unwrap();
    for p in [&top, &l.src, &native] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some((l, native))
}

/// The mode as `stat -c %a` reads it (`statx` with `STATX_MODE` only).
fn stat_mode(p: &Path) -> u32 {
    let out = run(Command::new("stat").args(["-c", "%a"]).arg(p));
    u32::from_str_radix(String::from_utf8_lossy(&out.stdout).trim(), 8).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

// ---- 1. The overlay's own operations leave no stale attributes (cache=always) ----

/// 1a. A folder replaced by `rename(a, b)`, or removed by `rmdir`, through the overlay: an fd
/// still open on it reports link count 0, as on SOURCE (the overlay answered 2 from its view).
#[test]
fn a_folder_replaced_or_removed_through_the_overlay_has_no_links_left() {
    let Some(l) = Linked::new("a_folder_replaced_or_removed", "") else {
        return;
    };
    for (root, name) in [(&l.mnt, "overlay"), (&l.src, "SOURCE")] {
        for d in ["a", "b", "c"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        let b = fs::File::open(root.join("b")).unwrap();
        let c = fs::File::open(root.join("c")).unwrap();
        assert_eq!(b.metadata().unwrap().nlink(), 2, "{name}");
        fs::rename(root.join("a"), root.join("b")).unwrap();
        fs::remove_dir(root.join("c")).unwrap();
        assert_eq!(b.metadata().unwrap().nlink(), 0, "{name}: replaced folder");
        assert_eq!(c.metadata().unwrap().nlink(), 0, "{name}: removed folder");
        fs::remove_dir(root.join("b")).unwrap();
        if name == "overlay" {
            l.notify(&[]);
        }
    }
}

/// 1a'. A client's chmod, chown and utimes by name of a file the host has just replaced (an
/// atomic save, not notified yet) come before the host's change, as they could on a local
/// filesystem: they succeed on the file the client knew (the overlay holds it since the client
/// wrote it, and acts on it rather than on the name: ESTALE before), and once notified the name
/// shows the host's file, untouched by them.
#[test]
fn attribute_changes_racing_a_host_replacement_come_before_it() {
    let Some(l) = Linked::new("attribute_changes_racing_a_host_replacement", "") else {
        return;
    };
    fs::write(l.m("f"), b"old").unwrap();
    fs::write(l.s(".f.tmp"), b"new").unwrap();
    fs::set_permissions(l.s(".f.tmp"), fs::Permissions::from_mode(0o600)).unwrap();
    common::set_mtime(&l.s(".f.tmp"), 1_600_000_000);
    fs::rename(l.s(".f.tmp"), l.s("f")).unwrap();
    fs::set_permissions(l.m("f"), fs::Permissions::from_mode(0o640)).unwrap();
    let c = sys::cstr(l.m("f").as_os_str()).unwrap();
    sys::fchownat(sys::cwd(), &c, 0, 0).unwrap();
    common::set_mtime(&l.m("f"), 1_700_000_000);
    l.notify(&["f"]);
    let (m, s) = (
        fs::metadata(l.m("f")).unwrap(),
        fs::metadata(l.s("f")).unwrap(),
    );
    assert_eq!(fs::read(l.m("f")).unwrap(), b"new");
    assert_eq!(
        (s.mode() & 0o7777, s.mtime()),
        (0o600, 1_600_000_000),
        "the host's file"
    );
    assert_eq!(
        (m.mode(), m.mtime(), m.nlink()),
        (s.mode(), s.mtime(), 1),
        "as SOURCE has it"
    );
}

/// 1b. A file written through a shared mapping and `msync`ed: `stat` on the overlay shows the
/// times SOURCE now has (with kernel passthrough no request reached the overlay). Each round
/// maps the file again after dropping its pages, so the write's fault reads the page first
/// (trusted, the overlay's atime thread stats the file after that read, racing the writeback),
/// and starts from an mtime set an hour back, so the write's own shows.
#[test]
fn writes_through_a_shared_mapping_show_in_stat() {
    const ROUNDS: usize = 12;
    for opts in ["", "passthrough=off"] {
        let Some(l) = Linked::new("writes_through_a_shared_mapping_show_in_stat", opts) else {
            return;
        };
        let p = l.m("mapped");
        fs::write(&p, vec![0u8; 8192]).unwrap();
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for round in 0..ROUNDS {
            f.set_modified(hour_ago).unwrap();
            sys::fadvise_dontneed(f.as_fd()).unwrap();
            let mut map = sys::mmap::SharedMap::new(f.as_fd(), 8192).unwrap();
            map.bytes_mut()[round] = b'a' + round as u8;
            map.sync().unwrap();
            drop(map);
            let src = fs::metadata(l.s("mapped")).unwrap();
            assert!(
                src.modified().unwrap() > hour_ago,
                "{opts}: SOURCE's mtime moved, round {round}"
            );
            for (what, m) in [
                ("stat", fs::metadata(&p).unwrap()),
                ("fstat", f.metadata().unwrap()),
            ] {
                assert_eq!(
                    (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()),
                    (src.mtime(), src.mtime_nsec(), src.ctime(), src.ctime_nsec()),
                    "{opts}: {what} after msync, round {round}"
                );
            }
        }
        drop(f);
        let written: Vec<u8> = (0..ROUNDS as u8).map(|r| b'a' + r).collect();
        assert_eq!(fs::read(&p).unwrap()[..ROUNDS], written[..]);
    }
}

/// 1c. The owner sets an ACL through the overlay (which changes the group bits of the mode on
/// SOURCE): `stat` on the overlay shows the new mode at once, for files and folders.
#[test]
fn an_acl_that_changes_the_mode_shows_in_stat_at_once() {
    if !acl_tools("an_acl_that_changes_the_mode") {
        return;
    }
    let Some(l) = Linked::new("an_acl_that_changes_the_mode", "") else {
        return;
    };
    fs::write(l.m("f"), b"x").unwrap();
    fs::create_dir(l.m("d")).unwrap();
    for n in ["f", "d"] {
        fs::set_permissions(l.m(n), fs::Permissions::from_mode(0o740)).unwrap();
        assert_eq!(mode(&l.m(n)), 0o740);
        run(Command::new("setfacl")
            .args(["-m", "u:nobody:rwx"])
            .arg(l.m(n)));
        assert_eq!(mode(&l.s(n)), 0o770, "{n}: SOURCE's mode (mask rwx)");
        // As stat(1) asks: statx for the mode alone (a fuller request also wants the ctime,
        // which the kernel had marked stale, and refetched the rest by chance).
        assert_eq!(stat_mode(&l.m(n)), 0o770, "{n}: the overlay's (stat -c %a)");
        assert_eq!(mode(&l.m(n)), 0o770, "{n}: the overlay's");
        run(Command::new("setfacl").arg("-b").arg(l.m(n)));
        assert_eq!(mode(&l.m(n)), mode(&l.s(n)), "{n}: after removing it");
    }
}

/// With `FUSE_POSIX_ACL` the kernel checks ACL entries too, as it does on SOURCE: an entry for
/// another user grants that user access the mode bits alone do not.
#[test]
fn acl_entries_grant_access_as_on_source() {
    if !acl_tools("acl_entries_grant_access") {
        return;
    }
    let Some((l, native)) = open_to_all("acl_entries_grant_access", "allow_other") else {
        return;
    };
    for dir in [&l.mnt, &native] {
        let f = dir.join("secret");
        fs::write(&f, b"for nobody").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        run(Command::new("setfacl").args(["-m", "u:nobody:r"]).arg(&f));
        let out = sh_as_nobody(&format!("cat {}", f.display()));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "for nobody",
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = sh_as_nobody(&format!("echo x >> {}", f.display()));
        assert!(!out.status.success(), "{}: no write entry", dir.display());
    }
}

// ---- 2. A default ACL, not the umask, governs new objects' modes ----

/// `mkdir`, `creat` and `mknod` under umask 022 (and 077) in a folder with a default ACL
/// `g::rwx`: the modes SOURCE's filesystem gives the same calls made on it directly (the
/// overlay applied the umask over the ACL); and in a folder without one, the umask as usual.
#[test]
fn a_default_acl_replaces_the_umask() {
    if !acl_tools("a_default_acl_replaces_the_umask") {
        return;
    }
    let Some((l, native)) = open_to_all("a_default_acl_replaces_the_umask", "") else {
        return;
    };
    let made = |root: &Path| -> Vec<(String, u32)> {
        fs::create_dir(root.join("acl")).unwrap();
        run(Command::new("setfacl")
            .args(["-d", "-m", "g::rwx"])
            .arg(root.join("acl")));
        fs::create_dir(root.join("plain")).unwrap();
        let script = "umask 022; mkdir acl/d plain/d; : > acl/f; : > plain/f; mkfifo acl/p plain/p; \
                      umask 077; mkdir acl/d77 plain/d77; : > acl/f77";
        run(Command::new("sh").arg("-c").arg(script).current_dir(root));
        [
            "acl/d",
            "acl/f",
            "acl/p",
            "acl/d77",
            "acl/f77",
            "plain/d",
            "plain/f",
            "plain/p",
            "plain/d77",
        ]
        .iter()
        .map(|n| (n.to_string(), mode(&root.join(n))))
        .collect()
    };
    let want = made(&native);
    assert_eq!(
        want[0],
        ("acl/d".to_string(), 0o775),
        "the reference itself"
    );
    assert_eq!(made(&l.mnt), want);
}

// ---- 3. Unprivileged fallocate, hole punch, write and truncate drop set-group-ID ----

/// On a root-owned file with mode 06666 (06766 for truncate), an unprivileged caller outside
/// the file's group leaves 0666 (0766) behind, as on SOURCE (the overlay kept set-group-ID,
/// clearing it only with group execute); a caller in the group keeps it, as on SOURCE.
#[test]
fn unprivileged_writes_drop_set_group_id() {
    let Some((l, native)) = open_to_all("unprivileged_writes_drop_set_group_id", "allow_other")
    else {
        return;
    };
    let cases: [(&str, u32, &str); 5] = [
        ("fallocate", 0o6666, "fallocate -l 8192 F"),
        ("punch", 0o6666, "fallocate -p -o 0 -l 4096 F"),
        ("zero", 0o6666, "fallocate -z -o 0 -l 4096 F"),
        ("write", 0o6666, "echo x >> F"),
        ("truncate", 0o6766, "truncate -s 10 F"),
    ];
    for (what, start, cmd) in cases {
        let mut got = Vec::new();
        for dir in [&native, &l.mnt] {
            let f = dir.join(format!("sgid-{what}"));
            fs::write(&f, vec![1u8; 4096]).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(start)).unwrap();
            let out = sh_as_nobody(&cmd.replace('F', &f.display().to_string()));
            assert!(
                out.status.success(),
                "{what} on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            got.push(mode(&f));
        }
        assert_eq!(got[0], start & 0o777, "{what}: the reference");
        assert_eq!(got[1], got[0], "{what}: overlay vs SOURCE's filesystem");
        assert_eq!(
            mode(&l.s(&format!("sgid-{what}"))),
            got[0],
            "{what}: on SOURCE"
        );
    }
    // In the file's group: set-group-ID without group execute stays.
    for dir in [&native, &l.mnt] {
        let f = dir.join("sgid-group");
        fs::write(&f, b"x").unwrap();
        std::os::unix::fs::chown(&f, None, Some(65534)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o2666)).unwrap();
        let out = sh_as_nobody(&format!("fallocate -l 8192 {}", f.display()));
        assert!(out.status.success());
        assert_eq!(mode(&f), 0o2666, "{}", dir.display());
    }
}

// ---- 4. Mount options: remount, noatime, nodiratime ----

/// The mount helper as mount(8) runs it (`mount.fuse.vfnotify SOURCE MOUNTPOINT -o ...`).
fn helper(dir: &Path) -> PathBuf {
    let h = dir.join("mount.fuse.vfnotify");
    if fs::symlink_metadata(&h).is_err() {
        std::os::unix::fs::symlink(common::bin(), &h).unwrap();
    }
    h
}

fn per_mount_options(mnt: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    vfnotify::mountinfo::parse_mountinfo_options(&info, "fuse.vfnotify", mnt).expect("mounted")
}

/// `mount -o remount,ro` and `remount,rw,noatime,nodiratime` through mount(8), which runs the
/// helper with the mount's current options plus `remount`: accepted (it refused "unknown mount
/// option 'remount'"), applied to the mount, and the writes follow. Run in a private mount
/// namespace whose /sbin holds only this build's helper, so no other mount(8) user is affected.
#[test]
fn remount_through_mount8() {
    if !common::fuse_ready("remount_through_mount8") {
        return;
    }
    let dir = common::tempdir();
    let (src, mnt, sbin) = (
        dir.path().join("src"),
        dir.path().join("mnt"),
        dir.path().join("sbin"),
    );
    for d in [&src, &mnt, &sbin] {
        fs::create_dir(d).unwrap();
    }
    helper(&sbin);
    let script = format!(
        r#"set -u
trap 'umount -l {mnt} 2>/dev/null' EXIT
mount --bind {sbin} /sbin || exit 90
mount -t fuse.vfnotify {src} {mnt} -o cache=auto || exit 91
echo a > {mnt}/a && echo write-rw-ok
mount -o remount,ro {mnt} && echo remount-ro-ok
grep " {mnt} " /proc/self/mountinfo | cut -d" " -f6
echo b > {mnt}/b 2>/dev/null || echo write-ro-refused
mount -o remount,rw,noatime,nodiratime {mnt} && echo remount-rw-ok
grep " {mnt} " /proc/self/mountinfo | cut -d" " -f6
echo c > {mnt}/c && echo write-rw-again-ok
umount {mnt} && echo umount-ok
"#,
        mnt = mnt.display(),
        src = src.display(),
        sbin = sbin.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "write-rw-ok",
            "remount-ro-ok",
            "ro,nosuid,nodev,relatime",
            "write-ro-refused",
            "remount-rw-ok",
            "rw,nosuid,nodev,noatime,nodiratime",
            "write-rw-again-ok",
            "umount-ok"
        ],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(src.join("a").exists() && !src.join("b").exists() && src.join("c").exists());
}

/// While remounted read-only, host changes are still replayed (through the overlay's own
/// writable mount) and shown; clients get EROFS; after `remount,rw` they may write again. The
/// same for an overlay mounted `ro` and remounted `rw`.
#[test]
fn replays_go_on_while_remounted_read_only() {
    let Some(l) = Linked::new("replays_go_on_while_remounted_read_only", "") else {
        return;
    };
    let h = helper(l.src.parent().unwrap());
    let remount = |opts: &str| {
        run(Command::new(&h)
            .arg(&l.src)
            .arg(&l.mnt)
            .arg("-o")
            .arg(format!(
                "{opts},nosuid,nodev,relatime,remount,user_id=0,group_id=0"
            )));
    };
    remount("ro");
    assert!(per_mount_options(&l.mnt).starts_with("ro,"));
    let e = fs::write(l.m("client"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let mut w = Watcher::new();
    w.add(&l.mnt);
    fs::write(l.s("from-host"), b"h").unwrap();
    l.notify(&["from-host"]);
    let ev = w.events(Duration::from_millis(300));
    assert!(
        ev.iter().any(|e| e.is(libc::IN_CREATE, "from-host")),
        "{ev:?}"
    );
    assert_eq!(fs::read(l.m("from-host")).unwrap(), b"h");
    remount("rw");
    fs::write(l.m("client"), b"x").unwrap();
    assert_eq!(fs::read(l.s("client")).unwrap(), b"x");

    let Some(l) = Linked::new("replays_go_on_while_remounted_read_only", "ro") else {
        return;
    };
    let e = fs::write(l.m("client"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let h = helper(l.src.parent().unwrap());
    run(Command::new(&h)
        .arg(&l.src)
        .arg(&l.mnt)
        .arg("-o")
        .arg("rw,nosuid,nodev,relatime,remount,user_id=0,group_id=0"));
    // At once: the server reads the mount table before refusing.
    fs::write(l.m("client"), b"y").unwrap();
    assert_eq!(fs::read(l.s("client")).unwrap(), b"y");
}

/// A remount of something that is not a vfnotify overlay is a usage error naming it.
#[test]
fn remount_of_a_folder_that_is_no_overlay_exits_2() {
    if !common::fuse_ready("remount_of_a_folder_that_is_no_overlay_exits_2") {
        return;
    }
    let dir = common::tempdir();
    let h = helper(dir.path());
    let out = Command::new(&h)
        .arg("x")
        .arg(dir.path())
        .args(["-o", "remount,ro"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vfnotify overlay"));
}

/// atime of `f`, folder `d` and script `x` on SOURCE and through the overlay, after reading,
/// running and listing them through the overlay; each starts at 2001-01-01.
fn atimes_after_use(l: &Linked, tag: &str) -> [(i64, i64); 3] {
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200);
    let d = tag.to_string();
    fs::create_dir(l.m(&d)).unwrap();
    fs::write(l.m(&format!("{d}/f")), b"data").unwrap();
    fs::write(l.m(&format!("{d}/x")), b"#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(l.m(&format!("{d}/x")), fs::Permissions::from_mode(0o755)).unwrap();
    for n in ["", "/f", "/x"] {
        let f = fs::File::open(l.m(&format!("{d}{n}"))).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(old)).unwrap();
    }
    fs::read(l.m(&format!("{d}/f"))).unwrap();
    // ETXTBSY while a child another test's thread forks meanwhile still holds the fd the script
    // was written through (until its exec closes it): the harness's race, not the overlay's.
    let mut ran = None;
    poll_until("the script run", DEADLINE, || {
        match Command::new(l.m(&format!("{d}/x"))).status() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => false,
            r => {
                ran = Some(r.unwrap());
                true
            }
        }
    });
    assert!(ran.unwrap().success());
    fs::read_dir(l.m(&d)).unwrap().for_each(drop);
    let at = |n: &str| {
        let (s, m) = (
            fs::metadata(l.s(&format!("{d}{n}"))).unwrap().atime(),
            fs::metadata(l.m(&format!("{d}{n}"))).unwrap().atime(),
        );
        (s, m)
    };
    [at("/f"), at(""), at("/x")]
}

/// `noatime`: reading, running and listing through the overlay leave atime alone, on SOURCE
/// and as the overlay shows it (it moved: SOURCE's reads did it, kernel passthrough included);
/// `nodiratime`: listings leave the folder's atime alone, reads do not. With the default
/// (relatime) all three move, on both sides alike.
#[test]
fn noatime_and_nodiratime_keep_atime_still() {
    let old = 978_307_200;
    for (opts, still) in [
        ("noatime", [true, true, true]),
        ("nodiratime", [false, true, false]),
        ("", [false, false, false]),
        ("noatime,passthrough=off", [true, true, true]),
    ] {
        let Some(l) = Linked::new("noatime_and_nodiratime_keep_atime_still", opts) else {
            return;
        };
        let got = atimes_after_use(&l, "t");
        for ((what, (src, ovl)), still) in ["read", "listing", "exec"].iter().zip(got).zip(still) {
            assert_eq!(src == old, still, "{opts:?} {what}: SOURCE atime {src}");
            assert_eq!(ovl, src, "{opts:?} {what}: the overlay shows SOURCE's");
        }
    }
}

/// `remount,noatime` takes effect without a new mount (on the server's private SOURCE mount).
#[test]
fn remount_noatime_takes_effect() {
    let Some(l) = Linked::new("remount_noatime_takes_effect", "") else {
        return;
    };
    let h = helper(l.src.parent().unwrap());
    run(Command::new(&h)
        .arg(&l.src)
        .arg(&l.mnt)
        .arg("-o")
        .arg("rw,nosuid,nodev,noatime,remount,user_id=0,group_id=0"));
    // The server follows the mount table from a thread of its own: wait until it reports it.
    poll_until("the server took the remount", DEADLINE, || {
        l.notify(&[]);
        l.overlay_stats()["remounts"].as_u64() >= Some(1)
    });
    let got = atimes_after_use(&l, "t");
    for (what, (src, _)) in ["read", "listing", "exec"].iter().zip(got) {
        assert_eq!(src, 978_307_200, "{what}");
    }
}

// ---- 5. O_TMPFILE and file handles ----

/// `O_TMPFILE` is refused with EOPNOTSUPP: fuser 0.18 has no FUSE_TMPFILE opcode and answers
/// it ENOSYS, which the kernel turns into EOPNOTSUPP for the mount's life (documented in
/// docs/conformance.md). This pins the documented behaviour: no hang, no other error.
#[test]
fn o_tmpfile_is_refused_cleanly() {
    let Some(l) = Linked::new("o_tmpfile_is_refused_cleanly", "") else {
        return;
    };
    let native = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(&l.src);
    assert!(native.is_ok(), "SOURCE supports O_TMPFILE");
    for _ in 0..2 {
        let e = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(&l.mnt)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
    }
}

fn handle_of(p: &Path) -> sys::handle::FileHandle {
    let parent = fs::File::open(p.parent().unwrap()).unwrap();
    let name = sys::cstr(p.file_name().unwrap()).unwrap();
    sys::handle::name_to_handle_at(parent.as_fd(), &name).unwrap()
}

fn open_by_handle(mnt: &Path, h: &sys::handle::FileHandle) -> std::io::Result<fs::File> {
    let m = fs::File::open(mnt).unwrap();
    sys::handle::open_by_handle_at(m.as_fd(), h, libc::O_RDONLY).map(fs::File::from)
}

/// `open_by_handle_at` on handles of overlay files, once the kernel has forgotten the inodes
/// (here: the host renamed their folder, and plain invalidation dropped them from the kernel's
/// caches): the kernel asks LOOKUP(id, ".") — and LOOKUP(dir, "..") to reconnect the folder —
/// and the overlay finds them again (it answered ESTALE). A handle of a file removed since is
/// stale, as on SOURCE.
#[test]
fn file_handles_work_after_the_kernel_forgot_the_inodes() {
    let Some(l) = Linked::new(
        "file_handles_work_after_the_kernel_forgot_the_inodes",
        "events=off",
    ) else {
        return;
    };
    fs::create_dir_all(l.m("d/sub")).unwrap();
    fs::write(l.m("d/f"), b"content").unwrap();
    fs::write(l.m("d/gone"), b"g").unwrap();
    let (hf, hd, hg) = (
        handle_of(&l.m("d/f")),
        handle_of(&l.m("d/sub")),
        handle_of(&l.m("d/gone")),
    );
    // While the kernel holds them, nothing is asked of the overlay.
    let mut s = String::new();
    std::io::Read::read_to_string(&mut open_by_handle(&l.mnt, &hf).unwrap(), &mut s).unwrap();
    assert_eq!(s, "content");
    // The host moves the folder and removes one file; invalidation drops the old names.
    fs::rename(l.s("d"), l.s("e")).unwrap();
    fs::remove_file(l.s("e/gone")).unwrap();
    l.notify(&[]);
    // The folder, its subfolder and the file are kept (not the file the host removed), in
    // whatever order their FORGETs were handled: a folder's first, the file is kept by the
    // folder's own handle.
    poll_until("the kernel forgot the inodes", DEADLINE, || {
        l.notify(&[]);
        l.overlay_stats()["handles_kept"].as_u64() >= Some(3)
    });
    let mut s = String::new();
    std::io::Read::read_to_string(&mut open_by_handle(&l.mnt, &hf).unwrap(), &mut s).unwrap();
    assert_eq!(s, "content");
    let dir = open_by_handle(&l.mnt, &hd).unwrap();
    assert!(dir.metadata().unwrap().is_dir());
    let e = open_by_handle(&l.mnt, &hg).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
    l.notify(&[]);
    assert!(l.overlay_stats()["handles_found"].as_u64() >= Some(1));
    // And the tree is as SOURCE has it.
    assert_eq!(fs::read(l.m("e/f")).unwrap(), b"content");
    assert!(!l.m("d").exists());
}
