//! Notification latency through a vfnotify overlay, measured in-process (no process spawns).
//!
//! The host side is simulated exactly as `vfnotify send --to unix:SOCK` does it: a new file is
//! written on SOURCE, then one connection to the daemon's unix listener carries the line
//! `CHANNEL\tRELPATH\n`. The clock starts just before connecting.
//!
//! ```text
//! notify_latency visible SOCK CHANNEL SOURCE MOUNTPOINT RELDIR N
//!     before each change the new name is looked up through the overlay (so the kernel caches
//!     the negative entry), then the file is made on SOURCE and notified; the clock stops when
//!     stat() through the overlay finds it.
//! notify_latency event   SOCK CHANNEL SOURCE MOUNTPOINT RELDIR N
//!     an inotify watch (IN_CREATE) on MOUNTPOINT/RELDIR; the clock stops when the IN_CREATE
//!     for the new name is read.
//! notify_latency burst   SOCK CHANNEL SOURCE MOUNTPOINT RELDIR N
//!     N new files in one folder the guest watches (made on SOURCE, then one notification scoped
//!     to the folder); three runs, each with one observer: the listing through the overlay has
//!     all N; the last file made opens through the overlay (the overlay expires every name
//!     before it replays any, so then all do); the Nth IN_CREATE is read.
//! ```
//!
//! Prints `p50_us p99_us max_us samples timeouts`, or for `burst` `listing_us readable_us
//! events_us` (from the send).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

fn send(sock: &Path, line: &[u8]) -> io::Result<()> {
    let mut s = UnixStream::connect(sock)?;
    s.write_all(line)?;
    s.shutdown(std::net::Shutdown::Write)?;
    Ok(())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths")
}

fn exists(p: &CString) -> bool {
    vfnotify::sys::fstatat(vfnotify::sys::cwd(), p).is_ok()
}

struct Setup {
    sock: PathBuf,
    channel: String,
    source: PathBuf,
    mountpoint: PathBuf,
    reldir: String,
    n: usize,
}

impl Setup {
    fn host_change(&self, name: &str) -> io::Result<Instant> {
        std::fs::write(self.source.join(&self.reldir).join(name), b"x")?;
        let line = format!("{}\t{}/{}\n", self.channel, self.reldir, name);
        let t0 = Instant::now();
        send(&self.sock, line.as_bytes())?;
        Ok(t0)
    }
}

fn visible(s: &Setup, tag: &str) -> io::Result<(Vec<u64>, usize)> {
    let mut lat = Vec::with_capacity(s.n);
    let mut timeouts = 0;
    for i in 0..s.n {
        let name = format!("vis_{tag}_{i:06}");
        let through = cpath(&s.mountpoint.join(&s.reldir).join(&name));
        if exists(&through) {
            return Err(io::Error::other(format!("{name} exists before the change")));
        }
        let t0 = s.host_change(&name)?;
        loop {
            if exists(&through) {
                lat.push(t0.elapsed().as_micros() as u64);
                break;
            }
            if t0.elapsed() > TIMEOUT {
                timeouts += 1;
                break;
            }
            std::thread::sleep(Duration::from_micros(10));
        }
    }
    Ok((lat, timeouts))
}

