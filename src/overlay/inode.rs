//! The inode table: one FUSE node per backing `(st_dev, st_ino)`, so hard links share one node.
//!
//! No file descriptor is held per known inode (the fd hard limit is 20,000 and a tree may hold far
//! more): a node remembers the names it is known by, `(parent node, name)`, and is re-resolved
//! through its parent when needed. Directories cache an `O_PATH` fd while the budget allows.
//! Node ids are the backing inode numbers where that is unambiguous (same device as SOURCE's
//! root, not 0 or 1, below 2^48), so `stat` and `readdir` agree without a table lookup; other keys
//! get ids allocated from 2^48 up. Nodes are dropped when the kernel forgets them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A FUSE node id.
pub type Ino = u64;
/// The FUSE root node id.
pub const ROOT_INO: Ino = 1;
const ALLOC_BASE: u64 = 1 << 48;
const SHARDS: usize = 64;
/// Directory fds cached at most (the rest are re-resolved on use).
pub const DIRFD_BUDGET: usize = 4096;
/// Names remembered as "told the kernel it does not exist" per directory.
pub const NEGATIVE_BUDGET: usize = 4096;

/// Identity of a backing inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
}

impl Key {
    /// The identity `st` describes.
    pub fn of(st: &libc::stat) -> Key {
        Key {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// What the overlay last saw of one directory entry: the fields the rescan compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntrySnap {
    pub key: Key,
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub atime: (i64, i64),
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    /// The kernel's own `i_nlink` is 32 bits.
    pub nlink: u32,
    /// Allocated 512-byte blocks: `du`, and the sparse-file test of cp, tar and grep
    /// (`st_blocks < st_size / 512`, after which they ask SEEK_HOLE of SOURCE), see them.
    pub blocks: u64,
    /// Birth time where SOURCE reports it ((0, 0): unknown). With the inode number it tells a
    /// new object that reuses a freed number from the old one (ext4, xfs reuse them at once).
    pub btime: (i64, i64),
}

// One per known entry (and one more per known node): the memory budget per inode counts on it.
const _: () = assert!(std::mem::size_of::<EntrySnap>() <= 120);

impl EntrySnap {
    pub fn from_stat(st: &libc::stat) -> Self {
        EntrySnap {
            key: Key {
                dev: st.st_dev,
                ino: st.st_ino,
            },
            mode: st.st_mode,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            atime: (st.st_atime, st.st_atime_nsec),
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            blocks: u64::try_from(st.st_blocks).unwrap_or(0),
            btime: (0, 0),
        }
    }

    /// With the birth time `statx` gave, if any.
    pub fn with_btime(mut self, btime: Option<(i64, i64)>) -> Self {
        self.btime = btime.unwrap_or((0, 0));
        self
    }

    /// Whether both are the same object of SOURCE: the same inode number, and the same birth
    /// time where both are known (a number freed and reused is another object).
    pub fn same_object(&self, other: &EntrySnap) -> bool {
        self.key == other.key
            && (self.btime == (0, 0) || other.btime == (0, 0) || self.btime == other.btime)
    }
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }
}

/// A directory's last full view: name → entry, in name order.
pub type Snapshot = BTreeMap<OsString, EntrySnap>;

/// A folder's modification and change times just before its view was listed, kept when both
/// were older than the listing by [`LISTED_MARGIN`] on this kernel's clock (a local SOURCE:
/// see `Shared::times_prove_names`). Any change to the folder's names after that moves them
/// (to the clock's time then, later than both), so while they stay the same the view's names
/// are still SOURCE's and a whole rescan stats the entries by name without listing the folder.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ListedAt {
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// How much older than a listing a folder's times must be to prove its names (a change in the
/// same tick of a coarse clock could otherwise leave them as they were).
pub const LISTED_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

impl ListedAt {
    /// The folder's times in `st`, if they are older than `listed_from` (the clock's time
    /// before the listing began) by [`LISTED_MARGIN`].
    pub fn proving(st: &libc::stat, listed_from: std::time::SystemTime) -> Option<Self> {
        let at = ListedAt {
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        };
        let limit = listed_from
            .checked_sub(LISTED_MARGIN)?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let limit = (
            i64::try_from(limit.as_secs()).ok()?,
            i64::from(limit.subsec_nanos()),
        );
        (at.mtime < limit && at.ctime < limit).then_some(at)
    }

