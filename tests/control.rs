//! The control socket: every command, errors that keep the connection usable, subscriptions
//! (the overlay link's protocol), and the `notify`/`status` clients.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{tempdir, vfnotify};
use daemon_support::{DEADLINE, Daemon, counter, poll_until, trigger_present};
use serde_json::{Value, json};
use vfnotify::control::ClientError;

/// A raw line-oriented connection to the control socket.
struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn new(d: &Daemon) -> Raw {
        let s = UnixStream::connect(&d.control).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Raw {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }
    fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).unwrap();
        self.w.write_all(b"\n").unwrap();
    }
    fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("a message");
        assert!(n > 0, "connection closed");
        serde_json::from_str(&line).expect("JSON")
    }
    fn ask(&mut self, req: Value) -> Value {
        self.send(&req.to_string());
        self.recv()
    }
}

#[test]
fn control_socket_is_private() {
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        d.control.parent().unwrap().is_dir(),
        "parent folder created"
    );
}

#[test]
fn hello_checks_the_major_version() {
    let d = Daemon::start(&[]);
    let mut c = Raw::new(&d);
    let r = c.ask(json!({"cmd": "hello", "args": {"protocol": "1.0"}, "id": 1}));
    assert_eq!(r["id"], 1);
    assert_eq!(r["result"]["protocol"], "1.0");
    assert_eq!(
        r["result"]["program"],
        format!("vfnotify {}", env!("CARGO_PKG_VERSION"))
    );
    let r = c.ask(json!({"cmd": "hello", "id": "no-args"}));
    assert_eq!(r["id"], "no-args");
    assert_eq!(r["result"]["protocol"], "1.0");
    let r = c.ask(json!({"cmd": "hello", "args": {"protocol": "2.0"}, "id": 2}));
    assert_eq!(r["error"]["class"], "incompatible-version");
    assert!(r["error"]["desc"].as_str().unwrap().contains("2.0"));
    assert_eq!(r["id"], 2);
}

#[test]
fn errors_keep_the_connection_usable() {
    let d = Daemon::start(&[]);
    let mut c = Raw::new(&d);
    c.send("{not json");
    let r = c.recv();
    assert_eq!(r["error"]["class"], "parse");
    let r = c.ask(json!({"cmd": "frobnicate", "id": 5}));
    assert_eq!(r["error"]["class"], "unknown-command");
    assert_eq!(r["id"], 5);
    let r = c.ask(json!({"args": {}, "id": 6}));
    assert_eq!(r["error"]["class"], "bad-request");
    let r = c.ask(json!({"cmd": "handled", "args": {"seq": 1}, "id": 7}));
    assert_eq!(r["error"]["class"], "not-subscribed");
    let r = c.ask(json!({"cmd": "status", "id": 8}));
    assert!(r["result"]["counters"].is_object(), "{r}");
    assert!(counter(&r["result"], "control_errors") >= 4);
}

#[test]
fn overlong_request_gets_an_error_and_the_connection_closes() {
    let d = Daemon::start(&[]);
    let mut c = Raw::new(&d);
    let big = format!(
        "{{\"cmd\":\"status\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let _ = c.w.write_all(big.as_bytes());
    let r = c.recv();
    assert_eq!(r["error"]["class"], "overlong");
    let mut rest = Vec::new();
    let _ = c.r.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // The daemon still answers others.
    assert!(d.status()["counters"].is_object());
}

#[test]
fn status_reports_listeners_channels_counters() {
    let dir = tempdir();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let d = Daemon::start(&["--map", &format!("docs={}", docs.display())]);
    let s = d.status();
    assert_eq!(
        s["listeners"],
        json!([format!("unix:{}", d.peer.display())])
    );
    assert_eq!(s["channels"]["docs"], json!([docs]));
    assert_eq!(s["overlays"], json!([]));
    for k in [
        "received",
        "unknown_channel",
        "triggers_ok",
        "triggers_failed",
        "coalesced",
        "connections",
    ] {
        assert!(s["counters"][k].is_u64(), "{k}");
    }
    for k in [
        "overlong",
        "non_utf8",
        "bad_relpath",
        "bad_channel",
        "refused_cid",
        "evicted",
        "idle_timeout",
        "slow_line",
        "overlay_unlinked",
    ] {
        assert!(s["counters"]["dropped"][k].is_u64(), "dropped.{k}");
    }
    // The CLI: readable and JSON.
    let o = vfnotify()
        .args(["status", "--control"])
        .arg(&d.control)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("docs ->") && text.contains("listeners:") && text.contains("received: 0"),
        "{text}"
    );
    let o = vfnotify()
        .args(["status", "--json", "--control"])
        .arg(&d.control)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["channels"], s["channels"]);
}

