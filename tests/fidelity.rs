//! Event fidelity, judged against the local kernel: every change kind is made once *locally
//! through the overlay* and once *on SOURCE + notification*, under the same two inotify watchers
//! (one non-recursive, one that adds a watch on each new folder and lists it, as chokidar or
//! `inotifywait -r` do), and the normalised event sequences must be equal. Each host change runs
//! three ways — nobody looks in between; a client stats and reads the changed names between the
//! host's change and the notification; a client lists the folder in a loop while the
//! notification is handled — and with scoped and whole-channel notifications. Right after each
//! notification returns, the overlay must show exactly SOURCE's tree.

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use overlay_support::{Linked, mask_name, tree_digest};
use vfnotify::sys::Inotify;

/// What both watchers listen for (a file manager's interests, not opens and reads).
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF;

/// One raw event, its folder relative to the case folder.
#[derive(Debug, Clone)]
struct Raw {
    flat: bool,
    dir: PathBuf,
    mask: u32,
    cookie: u32,
    name: String,
    /// Found by the recursive watcher when it listed a new folder (not an event).
    found: bool,
}

/// The two watchers, read by a thread of their own (the recursive one must add its watches while
/// the change is still going on, as real watchers do).
struct Watchers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Raw>>>,
}

impl Watchers {
    /// `flat_dirs`: the folders (relative to `root`) the non-recursive watcher watches.
    fn start(root: &Path, flat_dirs: &[&str]) -> Watchers {
        let flat = Inotify::new().unwrap();
        let rec = Inotify::new().unwrap();
        let mut flat_wds = HashMap::new();
        for d in flat_dirs {
            let wd = flat.add_watch(&root.join(d), MASK).unwrap();
            flat_wds.insert(wd, PathBuf::from(d));
        }
        let mut rec_wds = HashMap::new();
        let mut found = Vec::new();
        add_tree(&rec, root, Path::new(""), &mut rec_wds, &mut found);
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_path_buf();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut quiet_since = std::time::Instant::now();
            loop {
                let mut got = false;
                for e in flat.read(5).unwrap() {
                    got = true;
                    if e.mask & libc::IN_IGNORED != 0 {
                        continue;
                    }
                    out.push(Raw {
                        flat: true,
                        dir: flat_wds.get(&e.wd).cloned().unwrap_or_default(),
                        mask: e.mask,
                        cookie: e.cookie,
                        name: e.name.to_string_lossy().into_owned(),
                        found: false,
                    });
                }
                for e in rec.read(5).unwrap() {
                    got = true;
                    if e.mask & libc::IN_IGNORED != 0 {
                        rec_wds.remove(&e.wd);
                        continue;
                    }
                    let dir = rec_wds.get(&e.wd).cloned().unwrap_or_default();
                    let name = e.name.to_string_lossy().into_owned();
                    out.push(Raw {
                        flat: false,
                        dir: dir.clone(),
                        mask: e.mask,
                        cookie: e.cookie,
                        name: name.clone(),
                        found: false,
                    });
                    let new_dir = e.mask & libc::IN_ISDIR != 0
                        && e.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
                    if new_dir {
                        let mut listed = Vec::new();
                        add_tree(&rec, &root, &dir.join(&name), &mut rec_wds, &mut listed);
                        out.extend(listed);
                    }
                }
                if got {
                    quiet_since = std::time::Instant::now();
                } else if s.load(Ordering::SeqCst)
                    && quiet_since.elapsed() > Duration::from_millis(150)
                {
                    return out;
                }
            }
        });
        drop(found);
        Watchers {
            stop,
            thread: Some(thread),
        }
    }

    /// Every event seen, once the watchers have been quiet for a while.
    fn finish(mut self) -> Vec<Raw> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Watch `rel` (under `root`) and every folder below it; what is found inside is recorded.
