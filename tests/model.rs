//! The model test (issue 19): random interleavings of host mutations on SOURCE, notifications
//! (whole mount, scoped to the changed paths, scoped to their parents, none) and guest operations
//! through the overlay, with a recursive inotify watcher on the overlay. SOURCE is the reference
//! model. After every notification that covers all pending host changes:
//!
//! - the overlay's view (names, types, sizes, modes, content, link counts, symlink targets) must
//!   equal SOURCE's;
//! - the watcher's events, folded over the guest's previous view as a recursive watcher would
//!   (a watch added and the folder listed on a new folder), must give the same names and kinds.
//!
//! A failing case shrinks to a minimal sequence; such sequences are kept below as named tests.
//! `VFNOTIFY_MODEL_CASES` sets the number of cases (default 48, about a second here);
//! `just model N` runs N. `VFNOTIFY_MODEL_OPTS` replaces the mount options,
//! `VFNOTIFY_MODEL_FS=plain` puts SOURCE on the test folder's filesystem instead of a tmpfs,
//! `VFNOTIFY_MODEL_DEBUG` prints every event folded. Every divergence fails (the event
//! divergences this test first found, issue 14's, are fixed).

mod common;
#[path = "common/daemon.rs"]
mod daemon_support;
#[path = "common/overlay.rs"]
mod overlay_support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::json;
use vfnotify::control::Client;
use vfnotify::sys::Inotify;

use overlay_support::Linked;

/// The paths operations pick from: few, so that they collide (replace, rename over, create in a
/// folder just removed, ...).
const PATHS: [&str; 10] = [
    "a", "b", "d", "e", "d/a", "d/b", "d/e", "e/a", "d/e/a", "e/d",
];
const MODES: [u32; 4] = [0o600, 0o644, 0o755, 0o700];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Whole,
    /// Exactly the changed paths.
    Right,
    /// Their parent folders.
    Parent,
    /// No notification: the changes stay pending.
    None,
}

#[derive(Debug, Clone)]
enum Op {
    // On SOURCE (the host).
    HCreate(usize, u8),
    HWrite(usize, u8),
    HAppend(usize),
    HTruncate(usize, u8),
    HChmod(usize, usize),
    HRename(usize, usize),
    HMkdir(usize),
    HRmRf(usize),
    HSymlink(usize, usize),
    HLink(usize, usize),
    Notify(Scope),
    // Through the overlay (the guest).
    GStat(usize),
    GList(usize),
    GRead(usize),
    GWrite(usize, u8),
    GCreate(usize),
    GRename(usize, usize),
    GUnlink(usize),
    GMkdir(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = || 0..PATHS.len();
    prop_oneof![
        3 => (p(), any::<u8>()).prop_map(|(a, c)| Op::HCreate(a, c)),
        2 => (p(), any::<u8>()).prop_map(|(a, c)| Op::HWrite(a, c)),
        1 => p().prop_map(Op::HAppend),
        1 => (p(), any::<u8>()).prop_map(|(a, n)| Op::HTruncate(a, n)),
        2 => (p(), 0..MODES.len()).prop_map(|(a, m)| Op::HChmod(a, m)),
        3 => (p(), p()).prop_map(|(a, b)| Op::HRename(a, b)),
        3 => p().prop_map(Op::HMkdir),
        2 => p().prop_map(Op::HRmRf),
        1 => (p(), p()).prop_map(|(a, b)| Op::HSymlink(a, b)),
        1 => (p(), p()).prop_map(|(a, b)| Op::HLink(a, b)),
        4 => prop_oneof![
            Just(Scope::Whole),
            Just(Scope::Right),
            Just(Scope::Parent),
            Just(Scope::None)
        ]
        .prop_map(Op::Notify),
        2 => p().prop_map(Op::GStat),
        2 => p().prop_map(Op::GList),
        1 => p().prop_map(Op::GRead),
        2 => (p(), any::<u8>()).prop_map(|(a, c)| Op::GWrite(a, c)),
        1 => p().prop_map(Op::GCreate),
        2 => (p(), p()).prop_map(|(a, b)| Op::GRename(a, b)),
        1 => p().prop_map(Op::GUnlink),
        1 => p().prop_map(Op::GMkdir),
    ]
}

/// One entry of a tree as compared: type, size, mode, link count, content or symlink target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    size: u64,
    mode: u32,
    nlink: u64,
    data: Vec<u8>,
}

