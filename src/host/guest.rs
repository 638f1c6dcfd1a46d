//! One guest: a task that owns its persistent connection (connect, reconnect with backoff), tells
//! the guest `CHANNEL\n` for each of its channels after every (re)connection, then sends what the
//! watcher appends to those channels' logs: a change goes at once, unless [`BURST`] changes or
//! more were already sent within the current window; then the changes arriving are merged and
//! sent together when the window ends (trailing edge: the last change of a burst is always sent
//! after it happened). A guest that is down or slow only falls behind in the logs, which
//! collapses to whole-channel lines for it; it never
//! delays another guest.
//!
//! The task also reads the connection (today only to notice that the guest went away; a later
//! protocol version can answer the host on it), and writes a keepalive line when nothing was
//! sent for a while, so a guest daemon's idle timeout does not close a quiet connection (which
//! would cost a whole-channel rescan at the reconnection).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::KEEPALIVE_LINE;
use super::batch::{self, Taken};
use super::control::GuestStatus;
use super::state::{Hub, lock};
use crate::transport::{self, ConnectAddr};

/// First reconnection delay (doubled after each failure, up to the configured maximum).
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// How long one connection attempt (with the hybrid-vsock handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One channel's part of a batch larger than this is sent as `CHANNEL\n` instead.
pub const MAX_CHANNEL_BYTES: usize = 256 * 1024;
/// Changes sent at once within one window before later ones wait for the window's end: changes
/// made one after the other each reach the guest at once, a burst goes in one send per window.
pub const BURST: u64 = 8;

