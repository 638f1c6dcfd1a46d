//! The JSON control protocol (local Unix socket, mode 0600).
//!
//! Drives the server's own request parsing (`control::request::parse_request`, which
//! `daemon::server` calls for every line) in the order the server and its clients use it:
//!
//! 1. framing: the input is split at `\n` like the server's `read_until` loop (lines over
//!    `MAX_MESSAGE` are refused, all-whitespace lines skipped);
//! 2. each line is parsed; a parsed `notify` must carry validated, normalised, distinct paths
//!    that the overlay's `link::merge_events` takes back unchanged (one seq per event);
//! 3. the response is built with the server's `response` from the typed result bodies
//!    (`control::reply`) and must be one line of valid JSON that the client's
//!    `control::client::into_result` maps back to the same result/error;
//! 4. every parsed value is also given to the client side's readers of daemon messages:
//!    `link::merge_events`, the typed `DaemonStatus` behind `control::render_status`, the
//!    typed events, and `into_result` (no panic on any shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vfnotify::control::client::{ClientError, into_result};
use vfnotify::control::reply::{
    DaemonStatus, Done, ErrorBody, ErrorClass, HelloResult, NotifyResult, SubscribeResult,
    error, response,
};
use vfnotify::control::request::{Request, parse_request};
use vfnotify::control::wire::{EventMsg, LinkEvent, WatchEvent};
use vfnotify::control::{MAX_MESSAGE, render_event, render_status};
use vfnotify::link::merge_events;
use vfnotify::protocol::validate_relpath;

/// A typed result as the server writes it.
macro_rules! val {
    ($e:expr) => {
        serde_json::to_value($e).expect("a result serialises")
    };
}

/// The server's answer to a parsed request, with fixed results where it would touch the daemon
/// (as JSON: each command's typed result, serialised as the server does).
fn answer(req: Result<Request, ErrorBody>) -> Result<Value, ErrorBody> {
    match req? {
        Request::Hello => Ok(val!(HelloResult::ours())),
        Request::Notify { channel, scope } => {
            let paths = scope.paths();
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(validate_relpath(p).as_ref(), Ok(p));
                assert!(!p.split('/').any(|c| c == ".." || c == "." || c.is_empty()));
                assert!(!paths[..i].contains(p), "duplicate path {p:?}");
            }
            // What dispatch queues for an overlay: the wire form an overlay parses back.
            let ev = val!(EventMsg {
                event: LinkEvent::Notify {
                    channel: channel.clone(),
                    paths: scope.clone(),
                    seq: 1,
                },
            });
            let m = merge_events(&[ev]).expect("a notify event merges");
            assert_eq!(m.seqs, vec![1]);
            assert_eq!(
                m.scope.paths(),
                paths,
                "overlay re-validation changed the daemon's paths"
            );
            Ok(val!(NotifyResult {
                channel,
                overlays: 0,
                handled: 0,
                triggers: 0,
            }))
        }
        Request::Subscribe { mountpoint, .. } => {
            assert!(mountpoint.is_absolute());
            Ok(val!(SubscribeResult { subscription: 1 }))
        }
        Request::Handled { seqs, .. } => {
            // Cumulative ack: `max + 1` must not overflow (the server uses saturating_add).
            let _ = seqs.iter().max().map(|m| m.saturating_add(1));
            Ok(val!(Done {}))
        }
        Request::Status | Request::Progress | Request::Watch { .. } | Request::Unwatch { .. } => {
            Ok(val!(Done {}))
        }
    }
}

fn check_response(id: &Option<Value>, body: &Result<Value, ErrorBody>) {
    let line = response(id, body.clone());
    assert!(line.ends_with('\n'));
    assert_eq!(
        line.matches('\n').count(),
        1,
        "a response must be exactly one line: {line:?}"
    );
    let back: Value = serde_json::from_str(&line).expect("response is valid JSON");
    assert_eq!(back.get("id"), id.as_ref());
    match (body, into_result(back)) {
        (Ok(r), Ok(got)) => assert_eq!(&got, r),
        (Err(e), Err(ClientError::Remote { class, .. })) => assert_eq!(class, e.class.as_str()),
        (b, got) => panic!("into_result({b:?}) gave {got:?}"),
    }
}

fn overlay_side(v: &Value) {
    let msgs: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    if let Some(m) = merge_events(&msgs) {
        assert!(!m.seqs.is_empty());
        for p in m.scope.paths() {
            assert_eq!(validate_relpath(p).as_ref(), Ok(p));
        }
        assert!(
            m.scope
                .paths()
                .iter()
                .enumerate()
                .all(|(i, p)| !m.scope.paths()[..i].contains(p))
        );
    }
    if let Ok(s) = serde_json::from_value::<DaemonStatus>(v.clone()) {
        let _ = render_status(&s);
    }
    if let Ok(ev) = serde_json::from_value::<EventMsg<WatchEvent>>(v.clone()) {
        let _ = render_event(&ev.event);
    }
    let _ = into_result(v.clone());
}

fuzz_target!(|data: &[u8]| {
    // Framing as the server reads it: one request per `\n`, overlong refused.
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.len() > MAX_MESSAGE {
            let body = Err(error(ErrorClass::Overlong, "request too long; closing"));
            check_response(&None, &body);
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, req) = parse_request(line);
        let body = answer(req);
        check_response(&id, &body);
        if let Ok(v) = serde_json::from_slice::<Value>(line) {
            overlay_side(&v);
            // What the server writes must survive the client's framing: re-serialise and
            // check for a raw newline.
            let s = v.to_string();
            assert!(!s.contains('\n'));
        }
    }
});
