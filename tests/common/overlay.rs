//! Test support for the overlay: a daemon plus an overlay linked to it on a fresh SOURCE, host
//! changes made directly on SOURCE, `vfnotify notify`, and an inotify watcher.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{MountGuard, fuse_ready, tempdir, vfnotify};
use crate::daemon_support::{DEADLINE, Daemon, poll_until};
use ::vfnotify::sys;

/// A daemon on unix sockets and an overlay of a fresh SOURCE following `channel`.
pub struct Linked {
    pub mount: Option<MountGuard>,
    pub daemon: Daemon,
    pub src: PathBuf,
    pub mnt: PathBuf,
    pub channel: String,
    pub opts: String,
    dir: tempfile::TempDir,
}

impl Linked {
    /// `None` (after printing why) when FUSE tests cannot run here.
    pub fn new(test: &str, opts: &str) -> Option<Linked> {
        Self::with_source(test, opts, |_| {})
    }

    /// As [`Linked::new`], with SOURCE filled by `fill` before mounting.
    pub fn with_source(test: &str, opts: &str, fill: impl FnOnce(&Path)) -> Option<Linked> {
        Self::build(test, opts, &[], fill)
    }

    /// The general form: extra daemon arguments too.
    pub fn build(
        test: &str,
        opts: &str,
        daemon_args: &[&str],
        fill: impl FnOnce(&Path),
    ) -> Option<Linked> {
        if !fuse_ready(test) {
            return None;
        }
        let daemon = Daemon::start(daemon_args);
        let dir = tempdir();
        let src = dir.path().join("src");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        fill(&src);
        let channel = "docs".to_string();
        let all = format!(
            "channel={channel},control={}{}{}",
            daemon.control.display(),
            if opts.is_empty() { "" } else { "," },
            opts
        );
        let mount = MountGuard::mount(&src, &mnt, &all);
        let l = Linked {
            mount: Some(mount),
            daemon,
            src,
            mnt,
            channel,
            opts: all,
            dir,
        };
        l.wait_linked();
        Some(l)
    }

    /// Wait until the daemon lists this overlay.
    pub fn wait_linked(&self) {
        let mnt = self.mnt.display().to_string();
        poll_until("overlay linked", DEADLINE, || {
            self.daemon.status()["overlays"]
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o["mountpoint"].as_str() == Some(&mnt)))
        });
        // Subscribed is not yet linked: a handled notification is (long caching from now on).
        assert!(
            crate::common::notify_ok(&self.daemon.control, &self.channel, &[]),
            "the first notification was not handled"
        );
    }

    /// Path on SOURCE (the host side).
    pub fn s(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }
    /// Path through the overlay (the guest side).
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `vfnotify notify` for this channel; returns once handled.
    pub fn notify(&self, paths: &[&str]) {
        self.notify_channel(&self.channel.clone(), paths);
    }

    pub fn notify_channel(&self, channel: &str, paths: &[&str]) {
        let out = vfnotify()
            .arg("notify")
            .arg("--control")
            .arg(&self.daemon.control)
            .arg(channel)
            .args(paths)
            .output()
            .expect("run notify");
        assert!(
            out.status.success(),
            "notify failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One of the overlay's counters as the daemon last heard them (0 when absent).
    pub fn stat_u64(&self, key: &str) -> u64 {
        self.overlay_stats()[key].as_u64().unwrap_or(0)
    }

    /// Wait until the overlay's reported counter `key` satisfies `ok` (the daemon hears the
    /// counters periodically), returning its value.
    pub fn wait_stat(&self, key: &str, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
        poll_until(what, DEADLINE, || ok(self.stat_u64(key)));
        self.stat_u64(key)
    }

    /// The overlay's counters as the daemon last heard them.
    pub fn overlay_stats(&self) -> serde_json::Value {
        let mnt = self.mnt.display().to_string();
        let st = self.daemon.status();
        st["overlays"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|o| o["mountpoint"].as_str() == Some(&mnt))
                    .cloned()
            })
            .map(|o| o["stats"].clone())
            .unwrap_or_default()
    }
}