#[test]
fn clients_report_a_missing_daemon() {
    let dir = tempdir();
    let path = dir.path().join("none.sock");
    for args in [vec!["status"], vec!["notify", "docs"]] {
        let o = vfnotify()
            .args(&args)
            .arg("--control")
            .arg(&path)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("no daemon at {}", path.display())),
            "{err}"
        );
    }
}

#[test]
fn notify_acts_like_a_peer_line_and_reports() {
    let dir = tempdir();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let d = Daemon::start(&["--map", &format!("docs={}", docs.display())]);
    let mut c = d.client();
    let r = c
        .request("notify", json!({"channel": "docs", "paths": ["a/b"]}))
        .unwrap();
    assert_eq!(
        r,
        json!({"channel": "docs", "overlays": 0, "handled": 0, "triggers": 1})
    );
    assert!(trigger_present(&docs), "the trigger ran before the answer");
    match c.request("notify", json!({"channel": "docs", "paths": ["../etc"]})) {
        Err(ClientError::Remote { class, .. }) => assert_eq!(class, "bad-path"),
        other => panic!("{other:?}"),
    }
    match c.request("notify", json!({"channel": "other"})) {
        Err(ClientError::Remote { class, .. }) => assert_eq!(class, "unknown-channel"),
        other => panic!("{other:?}"),
    }
    // The CLI.
    let o = vfnotify()
        .args(["notify", "--control"])
        .arg(&d.control)
        .args(["docs", "x"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!trigger_present(&docs));
    let s = d.status();
    assert_eq!(counter(&s, "received"), 3);
    assert_eq!(counter(&s, "unknown_channel"), 1);
}

/// An overlay's side of the protocol, by hand.
fn subscribe(d: &Daemon, channel: &str, mountpoint: &std::path::Path) -> Raw {
    let mut o = Raw::new(d);
    let r = o.ask(json!({"cmd": "subscribe", "args": {"channel": channel, "mountpoint": mountpoint, "pid": 4242}, "id": 1}));
    assert!(r["result"]["subscription"].is_u64(), "{r}");
    o
}

#[test]
fn subscribed_overlay_gets_events_and_notify_waits_for_its_ack() {
    let dir = tempdir();
    let d = Daemon::start(&[]);
    let mnt = dir.path().join("mnt");
    let mut overlay = subscribe(&d, "docs", &mnt);
    let s = d.status();
    assert_eq!(s["overlays"][0]["channel"], "docs");
    assert_eq!(s["overlays"][0]["pid"], 4242);
    assert_eq!(s["overlays"][0]["mountpoint"], json!(mnt));

    // A peer line reaches the overlay as an event.
    d.send(b"docs\ta//b\n");
    let ev = overlay.recv();
    assert_eq!(ev["event"]["type"], "notify");
    assert_eq!(ev["event"]["channel"], "docs");
    assert_eq!(ev["event"]["paths"], json!(["a/b"]));
    let seq1 = ev["event"]["seq"].as_u64().unwrap();
    overlay.send(
        &json!({"cmd": "handled", "args": {"seq": seq1, "stats": {"invalidated": 1}}, "id": 2})
            .to_string(),
    );
    assert_eq!(overlay.recv()["result"], json!({}));

    // `notify` answers only after the ack.
    let control = d.control.clone();
    let notifier = std::thread::spawn(move || {
        let t = Instant::now();
        let o = vfnotify()
            .args(["notify", "--control"])
            .arg(&control)
            .args(["docs", "x", "y"])
            .output()
            .unwrap();
        (o, t.elapsed())
    });
    let ev = overlay.recv();
    assert_eq!(ev["event"]["paths"], json!(["x", "y"]));
    let seq2 = ev["event"]["seq"].as_u64().unwrap();
    assert!(seq2 > seq1);
    std::thread::sleep(Duration::from_millis(300)); // hold the ack: notify must still be waiting
    assert!(
        !notifier.is_finished(),
        "notify returned before the overlay acknowledged"
    );
    overlay.send(
        &json!({"cmd": "handled", "args": {"seqs": [seq2], "stats": {"invalidated": 3}}, "id": 3})
            .to_string(),
    );
    assert_eq!(overlay.recv()["id"], 3);
    let (o, _) = notifier.join().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 of 1 overlays"));
    let s = d.status();
    assert_eq!(s["overlays"][0]["handled"], 2);
    assert_eq!(s["overlays"][0]["delivered"], 2);
    assert_eq!(s["overlays"][0]["stats"], json!({"invalidated": 3}));

    // A subscriber that goes away releases waiters and is removed.
    let mut c = d.client();
    let id = c.send("notify", json!({"channel": "docs"})).unwrap();
    assert_eq!(overlay.recv()["event"]["type"], "notify");
    drop(overlay);
    let r = loop {
        let m = c.recv().unwrap();
        if m["id"] == id {
            break m;
        }
    };
    assert_eq!(r["result"]["overlays"], 1);
    assert_eq!(r["result"]["handled"], 0);
    poll_until("overlay removed", DEADLINE, || {
        d.status()["overlays"] == json!([])
    });
}

#[test]
fn mapped_overlay_mountpoint_gets_the_notification_not_a_trigger_file() {
    let dir = tempdir();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let d = Daemon::start(&[
        "--map",
        &format!("docs={}", mnt.display()),
        "--coalesce-ms",
        "0",
    ]);
    // Following another channel, but mounted at docs' folder.
    let mut overlay = subscribe(&d, "overlay-own", &mnt);
    d.send(b"docs\tf.txt\n");
    let ev = overlay.recv();
    assert_eq!(ev["event"]["channel"], "docs");
    assert_eq!(ev["event"]["paths"], json!(["f.txt"]));
    d.wait_counter("received", 1);
    // Give a would-be trigger its chance, then check nothing was written.
    let mut c = d.client();
    overlay.send(&json!({"cmd": "handled", "args": {"seq": ev["event"]["seq"]}}).to_string());
    assert_eq!(overlay.recv()["result"], json!({}));
    let id = c.send("notify", json!({"channel": "docs"})).unwrap();
    let ev2 = overlay.recv();
    overlay.send(&json!({"cmd": "handled", "args": {"seq": ev2["event"]["seq"]}}).to_string());
    let r = c.recv().unwrap();
    assert_eq!(r["id"], id);
    // The trigger step ran (the answer waits for it) and skipped the overlay's folder.
    assert_eq!(
        r["result"],
        json!({"channel": "docs", "overlays": 1, "handled": 1, "triggers": 0}),
        "{r}"
    );
    assert!(!trigger_present(&mnt), "no trigger file in an overlay");
    assert_eq!(d.counter("triggers_ok"), 0);
}

#[test]
fn notify_times_out_when_an_overlay_never_acks() {
    let d = Daemon::start(&[]);
    let dir = tempdir();
    let mut overlay = subscribe(&d, "docs", &dir.path().join("m"));
    let mut c = d.client();
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let id = c.send("notify", json!({"channel": "docs"})).unwrap();
    let _ev = overlay.recv();
    let r = c.recv().unwrap();
    assert_eq!(r["id"], id);
    assert_eq!(r["error"]["class"], "timeout", "{r}");
    assert!(r["error"]["desc"].as_str().unwrap().contains("0 of 1"));
    assert!(
        t.elapsed() >= Duration::from_secs(9),
        "timed out early: {:?}",
        t.elapsed()
    );
}
