//! Watch subscriptions: structured change events (create, delete, modify, attrib, rename) that
//! overlays report after handling each notification, fanned out to control clients.
//!
//! Each watch has a bounded queue. Publishing never blocks for long: when a watch's queue is full
//! the publisher waits for its reader to make room, but a watch whose queue stays full with
//! nothing taken for [`WATCH_STALL`], or any watch still full once one report has waited
//! [`REPORT_WAIT`] in all, overflows: it gets one `overflow` event and further events are dropped
//! (and counted) until its queue has drained, after which events resume.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::state::lock;
use crate::glob::Glob;

/// Most events queued per watch (the overflow event comes on top).
pub const WATCH_QUEUE: usize = 1024;
/// A full queue wakes waiting publishers once it is back down to this many events.
const LOW_WATER: usize = WATCH_QUEUE * 3 / 4;
/// A full queue from which nothing was taken for this long overflows.
pub const WATCH_STALL: Duration = Duration::from_millis(500);
/// Longest time publishing one report waits for full queues, in all.
pub const REPORT_WAIT: Duration = Duration::from_secs(2);
/// Most watches per control connection.
pub const MAX_WATCHES_PER_CONNECTION: usize = 64;

use crate::control::reply::{WatchStatus, WatchTotals};
pub use crate::control::wire::{Change, ChangeKind, Target, WatchEvent, WatchItem};

#[derive(Debug)]
enum Item {
    Change { seq: u64, change: Change },
    Overflow,
}

#[derive(Debug)]
struct WatchState {
    queue: VecDeque<Item>,
    /// Seq of the last event queued or dropped (dropped events use up a seq: a gap after an
    /// overflow tells how many were lost).
    seq: u64,
    /// An overflow event is queued or was sent and the queue has not drained since: drop.
    overflowed: bool,
    /// When the queue was first seen full in the current full spell.
    full_since: Option<Instant>,
    last_taken: Instant,
    sent: u64,
    dropped: u64,
    overflows: u64,
    closed: bool,
}

/// One watch (belongs to one control connection).
#[derive(Debug)]
pub struct Watch {
    pub id: u64,
    pub target: Target,
    pub glob: Option<Glob>,
    state: Mutex<WatchState>,
    /// Woken when an event is queued or the watch closes (for its forwarder).
    pub wake: Notify,
    /// Woken when a full queue has room again (for publishers).
    space: Notify,
    /// Held by the forwarder while it takes and sends an event, so that once
    /// [`Watch::close`] returns and this lock has been taken, no event of this watch follows.
    pub sending: tokio::sync::Mutex<()>,
}

/// What [`Watch::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// The event (sent as `{"event": {...}}`).
    Event(WatchEvent),
    Empty,
    Closed,
}

/// What offering one change to a watch did.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    Queued,
    /// Dropped (the watch is in overflow); `true` when this change started the overflow.
    Dropped(bool),
    /// Full: retry once woken, or overflow at the given instant.
    Full(Instant),
    Closed,
}