/// The whole tree under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            let (kind, data) = if ft.is_dir() {
                stack.push(r.clone());
                ('d', Vec::new())
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).map(|t| t.into_os_string().into_encoded_bytes());
                ('l', t.unwrap_or_default())
            } else {
                ('f', fs::read(&p).unwrap_or_default())
            };
            out.insert(
                r.display().to_string(),
                Entry {
                    kind,
                    size: if ft.is_dir() { 0 } else { m.len() },
                    mode: m.mode() & 0o7777,
                    nlink: m.nlink(),
                    data,
                },
            );
        }
    }
    out
}

fn shape(t: &BTreeMap<String, Entry>) -> BTreeMap<String, bool> {
    t.iter().map(|(p, e)| (p.clone(), e.kind == 'd')).collect()
}

/// Whether no folder on the way to `rel` under `root` is a symlink.
fn no_symlink_above(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        p.push(part);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return false;
        }
    }
    true
}

fn parent(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn under(p: &str, top: &str) -> bool {
    p == top || p.starts_with(&format!("{top}/"))
}

/// A recursive watcher on the overlay that folds its events into a view of names and kinds.
struct Folder {
    ino: Inotify,
    root: PathBuf,
    wds: HashMap<i32, String>,
    view: BTreeMap<String, bool>,
    overflows: u64,
}

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_ONLYDIR;

impl Folder {
    fn new(root: &Path) -> Folder {
        let mut f = Folder {
            ino: Inotify::new().unwrap(),
            root: root.to_path_buf(),
            wds: HashMap::new(),
            view: BTreeMap::new(),
            overflows: 0,
        };
        f.watch_tree("");
        f
    }

    /// Watch `rel` and every folder below it, and add what is there to the view (what a
    /// recursive watcher does for a folder it starts watching).
    fn watch_tree(&mut self, rel: &str) {
        let mut stack = vec![rel.to_string()];
        while let Some(d) = stack.pop() {
            let p = self.root.join(&d);
            if let Ok(wd) = self.ino.add_watch(&p, MASK) {
                self.wds.insert(wd, d.clone());
            }
            let Ok(rd) = fs::read_dir(&p) else { continue };
            for e in rd.flatten() {
                let r = if d.is_empty() {
                    e.file_name().to_string_lossy().into_owned()
                } else {
                    format!("{d}/{}", e.file_name().to_string_lossy())
                };
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                self.view.insert(r.clone(), is_dir);
                if is_dir {
                    stack.push(r);
                }
            }
        }
    }

    /// `top` and what is below it are gone (so are their watches: the folders are).
    fn remove_tree(&mut self, top: &str) {
        self.view.retain(|p, _| !under(p, top));
        self.wds.retain(|_, v| !under(v, top));
    }

    fn move_tree(&mut self, from: &str, to: &str) {
        self.remove_tree(to);
        let moved: Vec<(String, bool)> = self
            .view
            .iter()
            .filter(|(p, _)| under(p, from))
            .map(|(p, d)| (p.clone(), *d))
            .collect();
        self.view.retain(|p, _| !under(p, from));
        for (p, d) in moved {
            self.view.insert(format!("{to}{}", &p[from.len()..]), d);
        }
        for v in self.wds.values_mut() {
            if under(v, from) {
                *v = format!("{to}{}", &v[from.len()..]);
            }
        }
    }

    /// Fold every event queued now.
    fn fold(&mut self) {
        let events = self.ino.read(0).unwrap();
        if std::env::var_os("VFNOTIFY_MODEL_DEBUG").is_some() {
            for e in &events {
                eprintln!(
                    "event {:?}/{:?} {}",
                    self.wds.get(&e.wd),
                    e.name,
                    overlay_support::mask_name(e.mask)
                );
            }
        }
        let mut from: HashMap<u32, (String, bool)> = HashMap::new();
        for e in events {
            // The kernel queues a rename's two halves next to each other: a `IN_MOVED_FROM`
            // not followed by its `IN_MOVED_TO` was a move out of every watched folder (or
            // into one not watched yet), and it happened before this event.
            let pairs = e.mask & libc::IN_MOVED_TO != 0 && from.contains_key(&e.cookie);
            if !pairs {
                for (_, (old, _)) in from.drain() {
                    self.remove_tree(&old);
                }
            }
            if e.mask & libc::IN_Q_OVERFLOW != 0 {
                self.overflows += 1;
                self.view.clear();
                self.watch_tree("");
                continue;
            }
            if e.mask & libc::IN_IGNORED != 0 {
                self.wds.remove(&e.wd);
                continue;
            }
            let Some(dir) = self.wds.get(&e.wd).cloned() else {
                continue;
            };
            if e.mask & libc::IN_DELETE_SELF != 0 {
                continue;
            }
            let name = e.name.to_string_lossy().into_owned();
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let is_dir = e.mask & libc::IN_ISDIR != 0;
            if e.mask & libc::IN_CREATE != 0 {
                // A new object under that name: nothing of an old one is left below it.
                self.remove_tree(&path);
                self.view.insert(path.clone(), is_dir);
                if is_dir {
                    self.watch_tree(&path);
                }
            } else if e.mask & libc::IN_DELETE != 0 {
                self.remove_tree(&path);
            } else if e.mask & libc::IN_MOVED_FROM != 0 {
                from.insert(e.cookie, (path, is_dir));
            } else if e.mask & libc::IN_MOVED_TO != 0 {
                match from.remove(&e.cookie) {
                    Some((old, _)) => {
                        self.move_tree(&old, &path);
                        // Named in the folder now, whether or not the old name was known; a
                        // folder not watched before is watched and listed now.
                        self.view.insert(path.clone(), is_dir);
                        if is_dir && !self.wds.values().any(|v| *v == path) {
                            self.watch_tree(&path);
                        }
                    }
                    None => {
                        self.view.insert(path.clone(), is_dir);
                        if is_dir {
                            self.watch_tree(&path);
                        }
                    }
                }
            }
        }
        for (_, (old, _)) in from {
            self.remove_tree(&old);
        }
    }
}

/// Host changes not notified yet: the paths changed on SOURCE.
#[derive(Default)]
struct Pending {
    paths: BTreeSet<String>,
}

impl Pending {
    fn host(&mut self, paths: &[usize], ok: bool) {
        if ok {
            self.paths
                .extend(paths.iter().map(|i| PATHS[*i].to_string()));
        }
    }

    /// `from` was renamed to `to` (by either side): pending changes below it move along.
    fn moved(&mut self, from: &str, to: &str) {
        let moved: Vec<String> = self
            .paths
            .iter()
            .filter(|p| under(p, from))
            .cloned()
            .collect();
        for p in moved {
            self.paths.remove(&p);
            self.paths.insert(format!("{to}{}", &p[from.len()..]));
        }
    }
}

/// Counts over a run, printed at its end (and written to docs by hand).
#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    steps: u64,
    checkpoints: u64,
    notifications: u64,
    /// Replays the overlay retried (another client had the name meanwhile).
    retries: u64,
    overflows: u64,
}