macro_rules! guest_stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one guest.
        #[derive(Debug, Default)]
        pub struct GuestStats { $($(#[$doc])* pub $name: AtomicU64,)* }
        impl GuestStats {
            /// Every counter by name.
            fn by_name(&self) -> std::collections::BTreeMap<String, u64> {
                let mut m = std::collections::BTreeMap::new();
                $(m.insert(stringify!($name).into(), self.$name.load(Ordering::Relaxed));)*
                m
            }
        }
    };
}

guest_stats!(
    /// Notification lines written (keepalives not included).
    lines_sent,
    /// Bytes written.
    bytes_sent,
    /// Writes (one per batch).
    writes,
    /// Changes merged into another line (duplicates, collapsed folders or channels).
    coalesced,
    /// Folders sent instead of more than `folder_limit` paths in them.
    collapsed_folders,
    /// Batches sent as `CHANNEL\n` because they held more than `channel_limit` paths.
    collapsed_channel,
    /// Times this guest fell behind a full channel log (lost changes): sent `CHANNEL\n` instead.
    overflows,
    /// Successful connections, and reconnections after the first.
    connections,
    reconnects,
    /// Failed connection attempts.
    connect_failures,
    /// Connections lost (closed by the guest, write error, stalled write).
    disconnects,
    /// Writes that did not complete within the stall timeout (connection dropped).
    stalls,
    /// Keepalive lines written.
    keepalives,
    /// Bytes the guest sent us (ignored today).
    bytes_received,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Connecting,
    Connected,
    Down,
}

#[derive(Debug)]
struct Inner {
    conn: Conn,
    since: u64,
    last_error: Option<String>,
    /// Per channel of the guest (same order as [`Guest::channels`]): the next log entry to send.
    cursors: Vec<u64>,
}

/// One guest and its counters.
#[derive(Debug)]
pub struct Guest {
    pub addr: ConnectAddr,
    pub name: String,
    /// Indices of its channels in [`Hub::channels`].
    pub channels: Vec<usize>,
    /// Woken when one of its channels has new changes.
    pub wake: Notify,
    pub stats: GuestStats,
    /// The barrier (`vfnotify host sync`): negotiation, IDs sent and acknowledged.
    pub sync: super::barrier::GuestSync,
    inner: Mutex<Inner>,
}

use crate::util::unix_now as now_secs;

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Why a session ended.
enum End {
    Stop,
    Lost(String),
}

impl Guest {
    pub fn new(addr: ConnectAddr, channels: Vec<usize>) -> Guest {
        let n = channels.len();
        Guest {
            name: addr.to_string(),
            addr,
            channels,
            wake: Notify::new(),
            stats: GuestStats::default(),
            sync: Default::default(),
            inner: Mutex::new(Inner {
                conn: Conn::Connecting,
                since: now_secs(),
                last_error: None,
                cursors: vec![0; n],
            }),
        }
    }

    fn set_conn(&self, conn: Conn, error: Option<String>) {
        let mut i = lock(&self.inner);
        if i.conn != conn {
            i.since = now_secs();
        }
        i.conn = conn;
        if error.is_some() {
            i.last_error = error;
        }
    }

    /// Changes waiting for this guest, per channel (0 while not connected: nothing is kept for
    /// a guest that is away; it gets every channel whole when it connects).
    fn depth(&self, hub: &Hub) -> u64 {
        let i = lock(&self.inner);
        if i.conn != Conn::Connected {
            return 0;
        }
        self.channels
            .iter()
            .zip(&i.cursors)
            .map(|(ch, cur)| {
                hub.channels
                    .get(*ch)
                    .map(|c| lock(&c.log).head().saturating_sub(*cur))
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The guest's part of `status`.
    pub fn status(&self, hub: &Hub) -> GuestStatus {
        let depth = self.depth(hub);
        let i = lock(&self.inner);
        GuestStatus {
            addr: self.name.clone(),
            channels: (self.channels.iter())
                .filter_map(|c| hub.channels.get(*c))
                .map(|c| c.name.clone())
                .collect(),
            state: match i.conn {
                Conn::Connecting => "connecting",
                Conn::Connected => "connected",
                Conn::Down => "down",
            }
            .to_string(),
            since: i.since,
            last_error: i.last_error.clone(),
            queue_depth: depth,
            barrier: self.sync.status(),
            stats: self.stats.by_name(),
        }
    }

    /// Move every cursor to its log's head and return `CHANNEL\n` for each channel: what a
    /// guest is told right after a (re)connection.
    fn restart(&self, hub: &Hub) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = lock(&self.inner);
        for (k, ch) in self.channels.iter().enumerate() {
            if let Some(c) = hub.channels.get(*ch) {
                i.cursors[k] = lock(&c.log).head();
                out.extend_from_slice(c.name.as_bytes());
                out.push(b'\n');
            }
        }
        i.conn = Conn::Connected;
        i.since = now_secs();
        out
    }

    fn pending(&self, hub: &Hub) -> bool {
        let i = lock(&self.inner);
        self.channels.iter().zip(&i.cursors).any(|(ch, cur)| {
            hub.channels
                .get(*ch)
                .is_some_and(|c| lock(&c.log).head() > *cur)
        })
    }

    /// The lines of everything new in this guest's channels (empty when nothing is), and how
    /// many changes they carry.
    fn take_batch(&self, hub: &Hub) -> (Vec<u8>, u64) {
        let limits = hub.config.limits;
        let mut out = Vec::new();
        let mut count_taken = 0u64;
        let mut i = lock(&self.inner);
        for (k, ch) in self.channels.iter().enumerate() {
            let Some(c) = hub.channels.get(*ch) else {
                continue;
            };
            let taken = lock(&c.log).take(&mut i.cursors[k], limits.channel);
            let whole = |out: &mut Vec<u8>| {
                out.extend_from_slice(c.name.as_bytes());
                out.push(b'\n');
            };
            match taken {
                Taken::Nothing => {}
                Taken::TooMany { lagged, count } => {
                    count_taken += count;
                    whole(&mut out);
                    add(&self.stats.lines_sent, 1);
                    add(&self.stats.coalesced, count.saturating_sub(1));
                    if lagged {
                        bump(&self.stats.overflows);
                        tracing::debug!(guest = %self.name, channel = %c.name, count, "fell behind the channel log; sending the whole channel");
                    } else {
                        bump(&self.stats.collapsed_channel);
                        tracing::debug!(guest = %self.name, channel = %c.name, count, "batch over the channel limit; sending the whole channel");
                    }
                }
                Taken::Changes(changes) => {
                    count_taken += changes.len() as u64;
                    let before = out.len();
                    let st = batch::build(&c.name, &changes, limits, &mut out);
                    if out.len() - before > MAX_CHANNEL_BYTES {
                        out.truncate(before);
                        whole(&mut out);
                        add(&self.stats.lines_sent, 1);
                        add(&self.stats.coalesced, st.changes.saturating_sub(1));
                        bump(&self.stats.collapsed_channel);
                        tracing::debug!(guest = %self.name, channel = %c.name, "batch over {MAX_CHANNEL_BYTES} bytes; sending the whole channel");
                        continue;
                    }
                    add(&self.stats.lines_sent, st.lines);
                    add(&self.stats.coalesced, st.coalesced);
                    add(&self.stats.collapsed_folders, st.collapsed_folders);
                    if st.collapsed_channel {
                        bump(&self.stats.collapsed_channel);
                        tracing::debug!(guest = %self.name, channel = %c.name, changes = st.changes, "batch collapsed to the whole channel");
                    } else if st.collapsed_folders > 0 {
                        tracing::debug!(guest = %self.name, channel = %c.name, folders = st.collapsed_folders, "crowded folders collapsed");
                    }
                }
            }
        }
        (out, count_taken)
    }
}

/// Run the guest's connection until `stop` turns true.
pub async fn run(guest: Arc<Guest>, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let max = hub.config.backoff_max.max(BACKOFF_MIN);
    let mut backoff = BACKOFF_MIN;
    let mut ever = false;
    let mut warned = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, transport::connect(&guest.addr)) => r,
            _ = stop.changed() => return,
        };
        let stream = match attempt {
            Ok(Ok(s)) => s,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                };
                bump(&guest.stats.connect_failures);
                if !warned {
                    tracing::warn!(guest = %guest.name, error = %why, "guest unreachable; retrying with backoff (up to {} ms)", max.as_millis());
                    warned = true;
                } else {
                    tracing::debug!(guest = %guest.name, error = %why, "guest still unreachable");
                }
                guest.set_conn(Conn::Down, Some(why));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        bump(&guest.stats.connections);
        if ever {
            bump(&guest.stats.reconnects);
        }
        ever = true;
        warned = false;
        backoff = BACKOFF_MIN;
        tracing::info!(guest = %guest.name, "guest connected");
        let end = session(&guest, &hub, stream, &mut stop).await;
        guest.sync.on_disconnect();
        match end {
            End::Stop => return,
            End::Lost(why) => {
                bump(&guest.stats.disconnects);
                tracing::info!(guest = %guest.name, reason = %why, "guest connection lost; reconnecting");
                guest.set_conn(Conn::Connecting, Some(why));
            }
        }
    }
}

