//! Helpers of the overlay operation tests (`overlay_ops`, `overlay_data`, `overlay_limits`,
//! `overlay_lifecycle`): a mounted fixture, errno helpers, and path-taking forms of the
//! `vfnotify::sys` calls std does not wrap.

use std::ffi::CString;
use std::fs::File;
use std::io::{self};
use std::os::fd::AsFd;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use vfnotify::sys;

use super::{MountGuard, fuse_ready, tempdir};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A mounted overlay of a fresh SOURCE. Field order is drop order: unmount before removing dirs.
pub struct Fx {
    pub m: MountGuard,
    /// With `VFNOTIFY_TEST_MOUNT_OPTS` set: a daemon the overlay is linked to (so that options
    /// which act only while linked, as zero-message opens, are in force).
    pub daemon: Option<(super::ChildGuard, tempfile::TempDir)>,
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
    // (Linked only under `cache=always`: a linked overlay's background listings move folders'
    // atimes on SOURCE, which the `cache=never` cases check.)
    if std::env::var_os("VFNOTIFY_TEST_MOUNT_OPTS").is_none()
        || opts.contains("channel=")
        || !opts.contains("cache=always")
        || opts.split(',').any(|o| o == "ro")
    {
        let m = MountGuard::mount(src.path(), mnt.path(), &opts);
        return Some(Fx {
            m,
            daemon: None,
            mnt,
            src,
        });
    }
    let (daemon, dir, control) = start_daemon();
    // Opened once linked and removed through the overlay: the first OPEN is the one options
    // such as `revalidate=notify` decide on (zero-message opens), before the test's own.
    let probe = ".vfnotify-test-probe";
    std::fs::write(src.path().join(probe), b"probe").unwrap();
    let opts = format!("channel=ops,control={},{opts}", control.display());
    let m = MountGuard::mount(src.path(), mnt.path(), &opts);
    let mnt_s = mnt.path().display().to_string();
    let linked = || {
        let out = super::vfnotify()
            .args(["status", "--json", "--control"])
            .arg(&control)
            .output()
            .expect("vfnotify status");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["overlays"]
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o["mountpoint"].as_str() == Some(&mnt_s)))
    };
    let start = std::time::Instant::now();
    while !linked() {
        assert!(
            start.elapsed() < DEADLINE,
            "overlay not linked to its daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read(mnt.path().join(probe)).unwrap();
    std::fs::remove_file(mnt.path().join(probe)).unwrap();
    Some(Fx {
        m,
        daemon: Some((daemon, dir)),
        mnt,
        src,
    })
}

/// A `vfnotify daemon` on unix sockets in a fresh folder, once its control socket is there.
fn start_daemon() -> (super::ChildGuard, tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let control = dir.path().join("ctl.sock");
    let mut cmd = super::vfnotify();
    cmd.arg("daemon")
        .arg("--listen")
        .arg(format!("unix:{}", dir.path().join("peer.sock").display()))
        .arg("--control")
        .arg(&control)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = super::ChildGuard::spawn(&mut cmd);
    let start = std::time::Instant::now();
    while !control.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "daemon control socket did not appear"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, dir, control)
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

/// `utimensat` by path. `vfnotify::sys::utimensat` never follows a final symlink: the callers
/// passing flags 0 (follow) name regular files and directories, where both are the same call.
pub fn utimens(p: &Path, times: [libc::timespec; 2], flags: i32) -> io::Result<()> {
    assert!(
        flags == 0 || flags == libc::AT_SYMLINK_NOFOLLOW,
        "flags {flags:#x}"
    );
    let t = |ts: libc::timespec| match ts.tv_nsec {
        libc::UTIME_NOW => sys::SetTime::Now,
        libc::UTIME_OMIT => sys::SetTime::Omit,
        ns => sys::SetTime::At(ts.tv_sec, ns),
    };
    sys::utimensat(sys::cwd(), &cpath(p), t(times[0]), t(times[1]))
}

pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub fn renameat2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
    sys::renameat2(sys::cwd(), &cpath(a), sys::cwd(), &cpath(b), flags)
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    lsetxattr_flags(p, name, value, 0)
}

/// `lsetxattr` with XATTR_CREATE / XATTR_REPLACE.
pub fn lsetxattr_flags(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let cn = CString::new(name).unwrap();
    sys::setxattr(sys::cwd(), &cpath(p), &cn, value, flags)
}

/// `lgetxattr` with a buffer of `size` bytes: (the size the call returned, the bytes).
pub fn lgetxattr_sized(p: &Path, name: &str, size: usize) -> io::Result<(usize, Vec<u8>)> {
    let cn = CString::new(name).unwrap();
    sys::getxattr(sys::cwd(), &cpath(p), &cn, size)
}

pub fn lgetxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    lgetxattr_sized(p, name, 4096).map(|(_, v)| v)
}

pub fn llistxattr(p: &Path) -> io::Result<Vec<String>> {
    let (_, buf) = sys::listxattr(sys::cwd(), &cpath(p), 4096)?;
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let cn = CString::new(name).unwrap();
    sys::removexattr(sys::cwd(), &cpath(p), &cn)
}

pub fn statvfs(p: &Path) -> libc::statvfs {
    sys::statvfs(&cpath(p)).expect("statvfs")
}

pub fn lseek(f: &File, off: i64, whence: i32) -> io::Result<i64> {
    sys::lseek(f.as_fd(), off, whence)
}

pub fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> io::Result<()> {
    let (off, len) = (off as u64, len as u64);
    sys::fallocate(f.as_fd(), mode, off, len)
}

/// An OFD lock request (F_OFD_SETLK / F_OFD_GETLK) on the whole file.
pub fn ofd_lock(f: &File, cmd: i32, ltype: i32) -> io::Result<libc::flock> {
    let mut fl = sys::whole_file_lock(ltype);
    sys::fcntl_lock(f.as_fd(), cmd, &mut fl)?;
    Ok(fl)
}

pub fn flock(f: &File, op: i32) -> io::Result<()> {
    sys::flock(f.as_fd(), op)
}

pub fn access(p: &Path, mode: i32) -> io::Result<()> {
    sys::faccessat(sys::cwd(), &cpath(p), mode, 0)
}

pub fn kill(pid: u32, sig: i32) {
    // A process that already exited is no failure of the test.
    let _ = sys::kill(pid, sig);
}
