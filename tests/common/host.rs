//! Test support for `vfnotify host`: a private tmpfs (a fanotify filesystem mark there sees only
//! this test's changes), the host started from the binary with its control socket in a temporary
//! folder, fake guests that record what arrives, and waiting until the host has sent everything.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vfnotify::control::Client;

use crate::common::{ChildGuard, tempdir, vfnotify};
use crate::daemon_support::{DEADLINE, poll_until};

/// A tmpfs mounted at a fresh folder; unmounted (lazily) on drop.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// A new tmpfs in a temporary folder.
    pub fn new() -> Tmpfs {
        let dir = tempdir();
        let path = dir.path().join("fs");
        let mut t = Tmpfs::at(&path);
        t._dir = Some(dir);
        t
    }

    /// A tmpfs mounted at `path` (created).
    pub fn at(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512m,mode=0755", "tmpfs"])
            .arg(path)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
            _dir: None,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// A `vfnotify host` process with its control socket and log in a temporary folder.
pub struct Host {
    pub child: ChildGuard,
    pub dir: tempfile::TempDir,
    pub control: PathBuf,
    pub log: PathBuf,
}

impl Host {
    /// Start `vfnotify host --control DIR/host.sock ARGS` and wait until its control socket
    /// answers (it binds it once watching).
    pub fn start(args: &[&str]) -> Host {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Host {
        let dir = tempdir();
        let control = dir.path().join("host.sock");
        let log = dir.path().join("host.log");
        let mut cmd = vfnotify();
        cmd.arg("host")
            .arg("--control")
            .arg(&control)
            .args(args)
            .env("RUST_LOG", "vfnotify=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard::spawn(&mut cmd);
        let start = Instant::now();
        loop {
            if Client::connect(&control).is_ok() {
                break;
            }
            if let Ok(Some(st)) = child.child().try_wait() {
                panic!(
                    "vfnotify host exited early ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "host control socket did not accept"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Host {
            child,
            dir,
            control,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn status(&self) -> Value {
        let mut c = Client::connect(&self.control).expect("host control");
        c.set_timeout(Some(DEADLINE)).unwrap();
        c.request("status", json!({})).expect("host status")
    }

    /// A global counter.
    pub fn counter(&self, name: &str) -> u64 {
        self.status()["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no host counter {name}"))
    }

    /// The status of the guest at `addr` (as given with `--to`).
    pub fn guest(&self, addr: &str) -> Value {
        guest_of(&self.status(), addr)
    }

    /// Wait until every guest listed is connected.
    pub fn wait_connected(&self, addrs: &[String]) {
        poll_until("guests connected", DEADLINE, || {
            let st = self.status();
            addrs
                .iter()
                .all(|a| guest_of(&st, a)["state"].as_str() == Some("connected"))
        });
    }

    /// Wait until the host has sent everything it saw: every connected guest's queue is empty
    /// and nothing new was seen for `quiet`.
    pub fn settle(&self, quiet: Duration) {
        self.settle_without(quiet, &[]);
    }

    /// [`Host::settle`], leaving out the guests at `skip` (stopped ones, whose queue stays).
    pub fn settle_without(&self, quiet: Duration, skip: &[&str]) {
        let key = |st: &Value| {
            let g: Vec<(u64, u64)> = st["guests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| !skip.iter().any(|s| g["addr"].as_str() == Some(s)))
                .map(|g| {
                    (
                        g["lines_sent"].as_u64().unwrap_or(0),
                        g["queue_depth"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            (st["counters"]["events"].as_u64().unwrap_or(0), g)
        };
        let start = Instant::now();
        let mut last = key(&self.status());
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let now = key(&self.status());
            let empty = now.1.iter().all(|(_, d)| *d == 0);
            if now != last || !empty {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "host never settled"
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Stop the process (SIGSTOP) / let it go on (SIGCONT).
    pub fn pause(&self) {
        self.signal("STOP");
    }
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child
            .wait_timeout(DEADLINE)
            .expect("host did not exit after SIGTERM")
    }

    /// CPU seconds (user + system) the process used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

/// A guest's entry in a host status.
pub fn guest_of(st: &Value, addr: &str) -> Value {
    st["guests"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["addr"].as_str() == Some(addr)))
        .cloned()
        .unwrap_or_else(|| panic!("no guest {addr} in {st}"))
}

/// CPU seconds (utime + stime) of process `pid`, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ')'.
    let hz = 100.0;
    (ticks(11) + ticks(12)) / hz
}

/// What a fake guest received on one connection.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// Each read: when, and the bytes.
    pub reads: Vec<(Instant, Vec<u8>)>,
    pub closed: bool,
}

impl Conn {
    pub fn bytes(&self) -> Vec<u8> {
        self.reads.iter().flat_map(|(_, b)| b.clone()).collect()
    }
}

/// A guest stand-in: a Unix listener that records every connection's bytes, or (when told) stops
/// reading them.
pub struct FakeGuest {
    pub path: PathBuf,
    pub addr: String,
    pub conns: Arc<Mutex<Vec<Conn>>>,
    pub reading: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeGuest {
    pub fn new() -> FakeGuest {
        let dir = tempdir();
        let path = dir.path().join("guest.sock");
        let mut g = FakeGuest::at(&path);
        g._dir = Some(dir);
        g
    }

    pub fn at(path: &Path) -> FakeGuest {
        use std::sync::atomic::{AtomicBool, Ordering};
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind fake guest");
        listener.set_nonblocking(true).unwrap();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let reading = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, r2, s2) = (Arc::clone(&conns), Arc::clone(&reading), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut open: Vec<(usize, std::os::unix::net::UnixStream)> = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    let mut g = c2.lock().unwrap();
                    g.push(Conn::default());
                    open.push((g.len() - 1, s));
                }
                let mut idle = true;
                if r2.load(Ordering::Relaxed) {
                    open.retain_mut(|(i, s)| match s.read(&mut buf) {
                        Ok(0) => {
                            c2.lock().unwrap()[*i].closed = true;
                            false
                        }
                        Ok(n) => {
                            idle = false;
                            c2.lock().unwrap()[*i]
                                .reads
                                .push((Instant::now(), buf[..n].to_vec()));
                            true
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                        Err(_) => {
                            c2.lock().unwrap()[*i].closed = true;
                            false
                        }
                    });
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        FakeGuest {
            addr: format!("unix:{}", path.display()),
            path: path.to_path_buf(),
            conns,
            reading,
            stop,
            thread: Some(thread),
            _dir: None,
        }
    }

    /// Every byte received, over all connections.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.bytes())
            .collect()
    }

    /// The lines received (all connections), as text, keepalives left out.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.all_bytes())
            .lines()
            .filter(|l| !l.starts_with("vfnotify."))
            .map(str::to_string)
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Wait until a line satisfying `f` arrived.
    pub fn wait_line(&self, what: &str, f: impl Fn(&str) -> bool) {
        poll_until(what, DEADLINE, || self.lines().iter().any(|l| f(l)));
    }
}

impl Drop for FakeGuest {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether tests that mount a tmpfs (and use fanotify) can run: they need root. When they cannot,
/// prints why and returns false, unless `VFNOTIFY_REQUIRE_FUSE=1`, where that fails the test.
pub fn root_ready(test: &str) -> bool {
    if crate::common::euid() == 0 {
        return true;
    }
    if std::env::var("VFNOTIFY_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{test}: root required (VFNOTIFY_REQUIRE_FUSE=1)");
    }
    eprintln!("SKIP {test}: needs root (tmpfs mounts, fanotify)");
    false
}

/// The lines of `bytes` as the guest daemon decodes them; panics on a line it would drop.
pub fn decode(bytes: &[u8]) -> Vec<vfnotify::protocol::Notification> {
    let mut d = vfnotify::protocol::LineDecoder::new();
    d.push(bytes)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a malformed line arrived: {e}")))
        .collect()
}

/// An overlay of `src` at a fresh mountpoint, linked to its own daemon (a guest of the share:
/// `peer` is its daemon's address for `vfnotify host --to`), fresh from a first whole
/// notification; unmounted on drop.
pub struct OverlayOn {
    pub mount: Option<crate::common::MountGuard>,
    pub daemon: crate::daemon_support::Daemon,
    pub mnt: PathBuf,
    pub peer: String,
    _dir: tempfile::TempDir,
}

impl OverlayOn {
    pub fn new(src: &Path) -> OverlayOn {
        let daemon = crate::daemon_support::Daemon::start(&[]);
        let dir = tempdir();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let opts = format!("channel=docs,control={}", daemon.control.display());
        let mount = crate::common::MountGuard::mount(src, &mnt, &opts);
        let m = mnt.display().to_string();
        poll_until("overlay linked", DEADLINE, || {
            daemon.status()["overlays"]
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o["mountpoint"].as_str() == Some(&m)))
        });
        assert!(crate::common::notify_ok(&daemon.control, "docs", &[]));
        OverlayOn {
            mount: Some(mount),
            peer: format!("unix:{}", daemon.peer.display()),
            daemon,
            mnt,
            _dir: dir,
        }
    }
}

impl Drop for OverlayOn {
    fn drop(&mut self) {
        drop(self.mount.take());
    }
}