/// Write `bytes` while still reading the connection, within the stall timeout.
async fn write_all<R, W>(
    guest: &Guest,
    rd: &mut R,
    wr: &mut W,
    bytes: &[u8],
    stall: Duration,
    rbuf: &mut [u8],
    stop: &mut watch::Receiver<bool>,
) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = Instant::now() + stall;
    let write = wr.write_all(bytes);
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => {
                return match r {
                    Ok(()) => {
                        bump(&guest.stats.writes);
                        add(&guest.stats.bytes_sent, bytes.len() as u64);
                        Ok(())
                    }
                    Err(e) => Err(End::Lost(format!("write failed: {e}"))),
                };
            }
            r = rd.read(rbuf) => received(guest, r, rbuf)?,
            _ = tokio::time::sleep_until(deadline) => {
                bump(&guest.stats.stalls);
                tracing::warn!(guest = %guest.name, secs = stall.as_secs(), "guest has not read for too long; dropping the connection");
                return Err(End::Lost(format!("write stalled for {} s", stall.as_secs())));
            }
            _ = stop.changed() => return Err(End::Stop),
        }
    }
}

/// What reading the connection found: the guest's replies (its hello, acknowledgements of
/// syncs); EOF, an error or an endless line ends it.
fn received(guest: &Guest, r: io::Result<usize>, buf: &[u8]) -> Result<(), End> {
    match r {
        Ok(0) => Err(End::Lost("closed by the guest".into())),
        Ok(n) => {
            add(&guest.stats.bytes_received, n as u64);
            guest
                .sync
                .replies(&guest.name, buf.get(..n).unwrap_or_default())
                .map_err(End::Lost)
        }
        Err(e) => Err(End::Lost(format!("read failed: {e}"))),
    }
}

