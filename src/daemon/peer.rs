//! Accepting peers and reading their lines.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::state::{ConnSlot, Counters, Shared};
use crate::protocol::{Dropped, LineDecoder, LineError};
use crate::transport::{Listener, peer_allowed};

/// Read buffer per connection.
const READ_CHUNK: usize = 4096;

/// Accept peers from `listener` forever: refuse vsock peers outside the CID policy before
/// reading anything, and serve the rest, each in its own task. At `--max-connections` the
/// connection that has gone longest without completing a line is closed to make room (see
/// [`super::state::Connections`]), so slow or stuck peers cannot lock out a working sender.
pub async fn accept_loop<L: Listener>(shared: Arc<Shared>, listener: L) {
    let name = listener.describe();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                Counters::bump(&shared.counters.accept_errors);
                tracing::warn!(listener = %name, error = %e, "accept failed");
                // Out of descriptors and such: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !peer_allowed(&shared.config.cid_policy, &peer) {
            Counters::bump(&shared.counters.refused_cid);
            tracing::warn!(listener = %name, %peer, allowed = %shared.config.cid_policy, "peer CID not allowed; connection refused");
            drop(stream);
            continue;
        }
        let (slot, evicted) = shared.connections.admit(shared.config.max_connections);
        if evicted {
            Counters::bump(&shared.counters.evicted);
            tracing::debug!(listener = %name, %peer, max = shared.config.max_connections, "connection table full; closed the connection with the least progress");
        }
        Counters::bump(&shared.counters.connections);
        tracing::debug!(listener = %name, %peer, "peer connected");
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            serve_peer(&shared, stream, slot).await;
        });
    }
}

/// Read lines from one peer until EOF, error, timeout or an overlong line.
///
/// The timeout runs from the connection's start or its last complete line, not from its last
/// read: a peer must finish a line within `--idle-timeout`, so one that trickles a byte now and
/// then cannot hold a connection slot for ever. The connection also ends when `slot` is evicted
/// to make room for a newer one (counted by the accept loop): what the peer had already sent is
/// still read, one chunk at most, so a sender evicted before its first read loses nothing; a
/// partial line is dropped with the connection.
pub async fn serve_peer<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: &Arc<Shared>,
    stream: S,
    mut slot: ConnSlot,
) {
    // The write half answers a host's barrier (`vfnotify host sync`): see [`super::ack`].
    let (mut stream, wr) = tokio::io::split(stream);
    let mut acks = super::ack::PeerAcks::new(Arc::clone(shared), wr);
    let mut decoder = LineDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let idle = shared.idle_timeout();
    let mut deadline = tokio::time::Instant::now() + idle;
    let mut evicted = false;
    loop {
        let read = if evicted {
            // A zero timeout still polls the read once: only what is there already.
            match tokio::time::timeout(Duration::ZERO, stream.read(&mut buf)).await {
                Ok(r) => Ok(r),
                Err(_) => return,
            }
        } else {
            tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => r,
                _ = &mut slot.evicted => {
                    tracing::debug!(bytes = decoder.pending(), "evicted to make room; closing");
                    evicted = true;
                    continue;
                }
            }
        };
        let n = match read {
            Err(_) if decoder.pending() > 0 => {
                Counters::bump(&shared.counters.slow_line);
                tracing::debug!(
                    secs = idle.as_secs(),
                    bytes = decoder.pending(),
                    "peer did not finish a line in time; closing"
                );
                return;
            }
            Err(_) => {
                Counters::bump(&shared.counters.idle_timeout);
                tracing::debug!(secs = idle.as_secs(), "peer idle; closing");
                break;
            }
            Ok(Err(e)) => {
                Counters::bump(&shared.counters.read_errors);
                tracing::debug!(error = %e, "peer read failed; closing");
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        // Lines that arrive together (one write by the host) form one notification per channel,
        // so the overlay sees a rename's two paths at once and replays it as a move.
        let mut batch = Batch::default();
        let mut lines = false;
        for item in decoder.push(buf.get(..n).unwrap_or_default()) {
            deadline = tokio::time::Instant::now() + idle;
            lines = true;
            match item {
                Ok(n) => {
                    if let Some(line) = super::ack::reserved(&n) {
                        // Everything before a sync is dispatched before it is looked at.
                        std::mem::take(&mut batch).dispatch(shared);
                        acks.line(line);
                        continue;
                    }
                    acks.saw(&n.channel);
                    tracing::debug!(channel = %n.channel, path = ?n.path, "notification");
                    batch.add(n.channel, n.path);
                }
                Err(Dropped::Overlong) => {
                    Counters::bump(&shared.counters.overlong);
                    tracing::warn!(
                        max = crate::protocol::MAX_LINE,
                        "line too long; closing the connection"
                    );
                }
                Err(Dropped::Line(e)) => {
                    let c = &shared.counters;
                    match e {
                        LineError::NonUtf8 => Counters::bump(&c.non_utf8),
                        LineError::BadChannel(_) => Counters::bump(&c.bad_channel),
                        LineError::BadRelpath(_) => Counters::bump(&c.bad_relpath),
                        LineError::Overlong => Counters::bump(&c.overlong),
                    }
                    tracing::debug!(error = %e, "line dropped");
                }
            }
        }
        if lines {
            slot.progressed();
        }
        batch.dispatch(shared);
        if decoder.is_closed() || evicted {
            return;
        }
    }
    if decoder.pending() > 0 {
        Counters::bump(&shared.counters.partial_line);
        tracing::debug!(
            bytes = decoder.pending(),
            "connection ended mid-line; partial line discarded"
        );
    }
}

/// Notifications decoded from one read, grouped by channel in order of first appearance.
#[derive(Default)]
struct Batch {
    /// Channel, its paths (`None`: the whole channel) and how many lines it merges.
    groups: Vec<(String, Option<Vec<String>>, u64)>,
}

impl Batch {
    fn add(&mut self, channel: String, path: Option<String>) {
        match self.groups.iter_mut().find(|(c, _, _)| *c == channel) {
            Some((_, paths, count)) => {
                *count += 1;
                match (paths.as_mut(), path) {
                    (Some(ps), Some(p)) => {
                        if !ps.contains(&p) {
                            ps.push(p);
                        }
                    }
                    _ => *paths = None,
                }
            }
            None => self.groups.push((channel, path.map(|p| vec![p]), 1)),
        }
    }

    /// Dispatch each group once; counters still count every line.
    fn dispatch(self, shared: &Shared) {
        for (channel, paths, count) in self.groups {
            let extra = count.saturating_sub(1);
            shared.counters.received.fetch_add(extra, Ordering::Relaxed);
            let scope = crate::control::wire::Scope::from_paths(paths.unwrap_or_default());
            let r = shared.dispatch(&channel, scope, false);
            if r.known {
                // Merged into one notification: coalesced, as a burst within the window is.
                shared
                    .counters
                    .coalesced
                    .fetch_add(extra, Ordering::Relaxed);
            } else {
                shared
                    .counters
                    .unknown_channel
                    .fetch_add(extra, Ordering::Relaxed);
            }
        }
    }
}
