//! The overlay's FUSE operations, end to end under /dev/fuse: every operation checked through the
//! mountpoint and against SOURCE, data I/O with and without kernel passthrough, a 100,000-file
//! walk, ownership under `allow_other`, and the mount lifecycle (daemonising, SIGTERM, stale-mount
//! recovery, SOURCE removed, the mount(8) helper, bad arguments).
//!
//! Each test mounts its own overlay of a fresh SOURCE under the temp dir. Tests that check how a
//! SOURCE-side change shows through the overlay use `cache=never` (a long kernel cache would hide
//! it); client-initiated changes are checked under `cache=always` (asked for by `setup` unless a
//! test names a cache policy: without `channel=` the default is `auto`), where they must be
//! visible at once because they go through the overlay.
//!
//! `unsafe` is used only for small libc calls that std does not wrap (utimensat, renameat2, mknod,
//! xattrs, fallocate, SEEK_DATA, copy_file_range, OFD locks, flock, statvfs, access, kill, waitpid,
//! prctl); each call site says why it is sound.

mod common;

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{MountGuard, fuse_ready, mount_type, tempdir, vfnotify, wait_mount_state};

const DEADLINE: Duration = Duration::from_secs(20);

/// A mounted overlay of a fresh SOURCE. Field order is drop order: unmount before removing dirs.
struct Fx {
    m: MountGuard,
    mnt: tempfile::TempDir,
    src: tempfile::TempDir,
}

impl Fx {
    /// A path on SOURCE.
    fn s(&self, rel: &str) -> PathBuf {
        self.src.path().join(rel)
    }
    /// The same path through the overlay.
    fn o(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }
}

/// Fresh SOURCE (with the fixture tree when `fixtures`), mounted with `opts`; None = skipped.
fn setup(test: &str, opts: &str, fixtures: bool) -> Option<Fx> {
    if !fuse_ready(test) {
        return None;
    }
    let src = tempdir();
    let mnt = tempdir();
    if fixtures {
        vfnotify::fixtures::materialize(src.path()).expect("materialize fixtures");
    }
    let opts = if opts.contains("cache=") {
        opts.to_string()
    } else if opts.is_empty() {
        "cache=always".to_string()
    } else {
        format!("cache=always,{opts}")
    };
    let m = MountGuard::mount(src.path(), mnt.path(), &opts);
    Some(Fx { m, mnt, src })
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// The errno of a failed result (0 when it succeeded).
fn eno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// -1 → the current errno, as io::Result.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt64(r: i64) -> io::Result<i64> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Run `f` on a thread; None if it has not finished within `d` (the thread is left behind).
fn with_deadline<T: Send + 'static>(
    d: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(d).ok()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn utimens(p: &Path, times: [libc::timespec; 2], flags: i32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: c is a valid C string and times an array of two timespecs, as utimensat(2) wants.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn renameat2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    // SAFETY: both are valid C strings.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings; value is readable for its length.
    cvt(unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; buf is writable for its length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = cvt64(n as i64)?;
    buf.truncate(n as usize);
    Ok(buf)
}

fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    let cp = cpath(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string; buf is writable for its length.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = cvt64(n as i64)?;
    Ok(buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    cvt(unsafe { libc::lremovexattr(cp.as_ptr(), cn.as_ptr()) }).map(drop)
}

fn statvfs(p: &Path) -> libc::statvfs {
    let c = cpath(p);
    // SAFETY: an all-zero statvfs is a valid value; the call fills it on success.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, v a writable statvfs.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut v) }).expect("statvfs");
    v
}

fn lseek(f: &File, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on an open fd.
    cvt64(unsafe { libc::lseek(f.as_raw_fd(), off, whence) })
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) }).map(drop)
}

/// An OFD lock request (F_OFD_SETLK / F_OFD_GETLK) on the whole file.
fn ofd_lock(f: &File, cmd: i32, ltype: i32) -> io::Result<libc::flock> {
    // SAFETY: an all-zero flock is valid; l_pid must be 0 for OFD locks.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ltype as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl with a pointer to a valid flock, as F_OFD_* commands take.
    cvt(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) })?;
    Ok(fl)
}

fn flock(f: &File, op: i32) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    cvt(unsafe { libc::flock(f.as_raw_fd(), op) }).map(drop)
}