fn add_tree(
    ino: &Inotify,
    root: &Path,
    rel: &Path,
    wds: &mut HashMap<i32, PathBuf>,
    found: &mut Vec<Raw>,
) {
    let Ok(wd) = ino.add_watch(&root.join(rel), MASK) else {
        return;
    };
    wds.insert(wd, rel.to_path_buf());
    let Ok(entries) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        found.push(Raw {
            flat: false,
            dir: rel.to_path_buf(),
            mask: 0,
            cookie: 0,
            name: name.clone(),
            found: true,
        });
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            add_tree(ino, root, &rel.join(&name), wds, found);
        }
    }
}

/// Every relative path under `root` (not following symlinks).
fn paths(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let p = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.to_string_lossy().into_owned());
        }
    }
    out
}

/// A rename's two events by cookie: where from, where to, whether a folder.
type Halves = (Option<String>, Option<String>, bool);

/// The events in a form both ways of making a change must agree on:
/// - names that exist neither before nor after the change (temporary names) become `<tmp>`;
/// - rename cookies become the order in which their pair first appears;
/// - the recursive watcher's view of a path the change created is just "seen" (whether it came
///   from an event or from listing a new folder depends on timing, locally too), and what
///   happened to it afterwards while it was new (its first write) is dropped for the same reason.
fn normalise(
    events: &[Raw],
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
) -> BTreeSet<String> {
    let known: BTreeSet<String> = before
        .iter()
        .chain(after.iter())
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let new_paths: BTreeSet<&String> = after.difference(before).collect();
    let mut moves: BTreeMap<(&str, u32), Halves> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for e in events {
        let name = if e.name.is_empty() || known.contains(&e.name) {
            e.name.clone()
        } else {
            "<tmp>".to_string()
        };
        let path = e.dir.join(&name).to_string_lossy().into_owned();
        let who = if e.flat { "flat" } else { "rec" };
        if !e.flat {
            let real = e.dir.join(&e.name).to_string_lossy().into_owned();
            let creates = e.found
                || e.mask & libc::IN_CREATE != 0
                || (e.mask & libc::IN_MOVED_TO != 0 && new_paths.contains(&real));
            if creates && new_paths.contains(&real) {
                out.insert(format!("rec SEEN {path}"));
                continue;
            }
            if new_paths.contains(&real)
                && e.mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB) != 0
            {
                continue;
            }
            if e.found {
                continue;
            }
        }
        if e.cookie != 0 && e.mask & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
            let m = moves.entry((who, e.cookie)).or_default();
            if e.mask & libc::IN_MOVED_FROM != 0 {
                m.0 = Some(path);
            } else {
                m.1 = Some(path);
            }
            m.2 = e.mask & libc::IN_ISDIR != 0;
            continue;
        }
        out.insert(format!("{who} {} {path}", mask_name(e.mask)));
    }
    // Renames paired by cookie, and chains through a temporary name (a swap is made by moving
    // one of the two names away first, and which one is the maker's choice) taken as one move.
    let mut paired: Vec<(&str, String, String, bool)> = Vec::new();
    for ((who, _), (from, to, dir)) in moves {
        match (from, to) {
            (Some(f), Some(t)) => paired.push((who, f, t, dir)),
            (Some(f), None) => {
                out.insert(format!(
                    "{who} MOVED_FROM{} {f}",
                    if dir { "|ISDIR" } else { "" }
                ));
            }
            (None, Some(t)) => {
                out.insert(format!(
                    "{who} MOVED_TO{} {t}",
                    if dir { "|ISDIR" } else { "" }
                ));
            }
            (None, None) => {}
        }
    }
    loop {
        let chain = paired.iter().enumerate().find_map(|(i, a)| {
            paired
                .iter()
                .position(|b| b.0 == a.0 && a.2.ends_with("<tmp>") && b.1 == a.2)
                .map(|j| (i, j))
        });
        let Some((i, j)) = chain else { break };
        let b = paired[j].clone();
        paired[i].2 = b.2;
        paired.remove(j);
    }
    for (who, f, t, dir) in paired {
        out.insert(format!(
            "{who} MOVE{} {f} -> {t}",
            if dir { "|ISDIR" } else { "" }
        ));
    }
    out
}

