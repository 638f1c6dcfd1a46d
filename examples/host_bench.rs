//! End-to-end figures with the host watcher: a change made on the host's folder (no line sent by
//! hand: a running `vfnotify host` sees it and tells the guest daemon) until a watcher on the
//! guest's overlay gets the event.
//!
//! ```text
//! host_bench event SOURCE MOUNTPOINT RELDIR N
//!     an inotify watch (IN_CREATE) on MOUNTPOINT/RELDIR; N times a new file is written in
//!     SOURCE/RELDIR and the clock (started just before the write) stops when its IN_CREATE is
//!     read. Prints `p50_us p99_us max_us samples timeouts`.
//! host_bench burst SOURCE MOUNTPOINT RELDIR N HOST_PID
//!     N new files written in SOURCE/RELDIR as fast as possible; the clock stops when the watch
//!     on MOUNTPOINT/RELDIR has read every file's IN_CREATE and the folder lists N entries
//!     through the overlay. Prints `seconds_to_final host_cpu_seconds creates_seen`
//!     (host_cpu_seconds: user + system time of HOST_PID during the burst).
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vfnotify::sys::Inotify;

const TIMEOUT: Duration = Duration::from_secs(5);

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// User + system CPU seconds of `pid` (from /proc).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn watch(dir: &Path) -> std::io::Result<Inotify> {
    let ino = Inotify::new()?;
    ino.add_watch(dir, libc::IN_CREATE)?;
    Ok(ino)
}

fn event(src: &Path, mnt: &Path, n: usize) -> std::io::Result<String> {
    let ino = watch(mnt)?;
    let tag = std::process::id();
    let mut lat = Vec::with_capacity(n);
    let mut timeouts = 0;
    for i in 0..n {
        let name = format!("hev_{tag}_{i:06}");
        let t0 = Instant::now();
        std::fs::write(src.join(&name), b"x")?;
        let mut found = false;
        while !found {
            let left = TIMEOUT.saturating_sub(t0.elapsed());
            if left.is_zero() {
                timeouts += 1;
                break;
            }
            for e in ino.read(left.as_millis().max(1) as i32)? {
                if e.name == std::ffi::OsStr::new(&name) {
                    lat.push(t0.elapsed().as_micros() as u64);
                    found = true;
                }
            }
        }
    }
    lat.sort_unstable();
    Ok(format!(
        "{} {} {} {} {}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        lat.len(),
        timeouts
    ))
}

fn burst(src: &Path, mnt: &Path, n: usize, host: u32) -> std::io::Result<String> {
    let ino = watch(mnt)?;
    let tag = std::process::id();
    let cpu0 = cpu_seconds(host);
    let t0 = Instant::now();
    let writer = {
        let src = src.to_path_buf();
        std::thread::spawn(move || -> std::io::Result<()> {
            for i in 0..n {
                std::fs::write(src.join(format!("hb_{tag}_{i:06}")), b"x")?;
            }
            Ok(())
        })
    };
    let mut seen: HashSet<std::ffi::OsString> = HashSet::with_capacity(n);
    let deadline = Duration::from_secs(300);
    while seen.len() < n && t0.elapsed() < deadline {
        for e in ino.read(50)? {
            if e.mask & libc::IN_Q_OVERFLOW != 0 {
                return Err(std::io::Error::other("the watcher's own queue overflowed"));
            }
            seen.insert(e.name);
        }
    }
    writer
        .join()
        .map_err(|_| std::io::Error::other("writer panicked"))??;
    // The final state: the listing through the overlay.
    while std::fs::read_dir(mnt)?.count() < n && t0.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(format!(
        "{secs:.3} {:.2} {}",
        cpu_seconds(host) - cpu0,
        seen.len()
    ))
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!(
            "usage: host_bench event SOURCE MOUNTPOINT RELDIR N\n       host_bench burst SOURCE MOUNTPOINT RELDIR N HOST_PID"
        );
        ExitCode::from(2)
    };
    if a.len() < 5 {
        return usage();
    }
    let rel = a[3].trim_matches('/');
    let src = PathBuf::from(&a[1]).join(rel);
    let mnt = PathBuf::from(&a[2]).join(rel);
    let Ok(n) = a[4].parse::<usize>() else {
        return usage();
    };
    let res = match (a[0].as_str(), a.get(5).map(|p| p.parse::<u32>())) {
        ("event", None) => event(&src, &mnt, n),
        ("burst", Some(Ok(pid))) => burst(&src, &mnt, n, pid),
        _ => return usage(),
    };
    match res {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("host_bench {}: {e}", a[0]);
            ExitCode::FAILURE
        }
    }
}
