//! Soak driver for `bench/soak.sh`: a long load of notification lines on the daemon's Unix
//! listener, real host changes on SOURCE, and a recursive inotify watcher on the overlay.
//!
//! ```text
//! cargo run --release --example soak -- --peer PEER.sock --control CTL.sock --channel soak \
//!     --src SRC --mnt MNT [--secs 600] [--lines 1000000] [--conns 32] [--per-conn 1000] \
//!     [--files 200] [--dirs 10] [--change-every 25]
//! ```
//!
//! 1. Setup, through the overlay (a local change needs no notification): `MNT/soak/d<k>/f<i>`,
//!    file `i` in folder `i % dirs`; every folder is listed so the overlay holds it.
//! 2. Load: `conns` sender threads share `lines` lines over `secs` seconds, paced, each on its
//!    own connection that it replaces every `per-conn` lines. Every `change-every`-th line slot a
//!    sender changes one of its own files on SOURCE (write a counter, rename to `f<i>.moved` and
//!    back, chmod) and sends `CHANNEL\tRELPATH` for it (a rename: both names, in one write).
//!    The other lines are repeats: a file path (most), a folder path, or the bare channel.
//!    Meanwhile a watcher thread reads inotify events on `MNT/soak`, recursively.
//! 3. Quiesce: wait until the overlay acknowledged everything the daemon delivered and the
//!    watcher has been quiet for a moment.
//! 4. Final: every file gets the content `final-<i>` on SOURCE and its notification; then each
//!    must read back through the overlay within `--deadline` seconds, and the watcher must have
//!    seen a content event (IN_MODIFY or IN_CLOSE_WRITE) for it at or after that change.
//!
//! Prints `key=value` lines on stdout (the script parses them); exit 1 when a final check fails.

use clap::Parser;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(about = "vfnotify soak driver (see bench/soak.sh)")]
struct Args {
    /// The daemon's Unix listener (`--listen unix:PATH`).
    #[arg(long)]
    peer: PathBuf,
    /// The daemon's control socket.
    #[arg(long)]
    control: PathBuf,
    /// The channel the overlay follows.
    #[arg(long, default_value = "soak")]
    channel: String,
    /// SOURCE (the host side).
    #[arg(long)]
    src: PathBuf,
    /// The overlay's mountpoint.
    #[arg(long)]
    mnt: PathBuf,
    /// Duration of the load, seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Lines to send during the load.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// Concurrent connections (sender threads).
    #[arg(long, default_value_t = 32)]
    conns: u64,
    /// Lines per connection before reconnecting.
    #[arg(long, default_value_t = 1000)]
    per_conn: u64,
    /// Files changed by the driver.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Folders they are spread over.
    #[arg(long, default_value_t = 10)]
    dirs: usize,
    /// One line slot in this many carries a real host change.
    #[arg(long, default_value_t = 25)]
    change_every: u64,
    /// Seconds for the final state to show through the overlay, and for its events.
    #[arg(long, default_value_t = 5)]
    deadline: u64,
    /// Only create the files (through the overlay) and list the folders, then exit.
    #[arg(long)]
    setup_only: bool,
}

/// xorshift64*: enough randomness for choosing lines, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the watcher saw for one file (under either of its names).
#[derive(Default, Clone)]
struct Seen {
    events: u64,
    last_content: Option<Instant>,
}

#[derive(Default)]
struct WatchState {
    files: Vec<Seen>,
    by_kind: [u64; 6], // modify, close_write, attrib, moved_from, moved_to, other
    overflows: u64,
    unknown: u64,
    last_event: Option<Instant>,
}

struct Shared {
    args: Args,
    sent: AtomicU64,
    changes: [AtomicU64; 3], // write, rename, chmod
    change_errors: AtomicU64,
    connections: AtomicU64,
    send_errors: AtomicU64,
    watch: Mutex<WatchState>,
    stop_watch: AtomicBool,
}

impl Shared {
    fn rel(&self, i: usize, moved: bool) -> String {
        format!(
            "soak/d{}/f{}{}",
            i % self.args.dirs,
            i,
            if moved { ".moved" } else { "" }
        )
    }
}

