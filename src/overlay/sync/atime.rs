//! The thread that stats, through the mount, what the kernel read and then dropped the atime
//! of (see `fs/atime.rs`): a client of the mount like any other, never a request handler, so the
//! `GETATTR` it sets off is served by the handlers while it waits. It also expires the
//! attributes of objects whose `GETATTR` raced a client's change (the one kernel notification
//! sent outside the sync worker; attributes only, which takes no lock a handler holds).

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use fuser::{INodeNo, Notifier};
use tracing::debug;

use super::ReplayRoot;
use crate::overlay::fs::{Shared, Stats};
use crate::sys;

/// Start the thread; it ends once the queue is closed.
pub fn spawn(s: Arc<Shared>, notifier: Notifier, root: ReplayRoot) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vfnotify-atime".into())
        .spawn(move || {
            while let Some(batch) = s.atime_refresh.wait_batch() {
                for ino in batch.expire {
                    // Attributes only (offset -1); it moves the inode's attribute version.
                    if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
                        // ENOENT: the kernel no longer holds it.
                        debug!("inval_inode({ino}) after a raced GETATTR: {e}");
                    }
                }
                for ino in batch.stat {
                    // A stat answered while a client changes the object is expired again
                    // after (`after_getattr_reply`), as any client's.
                    let ok = s
                        .try_path_of(ino, None)
                        .ok()
                        .is_some_and(|rel| stat_through(&s, &root, &rel));
                    if ok {
                        Stats::bump(&s.stats.atime_refreshed);
                    } else {
                        Stats::bump(&s.stats.atime_refresh_failed);
                    }
                }
            }
            debug!("atime refresh queue closed");
        })?;
    Ok(())
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
