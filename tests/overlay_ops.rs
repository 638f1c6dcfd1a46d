//! The overlay's FUSE operations on names and attributes, end to end under /dev/fuse: lookup,
//! getattr, readlink, readdir, statfs, setattr (mode, owner, size, times), mknod, mkdir, rmdir,
//! unlink, symlink, rename and hard links, each checked through the mountpoint and against
//! SOURCE. Open files and data I/O (with and without kernel passthrough), xattrs, fallocate,
//! lseek, copy_file_range and locks are in `overlay_data.rs`, limits and ownership in
//! `overlay_limits.rs`, the mount lifecycle in `overlay_lifecycle.rs`; their shared helpers in
//! `common/ops.rs`.
//!
//! Each test mounts its own overlay of a fresh SOURCE under the temp dir. Tests that check how a
//! SOURCE-side change shows through the overlay use `cache=never` (a long kernel cache would hide
//! it); client-initiated changes are checked under `cache=always` (asked for by `setup` unless a
//! test names a cache policy: without `channel=` the default is `auto`), where they must be
//! visible at once because they go through the overlay.
//!
//! System calls std does not wrap go through `vfnotify::sys`.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::ops::*;
use vfnotify::sys;

// ------------------------------------------------------------------------------------------------
// lookup / getattr / readlink / readdir / statfs