fn connect(peer: &Path) -> UnixStream {
    let mut delay = Duration::from_millis(5);
    loop {
        match UnixStream::connect(peer) {
            Ok(s) => return s,
            Err(e) => {
                eprintln!("soak: connect {}: {e}; retrying", peer.display());
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One sender: its share of the lines, paced, reconnecting every `per_conn` lines; it owns the
/// files `i` with `i % conns == t` (no two threads change one file).
fn sender(sh: Arc<Shared>, t: u64, start: Instant) {
    let a = &sh.args;
    let share = a.lines / a.conns + u64::from(t < a.lines % a.conns);
    let rate = share as f64 / a.secs as f64; // lines per second for this thread
    let mine: Vec<usize> = (0..a.files).filter(|i| *i as u64 % a.conns == t).collect();
    let mut moved = vec![false; a.files];
    let mut mode_alt = vec![false; a.files];
    let mut counter = vec![0u64; a.files];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let mut stream: Option<UnixStream> = None;
    let mut on_conn = 0u64;
    let mut k = 0u64;
    let mut buf = String::new();
    while k < share {
        // Pace: line k is due at start + k / rate.
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        buf.clear();
        let mut n = 1;
        if k % a.change_every == t % a.change_every && !mine.is_empty() && k + 1 < share {
            let i = mine[rng.below(mine.len() as u64) as usize];
            let src = |m: bool| a.src.join(sh.rel(i, m));
            let op = rng.below(3);
            let r = match op {
                0 => {
                    counter[i] += 1;
                    fs::write(src(moved[i]), format!("count-{i}-{}\n", counter[i]))
                }
                1 => {
                    let r = fs::rename(src(moved[i]), src(!moved[i]));
                    if r.is_ok() {
                        buf.push_str(&format!("{}\t{}\n", a.channel, sh.rel(i, moved[i])));
                        moved[i] = !moved[i];
                        n = 2;
                    }
                    r
                }
                _ => {
                    mode_alt[i] = !mode_alt[i];
                    let mode = if mode_alt[i] { 0o600 } else { 0o644 };
                    fs::set_permissions(src(moved[i]), fs::Permissions::from_mode(mode))
                }
            };
            match r {
                Ok(()) => {
                    sh.changes[op as usize].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    sh.change_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: change {op} of file {i}: {e}");
                }
            }
            buf.push_str(&format!("{}\t{}\n", a.channel, sh.rel(i, moved[i])));
        } else {
            let r = rng.below(100);
            if r == 0 {
                buf.push_str(&format!("{}\n", a.channel));
            } else if r < 10 {
                let d = rng.below(a.dirs as u64);
                buf.push_str(&format!("{}\tsoak/d{d}\n", a.channel));
            } else {
                let i = rng.below(a.files as u64) as usize;
                buf.push_str(&format!("{}\t{}\n", a.channel, sh.rel(i, false)));
            }
        }
        send(&sh, &mut stream, &mut on_conn, buf.as_bytes(), n);
        k += n;
    }
    // Leave every file under its own name for the final phase.
    for &i in &mine {
        if moved[i] {
            let from = a.src.join(sh.rel(i, true));
            let to = a.src.join(sh.rel(i, false));
            match fs::rename(&from, &to) {
                Ok(()) => {
                    sh.changes[1].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    sh.change_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: rename back of file {i}: {e}");
                }
            }
            moved[i] = false;
            let line = format!(
                "{c}\t{}\n{c}\t{}\n",
                sh.rel(i, true),
                sh.rel(i, false),
                c = a.channel
            );
            send(&sh, &mut stream, &mut on_conn, line.as_bytes(), 2);
        }
    }
    if let Some(s) = stream.take() {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}

/// Write `n` lines on the current connection, replacing it every `per_conn` lines; a failed
/// write is retried once on a fresh connection (counted).
fn send(sh: &Shared, stream: &mut Option<UnixStream>, on_conn: &mut u64, bytes: &[u8], n: u64) {
    if *on_conn >= sh.args.per_conn {
        if let Some(s) = stream.take() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        *on_conn = 0;
    }
    for attempt in 0..2 {
        let s = stream.get_or_insert_with(|| {
            sh.connections.fetch_add(1, Ordering::Relaxed);
            connect(&sh.args.peer)
        });
        match s.write_all(bytes) {
            Ok(()) => {
                *on_conn += n;
                sh.sent.fetch_add(n, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                sh.send_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: write (attempt {attempt}): {e}");
                *stream = None;
                *on_conn = 0;
            }
        }
    }
}

/// File index from a name `f<i>` or `f<i>.moved`.
fn file_index(name: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(name).ok()?;
    let s = s.strip_prefix('f')?;
    let s = s.strip_suffix(".moved").unwrap_or(s);
    s.parse().ok()
}

const WATCH_MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// The recursive inotify watcher over `MNT/soak`: a watch per folder, new folders added as
/// they appear (IN_CREATE|IN_ISDIR), as a file manager does.
fn watcher(sh: Arc<Shared>, ready: std::sync::mpsc::Sender<()>) {
    // SAFETY: plain syscalls on an fd this function owns; buffers outlive the calls.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    let mut wds: std::collections::HashMap<i32, PathBuf> = Default::default();
    let add = |wds: &mut std::collections::HashMap<i32, PathBuf>, p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: fd is this function's inotify fd; c is a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), WATCH_MASK) };
        if wd < 0 {
            eprintln!(
                "soak: inotify_add_watch {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            );
        } else {
            wds.insert(wd, p.to_path_buf());
        }
    };
    let root = sh.args.mnt.join("soak");
    add(&mut wds, &root);
    for d in 0..sh.args.dirs {
        add(&mut wds, &root.join(format!("d{d}")));
    }
    let _ = ready.send(());
    let mut buf = vec![0u8; 256 * 1024];
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    while !sh.stop_watch.load(Ordering::Relaxed) {
        // SAFETY: pfd is one valid pollfd, borrowed for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r <= 0 {
            continue;
        }
        // SAFETY: buf is writable for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let now = Instant::now();
        let mut off = 0usize;
        let mut st = sh.watch.lock().unwrap();
        st.last_event = Some(now);
        while off + std::mem::size_of::<libc::inotify_event>() <= n as usize {
            // SAFETY: the kernel wrote a whole inotify_event (+ name) at `off`.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
            let hdr = std::mem::size_of::<libc::inotify_event>();
            let name_bytes = &buf[off + hdr..off + hdr + ev.len as usize];
            let name = &name_bytes[..name_bytes.iter().position(|b| *b == 0).unwrap_or(0)];
            off += hdr + ev.len as usize;
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                st.overflows += 1;
                continue;
            }
            if ev.mask & libc::IN_ISDIR != 0 && ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
            {
                if let Some(parent) = wds.get(&ev.wd).cloned() {
                    let p = parent.join(std::ffi::OsStr::from_bytes(name));
                    drop(st);
                    add(&mut wds, &p);
                    st = sh.watch.lock().unwrap();
                }
            }
            let kind = if ev.mask & libc::IN_MODIFY != 0 {
                0
            } else if ev.mask & libc::IN_CLOSE_WRITE != 0 {
                1
            } else if ev.mask & libc::IN_ATTRIB != 0 {
                2
            } else if ev.mask & libc::IN_MOVED_FROM != 0 {
                3
            } else if ev.mask & libc::IN_MOVED_TO != 0 {
                4
            } else {
                5
            };
            st.by_kind[kind] += 1;
            match file_index(name) {
                Some(i) if i < st.files.len() => {
                    let f = &mut st.files[i];
                    f.events += 1;
                    if kind <= 1 {
                        f.last_content = Some(now);
                    }
                }
                _ if name.is_empty() => {}
                _ => st.unknown += 1,
            }
        }
    }
    // SAFETY: fd is ours and not used after this.
    unsafe { libc::close(fd) };
}

/// The daemon's `status` result, over the control socket.
fn status(control: &Path) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(control).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"{\"cmd\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    v.get("result").cloned()
}

/// Wait until the daemon has received `sent` lines, its overlays acknowledged everything
/// delivered, and the watcher has been quiet for 500 ms. Returns whether that happened in time.
fn quiesce(sh: &Shared, sent: u64, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        thread::sleep(Duration::from_millis(100));
        let Some(st) = status(&sh.args.control) else {
            continue;
        };
        let received = st["counters"]["received"].as_u64().unwrap_or(0);
        let settled = st["overlays"].as_array().is_some_and(|o| {
            !o.is_empty()
                && o.iter().all(|o| {
                    o["queued"].as_u64() == Some(0)
                        && o["handled"].as_u64() == o["delivered"].as_u64()
                })
        });
        let quiet = sh
            .watch
            .lock()
            .unwrap()
            .last_event
            .is_none_or(|t| t.elapsed() > Duration::from_millis(500));
        if received >= sent && settled && quiet {
            return true;
        }
    }
    false
}

fn main() {
    let args = Args::parse();
    assert!(args.conns > 0 && args.files > 0 && args.dirs > 0 && args.change_every > 0);
    let sh = Arc::new(Shared {
        sent: AtomicU64::new(0),
        changes: Default::default(),
        change_errors: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        watch: Mutex::new(WatchState {
            files: vec![Seen::default(); args.files],
            ..Default::default()
        }),
        stop_watch: AtomicBool::new(false),
        args: args.clone(),
    });

    // 1. Setup through the overlay, then list every folder so the overlay holds its view.
    let root = args.mnt.join("soak");
    if !root.exists() {
        for d in 0..args.dirs {
            fs::create_dir_all(root.join(format!("d{d}"))).expect("mkdir through the overlay");
        }
        for i in 0..args.files {
            fs::write(args.mnt.join(sh.rel(i, false)), format!("init-{i}\n"))
                .expect("create through the overlay");
        }
    }
    for d in 0..args.dirs {
        for e in fs::read_dir(root.join(format!("d{d}"))).expect("readdir") {
            let _ = e.and_then(|e| e.metadata());
        }
    }
    if args.setup_only {
        println!("setup=ok files={} dirs={}", args.files, args.dirs);
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let w = {
        let sh = sh.clone();
        thread::spawn(move || watcher(sh, tx))
    };
    rx.recv().expect("watcher ready");
    println!("setup=ok files={} dirs={}", args.files, args.dirs);

    // 2. Load.
    let start = Instant::now();
    let senders: Vec<_> = (0..args.conns)
        .map(|t| {
            let sh = sh.clone();
            thread::spawn(move || sender(sh, t, start))
        })
        .collect();
    let progress = {
        let sh = sh.clone();
        thread::spawn(move || {
            let every = Duration::from_secs(60.min(sh.args.secs / 4).max(5));
            let mut next = start + every;
            while !sh.stop_watch.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(200));
                if Instant::now() >= next {
                    next += every;
                    let w = sh.watch.lock().unwrap();
                    eprintln!(
                        "soak: {:>4.0} s  sent {}  changes {}  watcher events {}",
                        start.elapsed().as_secs_f64(),
                        sh.sent.load(Ordering::Relaxed),
                        sh.changes
                            .iter()
                            .map(|c| c.load(Ordering::Relaxed))
                            .sum::<u64>(),
                        w.by_kind.iter().sum::<u64>()
                    );
                }
            }
        })
    };
    for s in senders {
        s.join().expect("sender");
    }
    let load_secs = start.elapsed().as_secs_f64();
    let load_sent = sh.sent.load(Ordering::Relaxed);

    // 3. Quiesce.
    let q0 = Instant::now();
    let quiet = quiesce(&sh, load_sent, Duration::from_secs(60));
    let quiesce_secs = q0.elapsed().as_secs_f64();
    let events_load: u64 = sh.watch.lock().unwrap().by_kind.iter().sum();

    // 4. Final change of every file, each followed by its notification on one connection.
    let mut stream = connect(&args.peer);
    sh.connections.fetch_add(1, Ordering::Relaxed);
    let mut t_final = Vec::with_capacity(args.files);
    let mut final_errors = 0u64;
    for i in 0..args.files {
        let t = Instant::now();
        if let Err(e) = fs::write(args.src.join(sh.rel(i, false)), format!("final-{i}")) {
            final_errors += 1;
            eprintln!("soak: final write of file {i}: {e}");
        }
        let line = format!("{}\t{}\n", args.channel, sh.rel(i, false));
        match stream.write_all(line.as_bytes()) {
            Ok(()) => {
                sh.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                final_errors += 1;
                eprintln!("soak: final send of file {i}: {e}");
            }
        }
        t_final.push(t);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    drop(stream);
    let sent_done = Instant::now();
    let deadline = sent_done + Duration::from_secs(args.deadline);

    // Visible through the overlay?
    let mut visible = vec![false; args.files];
    let mut visible_at = sent_done;
    loop {
        for (i, v) in visible.iter_mut().enumerate() {
            if !*v {
                let got = fs::read(args.mnt.join(sh.rel(i, false))).unwrap_or_default();
                if got == format!("final-{i}").as_bytes() {
                    *v = true;
                }
            }
        }
        if visible.iter().all(|v| *v) {
            visible_at = Instant::now();
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let not_visible: Vec<usize> = (0..args.files).filter(|i| !visible[*i]).collect();
    for &i in not_visible.iter().take(10) {
        let got = fs::read(args.mnt.join(sh.rel(i, false)));
        let src = fs::read(args.src.join(sh.rel(i, false)));
        eprintln!(
            "soak: file {i} ({}) not visible: overlay reads {:?}, SOURCE has {:?}",
            sh.rel(i, false),
            got.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            src.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        );
    }

    // A content event at or after each final change?
    let missed: Vec<usize> = loop {
        let missed: Vec<usize> = {
            let st = sh.watch.lock().unwrap();
            (0..args.files)
                .filter(|&i| st.files[i].last_content.is_none_or(|t| t < t_final[i]))
                .collect()
        };
        if missed.is_empty() || Instant::now() >= deadline {
            break missed;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let max_event_latency = {
        let st = sh.watch.lock().unwrap();
        (0..args.files)
            .filter_map(|i| {
                st.files[i]
                    .last_content
                    .map(|t| t.saturating_duration_since(sent_done))
            })
            .max()
            .unwrap_or_default()
    };
    for &i in missed.iter().take(10) {
        eprintln!(
            "soak: no content event for file {i} ({}) after its final change",
            sh.rel(i, false)
        );
    }
    // Let stragglers arrive, then stop the watcher.
    thread::sleep(Duration::from_millis(300));
    sh.stop_watch.store(true, Ordering::Relaxed);
    w.join().expect("watcher");
    progress.join().expect("progress");

    let st = sh.watch.lock().unwrap();
    let c = |i: usize| sh.changes[i].load(Ordering::Relaxed);
    let out = [
        ("load_secs", format!("{load_secs:.1}")),
        ("load_sent", load_sent.to_string()),
        ("sent", sh.sent.load(Ordering::Relaxed).to_string()),
        (
            "final_sent",
            (sh.sent.load(Ordering::Relaxed) - load_sent).to_string(),
        ),
        (
            "connections",
            sh.connections.load(Ordering::Relaxed).to_string(),
        ),
        (
            "send_errors",
            sh.send_errors.load(Ordering::Relaxed).to_string(),
        ),
        ("changes_write", c(0).to_string()),
        ("changes_rename", c(1).to_string()),
        ("changes_chmod", c(2).to_string()),
        (
            "change_errors",
            sh.change_errors.load(Ordering::Relaxed).to_string(),
        ),
        ("quiesced", quiet.to_string()),
        ("quiesce_secs", format!("{quiesce_secs:.2}")),
        ("events_load", events_load.to_string()),
        ("events_total", st.by_kind.iter().sum::<u64>().to_string()),
        ("events_modify", st.by_kind[0].to_string()),
        ("events_close_write", st.by_kind[1].to_string()),
        ("events_attrib", st.by_kind[2].to_string()),
        ("events_moved_from", st.by_kind[3].to_string()),
        ("events_moved_to", st.by_kind[4].to_string()),
        ("events_other", st.by_kind[5].to_string()),
        ("events_unknown_name", st.unknown.to_string()),
        ("watch_overflows", st.overflows.to_string()),
        (
            "files_without_event",
            st.files
                .iter()
                .filter(|f| f.events == 0)
                .count()
                .to_string(),
        ),
        ("final_errors", final_errors.to_string()),
        ("final_not_visible", not_visible.len().to_string()),
        (
            "final_visible_ms",
            format!(
                "{:.1}",
                visible_at.duration_since(sent_done).as_secs_f64() * 1e3
            ),
        ),
        ("final_missed_events", missed.len().to_string()),
        (
            "final_event_max_ms",
            format!("{:.1}", max_event_latency.as_secs_f64() * 1e3),
        ),
    ];
    for (k, v) in out {
        println!("{k}={v}");
    }
    let ok = not_visible.is_empty() && missed.is_empty() && final_errors == 0;
    std::process::exit(if ok { 0 } else { 1 });
}
