//! Whether the daemon's feed is exact: a `vfnotify host` is connected and negotiated syncs (its
//! hello, see [`super::ack`]). Such a host watches the shared folders itself and names every
//! change, so an overlay with `revalidate=auto` (the default) may trust its notifications the
//! way `revalidate=notify` does: no check of SOURCE at each open, and no open sent at all (see
//! `overlay::fs::open_free`). Overlays are told with a `feed` event when they subscribe and
//! whenever it changes.

use std::sync::atomic::Ordering;

use super::state::Shared;

impl Shared {
    /// A peer connection negotiated syncs.
    pub fn exact_peer_up(&self) {
        if self.exact_peers.fetch_add(1, Ordering::SeqCst) == 0 {
            tracing::info!("a vfnotify host feeds this daemon: overlays may trust notifications");
            self.tell_feed(true);
        }
    }

    /// A peer connection that negotiated syncs ended.
    pub fn exact_peer_down(&self) {
        if self.exact_peers.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::info!("no vfnotify host feeds this daemon any more");
            self.tell_feed(false);
        }
    }

    /// Whether a peer that negotiated syncs is connected.
    pub fn feed_exact(&self) -> bool {
        self.exact_peers.load(Ordering::SeqCst) > 0
    }

    fn tell_feed(&self, exact: bool) {
        for sub in self.subscribers() {
            sub.set_feed(exact);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::Popped;

    #[test]
    fn overlays_hear_of_the_feed_at_subscribing_and_at_each_change() {
        let shared = Shared::new(crate::daemon::DaemonConfig::new("/nonexistent".into()));
        let before = shared.subscribe("c".into(), "/m1".into(), 1);
        assert!(
            matches!(before.pop(), Popped::Empty),
            "no host: nothing said"
        );
        shared.exact_peer_up();
        shared.exact_peer_up();
        assert!(matches!(before.pop(), Popped::Feed(true)));
        assert!(matches!(before.pop(), Popped::Empty), "told once");
        let after = shared.subscribe("c".into(), "/m2".into(), 2);
        assert!(
            matches!(after.pop(), Popped::Feed(true)),
            "told at subscribing"
        );
        shared.exact_peer_down();
        assert!(shared.feed_exact(), "one host is still connected");
        assert!(matches!(before.pop(), Popped::Empty));
        shared.exact_peer_down();
        assert!(!shared.feed_exact());
        assert!(matches!(before.pop(), Popped::Feed(false)));
        assert!(matches!(after.pop(), Popped::Feed(false)));
    }
}