    /// Whether `st` has the same times.
    pub fn holds(&self, st: &libc::stat) -> bool {
        self.mtime == (st.st_mtime, st.st_mtime_nsec)
            && self.ctime == (st.st_ctime, st.st_ctime_nsec)
    }
}

/// The names a node is known by, `(parent node, name)`: one inline (no allocation of its own).
pub type Links = smallvec::SmallVec<[(Ino, OsString); 1]>;

/// A folder's names the kernel was told do not exist: allocated only once there is one (most
/// nodes never have any, and an empty `HashSet` inline costs 48 bytes a node).
/// (Boxed on purpose: the box is 8 bytes inline where the empty set would be 48.)
#[derive(Default, Debug)]
#[allow(clippy::box_collection)]
pub struct Negatives(Option<Box<HashSet<OsString>>>);

impl Negatives {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `name` was not there yet.
    pub fn insert(&mut self, name: OsString) -> bool {
        self.0.get_or_insert_with(Box::default).insert(name)
    }
    /// Whether `name` was there.
    pub fn remove(&mut self, name: &std::ffi::OsStr) -> bool {
        let Some(s) = self.0.as_mut() else {
            return false;
        };
        let had = s.remove(name);
        if s.is_empty() {
            self.0 = None;
        }
        had
    }
    pub fn contains(&self, name: &std::ffi::OsStr) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(name))
    }
    pub fn clear(&mut self) {
        self.0 = None;
    }
    pub fn iter(&self) -> impl Iterator<Item = &OsString> {
        self.0.iter().flat_map(|s| s.iter())
    }
}

/// Mutable per-node state.
#[derive(Default)]
pub struct NodeState {
    /// Lookups the kernel holds (FUSE `nlookup`); the node is dropped at zero.
    pub nlookup: u64,
    /// Names this node is known by. Usually one (kept inline); more for hard links.
    pub links: Links,
    /// Cached `O_PATH` fd (directories only).
    pub dirfd: Option<Arc<OwnedFd>>,
    /// Last full view of the directory (directories only; `None` until the baseline is taken).
    pub snapshot: Option<Box<Snapshot>>,
    /// The folder's times when that view was listed, where they prove its names (see
    /// [`ListedAt`]); set only with the view it stands for, cleared when the view is replaced
    /// by anything but a listing.
    pub listed: Option<Box<ListedAt>>,
    /// Names the kernel was told do not exist, with a timeout (directories only).
    pub negatives: Negatives,
    /// The kernel-passthrough backing id shared by all open handles, and how many use it
    /// (boxed: most nodes never have one).
    pub backing: Option<Box<(Arc<fuser::BackingId>, u32)>>,
    /// Attributes last told to the kernel.
    pub attr: Option<EntrySnap>,
    /// Moves whenever `attr` is set or cleared ([`NodeState::set_attr`]). A reader of SOURCE (a
    /// `GETATTR`, `LOOKUP` or `READDIRPLUS`) keeps what it read only if this did not move since
    /// it began: a stat taken before a client's write or a host change is never kept after the
    /// write's note or the change's clearing (`OverlayFs::getattr_node`, `Shared::enter_read`).
    pub attr_gen: u32,
    /// Handles open for writing through the overlay, whose writes are noted at their release
    /// (before the kernel stops sending opens; after, every write is noted at once): while
    /// there are any, `attr` is not the file's answer (see `OverlayFs::told_file_attr`). Once
    /// opens stopped the kernel sends no release even for a handle from before, so such a file's
    /// attributes are read from SOURCE for as long as the kernel holds it.
    pub writers: u32,
    /// A listing being read without an open handle (directories, `cache=always`), from its
    /// first `readdir` to its end.
    pub listing: Option<std::sync::Arc<Vec<crate::sys::RawDirent>>>,
}

impl NodeState {
    /// Set (or clear) the attributes last told, from a note of a change or a fresh reading
    /// (see `attr_gen`).
    pub fn set_attr(&mut self, attr: Option<EntrySnap>) {
        self.attr = attr;
        self.attr_gen = self.attr_gen.wrapping_add(1);
    }
}

/// One node.
pub struct Node {
    pub ino: Ino,
    pub key: Key,
    pub is_dir: bool,
    /// A node that exists only for replayed events (the virtual trigger file).
    pub is_virtual: bool,
    state: Mutex<NodeState>,
}

impl Node {
    /// Lock the node's state (poisoning is ignored: the state stays usable).
    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        crate::util::lock(&self.state)
    }
}

type Shard = RwLock<HashMap<Ino, Arc<Node>>>;

