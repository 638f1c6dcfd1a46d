//! `vfnotify host sync`, the cross-VM barrier: after a burst of host changes it returns only once
//! every guest's overlay shows the final state (checked right after it returns, no polling, many
//! times, every change kind, both backends); a guest that reads lines only is named as not
//! acknowledging while the others acknowledge; a guest daemon restarted between the change and
//! the sync is waited for until it caught up; a guest that answers garbage is a counted drop.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/host.rs"]
mod host_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use daemon_support::{DEADLINE, Daemon, poll_until};
use host_support::{FakeGuest, Host, Tmpfs};
use overlay_support::{Linked, tree_digest};
use serde_json::Value;

/// A guest: its daemon (listening at `peer`) and an overlay of the shared folder.
use host_support::OverlayOn as Guest;

/// The shared folder: a private tmpfs (a fanotify filesystem mark there sees this test only).
fn share() -> (Tmpfs, PathBuf) {
    let tmp = Tmpfs::new();
    let src = tmp.path.join("share");
    fs::create_dir_all(&src).unwrap();
    (tmp, src)
}

fn host(backend: &str, src: &Path, to: &[&str], extra: &[&str]) -> Host {
    let watch = format!("docs={}", src.display());
    let mut args = vec!["--watch", &watch, "--backend", backend];
    args.extend_from_slice(extra);
    for t in to {
        args.extend(["--to", t]);
    }
    let h = Host::start(&args);
    let addrs: Vec<String> = to.iter().map(|t| t.to_string()).collect();
    h.wait_connected(&addrs);
    h
}

/// `vfnotify host sync --json` against `host`.
fn sync(host: &Host, timeout: &str) -> (Output, Value) {
    let out = common::vfnotify()
        .args(["host", "sync", "--json", "--timeout", timeout, "--control"])
        .arg(&host.control)
        .output()
        .expect("run host sync");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

fn outcome<'a>(report: &'a Value, addr: &str) -> &'a str {
    report["guests"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["guest"].as_str() == Some(addr)))
        .and_then(|g| g["outcome"].as_str())
        .unwrap_or_else(|| panic!("no guest {addr} in {report}"))
}

fn w(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}

/// Kinds of change [`change`] makes.
const KINDS: usize = 15;

/// One round of host changes of kind `i % KINDS`, in folders of the round's own. Returns a file
/// still open for writing, when the round leaves one (its writer has not closed it yet).
fn change(src: &Path, i: usize) -> Option<fs::File> {
    let d = src.join(format!("d{}", i % 7));
    fs::create_dir_all(&d).unwrap();
    let f = d.join("file");
    if !f.exists() {
        w(&f, b"seed");
    }
    let bulk = src.join("bulk");
    if bulk.exists() {
        fs::remove_dir_all(&bulk).unwrap();
    }
    match i % KINDS {
        // (14, below, makes the bulk folder that the next round removes.)
        0 => {
            for k in 0..20 {
                w(
                    &d.join(format!("new{i}-{k}")),
                    format!("{i}/{k}").as_bytes(),
                );
            }
        }
        1 => w(&f, format!("rewritten in round {i}").as_bytes()),
        2 => {
            let mut h = fs::OpenOptions::new().append(true).open(&f).unwrap();
            h.write_all(format!("+{i}").as_bytes()).unwrap();
        }
        3 => fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(2)
            .unwrap(),
        4 => fs::set_permissions(
            &f,
            fs::Permissions::from_mode(0o600 + (i as u32 % 2) * 0o44),
        )
        .unwrap(),
        5 => {
            let to = src
                .join(format!("d{}", (i + 1) % 7))
                .join(format!("moved{i}"));
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::rename(&f, &to).unwrap();
        }
        6 => {
            let tmp = d.join(".file.tmp");
            w(&tmp, format!("saved atomically in round {i}").as_bytes());
            fs::rename(&tmp, &f).unwrap();
        }
        7 => {
            let deep = d.join(format!("n{i}/a/b/c"));
            fs::create_dir_all(&deep).unwrap();
            w(&deep.join("leaf"), b"leaf");
        }
        8 => {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    fs::remove_dir_all(e.path()).unwrap();
                }
            }
        }
        9 => {
            let l = d.join("link");
            let _ = fs::remove_file(&l);
            std::os::unix::fs::symlink(format!("target-{i}"), &l).unwrap();
        }
        10 => {
            let l = d.join(format!("hard{i}"));
            fs::hard_link(&f, &l).unwrap();
        }
        11 => {
            for e in fs::read_dir(&d).unwrap().flatten() {
                if e.file_name().to_string_lossy().starts_with("new") {
                    fs::remove_file(e.path()).unwrap();
                }
            }
        }
        12 => {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        14 => {
            // More paths than the channel limit: the whole channel, a full rescan in the guests
            // (and again in the next round, which removes them).
            fs::create_dir(&bulk).unwrap();
            for k in 0..2100 {
                w(&bulk.join(format!("b{k}")), b"b");
            }
        }
        _ => {
            // Created and written, not closed: the host holds such a file a moment (its writer
            // is still at it); a sync tells it at once.
            let mut h = fs::File::create(d.join(format!("open{i}"))).unwrap();
            h.write_all(format!("still open in round {i}").as_bytes())
                .unwrap();
            return Some(h);
        }
    }
    None
}