async fn session(
    guest: &Guest,
    hub: &Hub,
    stream: transport::BoxedStream,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let cfg = &hub.config;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut rbuf = vec![0u8; 4096];
    // The barrier's hello first (a guest that reads lines only ignores it), then every channel.
    guest.sync.on_connect();
    let mut hello = super::barrier::HELLO_LINE.as_bytes().to_vec();
    hello.extend_from_slice(&guest.restart(hub));
    if let Err(e) = write_all(
        guest,
        &mut rd,
        &mut wr,
        &hello,
        cfg.stall_timeout,
        &mut rbuf,
        stop,
    )
    .await
    {
        return e;
    }
    add(&guest.stats.lines_sent, guest.channels.len() as u64);
    let mut last_write = Instant::now();
    // The current window: when it started and how many changes were sent in it. Past BURST
    // changes, the rest of the window's changes wait for its end.
    let mut window_start = Instant::now();
    let mut sent_in_window = 0u64;
    let far = Duration::from_secs(86_400 * 365);
    loop {
        // A sync: what is pending goes now, whatever the window, then the sync line.
        if let Some(id) = guest.sync.take_due() {
            let (mut bytes, _) = guest.take_batch(hub);
            bytes.extend_from_slice(super::barrier::sync_line(id).as_bytes());
            if let Err(e) = write_all(
                guest,
                &mut rd,
                &mut wr,
                &bytes,
                cfg.stall_timeout,
                &mut rbuf,
                stop,
            )
            .await
            {
                return e;
            }
            last_write = Instant::now();
            continue;
        }
        let pending = guest.pending(hub);
        let now = Instant::now();
        if now >= window_start + cfg.window {
            window_start = now;
            sent_in_window = 0;
        }
        let due = if sent_in_window >= BURST {
            window_start + cfg.window
        } else {
            now
        };
        if pending && now >= due {
            let (bytes, taken) = guest.take_batch(hub);
            if !bytes.is_empty() {
                if let Err(e) = write_all(
                    guest,
                    &mut rd,
                    &mut wr,
                    &bytes,
                    cfg.stall_timeout,
                    &mut rbuf,
                    stop,
                )
                .await
                {
                    return e;
                }
                last_write = Instant::now();
                sent_in_window += taken;
            }
            continue;
        }
        let keepalive_at = last_write + cfg.keepalive.unwrap_or(far);
        tokio::select! {
            _ = guest.wake.notified(), if !pending => {}
            _ = tokio::time::sleep_until(due), if pending => {}
            _ = tokio::time::sleep_until(keepalive_at), if cfg.keepalive.is_some() => {
                if let Err(e) = write_all(guest, &mut rd, &mut wr, KEEPALIVE_LINE.as_bytes(), cfg.stall_timeout, &mut rbuf, stop).await {
                    return e;
                }
                bump(&guest.stats.keepalives);
                last_write = Instant::now();
            }
            r = rd.read(&mut rbuf) => {
                if let Err(e) = received(guest, r, &rbuf) {
                    return e;
                }
            }
            _ = stop.changed() => return End::Stop,
        }
    }
}