/// The table.
pub struct Table {
    shards: Box<[Shard]>,
    foreign: Mutex<HashMap<Key, Ino>>,
    next_alloc: AtomicU64,
    root_key: Key,
    dirfds: AtomicUsize,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Table {
    /// A table whose root node (id 1) is SOURCE's root, with its fd cached for good.
    pub fn new(root_key: Key, root_fd: Arc<OwnedFd>) -> Self {
        let shards = (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect();
        let t = Table {
            shards,
            foreign: Mutex::new(HashMap::new()),
            next_alloc: AtomicU64::new(ALLOC_BASE),
            root_key,
            dirfds: AtomicUsize::new(0),
        };
        let root = Arc::new(Node {
            ino: ROOT_INO,
            key: root_key,
            is_dir: true,
            is_virtual: false,
            state: Mutex::new(NodeState {
                nlookup: 1,
                dirfd: Some(root_fd),
                ..Default::default()
            }),
        });
        write(t.shard(ROOT_INO)).insert(ROOT_INO, root);
        t
    }

    #[allow(clippy::cast_possible_truncation)] // a hash: any of the id's bits will do
    fn shard(&self, ino: Ino) -> &RwLock<HashMap<Ino, Arc<Node>>> {
        &self.shards[(ino as usize ^ (ino >> 17) as usize) % SHARDS]
    }

    /// The node id [`Table::ino_for`] gives `key`, where that allocates nothing (an object of
    /// SOURCE's root device, or one already given an id).
    pub fn ino_if_known(&self, key: Key) -> Option<Ino> {
        if key == self.root_key {
            return Some(ROOT_INO);
        }
        if key.dev == self.root_key.dev && key.ino > 1 && key.ino < ALLOC_BASE {
            return Some(key.ino);
        }
        crate::util::lock(&self.foreign).get(&key).copied()
    }

    /// The node id for a key: the backing inode number where unambiguous, else allocated.
    pub fn ino_for(&self, key: Key) -> Ino {
        if key == self.root_key {
            return ROOT_INO;
        }
        if key.dev == self.root_key.dev && key.ino > 1 && key.ino < ALLOC_BASE {
            return key.ino;
        }
        let mut f = crate::util::lock(&self.foreign);
        *f.entry(key)
            .or_insert_with(|| self.next_alloc.fetch_add(1, Ordering::Relaxed))
    }

    /// The node with this id, if the kernel holds it.
    pub fn get(&self, ino: Ino) -> Option<Arc<Node>> {
        read(self.shard(ino)).get(&ino).cloned()
    }

    /// Record one kernel lookup of `key` under `(parent, name)`; creates the node if needed.
    /// Returns the node and whether it is new.
    pub fn lookup(
        &self,
        key: Key,
        is_dir: bool,
        parent: Ino,
        name: &std::ffi::OsStr,
    ) -> (Arc<Node>, bool) {
        let (node, created) = self.node_for(key, is_dir);
        let ino = node.ino;
        let mut st = node.state();
        st.nlookup += 1;
        if ino != ROOT_INO && !st.links.iter().any(|(p, n)| *p == parent && n == name) {
            if node.is_dir {
                // A directory has one name: the latest wins.
                st.links.clear();
            }
            st.links.push((parent, name.to_owned()));
        }
        drop(st);
        (node, created)
    }

    /// The node for `key` (created without a name or a kernel reference if needed: the caller
    /// records what the kernel is told); whether it is new.
    pub fn node_for(&self, key: Key, is_dir: bool) -> (Arc<Node>, bool) {
        let ino = self.ino_for(key);
        let mut shard = write(self.shard(ino));
        let mut created = false;
        let node = match shard.get(&ino) {
            Some(n) if n.is_dir == is_dir || ino == ROOT_INO => n.clone(),
            old => {
                // New, or a new object under a number SOURCE reused (a folder where a file was,
                // or the other way round; ext4 reuses numbers at once) while the kernel still
                // holds the old one: a fresh node. It keeps the kernel's lookup count, since the
                // FORGETs for the old inode arrive on this number too.
                let nlookup = old.map_or(0, |old| {
                    let mut st = old.state();
                    if st.dirfd.take().is_some() {
                        self.dirfds.fetch_sub(1, Ordering::Relaxed);
                    }
                    st.nlookup
                });
                created = true;
                let n = Arc::new(Node {
                    ino,
                    key,
                    is_dir,
                    is_virtual: false,
                    state: Mutex::new(NodeState {
                        nlookup,
                        ..Default::default()
                    }),
                });
                shard.insert(ino, n.clone());
                n
            }
        };
        (node, created)
    }

    /// A node that exists only for a replayed event (never backed by SOURCE).
    pub fn insert_virtual(&self, parent: Ino, name: &std::ffi::OsStr) -> Arc<Node> {
        let ino = self.next_alloc.fetch_add(1, Ordering::Relaxed);
        let node = Arc::new(Node {
            ino,
            key: Key { dev: u64::MAX, ino },
            is_dir: false,
            is_virtual: true,
            state: Mutex::new(NodeState {
                nlookup: 1,
                links: smallvec::smallvec![(parent, name.to_owned())],
                ..Default::default()
            }),
        });
        write(self.shard(ino)).insert(ino, node.clone());
        node
    }

    /// The relative path of `ino` (and an optional child `name`) from the root, by the first
    /// name of each folder; `Err(partial)` when a folder on the way is gone from the table or has
    /// no name (the kernel forgot it), so the path cannot be trusted.
    pub fn path_of(
        &self,
        ino: Ino,
        name: Option<&std::ffi::OsStr>,
    ) -> Result<std::path::PathBuf, std::path::PathBuf> {
        let mut parts: Vec<std::ffi::OsString> =
            name.map(|n| vec![n.to_owned()]).unwrap_or_default();
        let mut cur = ino;
        let mut complete = false;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                complete = true;
                break;
            }
            let Some(n) = self.get(cur) else { break };
            let Some((p, nm)) = n.state().links.first().cloned() else {
                break;
            };
            parts.push(nm);
            cur = p;
        }
        let path = parts.iter().rev().collect();
        if complete { Ok(path) } else { Err(path) }
    }

