//! The control socket server: JSON requests, one per line, answered on the same connection;
//! subscribed overlays and watches also receive `{"event": ...}` messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc};

use super::state::{Counters, Popped, Shared, Subscriber};
use super::watch::{self, Change, Taken, Target, Watch};
use crate::control::reply::{
    Done, ErrorBody, ErrorClass, HelloResult, NotifyResult, SubscribeResult, WatchResult,
    WatchTotals, error, response,
};
use crate::control::request::{OverlayStats, Request, parse_request};
use crate::control::wire::{EventMsg, LinkEvent, Scope};
use crate::control::{Read, read_request};
use crate::glob::Glob;
use crate::transport::UnixListener;

/// Most concurrent control connections.
pub const MAX_CONTROL_CONNECTIONS: usize = 256;
pub use crate::control::{NOTIFY_MAX, NOTIFY_TIMEOUT};
/// Outgoing messages buffered per connection (beyond that, the connection's reader waits).
const OUTGOING: usize = 64;
/// `notify` requests in flight per connection (beyond that, the connection's reader waits).
pub const MAX_PENDING_NOTIFY: usize = 64;

struct Slot(Arc<Shared>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.control_active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accept control clients forever.
pub async fn accept_loop(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        let stream = match listener.inner().accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                Counters::bump(&shared.counters.accept_errors);
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let before = shared.control_active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&shared));
        if before >= MAX_CONTROL_CONNECTIONS {
            Counters::bump(&shared.counters.control_refused);
            tracing::warn!(
                max = MAX_CONTROL_CONNECTIONS,
                "too many control connections; refused"
            );
            continue;
        }
        Counters::bump(&shared.counters.control_connections);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            serve(shared, stream).await;
            drop(slot);
        });
    }
}

struct Conn {
    shared: Arc<Shared>,
    tx: mpsc::Sender<String>,
    sub: Option<Arc<Subscriber>>,
    watches: BTreeMap<u64, Arc<Watch>>,
    pending: Arc<Semaphore>,
}

/// Most bytes the writer gathers into one write.
const WRITE_BATCH: usize = 64 * 1024;

async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<String>(OUTGOING);
    let writer = tokio::spawn(async move {
        let mut batch = String::new();
        while let Some(line) = rx.recv().await {
            // Gather what is already waiting (a burst of events) into one write.
            batch.clear();
            batch.push_str(&line);
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.push_str(&more),
                    Err(_) => break,
                }
            }
            if wr.write_all(batch.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut conn = Conn {
        shared: Arc::clone(&shared),
        tx,
        sub: None,
        watches: BTreeMap::new(),
        pending: Arc::new(Semaphore::new(MAX_PENDING_NOTIFY)),
    };
    let mut reader = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        match read_request(&mut reader, &mut line).await {
            Read::End => break,
            Read::Overlong(body) => {
                Counters::bump(&shared.counters.control_errors);
                let _ = conn.tx.send(body).await;
                break;
            }
            Read::Blank => continue,
            Read::Line => {}
        }
        if !conn.handle(&line).await {
            break;
        }
    }
    if let Some(sub) = conn.sub.take() {
        shared.unsubscribe(sub.id);
    }
    for id in std::mem::take(&mut conn.watches).into_keys() {
        shared.remove_watch(id);
    }
    drop(conn);
    let _ = writer.await;
}

impl Conn {
    /// Handle one request; returns false when the connection should close.
    async fn handle(&mut self, line: &[u8]) -> bool {
        let (id, req) = parse_request(line);
        let req = match req {
            Ok(r) => r,
            Err(e) => return self.reply::<Done>(&id, Err(e)).await,
        };
        match req {
            Request::Hello => self.reply(&id, Ok(HelloResult::ours())).await,
            Request::Status => self.reply(&id, Ok(self.shared.status())).await,
            Request::Notify { channel, scope } => self.notify(id, channel, scope).await,
            Request::Subscribe {
                channel,
                mountpoint,
                pid,
            } => {
                let r = self.subscribe(channel, mountpoint, pid);
                self.reply(&id, r).await
            }
            Request::Handled {
                seqs,
                stats,
                changes,
                ..
            } => {
                let r = self.handled(seqs, stats, changes).await;
                self.reply(&id, r).await
            }
            Request::Progress => {
                let r = match &self.sub {
                    Some(sub) => {
                        sub.heard();
                        Ok(Done {})
                    }
                    None => Err(error(
                        ErrorClass::NotSubscribed,
                        "`progress` needs a subscription on this connection",
                    )),
                };
                self.reply(&id, r).await
            }
            Request::Watch { target, glob } => {
                let r = self.watch(target, glob);
                self.reply(&id, r).await
            }
            Request::Unwatch { watch } => {
                let r = self.unwatch(watch).await;
                self.reply(&id, r).await
            }
        }
    }

    /// Send one response (an error is counted); false when the connection is gone.
    async fn reply<R: Serialize>(&self, id: &Option<Value>, body: Result<R, ErrorBody>) -> bool {
        if body.is_err() {
            Counters::bump(&self.shared.counters.control_errors);
        }
        self.tx.send(response(id, body)).await.is_ok()
    }