fn access(p: &Path, mode: i32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::access(c.as_ptr(), mode) }).map(drop)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

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
    let c = cpath(&f);
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::truncate(c.as_ptr(), 3) }).unwrap();
    assert_eq!(fs::read(fx.s("hello.txt")).unwrap(), &orig[..3]);
    assert_eq!(fs::read(&f).unwrap(), &orig[..3]);
    assert_eq!(fs::metadata(&f).unwrap().len(), 3);
    // truncate a directory: EISDIR.
    let c = cpath(&fx.o("docs"));
    assert_eq!(
        // SAFETY: c is a valid C string.
        eno(cvt(unsafe { libc::truncate(c.as_ptr(), 0) })),
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
    let c = cpath(&fx.o("fifo"));
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }).unwrap();
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
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) }).unwrap();
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
        // SAFETY: c is a valid C string.
        eno(cvt(unsafe {
            libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o600, 0)
        })),
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
    let (cp, cn) = (cpath(&f), CString::new("user.colour").unwrap());
    // SAFETY: size 0 with a null buffer asks only for the size.
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(n, 4);
    let mut small = [0u8; 2];
    // SAFETY: small is writable for 2 bytes.
    let n = unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), small.as_mut_ptr().cast(), 2) };
    assert_eq!(n, -1);
    assert_eq!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::ERANGE)
    );
    // XATTR_CREATE on an existing name: EEXIST; XATTR_REPLACE on a missing one: ENODATA.
    let v = b"x";
    // SAFETY: valid C strings; v is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            v.as_ptr().cast(),
            1,
            libc::XATTR_CREATE,
        )
    };
    assert_eq!(eno(cvt(r)), libc::EEXIST);
    let missing = CString::new("user.missing").unwrap();
    // SAFETY: as above.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            missing.as_ptr(),
            v.as_ptr().cast(),
            1,
            libc::XATTR_REPLACE,
        )
    };
    assert_eq!(eno(cvt(r)), libc::ENODATA);
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
    let (mut off_in, mut off_out): (i64, i64) = (1000, 0);
    let want = data.len() - 1000;
    let mut done = 0usize;
    while done < want {
        // SAFETY: both fds are open; the offsets are valid pointers to i64.
        let n = unsafe {
            libc::copy_file_range(
                fin.as_raw_fd(),
                &mut off_in,
                fout.as_raw_fd(),
                &mut off_out,
                want - done,
                0,
            )
        };
        let n = cvt64(n as i64).unwrap();
        assert!(n > 0, "copy_file_range returned 0 at {done}");
        done += n as usize;
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
    // SAFETY: an all-zero flock is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_SETLK with a pointer to a valid flock.
    cvt(unsafe { libc::fcntl(a.as_raw_fd(), libc::F_SETLK, &fl) }).unwrap();
    // A forked child (no threads of ours are used in it: only async-signal-safe calls) asks
    // F_GETLK and F_SETLK and reports through its exit code.
    let path = cpath(&fx.o("lockme"));
    // SAFETY: fork in a multi-threaded process; the child only calls open/fcntl/_exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, then _exit.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                libc::_exit(10);
            }
            let mut q: libc::flock = std::mem::zeroed();
            q.l_type = libc::F_WRLCK as libc::c_short;
            q.l_whence = libc::SEEK_SET as libc::c_short;
            if libc::fcntl(fd, libc::F_GETLK, &mut q) != 0 {
                libc::_exit(11);
            }
            if q.l_type as i32 != libc::F_WRLCK {
                libc::_exit(12);
            }
            q.l_type = libc::F_RDLCK as libc::c_short;
            q.l_whence = libc::SEEK_SET as libc::c_short;
            q.l_start = 0;
            q.l_len = 0;
            let r = libc::fcntl(fd, libc::F_SETLK, &q);
            let e = *libc::__errno_location();
            libc::_exit(if r == -1 && (e == libc::EAGAIN || e == libc::EACCES) {
                0
            } else {
                13
            });
        }
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child: 11 GETLK failed, 12 lock not reported, 13 SETLK did not conflict"
    );
}

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
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
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
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Wait for a (reparented) child to exit; its exit code, or None on timeout.
fn reap(pid: u32, deadline: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if r == pid as libc::pid_t {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if r == -1 {
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
