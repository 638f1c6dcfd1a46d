//! A small blocking client of the control socket (used by `notify`, `status`, `watch`, the
//! overlay's link and `vfnotify host status|sync`). Requests go out as the wire types of
//! [`super::request`] ([`Client::call`]); messages come back as JSON values, since responses and
//! events share the connection, and are read into [`super::reply`] and [`super::wire`] types by
//! whoever waits for them. [`Client::request`] sends a raw `cmd` and `args`, for tests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thiserror::Error;

use super::MAX_MESSAGE;
use super::reply::{Body, HelloResult, Response};
use super::request::{HandledArgs, HelloArgs, Reported, Wire};

/// Longest message accepted from the daemon (a `status` with many overlays is large).
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Errors of the client, named for the step that failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no daemon at {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("cannot send to the daemon: {0}")]
    Send(io::Error),
    #[error("cannot read from the daemon: {0}")]
    Receive(io::Error),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon sent a message longer than {MAX_REPLY} bytes")]
    Overlong,
    #[error("the daemon sent malformed JSON: {0}")]
    Parse(serde_json::Error),
    #[error("unexpected answer from the daemon: {0}")]
    Answer(serde_json::Error),
    #[error("request longer than {MAX_MESSAGE} bytes")]
    RequestTooLong,
    #[error("{class}: {desc}")]
    Remote { class: String, desc: String },
}