#[test]
fn lookup_and_getattr_match_source() {
    let Some(fx) = setup("lookup_and_getattr_match_source", "", true) else {
        return;
    };
    for rel in [
        "hello.txt",
        "hello-hardlink.txt",
        "big.bin",
        "empty-dir",
        "docs",
        "docs/reports/2026/q1.txt",
        "with space/a file.txt",
        "ünïcødé-dir/файл-🙂.txt",
        "link-to-hello",
        "dangling",
        "docs/up-link",
    ] {
        let s = fs::symlink_metadata(fx.s(rel)).expect(rel);
        let o = fs::symlink_metadata(fx.o(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(o.mode(), s.mode(), "{rel}: mode");
        assert_eq!(o.uid(), s.uid(), "{rel}: uid");
        assert_eq!(o.gid(), s.gid(), "{rel}: gid");
        assert_eq!(o.nlink(), s.nlink(), "{rel}: nlink");
        assert_eq!(o.mtime(), s.mtime(), "{rel}: mtime");
        assert_eq!(o.mtime_nsec(), s.mtime_nsec(), "{rel}: mtime_nsec");
        if s.is_file() || s.file_type().is_symlink() {
            assert_eq!(o.len(), s.len(), "{rel}: size");
        }
        // Node ids are the backing inode numbers (same device): stat and readdir agree.
        assert_eq!(o.ino(), s.ino(), "{rel}: st_ino");
    }
    // Following a symlink through the overlay.
    assert_eq!(
        fs::read(fx.o("link-to-hello")).unwrap(),
        fs::read(fx.s("hello.txt")).unwrap()
    );
    assert_eq!(eno(fs::metadata(fx.o("dangling"))), libc::ENOENT);
    assert_eq!(eno(fs::symlink_metadata(fx.o("nope"))), libc::ENOENT);
    assert_eq!(
        eno(fs::symlink_metadata(fx.o("hello.txt/child"))),
        libc::ENOTDIR
    );
    // A negative lookup (cached under cache=always) is replaced by a create through the overlay.
    assert_eq!(eno(fs::symlink_metadata(fx.o("later.txt"))), libc::ENOENT);
    fs::write(fx.o("later.txt"), b"x").unwrap();
    assert_eq!(fs::symlink_metadata(fx.o("later.txt")).unwrap().len(), 1);
}

#[test]
fn readlink_returns_the_stored_target() {
    let Some(fx) = setup("readlink_returns_the_stored_target", "", true) else {
        return;
    };
    for (rel, target) in [
        ("link-to-hello", "hello.txt"),
        ("dangling", "does-not-exist"),
        ("docs/up-link", "../src"),
    ] {
        assert_eq!(
            fs::read_link(fx.o(rel)).unwrap(),
            Path::new(target),
            "{rel}"
        );
    }
    assert_eq!(eno(fs::read_link(fx.o("hello.txt"))), libc::EINVAL);
    // A long target survives the round trip.
    let long = "x/".repeat(1000) + "end";
    std::os::unix::fs::symlink(&long, fx.o("long-link")).unwrap();
    assert_eq!(fs::read_link(fx.o("long-link")).unwrap(), Path::new(&long));
    assert_eq!(fs::read_link(fx.s("long-link")).unwrap(), Path::new(&long));
}

#[test]
fn readdir_lists_the_same_names_as_source() {
    let Some(fx) = setup("readdir_lists_the_same_names_as_source", "", true) else {
        return;
    };
    fn names(p: &Path) -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    }
    for rel in [
        "",
        "docs",
        "docs/reports",
        "with space",
        "ünïcødé-dir",
        "empty-dir",
    ] {
        assert_eq!(names(&fx.o(rel)), names(&fx.s(rel)), "dir {rel:?}");
    }
    assert!(names(&fx.o("ünïcødé-dir")).contains(&OsStr::new("файл-🙂.txt").to_owned()));
    assert!(names(&fx.o("with space")).contains(&OsStr::new("a file.txt").to_owned()));
    assert!(names(&fx.o("empty-dir")).is_empty());
    // d_type and d_ino agree with SOURCE.
    for e in fs::read_dir(fx.o("")).unwrap() {
        let e = e.unwrap();
        let s = fs::symlink_metadata(fx.s("").join(e.file_name())).unwrap();
        assert_eq!(e.file_type().unwrap(), s.file_type(), "{:?}", e.file_name());
        assert_eq!(e.ino(), s.ino(), "{:?}", e.file_name());
    }
    // A large directory, read in several getdents batches.
    fs::create_dir(fx.o("many")).unwrap();
    for i in 0..2000 {
        File::create(fx.o(&format!("many/entry-with-a-longish-name-{i:05}"))).unwrap();
    }
    assert_eq!(names(&fx.o("many")).len(), 2000);
    assert_eq!(names(&fx.o("many")), names(&fx.s("many")));
}

#[test]
fn statfs_reports_the_source_filesystem() {
    let Some(fx) = setup("statfs_reports_the_source_filesystem", "", false) else {
        return;
    };
    let (o, s) = (statvfs(fx.mnt.path()), statvfs(fx.src.path()));
    assert_eq!(o.f_blocks, s.f_blocks);
    assert_eq!(o.f_bsize, s.f_bsize);
    assert_eq!(o.f_frsize, s.f_frsize);
    assert_eq!(o.f_files, s.f_files);
    assert_eq!(o.f_namemax, s.f_namemax);
    // Free counts move with other activity on the machine: within 1 %.
    let near = |a: u64, b: u64| a.abs_diff(b) <= b / 100 + 1024;
    assert!(near(o.f_bfree, s.f_bfree), "{} vs {}", o.f_bfree, s.f_bfree);
    assert!(near(o.f_bavail, s.f_bavail));
}

// ------------------------------------------------------------------------------------------------
// setattr

#[test]
fn chmod_chown_truncate_reach_source_and_show_at_once() {
    let Some(fx) = setup(
        "chmod_chown_truncate_reach_source_and_show_at_once",
        "",
        true,
    ) else {
        return;
    };
    let f = fx.o("hello.txt");
    let orig = fs::read(fx.s("hello.txt")).unwrap();
    // Warm the attribute cache first: changes through the overlay must still show.
    let _ = fs::metadata(&f).unwrap();

    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        fs::metadata(fx.s("hello.txt")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o640);

    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    let s = fs::metadata(fx.s("hello.txt")).unwrap();
    assert_eq!((s.uid(), s.gid()), (1234, 5678));
    let o = fs::metadata(&f).unwrap();
    assert_eq!((o.uid(), o.gid()), (1234, 5678));
    std::os::unix::fs::chown(&f, None, Some(42)).unwrap();
    let s = fs::metadata(fx.s("hello.txt")).unwrap();
    assert_eq!((s.uid(), s.gid()), (1234, 42), "gid only");

    // chmod of a directory.
    fs::set_permissions(fx.o("docs"), fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(fs::metadata(fx.s("docs")).unwrap().mode() & 0o7777, 0o711);
    assert_eq!(fs::metadata(fx.o("docs")).unwrap().mode() & 0o7777, 0o711);
    // chown of a directory.
    std::os::unix::fs::chown(fx.o("docs"), Some(7), Some(8)).unwrap();
    let s = fs::metadata(fx.s("docs")).unwrap();
    assert_eq!((s.uid(), s.gid()), (7, 8));
    // lchown of a symlink changes the link, not its target.
    let before = fs::metadata(fx.s("hello.txt")).unwrap();
    std::os::unix::fs::lchown(fx.o("link-to-hello"), Some(9), Some(10)).unwrap();
    let l = fs::symlink_metadata(fx.s("link-to-hello")).unwrap();
    assert_eq!((l.uid(), l.gid()), (9, 10));
    let after = fs::metadata(fx.s("hello.txt")).unwrap();
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));

    // truncate: grow (zero-filled), then shrink; by path (setattr without a handle).
    let t = File::options().write(true).open(&f).unwrap();
    drop(t);
    let grow = 100_000u64;
    OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(grow)
        .unwrap();
    assert_eq!(fs::metadata(fx.s("hello.txt")).unwrap().len(), grow);
    assert_eq!(fs::metadata(&f).unwrap().len(), grow);
    let data = fs::read(&f).unwrap();
    assert_eq!(&data[..orig.len()], &orig[..]);
    assert!(data[orig.len()..].iter().all(|b| *b == 0));
    // truncate(2) by path, no open file.
    sys::truncate_following(&cpath(&f), 3).unwrap();
    assert_eq!(fs::read(fx.s("hello.txt")).unwrap(), &orig[..3]);
    assert_eq!(fs::read(&f).unwrap(), &orig[..3]);
    assert_eq!(fs::metadata(&f).unwrap().len(), 3);
    // truncate a directory: EISDIR.
    assert_eq!(
        eno(sys::truncate_following(&cpath(&fx.o("docs")), 0)),
        libc::EISDIR
    );
}