/// One inotify event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub mask: u32,
    pub cookie: u32,
    pub dir: PathBuf,
    pub name: String,
}

impl Event {
    pub fn is(&self, mask: u32, name: &str) -> bool {
        self.mask & mask == mask && self.name == name
    }
}

/// The events a file manager cares about (not its own opens and reads).
pub const INTERESTING: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF;

/// A minimal inotify watcher (`vfnotify::sys::Inotify`), recursive on request.
pub struct Watcher {
    ino: sys::Inotify,
    wds: HashMap<i32, PathBuf>,
    mask: u32,
}

impl Watcher {
    pub fn new() -> Watcher {
        Self::with_mask(INTERESTING)
    }

    pub fn with_mask(mask: u32) -> Watcher {
        Watcher {
            ino: sys::Inotify::new().expect("inotify_init1"),
            wds: HashMap::new(),
            mask,
        }
    }

    pub fn add(&mut self, dir: &Path) {
        let wd = self
            .ino
            .add_watch(dir, self.mask)
            .unwrap_or_else(|e| panic!("inotify_add_watch {}: {e}", dir.display()));
        self.wds.insert(wd, dir.to_path_buf());
    }

    pub fn add_recursive(&mut self, dir: &Path) {
        self.add(dir);
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                self.add_recursive(&e.path());
            }
        }
    }

    /// Events available within `wait`, then until none arrives for 50 ms.
    pub fn events(&mut self, wait: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        let start = Instant::now();
        let mut last = Instant::now();
        loop {
            // Waits up to 2 ms for the next events (the old poll interval).
            let got = self.ino.read(2).expect("inotify read");
            if !got.is_empty() {
                last = Instant::now();
                for e in got {
                    out.push(Event {
                        mask: e.mask,
                        cookie: e.cookie,
                        dir: self.wds.get(&e.wd).cloned().unwrap_or_default(),
                        name: e.name.to_string_lossy().into_owned(),
                    });
                }
                continue;
            }
            let quiet = if out.is_empty() {
                wait
            } else {
                Duration::from_millis(50)
            };
            if last.elapsed() > quiet || start.elapsed() > wait + Duration::from_secs(2) {
                return out;
            }
        }
    }
}

/// The events as `(mask, name)` pairs with IN_ISDIR kept, for readable assertions.
pub fn summary(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (mask_name(e.mask), e.name.clone()))
        .collect()
}

pub fn mask_name(mask: u32) -> String {
    let names = [
        (libc::IN_CREATE, "CREATE"),
        (libc::IN_DELETE, "DELETE"),
        (libc::IN_MODIFY, "MODIFY"),
        (libc::IN_CLOSE_WRITE, "CLOSE_WRITE"),
        (libc::IN_MOVED_FROM, "MOVED_FROM"),
        (libc::IN_MOVED_TO, "MOVED_TO"),
        (libc::IN_ATTRIB, "ATTRIB"),
        (libc::IN_DELETE_SELF, "DELETE_SELF"),
        (libc::IN_OPEN, "OPEN"),
        (libc::IN_ISDIR, "ISDIR"),
        (libc::IN_IGNORED, "IGNORED"),
        (libc::IN_Q_OVERFLOW, "OVERFLOW"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(m, _)| mask & m != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join("|")
}

/// A digest of a tree: every path with its type, mode, owner, size, mtime and content.
pub fn tree_digest(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                format!("{:?}", std::fs::read(&p).unwrap())
            } else {
                String::new()
            };
            let target = if m.file_type().is_symlink() {
                format!("{:?}", std::fs::read_link(&p).unwrap())
            } else {
                String::new()
            };
            out.push(
                format!(
                    "{} {:o} {}:{} {} {}.{} {} {}",
                    p.strip_prefix(root).unwrap().display(),
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    target,
                    content.len()
                ) + &content,
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}