/// A connection to the daemon's control socket.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Client {
    /// Connect to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    /// Connect and check the protocol version with `hello`.
    pub fn connect_hello(path: &Path) -> Result<(Self, HelloResult), ClientError> {
        let mut c = Self::connect(path)?;
        let hello = c.call(&Wire::Hello(HelloArgs::ours()))?;
        Ok((c, hello))
    }

    /// Read timeout for every later read (`None`: wait forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(ClientError::Receive)
    }

    /// Send a request (a [`Wire`], or the host's) without waiting; returns its id. A `handled`
    /// report goes through [`Client::report`].
    pub fn send_wire<Q: Serialize>(&mut self, req: &Q) -> Result<u64, ClientError> {
        #[derive(Serialize)]
        struct Line<'a, Q> {
            #[serde(flatten)]
            req: &'a Q,
            id: u64,
        }
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::to_string(&Line { req, id }).map_err(ClientError::Answer)?;
        self.send_line(line)?;
        Ok(id)
    }

    /// Send a `handled` report without waiting; returns its id. One whose `changes` do not fit
    /// in one message is sent as several, in order: the first ones carry only changes, the last
    /// one the rest of the report (its id is returned).
    pub fn report(&mut self, args: HandledArgs) -> Result<u64, ClientError> {
        let mut parts = split_report(args, MAX_MESSAGE - 64);
        let last = parts.pop().unwrap_or_default();
        for part in parts {
            self.send_wire(&Wire::Handled(part))?;
        }
        self.send_wire(&Wire::Handled(last))
    }

    /// Send a raw request (`cmd` and `args` as given: tests send malformed ones) without
    /// waiting; returns its id. A `handled` whose `args` read as a report goes through
    /// [`Client::report`].
    pub fn send(&mut self, cmd: &str, args: Value) -> Result<u64, ClientError> {
        if cmd == "handled" {
            if let Ok(report) = serde_json::from_value::<HandledArgs>(args.clone()) {
                return self.report(report);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.send_line(json!({"cmd": cmd, "args": args, "id": id}).to_string())?;
        Ok(id)
    }

    fn send_line(&mut self, mut line: String) -> Result<(), ClientError> {
        if line.len() > MAX_MESSAGE {
            return Err(ClientError::RequestTooLong);
        }
        line.push('\n');
        self.write_reading(line.as_bytes())
    }

    /// Write `bytes` while reading whatever the daemon sends meanwhile (kept for [`recv`]):
    /// the daemon streams events on this connection and stops reading requests while they back
    /// up, so a client that only wrote could wait on it for ever while it waits on the client.
    ///
    /// [`recv`]: Client::recv
    fn write_reading(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut off = 0;
        while off < bytes.len() {
            self.stream
                .set_nonblocking(true)
                .map_err(ClientError::Send)?;
            let wrote = self.stream.write(bytes.get(off..).unwrap_or_default());
            let read = match &wrote {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(self.fill()),
                _ => None,
            };
            self.stream
                .set_nonblocking(false)
                .map_err(ClientError::Send)?;
            match wrote {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match read {
                    // Nothing to read either: the daemon is busy; try again shortly.
                    Some(Err(ClientError::Receive(e))) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Some(Err(e)) => return Err(e),
                    _ => {}
                },
                Err(e) => return Err(ClientError::Send(e)),
            }
        }
        Ok(())
    }

    /// Send a request and wait for its result, read as `R`, queueing events that arrive
    /// meanwhile (see [`Client::take_events`]). An error response becomes
    /// [`ClientError::Remote`].
    pub fn call<R: DeserializeOwned, Q: Serialize>(&mut self, req: &Q) -> Result<R, ClientError> {
        let id = self.send_wire(req)?;
        let result = self.wait(id)?;
        serde_json::from_value(result).map_err(ClientError::Answer)
    }

    /// [`Client::call`] for a raw request (see [`Client::send`]); its result as JSON.
    pub fn request(&mut self, cmd: &str, args: Value) -> Result<Value, ClientError> {
        let id = self.send(cmd, args)?;
        self.wait(id)
    }

    /// Wait for the response to request `id`.
    fn wait(&mut self, id: u64) -> Result<Value, ClientError> {
        loop {
            // From the connection, not the queue: queued events stay queued.
            let msg = self.recv_wire()?;
            if msg.get("event").is_some() {
                self.events.push_back(msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // a response to an earlier request nobody waits for
            }
            return into_result(msg);
        }
    }

    /// Events queued while waiting for responses.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    /// The next message (blocking).
    pub fn recv(&mut self) -> Result<Value, ClientError> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(ev);
        }
        self.recv_wire()
    }

    /// The next message from the connection (blocking).
    fn recv_wire(&mut self) -> Result<Value, ClientError> {
        loop {
            if let Some(msg) = self.take_line()? {
                return Ok(msg);
            }
            self.fill()?;
        }
    }

    /// At least one message (blocking), plus every further complete message already received
    /// or readable without blocking.
    pub fn recv_batch(&mut self) -> Result<Vec<Value>, ClientError> {
        let mut out: Vec<Value> = self.events.drain(..).collect();
        if out.is_empty() {
            out.push(self.recv()?);
        }
        loop {
            while let Some(msg) = self.take_line()? {
                out.push(msg);
            }
            // Anything more already readable?
            self.stream
                .set_nonblocking(true)
                .map_err(ClientError::Receive)?;
            let more = self.fill();
            self.stream
                .set_nonblocking(false)
                .map_err(ClientError::Receive)?;
            match more {
                Ok(()) => continue,
                Err(ClientError::Receive(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                // EOF or error after a batch: hand back the batch; the next call reports it.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn take_line(&mut self) -> Result<Option<Value>, ClientError> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line)
                .map(Some)
                .map_err(ClientError::Parse);
        }
        if self.buf.len() > MAX_REPLY {
            return Err(ClientError::Overlong);
        }
        Ok(None)
    }

    fn fill(&mut self) -> Result<(), ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::Receive(e)),
            }
        };
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(())
    }
}

/// Split a `handled` report so that each part serialises within `limit` bytes (when a single
/// change is too long, it is dropped). The last part keeps every other field.
pub fn split_report(mut args: HandledArgs, limit: usize) -> Vec<HandledArgs> {
    fn size<T: Serialize>(v: &T) -> usize {
        serde_json::to_string(v)
            .map(|s| s.len())
            .unwrap_or(usize::MAX)
    }
    if size(&args) <= limit {
        return vec![args];
    }
    let Some(Some(changes)) = args.changes.take() else {
        return vec![args];
    };
    // Room left for changes in the last part (the fields other than changes), and in the others.
    let rest = size(&args);
    let only = |chunk: Vec<Reported>| HandledArgs {
        changes: Some(Some(chunk)),
        ..HandledArgs::default()
    };
    let mut parts = Vec::new();
    let mut chunk: Vec<Reported> = Vec::new();
    let mut used = 0;
    let budget = limit.saturating_sub(32); // {"changes":[]} and separators
    for c in changes {
        let n = size(&c) + 1;
        if n > budget {
            continue;
        }
        if used + n > budget {
            parts.push(only(std::mem::take(&mut chunk)));
            used = 0;
        }
        chunk.push(c);
        used += n;
    }
    // The tail goes with the rest of the report when it fits, else on its own.
    if rest + used + 16 > limit && !chunk.is_empty() {
        parts.push(only(std::mem::take(&mut chunk)));
    }
    args.changes = Some(Some(chunk));
    parts.push(args);
    parts
}