impl Watch {
    pub fn new(id: u64, target: Target, glob: Option<Glob>) -> Watch {
        Watch {
            id,
            target,
            glob,
            state: Mutex::new(WatchState {
                queue: VecDeque::new(),
                seq: 0,
                overflowed: false,
                full_since: None,
                last_taken: Instant::now(),
                sent: 0,
                dropped: 0,
                overflows: 0,
                closed: false,
            }),
            wake: Notify::new(),
            space: Notify::new(),
            sending: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether `change` passes the glob (a rename passes when either name does).
    pub fn wants(&self, change: &Change) -> bool {
        match &self.glob {
            None => true,
            Some(g) => {
                g.matches(&change.path) || change.to.as_deref().is_some_and(|t| g.matches(t))
            }
        }
    }

    /// Queue `change`, or say why not. `give_up`: overflow now rather than report `Full`.
    fn offer(&self, change: &Change, give_up: bool) -> Offer {
        let mut st = lock(&self.state);
        if st.closed {
            return Offer::Closed;
        }
        if st.overflowed {
            st.seq += 1;
            st.dropped += 1;
            return Offer::Dropped(false);
        }
        if st.queue.len() >= WATCH_QUEUE {
            let now = Instant::now();
            let since = *st.full_since.get_or_insert(now);
            let stall_at = since.max(st.last_taken) + WATCH_STALL;
            if !give_up && now < stall_at {
                return Offer::Full(stall_at);
            }
            st.overflowed = true;
            st.overflows += 1;
            st.seq += 1;
            st.dropped += 1;
            st.queue.push_back(Item::Overflow);
            drop(st);
            self.wake.notify_one();
            return Offer::Dropped(true);
        }
        st.seq += 1;
        let seq = st.seq;
        st.queue.push_back(Item::Change {
            seq,
            change: change.clone(),
        });
        drop(st);
        self.wake.notify_one();
        Offer::Queued
    }

    /// Take the next queued event (for the forwarder).
    pub fn take(&self) -> Taken {
        let mut st = lock(&self.state);
        if st.closed {
            return Taken::Closed;
        }
        let Some(item) = st.queue.pop_front() else {
            return Taken::Empty;
        };
        st.last_taken = Instant::now();
        let item = match item {
            Item::Change { seq, change } => {
                st.sent += 1;
                WatchItem::Change { change, seq }
            }
            Item::Overflow => {
                // Nothing was queued after the overflow event: the queue has drained.
                st.overflowed = false;
                WatchItem::Overflow
            }
        };
        let msg = WatchEvent {
            watch: self.id,
            item,
        };
        let room = st.queue.len() <= LOW_WATER;
        if room {
            st.full_since = None;
        }
        drop(st);
        if room {
            self.space.notify_waiters();
        }
        Taken::Event(msg)
    }

    /// Close: queued events are dropped, the forwarder and publishers are released.
    pub fn close(&self) {
        {
            let mut st = lock(&self.state);
            st.closed = true;
            st.queue.clear();
        }
        self.wake.notify_one();
        self.space.notify_waiters();
    }

    /// What it sent, dropped and how often it overflowed, so far (`unwatch`'s result).
    pub fn totals(&self) -> WatchTotals {
        let st = lock(&self.state);
        WatchTotals {
            sent: st.sent,
            dropped: st.dropped,
            overflows: st.overflows,
        }
    }

    /// The entry in `status`.
    pub fn wire(&self) -> WatchStatus {
        let st = lock(&self.state);
        WatchStatus {
            watch: self.id,
            target: self.target.clone(),
            glob: self.glob.as_ref().map(|g| g.as_str().to_string()),
            queued: st.queue.len() as u64,
            sent: st.sent,
            dropped: st.dropped,
            overflows: st.overflows,
            overflowed: st.overflowed,
        }
    }
}

/// What publishing one report did, for the counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub queued: u64,
    pub dropped: u64,
    pub overflows: u64,
    /// Time spent waiting for full queues, and how many waits.
    pub waited: Duration,
    pub waits: u64,
}

/// Offer `changes`, in order, to each of `watches` (those whose glob wants them). Waits while a
/// watch's queue is full and its reader keeps taking events, within the bounds in the module
/// documentation.
pub async fn publish(watches: &[std::sync::Arc<Watch>], changes: &[Change]) -> Published {
    let mut out = Published::default();
    if watches.is_empty() {
        return out;
    }
    let start = Instant::now();
    let deadline = start + REPORT_WAIT;
    for change in changes {
        for w in watches {
            if !w.wants(change) {
                continue;
            }
            loop {
                let room = w.space.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                match w.offer(change, Instant::now() >= deadline) {
                    Offer::Queued => out.queued += 1,
                    Offer::Dropped(first) => {
                        out.dropped += 1;
                        if first {
                            out.overflows += 1;
                            tracing::warn!(
                                watch = w.id,
                                "watch queue full and not read; overflow (events dropped until it drains)"
                            );
                        }
                    }
                    Offer::Closed => {}
                    Offer::Full(stall_at) => {
                        let until = stall_at.min(deadline);
                        let t = Instant::now();
                        let _ = tokio::time::timeout_at(until.into(), room).await;
                        out.waited += t.elapsed();
                        out.waits += 1;
                        continue;
                    }
                }
                break;
            }
        }
    }
    if out.waits > 0 {
        tracing::debug!(
            changes = changes.len(),
            waits = out.waits,
            waited_ms = out.waited.as_millis() as u64,
            total_ms = start.elapsed().as_millis() as u64,
            "published a report to full watch queues"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn ch(kind: ChangeKind, path: &str) -> Change {
        Change {
            kind,
            path: path.into(),
            to: None,
        }
    }

    fn event(t: Taken) -> Value {
        match t {
            Taken::Event(v) => serde_json::to_value(v).unwrap(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn parses_changes() {
        let c = Change::from_json(&json!({"type": "rename", "path": "a", "to": "b"})).unwrap();
        assert_eq!(c.to.as_deref(), Some("b"));
        assert!(Change::from_json(&json!({"type": "rename", "path": "a"})).is_none());
        assert!(Change::from_json(&json!({"type": "explode", "path": "a"})).is_none());
        assert!(Change::from_json(&json!({"type": "create"})).is_none());
        assert!(Change::from_json(&json!({"type": "create", "path": "a", "to": 3})).is_none());
    }

    #[test]
    fn renames_match_on_either_name() {
        let w = Watch::new(
            1,
            Target::Channel("c".into()),
            Some(Glob::new("*.pdf").unwrap()),
        );
        let mut r = ch(ChangeKind::Rename, "a.txt");
        assert!(!w.wants(&r));
        r.to = Some("a.pdf".into());
        assert!(w.wants(&r));
        r.path = "b.pdf".into();
        r.to = Some("b.txt".into());
        assert!(w.wants(&r));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_watch_overflows_once_and_resumes_after_draining() {
        let w = Arc::new(Watch::new(7, Target::Channel("c".into()), None));
        let changes: Vec<Change> = (0..WATCH_QUEUE + 10)
            .map(|i| ch(ChangeKind::Create, &i.to_string()))
            .collect();
        let p = publish(std::slice::from_ref(&w), &changes).await;
        assert_eq!(p.queued, WATCH_QUEUE as u64);
        assert_eq!(p.dropped, 10);
        assert_eq!(p.overflows, 1);
        // Still overflowed: dropped at once, without waiting.
        let p = publish(std::slice::from_ref(&w), &changes[..3]).await;
        assert_eq!((p.queued, p.dropped, p.overflows, p.waits), (0, 3, 0, 0));
        for i in 0..WATCH_QUEUE {
            let ev = event(w.take());
            assert_eq!(ev["seq"], i as u64 + 1);
        }
        let ev = event(w.take());
        assert_eq!(ev, json!({"watch": 7, "type": "overflow"}));
        assert!(matches!(w.take(), Taken::Empty));
        // Resumed; the gap in seq counts what was lost.
        let p = publish(std::slice::from_ref(&w), &changes[..1]).await;
        assert_eq!(p.queued, 1);
        let ev = event(w.take());
        assert_eq!(ev["seq"], WATCH_QUEUE as u64 + 14);
        assert_eq!(
            serde_json::to_value(w.totals()).unwrap(),
            json!({"sent": WATCH_QUEUE + 1, "dropped": 13, "overflows": 1})
        );
        w.close();
        assert!(matches!(w.take(), Taken::Closed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reading_watch_gets_a_burst_larger_than_its_queue() {
        let w = Arc::new(Watch::new(1, Target::Channel("c".into()), None));
        let reader = {
            let w = Arc::clone(&w);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match w.take() {
                        Taken::Event(v) => got.push(v),
                        Taken::Empty => {
                            if got.len() >= 3 * WATCH_QUEUE {
                                return got;
                            }
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                        Taken::Closed => return got,
                    }
                }
            })
        };
        let changes: Vec<Change> = (0..3 * WATCH_QUEUE)
            .map(|i| ch(ChangeKind::Modify, &i.to_string()))
            .collect();
        let p = publish(std::slice::from_ref(&w), &changes).await;
        assert_eq!((p.queued, p.dropped), (3 * WATCH_QUEUE as u64, 0));
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 3 * WATCH_QUEUE);
        for (i, v) in got.iter().enumerate() {
            let v = serde_json::to_value(v).unwrap();
            assert_eq!(v["seq"], i as u64 + 1);
            assert_eq!(v["path"], i.to_string());
        }
    }
}