/// A change kind: the tree before (made on SOURCE and notified before the watchers start), the
/// change itself (run on the overlay locally, or on SOURCE), the scoped paths a host would send,
/// the folders the non-recursive watcher watches and the client lists, and the names a client
/// stats and reads.
struct Case {
    name: &'static str,
    prep: fn(&Path),
    change: fn(&Path),
    scopes: &'static [&'static str],
    flat: &'static [&'static str],
    touch: &'static [&'static str],
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}

fn nobody() -> (u32, u32) {
    (65534, 65534)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "create",
            prep: |_| {},
            change: |r| write(&r.join("f"), b"hello"),
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "delete",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| fs::remove_file(r.join("f")).unwrap(),
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "rewrite",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(r.join("f"))
                    .unwrap();
                f.write_all_at(b"HELLO", 0).unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "append",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(r.join("f"))
                    .unwrap();
                f.write_all(b" world").unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "truncate",
            prep: |r| write(&r.join("f"), b"hello world"),
            change: |r| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(r.join("f"))
                    .unwrap();
                f.set_len(3).unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "chmod",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o600)).unwrap()
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "chown",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                let (u, g) = nobody();
                std::os::unix::fs::chown(r.join("f"), Some(u), Some(g)).unwrap()
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            // `touch -m -d 2001-02-03 f`: mtime alone, IN_MODIFY locally.
            name: "mtime-only",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                let t = UNIX_EPOCH + Duration::from_secs(981_158_400);
                let f = fs::File::open(r.join("f")).unwrap();
                f.set_times(fs::FileTimes::new().set_modified(t)).unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            // Looked up and stat'ed, not read: a read after the change moves atime (relatime),
            // and mtime with atime is utimes' IN_ATTRIB (the documented price, README).
            touch: &[""],
        },
        Case {
            name: "utimes",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                let t = UNIX_EPOCH + Duration::from_secs(981_158_400); // 2001-02-03
                let f = fs::File::open(r.join("f")).unwrap();
                f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
                    .unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "rename-within",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| fs::rename(r.join("f"), r.join("g")).unwrap(),
            scopes: &["f", "g"],
            flat: &[""],
            touch: &["f", "g"],
        },
        Case {
            name: "rename-across",
            prep: |r| {
                fs::create_dir(r.join("a")).unwrap();
                fs::create_dir(r.join("b")).unwrap();
                write(&r.join("a/f"), b"hello");
            },
            change: |r| fs::rename(r.join("a/f"), r.join("b/f")).unwrap(),
            scopes: &["a/f", "b/f"],
            flat: &["", "a", "b"],
            touch: &["a/f", "b/f"],
        },
        Case {
            name: "swap",
            prep: |r| {
                write(&r.join("a"), b"one");
                write(&r.join("b"), b"two");
            },
            change: |r| {
                fs::rename(r.join("a"), r.join(".swap")).unwrap();
                fs::rename(r.join("b"), r.join("a")).unwrap();
                fs::rename(r.join(".swap"), r.join("b")).unwrap();
            },
            scopes: &["a", "b"],
            flat: &[""],
            touch: &["a", "b"],
        },
        Case {
            name: "atomic-save",
            prep: |r| write(&r.join("f"), b"version one"),
            change: |r| {
                write(&r.join(".f.tmp"), b"version two!");
                fs::rename(r.join(".f.tmp"), r.join("f")).unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "mkdir-tree",
            prep: |_| {},
            change: |r| {
                fs::create_dir_all(r.join("a/b/c")).unwrap();
                write(&r.join("a/x"), b"x");
                write(&r.join("a/b/y"), b"y");
                write(&r.join("a/b/c/z"), b"z");
            },
            scopes: &["a"],
            flat: &[""],
            touch: &["a", "a/b", "a/b/c", "a/x", "a/b/y", "a/b/c/z"],
        },
        Case {
            name: "rm-tree",
            prep: |r| {
                fs::create_dir_all(r.join("a/b/c")).unwrap();
                write(&r.join("a/x"), b"x");
                write(&r.join("a/b/y"), b"y");
                write(&r.join("a/b/c/z"), b"z");
            },
            change: |r| fs::remove_dir_all(r.join("a")).unwrap(),
            scopes: &["a"],
            flat: &["", "a", "a/b"],
            touch: &["a", "a/b", "a/x"],
        },
        Case {
            name: "symlink-retarget",
            prep: |r| {
                write(&r.join("t1"), b"one");
                write(&r.join("t2"), b"two");
                std::os::unix::fs::symlink("t1", r.join("l")).unwrap();
            },
            change: |r| {
                std::os::unix::fs::symlink("t2", r.join(".l.tmp")).unwrap();
                fs::rename(r.join(".l.tmp"), r.join("l")).unwrap();
            },
            scopes: &["l"],
            flat: &[""],
            touch: &["l"],
        },
        Case {
            name: "hard-link",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| fs::hard_link(r.join("f"), r.join("g")).unwrap(),
            scopes: &["g"],
            flat: &[""],
            touch: &["f", "g"],
        },
        Case {
            name: "xattr",
            prep: |r| write(&r.join("f"), b"hello"),
            change: |r| {
                use vfnotify::sys;
                let dir = sys::cstr(r.as_os_str()).unwrap();
                let fd = sys::openat(sys::cwd(), &dir, libc::O_PATH | libc::O_DIRECTORY, 0);
                sys::setxattr(fd.unwrap().as_fd(), c"f", c"user.fidelity", b"1", 0).unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
        Case {
            name: "burst-1000",
            prep: |r| fs::create_dir(r.join("big")).unwrap(),
            change: |r| {
                for i in 0..1000 {
                    write(&r.join(format!("big/f{i:04}")), b"x");
                }
            },
            scopes: &["big"],
            flat: &["", "big"],
            touch: &["big", "big/f0000", "big/f0500", "big/f0999"],
        },
        Case {
            name: "file-to-folder",
            prep: |r| write(&r.join("f"), b"a file"),
            change: |r| {
                fs::remove_file(r.join("f")).unwrap();
                fs::create_dir(r.join("f")).unwrap();
            },
            scopes: &["f"],
            flat: &[""],
            touch: &["f"],
        },
    ]
}

/// How a host change meets other guest clients.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Meanwhile {
    /// Nobody looks between the change and the notification.
    Nobody,
    /// A client stats and reads the changed names before the notification.
    StatRead,
    /// A client lists the folders in a loop while the notification is handled.
    ListLoop,
}

