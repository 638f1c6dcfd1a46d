//! `vfnotify host`: the host watcher over a private tmpfs, real guest daemons on Unix listeners
//! with overlays over the same folder (here the host's view and the guest's SOURCE are the same
//! folder), and no hand-sent line: every change kind reaches an overlay watcher with the events
//! the same change made locally gives, with both backends; fan-out to many guests; hostile names;
//! echo between two guests; bursts; faults; the command line.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/host.rs"]
mod host_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon_support::{DEADLINE, Daemon, poll_until};
use host_support::{FakeGuest, Host, OverlayOn, Tmpfs};
use overlay_support::{Event, Linked, Watcher, mask_name, tree_digest};

/// A guest: a daemon and an overlay of a SOURCE on a private tmpfs. Dropped in order: the
/// overlay, then the tmpfs, then the rest.
struct Guest {
    l: Linked,
    tmp: Option<Tmpfs>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        drop(self.l.mount.take());
        drop(self.tmp.take());
    }
}

impl std::ops::Deref for Guest {
    type Target = Linked;
    fn deref(&self) -> &Linked {
        &self.l
    }
}

/// A guest whose SOURCE is a fresh tmpfs filled by `fill`; `None` when FUSE tests cannot run.
fn guest(test: &str, fill: impl FnOnce(&Path)) -> Option<Guest> {
    guest_with(test, "", fill)
}

/// [`guest`] with overlay options `opts`.
fn guest_with(test: &str, opts: &str, fill: impl FnOnce(&Path)) -> Option<Guest> {
    let tmp = std::cell::RefCell::new(None);
    let l = Linked::with_source(test, opts, |src| {
        *tmp.borrow_mut() = Some(Tmpfs::at(src));
        fill(src);
    })?;
    Some(Guest {
        l,
        tmp: tmp.into_inner(),
    })
}

fn unix(p: &Path) -> String {
    format!("unix:{}", p.display())
}

/// `vfnotify host` watching `docs` at `src` for the daemons listening at `peers`.
fn host_for(backend: &str, src: &Path, peers: &[&Path], extra: &[&str]) -> Host {
    let watch = format!("docs={}", src.display());
    let mut args = vec!["--watch", &watch, "--backend", backend];
    let tos: Vec<String> = peers.iter().map(|p| unix(p)).collect();
    for t in &tos {
        args.push("--to");
        args.push(t);
    }
    args.extend_from_slice(extra);
    let h = Host::start(&args);
    h.wait_connected(&tos);
    h
}

// ---------------------------------------------------------------------------------------------
// Exact events, per change kind, against the same change made locally.

/// Each case works in folders of its own, prepared identically in both SOURCEs.
struct Case {
    name: &'static str,
    op: fn(&Path),
    check: Check,
}

/// How a case's host events are compared with the local ones.
enum Check {
    /// The same sequence.
    Exact,
    /// A tree removal: the same events, siblings in any order (`rm -rf` removes them in its
    /// readdir order, the overlay in its own), each folder's delete after everything inside it.
    Removal,
}

fn w(p: &Path, rel: &str, data: &[u8]) {
    fs::write(p.join(rel), data).unwrap();
}

fn prepare(src: &Path) {
    for d in [
        "create",
        "delete",
        "rewrite",
        "append",
        "truncate",
        "chmod",
        "chown",
        "utimes",
        "rename",
        "across1",
        "across2",
        "atomic",
        "mkdir",
        "rmrf/tree/sub",
        "symlink",
        "link1",
        "link2",
        "xattr",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    w(src, "delete/f", b"gone soon");
    w(src, "rewrite/f", b"bravo");
    w(src, "rewrite/g", b"an old version of g");
    w(src, "append/f", b"start");
    w(src, "truncate/f", b"0123456789");
    w(src, "chmod/f", b"c");
    w(src, "chown/f", b"c");
    w(src, "utimes/f", b"t");
    w(src, "rename/a", b"a");
    w(src, "across1/a", b"a");
    w(src, "atomic/f", b"old content");
    w(src, "rmrf/tree/x", b"x");
    w(src, "rmrf/tree/sub/y", b"y");
    w(src, "link1/f", b"l");
    w(src, "xattr/f", b"x");
    std::os::unix::fs::symlink("one", src.join("symlink/l")).unwrap();
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let dir = fs::File::open(p.parent().unwrap()).unwrap();
    let n = vfnotify::sys::cstr(p.file_name().unwrap()).unwrap();
    let a = vfnotify::sys::cstr(OsStr::new(name)).unwrap();
    vfnotify::sys::setxattr(std::os::fd::AsFd::as_fd(&dir), &n, &a, value, 0).unwrap();
}

const CASES: &[Case] = &[
    Case {
        name: "create",
        op: |p| w(p, "create/new.txt", b"fresh"),
        check: Check::Exact,
    },
    Case {
        name: "delete",
        op: |p| fs::remove_file(p.join("delete/f")).unwrap(),
        check: Check::Exact,
    },
    Case {
        name: "rewrite (same size)",
        op: |p| w(p, "rewrite/f", b"BRAVO"),
        check: Check::Exact,
    },
    Case {
        name: "rewrite in pieces",
        op: |p| {
            use std::io::Write;
            let mut f = fs::File::create(p.join("rewrite/g")).unwrap();
            f.write_all(b"first half, ").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            f.write_all(b"second half").unwrap();
        },
        check: Check::Exact,
    },
    Case {
        name: "append",
        op: |p| {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(p.join("append/f"))
                .unwrap();
            f.write_all(b" and more").unwrap();
        },
        check: Check::Exact,
    },
    Case {
        name: "truncate",
        op: |p| {
            fs::OpenOptions::new()
                .write(true)
                .open(p.join("truncate/f"))
                .unwrap()
                .set_len(3)
                .unwrap()
        },
        check: Check::Exact,
    },
    Case {
        name: "chmod",
        op: |p| fs::set_permissions(p.join("chmod/f"), fs::Permissions::from_mode(0o600)).unwrap(),
        check: Check::Exact,
    },
    Case {
        name: "chown",
        op: |p| std::os::unix::fs::lchown(p.join("chown/f"), Some(4242), Some(4243)).unwrap(),
        check: Check::Exact,
    },
    Case {
        name: "utimes",
        op: |p| {
            let t = fs::FileTimes::new()
                .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000));
            fs::File::open(p.join("utimes/f"))
                .unwrap()
                .set_times(t)
                .unwrap();
        },
        check: Check::Exact,
    },
    Case {
        name: "rename within a folder",
        op: |p| fs::rename(p.join("rename/a"), p.join("rename/b")).unwrap(),
        check: Check::Exact,
    },
    Case {
        name: "rename across folders",
        op: |p| fs::rename(p.join("across1/a"), p.join("across2/a")).unwrap(),
        check: Check::Exact,
    },
    Case {
        name: "atomic save",
        op: |p| {
            w(p, "atomic/.f.tmp", b"new content!");
            fs::rename(p.join("atomic/.f.tmp"), p.join("atomic/f")).unwrap();
        },
        check: Check::Exact,
    },
    Case {
        name: "nested mkdir",
        op: |p| {
            fs::create_dir_all(p.join("mkdir/x/y/z")).unwrap();
            w(p, "mkdir/x/f", b"1");
            w(p, "mkdir/x/y/z/g", b"2");
        },
        check: Check::Exact,
    },
    Case {
        name: "rm -rf",
        op: |p| fs::remove_dir_all(p.join("rmrf/tree")).unwrap(),
        check: Check::Removal,
    },
    Case {
        name: "symlink retarget",
        op: |p| {
            std::os::unix::fs::symlink("two", p.join("symlink/.l.tmp")).unwrap();
            fs::rename(p.join("symlink/.l.tmp"), p.join("symlink/l")).unwrap();
        },
        check: Check::Exact,
    },
    Case {
        name: "hard link",
        op: |p| fs::hard_link(p.join("link1/f"), p.join("link2/h")).unwrap(),
        check: Check::Exact,
    },
    Case {
        name: "xattr",
        op: |p| setxattr(&p.join("xattr/f"), "user.colour", b"blue"),
        check: Check::Exact,
    },
];

