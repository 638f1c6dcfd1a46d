//! The thread that sends the attribute expiries opens wait for (`fs/open_expiry.rs`): nothing
//! else, so it is never held up by the mount.

use std::sync::Arc;

use fuser::{INodeNo, Notifier};
use tracing::debug;

use crate::overlay::fs::Shared;

/// Start the thread; it ends once the queue is closed.
pub fn spawn(s: Arc<Shared>, notifier: Notifier) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vfnotify-expire".into())
        .spawn(move || {
            while let Some((inos, upto)) = s.open_expiries.wait_batch() {
                for ino in inos {
                    // Attributes only (offset -1): takes no lock a request handler can hold.
                    if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
                        debug!("inval_inode({ino}) before an open's reply: {e}");
                    }
                }
                s.open_expiries.expired(upto);
            }
            debug!("open expiry queue closed");
        })?;
    Ok(())
}
