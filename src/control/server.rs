//! The control socket server: JSON requests, one per line, answered on the same connection;
//! subscribed overlays and watches also receive `{"event": ...}` messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc};

use super::glob::Glob;
use super::{MAX_MESSAGE, PROTOCOL_VERSION};
use crate::daemon::state::{Counters, Popped, Shared, Subscriber};
use crate::daemon::watch::{self, Change, Taken, Target, Watch};
use crate::protocol::{validate_channel, validate_relpath};
use crate::transport::UnixListener;

/// Most concurrent control connections.
pub const MAX_CONTROL_CONNECTIONS: usize = 256;
/// How long a `notify` request waits for overlays and triggers.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
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

/// An error response body.
fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"class": class, "desc": desc.into()})
}

fn response(id: &Option<Value>, body: Result<Value, Value>) -> String {
    let mut m = serde_json::Map::new();
    match body {
        Ok(r) => m.insert("result".into(), r),
        Err(e) => m.insert("error".into(), e),
    };
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    s
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
        line.clear();
        match (&mut reader)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_MESSAGE {
            Counters::bump(&shared.counters.control_errors);
            let body = error(
                "overlong",
                format!("request longer than {MAX_MESSAGE} bytes; closing"),
            );
            let _ = conn.tx.send(response(&None, Err(body))).await;
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
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
        let req: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                Counters::bump(&self.shared.counters.control_errors);
                return self
                    .reply(&None, Err(error("parse", format!("malformed JSON: {e}"))))
                    .await;
            }
        };
        let id = req.get("id").cloned();
        let Some(cmd) = req.get("cmd").and_then(Value::as_str) else {
            Counters::bump(&self.shared.counters.control_errors);
            return self
                .reply(
                    &id,
                    Err(error("bad-request", "a request needs a string `cmd`")),
                )
                .await;
        };
        let empty = serde_json::Map::new();
        let args = match req.get("args") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                Counters::bump(&self.shared.counters.control_errors);
                return self
                    .reply(&id, Err(error("bad-request", "`args` must be an object")))
                    .await;
            }
        };
        let result = match cmd {
            "hello" => hello(args),
            "status" => Ok(self.shared.status()),
            "notify" => return self.notify(id, args).await,
            "subscribe" => self.subscribe(args),
            "handled" => self.handled(args).await,
            "watch" => self.watch(args),
            "unwatch" => self.unwatch(args).await,
            other => Err(error(
                "unknown-command",
                format!("unknown command {other:?}"),
            )),
        };
        if result.is_err() {
            Counters::bump(&self.shared.counters.control_errors);
        }
        self.reply(&id, result).await
    }

    async fn reply(&self, id: &Option<Value>, body: Result<Value, Value>) -> bool {
        self.tx.send(response(id, body)).await.is_ok()
    }

    async fn notify(&mut self, id: Option<Value>, args: &serde_json::Map<String, Value>) -> bool {
        let parsed = (|| {
            let channel = args
                .get("channel")
                .and_then(Value::as_str)
                .ok_or_else(|| error("bad-request", "notify needs a string `channel`"))?;
            validate_channel(channel)
                .map_err(|e| error("bad-channel", format!("{channel:?}: {e}")))?;
            let mut paths = Vec::new();
            match args.get("paths") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        let p = item
                            .as_str()
                            .ok_or_else(|| error("bad-path", "`paths` must hold strings"))?;
                        let norm = validate_relpath(p)
                            .map_err(|e| error("bad-path", format!("{p:?}: {e}")))?;
                        if !paths.contains(&norm) {
                            paths.push(norm);
                        }
                    }
                }
                Some(_) => return Err(error("bad-path", "`paths` must be an array of strings")),
            }
            Ok((channel.to_string(), paths))
        })();
        let (channel, paths) = match parsed {
            Ok(x) => x,
            Err(e) => {
                Counters::bump(&self.shared.counters.control_errors);
                return self.reply(&id, Err(e)).await;
            }
        };
        // Bound the waiting tasks a client can start: past the limit, stop reading its requests.
        let Ok(permit) = Arc::clone(&self.pending).acquire_owned().await else {
            return false;
        };
        let wait = self.shared.dispatch(&channel, paths, true);
        if !wait.known {
            return self
                .reply(
                    &id,
                    Err(error(
                        "unknown-channel",
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
            let body = match tokio::time::timeout(NOTIFY_TIMEOUT, work).await {
                Ok(triggers) => Ok(json!({
                    "channel": channel,
                    "overlays": total,
                    "handled": handled.load(Ordering::Relaxed),
                    "triggers": triggers,
                })),
                Err(_) => Err(error(
                    "timeout",
                    format!(
                        "not handled within {} s: {} of {} overlays acknowledged",
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

    fn subscribe(&mut self, args: &serde_json::Map<String, Value>) -> Result<Value, Value> {
        if self.sub.is_some() {
            return Err(error(
                "already-subscribed",
                "this connection already has a subscription",
            ));
        }
        let channel = args
            .get("channel")
            .and_then(Value::as_str)
            .ok_or_else(|| error("bad-request", "subscribe needs a string `channel`"))?;
        validate_channel(channel).map_err(|e| error("bad-channel", format!("{channel:?}: {e}")))?;
        let mountpoint = args
            .get("mountpoint")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or_else(|| error("bad-request", "subscribe needs an absolute `mountpoint`"))?;
        let mountpoint = std::path::absolute(&mountpoint).unwrap_or(mountpoint);
        let pid = match args.get("pid") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| error("bad-request", "`pid` must be a process id"))?,
        };
        let sub = self.shared.subscribe(channel.to_string(), mountpoint, pid);
        let id = sub.id;
        let forward = Arc::clone(&sub);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                match forward.pop() {
                    Popped::Closed => break,
                    Popped::Event(ev) => {
                        let mut line = ev.to_json().to_string();
                        line.push('\n');
                        if tx.send(line).await.is_err() {
                            break;
                        }
                    }
                    Popped::Empty => forward.wake.notified().await,
                }
            }
        });
        self.sub = Some(sub);
        Ok(json!({"subscription": id}))
    }

    /// `watch {channel | mountpoint, glob?}` → `{"watch": ID, "overlays": N}`; the changes the
    /// overlays report then arrive as events on this connection.
    fn watch(&mut self, args: &serde_json::Map<String, Value>) -> Result<Value, Value> {
        if self.watches.len() >= watch::MAX_WATCHES_PER_CONNECTION {
            return Err(error(
                "too-many-watches",
                format!(
                    "at most {} watches per connection",
                    watch::MAX_WATCHES_PER_CONNECTION
                ),
            ));
        }
        let text = |k: &str| -> Result<Option<&str>, Value> {
            match args.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(error("bad-request", format!("`{k}` must be a string"))),
            }
        };
        let target = match (text("channel")?, text("mountpoint")?) {
            (Some(channel), None) => {
                validate_channel(channel)
                    .map_err(|e| error("bad-channel", format!("{channel:?}: {e}")))?;
                Target::Channel(channel.to_string())
            }
            (None, Some(mp)) => {
                let p = PathBuf::from(mp);
                if !p.is_absolute() {
                    return Err(error("bad-request", "`mountpoint` must be absolute"));
                }
                let p = std::path::absolute(&p).unwrap_or(p);
                let target = Target::Mountpoint(p);
                if self.shared.overlays_of(&target) == 0 {
                    return Err(error(
                        "unknown-mountpoint",
                        format!("no overlay linked to this daemon is mounted at {mp:?}"),
                    ));
                }
                target
            }
            _ => {
                return Err(error(
                    "bad-request",
                    "watch needs a string `channel` or an absolute `mountpoint` (one of them)",
                ));
            }
        };
        let glob = text("glob")?
            .map(Glob::new)
            .transpose()
            .map_err(|e| error("bad-glob", e.to_string()))?;
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
                        let mut line = ev.to_string();
                        line.push('\n');
                        if tx.send(line).await.is_err() {
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
        Ok(json!({"watch": id, "overlays": overlays}))
    }

    /// `unwatch {watch}`: once answered, no further event of that watch follows.
    async fn unwatch(&mut self, args: &serde_json::Map<String, Value>) -> Result<Value, Value> {
        let id = args
            .get("watch")
            .and_then(Value::as_u64)
            .ok_or_else(|| error("bad-request", "unwatch needs a numeric `watch`"))?;
        let Some(w) = self.watches.remove(&id) else {
            return Err(error(
                "unknown-watch",
                format!("no watch {id} on this connection"),
            ));
        };
        self.shared.remove_watch(id);
        // Wait out an event being sent right now, so that none follows the response.
        drop(w.sending.lock().await);
        Ok(w.totals())
    }

    async fn handled(&mut self, args: &serde_json::Map<String, Value>) -> Result<Value, Value> {
        let Some(sub) = &self.sub else {
            return Err(error(
                "not-subscribed",
                "`handled` needs a subscription on this connection",
            ));
        };
        let mut seqs = Vec::new();
        if let Some(v) = args.get("seq") {
            seqs.push(
                v.as_u64()
                    .ok_or_else(|| error("bad-request", "`seq` must be a number"))?,
            );
        }
        if let Some(v) = args.get("seqs") {
            let items = v
                .as_array()
                .ok_or_else(|| error("bad-request", "`seqs` must be an array"))?;
            for i in items {
                seqs.push(
                    i.as_u64()
                        .ok_or_else(|| error("bad-request", "`seqs` must hold numbers"))?,
                );
            }
        }
        let mut changes = Vec::new();
        match args.get("changes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match Change::from_json(item) {
                        Some(c) => changes.push(c),
                        None => tracing::debug!(change = %item, "malformed change record ignored"),
                    }
                }
            }
            Some(_) => return Err(error("bad-request", "`changes` must be an array")),
        }
        // An empty `seqs` with `stats` or `changes` is a report (after the rescan that follows
        // linking, or the first parts of a report split to fit the message limit).
        if seqs.is_empty() && args.get("stats").is_none() && args.get("changes").is_none() {
            return Err(error(
                "bad-request",
                "`handled` needs `seq`, `seqs`, `stats` or `changes`",
            ));
        }
        // Watchers first: once `notify` returns, the events are queued for every watch.
        let sub = Arc::clone(sub);
        self.shared.publish_changes(&sub, &changes).await;
        sub.ack(&seqs, args.get("stats").cloned());
        Ok(json!({}))
    }
}