#[test]
fn utimens_sets_times_with_now_and_omit() {
    let Some(fx) = setup("utimens_sets_times_with_now_and_omit", "", true) else {
        return;
    };
    let f = fx.o("hello.txt");
    utimens(
        &f,
        [
            ts(1_000_000_000, 123_456_789),
            ts(1_100_000_000, 987_654_321),
        ],
        0,
    )
    .unwrap();
    for m in [
        fs::metadata(fx.s("hello.txt")).unwrap(),
        fs::metadata(&f).unwrap(),
    ] {
        assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789));
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_100_000_000, 987_654_321));
    }
    // atime = now, mtime omitted.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    utimens(&f, [ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)], 0).unwrap();
    for m in [
        fs::metadata(fx.s("hello.txt")).unwrap(),
        fs::metadata(&f).unwrap(),
    ] {
        assert!(
            (m.atime() - now).abs() <= 5,
            "atime {} vs now {now}",
            m.atime()
        );
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_100_000_000, 987_654_321));
    }
    // atime omitted, mtime = now.
    utimens(&f, [ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW)], 0).unwrap();
    let m = fs::metadata(fx.s("hello.txt")).unwrap();
    assert!((m.mtime() - now).abs() <= 5);
    // Whole seconds before the epoch.
    utimens(&f, [ts(-86_400, 0), ts(-86_400 * 365, 0)], 0).unwrap();
    let m = fs::metadata(fx.s("hello.txt")).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (-86_400, 0));
    assert_eq!(m.mtime(), -86_400 * 365);
    assert_eq!(fs::metadata(&f).unwrap().mtime(), -86_400 * 365);
    // A symlink itself (AT_SYMLINK_NOFOLLOW), leaving the target alone.
    let target_before = fs::metadata(fx.s("hello.txt")).unwrap().mtime();
    utimens(
        &fx.o("link-to-hello"),
        [ts(4_000_000, 0), ts(5_000_000, 0)],
        libc::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    assert_eq!(
        fs::symlink_metadata(fx.s("link-to-hello")).unwrap().mtime(),
        5_000_000
    );
    assert_eq!(
        fs::metadata(fx.s("hello.txt")).unwrap().mtime(),
        target_before
    );
}