    /// The kernel dropped `n` lookups of `ino`; free the node at zero.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut shard = write(self.shard(ino));
        let Some(node) = shard.get(&ino).cloned() else {
            return;
        };
        let mut st = node.state();
        st.nlookup = st.nlookup.saturating_sub(n);
        if st.nlookup > 0 {
            return;
        }
        if st.dirfd.take().is_some() {
            self.dirfds.fetch_sub(1, Ordering::Relaxed);
        }
        drop(st);
        shard.remove(&ino);
        drop(shard);
        if ino >= ALLOC_BASE && !node.is_virtual {
            let mut f = crate::util::lock(&self.foreign);
            if f.get(&node.key) == Some(&ino) {
                f.remove(&node.key);
            }
        }
    }

    /// Cache a directory's fd if the budget allows.
    pub fn cache_dirfd(&self, node: &Node, fd: &Arc<OwnedFd>) {
        if self.dirfds.load(Ordering::Relaxed) >= DIRFD_BUDGET {
            return;
        }
        let mut st = node.state();
        if st.dirfd.is_none() {
            st.dirfd = Some(fd.clone());
            self.dirfds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drop a node's cached directory fd (its backing directory went away or was replaced).
    pub fn drop_dirfd(&self, node: &Node) {
        if node.ino != ROOT_INO && node.state().dirfd.take().is_some() {
            self.dirfds.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every directory node the kernel holds.
    pub fn dirs(&self) -> Vec<Arc<Node>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(read(s).values().filter(|n| n.is_dir).cloned());
        }
        out
    }

    /// Every node the kernel holds.
    pub fn all(&self) -> Vec<Arc<Node>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(read(s).values().cloned());
        }
        out
    }

    /// How many nodes the kernel holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cached directory fds.
    pub fn dirfd_count(&self) -> usize {
        self.dirfds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// `lookup` of `name` in `parent` for inode number `ino` (dev 7).
    fn at(t: &Table, ino: u64, is_dir: bool, parent: Ino, name: &str) -> (Arc<Node>, bool) {
        t.lookup(Key { dev: 7, ino }, is_dir, parent, OsStr::new(name))
    }

    fn table() -> Table {
        let fd = std::fs::File::open("/").unwrap();
        Table::new(Key { dev: 7, ino: 100 }, Arc::new(OwnedFd::from(fd)))
    }

    #[test]
    fn ids_follow_backing_inodes_and_hard_links_share_a_node() {
        let t = table();
        assert_eq!(t.ino_for(Key { dev: 7, ino: 100 }), ROOT_INO);
        let (a, new_a) = at(&t, 55, false, ROOT_INO, "a");
        let (b, new_b) = at(&t, 55, false, ROOT_INO, "b");
        assert!(new_a && !new_b);
        assert_eq!(a.ino, 55);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.state().links.len(), 2);
        assert_eq!(a.state().nlookup, 2);
        // Other devices and tiny numbers get allocated ids, stable while known.
        let f1 = t.ino_for(Key { dev: 8, ino: 55 });
        assert!(f1 >= ALLOC_BASE);
        assert_eq!(t.ino_for(Key { dev: 8, ino: 55 }), f1);
        assert!(t.ino_for(Key { dev: 7, ino: 1 }) >= ALLOC_BASE);
    }

    /// A path is only trusted while every folder on the way is known: once the kernel forgot
    /// one, a replay must not land in the mount root instead (seen once in the VM test).
    #[test]
    fn paths_need_every_folder_on_the_way() {
        let t = table();
        let (a, _) = at(&t, 20, true, ROOT_INO, "a");
        let (b, _) = at(&t, 21, true, a.ino, "b");
        assert_eq!(
            t.path_of(b.ino, Some(OsStr::new("f"))),
            Ok(std::path::PathBuf::from("a/b/f"))
        );
        assert_eq!(t.path_of(ROOT_INO, None), Ok(std::path::PathBuf::new()));
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_none());
        assert_eq!(
            t.path_of(b.ino, Some(OsStr::new("f"))),
            Err(std::path::PathBuf::from("b/f"))
        );
    }

    /// SOURCE reused a number for an object of the other kind (a folder where a file was) while
    /// the kernel still held the file: a fresh folder node, not the file's (whose `is_dir` made
    /// every listing fail with ENOTDIR); the lookup count carries over for the old FORGETs.
    #[test]
    fn a_reused_number_of_another_kind_gets_a_fresh_node() {
        let t = table();
        let k = Key { dev: 7, ino: 30 };
        let (file, _) = t.lookup(k, false, ROOT_INO, OsStr::new("f"));
        let (dir, created) = t.lookup(k, true, ROOT_INO, OsStr::new("d"));
        assert!(created && dir.is_dir && !Arc::ptr_eq(&file, &dir));
        assert_eq!(dir.state().nlookup, 2);
        assert_eq!(
            dir.state().links.as_slice(),
            [(ROOT_INO, OsString::from("d"))]
        );
        let (again, created) = t.lookup(k, true, ROOT_INO, OsStr::new("d"));
        assert!(!created && Arc::ptr_eq(&dir, &again));
        t.forget(dir.ino, 2);
        assert!(t.get(dir.ino).is_some());
        t.forget(dir.ino, 1);
        assert!(t.get(dir.ino).is_none());
    }

    /// A folder's times prove its names only when older than the listing by the margin, and
    /// hold only while both stay.
    #[test]
    fn listed_times_prove_names_only_when_old_enough() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let mut st = crate::sys::zeroed_stat();
        (st.st_mtime, st.st_ctime) = (999_998, 999_998);
        let at = ListedAt::proving(&st, now).expect("2 s old");
        assert!(at.holds(&st));
        st.st_ctime_nsec = 1;
        assert!(!at.holds(&st), "a ctime moved");
        st.st_ctime_nsec = 0;
        st.st_mtime_nsec = 1;
        assert!(!at.holds(&st), "an mtime moved");
        (st.st_mtime, st.st_ctime) = (999_998, 999_999);
        assert_eq!(ListedAt::proving(&st, now), None, "ctime within the margin");
        (st.st_mtime, st.st_ctime) = (1_000_001, 999_000);
        assert_eq!(ListedAt::proving(&st, now), None, "mtime in the future");
    }

    /// What a known inode costs in the table (issue 16): the node inline (its name inline too,
    /// no negative-name set until there is one). Over this bound, RSS per known inode grows:
    /// an `Arc<Node>` of up to 280 bytes is a 304-byte glibc chunk (296 bytes and the chunk
    /// header, rounded to 16), as at 272.
    #[test]
    fn a_node_stays_small() {
        assert!(
            std::mem::size_of::<Node>() <= 280,
            "{}",
            std::mem::size_of::<Node>()
        );
        assert_eq!(std::mem::size_of::<Negatives>(), 8);
        let t = table();
        let (n, _) = at(&t, 40, false, ROOT_INO, "x");
        assert!(!n.state().links.spilled());
        let mut neg = Negatives::default();
        assert!(neg.insert(OsString::from("a")) && neg.contains(OsStr::new("a")));
        assert!(neg.remove(OsStr::new("a")) && neg.is_empty() && neg.0.is_none());
    }

    #[test]
    fn forget_frees_at_zero() {
        let t = table();
        let (n, _) = at(&t, 9, false, ROOT_INO, "x");
        at(&t, 9, false, ROOT_INO, "x");
        t.forget(n.ino, 1);
        assert!(t.get(9).is_some());
        t.forget(n.ino, 1);
        assert!(t.get(9).is_none());
        t.forget(ROOT_INO, 10);
        assert!(t.get(ROOT_INO).is_some());
        assert_eq!(t.len(), 1);
    }
}