/// Turn a response message into its result or a [`ClientError::Remote`].
pub fn into_result(msg: Value) -> Result<Value, ClientError> {
    match serde_json::from_value::<Response<Value>>(msg) {
        Ok(Response {
            body: Body::Result(r),
            ..
        }) => Ok(r),
        Ok(Response {
            body: Body::Error(e),
            ..
        }) => Err(ClientError::Remote {
            class: e.class.as_str().to_string(),
            desc: e.desc,
        }),
        Err(e) => Err(ClientError::Answer(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon writes events until its side of the socket is full and only then reads; a
    /// client sending a large report meanwhile must not wait for it for ever (it did: both sides
    /// blocked in write, the overlay's link stuck during a burst of host notifications).
    #[test]
    fn a_large_send_while_the_peer_writes_does_not_deadlock() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let ev = format!(
                "{}\n",
                json!({"event": {"type": "notify", "paths": ["x".repeat(200)]}})
            );
            for _ in 0..20_000 {
                b.write_all(ev.as_bytes()).unwrap();
            }
            let (mut got, mut lines) = (0usize, 0);
            let mut buf = [0u8; 65536];
            while lines < 5 {
                let n = b.read(&mut buf).unwrap();
                assert!(n > 0);
                got += n;
                lines += buf[..n].iter().filter(|&&c| c == b'\n').count();
            }
            got
        });
        let mut c = Client {
            stream: a,
            buf: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..5 {
                c.send("status", json!({"pad": "p".repeat(60_000)}))
                    .unwrap();
            }
            let mut events = 0;
            while events < 20_000 {
                let m = c.recv().unwrap();
                assert!(m.get("event").is_some());
                events += 1;
            }
            tx.send(events).unwrap();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("client and peer deadlocked"),
            20_000
        );
        assert!(peer.join().unwrap() >= 300_000);
    }

    fn split(r: Value, limit: usize) -> Vec<Value> {
        let r: HandledArgs = serde_json::from_value(r).unwrap();
        split_report(r, limit)
            .iter()
            .map(|p| serde_json::to_value(p).unwrap())
            .collect()
    }

    #[test]
    fn small_reports_are_sent_whole() {
        let r = json!({"seqs": [1], "stats": {}, "changes": [{"type": "create", "path": "a"}]});
        assert_eq!(split(r.clone(), 1000), vec![r]);
    }

    #[test]
    fn large_reports_are_split_in_order() {
        let changes: Vec<Value> = (0..500)
            .map(|i| json!({"type": "create", "path": format!("dir/file-{i:04}")}))
            .collect();
        let r = json!({"seqs": [4, 5], "stats": {"x": 1}, "changes": changes});
        let parts = split(r, 2000);
        assert!(parts.len() > 10);
        let mut all = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(serde_json::to_string(p).unwrap().len() <= 2000);
            let last = i + 1 == parts.len();
            assert_eq!(p.get("seqs").is_some(), last);
            assert_eq!(p.get("stats").is_some(), last);
            all.extend(p["changes"].as_array().unwrap().iter().cloned());
        }
        assert_eq!(all, changes);
        // A change too long for any part is dropped rather than breaking the link.
        let r = json!({"seqs": [1], "changes": [{"type": "create", "path": "x".repeat(5000)}, {"type": "create", "path": "b"}]});
        let parts = split(r, 2000);
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0]["changes"],
            json!([{"type": "create", "path": "b"}])
        );
    }

    #[test]
    fn results_and_errors_read_back() {
        assert_eq!(
            into_result(json!({"result": {"a": 1}, "id": 3})).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(into_result(json!({"result": null})).unwrap(), Value::Null);
        match into_result(json!({"error": {"class": "bad-path", "desc": "d"}, "id": 1})) {
            Err(ClientError::Remote { class, desc }) => {
                assert_eq!((class.as_str(), desc.as_str()), ("bad-path", "d"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            into_result(json!({"event": {}})),
            Err(ClientError::Answer(_))
        ));
    }
}
