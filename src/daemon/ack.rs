//! The cross-VM barrier, guest side: a peer connection from a `vfnotify host` that opens with
//! `vfnotify.hello\tV` is answered `vfnotify.hello\t1`; each `vfnotify.sync\tID` after it is
//! answered `vfnotify.ack\tID` once every earlier line of the connection was handled — what
//! `vfnotify notify` waits for: every overlay of the channel acknowledged what it was delivered
//! (caches invalidated, events replayed), and the trigger run covering it toggled the files.
//! The host side is `host::barrier`; the lines are in [`crate::protocol`].
//!
//! Acknowledgements are cumulative per connection, so one slot holds the latest sync asked for: a
//! sync arriving while an earlier one is still waiting supersedes it (counted), and the memory
//! per connection stays bounded whatever the host sends. The replies are written by a task of
//! their own, so a host that stops reading delays no line's handling.
//!
//! After a restart of this daemon, overlays that were linked to the previous instance relink
//! within moments (they retry every 100 ms) and rescan. A sync in the daemon's first
//! [`RELINK_GRACE`] waits until every `fuse.vfnotify` mount is linked again (or the grace ends),
//! so that its acknowledgement covers those rescans too.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::state::{Counters, Shared, lock};
use crate::protocol::Notification;
use crate::protocol::{ACK, HELLO, RESERVED_PREFIX, SYNC, VERSION};

/// How long after its start the daemon waits for overlays to relink before acknowledging.
pub const RELINK_GRACE: Duration = Duration::from_secs(1);
const RELINK_POLL: Duration = Duration::from_millis(20);
/// Most channel names tracked per connection (the host's channels for this guest).
const MAX_CHANNELS: usize = 1024;

/// A barrier line from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `vfnotify.hello\tV` (`None`: V is not a version).
    Hello(Option<u32>),
    /// `vfnotify.sync\tID` (`None`: ID is not a positive integer).
    Sync(Option<u64>),
}

/// Whether a decoded line is a barrier line (handled here, not dispatched).
pub fn reserved(n: &Notification) -> Option<Line> {
    let arg = n.path.as_deref();
    match n.channel.as_str() {
        HELLO => Some(Line::Hello(arg.and_then(|v| v.parse().ok()))),
        SYNC => Some(Line::Sync(
            arg.and_then(|v| v.parse().ok()).filter(|id| *id > 0),
        )),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct SlotState {
    hello_due: bool,
    /// The latest sync asked for, and the connection's channels then.
    sync: Option<(u64, BTreeSet<String>)>,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    wake: Notify,
}

/// One peer connection's barrier state.
pub struct PeerAcks<W> {
    shared: Arc<Shared>,
    /// The write half, until the replies' task takes it (at the first hello).
    wr: Option<W>,
    slot: Arc<Slot>,
    task: Option<JoinHandle<()>>,
    negotiated: bool,
    channels: BTreeSet<String>,
    warned: bool,
}

impl<W: AsyncWrite + Unpin + Send + 'static> PeerAcks<W> {
    pub fn new(shared: Arc<Shared>, wr: W) -> Self {
        PeerAcks {
            shared,
            wr: Some(wr),
            slot: Arc::default(),
            task: None,
            negotiated: false,
            channels: BTreeSet::new(),
            warned: false,
        }
    }

    /// A notification line for `channel` (dispatched by the caller): a channel to settle.
    pub fn saw(&mut self, channel: &str) {
        if channel.starts_with(RESERVED_PREFIX) || self.channels.contains(channel) {
            return;
        }
        if self.channels.len() >= MAX_CHANNELS {
            Counters::bump(&self.shared.counters.barrier_bad);
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!(
                    max = MAX_CHANNELS,
                    "peer named too many channels; syncs do not wait for the rest"
                );
            }
            return;
        }
        self.channels.insert(channel.to_string());
    }

    /// A barrier line; every line before it was dispatched already.
    pub fn line(&mut self, line: Line) {
        let c = &self.shared.counters;
        match line {
            Line::Hello(Some(v)) if v >= 1 => {
                Counters::bump(&c.barrier_hellos);
                if !self.negotiated {
                    tracing::debug!(version = v, "host negotiated syncs");
                    self.shared.exact_peer_up();
                }
                self.negotiated = true;
                self.start();
                lock(&self.slot.state).hello_due = true;
                self.slot.wake.notify_one();
            }
            Line::Sync(Some(id)) if self.negotiated => {
                Counters::bump(&c.barrier_syncs);
                let superseded = lock(&self.slot.state)
                    .sync
                    .replace((id, self.channels.clone()))
                    .is_some();
                if superseded {
                    Counters::bump(&c.barrier_coalesced);
                }
                self.slot.wake.notify_one();
            }
            other => {
                Counters::bump(&c.barrier_bad);
                tracing::debug!(line = ?other, negotiated = self.negotiated, "barrier line dropped");
            }
        }
    }

    fn start(&mut self) {
        if let Some(wr) = self.wr.take() {
            self.task = Some(tokio::spawn(replies(
                Arc::clone(&self.shared),
                Arc::clone(&self.slot),
                wr,
            )));
        }
    }
}

