//! The toggle-file trigger (`.virtiofs-refresh`) and its trailing-edge coalescer.
//!
//! Toggling removes the trigger file when present and creates it otherwise, so watchers of the
//! folder see IN_DELETE or IN_CREATE. A symlink or any non-regular file of that name is never
//! followed nor replaced. The coalescer turns a burst of notifications for one key into at most
//! a leading and a trailing action per window; the last notification of a burst is always acted
//! on, after it arrived.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Notify, oneshot};

/// Default trigger file name, as in the original virtiofs-notify.
pub const DEFAULT_TRIGGER_NAME: &str = ".virtiofs-refresh";

/// Errors of one toggle, named for the step that failed.
#[derive(Debug, Error)]
pub enum TriggerError {
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("{path} is a {kind}, not a regular file; leaving it alone")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

/// Why a trigger name is refused.
#[derive(Debug, Error)]
#[error("--trigger-name {name:?}: must be a single file name (not empty, no '/', not . or ..)")]
pub struct TriggerNameError {
    pub name: String,
}

/// Check that `name` is a plain file name.
pub fn validate_trigger_name(name: &str) -> Result<(), TriggerNameError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(TriggerNameError {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// What a toggle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggled {
    Created,
    Removed,
}

fn kind_of_mode(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "symlink",
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFBLK | libc::S_IFCHR => "device",
        _ => "non-regular file",
    }
}

/// Toggle `dir/name`: remove it if it is a regular file, create it (O_CREAT|O_EXCL|O_NOFOLLOW)
/// if absent. Blocking: run it off the async runtime.
pub fn toggle(dir: &Path, name: &str) -> Result<Toggled, TriggerError> {
    use std::os::fd::AsFd;
    let path = dir.join(name);
    // The folder itself is opened without following a final symlink (a folder on the share
    // that the host swapped for a link is refused), and the trigger is handled relative to it.
    let cdir = crate::sys::cstr(dir.as_os_str()).map_err(|source| TriggerError::Inspect {
        path: path.clone(),
        source,
    })?;
    let cname =
        crate::sys::cstr(std::ffi::OsStr::new(name)).map_err(|source| TriggerError::Inspect {
            path: path.clone(),
            source,
        })?;
    // The folder is kept canonical (`ChannelMap`), so a symlink anywhere on the way is a change
    // made since start-up — a parent swapped on the share, say: refuse it rather than toggle
    // wherever it points (ELOOP). Kernels without openat2 check the last component only.
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let dfd = match crate::sys::open_no_symlinks(&cdir, flags) {
        Ok(Some(fd)) => Ok(fd),
        Ok(None) => crate::sys::openat(crate::sys::cwd(), &cdir, flags, 0),
        Err(e) => Err(e),
    }
    .map_err(|source| TriggerError::Inspect {
        path: path.clone(),
        source,
    })?;
    match crate::sys::fstatat(dfd.as_fd(), &cname) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
            crate::sys::unlinkat(dfd.as_fd(), &cname, 0)
                .map(|()| Toggled::Removed)
                .map_err(|source| TriggerError::Remove { path, source })
        }
        Ok(st) => Err(TriggerError::NotRegular {
            path,
            kind: kind_of_mode(st.st_mode),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => crate::sys::openat(
            dfd.as_fd(),
            &cname,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o644,
        )
        .map(|_| Toggled::Created)
        .map_err(|source| TriggerError::Create { path, source }),
        Err(source) => Err(TriggerError::Inspect { path, source }),
    }
}

/// The blocking action a coalescer runs for a key; returns a count reported to waiters (for the
/// daemon: how many triggers succeeded).
pub type Action = Arc<dyn Fn(&str) -> u64 + Send + Sync>;

#[derive(Default)]
struct SlotState {
    pending: bool,
    waiters: Vec<oneshot::Sender<u64>>,
    /// A run is under way; `after_run` is told when it ends.
    running: bool,
    after_run: Vec<oneshot::Sender<u64>>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    wake: Notify,
}

/// Per-key trailing-edge coalescer. Each key gets one task, created on first use; keys should
/// come from a bounded set (the mapped channels).
pub struct Coalescer {
    window: Duration,
    action: Action,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Coalescer {
    /// A coalescer running `action` (on the blocking pool) at most twice per `window` per key.
    pub fn new(window: Duration, action: Action) -> Arc<Self> {
        Arc::new(Coalescer {
            window,
            action,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Ask for the action on `key`. `waiter`, if given, receives the result of the run that
    /// covers this request. Returns `true` when the request was merged into one already pending
    /// (coalesced). Must be called within a tokio runtime.
    pub fn submit(self: &Arc<Self>, key: &str, waiter: Option<oneshot::Sender<u64>>) -> bool {
        let slot = {
            let mut slots = match self.slots.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            match slots.get(key) {
                Some(s) => Arc::clone(s),
                None => {
                    let slot = Arc::new(Slot::default());
                    slots.insert(key.to_string(), Arc::clone(&slot));
                    tokio::spawn(Arc::clone(self).run(key.to_string(), Arc::clone(&slot)));
                    slot
                }
            }
        };
        let coalesced = {
            let mut st = match slot.state.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let was = st.pending;
            st.pending = true;
            if let Some(w) = waiter {
                st.waiters.push(w);
            }
            was
        };
        slot.wake.notify_one();
        coalesced
    }

    /// A receiver told once every request submitted so far for `key` was acted on (the pending
    /// run, or the one under way); `None` when none is outstanding. Asks for no run itself.
    pub fn barrier(&self, key: &str) -> Option<oneshot::Receiver<u64>> {
        let slot = {
            let slots = match self.slots.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            Arc::clone(slots.get(key)?)
        };
        let mut st = match slot.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (tx, rx) = oneshot::channel();
        if st.pending {
            st.waiters.push(tx);
        } else if st.running {
            st.after_run.push(tx);
        } else {
            return None;
        }
        Some(rx)
    }

    async fn run(self: Arc<Self>, key: String, slot: Arc<Slot>) {
        loop {
            slot.wake.notified().await;
            loop {
                let waiters = {
                    let mut st = match slot.state.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    if !st.pending {
                        break;
                    }
                    st.pending = false;
                    st.running = true;
                    std::mem::take(&mut st.waiters)
                };
                let action = Arc::clone(&self.action);
                let k = key.clone();
                let result = tokio::task::spawn_blocking(move || action(&k))
                    .await
                    .unwrap_or(0);
                let after = {
                    let mut st = match slot.state.lock() {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                    st.running = false;
                    std::mem::take(&mut st.after_run)
                };
                for w in waiters.into_iter().chain(after) {
                    let _ = w.send(result);
                }
                // The window: anything arriving now is acted on once, at its end.
                tokio::time::sleep(self.window).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vfnotify-trig-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn toggles_regular_file() {
        let d = tmp("reg");
        assert_eq!(toggle(&d, ".t").unwrap(), Toggled::Created);
        assert!(d.join(".t").is_file());
        assert_eq!(toggle(&d, ".t").unwrap(), Toggled::Removed);
        assert!(!d.join(".t").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn never_follows_symlinks_or_replaces_others() {
        let d = tmp("sym");
        let target = d.join("target");
        std::os::unix::fs::symlink(&target, d.join(".t")).unwrap();
        assert!(matches!(
            toggle(&d, ".t"),
            Err(TriggerError::NotRegular {
                kind: "symlink",
                ..
            })
        ));
        assert!(!target.exists());
        assert!(
            std::fs::symlink_metadata(d.join(".t"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        std::fs::create_dir(d.join(".dir")).unwrap();
        assert!(matches!(
            toggle(&d, ".dir"),
            Err(TriggerError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A parent of the folder swapped for a symlink after start-up: refused, nothing toggled at
    /// the symlink's target.
    #[test]
    fn a_parent_swapped_for_a_symlink_is_refused() {
        let d = tmp("parent").canonicalize().unwrap();
        std::fs::create_dir_all(d.join("share/docs")).unwrap();
        std::fs::create_dir_all(d.join("elsewhere/docs")).unwrap();
        let folder = d.join("share/docs");
        assert_eq!(toggle(&folder, ".t").unwrap(), Toggled::Created);
        std::fs::rename(d.join("share"), d.join("moved")).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("share")).unwrap();
        let e = toggle(&folder, ".t").unwrap_err();
        assert!(
            matches!(&e, TriggerError::Inspect { source, .. } if source.raw_os_error() == Some(libc::ELOOP)),
            "{e}"
        );
        assert!(!d.join("elsewhere/docs/.t").exists());
        assert!(
            d.join("moved/docs/.t").exists(),
            "the real folder is untouched"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn trigger_names() {
        assert!(validate_trigger_name(".virtiofs-refresh").is_ok());
        for bad in ["", ".", "..", "a/b", "/x"] {
            assert!(validate_trigger_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn coalescer_leading_and_trailing() {
        let runs = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&runs);
        let window = Duration::from_millis(200);
        let c = Coalescer::new(
            window,
            Arc::new(move |_k: &str| r.fetch_add(1, Ordering::SeqCst) + 1),
        );
        // Leading edge: acted on at once.
        let (tx, rx) = oneshot::channel();
        assert!(!c.submit("a", Some(tx)));
        assert_eq!(rx.await.unwrap(), 1);
        // A burst inside the window: one trailing run, after the last request.
        let start = std::time::Instant::now();
        let mut coalesced = 0;
        let mut last = None;
        for i in 0..99 {
            let (tx, rx) = oneshot::channel();
            if c.submit("a", Some(tx)) {
                coalesced += 1;
            }
            if i == 98 {
                last = Some(rx);
            }
        }
        assert_eq!(coalesced, 98);
        assert_eq!(last.unwrap().await.unwrap(), 2);
        assert!(start.elapsed() >= window / 2, "trailing run came too early");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Another key is independent.
        let (tx, rx) = oneshot::channel();
        assert!(!c.submit("b", Some(tx)));
        assert_eq!(rx.await.unwrap(), 3);
    }
}
