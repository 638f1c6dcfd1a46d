//! One subscribed overlay as the daemon holds it: its queue of notifications (collapsed when it
//! overflows), the watch globs and feed state it is to be told, its acknowledgements and the
//! waiters they release, and when it last reported.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::{Notify, oneshot};

use super::state::SUBSCRIBER_QUEUE;
use crate::control::reply::OverlayStatus;
use crate::control::request::OverlayStats;
use crate::control::wire::{LinkEvent, Scope};
use crate::util::{lock, unix_now};

/// One event queued for an overlay.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub channel: String,
    pub scope: Scope,
}

impl Event {
    /// The wire form: `{"event":{"type":"notify","channel":..,"paths":[..],"seq":N}}`.
    pub fn wire(&self) -> LinkEvent {
        LinkEvent::Notify {
            channel: self.channel.clone(),
            paths: self.scope.clone(),
            seq: self.seq,
        }
    }
}

#[derive(Debug, Default)]
struct SubState {
    queue: VecDeque<Event>,
    next_seq: u64,
    delivered: u64,
    handled: u64,
    stats: Option<OverlayStats>,
    /// seq → waiters released once an ack covers seq (acks are cumulative: an ack of N covers
    /// every seq ≤ N, since events are delivered in order).
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    closed: bool,
    /// The highest seq acknowledged, and whether the overlay reported its first rescan (its
    /// first `handled`, sent once the rescan after subscribing is done).
    acked: u64,
    ready: bool,
    /// When the overlay last reported (an acknowledgement or progress).
    heard: Option<std::time::Instant>,
}

/// What [`Subscriber::pop`] found.
#[derive(Debug)]
pub enum Popped {
    Event(Event),
    /// The watch globs that follow the overlay now: `{"event": {"type": "watches", "globs":
    /// [...]}}` (a watch without a glob follows everything: `**`).
    Watches(Vec<String>),
    /// Whether the daemon's feed is exact now (see [`super::feed`]).
    Feed(bool),
    Empty,
    Closed,
}

/// A subscribed overlay (one control connection).
#[derive(Debug)]
pub struct Subscriber {
    pub id: u64,
    pub channel: String,
    pub mountpoint: PathBuf,
    pub pid: u32,
    pub since: u64,
    state: Mutex<SubState>,
    /// Woken when events are queued or the subscriber is closed.
    pub wake: Notify,
    /// The globs of the watches following this overlay, when they changed and the overlay was
    /// not told yet (sent before any queued notification).
    globs: Mutex<Option<Vec<String>>>,
    /// Whether the feed is exact, when it changed and the overlay was not told yet.
    feed: Mutex<Option<bool>>,
}

impl Subscriber {
    /// A new subscriber; `feed`: what to tell it first of the daemon's feed (see
    /// [`super::feed`]).
    pub(super) fn new(
        id: u64,
        channel: String,
        mountpoint: PathBuf,
        pid: u32,
        feed: Option<bool>,
    ) -> Self {
        Subscriber {
            id,
            channel,
            mountpoint,
            pid,
            since: unix_now(),
            state: Mutex::new(SubState::default()),
            wake: Notify::new(),
            globs: Mutex::new(None),
            feed: Mutex::new(feed),
        }
    }

    /// Queue a notification; returns whether the queue overflowed (and collapsed).
    pub(super) fn deliver(
        &self,
        channel: &str,
        scope: Scope,
        waiter: Option<oneshot::Sender<()>>,
    ) -> bool {
        let overflow = {
            let mut st = lock(&self.state);
            if st.closed {
                return false;
            }
            st.next_seq += 1;
            let seq = st.next_seq;
            let overflow = st.queue.len() >= SUBSCRIBER_QUEUE;
            let event = if overflow {
                st.queue.clear();
                Event {
                    seq,
                    channel: channel.to_string(),
                    scope: Scope::Whole,
                }
            } else {
                Event {
                    seq,
                    channel: channel.to_string(),
                    scope,
                }
            };
            st.queue.push_back(event);
            st.delivered += 1;
            if let Some(w) = waiter {
                st.waiters.entry(seq).or_default().push(w);
            }
            overflow
        };
        self.wake.notify_one();
        overflow
    }

    /// Tell the overlay, before its next notification, which watch globs follow it.
    pub(super) fn set_globs(&self, globs: Vec<String>) {
        *lock(&self.globs) = Some(globs);
        self.wake.notify_one();
    }

