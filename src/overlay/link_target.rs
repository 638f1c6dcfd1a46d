//! The overlay as the daemon link sees it (`crate::link::NotifyTarget`): a notification handed
//! to the sync worker (with progress while it runs), the link and feed state (degrading when
//! they end), the watch globs, and the counters reported for `vfnotify status`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use tracing::{info, warn};

use super::fs::{self, Shared};
use super::sync::Job;

/// The overlay as the daemon link sees it.
pub(super) struct LinkTarget {
    pub(super) s: Arc<Shared>,
    pub(super) tx: std::sync::Mutex<mpsc::Sender<Job>>,
}

impl LinkTarget {
    fn send(&self, job: Job) -> bool {
        crate::util::lock(&self.tx).send(job).is_ok()
    }
}

impl crate::link::NotifyTarget for LinkTarget {
    fn handle(
        &self,
        scope: &crate::link::Scope,
        progress: &mut dyn FnMut(),
    ) -> Vec<serde_json::Value> {
        let (done_tx, done_rx) = mpsc::channel();
        if !self.send(Job::Notify {
            scope: scope.clone(),
            done: done_tx,
        }) {
            return Vec::new();
        }
        let start = std::time::Instant::now();
        loop {
            match done_rx.recv_timeout(crate::link::PROGRESS_INTERVAL) {
                // What rescans asked for by opens found meanwhile (done before this one) comes
                // first.
                Ok(report) => {
                    return (self.s.take_revalidation_records().iter())
                        .chain(&report.records)
                        .filter_map(|r| serde_json::to_value(r).ok())
                        .collect();
                }
                Err(mpsc::RecvTimeoutError::Timeout)
                    if start.elapsed() < crate::control::NOTIFY_MAX =>
                {
                    progress();
                }
                Err(_) => {
                    warn!(after = ?start.elapsed(), "notification not handled");
                    return Vec::new();
                }
            }
        }
    }

    fn set_linked(&self, linked: bool) {
        let was = self.s.linked.swap(linked, Ordering::SeqCst);
        if was != linked {
            self.s.state_since.store(fs::unix_now(), Ordering::Relaxed);
        }
        if !linked {
            // The next daemon says again whether a host feeds it.
            self.set_feed_exact(false);
        }
        if was && !linked {
            warn!("daemon link down: degraded to short cache timeouts");
            self.send(Job::Degrade);
        } else if !was && linked {
            info!("daemon link up: long caching");
        }
        if linked && !was {
            // Before the rescan that follows linking: what was cached while degraded goes.
            self.send(Job::Relinked);
        }
    }

    fn set_watch_globs(&self, globs: Vec<String>) {
        self.send(Job::WatchGlobs(globs));
    }

    fn set_feed_exact(&self, exact: bool) {
        let s = &self.s;
        let trusted = s.trusts_notifications();
        s.exact_feed.store(exact, Ordering::SeqCst);
        if trusted && !s.trusts_notifications() && s.open_free.load(Ordering::Relaxed) {
            // Opens are no longer sent, so they cannot be checked: short timeouts instead (see
            // `Shared::policy`), from now on and for everything cached so far.
            warn!("no vfnotify host feeds the daemon any more: short cache timeouts");
            self.send(Job::Degrade);
        }
    }

    fn stats(&self) -> serde_json::Value {
        let mut v = self.s.stats.to_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("known_inodes".into(), self.s.table.len().into());
            o.insert("cached_dir_fds".into(), self.s.table.dirfd_count().into());
            if let Some(f) = self.s.fd_cache.to_json().as_object() {
                o.extend(f.clone());
            }
            let linked = self.s.linked.load(Ordering::Relaxed);
            o.insert("linked".into(), linked.into());
            let state = if linked { "linked" } else { "degraded" };
            o.insert("state".into(), state.into());
            let since = self.s.state_since.load(Ordering::Relaxed);
            o.insert("since".into(), since.into());
            o.insert(
                "passthrough".into(),
                self.s.passthrough.load(Ordering::Relaxed).into(),
            );
            o.insert("trusted".into(), self.s.trusts_notifications().into());
        }
        v
    }
}