/// Events as readable tokens relative to `root`: `MASK dir/name`, renames numbered by cookie,
/// and consecutive `MODIFY` of one name as one (a write made locally in several system calls and
/// the same content replayed in one are the same change to a watcher; an extra `CLOSE_WRITE` is
/// not: a watcher acting on it would read a half-written file).
fn normalise(events: &[Event], root: &Path) -> Vec<String> {
    let mut cookies: Vec<u32> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for e in events {
        // A temporary name (an atomic save's, or the overlay's for a replacement it replays)
        // is the maker's choice.
        let name = if e.name.starts_with('.')
            && (e.name.ends_with(".tmp") || e.name.contains(".vfnotify-"))
        {
            "<tmp>"
        } else {
            e.name.as_str()
        };
        let rel = e.dir.strip_prefix(root).unwrap_or(&e.dir).join(name);
        let rel = rel.display().to_string();
        if e.mask == libc::IN_MODIFY {
            let tok = format!("MODIFY {rel}");
            if out.last() != Some(&tok) {
                out.push(tok);
            }
            continue;
        }
        let mut tok = format!("{} {rel}", mask_name(e.mask));
        if e.mask & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
            let k = match cookies.iter().position(|c| *c == e.cookie) {
                Some(k) => k,
                None => {
                    cookies.push(e.cookie);
                    cookies.len() - 1
                }
            };
            tok.push_str(&format!(" #{k}"));
        }
        out.push(tok);
    }
    out
}

/// Events on `w` until `done` holds for them (or 10 s), then until the host and the overlay
/// have nothing left to do.
fn host_events(
    w: &mut Watcher,
    host: &Host,
    g: &Linked,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let mut ev = Vec::new();
    let start = Instant::now();
    while !done(&ev) && start.elapsed() < Duration::from_secs(10) {
        ev.extend(w.events(Duration::from_millis(20)));
    }
    host.settle(Duration::from_millis(50));
    overlay_idle(g);
    ev.extend(w.events(Duration::from_millis(100)));
    ev
}

/// Wait until the overlay handled every notification its daemon delivered before: a scoped
/// `notify` (of a name that does not exist) returns once the overlay acknowledged it, and
/// notifications are handled in order.
fn overlay_idle(g: &Linked) {
    overlay_idle_at(&g.daemon, DEADLINE);
}