fn hello(args: &serde_json::Map<String, Value>) -> Result<Value, Value> {
    if let Some(v) = args.get("protocol") {
        let theirs = v
            .as_str()
            .ok_or_else(|| error("bad-request", "`protocol` must be a string like \"1.0\""))?;
        let major = |s: &str| s.split('.').next().unwrap_or_default().trim().to_string();
        if major(theirs) != major(PROTOCOL_VERSION) {
            return Err(error(
                "incompatible-version",
                format!(
                    "client speaks control protocol {theirs}, this daemon speaks {PROTOCOL_VERSION}; major versions differ"
                ),
            ));
        }
    }
    Ok(json!({"protocol": PROTOCOL_VERSION, "program": crate::daemon::PROGRAM}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_versions() {
        let mut args = serde_json::Map::new();
        assert_eq!(hello(&args).unwrap()["protocol"], "1.0");
        args.insert("protocol".into(), json!("1.7"));
        assert!(hello(&args).is_ok());
        args.insert("protocol".into(), json!("2.0"));
        assert_eq!(hello(&args).unwrap_err()["class"], "incompatible-version");
        args.insert("protocol".into(), json!(2));
        assert_eq!(hello(&args).unwrap_err()["class"], "bad-request");
    }

    #[test]
    fn responses_carry_the_id() {
        let r = response(&Some(json!(7)), Ok(json!({})));
        assert_eq!(r, "{\"id\":7,\"result\":{}}\n");
        let r = response(&None, Err(error("parse", "x")));
        assert!(r.starts_with("{\"error\""));
    }
}