#[test]
fn utimens_on_a_directory() {
    let Some(fx) = setup("utimens_on_a_directory", "cache=never", true) else {
        return;
    };
    utimens(&fx.o("docs"), [ts(2_000_000, 0), ts(3_000_000, 0)], 0).unwrap();
    assert_eq!(
        fs::metadata(fx.s("docs")).unwrap().mtime(),
        3_000_000,
        "SOURCE"
    );
    assert_eq!(
        fs::metadata(fx.s("docs")).unwrap().atime(),
        2_000_000,
        "SOURCE"
    );
    assert_eq!(
        fs::metadata(fx.o("docs")).unwrap().mtime(),
        3_000_000,
        "overlay"
    );
    utimens(fx.mnt.path(), [ts(4_000_000, 0), ts(5_000_000, 0)], 0).unwrap();
    assert_eq!(
        fs::metadata(fx.src.path()).unwrap().mtime(),
        5_000_000,
        "root on SOURCE"
    );
}

#[test]

fn utimens_before_the_epoch_with_nanoseconds() {
    let Some(fx) = setup("utimens_before_the_epoch_with_nanoseconds", "", true) else {
        return;
    };
    let f = fx.o("hello.txt");
    // -0.5 s and -1.5 s.
    utimens(&f, [ts(-1, 500_000_000), ts(-2, 500_000_000)], 0).unwrap();
    let m = fs::metadata(fx.s("hello.txt")).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (-1, 500_000_000));
    assert_eq!((m.mtime(), m.mtime_nsec()), (-2, 500_000_000));
}

// ------------------------------------------------------------------------------------------------
// mknod / mkdir / rmdir / unlink / symlink