fn touch_names(root: &Path, names: &[&str]) {
    for n in names {
        let p = root.join(n);
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.is_file() {
                let _ = fs::read(&p);
            } else if m.is_dir() {
                for e in fs::read_dir(&p).into_iter().flatten().flatten() {
                    let _ = e.metadata();
                }
            }
        }
    }
}

fn list(root: &Path, dirs: &[&str]) {
    for d in dirs {
        for e in fs::read_dir(root.join(d)).into_iter().flatten().flatten() {
            let _ = e.metadata();
        }
    }
}

/// Every case folder gets a unique name.
fn case_dir(kind: &str, variant: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{kind}-{variant}-{n}")
}

/// Make the case's tree on SOURCE, let the overlay learn it, and have the kernel hold it (the
/// watchers list it); returns the case folder's name.
fn prepare(l: &Linked, case: &Case, variant: &str) -> String {
    let dir = case_dir(case.name, variant);
    fs::create_dir(l.s(&dir)).unwrap();
    (case.prep)(&l.s(&dir));
    l.notify(&[&dir]);
    dir
}

/// Wait until every folder view the listing asked for is taken (the sync worker runs jobs in
/// order: a notification queued now is handled after them).
fn settle(l: &Linked) {
    l.notify(&["nonexistent-settle"]);
}

