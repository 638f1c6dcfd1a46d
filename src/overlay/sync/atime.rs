//! The thread that stats, through the mount, what the kernel read and then dropped the atime
//! of (see `fs/atime.rs`): a client of the mount like any other, never a request handler, so the
//! `GETATTR` it sets off is served by the handlers while it waits. It also expires the
//! attributes of folders whose entries a client changed, of objects whose xattrs it changed
//! (`fs/atime.rs` `LocalChange`), and of files whose data a writeback changed (the one kernel
//! notification sent outside the sync worker; attributes only, which takes no lock a handler
//! holds: an `FSYNC` handler waits for it, bounded).

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};
use tracing::debug;

use super::ReplayRoot;
use crate::overlay::fs::{Expiries, Shared, Stats};
use crate::sys;

/// Rounds of stats made again for objects whose stat came before the kernel dropped the atime
/// (`AtimeRefresh::ask`), 1, 2 and 4 ms apart.
const EARLY_ROUNDS: u32 = 3;

/// Start the thread; it ends once the queue is closed.
pub fn spawn(s: Arc<Shared>, notifier: Notifier, root: ReplayRoot) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vfnotify-atime".into())
        .spawn(move || {
            while let Some(batch) = s.atime_refresh.wait_batch() {
                expire(&s, &notifier, batch.expire);
                let mut round = batch.stat;
                for again in 0..=EARLY_ROUNDS {
                    let early = stat_round(&s, &notifier, &root, round, again == EARLY_ROUNDS);
                    if early.is_empty() {
                        break;
                    }
                    // The kernel drops the atime within microseconds of the reply; the stats
                    // that came before it are made again, a little later each round.
                    s.stats
                        .atime_refresh_early
                        .fetch_add(early.len() as u64, Ordering::Relaxed);
                    let until = Instant::now() + Duration::from_millis(1 << again);
                    while let Some(e) = s.atime_refresh.wait_expiries(until) {
                        expire(&s, &notifier, e);
                    }
                    round = early;
                }
            }
            debug!("atime refresh queue closed");
        })?;
    Ok(())
}

/// Stat `inos` through the mount; the ones no `GETATTR` came of, unless this is the `last`
/// round.
fn stat_round(
    s: &Shared,
    notifier: &Notifier,
    root: &ReplayRoot,
    inos: Vec<u64>,
    last: bool,
) -> Vec<u64> {
    let mut early = Vec::new();
    for ino in inos {
        // A stat answered just before a client changes the folder is expired after the change
        // (`LocalChange`), as any client's; expiries come first, also between two stats.
        expire(s, notifier, s.atime_refresh.take_expiries());
        s.atime_refresh.ask(ino);
        let ok = s
            .try_path_of(ino, None)
            .ok()
            .is_some_and(|rel| stat_through(s, root, &rel));
        let asked = s.atime_refresh.asked();
        if !ok {
            Stats::bump(&s.stats.atime_refresh_failed);
        } else if asked || last {
            Stats::bump(&s.stats.atime_refreshed);
            if !asked {
                // Still answered from the kernel's cache after the last round: the kernel had
                // not dropped the atime yet (a reader held up); the client's stat will ask.
                Stats::bump(&s.stats.atime_refresh_unconfirmed);
            }
        } else {
            early.push(ino);
        }
    }
    early
}

/// Expire the attributes of `e`'s objects in the kernel, and say so (`AtimeRefresh::expired`).
fn expire(s: &Shared, notifier: &Notifier, e: Expiries) {
    for ino in e.inos {
        // Attributes only (offset -1); it moves the inode's attribute version.
        if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
            // ENOENT: the kernel no longer holds it.
            debug!("inval_inode({ino}) after a client's change: {e}");
        }
    }
    s.atime_refresh.expired(e.upto);
}

/// Stat `rel` (relative to the mount's root; empty for the root) through the mount.
fn stat_through(s: &Shared, root: &ReplayRoot, rel: &Path) -> bool {
    match root {
        ReplayRoot::Path(mp) => {
            let Ok(path) = CString::new(mp.join(rel).as_os_str().as_bytes()) else {
                return false;
            };
            // An absolute path: the folder fd is not used.
            sys::fstatat(s.root_fd.as_fd(), &path).is_ok()
        }
        ReplayRoot::Detached(holder) => {
            let guard = crate::util::lock(holder);
            let Some(fd) = guard.as_ref() else {
                return false;
            };
            let Ok(name) = CString::new(rel.as_os_str().as_bytes()) else {
                return false;
            };
            sys::fstatat(fd.as_fd(), &name).is_ok()
        }
    }
}