    /// Tell the overlay, before its next notification, whether the feed is exact.
    pub(super) fn set_feed(&self, exact: bool) {
        *lock(&self.feed) = Some(exact);
        self.wake.notify_one();
    }

    /// The overlay reports that it is still handling.
    pub fn heard(&self) {
        lock(&self.state).heard = Some(std::time::Instant::now());
    }

    /// How long since the overlay last reported (for ever if it never did).
    pub fn quiet_for(&self) -> std::time::Duration {
        let heard = lock(&self.state).heard;
        heard.map_or(std::time::Duration::MAX, |t| t.elapsed())
    }

    /// Take the next queued event.
    pub fn pop(&self) -> Popped {
        let mut st = lock(&self.state);
        if st.closed {
            return Popped::Closed;
        }
        if let Some(exact) = lock(&self.feed).take() {
            return Popped::Feed(exact);
        }
        if let Some(g) = lock(&self.globs).take() {
            return Popped::Watches(g);
        }
        match st.queue.pop_front() {
            Some(ev) => Popped::Event(ev),
            None => Popped::Empty,
        }
    }

    /// Record acknowledgements of `seqs` (cumulative), with the overlay's latest stats.
    /// `stats`: `Some` when the report carried them (`Some(None)`: a `null`, shown as such).
    pub fn ack(&self, seqs: &[u64], stats: Option<Option<OverlayStats>>) {
        let mut st = lock(&self.state);
        st.heard = Some(std::time::Instant::now());
        if let Some(s) = stats {
            st.stats = s;
        }
        let first = !st.ready;
        st.ready = true;
        let max = seqs.iter().max().copied().unwrap_or(0);
        if seqs.is_empty() && !first {
            return;
        }
        st.handled += seqs.len() as u64;
        st.acked = st.acked.max(max);
        let upto = st.acked.saturating_add(1);
        let rest = st.waiters.split_off(&upto);
        let done = std::mem::replace(&mut st.waiters, rest);
        for w in done.into_values().flatten() {
            let _ = w.send(());
        }
    }

    /// A receiver completed once everything delivered so far is handled (and the rescan after
    /// subscribing is done); `None` when it already is, or the subscriber is closed.
    pub fn barrier(&self) -> Option<oneshot::Receiver<()>> {
        let mut st = lock(&self.state);
        if st.closed || (st.ready && st.acked >= st.next_seq) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let at = st.next_seq;
        st.waiters.entry(at).or_default().push(tx);
        Some(rx)
    }

    /// Close: queued events and pending waiters are dropped (waiters see a closed channel).
    pub fn close(&self) {
        {
            let mut st = lock(&self.state);
            st.closed = true;
            st.queue.clear();
            st.waiters.clear();
        }
        self.wake.notify_one();
    }

    pub(super) fn wire(&self) -> OverlayStatus {
        let st = lock(&self.state);
        OverlayStatus {
            subscription: self.id,
            channel: self.channel.clone(),
            mountpoint: self.mountpoint.clone(),
            pid: self.pid,
            since: self.since,
            delivered: st.delivered,
            handled: st.handled,
            queued: st.queue.len() as u64,
            stats: st.stats.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_queue_collapses_and_acks_are_cumulative() {
        let sub = Subscriber::new(1, "c".into(), "/m".into(), 1, None);
        let (tx1, mut rx1) = oneshot::channel();
        assert!(!sub.deliver("c", Scope::Paths(vec!["a".into()]), Some(tx1)));
        for _ in 1..SUBSCRIBER_QUEUE {
            assert!(!sub.deliver("c", Scope::Paths(vec!["b".into()]), None));
        }
        let (tx2, mut rx2) = oneshot::channel();
        assert!(sub.deliver("c", Scope::Paths(vec!["z".into()]), Some(tx2)));
        let Popped::Event(ev) = sub.pop() else {
            panic!("expected an event")
        };
        assert_eq!(ev.scope, Scope::Whole);
        assert_eq!(ev.seq, SUBSCRIBER_QUEUE as u64 + 1);
        assert!(matches!(sub.pop(), Popped::Empty));
        sub.ack(&[ev.seq], Some(Some(OverlayStats::new())));
        assert!(rx1.try_recv().is_ok());
        assert!(rx2.try_recv().is_ok());
        sub.close();
        assert!(matches!(sub.pop(), Popped::Closed));
    }
}
