//! The overlay's FUSE operations, end to end under /dev/fuse: every operation checked through the
//! mountpoint and against SOURCE, and data I/O with and without kernel passthrough. Limits and
//! ownership are in `overlay_limits.rs`, the mount lifecycle in `overlay_lifecycle.rs`; their
//! shared helpers in `common/ops.rs`.
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
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
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

#[test]
fn open_unlinked_file_keeps_working() {
    let Some(fx) = setup("open_unlinked_file_keeps_working", "", false) else {
        return;
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.o("tmpfile"))
        .unwrap();
    f.write_all(b"before unlink").unwrap();
    fs::remove_file(fx.o("tmpfile")).unwrap();
    assert!(!fx.s("tmpfile").exists());
    // I/O on the open handle.
    f.write_all(b", after").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "before unlink, after");
    f.set_len(6).unwrap();
    // fstat on the unlinked file: POSIX says it works (nlink 0).
    let m = f.metadata().expect("fstat of an open, unlinked file");
    assert_eq!(m.nlink(), 0);
    assert_eq!(m.len(), 6);
}

#[test]
fn fchmod_of_open_unlinked_file() {
    let Some(fx) = setup("fchmod_of_open_unlinked_file", "", false) else {
        return;
    };
    let f = File::create(fx.o("tmpfile")).unwrap();
    fs::remove_file(fx.o("tmpfile")).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .expect("fchmod of an open, unlinked file");
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn fstat_of_open_unlinked_file_with_cache_never() {
    let Some(fx) = setup(
        "fstat_of_open_unlinked_file_with_cache_never",
        "cache=never",
        false,
    ) else {
        return;
    };
    let f = File::create(fx.o("tmpfile")).unwrap();
    fs::remove_file(fx.o("tmpfile")).unwrap();
    let m = f.metadata().expect("fstat of an open, unlinked file");
    assert_eq!(m.nlink(), 0);
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

#[test]
fn client_changes_show_at_once_under_cache_always() {
    let Some(fx) = setup(
        "client_changes_show_at_once_under_cache_always",
        "cache=always",
        true,
    ) else {
        return;
    };
    // Warm every cache: names, attributes, listing, pages.
    let _ = fs::read_dir(fx.o("docs")).unwrap().count();
    let _ = fs::read(fx.o("docs/README.md")).unwrap();
    assert_eq!(eno(fs::metadata(fx.o("docs/new"))), libc::ENOENT);
    // Then change through the overlay: each change is seen at once.
    fs::write(fx.o("docs/new"), b"one").unwrap();
    assert_eq!(fs::read(fx.o("docs/new")).unwrap(), b"one");
    assert!(
        fs::read_dir(fx.o("docs"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "new")
    );
    fs::write(fx.o("docs/README.md"), b"replaced").unwrap();
    assert_eq!(fs::read(fx.o("docs/README.md")).unwrap(), b"replaced");
    assert_eq!(fs::metadata(fx.o("docs/README.md")).unwrap().len(), 8);
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.o("docs/new"))
        .unwrap();
    f.write_all(b"+two").unwrap();
    drop(f);
    assert_eq!(fs::metadata(fx.o("docs/new")).unwrap().len(), 7);
    fs::rename(fx.o("docs/new"), fx.o("docs/renamed")).unwrap();
    assert!(
        !fs::read_dir(fx.o("docs"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "new")
    );
    fs::remove_file(fx.o("docs/renamed")).unwrap();
    assert_eq!(eno(fs::metadata(fx.o("docs/renamed"))), libc::ENOENT);
    let names: Vec<_> = fs::read_dir(fx.o("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n == "renamed"), "{names:?}");
}

// ------------------------------------------------------------------------------------------------
// open / create / read / write / flush / release / fsync

#[test]
fn create_write_read_append_fsync() {
    let Some(fx) = setup("create_write_read_append_fsync", "", false) else {
        return;
    };
    let p = fx.o("f");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(fx.s("f")).unwrap().mode() & 0o777, 0o640);
    f.write_all(b"hello world").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    assert_eq!(fs::read(fx.s("f")).unwrap(), b"hello world");
    f.seek(SeekFrom::Start(6)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "world");
    // pwrite in the middle.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"W", 6).unwrap();
    drop(f); // flush + release
    assert_eq!(fs::read(fx.s("f")).unwrap(), b"hello World");
    // O_EXCL on an existing name.
    assert_eq!(
        eno(OpenOptions::new().write(true).create_new(true).open(&p)),
        libc::EEXIST
    );
    // O_APPEND: every write lands at the end, even after a seek; also from a second handle.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"+a").unwrap();
    b.write_all(b"+b").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"+c").unwrap();
    drop((a, b));
    assert_eq!(fs::read(fx.s("f")).unwrap(), b"hello World+a+b+c");
    assert_eq!(fs::read(&p).unwrap(), b"hello World+a+b+c");
    // O_TRUNC on open.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(fs::metadata(fx.s("f")).unwrap().len(), 0);
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    // A reader and a writer open at once (read-only open first, then write-only).
    fs::write(&p, b"0123456789").unwrap();
    let mut r = File::open(&p).unwrap();
    let mut w = OpenOptions::new().write(true).open(&p).unwrap();
    w.write_all(b"abc").unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc3456789");
    // Writing through a read-only handle fails with EBADF.
    assert_eq!(eno(r.write_all(b"x")), libc::EBADF);
    // Opening a directory for writing: EISDIR.
    assert_eq!(
        eno(OpenOptions::new().write(true).open(fx.mnt.path())),
        libc::EISDIR
    );
    // fsync on a directory.
    File::open(fx.mnt.path()).unwrap().sync_all().unwrap();
}

fn data_io_4mib(test: &str, opts: &str) {
    let Some(fx) = setup(test, opts, false) else {
        return;
    };
    const LEN: usize = 4 << 20;
    let data = pattern(LEN, 7);
    {
        let mut f = File::create(fx.o("big")).unwrap();
        // Unaligned chunks, so writes straddle pages.
        for chunk in data.chunks(123_457) {
            f.write_all(chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert!(
        fs::read(fx.s("big")).unwrap() == data,
        "SOURCE bytes differ"
    );
    assert!(
        fs::read(fx.o("big")).unwrap() == data,
        "overlay bytes differ"
    );
    // Random-offset reads.
    use std::os::unix::fs::FileExt;
    let f = File::open(fx.o("big")).unwrap();
    for (off, len) in [
        (0usize, 1usize),
        (4095, 2),
        (1 << 20, 70_000),
        (LEN - 10, 10),
    ] {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, &data[off..off + len], "read at {off}");
    }
    // Overwrite a range in place and re-read.
    let patch = pattern(300_000, 9);
    OpenOptions::new()
        .write(true)
        .open(fx.o("big"))
        .unwrap()
        .write_all_at(&patch, 1_000_001)
        .unwrap();
    let mut want = data.clone();
    want[1_000_001..1_300_001].copy_from_slice(&patch);
    assert!(fs::read(fx.s("big")).unwrap() == want, "SOURCE after patch");
    assert!(
        fs::read(fx.o("big")).unwrap() == want,
        "overlay after patch"
    );
    // mmap-free check that the page cache (or passthrough) never serves the old bytes.
    let mut buf = vec![0u8; 300_000];
    f.read_exact_at(&mut buf, 1_000_001).unwrap();
    assert!(buf == patch);
}

#[test]
fn data_io_4mib_with_passthrough() {
    data_io_4mib("data_io_4mib_with_passthrough", "");
}

#[test]
fn data_io_4mib_without_passthrough() {
    data_io_4mib("data_io_4mib_without_passthrough", "passthrough=off");
}

// ------------------------------------------------------------------------------------------------
// xattr / access / fallocate / lseek / copy_file_range / locks

#[test]
fn xattrs_get_set_list_remove() {
    let Some(fx) = setup("xattrs_get_set_list_remove", "", true) else {
        return;
    };
    // Does SOURCE support user.* xattrs?
    if let Err(e) = lsetxattr(&fx.s("empty-dir"), "user.probe", b"1") {
        eprintln!("SKIP xattrs_get_set_list_remove: SOURCE has no user xattrs ({e})");
        return;
    }
    lremovexattr(&fx.s("empty-dir"), "user.probe").unwrap();
    let f = fx.o("hello.txt");
    lsetxattr(&f, "user.colour", b"blue").unwrap();
    assert_eq!(
        lgetxattr(&fx.s("hello.txt"), "user.colour").unwrap(),
        b"blue"
    );
    assert_eq!(lgetxattr(&f, "user.colour").unwrap(), b"blue");
    lsetxattr(&f, "user.empty", b"").unwrap();
    assert_eq!(lgetxattr(&f, "user.empty").unwrap(), b"");
    let mut l = llistxattr(&f).unwrap();
    l.sort();
    assert_eq!(l, ["user.colour", "user.empty"]);
    // Size query (size 0) then a too-small buffer: ERANGE.
    assert_eq!(lgetxattr_sized(&f, "user.colour", 0).unwrap().0, 4);
    assert_eq!(eno(lgetxattr_sized(&f, "user.colour", 2)), libc::ERANGE);
    // XATTR_CREATE on an existing name: EEXIST; XATTR_REPLACE on a missing one: ENODATA.
    let v = b"x";
    assert_eq!(
        eno(lsetxattr_flags(&f, "user.colour", v, libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        eno(lsetxattr_flags(&f, "user.missing", v, libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    lremovexattr(&f, "user.colour").unwrap();
    assert_eq!(eno(lgetxattr(&f, "user.colour")), libc::ENODATA);
    assert_eq!(
        eno(lgetxattr(&fx.s("hello.txt"), "user.colour")),
        libc::ENODATA
    );
    assert_eq!(eno(lremovexattr(&f, "user.colour")), libc::ENODATA);
}

#[test]
fn xattrs_on_a_directory() {
    let Some(fx) = setup("xattrs_on_a_directory", "", true) else {
        return;
    };
    if let Err(e) = lsetxattr(&fx.s("empty-dir"), "user.probe", b"1") {
        eprintln!("SKIP xattrs_on_a_directory: SOURCE has no user xattrs ({e})");
        return;
    }
    assert_eq!(lgetxattr(&fx.o("empty-dir"), "user.probe").unwrap(), b"1");
    assert_eq!(llistxattr(&fx.o("empty-dir")).unwrap(), ["user.probe"]);
    lsetxattr(&fx.o("docs"), "user.d", b"dir").unwrap();
    assert_eq!(lgetxattr(&fx.s("docs"), "user.d").unwrap(), b"dir");
    lremovexattr(&fx.o("docs"), "user.d").unwrap();
    assert_eq!(eno(lgetxattr(&fx.s("docs"), "user.d")), libc::ENODATA);
    // The root directory too.
    lsetxattr(fx.mnt.path(), "user.root", b"r").unwrap();
    assert_eq!(lgetxattr(fx.src.path(), "user.root").unwrap(), b"r");
}

#[test]
fn access_checks() {
    let Some(fx) = setup("access_checks", "", true) else {
        return;
    };
    access(&fx.o("hello.txt"), libc::R_OK | libc::W_OK).unwrap();
    access(&fx.o("docs"), libc::X_OK).unwrap();
    access(&fx.o("hello.txt"), libc::F_OK).unwrap();
    assert_eq!(eno(access(&fx.o("nope"), libc::F_OK)), libc::ENOENT);
    // Root gets X_OK only when some execute bit is set.
    fs::set_permissions(fx.o("hello.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(eno(access(&fx.o("hello.txt"), libc::X_OK)), libc::EACCES);
    fs::set_permissions(fx.o("hello.txt"), fs::Permissions::from_mode(0o744)).unwrap();
    access(&fx.o("hello.txt"), libc::X_OK).unwrap();
}

#[test]
fn fallocate_allocates_punches_and_keeps_size() {
    let Some(fx) = setup("fallocate_allocates_punches_and_keeps_size", "", false) else {
        return;
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.o("fa"))
        .unwrap();
    fallocate(&f, 0, 0, 1 << 20).unwrap();
    assert_eq!(fs::metadata(fx.s("fa")).unwrap().len(), 1 << 20);
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    assert_eq!(fs::metadata(fx.o("fa")).unwrap().len(), 1 << 20);
    assert!(fs::metadata(fx.s("fa")).unwrap().blocks() >= 2048);
    // KEEP_SIZE: blocks beyond EOF, size unchanged.
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20).unwrap();
    assert_eq!(fs::metadata(fx.s("fa")).unwrap().len(), 1 << 20);
    assert_eq!(fs::metadata(fx.o("fa")).unwrap().len(), 1 << 20);
    // PUNCH_HOLE: reads back zeros.
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xAB; 65536], 0).unwrap();
    fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        4096,
        8192,
    )
    .unwrap();
    let mut buf = vec![0u8; 16384];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..4096].iter().all(|b| *b == 0xAB));
    assert!(buf[4096..12288].iter().all(|b| *b == 0), "hole not zero");
    assert!(buf[12288..].iter().all(|b| *b == 0xAB));
    assert_eq!(fs::read(fx.s("fa")).unwrap()[4096..12288], [0u8; 8192]);
    // A read-only handle: EBADF.
    let r = File::open(fx.o("fa")).unwrap();
    assert_eq!(eno(fallocate(&r, 0, 0, 4096)), libc::EBADF);
}

#[test]
fn lseek_data_and_hole_on_a_sparse_file() {
    let Some(fx) = setup("lseek_data_and_hole_on_a_sparse_file", "", false) else {
        return;
    };
    use std::os::unix::fs::FileExt;
    const MIB: i64 = 1 << 20;
    {
        let f = File::create(fx.o("sparse")).unwrap();
        f.write_all_at(&[1u8; 4096], 0).unwrap();
        f.write_all_at(&[2u8; 4096], MIB as u64).unwrap();
        f.set_len(4 * MIB as u64).unwrap();
        f.sync_all().unwrap();
    }
    let o = File::open(fx.o("sparse")).unwrap();
    let s = File::open(fx.s("sparse")).unwrap();
    let probe =
        |f: &File, off, w| eno(lseek(f, off, w)).max(0) as i64 + lseek(f, off, w).unwrap_or(-1);
    for (off, whence) in [
        (0, libc::SEEK_DATA),
        (0, libc::SEEK_HOLE),
        (4096, libc::SEEK_DATA),
        (MIB, libc::SEEK_HOLE),
        (MIB + 4096, libc::SEEK_DATA),
        (2 * MIB, libc::SEEK_HOLE),
    ] {
        assert_eq!(
            probe(&o, off, whence),
            probe(&s, off, whence),
            "off {off} whence {whence}"
        );
    }
    // The expected layout (ext4 and tmpfs both report these exactly for page-aligned data).
    assert_eq!(lseek(&o, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(lseek(&o, 0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(lseek(&o, 4096, libc::SEEK_DATA).unwrap(), MIB);
    assert_eq!(lseek(&o, MIB, libc::SEEK_HOLE).unwrap(), MIB + 4096);
    // SEEK_DATA past the last data: ENXIO.
    assert_eq!(eno(lseek(&o, MIB + 4096, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(eno(lseek(&o, 5 * MIB, libc::SEEK_DATA)), libc::ENXIO);
    // Plain SEEK_END still works.
    assert_eq!(lseek(&o, 0, libc::SEEK_END).unwrap(), 4 * MIB);
}

#[test]
fn copy_file_range_copies_between_overlay_files() {
    let Some(fx) = setup("copy_file_range_copies_between_overlay_files", "", false) else {
        return;
    };
    let data = pattern(3 << 20, 3);
    fs::write(fx.o("in"), &data).unwrap();
    let fin = File::open(fx.o("in")).unwrap();
    let fout = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.o("out"))
        .unwrap();
    let want = data.len() - 1000;
    let mut done = 0usize;
    while done < want {
        let (off_in, off_out) = (1000 + done as u64, done as u64);
        let n =
            sys::copy_file_range(fin.as_fd(), off_in, fout.as_fd(), off_out, want - done).unwrap();
        assert!(n > 0, "copy_file_range returned 0 at {done}");
        done += n;
    }
    drop(fout);
    assert!(
        fs::read(fx.s("out")).unwrap() == data[1000..],
        "SOURCE copy differs"
    );
    assert!(
        fs::read(fx.o("out")).unwrap() == data[1000..],
        "overlay copy differs"
    );
    assert_eq!(fs::metadata(fx.o("out")).unwrap().len(), want as u64);
}

#[test]
fn posix_ofd_and_flock_locks_conflict() {
    let Some(fx) = setup("posix_ofd_and_flock_locks_conflict", "", false) else {
        return;
    };
    fs::write(fx.o("lockme"), b"x").unwrap();
    let a = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.o("lockme"))
        .unwrap();
    let b = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.o("lockme"))
        .unwrap();
    // OFD locks conflict between two open file descriptions.
    ofd_lock(&a, libc::F_OFD_SETLK, libc::F_WRLCK).unwrap();
    assert_eq!(
        eno(ofd_lock(&b, libc::F_OFD_SETLK, libc::F_RDLCK)),
        libc::EAGAIN
    );
    let got = ofd_lock(&b, libc::F_OFD_GETLK, libc::F_WRLCK).unwrap();
    assert_eq!(
        got.l_type as i32,
        libc::F_WRLCK,
        "F_OFD_GETLK reports the holder"
    );
    ofd_lock(&a, libc::F_OFD_SETLK, libc::F_UNLCK).unwrap();
    ofd_lock(&b, libc::F_OFD_SETLK, libc::F_WRLCK).unwrap();
    ofd_lock(&b, libc::F_OFD_SETLK, libc::F_UNLCK).unwrap();

    // (Classic fcntl locks between two processes: see the next test.)
    // flock: two open files conflict, in this process and from another process.
    flock(&a, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(
        eno(flock(&b, libc::LOCK_EX | libc::LOCK_NB)),
        libc::EWOULDBLOCK
    );
    let st = Command::new("flock")
        .args(["-n", "-E", "75"])
        .arg(fx.o("lockme"))
        .arg("true")
        .status();
    match st {
        Ok(st) => assert_eq!(st.code(), Some(75), "flock(1) got the lock we hold"),
        Err(e) => eprintln!("note: flock(1) not run: {e}"),
    }
    flock(&a, libc::LOCK_UN).unwrap();
    flock(&b, libc::LOCK_EX | libc::LOCK_NB).unwrap();
}

#[test]
fn posix_fcntl_locks_conflict_between_processes() {
    let Some(fx) = setup("posix_fcntl_locks_conflict_between_processes", "", false) else {
        return;
    };
    fs::write(fx.o("lockme"), b"x").unwrap();
    let a = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.o("lockme"))
        .unwrap();
    let mut fl = sys::whole_file_lock(libc::F_WRLCK);
    sys::fcntl_lock(a.as_fd(), libc::F_SETLK, &mut fl).unwrap();
    // POSIX record locks belong to a process, so the conflict needs a second one: this test
    // binary again, running only `posix_lock_second_process` (no fork of this multi-threaded
    // process), which asks F_GETLK and F_SETLK through `vfnotify::sys`.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "posix_lock_second_process"])
        .args(["--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, fx.o("lockme"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "second process: {log}");
    assert!(
        log.contains("1 passed"),
        "the second process ran no test: {log}"
    );
    drop(a);
}

/// Set for [`posix_lock_second_process`]: the file the first process holds a write lock on.
const LOCK_CHILD_ENV: &str = "VFNOTIFY_TEST_LOCK_CHILD";

/// The second process of `posix_fcntl_locks_conflict_between_processes`, which runs it with
/// `--ignored --exact`; without that test's variable it has nothing to check.
#[test]
#[ignore = "run by posix_fcntl_locks_conflict_between_processes as its second process"]
fn posix_lock_second_process() {
    let Some(path) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open in the second process");
    let mut q = sys::whole_file_lock(libc::F_WRLCK);
    sys::fcntl_lock(f.as_fd(), libc::F_GETLK, &mut q).expect("F_GETLK failed");
    assert_eq!(
        q.l_type as i32,
        libc::F_WRLCK,
        "the first process's lock is not reported"
    );
    let mut r = sys::whole_file_lock(libc::F_RDLCK);
    let e =
        sys::fcntl_lock(f.as_fd(), libc::F_SETLK, &mut r).expect_err("F_SETLK did not conflict");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)),
        "F_SETLK: {e}"
    );
}