fn overlay_idle_at(d: &Daemon, deadline: Duration) {
    let start = Instant::now();
    while !common::notify_ok(&d.control, "docs", &[".vfnotify-test-settle"]) {
        assert!(
            start.elapsed() < deadline,
            "the overlay did not catch up within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exact_events(test: &str, backend: &str) {
    exact_events_with(test, backend, "");
}

/// [`exact_events`] with the host's overlay mounted with `opts`.
fn exact_events_with(test: &str, backend: &str, opts: &str) {
    let Some(local) = guest(&format!("{test}_local"), prepare) else {
        return;
    };
    let Some(remote) = guest_with(&format!("{test}_host"), opts, prepare) else {
        return;
    };
    let host = host_for(backend, &remote.src, &[&remote.daemon.peer], &[]);
    assert_eq!(host.status()["backend"], backend);
    // Fed by the host, the overlay trusts its notifications (`revalidate=auto`).
    poll_until("the overlay trusts the host's feed", DEADLINE, || {
        remote.overlay_stats()["trusted"] == true
    });
    host.settle(Duration::from_millis(50));
    overlay_idle(&remote);
    let mut wl = Watcher::new();
    wl.add_recursive(&local.mnt);
    let mut wr = Watcher::new();
    wr.add_recursive(&remote.mnt);
    assert!(wr.events(Duration::from_millis(50)).is_empty());
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in CASES {
        (case.op)(&local.mnt);
        let want = normalise(&wl.events(Duration::from_millis(300)), &local.mnt);
        assert!(
            !want.is_empty(),
            "{}: the local change gave no event",
            case.name
        );
        (case.op)(&remote.src);
        let got = host_events(&mut wr, &host, &remote, |ev| {
            normalise(ev, &remote.mnt).len() >= want.len()
        });
        let got = normalise(&got, &remote.mnt);
        // Fresh: the overlay shows SOURCE exactly.
        assert_eq!(
            tree_digest(&remote.mnt),
            tree_digest(&remote.src),
            "{}: the overlay is not fresh",
            case.name
        );
        match &case.check {
            Check::Exact => {
                if got != want {
                    failures.push(format!("{}:\n  local {want:?}\n  host  {got:?}", case.name));
                }
            }
            Check::Removal => {
                let mut a = got.clone();
                let mut b = want.clone();
                a.sort();
                b.sort();
                let ordered = got.iter().enumerate().all(|(i, t)| {
                    let Some(dir) = t.strip_prefix("DELETE|ISDIR ") else {
                        return true;
                    };
                    let inside = format!("{dir}/");
                    got[i + 1..].iter().all(|later| !later.contains(&inside))
                });
                if a != b || !ordered {
                    failures.push(format!("{}:\n  local {want:?}\n  host  {got:?}", case.name));
                }
            }
        }
        report.push(format!("{}: {got:?}", case.name));
    }
    eprintln!("{backend}:\n{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{backend}: events differ:\n{}",
        failures.join("\n")
    );
    if opts.contains("passthrough=off") {
        poll_until("opens no longer sent", DEADLINE, || {
            remote.overlay_stats()["open_free"] == 1
        });
    }
}

#[test]
fn every_change_kind_gives_the_local_events_with_fanotify() {
    exact_events("host_exact_fanotify", "fanotify");
}

#[test]
fn every_change_kind_gives_the_local_events_with_inotify() {
    exact_events("host_exact_inotify", "inotify");
}

/// As deployed over virtiofs: no kernel passthrough, so fed by the host the overlay also stops
/// receiving opens (zero-message opens); every event and the freshness check still hold.
#[test]
fn every_change_kind_gives_the_local_events_under_zero_message_opens() {
    exact_events_with("host_exact_open_free", "fanotify", "passthrough=off");
}

// ---------------------------------------------------------------------------------------------
// Fake guests: what arrives on the wire.

/// A tmpfs with the shared folder `share` in it (and room outside it, on the same filesystem).
struct Share {
    tmp: Tmpfs,
    src: PathBuf,
}

fn share() -> Share {
    let tmp = Tmpfs::new();
    let src = tmp.path.join("share");
    fs::create_dir_all(&src).unwrap();
    Share { tmp, src }
}

const BACKENDS: [&str; 2] = ["fanotify", "inotify"];

fn host_to(backend: &str, src: &Path, guests: &[&FakeGuest], extra: &[&str]) -> Host {
    let watch = format!("docs={}", src.display());
    let mut args = vec!["--watch", &watch, "--backend", backend];
    for g in guests {
        args.push("--to");
        args.push(&g.addr);
    }
    args.extend_from_slice(extra);
    let h = Host::start(&args);
    let addrs: Vec<String> = guests.iter().map(|g| g.addr.clone()).collect();
    h.wait_connected(&addrs);
    h
}

#[test]
fn the_first_line_is_the_whole_channel_then_exact_paths_renames_in_one_write() {
    if !host_support::root_ready("host_wire") {
        return;
    }
    for backend in BACKENDS {
        let s = share();
        fs::create_dir_all(s.tmp.path.join("outside")).unwrap();
        w(&s.tmp.path, "outside/in.txt", b"i");
        w(&s.src, "out.txt", b"o");
        let g = FakeGuest::new();
        let host = host_to(backend, &s.src, &[&g], &[]);
        g.wait_line("the whole channel first", |l| l == "docs");
        assert_eq!(g.lines()[0], "docs", "{backend}");
        let step = |what: &str, f: &dyn Fn(), want: &str| {
            f();
            g.wait_line(what, |l| l == want);
        };
        step("create", &|| w(&s.src, "a.txt", b"1"), "docs\ta.txt");
        step(
            "mkdir",
            &|| fs::create_dir_all(s.src.join("d/e")).unwrap(),
            "docs\td",
        );
        step(
            "in a new folder",
            &|| w(&s.src, "d/e/f.txt", b"2"),
            "docs\td/e/f.txt",
        );
        step(
            "moved in",
            &|| fs::rename(s.tmp.path.join("outside/in.txt"), s.src.join("in.txt")).unwrap(),
            "docs\tin.txt",
        );
        step(
            "moved out",
            &|| fs::rename(s.src.join("out.txt"), s.tmp.path.join("outside/out.txt")).unwrap(),
            "docs\tout.txt",
        );
        step(
            "moved folder",
            &|| fs::rename(s.src.join("d"), s.src.join("d2")).unwrap(),
            "docs\td2",
        );
        step(
            "inside the moved folder",
            &|| w(&s.src, "d2/e/g.txt", b"3"),
            "docs\td2/e/g.txt",
        );
        // A rename: both paths in one write (one read here), old first.
        fs::rename(s.src.join("a.txt"), s.src.join("d2/b.txt")).unwrap();
        g.wait_line("rename", |l| l == "docs\td2/b.txt");
        let conns = g.conns.lock().unwrap().clone();
        let read = conns[0]
            .reads
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .find(|r| r.contains("docs\td2/b.txt"))
            .unwrap();
        assert!(
            read.contains("docs\ta.txt\ndocs\td2/b.txt\n"),
            "{backend}: the rename's paths came apart: {read:?}"
        );
        // Changes outside the share reach no guest.
        let before = g.lines().len();
        w(&s.tmp.path, "outside/noise.txt", b"n");
        fs::remove_file(s.tmp.path.join("outside/noise.txt")).unwrap();
        w(&s.src, "marker", b"m");
        g.wait_line("marker", |l| l == "docs\tmarker");
        let after: Vec<String> = g.lines()[before..].to_vec();
        assert_eq!(after, ["docs\tmarker"], "{backend}");
        let st = host.status();
        assert!(st["counters"]["events"].as_u64().unwrap() > 0);
        if backend == "fanotify" {
            assert!(st["counters"]["outside"].as_u64().unwrap() >= 1, "{st}");
        }
        for n in host_support::decode(&g.all_bytes()) {
            assert!(n.channel == "docs" || n.channel.starts_with("vfnotify."));
        }
    }
}

/// Names a guest could make up to inject a line for another channel, or break one.
#[test]
fn hostile_names_never_make_a_broken_or_foreign_line() {
    if !host_support::root_ready("host_hostile_names") {
        return;
    }
    for backend in BACKENDS {
        let s = share();
        let media = s.tmp.path.join("media");
        fs::create_dir_all(&media).unwrap();
        fs::create_dir_all(s.src.join("sub")).unwrap();
        let g = FakeGuest::new();
        let watch_docs = format!("docs={}", s.src.display());
        let watch_media = format!("media={}", media.display());
        let host = Host::start(&[
            "--watch",
            &watch_docs,
            "--watch",
            &watch_media,
            "--backend",
            backend,
            "--to",
            &g.addr,
        ]);
        host.wait_connected(std::slice::from_ref(&g.addr));
        let names: Vec<&[u8]> = vec![
            b"x\tmedia",
            b"y\nmedia",
            b"z\r\nmedia\tetc",
            b"\r",
            b"\xff\xfebad",
            b"space at end ",
        ];
        for n in &names {
            let p = s.src.join("sub").join(OsStr::from_bytes(n));
            fs::write(&p, b"h").unwrap();
        }
        // A path longer than a line: folders of 255-byte names, a file at the bottom.
        // (Made folder by folder through descriptors: the whole path is over PATH_MAX.)
        {
            use std::os::fd::AsFd;
            use vfnotify::sys;
            fs::create_dir(s.src.join("deep")).unwrap();
            let mut fd = fs::File::open(s.src.join("deep")).unwrap().into();
            for i in 0..17 {
                let name = sys::cstr(OsStr::new(&format!("{i:02}{}", "n".repeat(253)))).unwrap();
                sys::mkdirat(std::os::fd::OwnedFd::as_fd(&fd), &name, 0o755).unwrap();
                fd = sys::openat(fd.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
            }
            let f =
                sys::openat(fd.as_fd(), c"bottom", libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
            drop(f);
        }
        w(&s.src, "sub/marker", b"m");
        g.wait_line("marker", |l| l == "docs\tsub/marker");
        host.settle(Duration::from_millis(50));
        let mut lines = host_support::decode(&g.all_bytes());
        // The barrier's hello first (see tests/barrier.rs), then each channel whole once at the
        // connection, then only `docs` lines.
        assert_eq!(lines.remove(0).channel, "vfnotify.hello");
        assert_eq!(lines[0].channel, "docs");
        assert_eq!(lines[1].channel, "media");
        assert_eq!(lines[1].path, None);
        for n in &lines[2..] {
            if n.channel.starts_with("vfnotify.") {
                continue;
            }
            assert_eq!(
                n.channel, "docs",
                "{backend}: a line for another channel: {n:?}"
            );
            if let Some(p) = &n.path {
                assert!(
                    p == "sub" || p == "sub/marker" || p.starts_with("deep"),
                    "{backend}: unexpected path {p:?}"
                );
                assert!(p.len() < 4096);
            }
        }
        // Instead, the folders were sent.
        assert!(
            lines.iter().any(|n| n.path.as_deref() == Some("sub")),
            "{backend}"
        );
        assert!(
            host.counter("unsendable_names") >= names.len() as u64,
            "{backend}"
        );
    }
}

#[test]
fn a_guest_down_at_start_gets_the_whole_channel_when_it_comes_up() {
    if !host_support::root_ready("host_guest_late") {
        return;
    }
    let s = share();
    let dir = common::tempdir();
    let path = dir.path().join("late.sock");
    let addr = unix(&path);
    let watch = format!("docs={}", s.src.display());
    let host = Host::start(&["--watch", &watch, "--to", &addr]);
    w(&s.src, "while-down.txt", b"1");
    poll_until("connection attempts", DEADLINE, || {
        host.guest(&addr)["connect_failures"].as_u64().unwrap_or(0) >= 2
    });
    assert_ne!(host.guest(&addr)["state"], "connected");
    let g = FakeGuest::at(&path);
    host.wait_connected(std::slice::from_ref(&addr));
    g.wait_line("whole channel", |l| l == "docs");
    w(&s.src, "after.txt", b"2");
    g.wait_line("after", |l| l == "docs\tafter.txt");
    assert_eq!(g.lines()[0], "docs");
    assert!(!g.lines().iter().any(|l| l.contains("while-down")));
}

#[test]
fn a_guest_restarted_mid_burst_reconnects_and_ends_fresh() {
    if !common::fuse_ready("host_guest_restarted") {
        return;
    }
    let peer_dir = common::tempdir();
    let fixed = peer_dir.path().join("peer.sock");
    let listen = unix(&fixed);
    let Some(mut g) = guest("host_guest_restarted", |_| {}) else {
        return;
    };
    // The guest's daemon also listens at a fixed path, kept across its restart.
    // (A replaced daemon is kept until the end: its temporary folder holds the control socket.)
    let control = g.l.daemon.control.clone();
    let mut old = Vec::new();
    g.l.daemon.terminate();
    old.push(std::mem::replace(
        &mut g.l.daemon,
        Daemon::start_at(&control, &["--listen", &listen]),
    ));
    g.l.wait_linked();
    let watch = format!("docs={}", g.src.display());
    let host = Host::start(&["--watch", &watch, "--to", &listen]);
    host.wait_connected(std::slice::from_ref(&listen));
    let src = g.src.clone();
    let burst = std::thread::spawn(move || {
        for i in 0..2000 {
            fs::write(src.join(format!("f{i:04}")), b"x").unwrap();
            if i % 200 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    g.l.daemon.terminate();
    old.push(std::mem::replace(
        &mut g.l.daemon,
        Daemon::start_at(&control, &["--listen", &listen]),
    ));
    burst.join().unwrap();
    poll_until("reconnected", DEADLINE, || {
        host.guest(&listen)["reconnects"].as_u64().unwrap_or(0) >= 1
    });
    host.settle(Duration::from_millis(100));
    g.l.wait_linked();
    overlay_idle(&g);
    poll_until("overlay fresh after the burst", DEADLINE, || {
        fs::read_dir(g.mnt.clone()).unwrap().count() == 2000
    });
    assert_eq!(tree_digest(&g.mnt), tree_digest(&g.src));
    drop(g);
    drop(old);
}

#[test]
fn a_guest_that_never_reads_delays_no_other_and_collapses() {
    if !host_support::root_ready("host_guest_stuck") {
        return;
    }
    let s = share();
    let live = FakeGuest::new();
    let stuck = FakeGuest::new();
    stuck
        .reading
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let host = host_to("fanotify", &s.src, &[&live, &stuck], &["--queue", "1000"]);
    // Enough long lines to fill the stuck guest's socket buffer several times over (ten per
    // folder, so no folder collapses).
    let long = "l".repeat(200);
    for i in 0..4000 {
        let d = s.src.join(format!("d{:03}", i / 10));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("{i:04}{long}")), b"").unwrap();
    }
    let t0 = Instant::now();
    w(&s.src, "last.txt", b"l");
    live.wait_line("the last change at the live guest", |l| {
        l == "docs\tlast.txt"
    });
    let took = t0.elapsed();
    let st = host.guest(&stuck.addr);
    assert!(st["queue_depth"].as_u64().unwrap() > 1000, "{st}");
    assert_eq!(st["state"], "connected", "{st}");
    eprintln!("live guest: last change after {took:?} with a stuck guest: {st}");
    assert!(
        took < Duration::from_secs(5),
        "the stuck guest delayed the live one: {took:?}"
    );
    // Once it reads again it catches up, with the whole channel for what it fell behind on.
    stuck
        .reading
        .store(true, std::sync::atomic::Ordering::Relaxed);
    stuck.wait_line("caught up", |l| l == "docs\tlast.txt" || l == "docs");
    poll_until("stuck guest caught up", DEADLINE, || {
        host.guest(&stuck.addr)["queue_depth"].as_u64() == Some(0)
    });
    let st = host.guest(&stuck.addr);
    assert!(st["overflows"].as_u64().unwrap() >= 1, "{st}");
    assert!(
        stuck.lines().iter().skip(1).any(|l| l == "docs"),
        "no whole-channel line after falling behind"
    );
}

#[test]
fn a_kernel_queue_overflow_sends_the_whole_channel() {
    if !host_support::root_ready("host_overflow") {
        return;
    }
    for backend in BACKENDS {
        let s = share();
        let g = FakeGuest::new();
        let host = host_to(backend, &s.src, &[&g], &[]);
        g.wait_line("first", |l| l == "docs");
        host.pause();
        for i in 0..20_000 {
            fs::write(s.src.join(format!("f{i}")), b"").unwrap();
        }
        host.resume();
        poll_until("overflow seen", Duration::from_secs(30), || {
            host.counter("kernel_overflows") >= 1
        });
        // The line follows the counter: wait for it (under load it comes after any settle).
        poll_until(
            &format!("{backend}: a whole-channel line after the overflow"),
            Duration::from_secs(10),
            || g.lines().iter().skip(1).any(|l| l == "docs"),
        );
        // And it goes on.
        w(&s.src, "after", b"a");
        g.wait_line("after the overflow", |l| l == "docs\tafter");
    }
}

#[test]
fn a_base_path_removed_and_recreated_is_sent_whole_and_watched_again() {
    if !host_support::root_ready("host_base_removed") {
        return;
    }
    for backend in BACKENDS {
        let s = share();
        w(&s.src, "f", b"1");
        let g = FakeGuest::new();
        let host = host_to(backend, &s.src, &[&g], &[]);
        g.wait_line("first", |l| l == "docs");
        let wholes = || g.lines().iter().filter(|l| *l == "docs").count();
        // Seen once in CI under the load of the other host tests: "missing" not reached within
        // 10 s (not reproduced since). The wait is longer here, and a timeout says what the host
        // logged and showed, for the next one who meets it.
        let state_is = |want: &str| {
            let t = Instant::now();
            loop {
                let st = host.status();
                if st["channels"]["docs"]["state"] == want {
                    return;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{backend}: the channel's state is not {want:?} after 30 s: {st}\nhost log:\n{}",
                    host.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        fs::remove_dir_all(&s.src).unwrap();
        state_is("missing");
        poll_until("whole after removal", DEADLINE, || wholes() >= 2);
        fs::create_dir(&s.src).unwrap();
        state_is("watching");
        poll_until("whole after recreation", DEADLINE, || wholes() >= 3);
        fs::create_dir(s.src.join("new")).unwrap();
        g.wait_line("a new folder", |l| l == "docs\tnew");
        w(&s.src, "new/x", b"2");
        g.wait_line("inside the new folder", |l| l == "docs\tnew/x");
        assert!(host.counter("base_changes") >= 2);
    }
}

#[test]
fn the_inotify_watch_limit_degrades_the_channel_loudly() {
    if !host_support::root_ready("host_watch_limit") {
        return;
    }
    let s = share();
    for d in ["a", "b", "c", "d"] {
        fs::create_dir(s.src.join(d)).unwrap();
    }
    let g = FakeGuest::new();
    let host = host_to("inotify", &s.src, &[&g], &["--max-watches", "3"]);
    let state = host.status()["channels"]["docs"]["state"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(state.starts_with("degraded"), "{state}");
    assert!(host.counter("watch_limit") >= 1);
    assert!(host.log_text().contains("not every folder is watched"));
    // Nothing goes unnoticed: the channel is sent whole periodically.
    poll_until("periodic whole channel", Duration::from_secs(15), || {
        g.lines().iter().filter(|l| *l == "docs").count() >= 2
    });
    // With room again, it recovers.
    for d in ["c", "d"] {
        fs::remove_dir(s.src.join(d)).unwrap();
    }
    poll_until("watching again", Duration::from_secs(15), || {
        host.status()["channels"]["docs"]["state"] == "watching"
    });
}

#[test]
fn keepalives_keep_a_quiet_connection_past_the_guest_idle_timeout() {
    if !host_support::root_ready("host_keepalive") {
        return;
    }
    let s = share();
    let d = Daemon::start(&["--idle-timeout", "2"]);
    let peer = unix(&d.peer);
    let watch = format!("docs={}", s.src.display());
    let with = Host::start(&["--watch", &watch, "--to", &peer, "--keepalive", "1"]);
    with.wait_connected(std::slice::from_ref(&peer));
    std::thread::sleep(Duration::from_millis(5000));
    let g = with.guest(&peer);
    assert_eq!(g["reconnects"], 0, "{g}");
    assert!(g["keepalives"].as_u64().unwrap() >= 2, "{g}");
    drop(with);
    // Without keepalives the guest closes the quiet connection (and the host reconnects).
    let s2 = share();
    let watch = format!("docs={}", s2.src.display());
    let without = Host::start(&["--watch", &watch, "--to", &peer, "--keepalive", "0"]);
    poll_until("closed by the idle guest and reconnected", DEADLINE, || {
        without.guest(&peer)["reconnects"].as_u64().unwrap_or(0) >= 1
    });
}

// ---------------------------------------------------------------------------------------------
// Two guests on one share.

impl OverlayOn {
    fn idle(&self) {
        self.idle_within(DEADLINE);
    }

    fn idle_within(&self, deadline: Duration) {
        overlay_idle_at(&self.daemon, deadline);
    }
}

/// One change made through a mount.
type Step = Box<dyn Fn(&Path)>;

/// A change a guest makes through its overlay reaches SOURCE; the host watcher sees it and tells
/// both guests: the other one's watchers get exactly the events the originating one's got
/// locally, and the originating one's watchers get nothing more.
#[test]
fn a_change_through_one_guest_reaches_the_other_exactly_and_does_not_echo() {
    if !common::fuse_ready("host_two_guests") {
        return;
    }
    for backend in BACKENDS {
        let s = share();
        fs::create_dir_all(s.src.join("d1")).unwrap();
        fs::create_dir_all(s.src.join("d2")).unwrap();
        w(&s.src, "d1/a.txt", b"alpha");
        w(&s.src, "d1/b.txt", b"bravo");
        let a = OverlayOn::new(&s.src);
        let b = OverlayOn::new(&s.src);
        let host = host_for(backend, &s.src, &[&a.daemon.peer, &b.daemon.peer], &[]);
        host.settle(Duration::from_millis(50));
        a.idle();
        b.idle();
        let mut wa = Watcher::new();
        wa.add_recursive(&a.mnt);
        let mut wb = Watcher::new();
        wb.add_recursive(&b.mnt);
        // Each change, and the events a local watcher gets for it.
        let steps: Vec<(&str, Step, &[&str])> = vec![
            (
                "create",
                Box::new(|m: &Path| w(m, "d1/new.txt", b"fresh")),
                &[
                    "CREATE d1/new.txt",
                    "MODIFY d1/new.txt",
                    "CLOSE_WRITE d1/new.txt",
                ],
            ),
            (
                "rewrite",
                Box::new(|m: &Path| w(m, "d1/a.txt", b"ALPHA")),
                &["MODIFY d1/a.txt", "CLOSE_WRITE d1/a.txt"],
            ),
            (
                "chmod",
                Box::new(|m: &Path| {
                    fs::set_permissions(m.join("d1/b.txt"), fs::Permissions::from_mode(0o600))
                        .unwrap()
                }),
                &["ATTRIB d1/b.txt"],
            ),
            (
                "rename across folders",
                Box::new(|m: &Path| {
                    fs::rename(m.join("d1/new.txt"), m.join("d2/moved.txt")).unwrap()
                }),
                &["MOVED_FROM d1/new.txt #0", "MOVED_TO d2/moved.txt #0"],
            ),
            (
                "mkdir",
                Box::new(|m: &Path| fs::create_dir(m.join("d2/sub")).unwrap()),
                &["CREATE|ISDIR d2/sub"],
            ),
            (
                "delete",
                Box::new(|m: &Path| fs::remove_file(m.join("d1/b.txt")).unwrap()),
                &["DELETE d1/b.txt"],
            ),
        ];
        for (name, op, want) in &steps {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            op(&a.mnt);
            let start = Instant::now();
            let mut got = Vec::new();
            while normalise(&got, &b.mnt).len() < want.len()
                && start.elapsed() < Duration::from_secs(10)
            {
                got.extend(wb.events(Duration::from_millis(20)));
            }
            host.settle(Duration::from_millis(50));
            a.idle();
            b.idle();
            got.extend(wb.events(Duration::from_millis(100)));
            assert_eq!(
                normalise(&got, &b.mnt),
                want,
                "{backend} {name}: the other guest"
            );
            // The originating guest: its watcher got the local events, and nothing more.
            let at_a = normalise(&wa.events(Duration::from_millis(100)), &a.mnt);
            // (Also when the host's notification is handled while the client's change is
            // under way: between its change on SOURCE and its note in the overlay's view.)
            assert_eq!(at_a, want, "{backend} {name}: the originating guest");
            assert_eq!(
                tree_digest(&b.mnt),
                tree_digest(&s.src),
                "{backend} {name}: B fresh"
            );
        }
        // Both guests were told every change.
        let st = host.status();
        for g in st["guests"].as_array().unwrap() {
            assert!(
                g["lines_sent"].as_u64().unwrap() >= steps.len() as u64,
                "{g}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Many guests, bursts.

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// 20 guest daemons (each toggling the trigger file in a folder of its own), one of them
/// stopped: every running one gets every change, and the stopped one delays none of them.
#[test]
fn twenty_guests_one_stopped_every_other_gets_each_change_promptly() {
    if !host_support::root_ready("host_fan_out") {
        return;
    }
    let s = share();
    let daemons: Vec<Daemon> = (0..20)
        .map(|i| {
            let tmp = common::tempdir();
            let dir = tmp.path().join(format!("map{i}"));
            fs::create_dir_all(&dir).unwrap();
            let d = Daemon::start(&[
                "--map",
                &format!("docs={}", dir.display()),
                "--coalesce-ms",
                "0",
            ]);
            std::mem::forget(tmp); // removed with the daemon's folder below
            d
        })
        .collect();
    let maps: Vec<PathBuf> = daemons
        .iter()
        .map(|d| {
            let st = d.status();
            PathBuf::from(st["channels"]["docs"][0].as_str().unwrap())
        })
        .collect();
    let peers: Vec<&Path> = daemons.iter().map(|d| d.peer.as_path()).collect();
    let host = host_for("fanotify", &s.src, &peers, &[]);
    host.settle(Duration::from_millis(50));
    // The trigger toggles of the running guests, read as they come (no quiet period).
    let trig = vfnotify::sys::Inotify::new().unwrap();
    let mut wds = BTreeMap::new();
    for (i, m) in maps[..19].iter().enumerate() {
        wds.insert(
            trig.add_watch(m, libc::IN_CREATE | libc::IN_DELETE)
                .unwrap(),
            i,
        );
    }
    let drain = || while !trig.read(0).unwrap().is_empty() {};
    // The last guest stops; first fill its socket so the host's writes to it block.
    let stopped = daemons[19].pid();
    assert!(
        std::process::Command::new("kill")
            .arg("-STOP")
            .arg(stopped.to_string())
            .status()
            .unwrap()
            .success()
    );
    // Rounds of 1,000 long names until a write to it blocks: how many lines the host sends
    // for a round depends on how many changes each of its batches takes (past a limit a
    // batch is the whole channel, one short line), so one round may not fill the socket.
    let long = "x".repeat(200);
    let stopped_addr = unix(peers[19]);
    let mut stuck = serde_json::Value::Null;
    for round in 0..10 {
        for i in round * 1000..(round + 1) * 1000 {
            let d = s.src.join(format!("fill{:03}", i / 10));
            fs::create_dir_all(&d).unwrap();
            w(&d, &format!("{i}{long}"), b"");
        }
        host.settle_without(Duration::from_millis(100), &[&stopped_addr]);
        std::thread::sleep(Duration::from_millis(100));
        drain();
        stuck = host.guest(&stopped_addr);
        if stuck["queue_depth"].as_u64().unwrap() > 0 {
            break;
        }
    }
    assert!(
        stuck["queue_depth"].as_u64().unwrap() > 0,
        "the stopped guest's writes do not block: {stuck}"
    );
    // Now single changes: time from the change to the toggle at the last running guest.
    let mut last = Vec::new();
    let n = 100;
    for i in 0..n {
        let t0 = Instant::now();
        w(&s.src, &format!("c{i}"), b"c");
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + DEADLINE;
        let mut at = t0;
        while seen.len() < 19 && Instant::now() < deadline {
            for e in trig.read(1).unwrap() {
                if seen.insert(wds[&e.wd]) {
                    at = Instant::now();
                }
            }
        }
        assert_eq!(
            seen.len(),
            19,
            "change {i}: only {} of 19 running guests toggled",
            seen.len()
        );
        last.push(at - t0);
        std::thread::sleep(Duration::from_millis(10));
        drain();
    }
    let p50 = percentile(&mut last, 0.5);
    let p99 = percentile(&mut last, 0.99);
    eprintln!(
        "fan-out to 19 running guests (1 stopped), change -> last guest's trigger: p50 {p50:?}, p99 {p99:?}"
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    assert!(
        std::process::Command::new("kill")
            .arg("-CONT")
            .arg(stopped.to_string())
            .status()
            .unwrap()
            .success()
    );
    poll_until("the stopped guest caught up", DEADLINE, || {
        host.guest(&unix(peers[19]))["queue_depth"].as_u64() == Some(0)
    });
}

/// A burst of 20,000 new files in about a second (a package install, a checkout): both guests
/// end with the exact final state and exactly one IN_CREATE per file.
#[test]
fn a_burst_of_twenty_thousand_files_ends_exact_in_every_guest() {
    if !common::fuse_ready("host_burst") {
        return;
    }
    for backend in BACKENDS {
        let s = share();
        fs::create_dir_all(s.src.join("burst")).unwrap();
        let a = OverlayOn::new(&s.src);
        let b = OverlayOn::new(&s.src);
        let host = host_for(backend, &s.src, &[&a.daemon.peer, &b.daemon.peer], &[]);
        host.settle(Duration::from_millis(50));
        a.idle();
        b.idle();
        // One inotify instance for both guests, read as events come (a watcher that stopped to
        // wait for a quiet moment would overflow its own queue).
        let ino = vfnotify::sys::Inotify::new().unwrap();
        let wd_a = ino
            .add_watch(&a.mnt.join("burst"), libc::IN_CREATE)
            .unwrap();
        let wd_b = ino
            .add_watch(&b.mnt.join("burst"), libc::IN_CREATE)
            .unwrap();
        let cpu0 = host.cpu_seconds();
        let n = 20_000;
        let mut ca: BTreeMap<std::ffi::OsString, u32> = BTreeMap::new();
        let mut cb: BTreeMap<std::ffi::OsString, u32> = BTreeMap::new();
        let count = |ca: &mut BTreeMap<_, u32>, cb: &mut BTreeMap<_, u32>, wait: i32| {
            for e in ino.read(wait).unwrap() {
                assert_eq!(
                    e.mask & libc::IN_Q_OVERFLOW,
                    0,
                    "the test's own watcher overflowed"
                );
                let c = if e.wd == wd_a {
                    &mut *ca
                } else {
                    assert_eq!(e.wd, wd_b);
                    &mut *cb
                };
                *c.entry(e.name).or_default() += 1;
            }
        };
        let t0 = Instant::now();
        for i in 0..n {
            fs::write(s.src.join(format!("burst/f{i:05}")), b"x").unwrap();
            if i % 256 == 255 {
                // The guests replay while the burst goes on: read what came (40,000 events
                // for two guests would not fit the instance's queue).
                count(&mut ca, &mut cb, 0);
            }
        }
        let made = t0.elapsed();
        let deadline = Instant::now() + Duration::from_secs(120);
        while (ca.len() < n || cb.len() < n) && Instant::now() < deadline {
            count(&mut ca, &mut cb, 10);
        }
        let final_at = t0.elapsed();
        host.settle(Duration::from_millis(100));
        a.idle_within(Duration::from_secs(120));
        b.idle_within(Duration::from_secs(120));
        count(&mut ca, &mut cb, 100);
        let cpu = host.cpu_seconds() - cpu0;
        let st = host.status();
        let lines: Vec<u64> = st["guests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["lines_sent"].as_u64().unwrap())
            .collect();
        eprintln!(
            "{backend}: {n} files made in {made:?}; every guest's last IN_CREATE after {final_at:?}; host CPU {cpu:.2} s; lines sent per guest {lines:?}; {}",
            st["guests"][0]
        );
        for (who, c, m) in [("A", &ca, &a.mnt), ("B", &cb, &b.mnt)] {
            assert_eq!(c.len(), n, "{backend} {who}: creates seen");
            assert!(
                c.values().all(|v| *v == 1),
                "{backend} {who}: a file created twice"
            );
            assert_eq!(
                fs::read_dir(m.join("burst")).unwrap().count(),
                n,
                "{backend} {who}: listing"
            );
        }
        assert_eq!(tree_digest(&a.mnt), tree_digest(&s.src));
        assert_eq!(tree_digest(&b.mnt), tree_digest(&s.src));
    }
}

// ---------------------------------------------------------------------------------------------
// The command line and the configuration file.

fn run_host(args: &[&str]) -> std::process::Output {
    common::vfnotify()
        .arg("host")
        .args(args)
        .output()
        .expect("run vfnotify host")
}

fn usage_error(args: &[&str], needle: &str) {
    let out = run_host(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_command_lines_and_configuration_files_exit_2_naming_the_problem() {
    let dir = common::tempdir();
    let base = dir.path().join("base");
    fs::create_dir_all(&base).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let missing = dir.path().join("nope.json").display().to_string();
    usage_error(
        &["--config", &missing],
        "cannot read the configuration file",
    );
    usage_error(
        &["--config", &file("bad.json", "{\"docs\": ")],
        "not valid JSON",
    );
    usage_error(&["--config", &file("list.json", "[]")], "(top level)");
    usage_error(
        &[
            "--config",
            &file(
                "type.json",
                r#"{"docs": {"basePath": 7, "notify": {"guests": [3]}}}"#,
            ),
        ],
        "docs.basePath",
    );
    usage_error(
        &[
            "--config",
            &file(
                "noguests.json",
                &format!(
                    r#"{{"docs": {{"basePath": "{}", "notify": {{"port": 1}}}}}}"#,
                    base.display()
                ),
            ),
        ],
        "docs.notify.guests: missing",
    );
    usage_error(
        &[
            "--config",
            &file(
                "cid.json",
                &format!(
                    r#"{{"docs": {{"basePath": "{}", "notify": {{"guests": [3, "x"]}}}}}}"#,
                    base.display()
                ),
            ),
        ],
        "docs.notify.guests[1]",
    );
    usage_error(
        &[
            "--config",
            &file(
                "gone.json",
                r#"{"docs": {"basePath": "/nonexistent/x", "notify": {"guests": [3]}}}"#,
            ),
        ],
        "/nonexistent/x",
    );
    let b = format!("docs={}", base.display());
    usage_error(&["--watch", &b], "needs at least one guest");
    usage_error(&["--to", "unix:/x"], "no --watch channel");
    usage_error(&[], "nothing to watch");
    usage_error(
        &["--watch", "docs", "--to", "unix:/x"],
        "expected CHANNEL=PATH",
    );
    usage_error(&["--watch", &b, "--to", "tcp:1"], "--to \"tcp:1\"");
    usage_error(
        &["--watch", &b, "--to", "unix:/x", "--backend", "dnotify"],
        "unknown backend",
    );
    usage_error(
        &[
            "--watch",
            &format!("vfnotify.x={}", base.display()),
            "--to",
            "unix:/x",
        ],
        "reserved",
    );
    usage_error(
        &["--watch", &b, "--watch", &b, "--to", "unix:/x"],
        "given twice",
    );
    usage_error(
        &["--watch", &b, "--to", "unix:/x", "--folder-limit", "0"],
        "--folder-limit",
    );
    usage_error(&["--bogus"], "--bogus");
    // `status` without a host: exit 1 with the reason.
    let out = run_host(&["status", "--control", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vfnotify host at"));
}

/// The file the tool we replace reads, with the keys it carries beyond ours: accepted, and the
/// guests (given here as addresses, an extension) are notified.
#[test]
fn a_configuration_file_with_unknown_keys_runs() {
    if !host_support::root_ready("host_config_file") {
        return;
    }
    let s = share();
    let g = FakeGuest::new();
    let dir = common::tempdir();
    let cfg = dir.path().join("gate.json");
    fs::write(
        &cfg,
        format!(
            r#"{{
              "docs": {{
                "basePath": "{}",
                "debounceMs": 1000,
                "scan": {{"clamav": true, "quarantine": "/var/q"}},
                "notify": {{"guests": ["{}"], "port": 3401, "retries": 3}}
              }},
              "empty": {{"basePath": "/", "notify": {{"guests": []}}}}
            }}"#,
            s.src.display(),
            g.addr
        ),
    )
    .unwrap();
    let host = Host::start(&["--config", cfg.to_str().unwrap()]);
    host.wait_connected(std::slice::from_ref(&g.addr));
    w(&s.src, "x", b"1");
    g.wait_line("a change", |l| l == "docs\tx");
    let st = host.status();
    assert!(
        st["channels"].get("empty").is_none(),
        "a channel with no guests is skipped"
    );
}

#[test]
fn readiness_status_and_sigterm() {
    if !host_support::root_ready("host_cli") {
        return;
    }
    let s = share();
    let g = FakeGuest::new();
    let dir = common::tempdir();
    let notify = dir.path().join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(DEADLINE)).unwrap();
    let watch = format!("docs={}", s.src.display());
    let mut host = Host::start_env(
        &["--watch", &watch, "--to", &g.addr],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
    );
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    host.wait_connected(std::slice::from_ref(&g.addr));
    // Readable and JSON status.
    let out = common::vfnotify()
        .args(["host", "status", "--control"])
        .arg(&host.control)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "backend fanotify",
        "docs <-",
        &g.addr,
        "[connected]",
        "kernel_overflows",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    let out = common::vfnotify()
        .args(["host", "status", "--json", "--control"])
        .arg(&host.control)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["guests"][0]["state"], "connected");
    // A second host on the same control socket refuses (exit 1).
    let out = run_host(&[
        "--watch",
        &watch,
        "--to",
        &g.addr,
        "--control",
        host.control.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    // The control protocol: errors as the daemon gives them.
    let mut c = vfnotify::control::Client::connect(&host.control).unwrap();
    c.set_timeout(Some(DEADLINE)).unwrap();
    match c.request("notify", serde_json::json!({})) {
        Err(vfnotify::control::ClientError::Remote { class, .. }) => {
            assert_eq!(class, "unknown-command")
        }
        other => panic!("{other:?}"),
    }
    let st = host.terminate();
    assert_eq!(st.code(), Some(0));
    assert!(!host.control.exists(), "control socket left behind");
}

/// What the host watcher sees of a guest's write: an `O_TRUNC` rewrite through the overlay is one
/// write session on the share (one `IN_CLOSE_WRITE`, after the content), not an emptied file
/// closed first — the host would pass that on to every guest (and a host-side consumer acting on
/// close, a scanner, would read the empty file).
#[test]
fn a_rewrite_through_an_overlay_is_one_write_session_on_the_share() {
    let Some(g) = guest("host_one_write_session", |src| {
        fs::create_dir_all(src.join("d")).unwrap();
        w(src, "d/f", b"alpha");
    }) else {
        return;
    };
    let mut on_share = Watcher::new();
    on_share.add(&g.src.join("d"));
    w(&g.mnt, "d/f", b"ALPHA, longer");
    let ev = overlay_support::summary(&on_share.events(Duration::from_millis(300)));
    // No close before the content is written. (With kernel passthrough the server's descriptor
    // and the kernel's backing file may close one after the other: a second close after the
    // write changes nothing.)
    let last_modify = ev.iter().rposition(|(m, _)| m == "MODIFY");
    let first_close = ev.iter().position(|(m, _)| m == "CLOSE_WRITE");
    assert!(
        last_modify.is_some() && first_close > last_modify,
        "a close before the write ended: {ev:?}"
    );
    assert_eq!(fs::read(g.src.join("d/f")).unwrap(), b"ALPHA, longer");
    // A truncate by size through the overlay still works.
    fs::OpenOptions::new()
        .write(true)
        .open(g.mnt.join("d/f"))
        .unwrap()
        .set_len(3)
        .unwrap();
    assert_eq!(fs::read(g.src.join("d/f")).unwrap(), b"ALP");
    let st = std::process::Command::new("truncate")
        .args(["-s", "1"])
        .arg(g.mnt.join("d/f"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::read(g.src.join("d/f")).unwrap(), b"A");
}