fn event(s: &Setup, tag: &str) -> io::Result<(Vec<u64>, usize)> {
    // SAFETY: plain syscalls on an fd owned here; closed at the end.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let dir = cpath(&s.mountpoint.join(&s.reldir));
    // SAFETY: `dir` is NUL-terminated; `fd` is an inotify fd.
    if unsafe { libc::inotify_add_watch(fd, dir.as_ptr(), libc::IN_CREATE) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut lat = Vec::with_capacity(s.n);
    let mut timeouts = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..s.n {
        let name = format!("ev_{tag}_{i:06}");
        let t0 = s.host_change(&name)?;
        let mut found = false;
        while !found {
            let left = TIMEOUT.saturating_sub(t0.elapsed());
            if left.is_zero() {
                timeouts += 1;
                break;
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            if r == 0 {
                continue;
            }
            // SAFETY: reading into an owned buffer of the given length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let now = t0.elapsed().as_micros() as u64;
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let u =
                    |o: usize| u32::from_ne_bytes(buf[off + o..off + o + 4].try_into().unwrap());
                let (mask, len) = (u(4), u(12) as usize);
                let raw = &buf[off + 16..(off + 16 + len).min(n)];
                let ev_name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                if mask & libc::IN_CREATE != 0 && ev_name == name.as_bytes() {
                    lat.push(now);
                    found = true;
                }
                off += 16 + len;
            }
        }
    }
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    Ok((lat, timeouts))
}

/// What `burst` waits for after the notification.
#[derive(Clone, Copy)]
enum Observe {
    Listing,
    Readable,
    Events,
}

/// One burst: a new watched folder, N files made in it on SOURCE, one scoped notification;
/// microseconds from the send until `what` holds.
fn burst(s: &Setup, tag: &str, what: Observe) -> io::Result<u64> {
    let dir = format!("{}/burst_{tag}", s.reldir);
    std::fs::create_dir(s.source.join(&dir))?;
    send(&s.sock, format!("{}\t{dir}\n", s.channel).as_bytes())?;
    let through = s.mountpoint.join(&dir);
    let t = Instant::now();
    while std::fs::metadata(&through).is_err() {
        if t.elapsed() > TIMEOUT {
            return Err(io::Error::other(format!("{dir} never showed")));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    // The guest watches the folder (which also makes the kernel hold it).
    let ino = vfnotify::sys::Inotify::new()?;
    ino.add_watch(&through, libc::IN_CREATE)?;
    let names: Vec<String> = (0..s.n).map(|i| format!("f{i:06}")).collect();
    for n in &names {
        std::fs::write(s.source.join(&dir).join(n), b"x")?;
    }
    let t0 = Instant::now();
    send(&s.sock, format!("{}\t{dir}\n", s.channel).as_bytes())?;
    let timeout = || -> io::Result<()> {
        if t0.elapsed() > TIMEOUT * 4 {
            Err(io::Error::other("burst: timed out"))
        } else {
            Ok(())
        }
    };
    let mut seen = std::collections::HashSet::new();
    let take_events = |seen: &mut std::collections::HashSet<std::ffi::OsString>, ms| {
        for e in ino.read(ms)? {
            if e.mask & libc::IN_CREATE != 0 {
                seen.insert(e.name);
            }
        }
        io::Result::Ok(())
    };
    let us = match what {
        Observe::Listing => loop {
            if std::fs::read_dir(&through)?.count() >= s.n {
                break t0.elapsed();
            }
            timeout()?;
        },
        // The last file made: the names are expired all at once before any replay, so when it
        // opens, every file does.
        Observe::Readable => {
            let last = through.join(names.last().map(String::as_str).unwrap_or(""));
            while std::fs::File::open(&last).is_err() {
                timeout()?;
            }
            t0.elapsed()
        }
        Observe::Events => loop {
            take_events(&mut seen, 100)?;
            if seen.len() >= s.n {
                break t0.elapsed();
            }
            timeout()?;
        },
    };
    // Every event has come before the next run starts (its replays would delay that one).
    while seen.len() < s.n {
        take_events(&mut seen, 100)?;
        timeout()?;
    }
    Ok(us.as_micros() as u64)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 7 {
        eprintln!("usage: notify_latency visible|event SOCK CHANNEL SOURCE MOUNTPOINT RELDIR N");
        return ExitCode::from(2);
    }
    let Ok(n) = a[6].parse() else {
        eprintln!("notify_latency: N must be a number");
        return ExitCode::from(2);
    };
    let s = Setup {
        sock: a[1].clone().into(),
        channel: a[2].clone(),
        source: a[3].clone().into(),
        mountpoint: a[4].clone().into(),
        reldir: a[5].trim_matches('/').to_string(),
        n,
    };
    // 1 ns timer slack: the polling sleeps are as short as asked.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let tag = format!("{}", std::process::id());
    if a[0] == "burst" {
        let mut out = Vec::new();
        for (k, what) in [Observe::Listing, Observe::Readable, Observe::Events]
            .into_iter()
            .enumerate()
        {
            match burst(&s, &format!("{tag}_{k}"), what) {
                Ok(us) => out.push(us.to_string()),
                Err(e) => {
                    eprintln!("notify_latency burst: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("{}", out.join(" "));
        return ExitCode::SUCCESS;
    }
    let res = match a[0].as_str() {
        "visible" => visible(&s, &tag),
        "event" => event(&s, &tag),
        _ => {
            eprintln!("notify_latency: mode must be visible or event");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok((mut lat, timeouts)) => {
            lat.sort_unstable();
            println!(
                "{} {} {} {} {}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().copied().unwrap_or(0),
                lat.len(),
                timeouts
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("notify_latency {}: {e}", a[0]);
            ExitCode::FAILURE
        }
    }
}