impl<W> Drop for PeerAcks<W> {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if self.negotiated {
            self.shared.exact_peer_down();
        }
    }
}

/// Write the hello answer and the acknowledgements, in order.
async fn replies<W: AsyncWrite + Unpin>(shared: Arc<Shared>, slot: Arc<Slot>, mut wr: W) {
    loop {
        let (hello, sync) = {
            let mut st = lock(&slot.state);
            (std::mem::take(&mut st.hello_due), st.sync.take())
        };
        if hello {
            let line = format!("{HELLO}\t{VERSION}\n");
            if wr.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
        match sync {
            Some((id, channels)) => {
                settle(&shared, &channels).await;
                let line = format!("{ACK}\t{id}\n");
                if wr.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                Counters::bump(&shared.counters.barrier_acks);
            }
            None if !hello => slot.wake.notified().await,
            None => {}
        }
    }
}

/// Wait until everything dispatched so far for `channels` is handled.
async fn settle(shared: &Shared, channels: &BTreeSet<String>) {
    let until = shared.started + RELINK_GRACE;
    while Instant::now() < until && shared.unlinked_mounts() > 0 {
        tokio::time::sleep(RELINK_POLL).await;
    }
    for c in channels {
        let w = shared.settled(c);
        for rx in w.overlays {
            // A closed overlay drops its waiter: nothing of it is left to wait for.
            let _ = rx.await;
        }
        if let Some(t) = w.triggers {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::wire::Scope;

    fn n(c: &str, p: Option<&str>) -> Notification {
        Notification {
            channel: c.into(),
            path: p.map(Into::into),
        }
    }

    #[test]
    fn barrier_lines() {
        assert_eq!(
            reserved(&n("vfnotify.hello", Some("1"))),
            Some(Line::Hello(Some(1)))
        );
        assert_eq!(
            reserved(&n("vfnotify.hello", None)),
            Some(Line::Hello(None))
        );
        assert_eq!(
            reserved(&n("vfnotify.sync", Some("42"))),
            Some(Line::Sync(Some(42)))
        );
        assert_eq!(
            reserved(&n("vfnotify.sync", Some("0"))),
            Some(Line::Sync(None))
        );
        assert_eq!(
            reserved(&n("vfnotify.sync", Some("x/y"))),
            Some(Line::Sync(None))
        );
        assert_eq!(reserved(&n("vfnotify.keepalive", None)), None);
        assert_eq!(reserved(&n("docs", Some("a"))), None);
    }

    /// An overlay's barrier waits for its first rescan, then for what it was delivered; a
    /// closed overlay leaves nothing to wait for.
    #[tokio::test]
    async fn overlay_barriers_are_cumulative_and_wait_for_the_first_rescan() {
        let shared = Shared::new(crate::daemon::DaemonConfig::new("/nonexistent".into()));
        let sub = shared.subscribe("docs".into(), "/m".into(), 1);
        let mut w = shared.settled("docs");
        assert_eq!(w.overlays.len(), 1, "not rescanned yet");
        let mut first = w.overlays.pop().unwrap();
        assert!(first.try_recv().is_err());
        sub.ack(&[], None);
        assert!(first.try_recv().is_ok(), "the rescan report releases it");
        assert!(
            shared.settled("docs").overlays.is_empty(),
            "nothing delivered since"
        );
        shared.dispatch("docs", Scope::Paths(vec!["a".into()]), false);
        shared.dispatch("docs", Scope::Paths(vec!["b".into()]), false);
        let mut w = shared.settled("docs").overlays;
        assert_eq!(w.len(), 1);
        sub.ack(&[1], None);
        assert!(w[0].try_recv().is_err(), "seq 2 is not handled yet");
        sub.ack(&[2], None);
        assert!(w[0].try_recv().is_ok());
        shared.dispatch("docs", Scope::Paths(vec!["c".into()]), false);
        let mut w = shared.settled("docs").overlays;
        shared.unsubscribe(sub.id);
        assert!(w[0].try_recv().is_err(), "closed: the waiter is dropped");
        assert!(shared.settled("docs").overlays.is_empty());
    }

    /// A trigger barrier waits for the pending run or the one under way, and asks for none.
    #[tokio::test]
    async fn trigger_barriers_wait_for_the_run_covering_earlier_requests() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let runs = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&runs);
        let c = crate::trigger::Coalescer::new(
            Duration::from_millis(100),
            Arc::new(move |_k: &str| {
                std::thread::sleep(Duration::from_millis(50));
                r.fetch_add(1, Ordering::SeqCst) + 1
            }),
        );
        assert!(c.barrier("a").is_none(), "nothing ever submitted");
        c.submit("a", None);
        let b = c.barrier("a").expect("a run is pending or under way");
        assert_eq!(b.await.unwrap(), 1);
        // Within the window, a new request is pending until the trailing run.
        c.submit("a", None);
        let b = c.barrier("a").expect("pending");
        assert_eq!(b.await.unwrap(), 2);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(c.barrier("a").is_none(), "idle");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "barriers ask for no run");
    }
}
