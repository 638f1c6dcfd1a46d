//! What the host sends, decided without I/O: a change as a line the protocol can carry, the
//! bounded per-channel log the watcher appends to and every guest reads at its own pace, and the
//! batch one guest gets for one send (deduplicated, renames first, collapsed to a folder past N
//! paths in it and to `CHANNEL\n` past M paths in all).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::protocol::{MAX_LINE, MAX_RELPATH};

/// One change in a channel, as the guests will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something at this relative path (a file or a folder) changed.
    Path(Box<str>),
    /// A rename within the channel: both paths travel in one write, so the guest pairs them.
    Move(Box<str>, Box<str>),
    /// Anything may have changed: `CHANNEL\n`.
    Channel,
}

/// What [`sendable`] made of a relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sendable {
    /// The path itself.
    Path(String),
    /// The path cannot travel in a line; the folder scope that holds it (counted).
    Folder(String),
    /// Not even its top folder can travel: the whole channel (counted).
    Channel,
}

impl Sendable {
    /// Whether the path had to be widened.
    pub fn widened(&self) -> bool {
        !matches!(self, Sendable::Path(_))
    }

    /// As a change.
    pub fn into_change(self) -> Change {
        match self {
            Sendable::Path(p) | Sendable::Folder(p) => Change::Path(p.into()),
            Sendable::Channel => Change::Channel,
        }
    }
}

/// Whether one name can travel inside a line: UTF-8, and none of the bytes that end or split a
/// line (`\n`, `\r`, `\t`, NUL). Other names go as their folder's scope: a name a guest made up
/// must never become a broken line or a line for another channel (`docs\ta\nmedia`).
fn name_travels(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.iter().any(|b| matches!(b, b'\n' | b'\r' | b'\t' | 0))
        && std::str::from_utf8(name).is_ok()
}

/// The scope to send for `rel` (relative to the channel's folder) in channel `channel`: the path
/// when every name in it can travel and the line fits in [`MAX_LINE`]; otherwise the deepest
/// folder that can, or the whole channel. A path ending in white space also goes as its folder
/// (the guest trims lines). An empty `rel` (the channel's folder itself) is the whole channel.
pub fn sendable(channel: &str, rel: &OsStr) -> Sendable {
    let bytes = rel.as_bytes();
    let comps: Vec<&[u8]> = bytes
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if comps.is_empty() {
        return Sendable::Channel;
    }
    let mut keep = comps.iter().take_while(|c| name_travels(c)).count();
    let mut widened = keep < comps.len();
    // Longest path whose line fits: `CHANNEL\tPATH`.
    let room = MAX_LINE.saturating_sub(channel.len() + 1).min(MAX_RELPATH);
    loop {
        if keep == 0 {
            return Sendable::Channel;
        }
        let joined = comps[..keep].join(&b'/');
        // The guest trims a line: a path ending in white space would arrive as another one.
        let text = String::from_utf8(joined).unwrap_or_default();
        let trailing_space = text.ends_with(char::is_whitespace);
        if text.len() <= room && !trailing_space && !text.is_empty() {
            return if widened {
                Sendable::Folder(text)
            } else {
                Sendable::Path(text)
            };
        }
        keep -= 1;
        widened = true;
    }
}

/// The bounded log of one channel: the watcher appends, each guest reads from its own cursor.
/// When full the oldest entry goes; a guest whose cursor falls behind it has lost changes and is
/// sent the whole channel instead.
#[derive(Debug)]
pub struct Log {
    base: u64,
    entries: VecDeque<Arc<Change>>,
    cap: usize,
}

/// What a guest's cursor finds in a [`Log`].
#[derive(Debug)]
pub enum Taken {
    /// Nothing new.
    Nothing,
    /// The changes since the cursor, in order.
    Changes(Vec<Arc<Change>>),
    /// More than the caller's limit, or older ones already dropped: send the whole channel.
    TooMany { lagged: bool, count: u64 },
}

impl Log {
    /// An empty log holding at most `cap` changes (at least 1).
    pub fn new(cap: usize) -> Log {
        Log {
            base: 0,
            entries: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The sequence number the next change gets.
    pub fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Append one change; returns whether an old one had to go.
    pub fn push(&mut self, c: Arc<Change>) -> bool {
        let full = self.entries.len() >= self.cap;
        if full {
            self.entries.pop_front();
            self.base += 1;
        }
        self.entries.push_back(c);
        full
    }

    /// Take what follows `cursor` (at most `limit` changes) and move the cursor to the head.
    pub fn take(&self, cursor: &mut u64, limit: usize) -> Taken {
        let head = self.head();
        let from = *cursor;
        *cursor = head;
        if from >= head {
            return Taken::Nothing;
        }
        let count = head - from;
        if from < self.base {
            return Taken::TooMany {
                lagged: true,
                count,
            };
        }
        if count > limit as u64 {
            return Taken::TooMany {
                lagged: false,
                count,
            };
        }
        let skip = (from - self.base) as usize;
        Taken::Changes(self.entries.iter().skip(skip).cloned().collect())
    }
}

/// Collapse limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// More paths than this in one folder: send the folder instead.
    pub folder: usize,
    /// More paths than this in all: send the whole channel.
    pub channel: usize,
}

/// How one batch was made (for the counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Changes taken from the log.
    pub changes: u64,
    /// Lines written.
    pub lines: u64,
    /// Changes merged into another line (duplicates, or into a collapsed folder or channel).
    pub coalesced: u64,
    /// Folders sent instead of their paths.
    pub collapsed_folders: u64,
    /// Whether the batch became `CHANNEL\n` because it was too large.
    pub collapsed_channel: bool,
}