#[test]
fn mknod_fifo_socket_and_char_device() {
    let Some(fx) = setup("mknod_fifo_socket_and_char_device", "", false) else {
        return;
    };
    use std::os::unix::fs::FileTypeExt;
    // FIFO.
    // mkfifo(3) is this mknodat call.
    sys::mknodat(sys::cwd(), &cpath(&fx.o("fifo")), libc::S_IFIFO | 0o644, 0).unwrap();
    assert!(
        fs::symlink_metadata(fx.s("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        fs::symlink_metadata(fx.o("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // The FIFO works through the overlay (a writer thread, a reader here).
    let fifo = fx.o("fifo");
    let w = std::thread::spawn(move || fs::write(fifo, b"through the fifo"));
    let got = with_deadline(Duration::from_secs(10), {
        let p = fx.o("fifo");
        move || fs::read(p)
    })
    .expect("fifo read hung")
    .unwrap();
    w.join().unwrap().unwrap();
    assert_eq!(got, b"through the fifo");

    // Unix socket (bind makes the node with mknod).
    let sock = fx.o("sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert!(
        fs::symlink_metadata(fx.s("sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    let mut c1 = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c1.write_all(b"hi").unwrap();
    let (mut a, _) = l.accept().unwrap();
    let mut b = [0u8; 2];
    a.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hi");

    // Character device 1:3 (/dev/null's numbers), made as root.
    let c = cpath(&fx.o("null"));
    let dev = libc::makedev(1, 3);
    sys::mknodat(sys::cwd(), &c, libc::S_IFCHR | 0o600, dev).unwrap();
    for m in [
        fs::symlink_metadata(fx.s("null")).unwrap(),
        fs::symlink_metadata(fx.o("null")).unwrap(),
    ] {
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), dev);
        assert_eq!(m.mode() & 0o7777, 0o600);
    }
    // Default mount is nodev: opening the device through the overlay is refused.
    assert_eq!(eno(File::open(fx.o("null"))), libc::EACCES);
    // An existing name: EEXIST.
    assert_eq!(
        eno(sys::mknodat(sys::cwd(), &c, libc::S_IFIFO | 0o600, 0)),
        libc::EEXIST
    );
}

#[test]
fn mkdir_rmdir_unlink_symlink() {
    let Some(fx) = setup("mkdir_rmdir_unlink_symlink", "", true) else {
        return;
    };
    // mkdir: mode as asked (the server runs with umask 0; the caller's umask applies in-kernel).
    fs::create_dir(fx.o("d")).unwrap();
    fs::DirBuilder::new()
        .mode(0o750)
        .create(fx.o("d/sub"))
        .unwrap();
    assert!(fs::metadata(fx.s("d/sub")).unwrap().is_dir());
    let mode = fs::metadata(fx.s("d/sub")).unwrap().mode() & 0o7777;
    assert_eq!(mode & !0o750, 0, "mode {mode:o} beyond 0750");
    assert_eq!(
        fs::metadata(fx.o("d")).unwrap().nlink(),
        3,
        "nlink of d with one subdir"
    );
    assert_eq!(eno(fs::create_dir(fx.o("d"))), libc::EEXIST);
    // rmdir: non-empty, not a dir, then the real thing.
    assert_eq!(eno(fs::remove_dir(fx.o("d"))), libc::ENOTEMPTY);
    assert_eq!(eno(fs::remove_dir(fx.o("hello.txt"))), libc::ENOTDIR);
    fs::remove_dir(fx.o("d/sub")).unwrap();
    fs::remove_dir(fx.o("d")).unwrap();
    assert!(!fx.s("d").exists());
    assert_eq!(eno(fs::symlink_metadata(fx.o("d"))), libc::ENOENT);
    // mkdir again under the same name (new inode) works and is empty.
    fs::create_dir(fx.o("d")).unwrap();
    assert_eq!(fs::read_dir(fx.o("d")).unwrap().count(), 0);

    // unlink.
    fs::remove_file(fx.o("docs/README.md")).unwrap();
    assert!(!fx.s("docs/README.md").exists());
    assert_eq!(
        eno(fs::symlink_metadata(fx.o("docs/README.md"))),
        libc::ENOENT
    );
    assert_eq!(eno(fs::remove_file(fx.o("docs"))), libc::EISDIR);
    assert_eq!(eno(fs::remove_file(fx.o("nope"))), libc::ENOENT);
    // Unlinking a symlink removes the link only.
    fs::remove_file(fx.o("link-to-hello")).unwrap();
    assert!(fx.s("hello.txt").exists());

    // symlink: relative, absolute, dangling, into a subdir.
    std::os::unix::fs::symlink("hello.txt", fx.o("l1")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", fx.o("docs/l2")).unwrap();
    assert_eq!(fs::read_link(fx.s("l1")).unwrap(), Path::new("hello.txt"));
    assert_eq!(
        fs::read_link(fx.s("docs/l2")).unwrap(),
        Path::new("/nonexistent/abs")
    );
    assert!(
        fs::symlink_metadata(fx.o("l1"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read(fx.o("l1")).unwrap(),
        fs::read(fx.s("hello.txt")).unwrap()
    );
    assert_eq!(
        eno(std::os::unix::fs::symlink("x", fx.o("l1"))),
        libc::EEXIST
    );
}

// ------------------------------------------------------------------------------------------------
// rename / link

#[test]
fn rename_plain_overwrite_noreplace_exchange() {
    let Some(fx) = setup("rename_plain_overwrite_noreplace_exchange", "", true) else {
        return;
    };
    // Plain, across directories.
    fs::rename(fx.o("hello.txt"), fx.o("docs/moved.txt")).unwrap();
    assert!(!fx.s("hello.txt").exists() && fx.s("docs/moved.txt").exists());
    assert_eq!(eno(fs::symlink_metadata(fx.o("hello.txt"))), libc::ENOENT);
    assert_eq!(
        fs::read(fx.o("docs/moved.txt")).unwrap(),
        fs::read(fx.s("docs/moved.txt")).unwrap()
    );
    // The moved file stays usable under its new name (chmod resolves it there).
    fs::set_permissions(fx.o("docs/moved.txt"), fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(
        fs::metadata(fx.s("docs/moved.txt")).unwrap().mode() & 0o777,
        0o604
    );

    // Overwrite an existing file.
    fs::write(fx.o("a"), b"AAA").unwrap();
    fs::write(fx.o("b"), b"BB").unwrap();
    let a_ino = fs::metadata(fx.o("a")).unwrap().ino();
    fs::rename(fx.o("a"), fx.o("b")).unwrap();
    assert_eq!(fs::read(fx.o("b")).unwrap(), b"AAA");
    assert_eq!(fs::metadata(fx.o("b")).unwrap().ino(), a_ino);
    assert_eq!(fs::read(fx.s("b")).unwrap(), b"AAA");
    assert!(!fx.s("a").exists());

    // RENAME_NOREPLACE onto an existing name: EEXIST, nothing changes.
    fs::write(fx.o("c"), b"C").unwrap();
    assert_eq!(
        eno(renameat2(&fx.o("c"), &fx.o("b"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(fs::read(fx.s("b")).unwrap(), b"AAA");
    assert_eq!(fs::read(fx.s("c")).unwrap(), b"C");
    // ... and onto a free name: works.
    renameat2(&fx.o("c"), &fx.o("c2"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(fx.s("c2")).unwrap(), b"C");

    // RENAME_EXCHANGE of two files, then of a file and a directory.
    renameat2(&fx.o("b"), &fx.o("c2"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(fx.s("b")).unwrap(), b"C");
    assert_eq!(fs::read(fx.s("c2")).unwrap(), b"AAA");
    assert_eq!(fs::read(fx.o("b")).unwrap(), b"C");
    assert_eq!(fs::read(fx.o("c2")).unwrap(), b"AAA");
    renameat2(&fx.o("b"), &fx.o("empty-dir"), libc::RENAME_EXCHANGE).unwrap();
    assert!(fs::metadata(fx.o("b")).unwrap().is_dir());
    assert_eq!(fs::read(fx.o("empty-dir")).unwrap(), b"C");
    assert!(fs::metadata(fx.s("b")).unwrap().is_dir());
    // Exchange with a missing name: ENOENT.
    assert_eq!(
        eno(renameat2(
            &fx.o("b"),
            &fx.o("missing"),
            libc::RENAME_EXCHANGE
        )),
        libc::ENOENT
    );

    // Rename a directory with contents; its children follow.
    fs::rename(fx.o("docs"), fx.o("documents")).unwrap();
    assert_eq!(
        fs::read(fx.o("documents/reports/2026/q1.txt")).unwrap(),
        fs::read(fx.s("documents/reports/2026/q1.txt")).unwrap()
    );
    fs::write(fx.o("documents/reports/new.txt"), b"n").unwrap();
    assert_eq!(fs::read(fx.s("documents/reports/new.txt")).unwrap(), b"n");
    // Dir onto non-empty dir: ENOTEMPTY; dir into its own subtree: EINVAL.
    assert_eq!(
        eno(fs::rename(fx.o("src"), fx.o("documents"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        eno(fs::rename(fx.o("documents"), fx.o("documents/reports/x"))),
        libc::EINVAL
    );
}

#[test]

fn renamed_directory_shows_its_new_ctime() {
    let Some(fx) = setup("renamed_directory_shows_its_new_ctime", "", false) else {
        return;
    };
    fs::create_dir(fx.o("a")).unwrap();
    fs::write(fx.o("x"), b"x").unwrap();
    let (d0, f0) = (
        fs::metadata(fx.o("a")).unwrap(),
        fs::metadata(fx.o("x")).unwrap(),
    );
    // ctime has nanosecond resolution here; 20 ms is far above the clock's granularity.
    std::thread::sleep(Duration::from_millis(20));
    fs::rename(fx.o("a"), fx.o("b")).unwrap();
    fs::rename(fx.o("x"), fx.o("y")).unwrap();
    let ctime = |m: &fs::Metadata| (m.ctime(), m.ctime_nsec());
    let src_d = fs::metadata(fx.s("b")).unwrap();
    assert!(
        ctime(&src_d) > ctime(&d0),
        "SOURCE dir ctime unchanged by rename"
    );
    assert_eq!(
        ctime(&fs::metadata(fx.o("b")).unwrap()),
        ctime(&src_d),
        "dir ctime through the overlay"
    );
    let src_f = fs::metadata(fx.s("y")).unwrap();
    assert!(ctime(&src_f) > ctime(&f0));
    assert_eq!(
        ctime(&fs::metadata(fx.o("y")).unwrap()),
        ctime(&src_f),
        "file ctime through the overlay"
    );
}

#[test]
fn hard_links_share_one_inode() {
    let Some(fx) = setup("hard_links_share_one_inode", "", true) else {
        return;
    };
    // A link made through the overlay.
    fs::write(fx.o("orig"), b"data").unwrap();
    fs::hard_link(fx.o("orig"), fx.o("docs/alias")).unwrap();
    let (a, b) = (
        fs::metadata(fx.o("orig")).unwrap(),
        fs::metadata(fx.o("docs/alias")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    assert_eq!(fs::metadata(fx.s("orig")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(fx.s("orig")).unwrap().ino(),
        fs::metadata(fx.s("docs/alias")).unwrap().ino()
    );
    // chmod through one name shows through the other (the bindfs bug), at once.
    fs::set_permissions(fx.o("docs/alias"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(fx.o("orig")).unwrap().mode() & 0o777, 0o600);
    // Data written through one name is read through the other.
    fs::write(fx.o("orig"), b"rewritten").unwrap();
    assert_eq!(fs::read(fx.o("docs/alias")).unwrap(), b"rewritten");
    // Unlinking one name: the other's nlink drops to 1.
    fs::remove_file(fx.o("orig")).unwrap();
    assert_eq!(fs::metadata(fx.o("docs/alias")).unwrap().nlink(), 1);
    assert_eq!(fs::read(fx.o("docs/alias")).unwrap(), b"rewritten");
    fs::set_permissions(fx.o("docs/alias"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        fs::metadata(fx.s("docs/alias")).unwrap().mode() & 0o777,
        0o644
    );

    // A link that exists on SOURCE from the start (fixture): both names, looked up separately.
    let (h, hl) = (
        fs::metadata(fx.o("hello.txt")).unwrap(),
        fs::metadata(fx.o("hello-hardlink.txt")).unwrap(),
    );
    assert_eq!(h.ino(), hl.ino());
    assert_eq!((h.nlink(), hl.nlink()), (2, 2));
    fs::set_permissions(fx.o("hello.txt"), fs::Permissions::from_mode(0o611)).unwrap();
    assert_eq!(
        fs::metadata(fx.o("hello-hardlink.txt")).unwrap().mode() & 0o777,
        0o611
    );
    std::os::unix::fs::chown(fx.o("hello-hardlink.txt"), Some(321), None).unwrap();
    assert_eq!(fs::metadata(fx.o("hello.txt")).unwrap().uid(), 321);
    // Hard link to a directory: EPERM; link onto an existing name: EEXIST.
    assert_eq!(eno(fs::hard_link(fx.o("docs"), fx.o("dl"))), libc::EPERM);
    assert_eq!(
        eno(fs::hard_link(fx.o("hello.txt"), fx.o("docs/alias"))),
        libc::EEXIST
    );
}
