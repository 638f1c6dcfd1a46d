//! The real control server, end to end, in-process.
//!
//! `control_json` fuzzes the pure pieces; this target runs the daemon's actual
//! `daemon::server::accept_loop` on a private Unix socket (one daemon per fuzzing process,
//! no mapped channel, so nothing touches the file system) and sends each input as the bytes of
//! one control connection. A writer thread sends the input and shuts the write side; the
//! fuzzing thread reads every response until the server closes.
//!
//! Invariants checked beyond "no panic in the server":
//! - the server closes the connection within 5 s of the client's EOF (no hang, whatever was
//!   subscribed or notified);
//! - everything it writes is `\n`-terminated lines, each one valid JSON object holding exactly
//!   one of `result`, `error` (with string `class` and `desc`) or `event`;
//! - there are at most as many `result`/`error` responses as request lines (+1 for overlong);
//! - the daemon keeps answering (the next input gets a fresh connection).
#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vfnotify::control::MAX_MESSAGE;
use vfnotify::daemon::{DaemonConfig, Shared};
use vfnotify::transport::UnixListener;

fn server() -> &'static PathBuf {
    static SOCK: OnceLock<PathBuf> = OnceLock::new();
    SOCK.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vfnotify-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sock = dir.join("control.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Shared::new(DaemonConfig::new(sock.clone()));
        let listener = {
            let _g = rt.enter();
            UnixListener::bind(&sock, 0o600).expect("bind control socket")
        };
        rt.spawn(vfnotify::daemon::server::accept_loop(shared, listener));
        // The daemon lives as long as the fuzzing process.
        std::mem::forget(rt);
        sock
    })
}

fuzz_target!(|data: &[u8]| {
    let sock = server();
    let mut s = UnixStream::connect(sock).expect("daemon still accepts");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        // The server may close early (overlong request): a write error is fine then.
        let _ = w.write_all(&input);
        let _ = w.shutdown(Shutdown::Write);
    });
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        panic!("control server did not close within 5 s of EOF: {e}");
    }
    writer.join().unwrap();

    let requests = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    assert!(
        out.is_empty() || out.ends_with(b"\n"),
        "unterminated response"
    );
    let mut answers = 0;
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() <= 16 * 1024 * 1024);
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "server wrote invalid JSON ({e}): {:?}",
                String::from_utf8_lossy(line)
            )
        });
        let obj = v.as_object().expect("responses are objects");
        let kinds = ["result", "error", "event"]
            .iter()
            .filter(|k| obj.contains_key(**k))
            .count();
        assert_eq!(kinds, 1, "{v}");
        if let Some(e) = obj.get("error") {
            assert!(e["class"].is_string() && e["desc"].is_string(), "{v}");
        }
        if !obj.contains_key("event") {
            answers += 1;
        }
    }
    let overlong = usize::from(data.len() > MAX_MESSAGE);
    assert!(
        answers <= requests + overlong,
        "{answers} answers to {requests} requests"
    );
});