    async fn notify(&mut self, id: Option<Value>, channel: String, scope: Scope) -> bool {
        // Bound the waiting tasks a client can start: past the limit, stop reading its requests.
        let Ok(permit) = Arc::clone(&self.pending).acquire_owned().await else {
            return false;
        };
        let wait = self.shared.dispatch(&channel, scope, true);
        if !wait.known {
            return self
                .reply::<Done>(
                    &id,
                    Err(error(
                        ErrorClass::UnknownChannel,
                        format!("channel {channel:?} is neither mapped nor followed by an overlay"),
                    )),
                )
                .await;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let total = wait.overlays.len();
            let handled = Arc::new(AtomicUsize::new(0));
            let h = Arc::clone(&handled);
            let work = async move {
                for rx in wait.overlays {
                    if rx.await.is_ok() {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                }
                match wait.triggers {
                    Some(rx) => rx.await.unwrap_or(0),
                    None => 0,
                }
            };
            // NOTIFY_TIMEOUT without word from any overlay it waits for (a long rescan reports
            // progress), and NOTIFY_MAX in all.
            let subs = wait.subs;
            let start = tokio::time::Instant::now();
            let heard_lately = move || {
                subs.iter().any(|s| s.quiet_for() < NOTIFY_TIMEOUT) && start.elapsed() < NOTIFY_MAX
            };
            let body = match with_progress(work, heard_lately).await {
                Some(triggers) => Ok(NotifyResult {
                    channel,
                    overlays: total as u64,
                    handled: handled.load(Ordering::Relaxed) as u64,
                    triggers,
                }),
                None => Err(error(
                    ErrorClass::Timeout,
                    format!(
                        "not handled (no progress for {} s): {} of {} overlays acknowledged",
                        NOTIFY_TIMEOUT.as_secs(),
                        handled.load(Ordering::Relaxed),
                        total
                    ),
                )),
            };
            let _ = tx.send(response(&id, body)).await;
            drop(permit);
        });
        true
    }

    fn subscribe(
        &mut self,
        channel: String,
        mountpoint: PathBuf,
        pid: u32,
    ) -> Result<SubscribeResult, ErrorBody> {
        if self.sub.is_some() {
            return Err(error(
                ErrorClass::AlreadySubscribed,
                "this connection already has a subscription",
            ));
        }
        let sub = self.shared.subscribe(channel, mountpoint, pid);
        let id = sub.id;
        let forward = Arc::clone(&sub);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                match forward.pop() {
                    Popped::Closed => break,
                    Popped::Event(ev) => {
                        if tx.send(EventMsg::line(ev.wire())).await.is_err() {
                            break;
                        }
                    }
                    Popped::Watches(globs) => {
                        let line = EventMsg::line(LinkEvent::Watches { globs });
                        if tx.send(line).await.is_err() {
                            break;
                        }
                    }
                    Popped::Feed(exact) => {
                        let line = EventMsg::line(LinkEvent::Feed { exact });
                        if tx.send(line).await.is_err() {
                            break;
                        }
                    }
                    Popped::Empty => forward.wake.notified().await,
                }
            }
        });
        self.sub = Some(sub);
        Ok(SubscribeResult { subscription: id })
    }

    /// `watch {channel | mountpoint, glob?}` → `{"watch": ID, "overlays": N}`; the changes the
    /// overlays report then arrive as events on this connection.
    fn watch(&mut self, target: Target, glob: Option<Glob>) -> Result<WatchResult, ErrorBody> {
        if self.watches.len() >= watch::MAX_WATCHES_PER_CONNECTION {
            return Err(error(
                ErrorClass::TooManyWatches,
                format!(
                    "at most {} watches per connection",
                    watch::MAX_WATCHES_PER_CONNECTION
                ),
            ));
        }
        if let Target::Mountpoint(mp) = &target {
            if self.shared.overlays_of(&target) == 0 {
                return Err(error(
                    ErrorClass::UnknownMountpoint,
                    format!("no overlay linked to this daemon is mounted at {mp:?}"),
                ));
            }
        }
        let overlays = self.shared.overlays_of(&target);
        let w = self.shared.add_watch(target, glob);
        let id = w.id;
        let forward = Arc::clone(&w);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                let guard = forward.sending.lock().await;
                match forward.take() {
                    Taken::Closed => break,
                    Taken::Event(ev) => {
                        if tx.send(EventMsg::line(ev)).await.is_err() {
                            break;
                        }
                    }
                    Taken::Empty => {
                        drop(guard);
                        forward.wake.notified().await;
                    }
                }
            }
        });
        self.watches.insert(id, w);
        Ok(WatchResult {
            watch: id,
            overlays: overlays as u64,
        })
    }

    /// `unwatch {watch}`: once answered, no further event of that watch follows.
    async fn unwatch(&mut self, id: u64) -> Result<WatchTotals, ErrorBody> {
        let Some(w) = self.watches.remove(&id) else {
            return Err(error(
                ErrorClass::UnknownWatch,
                format!("no watch {id} on this connection"),
            ));
        };
        self.shared.remove_watch(id);
        // Wait out an event being sent right now, so that none follows the response.
        drop(w.sending.lock().await);
        Ok(w.totals())
    }

    async fn handled(
        &mut self,
        seqs: Vec<u64>,
        stats: Option<Option<OverlayStats>>,
        changes: Vec<Change>,
    ) -> Result<Done, ErrorBody> {
        let Some(sub) = &self.sub else {
            return Err(error(
                ErrorClass::NotSubscribed,
                "`handled` needs a subscription on this connection",
            ));
        };
        // Watchers first: once `notify` returns, the events are queued for every watch.
        let sub = Arc::clone(sub);
        self.shared.publish_changes(&sub, &changes).await;
        sub.ack(&seqs, stats);
        Ok(Done {})
    }
}

/// `work`'s output, or `None` once a check every [`NOTIFY_TIMEOUT`] finds `going_on` false.
async fn with_progress<T>(work: impl Future<Output = T>, going_on: impl Fn() -> bool) -> Option<T> {
    tokio::pin!(work);
    loop {
        match tokio::time::timeout(NOTIFY_TIMEOUT, &mut work).await {
            Ok(v) => return Some(v),
            Err(_) if going_on() => continue,
            Err(_) => return None,
        }
    }
}
