//! The table of open peer connections, and the eviction that enforces `--max-connections`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::util::lock;

/// The open peer connections and when each last made progress (connected, or completed a line).
///
/// `--max-connections` is enforced by making room, not by refusing: when the table is full, the
/// connection that has gone longest without completing a line is told to close (counted as
/// `evicted`) and the newcomer takes its place. So no set of slow, stuck or leaked connections can
/// lock out a sender that is working: a newcomer is the freshest entry, and keeps its place as
/// long as it finishes lines.
#[derive(Debug, Default)]
pub struct Connections {
    table: Arc<Mutex<ConnTable>>,
}

#[derive(Debug, Default)]
struct ConnTable {
    next_id: u64,
    open: HashMap<u64, ConnEntry>,
}

#[derive(Debug)]
struct ConnEntry {
    progress: Instant,
    /// Fired (or dropped) to close the connection.
    evict: oneshot::Sender<()>,
}

/// A connection's place in [`Connections`]: released on drop.
pub struct ConnSlot {
    id: u64,
    table: Arc<Mutex<ConnTable>>,
    /// Completes when the connection is evicted to make room for a newer one.
    pub evicted: oneshot::Receiver<()>,
}

impl Connections {
    /// Admit a connection, evicting the one with the least progress when `max` are open already.
    /// Returns the slot and whether a connection was evicted.
    pub fn admit(&self, max: usize) -> (ConnSlot, bool) {
        let (tx, rx) = oneshot::channel();
        let mut t = lock(&self.table);
        let mut evicted = false;
        while t.open.len() >= max.max(1) {
            let Some(victim) = t
                .open
                .iter()
                .min_by_key(|(id, e)| (e.progress, **id))
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(e) = t.open.remove(&victim) {
                let _ = e.evict.send(());
                evicted = true;
            }
        }
        t.next_id += 1;
        let id = t.next_id;
        t.open.insert(
            id,
            ConnEntry {
                progress: Instant::now(),
                evict: tx,
            },
        );
        (
            ConnSlot {
                id,
                table: Arc::clone(&self.table),
                evicted: rx,
            },
            evicted,
        )
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        lock(&self.table).open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ConnSlot {
    /// The connection completed a line: it moves to the back of the eviction order.
    pub fn progressed(&self) {
        if let Some(e) = lock(&self.table).open.get_mut(&self.id) {
            e.progress = Instant::now();
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        lock(&self.table).open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A full table makes room by evicting the connection that went longest without a line.
    #[test]
    fn a_full_connection_table_evicts_the_least_progress() {
        let c = Connections::default();
        let (a, e) = c.admit(2);
        assert!(!e);
        std::thread::sleep(Duration::from_millis(2));
        let (mut b, e) = c.admit(2);
        assert!(!e);
        std::thread::sleep(Duration::from_millis(2));
        // `a` finishes a line: `b` (older progress now) is the one to go.
        a.progressed();
        let (mut n, e) = c.admit(2);
        assert!(e);
        assert_eq!(c.len(), 2);
        assert!(b.evicted.try_recv().is_ok(), "b evicted");
        assert!(n.evicted.try_recv().is_err(), "the newcomer stays");
        drop(b);
        assert_eq!(c.len(), 2, "an evicted slot was already released");
        drop(a);
        drop(n);
        assert!(c.is_empty());
    }
}