/// One linked overlay shared by the cases of a run (reset between them), over a tmpfs SOURCE
/// as in the issue (`VFNOTIFY_MODEL_FS=plain`: the test folder's own filesystem instead).
struct Fixture {
    l: Linked,
    client: RefCell<Client>,
    tally: RefCell<Tally>,
    tmpfs: Option<PathBuf>,
    last: std::cell::Cell<(u64, u64)>,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        Self::on(
            test,
            std::env::var("VFNOTIFY_MODEL_FS").as_deref() == Ok("plain"),
        )
    }

    /// `plain`: SOURCE on the test folder's own filesystem (ext4 here, which reuses inode
    /// numbers at once) instead of a tmpfs.
    fn on(test: &str, plain: bool) -> Option<Fixture> {
        let mut tmpfs = None;
        let opts = std::env::var("VFNOTIFY_MODEL_OPTS").unwrap_or_else(|_| "allow_other".into());
        let l = Linked::with_source(test, &opts, |src| {
            if !plain {
                let st = std::process::Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
                    .arg(src)
                    .status()
                    .unwrap();
                assert!(st.success(), "mount tmpfs on SOURCE");
                tmpfs = Some(src.to_path_buf());
            }
        });
        let l = l?;
        let client = RefCell::new(l.daemon.client());
        Some(Fixture {
            l,
            client,
            tally: RefCell::new(Tally::default()),
            tmpfs,
            last: std::cell::Cell::new((0, 0)),
        })
    }

    /// How much `replay_retries` and `replay_failed` grew since the last call.
    fn replay_counters(&self) -> (u64, u64) {
        let st = self
            .client
            .borrow_mut()
            .request("status", json!({}))
            .expect("status");
        let mnt = self.l.mnt.display().to_string();
        let stats = st["overlays"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["mountpoint"].as_str() == Some(&mnt)))
            .map(|o| o["stats"].clone())
            .unwrap_or_default();
        let now = (
            stats["replay_retries"].as_u64().unwrap_or(0),
            stats["replay_failed"].as_u64().unwrap_or(0),
        );
        let before = self.last.replace(now);
        (now.0 - before.0.min(now.0), now.1 - before.1.min(now.1))
    }

    fn notify(&self, paths: &[String]) {
        self.client
            .borrow_mut()
            .request("notify", json!({"channel": self.l.channel, "paths": paths}))
            .expect("notification handled");
        self.tally.borrow_mut().notifications += 1;
    }

    /// SOURCE emptied and seeded, the overlay told, the kernel shown the tree.
    fn reset(&self) {
        for e in fs::read_dir(&self.l.src).unwrap().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        fs::write(self.l.s("a"), b"seed").unwrap();
        fs::create_dir(self.l.s("d")).unwrap();
        fs::write(self.l.s("d/b"), b"x").unwrap();
        self.notify(&[]);
        self.replay_counters();
    }

    /// Run one case; Err with what diverged.
    fn run(&self, ops: &[Op]) -> Result<(), TestCaseError> {
        self.run_from(ops, false)
    }

    /// [`Fixture::run`], the seed tree first `aged`: its folders' times left to grow older than
    /// the overlay's margin and a whole notification handled, so that rescans of the folders the
    /// case leaves unchanged stat their entries by name without listing them (`dirs_unlisted`).
    fn run_from(&self, ops: &[Op], aged: bool) -> Result<(), TestCaseError> {
        self.reset();
        if aged {
            // The margin is 1 s (`vfnotify::overlay::inode::LISTED_MARGIN`): a clock condition,
            // not a wait for something to happen.
            std::thread::sleep(Duration::from_millis(1100));
            self.notify(&[]);
        }
        let mnt = &self.l.mnt;
        let src = &self.l.src;
        let mut w = Folder::new(mnt);
        let mut st = Pending::default();
        let mut log: Vec<String> = Vec::new();
        let s = |i: usize| src.join(PATHS[i]);
        let m = |i: usize| mnt.join(PATHS[i]);
        for (step, op) in ops
            .iter()
            .chain(std::iter::once(&Op::Notify(Scope::Whole)))
            .enumerate()
        {
            self.tally.borrow_mut().steps += 1;
            log.push(format!("{step}: {op:?}"));
            // Host changes never go through a symlink on the way: the change must be at the
            // path notified.
            let direct = |i: usize| no_symlink_above(src, PATHS[i]);
            let host = |st: &mut Pending, paths: &[usize], ok: bool| st.host(paths, ok);
            let through_link = match op {
                Op::HCreate(a, _)
                | Op::HWrite(a, _)
                | Op::HAppend(a)
                | Op::HTruncate(a, _)
                | Op::HChmod(a, _)
                | Op::HMkdir(a)
                | Op::HRmRf(a)
                | Op::HSymlink(a, _) => !direct(*a),
                Op::HRename(a, b) | Op::HLink(a, b) => !direct(*a) || !direct(*b),
                _ => false,
            };
            if through_link {
                continue;
            }
            match op {
                Op::HCreate(a, c) => {
                    // Never through a symlink: the change must be at the path notified.
                    let ok = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(s(*a))
                        .and_then(|mut f| f.write_all(&[*c; 3]))
                        .is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HWrite(a, c) => {
                    let ok = fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(s(*a))
                        .and_then(|mut f| f.write_all(&[*c; 5]))
                        .is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HAppend(a) => {
                    let ok = fs::OpenOptions::new()
                        .append(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(s(*a))
                        .and_then(|mut f| f.write_all(b"+"))
                        .is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HTruncate(a, n) => {
                    let ok = fs::symlink_metadata(s(*a)).is_ok_and(|m| m.is_file())
                        && fs::OpenOptions::new()
                            .write(true)
                            .open(s(*a))
                            .and_then(|f| f.set_len(u64::from(*n % 8)))
                            .is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HChmod(a, md) => {
                    let ok = fs::symlink_metadata(s(*a)).is_ok_and(|m| !m.is_symlink())
                        && fs::set_permissions(s(*a), fs::Permissions::from_mode(MODES[*md]))
                            .is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HRename(a, b) => {
                    let ok = a != b && fs::rename(s(*a), s(*b)).is_ok();
                    if ok {
                        st.moved(PATHS[*a], PATHS[*b]);
                    }
                    host(&mut st, &[*a, *b], ok);
                }
                Op::HMkdir(a) => {
                    let ok = fs::create_dir(s(*a)).is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HRmRf(a) => {
                    let p = s(*a);
                    let ok = match fs::symlink_metadata(&p) {
                        Ok(md) if md.is_dir() => fs::remove_dir_all(&p).is_ok(),
                        Ok(_) => fs::remove_file(&p).is_ok(),
                        Err(_) => false,
                    };
                    host(&mut st, &[*a], ok);
                }
                Op::HSymlink(a, b) => {
                    let ok = std::os::unix::fs::symlink(PATHS[*b], s(*a)).is_ok();
                    host(&mut st, &[*a], ok);
                }
                Op::HLink(a, b) => {
                    let ok = fs::hard_link(s(*a), s(*b)).is_ok();
                    host(&mut st, &[*a, *b], ok);
                }
                Op::Notify(scope) => {
                    let paths: Option<Vec<String>> = match scope {
                        Scope::None => None,
                        Scope::Whole => Some(Vec::new()),
                        Scope::Right => Some(st.paths.iter().cloned().collect()),
                        Scope::Parent => {
                            let ps: BTreeSet<&str> = st.paths.iter().map(|p| parent(p)).collect();
                            // A top-level name's parent is the mount: the whole of it.
                            Some(if ps.contains("") {
                                Vec::new()
                            } else {
                                ps.into_iter().map(str::to_string).collect()
                            })
                        }
                    };
                    let Some(paths) = paths else { continue };
                    if *scope != Scope::Whole && st.paths.is_empty() {
                        continue;
                    }
                    self.notify(&paths);
                    st.paths.clear();
                    self.checkpoint(&mut w, &log)?;
                }
                Op::GStat(a) => {
                    let _ = fs::symlink_metadata(m(*a));
                }
                Op::GList(a) => {
                    if let Ok(rd) = fs::read_dir(m(*a)) {
                        rd.for_each(drop);
                    }
                }
                Op::GRead(a) => {
                    let _ = fs::read(m(*a));
                }
                Op::GWrite(a, c) => {
                    let _ = fs::write(m(*a), [*c; 4]);
                }
                Op::GCreate(a) => {
                    let _ = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(m(*a));
                }
                Op::GRename(a, b) => {
                    // A rename between two names of one object does nothing, and succeeds (a
                    // host rename not notified yet can show the guest one object under both):
                    // then the old name is still there.
                    if a != b
                        && fs::rename(m(*a), m(*b)).is_ok()
                        && fs::symlink_metadata(m(*a)).is_err()
                    {
                        st.moved(PATHS[*a], PATHS[*b]);
                    }
                }
                Op::GUnlink(a) => {
                    let _ = fs::remove_file(m(*a));
                }
                Op::GMkdir(a) => {
                    let _ = fs::create_dir(m(*a));
                }
            }
            // Guest operations make events of their own: fold them as they come.
            if matches!(
                op,
                Op::GWrite(..) | Op::GCreate(_) | Op::GUnlink(_) | Op::GMkdir(_) | Op::GRename(..)
            ) {
                w.fold();
            }
        }
        self.tally.borrow_mut().cases += 1;
        self.tally.borrow_mut().overflows += w.overflows;
        Ok(())
    }

    /// After a notification that covered every pending host change.
    fn checkpoint(&self, w: &mut Folder, log: &[String]) -> Result<(), TestCaseError> {
        self.tally.borrow_mut().checkpoints += 1;
        w.fold();
        let counters = self.replay_counters();
        let want = tree(&self.l.src);
        let got = tree(&self.l.mnt);
        if got != want {
            let diff: Vec<String> = want
                .keys()
                .chain(got.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| want.get(*k) != got.get(*k))
                .map(|k| format!("{k}: SOURCE {:?} overlay {:?}", want.get(k), got.get(k)))
                .collect();
            return Err(TestCaseError::fail(format!(
                "the overlay's view differs from SOURCE's after a notification:\n{}\nsteps:\n{}",
                diff.join("\n"),
                log.join("\n")
            )));
        }
        let shown = shape(&got);
        if w.view != shown {
            let extra: Vec<&String> = w.view.keys().filter(|k| !shown.contains_key(*k)).collect();
            let missing: Vec<&String> = shown.keys().filter(|k| !w.view.contains_key(*k)).collect();
            let kinds: Vec<&String> = shown
                .iter()
                .filter(|(k, d)| w.view.get(*k).is_some_and(|v| v != *d))
                .map(|(k, _)| k)
                .collect();
            let (retries, failed) = counters;
            return Err(TestCaseError::fail(format!(
                "the watcher's events do not fold into the overlay's names and kinds: \
                 missing {missing:?}, extra {extra:?}, other kind {kinds:?} \
                 (replay_retries +{retries}, replay_failed +{failed})\nsteps:\n{}",
                log.join("\n")
            )));
        }
        self.tally.borrow_mut().retries += counters.0;
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The overlay first, then SOURCE's tmpfs, then the folders (Linked's own drop).
        self.l.mount.take();
        if let Some(p) = &self.tmpfs {
            let _ = std::process::Command::new("umount").arg(p).status();
        }
    }
}

fn cases() -> u32 {
    std::env::var("VFNOTIFY_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// The property-based run.
#[test]
fn model_random_interleavings() {
    let Some(fx) = Fixture::new("model_random_interleavings") else {
        return;
    };
    let n = cases();
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 400,
        ..Config::default()
    });
    let start = Instant::now();
    let res = runner.run(&prop::collection::vec(op(), 1..28), |ops| fx.run(&ops));
    let t = fx.tally.borrow();
    eprintln!(
        "model: {} cases (asked {n}), {} steps, {} checkpoints, {} notifications, \
         {} replays retried, {} overflows, {:.1} s",
        t.cases,
        t.steps,
        t.checkpoints,
        t.notifications,
        t.retries,
        t.overflows,
        start.elapsed().as_secs_f64()
    );
    match res {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => panic!("minimal failing case {ops:?}:\n{why}"),
        Err(e) => panic!("{e}"),
    }
}

/// The property-based run with the seed tree's folders aged before each case (see
/// [`Fixture::run_from`]): host changes to files in folders whose names the overlay proves
/// unchanged by their times, and guest operations meanwhile, must come out as in the plain run.
#[test]
fn model_random_interleavings_in_folders_proved_unchanged() {
    let Some(fx) = Fixture::new("model_random_interleavings_in_folders_proved_unchanged") else {
        return;
    };
    let n = (cases() / 6).max(6);
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        max_shrink_iters: 100,
        ..Config::default()
    });
    let res = runner.run(&prop::collection::vec(op(), 1..28), |ops| {
        fx.run_from(&ops, true)
    });
    match res {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => panic!("minimal failing case {ops:?}:\n{why}"),
        Err(e) => panic!("{e}"),
    }
    // The counters reach the daemon every so often: waited for, with a deadline.
    fx.l.wait_stat(
        "dirs_unlisted",
        "a rescan that statted a folder by its names",
        |n| n > 0,
    );
}

/// Replays one fixed sequence (a shrunk failure kept as a regression test), `times` times.
fn regression(test: &str, plain: bool, times: usize, ops: &[Op]) {
    let Some(fx) = Fixture::on(test, plain) else {
        return;
    };
    for _ in 0..times {
        if let Err(e) = fx.run(ops) {
            panic!("{e}");
        }
    }
}

/// Shrunk from a run on ext4: the guest creates `e`, the host removes it and makes folder `b`,
/// which ext4 gives the number `e` had. The overlay had recorded `e` without its birth time, so
/// the rescan took `b` for `e` renamed: the watcher was told of a file moved to `b`, a folder.
#[test]
fn regression_a_number_reused_after_a_guest_create_is_a_new_object() {
    use Op::*;
    regression(
        "regression_a_number_reused_after_a_guest_create",
        true,
        20,
        &[GWrite(3, 0), HRmRf(3), HMkdir(1), Notify(Scope::Whole)],
    );
}

#[test]
fn seed_case_whole_and_scoped_notifications() {
    use Op::*;
    regression(
        "seed_case_whole_and_scoped_notifications",
        false,
        1,
        &[
            HCreate(1, 7),
            Notify(Scope::Right),
            HMkdir(3),
            HCreate(7, 1),
            Notify(Scope::Parent),
            HRename(2, 3),
            Notify(Scope::Whole),
            GWrite(0, 2),
            HRmRf(3),
            Notify(Scope::None),
            Notify(Scope::Right),
        ],
    );
}

/// From the long run (it did not shrink: a race with the overlay's first view of a folder): the
/// guest makes `d/e` and `d/e/a` in it; the host removes `d/e/a`. The folder's first view, taken
/// after the guest's create, had left `d/e/a` out, so its removal was never reported.
#[test]
fn regression_a_name_made_in_a_new_folder_then_removed_by_the_host() {
    use Op::*;
    regression(
        "regression_a_name_made_in_a_new_folder",
        false,
        20,
        &[GMkdir(6), GCreate(8), HRmRf(8), Notify(Scope::Whole)],
    );
}

/// Shrunk from the long run: the host makes `d/e`; the guest's `mkdir d` (EEXIST) makes the
/// kernel look `d` up again and learn its new link count (3); the host removes `d/e`, and the
/// notification found no change against the view (which had 2 all along), so the kernel kept 3.
#[test]
fn regression_a_folder_looked_up_between_host_changes_gets_its_attributes_back() {
    use Op::*;
    regression(
        "regression_a_folder_looked_up_between_host_changes",
        false,
        5,
        &[HMkdir(6), GMkdir(2), HRmRf(6), Notify(Scope::Whole)],
    );
}

/// Shrunk from a strict run: `mv d b; mv a d` (a folder moved away, a file moved in its place)
/// was replayed as the file renamed over the folder (refused), and a swap (`a` and `b` exchanged)
/// can only be replayed through a temporary name.
#[test]
fn regression_chained_and_cyclic_renames() {
    use Op::*;
    regression(
        "regression_chained_renames",
        false,
        5,
        &[HRename(2, 1), HRename(0, 2), Notify(Scope::Whole)],
    );
    regression(
        "regression_swapped_names",
        false,
        5,
        &[
            HRename(0, 3),
            HRename(1, 0),
            HRename(3, 1),
            Notify(Scope::Whole),
        ],
    );
}

/// Shrunk from a long run: `rm a; mv d a` (a file removed, a folder renamed to its name) was
/// replayed as the folder renamed over the file, which the kernel refuses.
#[test]
fn regression_a_folder_renamed_to_a_removed_files_name() {
    use Op::*;
    regression(
        "regression_folder_to_removed_file_name",
        false,
        5,
        &[HRmRf(0), HRename(2, 0), Notify(Scope::Whole)],
    );
}

/// Shrunk from a long run: the host renames file `a` away and makes a folder `a`; before the
/// notification, the guest renames `a` (which it was told is the file) to `e`, and moves the
/// host's folder: its watcher saw a file go to `e`. The notification must tell it `e` is a folder.
#[test]
fn regression_a_guest_rename_of_a_name_the_host_replaced() {
    use Op::*;
    regression(
        "regression_guest_rename_of_replaced_name",
        false,
        5,
        &[
            HRename(0, 1),
            HMkdir(0),
            GRename(0, 3),
            Notify(Scope::Whole),
        ],
    );
}

/// Shrunk from a long run: the host makes two folders, then moves an existing folder into one of
/// them and another into the other's place. A folder moved into a new tree is a rename (its
/// watchers hear `IN_MOVED_FROM`/`IN_MOVED_TO`), not a delete of the old tree plus a create
/// inside the new one, and the new tree is described without it.
#[test]
fn regression_a_folder_moved_into_a_new_tree() {
    use Op::*;
    regression(
        "regression_folder_into_new_tree",
        false,
        5,
        &[
            HMkdir(0),
            HMkdir(3),
            HRename(0, 4),
            HRename(2, 7),
            Notify(Scope::Whole),
        ],
    );
}

/// Shrunk from a long run: a folder moved into a new folder, and a new folder made under its old
/// name (`mkdir e; mv d e/a; mkdir d`): the create of the new `d` was replayed before the rename
/// of the old one; and the model's fold took the move out (its `IN_MOVED_TO` lands in `e`, not
/// watched yet) as happening after the new `d`'s create.
#[test]
fn regression_a_folder_moved_into_a_new_tree_and_its_name_reused() {
    use Op::*;
    regression(
        "regression_folder_into_new_tree_name_reused",
        false,
        5,
        &[HMkdir(3), HRename(2, 7), HMkdir(2), Notify(Scope::Whole)],
    );
}

/// Shrunk from a long run: the host renames `a` over `d/b`; before the notification the guest,
/// which still sees `a` and now finds the same object at `d/b` (its replayed name is looked up
/// again), renames `a` to `d/b`: two names of one object, so the kernel does nothing, and `a` is
/// still a pending host change (the model took it as moved). The watcher must hear that `a` went.
#[test]
fn regression_a_guest_rename_of_a_name_the_host_renamed_away() {
    use Op::*;
    regression(
        "regression_guest_rename_of_renamed_name",
        false,
        5,
        &[
            HCreate(0, 0),
            HRename(0, 5),
            GRename(0, 5),
            Notify(Scope::Right),
        ],
    );
}
