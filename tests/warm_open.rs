//! Warm opens: the overlay keeps the backing fds of recently opened files (`overlay::fs::fdcache`)
//! so that opening a file again needs nothing from SOURCE. What a host change does to a kept fd
//! must not show: an atomic save (a new inode under the name) or an unlink, once notified, gives
//! what it gives without the cache; a rewrite in place is seen through the same fd; and the
//! cache never holds more fds than its budget.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;

use overlay_support::Linked;

/// These cases are about opens served from kept fds: opens that are sent (see `open_free.rs` for
/// those that are not).
const OPEN: &str = "revalidate=open";

#[test]
fn host_atomic_save_after_a_warm_open_is_read_after_its_notification() {
    let Some(l) = Linked::new("host_atomic_save_after_a_warm_open", OPEN) else {
        return;
    };
    fs::write(l.s("doc.txt"), b"first\n").unwrap();
    l.notify(&["doc.txt"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"first\n");
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"first\n");
    l.wait_stat("fd_cache_hits", "a warm open served from the cache", |n| {
        n >= 1
    });
    // The host saves atomically: a new file renamed over the name.
    fs::write(l.s(".doc.txt.tmp"), b"second, longer\n").unwrap();
    fs::rename(l.s(".doc.txt.tmp"), l.s("doc.txt")).unwrap();
    l.notify(&["doc.txt", ".doc.txt.tmp"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"second, longer\n");
    // And again, warm.
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"second, longer\n");
}

/// Before any notification too: the kept fd is of a file with no name left, so the open goes
/// by name as it would without the cache (never the replaced file's bytes once the name moved).
#[test]
fn host_atomic_save_before_its_notification_never_reads_the_replaced_file() {
    let Some(l) = Linked::new("host_atomic_save_before_its_notification", OPEN) else {
        return;
    };
    fs::write(l.s("doc.txt"), b"first\n").unwrap();
    l.notify(&["doc.txt"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"first\n");
    fs::write(l.s(".tmp"), b"second\n").unwrap();
    fs::rename(l.s(".tmp"), l.s("doc.txt")).unwrap();
    match fs::read(l.m("doc.txt")) {
        Ok(b) => assert_eq!(b, b"second\n", "the replaced file was served"),
        // The kernel's name still leads to the old inode (ESTALE at the open): as before.
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }
    l.notify(&["doc.txt", ".tmp"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"second\n");
}

#[test]
fn host_unlink_after_a_warm_open_is_enoent_after_its_notification() {
    let Some(l) = Linked::new("host_unlink_after_a_warm_open", OPEN) else {
        return;
    };
    fs::write(l.s("gone.txt"), b"here\n").unwrap();
    l.notify(&["gone.txt"]);
    assert_eq!(fs::read(l.m("gone.txt")).unwrap(), b"here\n");
    assert_eq!(fs::read(l.m("gone.txt")).unwrap(), b"here\n");
    fs::remove_file(l.s("gone.txt")).unwrap();
    l.notify(&["gone.txt"]);
    let e = fs::read(l.m("gone.txt")).expect_err("a file the host removed still opens");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
}

#[test]
fn host_rewrite_in_place_after_a_warm_open_is_read_after_its_notification() {
    let Some(l) = Linked::new("host_rewrite_in_place_after_a_warm_open", OPEN) else {
        return;
    };
    fs::write(l.s("log.txt"), b"one\n").unwrap();
    l.notify(&["log.txt"]);
    assert_eq!(fs::read(l.m("log.txt")).unwrap(), b"one\n");
    assert_eq!(fs::read(l.m("log.txt")).unwrap(), b"one\n");
    // Same inode: truncated and rewritten.
    fs::write(l.s("log.txt"), b"two, rewritten\n").unwrap();
    l.notify(&["log.txt"]);
    assert_eq!(fs::read(l.m("log.txt")).unwrap(), b"two, rewritten\n");
}

#[test]
fn many_files_opened_in_turn_stay_within_the_fd_budget() {
    const BUDGET: u64 = 8;
    const FILES: u64 = 40;
    let Some(l) = Linked::with_source(
        "many_files_within_the_fd_budget",
        "revalidate=open,fdcache=8",
        |src| {
            for i in 0..FILES {
                fs::write(src.join(format!("f{i}")), format!("{i}\n")).unwrap();
            }
        },
    ) else {
        return;
    };
    for i in 0..FILES {
        let b = fs::read(l.m(&format!("f{i}"))).unwrap();
        assert_eq!(b, format!("{i}\n").as_bytes());
    }
    l.wait_stat("fd_cache_misses", "every first open counted", |n| {
        n >= FILES
    });
    assert_eq!(l.stat_u64("fd_cache_budget"), BUDGET);
    let kept = l.stat_u64("cached_file_fds");
    assert!(kept <= BUDGET, "{kept} fds kept for a budget of {BUDGET}");
    let evicted = l.stat_u64("fd_cache_evicted");
    assert!(evicted >= FILES - BUDGET, "only {evicted} evicted");
    // The most recent ones are warm.
    let hits = l.stat_u64("fd_cache_hits");
    for i in FILES - BUDGET..FILES {
        assert_eq!(
            fs::read(l.m(&format!("f{i}"))).unwrap(),
            format!("{i}\n").as_bytes()
        );
    }
    l.wait_stat("fd_cache_hits", "the recent files served warm", |n| {
        n >= hits + BUDGET
    });
    assert!(l.stat_u64("cached_file_fds") <= BUDGET);
}

/// `revalidate=notify`: a warm open asks SOURCE nothing, and a notified host change still shows.
#[test]
fn revalidate_notify_sees_a_notified_atomic_save() {
    let Some(l) = Linked::new(
        "revalidate_notify_sees_a_notified_atomic_save",
        "revalidate=notify",
    ) else {
        return;
    };
    fs::write(l.s("doc.txt"), b"first\n").unwrap();
    l.notify(&["doc.txt"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"first\n");
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"first\n");
    fs::write(l.s(".tmp"), b"second\n").unwrap();
    fs::rename(l.s(".tmp"), l.s("doc.txt")).unwrap();
    l.notify(&["doc.txt", ".tmp"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"second\n");
    fs::write(l.s("doc.txt"), b"third, in place\n").unwrap();
    l.notify(&["doc.txt"]);
    assert_eq!(fs::read(l.m("doc.txt")).unwrap(), b"third, in place\n");
}
