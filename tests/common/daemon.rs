//! Test support for the daemon: start `vfnotify` on `unix:` sockets in a temporary folder, wait
//! for its control socket with a deadline, read its counters.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vfnotify::control::Client;

use crate::common::{ChildGuard, tempdir, vfnotify};

/// Readiness and polling deadline.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Poll `f` every few milliseconds until it returns true; panic with `what` after `deadline`.
pub fn poll_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A daemon started from the binary, with its sockets in a temporary folder.
pub struct Daemon {
    pub child: ChildGuard,
    pub dir: tempfile::TempDir,
    pub control: PathBuf,
    pub peer: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start with `--listen unix:DIR/peer.sock --control DIR/ctl/control.sock` plus `args`; wait
    /// until the control socket accepts.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::launch(None, args, env)
    }

    /// Start with the control socket at `control`.
    pub fn start_at(control: &Path, args: &[&str]) -> Daemon {
        Self::launch(Some(control.to_path_buf()), args, &[])
    }

    fn launch(control: Option<PathBuf>, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempdir();
        let control = control.unwrap_or_else(|| dir.path().join("ctl/control.sock"));
        let peer = dir.path().join("peer.sock");
        let log = dir.path().join("daemon.log");
        let mut cmd = vfnotify();
        cmd.arg("--listen")
            .arg(format!("unix:{}", peer.display()))
            .arg("--control")
            .arg(&control)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard::spawn(&mut cmd);
        let start = Instant::now();
        loop {
            if UnixStream::connect(&control).is_ok() {
                break;
            }
            if let Ok(Some(st)) = child.child().try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("daemon exited early ({st}): {log}");
            }
            if start.elapsed() > DEADLINE {
                panic!("daemon control socket {} did not accept", control.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Daemon {
            child,
            dir,
            control,
            peer,
            log,
        }
    }

    /// A folder inside the temporary folder (created).
    pub fn folder(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// A control client.
    pub fn client(&self) -> Client {
        let c = Client::connect(&self.control).expect("control connect");
        c.set_timeout(Some(DEADLINE)).expect("timeout");
        c
    }

    pub fn status(&self) -> Value {
        self.client().request("status", json!({})).expect("status")
    }

    /// A counter by name, looked up in `counters` and `counters.dropped`.
    pub fn counter(&self, name: &str) -> u64 {
        counter(&self.status(), name)
    }

    /// Wait until counter `name` is at least `at_least`.
    pub fn wait_counter(&self, name: &str, at_least: u64) {
        poll_until(&format!("counter {name} >= {at_least}"), DEADLINE, || {
            self.counter(name) >= at_least
        });
    }

    /// Connect to the peer listener.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.peer).expect("peer connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        s
    }

    /// Send bytes on a new connection and close it.
    pub fn send(&self, bytes: &[u8]) {
        let mut s = self.connect();
        s.write_all(bytes).expect("write");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        self.child
            .wait_timeout(DEADLINE)
            .expect("daemon did not exit after SIGTERM")
    }
}

/// A counter by name in a status result.
pub fn counter(status: &Value, name: &str) -> u64 {
    let c = &status["counters"];
    c.get(name)
        .or_else(|| c["dropped"].get(name))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {name} in {c}"))
}

/// Whether `dir/.virtiofs-refresh` exists (without following symlinks).
pub fn trigger_present(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(".virtiofs-refresh")).is_ok()
}
