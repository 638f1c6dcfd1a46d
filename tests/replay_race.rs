//! SOURCE moving on while a notification is being replayed: the rescan found a name that is gone
//! (or another object) by the time its replay makes it. A local watcher saw the name made, and
//! then what followed; so must a watcher of the overlay, and the notification's answer must find
//! nothing stale. Seen in CI as a missing `IN_CREATE` of an atomic symlink retarget
//! (`ln -s two .l.tmp; mv .l.tmp l`) when the rename landed between the host's first
//! notification's rescan and its replay.
//!
//! The race is made reliable here: one notification carries a burst of new files (replayed
//! first, 300 names) and the new `.l.tmp`; a thread renames `.l.tmp` over `l` on SOURCE as soon
//! as the burst's first `IN_CREATE` shows through the mount, long before the replay reaches
//! `.l.tmp`.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use overlay_support::{Linked, Watcher, mask_name, tree_digest};
use vfnotify::sys::Inotify;

const BURST: usize = 300;

/// `MASK name` for the events in `symlink/`, renames with their cookie's order.
fn tokens(events: &[overlay_support::Event]) -> Vec<String> {
    let mut cookies = Vec::new();
    events
        .iter()
        .filter(|e| e.dir.ends_with("symlink"))
        .map(|e| {
            let mut t = format!("{} {}", mask_name(e.mask), e.name);
            if e.cookie != 0 {
                let k = cookies
                    .iter()
                    .position(|c| *c == e.cookie)
                    .unwrap_or_else(|| {
                        cookies.push(e.cookie);
                        cookies.len() - 1
                    });
                t.push_str(&format!(" #{k}"));
            }
            t
        })
        .collect()
}

/// One way SOURCE moves on: what stands in `symlink/` first, the new object made under a
/// temporary name, and what happens to it next (in the folder, from the temporary name).
struct Case {
    test: &'static str,
    prep: fn(&Path),
    make: fn(&Path),
    next: fn(&Path),
    want: &'static [&'static str],
}

fn run(case: &Case) {
    let Some(l) = Linked::new(case.test, "") else {
        return;
    };
    let prepare = |root: &Path| {
        fs::create_dir_all(root.join("burst")).unwrap();
        fs::create_dir_all(root.join("symlink")).unwrap();
        (case.prep)(&root.join("symlink"));
    };
    // The same change made locally, under the same kind of watcher.
    prepare(&l.m("local"));
    prepare(&l.s("host"));
    l.notify(&["host"]);
    let _ = tree_digest(&l.mnt);
    let mut wl = Watcher::new();
    wl.add(&l.m("local/symlink"));
    for i in 0..BURST {
        fs::write(l.m(&format!("local/burst/f{i:03}")), b"x").unwrap();
    }
    (case.make)(&l.m("local/symlink"));
    (case.next)(&l.m("local/symlink"));
    let want = tokens(&wl.events(Duration::from_millis(300)));
    assert_eq!(want, case.want, "the local kernel's events");

    // The host: the burst and the temporary name on SOURCE, one notification for both.
    let mut wh = Watcher::new();
    wh.add(&l.m("host/symlink"));
    for i in 0..BURST {
        fs::write(l.s(&format!("host/burst/f{i:03}")), b"x").unwrap();
    }
    (case.make)(&l.s("host/symlink"));
    let tmp = fs::read_dir(l.s("host/symlink"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with('.'))
        .expect("a temporary name");
    let burst = Inotify::new().unwrap();
    burst
        .add_watch(&l.m("host/burst"), libc::IN_CREATE)
        .unwrap();
    let folder = l.s("host/symlink");
    let next = case.next;
    let mover = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if !burst.read(5).unwrap().is_empty() {
                next(&folder);
                return true;
            }
        }
        false
    });
    let before = l.overlay_stats();
    l.notify(&["host/burst", &format!("host/symlink/{tmp}")]);
    assert!(
        mover.join().unwrap(),
        "the burst's replay gave no IN_CREATE"
    );
    // Answered: the overlay holds SOURCE as it is (looked at before the watcher's events are
    // read: nothing may be left for later), and the watcher has seen everything.
    assert_eq!(tree_digest(&l.m("host")), tree_digest(&l.s("host")));
    let got = tokens(&wh.events(Duration::from_millis(300)));
    let after = l.overlay_stats();
    let moved_on = after["replay_moved_on"].as_u64().unwrap_or(0)
        - before["replay_moved_on"].as_u64().unwrap_or(0);
    assert!(
        moved_on >= 1,
        "the race was not made (SOURCE moved on before the rescan?): {got:?}"
    );
    assert_eq!(
        after["replay_failed"], before["replay_failed"],
        "a replay failed"
    );
    assert_eq!(got, want, "the overlay's watcher against the local one");
}

#[test]
fn a_symlink_retargeted_while_its_create_is_replayed() {
    run(&Case {
        test: "replay_race_symlink",
        prep: |d| symlink("one", d.join("l")).unwrap(),
        make: |d| symlink("two", d.join(".l.tmp")).unwrap(),
        next: |d| fs::rename(d.join(".l.tmp"), d.join("l")).unwrap(),
        want: &["CREATE .l.tmp", "MOVED_FROM .l.tmp #0", "MOVED_TO l #0"],
    });
}

#[test]
fn a_file_saved_atomically_while_its_create_is_replayed() {
    run(&Case {
        test: "replay_race_save",
        prep: |d| fs::write(d.join("f"), b"version one").unwrap(),
        make: |d| fs::write(d.join(".f.tmp"), b"version two!").unwrap(),
        next: |d| fs::rename(d.join(".f.tmp"), d.join("f")).unwrap(),
        want: &[
            "CREATE .f.tmp",
            "MODIFY .f.tmp",
            "CLOSE_WRITE .f.tmp",
            "MOVED_FROM .f.tmp #0",
            "MOVED_TO f #0",
        ],
    });
}

#[test]
fn a_file_removed_while_its_create_is_replayed() {
    run(&Case {
        test: "replay_race_removed",
        prep: |_| {},
        make: |d| fs::write(d.join(".x.tmp"), b"").unwrap(),
        next: |d| fs::remove_file(d.join(".x.tmp")).unwrap(),
        want: &["CREATE .x.tmp", "CLOSE_WRITE .x.tmp", "DELETE .x.tmp"],
    });
}