fn run_local(l: &Linked, case: &Case) -> BTreeSet<String> {
    let dir = prepare(l, case, "local");
    let root = l.m(&dir);
    let before = paths(&l.s(&dir));
    let w = Watchers::start(&root, case.flat);
    settle(l);
    (case.change)(&root);
    let events = w.finish();
    let after = paths(&l.s(&dir));
    normalise(&events, &before, &after)
}

fn run_host(l: &Linked, case: &Case, meanwhile: Meanwhile, scoped: bool) -> BTreeSet<String> {
    let variant = format!("{meanwhile:?}-{}", if scoped { "scoped" } else { "whole" });
    let dir = prepare(l, case, &variant);
    let root = l.m(&dir);
    let before = paths(&l.s(&dir));
    let w = Watchers::start(&root, case.flat);
    settle(l);
    (case.change)(&l.s(&dir));
    if meanwhile == Meanwhile::StatRead {
        touch_names(&root, case.touch);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let lister = (meanwhile == Meanwhile::ListLoop).then(|| {
        let stop = stop.clone();
        let root = root.clone();
        let dirs: Vec<String> = case.flat.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
            while !stop.load(Ordering::SeqCst) {
                list(&root, &dirs);
            }
        })
    });
    let scopes: Vec<String> = if scoped {
        case.scopes.iter().map(|s| format!("{dir}/{s}")).collect()
    } else {
        Vec::new()
    };
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    l.notify(&scopes);
    // Fresh at the moment the notification returns, whatever the client did meanwhile.
    let fresh = tree_digest(&root) == tree_digest(&l.s(&dir));
    stop.store(true, Ordering::SeqCst);
    if let Some(t) = lister {
        t.join().unwrap();
    }
    assert!(
        fresh,
        "{} ({variant}): the overlay differs from SOURCE after the notification:\n{:#?}\n{:#?}",
        case.name,
        tree_digest(&root),
        tree_digest(&l.s(&dir))
    );
    let events = w.finish();
    if std::env::var_os("VFNOTIFY_FIDELITY_DEBUG").is_some() {
        eprintln!("{} {variant}:", case.name);
        for e in &events {
            eprintln!("  {e:?} {}", mask_name(e.mask));
        }
    }
    let after = paths(&l.s(&dir));
    normalise(&events, &before, &after)
}

/// At most a dozen items of a set, and how many there are.
fn brief<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&String> = items.collect();
    let shown: Vec<&&String> = all.iter().take(12).collect();
    if all.len() > shown.len() {
        format!("{shown:?} … ({} in all)", all.len())
    } else {
        format!("{shown:?}")
    }
}

/// One change kind, every way: the local sequence is the reference.
fn check(kind: &str) {
    check_with(kind, "");
}

