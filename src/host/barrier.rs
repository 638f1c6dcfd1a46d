//! The cross-VM barrier, host side: `vfnotify host sync [CHANNEL...]` returns once every guest of
//! those channels has handled every change the watcher saw before the call.
//!
//! Negotiation, on each guest connection: the host's first line is `vfnotify.hello\t1`. A guest
//! daemon that can acknowledge answers `vfnotify.hello\t1` on the same connection; a guest running
//! the tool we replace reads it as an unknown channel and never answers, so it is reported as
//! "does not acknowledge" (never waited on beyond [`HELLO_WAIT`] after it connected, or the
//! timeout). A new guest behind an old host never sees a hello and behaves as before.
//!
//! One `sync`: (1) the watcher thread publishes everything the kernel had queued (see
//! `watch/drain.rs`); (2) each guest of the channels gets a new ID, larger than every earlier
//! one; its task writes what is pending for it and then `vfnotify.sync\tID`; (3) the guest daemon
//! answers `vfnotify.ack\tID` once every earlier line of the connection was handled by its
//! overlays and triggers. An ack is cumulative (it covers every ID up to it on that connection),
//! so a guest only needs to answer the latest. A guest that reconnects is sent every channel
//! whole first; a sync pending across the reconnection is sent again after that, so its ack
//! covers the rescan.
//!
//! Whatever a guest sends back is bounded ([`crate::protocol::MAX_LINE`] per line, through the
//! guest daemon's own decoder): anything but a hello or an ack of an ID sent on that connection
//! is a logged, counted drop; an endless line drops the connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::control::BarrierStatus;
use super::guest::Guest;
use super::state::{Hub, lock};
use crate::control::reply::{ErrorBody, ErrorClass, error};

use crate::protocol::{Dropped, LineDecoder, MAX_LINE};
use crate::sys::queue::EventFd;

pub use crate::protocol::{ACK, HELLO, HELLO_LINE, SYNC, VERSION, sync_line};
/// A guest connected this long without answering the hello does not acknowledge (it runs a tool
/// that reads lines only): a sync does not wait for it any longer.
pub const HELLO_WAIT: Duration = Duration::from_secs(2);
/// Default `--timeout` of `vfnotify host sync`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// The watcher's drain requests.

/// Requests for the watcher thread to publish what the kernel has queued; an eventfd wakes it.
#[derive(Debug)]
pub struct DrainQueue {
    requests: Mutex<Vec<oneshot::Sender<()>>>,
    wake: Option<EventFd>,
}

impl Default for DrainQueue {
    fn default() -> Self {
        let wake = EventFd::new()
            .map_err(|e| tracing::warn!(error = %e, "no eventfd: a sync waits for the watcher's next tick"))
            .ok();
        DrainQueue {
            requests: Mutex::new(Vec::new()),
            wake,
        }
    }
}

impl DrainQueue {
    /// Ask for a drain; completes once it is done.
    pub fn request(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        lock(&self.requests).push(tx);
        if let Some(w) = &self.wake {
            w.signal();
        }
        rx
    }

    /// The descriptor the watcher polls.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.wake.as_ref().map(|w| w.as_fd())
    }

    /// Whether a drain is asked for.
    pub fn waiting(&self) -> bool {
        !lock(&self.requests).is_empty()
    }

    /// The requests to complete once drained.
    pub fn take(&self) -> Vec<oneshot::Sender<()>> {
        if let Some(w) = &self.wake {
            w.clear();
        }
        std::mem::take(&mut *lock(&self.requests))
    }
}

// ---------------------------------------------------------------------------------------------
// One guest's barrier state.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    /// When the current connection came up (`None`: not connected).
    up_since: Option<Instant>,
    /// Whether the guest answered the hello on this connection.
    negotiated: bool,
    /// The highest ID sent on this connection (0: none).
    sent: u64,
    /// The highest ID acknowledged (any connection).
    acked: u64,
}