/// After each burst, `vfnotify host sync` returns, and at that very moment every guest's overlay
/// shows SOURCE exactly (types, modes, sizes, mtimes, contents, link targets).
fn sync_shows_the_final_state(test: &str, backend: &str, window_ms: &str, rounds: usize) {
    if !common::fuse_ready(test) {
        return;
    }
    let (_tmp, src) = share();
    let a = Guest::new(&src);
    let b = Guest::new(&src);
    let host = host(
        backend,
        &src,
        &[&a.peer, &b.peer],
        &["--window-ms", window_ms],
    );
    let mut worst = Duration::ZERO;
    for i in 0..rounds {
        let _writer = change(&src, i);
        let start = Instant::now();
        let (out, report) = sync(&host, "30s");
        worst = worst.max(start.elapsed());
        assert!(
            out.status.success(),
            "round {i}: sync failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            report
        );
        let want = tree_digest(&src);
        for g in [&a, &b] {
            assert_eq!(
                tree_digest(&g.mnt),
                want,
                "round {i} (kind {}): {} is stale right after sync",
                i % KINDS,
                g.mnt.display()
            );
        }
    }
    eprintln!("{test}: {rounds} rounds, slowest sync (with the process start) {worst:?}");
}

#[test]
fn after_each_burst_sync_returns_only_once_every_overlay_is_exact_with_fanotify() {
    if !host_support::root_ready("barrier_loop_fanotify") {
        return;
    }
    // A long batching window: what a sync finds pending goes at once, not at the window's end.
    sync_shows_the_final_state("barrier_loop_fanotify", "fanotify", "300", 120);
}

#[test]
fn after_each_burst_sync_returns_only_once_every_overlay_is_exact_with_inotify() {
    if !host_support::root_ready("barrier_loop_inotify") {
        return;
    }
    sync_shows_the_final_state("barrier_loop_inotify", "inotify", "2", 45);
}

/// A guest running a tool that only reads lines never answers the hello: sync names it as not
/// acknowledging and exits 1 at the timeout; the real guest is still reported acknowledged, and
/// its overlay is fresh.
#[test]
fn a_guest_that_reads_lines_only_is_named_and_sync_fails_while_the_others_acknowledge() {
    if !common::fuse_ready("barrier_old_guest") || !host_support::root_ready("barrier_old_guest") {
        return;
    }
    let (_tmp, src) = share();
    let real = Guest::new(&src);
    let old = FakeGuest::new();
    let host = host("fanotify", &src, &[&real.peer, &old.addr], &[]);
    w(&src.join("fresh.txt"), b"new content");
    let start = Instant::now();
    let (out, report) = sync(&host, "1s");
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report["ok"], false);
    assert_eq!(outcome(&report, &old.addr), "not-acknowledging");
    assert_eq!(outcome(&report, &real.peer), "acknowledged");
    assert!(took < Duration::from_secs(6), "sync took {took:?}");
    assert_eq!(tree_digest(&real.mnt), tree_digest(&src));
    // The text report names it too.
    let out = common::vfnotify()
        .args(["host", "sync", "--timeout", "1s", "--control"])
        .arg(&host.control)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains(&format!("{} [docs]: does not acknowledge", old.addr)),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} [docs]: acknowledged", real.peer)),
        "{text}"
    );
    // It got the hello (and ignores it) and lines, never a sync it cannot answer.
    let bytes = String::from_utf8_lossy(&old.all_bytes()).to_string();
    assert!(bytes.starts_with("vfnotify.hello\t1\ndocs\n"), "{bytes:?}");
    assert!(!bytes.contains("vfnotify.sync"), "{bytes:?}");
    assert!(bytes.contains("docs\tfresh.txt\n"), "{bytes:?}");
    // An unknown channel is a usage error.
    let out = common::vfnotify()
        .args(["host", "sync", "nope", "--control"])
        .arg(&host.control)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The guest daemon is stopped after the change and started again while the sync waits: the sync
