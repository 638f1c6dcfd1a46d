//! Helpers of the overlay operation tests (`overlay_ops`, `overlay_limits`,
//! `overlay_lifecycle`): a mounted fixture, errno helpers, and the small libc calls std does not
//! wrap (each call site says why it is sound).

use std::ffi::CString;
use std::fs::File;
use std::io::{self};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::{MountGuard, fuse_ready, tempdir};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A mounted overlay of a fresh SOURCE. Field order is drop order: unmount before removing dirs.
pub struct Fx {
    pub m: MountGuard,
    pub mnt: tempfile::TempDir,
    pub src: tempfile::TempDir,
}

impl Fx {
    /// A path on SOURCE.
    pub fn s(&self, rel: &str) -> PathBuf {
        self.src.path().join(rel)
    }
    /// The same path through the overlay.
    pub fn o(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }
}

/// Fresh SOURCE (with the fixture tree when `fixtures`), mounted with `opts`; None = skipped.
pub fn setup(test: &str, opts: &str, fixtures: bool) -> Option<Fx> {
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

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// The errno of a failed result (0 when it succeeded).
pub fn eno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// -1 → the current errno, as io::Result.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cvt64(r: i64) -> io::Result<i64> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Run `f` on a thread; None if it has not finished within `d` (the thread is left behind).
pub fn with_deadline<T: Send + 'static>(
    d: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(d).ok()
}

pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
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

pub fn utimens(p: &Path, times: [libc::timespec; 2], flags: i32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: c is a valid C string and times an array of two timespecs, as utimensat(2) wants.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub fn renameat2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
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

pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
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

pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; buf is writable for its length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = cvt64(n as i64)?;
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
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

pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    cvt(unsafe { libc::lremovexattr(cp.as_ptr(), cn.as_ptr()) }).map(drop)
}

pub fn statvfs(p: &Path) -> libc::statvfs {
    let c = cpath(p);
    // SAFETY: an all-zero statvfs is a valid value; the call fills it on success.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, v a writable statvfs.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut v) }).expect("statvfs");
    v
}

pub fn lseek(f: &File, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on an open fd.
    cvt64(unsafe { libc::lseek(f.as_raw_fd(), off, whence) })
}

pub fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) }).map(drop)
}

/// An OFD lock request (F_OFD_SETLK / F_OFD_GETLK) on the whole file.
pub fn ofd_lock(f: &File, cmd: i32, ltype: i32) -> io::Result<libc::flock> {
    // SAFETY: an all-zero flock is valid; l_pid must be 0 for OFD locks.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ltype as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl with a pointer to a valid flock, as F_OFD_* commands take.
    cvt(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) })?;
    Ok(fl)
}

pub fn flock(f: &File, op: i32) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd.
    cvt(unsafe { libc::flock(f.as_raw_fd(), op) }).map(drop)
}

pub fn access(p: &Path, mode: i32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::access(c.as_ptr(), mode) }).map(drop)
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}