/// A guest's barrier state and counters.
#[derive(Debug)]
pub struct GuestSync {
    next_id: AtomicU64,
    /// The highest ID asked for.
    wanted: AtomicU64,
    state: Mutex<State>,
    /// Bumped on every change of `state`.
    changed: watch::Sender<u64>,
    decoder: Mutex<LineDecoder>,
    pub hellos: AtomicU64,
    pub syncs_sent: AtomicU64,
    pub acks: AtomicU64,
    /// Reply lines dropped: not a hello or an ack, malformed, or an ack of an ID never sent.
    pub bad_replies: AtomicU64,
    /// Reply lines longer than the line limit (the connection was dropped).
    pub overlong_replies: AtomicU64,
}

impl Default for GuestSync {
    fn default() -> Self {
        GuestSync {
            next_id: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            decoder: Mutex::new(LineDecoder::new()),
            hellos: AtomicU64::new(0),
            syncs_sent: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            bad_replies: AtomicU64::new(0),
            overlong_replies: AtomicU64::new(0),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl GuestSync {
    fn update(&self, f: impl FnOnce(&mut State)) {
        let changed = {
            let mut s = lock(&self.state);
            let before = *s;
            f(&mut s);
            *s != before
        };
        if changed {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn snapshot(&self) -> State {
        *lock(&self.state)
    }

    /// A connection came up: nothing negotiated or sent on it yet.
    pub fn on_connect(&self) {
        *lock(&self.decoder) = LineDecoder::new();
        self.update(|s| {
            s.up_since = Some(Instant::now());
            s.negotiated = false;
            s.sent = 0;
        });
    }

    /// The connection ended.
    pub fn on_disconnect(&self) {
        self.update(|s| {
            s.up_since = None;
            s.negotiated = false;
            s.sent = 0;
        });
    }

    /// A new sync ID for this guest (the caller then wakes the guest's task).
    fn request(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.wanted.fetch_max(id, Ordering::Relaxed);
        id
    }

    /// The ID to send now, if any: the guest negotiated and an ID not yet sent on this
    /// connection nor acknowledged is wanted. Marked sent (an ack may come back before the
    /// write returns).
    pub fn take_due(&self) -> Option<u64> {
        let wanted = self.wanted.load(Ordering::Relaxed);
        let mut due = None;
        self.update(|s| {
            if s.negotiated && wanted > s.sent.max(s.acked) {
                s.sent = wanted;
                due = Some(wanted);
            }
        });
        if due.is_some() {
            bump(&self.syncs_sent);
        }
        due
    }

    /// What the guest sent back on this connection. `Err`: drop the connection (a line longer
    /// than the limit).
    pub fn replies(&self, guest: &str, bytes: &[u8]) -> Result<(), String> {
        let items = lock(&self.decoder).push(bytes);
        for item in items {
            match item {
                Ok(n) => self.reply(guest, &n.channel, n.path.as_deref()),
                Err(Dropped::Overlong) => {
                    bump(&self.overlong_replies);
                    tracing::warn!(
                        guest,
                        max = MAX_LINE,
                        "guest sent a line longer than the limit; dropping the connection"
                    );
                    return Err(format!("guest sent a line longer than {MAX_LINE} bytes"));
                }
                Err(Dropped::Line(e)) => {
                    bump(&self.bad_replies);
                    tracing::debug!(guest, error = %e, "malformed reply line dropped");
                }
            }
        }
        Ok(())
    }

    fn reply(&self, guest: &str, channel: &str, arg: Option<&str>) {
        match (channel, arg) {
            (HELLO, Some(v)) if v.parse::<u32>().is_ok_and(|v| v >= 1) => {
                bump(&self.hellos);
                let mut first = false;
                self.update(|s| {
                    first = !s.negotiated;
                    s.negotiated = true;
                });
                if first {
                    tracing::info!(guest, version = v, "guest acknowledges syncs");
                }
            }
            (ACK, Some(id)) => {
                let id = id.parse::<u64>().unwrap_or(0);
                let mut ok = false;
                self.update(|s| {
                    if id > 0 && id <= s.sent {
                        ok = true;
                        s.acked = s.acked.max(id);
                    }
                });
                if ok {
                    bump(&self.acks);
                } else {
                    bump(&self.bad_replies);
                    tracing::debug!(
                        guest,
                        id,
                        "ack of an ID not sent on this connection; dropped"
                    );
                }
            }
            _ => {
                bump(&self.bad_replies);
                tracing::debug!(guest, channel, "unexpected reply line dropped");
            }
        }
    }

    /// The guest's `barrier` object in `status`.
    pub fn status(&self) -> BarrierStatus {
        let s = self.snapshot();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BarrierStatus {
            acknowledges: s.negotiated,
            acked: s.acked,
            hellos: n(&self.hellos),
            syncs_sent: n(&self.syncs_sent),
            acks: n(&self.acks),
            bad_replies: n(&self.bad_replies),
            overlong_replies: n(&self.overlong_replies),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The `sync` request and its report.

/// `sync {channels?, timeout_ms?}` (no channel: every channel).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncArgs {
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What became of one guest.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It handled every earlier change.
    Acknowledged,
    /// It is connected but never answered the hello: it runs a tool that reads lines only.
    NotAcknowledging,
    /// It answered the hello but did not acknowledge in time.
    TimedOut,
    /// It was not connected (at the timeout).
    NotConnected,
}

impl Outcome {
    pub fn text(self) -> &'static str {
        match self {
            Outcome::Acknowledged => "acknowledged",
            Outcome::NotAcknowledging => {
                "does not acknowledge (it never answered the hello: a guest that reads lines only)"
            }
            Outcome::TimedOut => "timed out (it acknowledges, but did not in time)",
            Outcome::NotConnected => "not connected",
        }
    }
}

/// One guest in a [`SyncReport`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuestReport {
    pub guest: String,
    /// Its channels among those synced.
    pub channels: Vec<String>,
    pub outcome: Outcome,
    /// Milliseconds from the start of the sync to its acknowledgement.
    pub ms: Option<f64>,
}

/// The result of `sync`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncReport {
    /// Every guest acknowledged.
    pub ok: bool,
    pub channels: Vec<String>,
    /// Milliseconds the watcher took to publish what it had queued.
    pub drain_ms: f64,
    /// Milliseconds in all.
    pub elapsed_ms: f64,
    pub guests: Vec<GuestReport>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Wait for one guest's acknowledgement of `id`, until `deadline`.
async fn wait_guest(g: Arc<Guest>, id: u64, start: Instant, deadline: Instant) -> GuestReport {
    let mut rx = g.sync.changed.subscribe();
    let outcome = loop {
        let s = g.sync.snapshot();
        if s.acked >= id {
            break Outcome::Acknowledged;
        }
        let now = Instant::now();
        let hello_by = s.up_since.filter(|_| !s.negotiated).map(|t| t + HELLO_WAIT);
        if hello_by.is_some_and(|t| now >= t) {
            break Outcome::NotAcknowledging;
        }
        if now >= deadline {
            break match (s.up_since, s.negotiated) {
                (None, _) => Outcome::NotConnected,
                (Some(_), false) => Outcome::NotAcknowledging,
                (Some(_), true) => Outcome::TimedOut,
            };
        }
        let wake = hello_by.map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            r = rx.changed() => if r.is_err() { break Outcome::NotConnected },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    };
    GuestReport {
        guest: g.name.clone(),
        channels: Vec::new(),
        outcome,
        ms: (outcome == Outcome::Acknowledged).then(|| ms(start.elapsed())),
    }
}

/// The host's `sync` request.
pub async fn serve(hub: &Hub, args: SyncArgs) -> Result<SyncReport, ErrorBody> {
    let mut chans: Vec<usize> = Vec::new();
    for name in &args.channels {
        match hub.channels.iter().position(|c| c.name == *name) {
            Some(i) if !chans.contains(&i) => chans.push(i),
            Some(_) => {}
            None => {
                return Err(error(
                    ErrorClass::UnknownChannel,
                    format!("this host watches no channel {name:?}"),
                ));
            }
        }
    }
    if chans.is_empty() {
        chans = (0..hub.channels.len()).collect();
    }
    let timeout = args
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
        .min(MAX_TIMEOUT);
    let start = Instant::now();
    let deadline = start + timeout;
    match tokio::time::timeout_at(deadline.into(), hub.drain.request()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(error(ErrorClass::Stopped, "the watcher stopped")),
        Err(_) => {
            return Err(error(
                ErrorClass::Timeout,
                format!(
                    "the watcher did not publish its queue within {} ms",
                    timeout.as_millis()
                ),
            ));
        }
    }
    let drain_ms = ms(start.elapsed());
    let mut guests: Vec<usize> = Vec::new();
    for ch in &chans {
        for g in &hub.channels[*ch].guests {
            if !guests.contains(g) {
                guests.push(*g);
            }
        }
    }
    let mut waits = Vec::new();
    for gi in &guests {
        let Some(g) = hub.guests.get(*gi) else {
            continue;
        };
        let id = g.sync.request();
        g.wake.notify_one();
        let names: Vec<String> = g
            .channels
            .iter()
            .filter(|c| chans.contains(c))
            .filter_map(|c| hub.channels.get(*c))
            .map(|c| c.name.clone())
            .collect();
        waits.push((
            names,
            tokio::spawn(wait_guest(Arc::clone(g), id, start, deadline)),
        ));
    }
    let mut reports = Vec::new();
    for (names, w) in waits {
        if let Ok(mut r) = w.await {
            r.channels = names;
            reports.push(r);
        }
    }
    let report = SyncReport {
        ok: reports.iter().all(|r| r.outcome == Outcome::Acknowledged),
        channels: chans
            .iter()
            .map(|c| hub.channels[*c].name.clone())
            .collect(),
        drain_ms,
        elapsed_ms: ms(start.elapsed()),
        guests: reports,
    };
    tracing::debug!(ok = report.ok, elapsed_ms = report.elapsed_ms, "sync done");
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// `vfnotify host sync`.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sync::{parse_timeout, render};

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "-1s", "1h", "abc", "2 hours", "99999m"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    /// Replies: a hello negotiates, an ack counts only for an ID sent on this connection,
    /// garbage is a counted drop, an endless line drops the connection.
    #[test]
    fn replies_are_checked_and_bounded() {
        let g = GuestSync::default();
        g.on_connect();
        let id = g.request();
        assert_eq!(g.take_due(), None, "nothing is sent before the hello");
        g.replies("g", b"vfnotify.hello\t1\n").unwrap();
        assert!(g.snapshot().negotiated);
        assert_eq!(g.take_due(), Some(id));
        assert_eq!(g.take_due(), None, "sent once");
        g.replies("g", b"vfnotify.ack\t99\n\xff\xfe\nnoise\nvfnotify.ack\tx\n")
            .unwrap();
        assert_eq!(g.snapshot().acked, 0);
        assert_eq!(g.bad_replies.load(Ordering::Relaxed), 4);
        g.replies("g", b"vfnotify.ack\t").unwrap();
        g.replies("g", format!("{id}\n").as_bytes()).unwrap();
        assert_eq!(g.snapshot().acked, id);
        // A reconnection: the ID is not sent again once acknowledged; a newer one is, after the
        // hello.
        g.on_disconnect();
        g.on_connect();
        let id2 = g.request();
        assert_eq!(g.take_due(), None);
        g.replies("g", b"vfnotify.hello\t1\n").unwrap();
        assert_eq!(g.take_due(), Some(id2));
        let long = vec![b'a'; MAX_LINE * 3];
        assert!(g.replies("g", &long).is_err());
        assert_eq!(g.overlong_replies.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reports_round_trip_through_json() {
        let r = SyncReport {
            ok: false,
            channels: vec!["docs".into()],
            drain_ms: 0.1,
            elapsed_ms: 3.0,
            guests: vec![
                GuestReport {
                    guest: "unix:/a".into(),
                    channels: vec!["docs".into()],
                    outcome: Outcome::Acknowledged,
                    ms: Some(1.0),
                },
                GuestReport {
                    guest: "unix:/b".into(),
                    channels: vec!["docs".into()],
                    outcome: Outcome::NotAcknowledging,
                    ms: None,
                },
            ],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["guests"][1]["outcome"], "not-acknowledging");
        assert_eq!(serde_json::from_value::<SyncReport>(v).unwrap(), r);
        let text = render(&r);
        assert!(text.contains("1 of 2 guests acknowledged"), "{text}");
        assert!(
            text.contains("unix:/b [docs]: does not acknowledge"),
            "{text}"
        );
    }
}
