//! What `vfnotify watch` subscriptions hear: a removed tree entry by entry (deepest first) and a
//! new nested tree entry by entry, like the inotify replay; and changes in folders no guest
//! client ever listed (the kernel does not hold them), when the watch's glob reaches them.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::time::{Duration, Instant};

use daemon_support::{DEADLINE, poll_until};
use overlay_support::{Linked, Watcher};
use serde_json::{Value, json};
use vfnotify::control::{Client, ClientError};

/// A watch on a control connection.
struct W {
    c: Client,
    id: u64,
}

impl W {
    fn open(l: &Linked, args: Value) -> W {
        let mut c = l.daemon.client();
        let r = c.request("watch", args).expect("watch");
        W {
            c,
            id: r["watch"].as_u64().expect("watch id"),
        }
    }

    /// `type path[ -> to]` of the events that arrive until none has for a while.
    fn lines(&mut self) -> Vec<String> {
        let mut out: Vec<Value> = self.c.take_events();
        self.c
            .set_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        loop {
            match self.c.recv() {
                Ok(m) => out.push(m),
                Err(ClientError::Receive(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("watch connection: {e}"),
            }
        }
        self.c.set_timeout(Some(DEADLINE)).unwrap();
        out.iter()
            .map(|m| &m["event"])
            .filter(|e| e["watch"] == self.id)
            .map(|e| {
                let t = e["type"].as_str().unwrap_or_default();
                match e["to"].as_str() {
                    Some(to) => format!("{t} {} -> {to}", e["path"].as_str().unwrap_or("")),
                    None => format!("{t} {}", e["path"].as_str().unwrap_or("")),
                }
            })
            .collect()
    }
}

fn pos(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line:?} not in {lines:#?}"))
}

/// A nested tree made on the host arrives entry by entry, parents first; removed, it goes entry
/// by entry, deepest first — whether or not a guest client looked at it.
#[test]
fn new_and_removed_trees_are_reported_entry_by_entry() {
    let Some(l) = Linked::new("watch_trees", "") else {
        return;
    };
    let mut w = W::open(&l, json!({"channel": l.channel}));
    let mut inotify = Watcher::new();
    inotify.add_recursive(&l.mnt);
    fs::create_dir_all(l.s("t/a/b/c")).unwrap();
    fs::write(l.s("t/a/x"), b"x").unwrap();
    fs::write(l.s("t/a/b/y"), b"y").unwrap();
    fs::write(l.s("t/a/b/c/z"), b"z").unwrap();
    l.notify(&["t"]);
    let got = w.lines();
    for p in [
        "t",
        "t/a",
        "t/a/b",
        "t/a/b/c",
        "t/a/x",
        "t/a/b/y",
        "t/a/b/c/z",
    ] {
        assert!(got.contains(&format!("create {p}")), "create {p}: {got:#?}");
    }
    assert!(pos(&got, "create t/a") < pos(&got, "create t/a/b/c/z"));
    // A client lists it all: the kernel holds every folder now.
    inotify.add_recursive(&l.m("t"));
    fs::remove_dir_all(l.s("t/a")).unwrap();
    l.notify(&["t/a"]);
    let got = w.lines();
    assert_eq!(got.len(), 6, "{got:#?}");
    for p in ["t/a", "t/a/b", "t/a/b/c", "t/a/x", "t/a/b/y", "t/a/b/c/z"] {
        assert!(got.contains(&format!("delete {p}")), "delete {p}: {got:#?}");
    }
    assert!(pos(&got, "delete t/a/b/c/z") < pos(&got, "delete t/a/b/c"));
    assert!(pos(&got, "delete t/a/b/c") < pos(&got, "delete t/a/b"));
    assert!(pos(&got, "delete t/a/b") < pos(&got, "delete t/a"));
}

/// A tree the guest made and the watch's reach views as well: removed on the host, each entry is
/// reported once (the kernel's view and the reach's view of its folders both found them).
#[test]
fn a_removed_tree_both_views_hold_is_reported_once_per_entry() {
    let Some(l) = Linked::new("watch_removed_once", "") else {
        return;
    };
    for glob in [None, Some("**/*.txt")] {
        // Made through the overlay: the kernel holds every folder of it.
        fs::create_dir_all(l.m("a/b/c")).unwrap();
        for f in ["a/x.txt", "a/b/y.txt", "a/b/c/z.txt"] {
            fs::write(l.m(f), b"v").unwrap();
        }
        let args = match glob {
            None => json!({"channel": l.channel}),
            Some(g) => json!({"channel": l.channel, "glob": g}),
        };
        let mut w = W::open(&l, args);
        wait_reach(&l);
        fs::remove_dir_all(l.s("a")).unwrap();
        l.notify(&["a"]);
        let got = w.lines();
        let want: &[&str] = match glob {
            None => &["a", "a/b", "a/b/c", "a/x.txt", "a/b/y.txt", "a/b/c/z.txt"],
            Some(_) => &["a/x.txt", "a/b/y.txt", "a/b/c/z.txt"],
        };
        assert_eq!(got.len(), want.len(), "{glob:?}: {got:#?}");
        for p in want {
            assert!(
                got.contains(&format!("delete {p}")),
                "{glob:?}: delete {p}: {got:#?}"
            );
        }
    }
}

/// The overlay's view of the folders the watch globs reach, once taken.
fn wait_reach(l: &Linked) {
    poll_until("watch reach taken", DEADLINE, || {
        l.overlay_stats()["reach_entries"].as_u64().unwrap_or(0) > 0
    });
}

/// A change deep in folders no guest client has listed reaches a watch whose glob matches it,
/// with scoped and whole-channel notifications; others are not reported.
#[test]
fn changes_in_folders_no_client_listed_reach_a_matching_watch() {
    let Some(l) = Linked::with_source("watch_unseen", "", |src| {
        fs::create_dir_all(src.join("unseen/deep")).unwrap();
        fs::write(src.join("unseen/deep/old.pdf"), b"v1").unwrap();
        fs::write(src.join("unseen/notes.txt"), b"n").unwrap();
    }) else {
        return;
    };
    let mut w = W::open(&l, json!({"channel": l.channel, "glob": "**/*.pdf"}));
    // Nothing is shown before the host changes anything.
    l.notify(&[]);
    wait_reach(&l);
    assert_eq!(w.lines(), Vec::<String>::new());
    let start = Instant::now();
    fs::write(l.s("unseen/deep/report.pdf"), b"r").unwrap();
    fs::write(l.s("unseen/deep/skip.txt"), b"s").unwrap();
    l.notify(&["unseen/deep/report.pdf", "unseen/deep/skip.txt"]);
    assert_eq!(w.lines(), ["create unseen/deep/report.pdf"]);
    fs::write(l.s("unseen/deep/old.pdf"), b"version 2").unwrap();
    fs::create_dir_all(l.s("unseen/new/er")).unwrap();
    fs::write(l.s("unseen/new/er/q.pdf"), b"q").unwrap();
    l.notify(&[]);
    let mut got = w.lines();
    got.sort();
    assert_eq!(
        got,
        ["create unseen/new/er/q.pdf", "modify unseen/deep/old.pdf"]
    );
    fs::rename(l.s("unseen/deep/report.pdf"), l.s("unseen/moved.pdf")).unwrap();
    fs::remove_file(l.s("unseen/deep/old.pdf")).unwrap();
    l.notify(&[
        "unseen/deep/report.pdf",
        "unseen/moved.pdf",
        "unseen/deep/old.pdf",
    ]);
    let mut got = w.lines();
    got.sort();
    assert_eq!(
        got,
        [
            "delete unseen/deep/old.pdf",
            "rename unseen/deep/report.pdf -> unseen/moved.pdf"
        ]
    );
    // Still nothing in the kernel: the overlay never made the host's folders known to it.
    let stats = l.overlay_stats();
    assert!(stats["reach_entries"].as_u64().unwrap_or(0) >= 4, "{stats}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// The reach is bounded (`reach=N` entries): past it, folders are left out and counted; it ends
/// with the watch.
#[test]
fn watch_reach_is_bounded_and_ends_with_the_watch() {
    let Some(l) = Linked::with_source("watch_reach_bound", "reach=30", |src| {
        for d in ["d1", "d2"] {
            fs::create_dir_all(src.join(d)).unwrap();
            for i in 0..20 {
                fs::write(src.join(format!("{d}/f{i}")), b"x").unwrap();
            }
        }
    }) else {
        return;
    };
    let mut w = W::open(&l, json!({"channel": l.channel}));
    l.notify(&[]);
    wait_reach(&l);
    let stats = l.overlay_stats();
    let n = stats["reach_entries"].as_u64().unwrap_or(0);
    assert!((2..=30).contains(&n), "{stats}");
    assert_eq!(stats["reach_truncated"], 1, "{stats}");
    w.c.request("unwatch", json!({"watch": w.id})).unwrap();
    l.notify(&[]);
    poll_until("reach dropped", DEADLINE, || {
        l.overlay_stats()["reach_entries"].as_u64() == Some(0)
    });
}
