//! The demo's watcher: recursive inotify on the overlay, as a file manager watches.

use super::*;

/// A recursive watcher, as a file manager keeps one.
pub(super) struct Watcher {
    ino: Inotify,
    dirs: HashMap<i32, PathBuf>,
}

impl Watcher {
    pub(super) fn new(root: &Path) -> Result<Watcher, DemoError> {
        let ino = Inotify::new().map_err(|e| DemoError::Watch {
            path: root.into(),
            source: e,
        })?;
        let mut w = Watcher {
            ino,
            dirs: HashMap::new(),
        };
        w.watch_tree(root)?;
        Ok(w)
    }

    /// Watch a folder and everything below it; returns what the listing found (a recursive
    /// watcher lists a new folder after watching it, since its content may predate the watch).
    pub(super) fn watch_tree(&mut self, dir: &Path) -> Result<Vec<PathBuf>, DemoError> {
        let err = |e| DemoError::Watch {
            path: dir.into(),
            source: e,
        };
        let wd = self.ino.add_watch(dir, WATCH_MASK).map_err(err)?;
        self.dirs.insert(wd, dir.to_path_buf());
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).map_err(err)?.flatten() {
            found.push(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                found.extend(self.watch_tree(&e.path())?);
            }
        }
        Ok(found)
    }

    /// Events until `want` are all seen or the deadline passes, then whatever follows within
    /// 30 ms. New folders are watched as they appear. Returns `(event, when)` pairs.
    pub(super) fn collect(
        &mut self,
        root: &Path,
        want: &[String],
        deadline: Duration,
    ) -> Vec<(String, Instant)> {
        let start = Instant::now();
        let mut out: Vec<(String, Instant)> = Vec::new();
        let mut quiet_since: Option<Instant> = None;
        loop {
            let evs = self.ino.read(5).unwrap_or_default();
            let now = Instant::now();
            for e in evs {
                let dir = self.dirs.get(&e.wd).cloned().unwrap_or_default();
                let path = dir.join(&e.name);
                let rel = |p: &Path| {
                    p.strip_prefix(root)
                        .unwrap_or(p)
                        .to_string_lossy()
                        .into_owned()
                };
                out.push((format!("{} {}", mask_name(e.mask), rel(&path)), now));
                if e.mask & (libc::IN_CREATE | libc::IN_ISDIR) == libc::IN_CREATE | libc::IN_ISDIR {
                    for p in self.watch_tree(&path).unwrap_or_default() {
                        out.push((format!("listed {}", rel(&p)), now));
                    }
                }
            }
            let all = want.iter().all(|w| out.iter().any(|(e, _)| seen_as(e, w)));
            if all {
                let q = *quiet_since.get_or_insert(now);
                if now.duration_since(q) > Duration::from_millis(30) {
                    return out;
                }
            }
            if start.elapsed() > deadline {
                return out;
            }
        }
    }

    pub(super) fn drain(&mut self, root: &Path) {
        let _ = self.collect(root, &[], Duration::from_millis(50));
    }
}

/// Whether event `e` shows what `want` expects: the event itself, or for a creation inside a new
/// folder, the folder's listing taken when the watcher started watching it.
pub(super) fn seen_as(e: &str, want: &str) -> bool {
    e == want
        || want
            .strip_prefix("IN_CREATE ")
            .is_some_and(|p| e.strip_prefix("listed ") == Some(p))
}

pub(super) fn mask_name(mask: u32) -> String {
    let names = [
        (libc::IN_CREATE, "IN_CREATE"),
        (libc::IN_DELETE, "IN_DELETE"),
        (libc::IN_MODIFY, "IN_MODIFY"),
        (libc::IN_CLOSE_WRITE, "IN_CLOSE_WRITE"),
        (libc::IN_MOVED_FROM, "IN_MOVED_FROM"),
        (libc::IN_MOVED_TO, "IN_MOVED_TO"),
        (libc::IN_ATTRIB, "IN_ATTRIB"),
    ];
    let mut v: Vec<&str> = names
        .iter()
        .filter(|(m, _)| mask & m != 0)
        .map(|(_, n)| *n)
        .collect();
    if mask & libc::IN_ISDIR != 0 {
        v.push("IN_ISDIR");
    }
    v.join("|")
}