/// The parent folder of a relative path (`""` at the top).
fn parent(p: &str) -> &str {
    p.rfind('/').map(|i| &p[..i]).unwrap_or("")
}

/// Paths named by `changes` (a rename names two).
fn mentions(changes: &[Arc<Change>]) -> u64 {
    changes
        .iter()
        .map(|c| match **c {
            Change::Move(..) => 2,
            _ => 1,
        })
        .sum()
}

/// Append the lines of one channel's batch to `out`: renames first (both paths adjacent, so a
/// guest reading the write in pieces still gets each pair together), then the other paths in
/// order of first appearance, each once. More than `limits.folder` paths directly in one folder
/// become that folder (a folder at the top: the whole channel); more than `limits.channel` lines
/// in all become `CHANNEL\n`.
pub fn build(
    channel: &str,
    changes: &[Arc<Change>],
    limits: Limits,
    out: &mut Vec<u8>,
) -> BatchStats {
    let mut st = BatchStats {
        changes: changes.len() as u64,
        ..BatchStats::default()
    };
    let whole = |out: &mut Vec<u8>, mut st: BatchStats, collapsed: bool| {
        out.extend_from_slice(channel.as_bytes());
        out.push(b'\n');
        st.lines = 1;
        st.coalesced = mentions(changes).saturating_sub(1);
        st.collapsed_channel = collapsed;
        st
    };
    if changes.iter().any(|c| **c == Change::Channel) {
        return whole(out, st, false);
    }
    if changes.len() > limits.channel {
        return whole(out, st, true);
    }
    // Renames first, then paths; each path once.
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for c in changes {
        match &**c {
            Change::Move(a, b) => {
                seen.insert(a);
                seen.insert(b);
                pairs.push((a, b));
            }
            Change::Path(p) => {
                if seen.insert(p) {
                    paths.push(p);
                }
            }
            Change::Channel => {}
        }
    }
    // Folders with too many paths in them.
    let mut per_folder: HashMap<&str, usize> = HashMap::new();
    for p in pairs
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .chain(paths.iter().copied())
    {
        *per_folder.entry(parent(p)).or_default() += 1;
    }
    let crowded: HashSet<&str> = per_folder
        .iter()
        .filter(|(_, n)| **n > limits.folder)
        .map(|(f, _)| *f)
        .collect();
    if crowded.contains("") {
        return whole(out, st, true);
    }
    let mut lines: Vec<&str> = Vec::new();
    let mut emitted: HashSet<&str> = HashSet::new();
    let ordered = pairs
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .chain(paths.iter().copied());
    for p in ordered {
        let folder = parent(p);
        let target = if crowded.contains(folder) { folder } else { p };
        if emitted.insert(target) {
            lines.push(target);
        }
    }
    if lines.len() > limits.channel {
        return whole(out, st, true);
    }
    for l in &lines {
        out.extend_from_slice(channel.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    st.lines = lines.len() as u64;
    st.collapsed_folders = crowded.len() as u64;
    st.coalesced = mentions(changes).saturating_sub(st.lines);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LineDecoder, Notification};

    fn p(s: &str) -> Arc<Change> {
        Arc::new(Change::Path(s.into()))
    }
    fn mv(a: &str, b: &str) -> Arc<Change> {
        Arc::new(Change::Move(a.into(), b.into()))
    }
    const L: Limits = Limits {
        folder: 3,
        channel: 6,
    };

    fn lines(channel: &str, changes: &[Arc<Change>]) -> (Vec<String>, BatchStats) {
        let mut out = Vec::new();
        let st = build(channel, changes, L, &mut out);
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_string).collect(), st)
    }

    #[test]
    fn paths_once_renames_first() {
        let (l, st) = lines("docs", &[p("a"), p("b/c"), mv("x", "b/y"), p("a")]);
        assert_eq!(l, ["docs\tx", "docs\tb/y", "docs\ta", "docs\tb/c"]);
        assert_eq!(st.lines, 4);
        assert_eq!(st.changes, 4);
        assert_eq!(st.coalesced, 1);
        assert!(!st.collapsed_channel);
    }

    #[test]
    fn crowded_folder_collapses_to_it_and_top_to_the_channel() {
        let (l, st) = lines("docs", &[p("d/1"), p("d/2"), p("d/3"), p("d/4"), p("e/1")]);
        assert_eq!(l, ["docs\td", "docs\te/1"]);
        assert_eq!(st.collapsed_folders, 1);
        assert_eq!(st.coalesced, 3);
        let (l, st) = lines("docs", &[p("1"), p("2"), p("3"), p("4")]);
        assert_eq!(l, ["docs"]);
        assert!(st.collapsed_channel);
        let many: Vec<_> = (0..7).map(|i| p(&format!("f{i}/x"))).collect();
        let (l, st) = lines("docs", &many);
        assert_eq!(l, ["docs"]);
        assert!(st.collapsed_channel);
        assert_eq!(st.coalesced, 6);
        let (l, st) = lines("docs", &[p("a"), Arc::new(Change::Channel)]);
        assert_eq!(l, ["docs"]);
        assert!(!st.collapsed_channel);
    }

    #[test]
    fn log_cursors_lag_and_collapse() {
        let mut log = Log::new(4);
        let mut c = log.head();
        assert!(matches!(log.take(&mut c, 10), Taken::Nothing));
        for i in 0..3 {
            log.push(p(&i.to_string()));
        }
        match log.take(&mut c, 10) {
            Taken::Changes(v) => assert_eq!(v.len(), 3),
            t => panic!("{t:?}"),
        }
        assert_eq!(c, 3);
        for i in 0..6 {
            log.push(p(&i.to_string()));
        }
        assert!(matches!(
            log.take(&mut c, 10),
            Taken::TooMany {
                lagged: true,
                count: 6
            }
        ));
        assert_eq!(c, log.head());
        log.push(p("x"));
        log.push(p("y"));
        assert!(matches!(
            log.take(&mut c, 1),
            Taken::TooMany {
                lagged: false,
                count: 2
            }
        ));
    }

    #[test]
    fn sendable_paths_and_hostile_names() {
        let s = |r: &[u8]| sendable("docs", OsStr::from_bytes(r));
        assert_eq!(s(b"a/b.txt"), Sendable::Path("a/b.txt".into()));
        assert_eq!(s(b""), Sendable::Channel);
        assert_eq!(s(b"a/x\ny"), Sendable::Folder("a".into()));
        assert_eq!(s(b"a\tmedia/f"), Sendable::Channel);
        assert_eq!(s(b"a/b\r/c"), Sendable::Folder("a".into()));
        assert_eq!(s(b"a/\xff\xfe"), Sendable::Folder("a".into()));
        assert_eq!(s(b"a/b "), Sendable::Folder("a".into()));
        assert_eq!(s(b"a /b"), Sendable::Path("a /b".into()));
        let long = format!("d/{}", "n".repeat(255));
        let deep: String = std::iter::repeat_n(long.as_str(), 20)
            .collect::<Vec<_>>()
            .join("/");
        match s(deep.as_bytes()) {
            Sendable::Folder(f) => {
                assert!(f.len() + 5 <= MAX_LINE);
                assert!(deep.starts_with(&f));
            }
            o => panic!("{o:?}"),
        }
    }

    /// Whatever the names, the bytes written decode to exactly one notification per line, all
    /// for the channel, each naming a prefix of a changed path.
    #[test]
    fn hostile_names_never_inject_lines() {
        let names: &[&[u8]] = &[
            b"docs\ta\nmedia",
            b"x\r\nmedia\tetc",
            b"\n",
            b"\t",
            b"ok",
            b"tab\there",
            b"\xc3\x28",
            b"trailing ",
            b" lead",
            b"\xe2\x80\xa8sep",
        ];
        let mut seed = 7u32;
        for _ in 0..2000 {
            let mut rel = Vec::new();
            for i in 0..(seed % 4 + 1) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i > 0 {
                    rel.push(b'/');
                }
                rel.extend_from_slice(names[(seed >> 16) as usize % names.len()]);
            }
            let change = sendable("docs", OsStr::from_bytes(&rel)).into_change();
            let mut out = Vec::new();
            build("docs", &[Arc::new(change)], L, &mut out);
            let mut d = LineDecoder::new();
            let got = d.push(&out);
            assert_eq!(
                got.len(),
                1,
                "{rel:?} -> {:?}",
                String::from_utf8_lossy(&out)
            );
            let n: &Notification = got[0].as_ref().unwrap();
            assert_eq!(n.channel, "docs");
            if let Some(path) = &n.path {
                assert!(rel.starts_with(path.as_bytes()), "{rel:?} -> {path}");
            }
        }
    }
}