/// returns only after the new daemon acknowledged, which covers the whole-channel rescan the
/// host sends on reconnecting and the overlay's own rescan on relinking.
#[test]
fn a_guest_daemon_restarted_between_the_change_and_sync_is_waited_for() {
    if !common::fuse_ready("barrier_restart") || !host_support::root_ready("barrier_restart") {
        return;
    }
    let peer_dir = common::tempdir();
    let fixed = peer_dir.path().join("peer.sock");
    let listen = format!("unix:{}", fixed.display());
    let tmp = std::cell::RefCell::new(None);
    let Some(mut g) = Linked::with_source("barrier_restart", "", |src| {
        *tmp.borrow_mut() = Some(Tmpfs::at(src));
    }) else {
        return;
    };
    let control = g.daemon.control.clone();
    let mut old = Vec::new();
    g.daemon.terminate();
    old.push(std::mem::replace(
        &mut g.daemon,
        Daemon::start_at(&control, &["--listen", &listen]),
    ));
    g.wait_linked();
    let host = host("fanotify", &g.src, &[&listen], &[]);
    for round in 0..3 {
        // Read through the overlay so that it caches, then change SOURCE while the guest is away.
        w(&g.s("kept.txt"), format!("before {round}").as_bytes());
        let (out, _) = sync(&host, "30s");
        assert!(out.status.success());
        assert_eq!(
            fs::read_to_string(g.m("kept.txt")).unwrap(),
            format!("before {round}")
        );
        g.daemon.terminate();
        w(
            &g.s("kept.txt"),
            format!("after {round}, longer").as_bytes(),
        );
        for k in 0..50 {
            w(&g.s(&format!("r{round}-{k}")), b"x");
        }
        let control2 = host.control.clone();
        let waiting = std::thread::spawn(move || {
            let out = common::vfnotify()
                .args(["host", "sync", "--json", "--timeout", "60s", "--control"])
                .arg(&control2)
                .output()
                .unwrap();
            (Instant::now(), out)
        });
        std::thread::sleep(Duration::from_millis(300));
        let restarted = Instant::now();
        old.push(std::mem::replace(
            &mut g.daemon,
            Daemon::start_at(&control, &["--listen", &listen]),
        ));
        let (done, out) = waiting.join().unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(done > restarted, "sync returned before the guest was back");
        assert_eq!(
            fs::read_to_string(g.m("kept.txt")).unwrap(),
            format!("after {round}, longer"),
            "round {round}: stale right after sync"
        );
        assert_eq!(tree_digest(&g.mnt), tree_digest(&g.src), "round {round}");
    }
    assert!(host.guest(&listen)["reconnects"].as_u64().unwrap() >= 3);
    drop(g);
    drop(host);
    drop(tmp);
    drop(old);
}

/// A guest that answers garbage, acks of IDs never sent and then an endless line: each is a
/// counted drop (the endless line also drops the connection), nothing is acknowledged, and the
/// host goes on serving.
#[test]
fn bad_replies_are_counted_drops_and_an_endless_line_drops_the_connection() {
    if !host_support::root_ready("barrier_bad_replies") {
        return;
    }
    use std::os::unix::net::UnixListener;
    let (_tmp, src) = share();
    let dir = common::tempdir();
    let path = dir.path().join("hostile.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let addr = format!("unix:{}", path.display());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let _ = s.write_all(b"garbage\n\xff\xfe\nvfnotify.ack\t77\nvfnotify.hello\t1\n");
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(13).any(|w| w == b"vfnotify.sync") {
                        let _ = s.write_all(b"vfnotify.ack\t999999\n");
                        let _ = s.write_all(&vec![b'a'; 16 * 1024]);
                        seen.clear();
                    }
                }
            });
        }
    });
    let host = host("fanotify", &src, &[&addr], &[]);
    let (out, report) = sync(&host, "2s");
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_ne!(outcome(&report, &addr), "acknowledged");
    poll_until("connection dropped", DEADLINE, || {
        host.guest(&addr)["barrier"]["overlong_replies"]
            .as_u64()
            .unwrap()
            >= 1
    });
    let g = host.guest(&addr);
    assert!(g["barrier"]["bad_replies"].as_u64().unwrap() >= 3, "{g}");
    assert_eq!(g["barrier"]["acked"], 0, "{g}");
    poll_until("reconnected", DEADLINE, || {
        host.guest(&addr)["connections"].as_u64().unwrap() >= 2
    });
    // Still serving.
    assert_eq!(host.status()["channels"]["docs"]["state"], "watching");
}
