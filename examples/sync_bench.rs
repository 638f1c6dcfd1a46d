//! The cost of the cross-VM barrier: `vfnotify host sync` round trips with G guests.
//!
//! ```text
//! sync_bench SOURCE N G [BACKEND]
//!     starts G guest daemons on Unix listeners (no overlay: what is measured is the barrier
//!     itself, the overlay's own handling is in the notification rows) and a `vfnotify host`
//!     watching SOURCE for all of them; then N times a file is written in SOURCE and a `sync`
//!     request is timed over the host's control socket (the watcher's drain, the lines and the
//!     sync line to every guest, every guest's ack). Prints `p50_us p99_us max_us samples
//!     failures`.
//! ```
//! The `vfnotify` binary is the one next to this example's folder (`target/release/vfnotify`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use vfnotify::control::Client;

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("vfnotify"))
        .unwrap_or_else(|| PathBuf::from("vfnotify"))
}

fn wait_socket(p: &Path) -> Result<(), String> {
    let t = Instant::now();
    while Client::connect(p).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} never accepted", p.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn run(src: &Path, n: usize, g: usize, backend: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("vfnotify-sync-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut kids = Kill(Vec::new());
    let mut tos = Vec::new();
    for i in 0..g {
        let peer = dir.join(format!("peer{i}.sock"));
        let ctl = dir.join(format!("ctl{i}.sock"));
        let child = Command::new(bin())
            .arg("--listen")
            .arg(format!("unix:{}", peer.display()))
            .arg("--control")
            .arg(&ctl)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin().display()))?;
        kids.0.push(child);
        wait_socket(&ctl)?;
        tos.push(format!("unix:{}", peer.display()));
    }
    let host_ctl = dir.join("host.sock");
    let mut cmd = Command::new(bin());
    cmd.arg("host")
        .arg("--watch")
        .arg(format!("bench={}", src.display()))
        .arg("--backend")
        .arg(backend)
        .arg("--control")
        .arg(&host_ctl);
    for t in &tos {
        cmd.arg("--to").arg(t);
    }
    let host = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    kids.0.push(host);
    wait_socket(&host_ctl)?;
    let (mut c, _) = Client::connect_hello(&host_ctl).map_err(|e| e.to_string())?;
    c.set_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let sync = |c: &mut Client| {
        c.request("sync", json!({"timeout_ms": 10_000}))
            .map(|r| r["ok"] == true)
            .unwrap_or(false)
    };
    // Until every guest is connected and negotiated (and past the daemons' relink grace).
    let t = Instant::now();
    while !sync(&mut c) {
        if t.elapsed() > Duration::from_secs(30) {
            return Err("the guests never acknowledged".into());
        }
    }
    let mut lat = Vec::with_capacity(n);
    let mut failures = 0;
    for i in 0..n {
        std::fs::write(src.join(format!("sync_{i:06}")), b"x").map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        if sync(&mut c) {
            lat.push(t0.elapsed().as_micros() as u64);
        } else {
            failures += 1;
        }
    }
    for i in 0..n {
        let _ = std::fs::remove_file(src.join(format!("sync_{i:06}")));
    }
    drop(kids);
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_unstable();
    Ok(format!(
        "{} {} {} {} {failures}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        lat.len()
    ))
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let src = PathBuf::from(a.get(1)?);
        let n: usize = a.get(2)?.parse().ok()?;
        let g: usize = a.get(3)?.parse().ok().filter(|g| *g > 0)?;
        let backend = a.get(4).cloned().unwrap_or_else(|| "auto".into());
        Some((src, n, g, backend))
    })();
    let Some((src, n, g, backend)) = parsed else {
        eprintln!("usage: sync_bench SOURCE N GUESTS [auto|fanotify|inotify]");
        return ExitCode::from(2);
    };
    match run(&src, n, g, &backend) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sync_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