/// As [`check`], the host changes on an overlay mounted with `opts` (the local reference is made
/// on a writable one).
fn check_with(kind: &str, opts: &str) {
    let case = cases().into_iter().find(|c| c.name == kind).unwrap();
    let Some(reference) = Linked::new(&format!("fidelity_{kind}"), "") else {
        return;
    };
    let local = run_local(&reference, &case);
    drop(reference);
    let Some(l) = Linked::new(&format!("fidelity_{kind}_{opts}"), opts) else {
        return;
    };
    assert!(!local.is_empty(), "{kind}: no local events at all");
    let mut failures = Vec::new();
    for meanwhile in [Meanwhile::Nobody, Meanwhile::StatRead, Meanwhile::ListLoop] {
        for scoped in [true, false] {
            let host = run_host(&l, &case, meanwhile, scoped);
            if host != local {
                failures.push(format!(
                    "{kind} / {meanwhile:?} / {}:\n  missing: {}\n  extra:   {}",
                    if scoped { "scoped" } else { "whole" },
                    brief(local.difference(&host)),
                    brief(host.difference(&local)),
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "local events: {}\n{}",
        brief(local.iter()),
        failures.join("\n")
    );
}

macro_rules! fidelity {
    ($($test:ident => $kind:literal),* $(,)?) => {
        $(#[test] fn $test() { check($kind); })*
    };
}

fidelity! {
    create => "create",
    delete => "delete",
    same_size_rewrite => "rewrite",
    append => "append",
    truncate => "truncate",
    chmod => "chmod",
    chown => "chown",
    utimes_only => "utimes",
    mtime_only => "mtime-only",
    rename_within_a_folder => "rename-within",
    rename_across_folders => "rename-across",
    two_names_swapped => "swap",
    atomic_save_over_an_existing_file => "atomic-save",
    mkdir_of_a_nested_tree => "mkdir-tree",
    rm_rf_of_a_tree => "rm-tree",
    symlink_retarget => "symlink-retarget",
    hard_link => "hard-link",
    xattr_set => "xattr",
    a_thousand_new_files_in_one_folder => "burst-1000",
    a_file_replaced_by_a_folder => "file-to-folder",
}

macro_rules! fidelity_read_only {
    ($($test:ident => $kind:literal),* $(,)?) => {
        $(#[test] fn $test() { check_with($kind, "ro"); })*
    };
}

// A read-only overlay (`ro`) gives watchers the same events, IN_CLOSE_WRITE included.
fidelity_read_only! {
    read_only_create => "create",
    read_only_rewrite => "rewrite",
    read_only_append => "append",
    read_only_truncate => "truncate",
    read_only_chmod => "chmod",
    read_only_rename => "rename-within",
    read_only_atomic_save => "atomic-save",
    read_only_mkdir_tree => "mkdir-tree",
    read_only_rm_tree => "rm-tree",
}

/// The normaliser itself: temporary names, cookies and the recursive watcher's view of new paths.
#[test]
fn normalising_events() {
    let before: BTreeSet<String> = ["f".to_string()].into();
    let after: BTreeSet<String> = ["f".to_string(), "d".to_string(), "d/x".to_string()].into();
    let ev = |flat, dir: &str, mask, cookie, name: &str, found| Raw {
        flat,
        dir: PathBuf::from(dir),
        mask,
        cookie,
        name: name.into(),
        found,
    };
    let n = normalise(
        &[
            ev(true, "", libc::IN_MOVED_FROM, 77, ".f.tmp", false),
            ev(true, "", libc::IN_MOVED_TO, 77, "f", false),
            ev(false, "", libc::IN_CREATE | libc::IN_ISDIR, 0, "d", false),
            ev(false, "d", 0, 0, "x", true),
            ev(false, "d", libc::IN_MODIFY, 0, "x", false),
        ],
        &before,
        &after,
    );
    let want: BTreeSet<String> = ["flat MOVE <tmp> -> f", "rec SEEN d", "rec SEEN d/x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(n, want);
    // A swap through a temporary name: one move each way, whichever name moved away first.
    let ab: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let swap = normalise(
        &[
            ev(true, "", libc::IN_MOVED_FROM, 1, "b", false),
            ev(true, "", libc::IN_MOVED_TO, 1, ".b.tmp", false),
            ev(true, "", libc::IN_MOVED_FROM, 2, "a", false),
            ev(true, "", libc::IN_MOVED_TO, 2, "b", false),
            ev(true, "", libc::IN_MOVED_FROM, 3, ".b.tmp", false),
            ev(true, "", libc::IN_MOVED_TO, 3, "a", false),
        ],
        &ab,
        &ab,
    );
    let want: BTreeSet<String> = ["flat MOVE a -> b", "flat MOVE b -> a"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(swap, want);
}

/// Degraded → linked: changes the host made while the overlay had no daemon (short timeouts)
/// are all gone from the guest's caches the moment the first `vfnotify notify` after linking
/// returns — at the mount's root and in a subfolder, names and attributes alike.
#[test]
fn nothing_stale_remains_once_linked_after_a_degraded_spell() {
    if !common::fuse_ready("degraded_to_linked") {
        return;
    }
    for round in 0..4 {
        let dir = common::tempdir();
        let ctl = dir.path().join("ctl.sock");
        let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        for f in ["f", "h", "sub/g", "sub/k"] {
            write(&src.join(f), b"x");
        }
        let _m = common::MountGuard::mount(
            &src,
            &mnt,
            &format!("channel=docs,control={}", ctl.display()),
        );
        // Degraded (no daemon): the kernel learns the names and attributes, for a second.
        for f in ["f", "h", "sub/g", "sub/k"] {
            assert!(fs::metadata(mnt.join(f)).is_ok(), "round {round}: {f}");
        }
        fs::remove_file(src.join("f")).unwrap();
        fs::remove_file(src.join("sub/g")).unwrap();
        fs::set_permissions(src.join("h"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(src.join("sub/k"), fs::Permissions::from_mode(0o600)).unwrap();
        let _daemon = daemon_support::Daemon::start_at(&ctl, &[]);
        daemon_support::poll_until("linked", Duration::from_secs(10), || {
            common::notify_ok(&ctl, "docs", &[])
        });
        assert!(
            fs::symlink_metadata(mnt.join("f")).is_err(),
            "round {round}: f at the root still there"
        );
        assert!(
            fs::symlink_metadata(mnt.join("sub/g")).is_err(),
            "round {round}: sub/g still there"
        );
        for f in ["h", "sub/k"] {
            let mode = fs::metadata(mnt.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "round {round}: {f}");
        }
    }
}

/// `rm -rf` of a tree whose files a watcher holds but whose folders nobody does (an editor
/// watching its open files): locally each watched file gets `IN_ATTRIB` and `IN_DELETE_SELF`.
/// The kernel forgets the unwatched folders once the tree's names expire, so the replay must
/// still find its way down to the files (found by the watcher survey, docs/watchers.md).
#[test]
fn a_removed_tree_whose_files_alone_are_watched() {
    let Some(l) = Linked::new("fidelity_rm_tree_files", "") else {
        return;
    };
    let files = ["x.txt", "b/y.txt", "b/c/z.txt"];
    let run = |host: bool| -> BTreeSet<String> {
        let top = if host { "t-host" } else { "t-local" };
        fs::create_dir_all(l.m(&format!("{top}/b/c"))).unwrap();
        for f in files {
            fs::write(l.m(&format!("{top}/{f}")), b"v").unwrap();
        }
        let ino = Inotify::new().unwrap();
        let mut wds = HashMap::new();
        let mask = libc::IN_ATTRIB | libc::IN_DELETE_SELF | libc::IN_DELETE | libc::IN_MODIFY;
        wds.insert(ino.add_watch(&l.m(""), mask).unwrap(), String::new());
        for f in files {
            let wd = ino.add_watch(&l.m(&format!("{top}/{f}")), mask).unwrap();
            wds.insert(wd, f.to_string());
        }
        settle(&l);
        if host {
            fs::remove_dir_all(l.s(top)).unwrap();
            l.notify(&[top]);
        } else {
            fs::remove_dir_all(l.m(top)).unwrap();
        }
        let mut got = BTreeSet::new();
        loop {
            let evs = ino.read(300).unwrap();
            if evs.is_empty() {
                break;
            }
            for e in evs {
                if e.mask & libc::IN_IGNORED != 0 {
                    continue;
                }
                let on = wds.get(&e.wd).cloned().unwrap_or_default();
                let name = if e.name.is_empty() {
                    on
                } else {
                    "t".to_string()
                };
                got.insert(format!("{} {name}", mask_name(e.mask)));
            }
        }
        got
    };
    let local = run(false);
    assert!(local.contains("DELETE_SELF b/c/z.txt"), "{local:?}");
    let host = run(true);
    assert_eq!(host, local);
}
