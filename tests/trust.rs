//! `revalidate=auto` (the default): an overlay trusts its notifications while a `vfnotify host`
//! feeds its daemon (the daemon tells it with a `feed` event), so opens cost nothing, and over a
//! SOURCE it serves itself the kernel sends none (`overlay::fs::open_free`). When no host feeds
//! the daemon any more, a host change must still show without a notification, within the short
//! timeouts of an untrusted mount.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/host.rs"]
mod host_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::time::Duration;

use daemon_support::{DEADLINE, poll_until};
use host_support::Host;
use overlay_support::Linked;

fn stat(l: &Linked, key: &str) -> serde_json::Value {
    l.overlay_stats()[key].clone()
}

fn host_feeding(l: &Linked) -> Host {
    let watch = format!("docs={}", l.src.display());
    let to = format!("unix:{}", l.daemon.peer.display());
    let h = Host::start(&["--watch", &watch, "--backend", "inotify", "--to", &to]);
    h.wait_connected(std::slice::from_ref(&to));
    h
}

#[test]
fn a_host_feed_makes_opens_free_and_its_end_short_timeouts() {
    let Some(l) = Linked::with_source("trust_follows_the_host_feed", "passthrough=off", |src| {
        fs::write(src.join("a.txt"), b"one").unwrap();
    }) else {
        return;
    };
    // Linked, no host yet: opens are checked (and sent).
    assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"one");
    l.notify(&[]);
    assert_eq!(stat(&l, "trusted"), false);
    assert_eq!(stat(&l, "open_free"), 0);

    let mut h = host_feeding(&l);
    poll_until("the overlay trusts the host's feed", DEADLINE, || {
        stat(&l, "trusted") == true
    });
    assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"one");
    poll_until("opens no longer sent", DEADLINE, || {
        stat(&l, "open_free") == 1
    });
    // A host change reaches the guest through the host alone.
    fs::write(l.s("a.txt"), b"two, from the host").unwrap();
    poll_until("the host's change read", DEADLINE, || {
        fs::read(l.m("a.txt")).unwrap() == b"two, from the host"
    });

    // Everything the kernel holds of the file is fresh and long-lived now (a read from SOURCE
    // makes the kernel ask for the attributes again, for the atime: answered here, trusted).
    for _ in 0..3 {
        assert_eq!(fs::read(l.m("a.txt")).unwrap(), b"two, from the host");
        fs::metadata(l.m("a.txt")).unwrap();
    }

    // The host goes: nobody names host changes any more, and opens are not sent to be checked.
    h.terminate();
    poll_until("the overlay stops trusting", DEADLINE, || {
        stat(&l, "trusted") == false
    });
    fs::write(l.s("a.txt"), b"three, unannounced").unwrap();
    // Within the short timeouts (1 s) the change shows, with no notification.
    poll_until("an unannounced change read", Duration::from_secs(5), || {
        fs::read(l.m("a.txt")).unwrap() == b"three, unannounced"
    });
    let m = fs::metadata(l.m("a.txt")).unwrap();
    assert_eq!(m.len(), 18);
}
