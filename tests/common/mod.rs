//! Shared test support: the binary under test, FUSE availability (skip or fail), mount polling
//! through /proc/self/mountinfo with a deadline, and RAII guards that unmount and kill.
#![allow(dead_code)]

pub mod ops;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the `vfnotify` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vfnotify"))
}

/// A `Command` for the binary under test.
pub fn vfnotify() -> Command {
    Command::new(bin())
}

/// Whether FUSE tests can run here. When they cannot, prints the reason and returns false, unless
/// `VFNOTIFY_REQUIRE_FUSE=1`, in which case the test fails.
pub fn fuse_ready(test: &str) -> bool {
    let reason = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing".to_string())
    } else if euid() != 0 {
        Some("FUSE tests need root (mount(2) and allow_other)".to_string())
    } else if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        Some("/dev/fuse cannot be opened".to_string())
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) => {
            if std::env::var("VFNOTIFY_REQUIRE_FUSE").as_deref() == Ok("1") {
                panic!("{test}: FUSE required (VFNOTIFY_REQUIRE_FUSE=1) but unavailable: {r}");
            }
            eprintln!("SKIP {test}: {r}");
            false
        }
    }
}

/// The effective uid (`vfnotify::sys::geteuid`; the name is kept for the callers).
pub fn euid() -> u32 {
    ::vfnotify::sys::geteuid()
}

/// Decode the octal escapes mountinfo uses for spaces and such.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// The filesystem type mounted at `path` (last mount wins), if any.
pub fn mount_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 {
            continue;
        }
        if unescape_mountinfo(fields[4]) == path {
            let sep = fields.iter().position(|f| *f == "-")?;
            found = Some(fields[sep + 1].to_string());
        }
    }
    found
}

/// Poll mountinfo until `path` carries a mount of type `fstype` (or is unmounted when `fstype` is
/// None), failing after `deadline`.
pub fn wait_mount_state(path: &Path, fstype: Option<&str>, deadline: Duration) {
    let start = Instant::now();
    loop {
        let now = mount_type(path);
        if now.as_deref() == fstype {
            return;
        }
        if start.elapsed() > deadline {
            panic!(
                "mount at {} is {:?}, expected {:?} within {:?}",
                path.display(),
                now,
                fstype,
                deadline
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills and reaps a child on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> Self {
        ChildGuard(Some(cmd.spawn().expect("spawn")))
    }
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }
    /// Wait for exit with a deadline; returns the exit status.
    pub fn wait_timeout(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.0.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.0 = None;
                return Some(st);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Unmounts (lazily if busy) on drop; kills the server it owns.
/// Whether a mount with `opts` checks SOURCE at every open (`revalidate=open`, the default) once
/// `VFNOTIFY_TEST_MOUNT_OPTS` is put before them as [`MountGuard::mount`] does.
pub fn revalidates_on_open(opts: &str) -> bool {
    let extra = std::env::var("VFNOTIFY_TEST_MOUNT_OPTS").unwrap_or_default();
    let all = format!("{extra},{opts}");
    all.rsplit(',')
        .find_map(|o| o.strip_prefix("revalidate="))
        .is_none_or(|v| v == "open")
}

pub struct MountGuard {
    pub mountpoint: PathBuf,
    pub server: ChildGuard,
}

impl MountGuard {
    /// Start `vfnotify mount SOURCE MOUNTPOINT -f -o OPTS` and wait until the mount is live.
    pub fn mount(source: &Path, mountpoint: &Path, opts: &str) -> Self {
        Self::mount_with(source, mountpoint, opts, &[])
    }

    pub fn mount_with(source: &Path, mountpoint: &Path, opts: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = vfnotify();
        cmd.arg("mount").arg(source).arg(mountpoint).arg("-f");
        // Options for every mount of a run, before the test's own (which win): how `.ci/run`
        // runs the POSIX and data suites again under zero-message opens.
        let extra = std::env::var("VFNOTIFY_TEST_MOUNT_OPTS").unwrap_or_default();
        let opts = match (extra.is_empty(), opts.is_empty()) {
            (true, _) => opts.to_string(),
            (false, true) => extra,
            (false, false) => format!("{extra},{opts}"),
        };
        if !opts.is_empty() {
            cmd.arg("-o").arg(&opts);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        let server = ChildGuard::spawn(&mut cmd);
        let mut guard = MountGuard {
            mountpoint: mountpoint.to_path_buf(),
            server,
        };
        let start = Instant::now();
        loop {
            if mount_type(mountpoint).as_deref() == Some("fuse.vfnotify") {
                break;
            }
            if let Some(Ok(Some(st))) = guard.server.0.as_mut().map(|c| c.try_wait()) {
                panic!("vfnotify mount exited early: {st}");
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!("mount of {} did not appear", mountpoint.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        guard
    }

    /// Unmount until nothing is mounted there any more: a test that mounted a second overlay on
    /// the same mountpoint (a remount while the first was still up) stacks them, and one
    /// `umount` would leave the lower one behind for good once the test's folder is removed.
    pub fn unmount(&mut self) {
        for _ in 0..8 {
            if mount_type(&self.mountpoint).is_none() {
                return;
            }
            let st = Command::new("umount").arg(&self.mountpoint).status();
            if !matches!(st, Ok(s) if s.success()) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.unmount();
        let _ = self.server.wait_timeout(Duration::from_secs(5));
    }
}

/// Set the mtime of `p` (a final symlink not followed), leaving the atime: as tar and
/// `touch -m -d` do.
pub fn set_mtime(p: &Path, secs: i64) {
    let c = ::vfnotify::sys::cstr(p.as_os_str()).expect("path without NUL");
    ::vfnotify::sys::utimensat(
        ::vfnotify::sys::cwd(),
        &c,
        ::vfnotify::sys::SetTime::Omit,
        ::vfnotify::sys::SetTime::At(secs, 0),
    )
    .unwrap_or_else(|e| panic!("setting the mtime of {}: {e}", p.display()));
}

/// A temporary directory (removed on drop).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vfnotify-test")
        .tempdir()
        .expect("tempdir")
}

/// `vfnotify notify --control CONTROL CHANNEL [PATHS]`: whether it exited 0 (handled).
pub fn notify_ok(control: &Path, channel: &str, paths: &[&str]) -> bool {
    vfnotify()
        .args(["notify", "--control"])
        .arg(control)
        .arg(channel)
        .args(paths)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A small ext4 image loop-mounted at a path (ext4 reuses a freed inode number at once, which
/// tmpfs does not); unmounted on drop.
pub struct Ext4Mount(PathBuf);

impl Ext4Mount {
    /// Whether mkfs.ext4 is here; without it the caller skips, unless `VFNOTIFY_REQUIRE_FUSE` is
    /// set, where a skip fails (CI installs e2fsprogs).
    pub fn available() -> bool {
        if Command::new("mkfs.ext4").arg("-V").output().is_ok() {
            return true;
        }
        assert!(
            std::env::var_os("VFNOTIFY_REQUIRE_FUSE").is_none(),
            "mkfs.ext4 is missing (apt-get install e2fsprogs)"
        );
        eprintln!("skipped: mkfs.ext4 is missing");
        false
    }

    /// A 16 MiB image at `image`, mounted at `at`.
    pub fn new(image: &Path, at: &Path) -> Ext4Mount {
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("truncate").args(["-s", "16M"]).arg(image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at));
        Ext4Mount(at.to_path_buf())
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
