//! The shared state's core: caching policy and TTLs, the handle table, resolving nodes to
//! fds and paths, attributes, what local operations leave behind, auditing and atime.

use super::*;

impl Shared {
    pub fn new(cfg: MountConfig, root_fd: OwnedFd) -> io::Result<Self> {
        let st = sys::fstat(root_fd.as_fd())?;
        let magic = sys::fs_magic(root_fd.as_fd()).unwrap_or(0);
        let source_is_fuse = magic == sys::FUSE_MAGIC;
        let root_fd = Arc::new(root_fd);
        let linked = cfg.channel.is_none();
        let fd_budget = cfg
            .fdcache
            .unwrap_or_else(|| sys::nofile_limit().map_or(0, fdcache::FdCache::default_budget));
        let (cfg_read_only, cfg_noatime, cfg_nodiratime) =
            (cfg.read_only, cfg.noatime, cfg.nodiratime);
        Ok(Shared {
            table: Table::new(
                Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                },
                root_fd.clone(),
            ),
            root_fd,
            cfg,
            replay: ReplayView::default(),
            stats: Stats::default(),
            linked: AtomicBool::new(linked),
            exact_feed: AtomicBool::new(false),
            state_since: AtomicU64::new(unix_now()),
            passthrough: AtomicBool::new(false),
            passthrough_refused: AtomicBool::new(false),
            fd_cache: fdcache::FdCache::new(fd_budget),
            open_free: AtomicBool::new(false),
            orphans: Mutex::default(),
            dont_mask: AtomicBool::new(false),
            kernel_minor: AtomicU32::new(0),
            source_is_fuse,
            times_prove_names: TIMES_PROVE_NAMES.contains(&magic),
            source_dev: st.st_dev,
            statfs_reused: Mutex::new(None),
            handles: (0..HANDLE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            next_fh: AtomicU64::new(1),
            views_epoch: AtomicU64::new(0),
            fresh_views: Default::default(),
            baseline_tx: Mutex::new(None),
            local: Default::default(),
            revalidating: crate::overlay::access::Pending::default(),
            revalidation_reports: Mutex::default(),
            flags: MountFlagsNow {
                read_only: AtomicBool::new(cfg_read_only),
                noatime: AtomicBool::new(cfg_noatime),
                nodiratime: AtomicBool::new(cfg_nodiratime),
            },
            mountpoint: std::sync::OnceLock::new(),
            export: Export::default(),
            source_atime: std::sync::OnceLock::new(),
            atime_refresh: Default::default(),
            open_expiries: Default::default(),
        })
    }

    /// The changes found by the rescans that opens asked for and the worker has done, in order
    /// (for watch subscribers: the link reports them with the next notification's; a rescan
    /// queued after that notification's is reported with the following one).
    pub fn take_revalidation_records(&self) -> Vec<crate::overlay::sync::ChangeRecord> {
        let mut q = lock(&self.revalidation_reports);
        let mut out = Vec::new();
        while let Some(rx) = q.front() {
            match rx.try_recv() {
                Ok(report) => out.extend(report.records),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {}
            }
            q.pop_front();
        }
        out
    }

    /// The caching policy in force now: `always` falls back to `auto` while unlinked.
    pub fn policy(&self) -> CachePolicy {
        match self.cfg.cache {
            CachePolicy::Always if !self.linked.load(Ordering::Relaxed) => CachePolicy::Auto,
            // Without opens to check (see `open_free`), long caching needs trusted notifications.
            CachePolicy::Always
                if self.open_free.load(Ordering::Relaxed) && !self.trusts_notifications() =>
            {
                CachePolicy::Auto
            }
            p => p,
        }
    }

    /// Whether notifications are trusted: no check of SOURCE at an open (`revalidate=notify`
    /// while linked; `auto` while a `vfnotify host` feeds the daemon too).
    pub fn trusts_notifications(&self) -> bool {
        use crate::overlay::options::Revalidate;
        self.linked.load(Ordering::Relaxed)
            && match self.cfg.revalidate {
                Revalidate::Notify => true,
                Revalidate::Auto => self.exact_feed.load(Ordering::Relaxed),
                Revalidate::Open => false,
            }
    }

    pub(super) fn ttl(&self) -> Duration {
        self.policy().ttl()
    }

    /// The entry timeout for telling the kernel about `(parent, name)`: none while a replay for
    /// that name is pending (see [`ReplayView`]), unless the replay thread itself asks.
    pub(super) fn entry_ttl(&self, req: &Request, parent: Ino, name: &OsStr) -> Duration {
        if !self.replay.is_replay(req) && self.replay.is_pending(parent, name) {
            Duration::ZERO
        } else {
            self.ttl()
        }
    }

    /// How long the kernel may keep the attributes of `node` just read. A file open for writing
    /// with kernel passthrough may be written through a shared mapping, which changes its times
    /// on SOURCE without a request reaching us (nor, after `msync`, any invalidation): its
    /// attributes are not cached while a writer has it open.
    pub(super) fn attr_ttl(&self, node: &Node) -> Duration {
        if !node.is_dir && node.state().backing.is_some() && self.has_writer(node.ino) {
            Duration::ZERO
        } else {
            self.ttl()
        }
    }

    /// A new open handle; one open for writing counts in its node's `writers` until
    /// [`OverlayFs::do_release`] noted its writes.
    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        if let Handle::File(f) = &h {
            if f.writable {
                f.node.state().writers += 1;
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles[shard_of(fh)]).insert(fh, Arc::new(h));
        fh
    }
    pub(super) fn handle(&self, fh: FileHandle) -> io::Result<Arc<Handle>> {
        lock(&self.handles[shard_of(fh.0)])
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| err(libc::EBADF))
    }
    pub(super) fn take_handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        lock(&self.handles[shard_of(fh.0)]).remove(&fh.0)
    }

    pub(super) fn node(&self, ino: INodeNo) -> io::Result<Arc<Node>> {
        self.table.get(ino.0).ok_or_else(|| err(libc::ESTALE))
    }

    /// An `O_PATH` fd for a directory node, cached while the budget allows.
    pub fn dir_fd(&self, node: &Node) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = node.state().dirfd.clone() {
            return Ok(fd);
        }
        if !node.is_dir {
            return Err(err(libc::ENOTDIR));
        }
        let links = node.state().links.clone();
        let mut last = err(libc::ESTALE);
        for (parent, name) in links {
            let Some(pnode) = self.table.get(parent) else {
                continue;
            };
            let res = self.dir_fd(&pnode).and_then(|pfd| {
                let fd = sys::openat(
                    pfd.as_fd(),
                    &sys::cstr(&name)?,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                check_key(&sys::fstatat_held(fd.as_fd(), c"")?, node.key)?;
                Ok(Arc::new(fd))
            });
            match res {
                Ok(fd) => {
                    self.table.cache_dirfd(node, &fd);
                    return Ok(fd);
                }
                Err(e) => last = e,
            }
        }
        // A folder found again by its handle and not named since.
        if let Some(k @ Kept::Dir { .. }) = self.found_of(node.ino) {
            let fd = Arc::new(self.reach(&k)?.0);
            self.table.cache_dirfd(node, &fd);
            return Ok(fd);
        }
        Err(last)
    }

    /// Find a live name of a node: its parent's fd, the name, and the current attributes.
    pub fn resolve(&self, node: &Node) -> io::Result<Resolved> {
        self.resolve_by(node, |pfd, name| {
            let st = sys::fstatat(pfd.as_fd(), &sys::cstr(name)?)?;
            check_key(&st, node.key)?;
            Ok((pfd, name.to_owned(), st))
        })
    }

    /// `at(parent fd, name)` for the node's names in turn (and, for a file found again by its
    /// handle, the folder and name it had then) until one gives the node itself: `at` checks
    /// that (ESTALE if it is another object).
    pub fn resolve_by<T>(
        &self,
        node: &Node,
        at: impl Fn(Arc<OwnedFd>, &OsStr) -> io::Result<T>,
    ) -> io::Result<T> {
        let links = node.state().links.clone();
        let mut last = err(libc::ESTALE);
        for (parent, name) in links {
            let Some(pnode) = self.table.get(parent) else {
                continue;
            };
            match self.dir_fd(&pnode).and_then(|pfd| at(pfd, &name)) {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        if let Some(k @ Kept::File { .. }) = self.found_of(node.ino) {
            let (pfd, name) = self.reach(&k)?;
            return at(Arc::new(pfd), &name);
        }
        Err(last)
    }

    /// Current attributes of a node (of an open handle when its last name is gone).
    pub fn stat_node(&self, node: &Node) -> io::Result<libc::stat> {
        if node.is_dir {
            match self.dir_fd(node) {
                Ok(fd) => sys::fstat(fd.as_fd()),
                // A folder removed through the overlay (rmdir, or replaced by a rename) that a
                // client still holds open: what was seen of it when it went (link count 0).
                Err(e) => {
                    let st = node.state();
                    match st.attr {
                        Some(a) if st.links.is_empty() && a.nlink == 0 => Ok(snap_stat(&a)),
                        _ => Err(e),
                    }
                }
            }
        } else {
            match self.resolve(node) {
                Ok(r) => Ok(r.2),
                Err(e) => match self.open_fd_of(node) {
                    Some(fd) => sys::fstat(fd.as_fd()),
                    None => Err(e),
                },
            }
        }
    }

    /// Whether a client holds `ino` open for writing (its writes are not host changes).
    pub fn has_writer(&self, ino: Ino) -> bool {
        // Without opens (see `open_free`) handles are never released: every write records its
        // change itself.
        if self.open_free.load(Ordering::Relaxed) {
            return false;
        }
        self.table.get(ino).is_some_and(|n| n.state().writers > 0)
    }

    /// An fd the overlay holds of `node`'s object (kept in the fd cache, an orphan's, an open
    /// handle's), to act on the object itself without resolving its name on SOURCE (over
    /// virtiofs each resolution is a `LOOKUP` and the folder's `GETATTR` at the host). The
    /// object may have lost its name to a host change not notified yet; acting on it then is
    /// the order "the client's change, then the host's", as on a local filesystem.
    pub(super) fn held_fd(&self, node: &Node) -> Option<Arc<OwnedFd>> {
        self.fd_cache
            .peek_any(node.ino, node.key)
            .or_else(|| self.open_fd_of(node))
    }

    /// An open handle's fd of `node` (or its orphan's). Shared, not duplicated: closing a
    /// duplicate of a FUSE file is a `FLUSH` at SOURCE.
    pub(super) fn open_fd_of(&self, node: &Node) -> Option<Arc<OwnedFd>> {
        if let Some(fd) = self.orphan_fd(node.ino) {
            return Some(fd.0);
        }
        self.handles.iter().find_map(|shard| {
            let shard = lock(shard);
            shard.values().find_map(|h| match &**h {
                Handle::File(OpenFile {
                    node: n,
                    fd: Some(fd),
                    ..
                }) if n.ino == node.ino => Some(fd.clone()),
                _ => None,
            })
        })
    }

    /// The FUSE attributes for `st` under node id `ino`.
    pub fn attr(&self, ino: Ino, st: &libc::stat) -> FileAttr {
        // Set-ID bits are shown as they are; `nosuid` (the default) makes the kernel ignore them.
        let perm = (st.st_mode & 0o7777) as u16;
        FileAttr {
            ino: INodeNo(ino),
            size: count_u64(st.st_size),
            blocks: count_u64(st.st_blocks),
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind(st.st_mode),
            perm,
            nlink: clamp_u32(st.st_nlink),
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: rdev_u32(st.st_rdev),
            blksize: clamp_u32(st.st_blksize),
            flags: 0,
        }
    }

    /// Record a lookup of `(parent, name)` → `st` and build the entry reply's attributes.
    pub(super) fn enter(
        &self,
        parent: Ino,
        name: &OsStr,
        st: &libc::stat,
    ) -> (Arc<Node>, FileAttr) {
        self.enter_read(parent, name, st, None)
    }

    /// The node `(parent, name)` names in the parent's view, and its attributes' generation
    /// (`NodeState::attr_gen`), before SOURCE is read for the name (nothing is asked of SOURCE
    /// here).
    pub(super) fn attr_seen(&self, parent: &Node, name: &OsStr) -> Option<(Ino, u32)> {
        let key = parent.state().snapshot.as_ref()?.get(name)?.key;
        let node = self.table.get(self.table.ino_for(key))?;
        let seen = node.state().attr_gen;
        Some((node.ino, seen))
    }

    /// [`Shared::enter`] for attributes a LOOKUP or READDIRPLUS read of SOURCE, with what
    /// [`Shared::attr_seen`] gave before the reading: if the node's attributes were noted or
    /// cleared meanwhile (a host change notified meanwhile may have come after the reading),
    /// what was read is not kept as told (it would answer the kernel's next GETATTR for good).
    pub(super) fn enter_read(
        &self,
        parent: Ino,
        name: &OsStr,
        st: &libc::stat,
        seen: Option<(Ino, u32)>,
    ) -> (Arc<Node>, FileAttr) {
        let snap = EntrySnap::from_stat(st);
        let (node, created) = self.table.lookup(snap.key, snap.is_dir(), parent, name);
        {
            let mut ns = node.state();
            let moved = seen.is_some_and(|(ino, g)| ino == node.ino && ns.attr_gen != g);
            if !moved {
                ns.set_attr(Some(snap));
            }
        }
        if created && node.is_dir && self.cfg.channel.is_some() {
            self.request_baseline(node.ino);
        }
        let attr = self.attr(node.ino, st);
        (node, attr)
    }

    /// The node a replay's create stands for: the object SOURCE already has under `name`, or
    /// under the real name a temporary `name` stands for (linked under both).
    pub(super) fn enter_replayed(
        &self,
        pnode: &Node,
        parent: Ino,
        name: &OsStr,
    ) -> io::Result<(Arc<Node>, FileAttr)> {
        let pfd = self.dir_fd(pnode)?;
        let real = self.replay.standin(parent, name);
        let found = sys::fstatat(pfd.as_fd(), &sys::cstr(real.as_deref().unwrap_or(name))?);
        let st = match (found, self.replay.making(parent, name)) {
            (Ok(st), Some(made)) if EntrySnap::from_stat(&st).key == made.key => st,
            (Ok(st), None) => st,
            // SOURCE moved on since the rescan found the object (`ln -s t .l.tmp; mv .l.tmp l`,
            // the rename just after the rescan): the name is made as it was found — a local
            // watcher saw it made — and its folder is read again before the notification is
            // answered, which replays what followed (the rename, the delete).
            (Ok(_), Some(made)) => self.moved_on(parent, &made),
            (Err(e), Some(made)) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.moved_on(parent, &made)
            }
            (Err(e), _) => return Err(e),
        };
        let (node, attr) = self.enter(parent, name, &st);
        if let Some(real) = real {
            let mut ns = node.state();
            if !ns.links.iter().any(|(p, n)| *p == parent && *n == real) {
                ns.links.push((parent, real));
            }
        }
        Ok((node, attr))
    }

    /// See [`Shared::enter_replayed`]: the object as the rescan found it.
    fn moved_on(&self, parent: Ino, made: &EntrySnap) -> libc::stat {
        Stats::bump(&self.stats.replay_moved_on);
        self.replay.note_moved_on(parent);
        snap_stat(made)
    }

    pub(super) fn request_baseline(&self, ino: Ino) {
        if let Some(tx) = lock(&self.baseline_tx).as_ref() {
            let _ = tx.send(crate::overlay::sync::Job::Baseline(ino));
        }
    }

    /// Keep a directory's snapshot in step with a change made through the overlay, so the next
    /// rescan does not report it again as a host change.
    pub(super) fn note_local(&self, parent: Ino, name: &OsStr, st: Option<&libc::stat>) {
        let Some(pnode) = self.table.get(parent) else {
            return;
        };
        let dir_fd = self.dir_fd(&pnode).ok();
        let dir_st = dir_fd.as_ref().and_then(|fd| sys::fstat(fd.as_fd()).ok());
        // With its birth time, as rescans record entries: a number SOURCE frees and reuses
        // at once (ext4) must not pass for the object made here.
        let btime = match (st, &dir_fd) {
            (Some(st), Some(fd)) => sys::cstr(name)
                .and_then(|n| sys::fstatat_fresh_btime(fd.as_fd(), &n))
                .ok()
                .filter(|(now, _)| (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino))
                .and_then(|(_, b)| b),
            _ => None,
        };
        self.note_in_view(&pnode, name, st.map(|st| (st, btime)), dir_st.as_ref());
    }

    /// [`Shared::note_local`] for an object the client made, with what the create already
    /// read: the object's attributes and birth time ([`Shared::own`]), and the folder's
    /// attributes after it.
    pub(super) fn note_made(
        &self,
        parent: Ino,
        name: &OsStr,
        made: (&libc::stat, Option<(i64, i64)>),
        dir_st: &libc::stat,
    ) {
        if let Some(pnode) = self.table.get(parent) {
            self.note_in_view(&pnode, name, Some(made), Some(dir_st));
        }
    }

    fn note_in_view(
        &self,
        pnode: &Node,
        name: &OsStr,
        entry: Option<(&libc::stat, Option<(i64, i64)>)>,
        dir_st: Option<&libc::stat>,
    ) {
        let mut ps = pnode.state();
        ps.negatives.remove(name);
        if let Some(d) = dir_st {
            ps.set_attr(Some(EntrySnap::from_stat(d)));
        }
        if let Some(snap) = ps.snapshot.as_mut() {
            match entry {
                Some((st, btime)) => {
                    snap.insert(name.to_owned(), EntrySnap::from_stat(st).with_btime(btime));
                }
                None => {
                    snap.remove(name);
                }
            }
        }
    }

    /// A client operation on a node's names (attributes, xattrs) begins.
    pub(super) fn local_node(&self, node: &Node) -> crate::overlay::local_ops::LocalGuard<'_> {
        let links = node.state().links.clone();
        let names: Vec<(Ino, &OsStr)> = links.iter().map(|(p, n)| (*p, n.as_os_str())).collect();
        self.local.begin(&names)
    }

    /// Record `entry` for `(parent, name)` in the parent's view as it is.
    pub(super) fn note_local_entry(&self, parent: Ino, name: &OsStr, entry: EntrySnap) {
        if let Some(pnode) = self.table.get(parent) {
            let mut ps = pnode.state();
            ps.negatives.remove(name);
            if let Some(snap) = ps.snapshot.as_mut() {
                snap.insert(name.to_owned(), entry);
            }
        }
    }

    /// After a local change to a node's attributes or data, refresh its snapshot entries.
    pub(super) fn note_local_node(&self, node: &Node, st: &libc::stat) {
        let links = node.state().links.clone();
        for (parent, name) in links {
            if let Some(pnode) = self.table.get(parent) {
                if let Some(snap) = pnode.state().snapshot.as_mut() {
                    if let Some(e) = snap.get_mut(&name) {
                        // The same object: its birth time stays.
                        let btime = (e.key == EntrySnap::from_stat(st).key).then_some(e.btime);
                        *e = EntrySnap::from_stat(st).with_btime(btime);
                    }
                }
            }
        }
        node.state().set_attr(Some(EntrySnap::from_stat(st)));
    }

    /// A folder removed through the overlay: the attributes it has now (link count 0, a new
    /// ctime), read through an fd taken before it went, are what a client holding it open sees
    /// (under `cache=always` a folder's attributes are answered from `attr`).
    pub(super) fn note_removed_dir(&self, node: &Node, fd: &OwnedFd) {
        if let Ok(st) = sys::fstat(fd.as_fd()) {
            node.state().set_attr(Some(EntrySnap::from_stat(&st)));
        }
    }

    pub(super) fn unlink_child(&self, child: Option<Arc<Node>>, parent: Ino, name: &OsStr) {
        if let Some(c) = child {
            c.state()
                .links
                .retain(|(p, n)| !(*p == parent && n == name));
            self.lost_a_name(&c);
        }
    }

    /// The child node currently known under `(parent, name)`, found through the parent's snapshot
    /// or by statting SOURCE.
    pub(super) fn child_of(&self, parent: &Node, name: &OsStr) -> Option<Arc<Node>> {
        let key = parent
            .state()
            .snapshot
            .as_ref()
            .and_then(|s| s.get(name).map(|e| e.key));
        let key = match key {
            Some(k) => k,
            None => {
                let pfd = self.dir_fd(parent).ok()?;
                let st = sys::fstatat(pfd.as_fd(), &sys::cstr(name).ok()?).ok()?;
                Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                }
            }
        };
        let node = self.table.get(self.table.ino_for(key))?;
        (node.key == key
            && node
                .state()
                .links
                .iter()
                .any(|(p, n)| *p == parent.ino && n == name))
        .then_some(node)
    }

    pub(super) fn fopen_flags(&self, dir: bool) -> FopenFlags {
        match self.policy() {
            CachePolicy::Always if dir => {
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
            }
            CachePolicy::Always => FopenFlags::FOPEN_KEEP_CACHE | NOFLUSH,
            _ if dir => FopenFlags::empty(),
            _ => NOFLUSH,
        }
    }

    /// Write audit record (`-o audit`).
    pub(super) fn audit(&self, req: &Request, op: &str, parent: Ino, name: Option<&OsStr>) {
        if !self.cfg.audit {
            return;
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", req.pid())).unwrap_or_default();
        let path = self.path_of(parent, name);
        info!(target: "vfnotify::audit", op, uid = req.uid(), gid = req.gid(), pid = req.pid(),
            process = comm.trim_end(), path = %path.display(), "audit");
    }

    /// A best-effort relative path for a node (and an optional child name), for logs and audit:
    /// where the chain of names is broken (a folder forgotten meanwhile), the part that is known,
    /// under `?`.
    pub fn path_of(&self, ino: Ino, name: Option<&OsStr>) -> std::path::PathBuf {
        self.try_path_of(ino, name)
            .unwrap_or_else(|partial| std::path::Path::new("?").join(partial))
    }

    /// The relative path of a node (and an optional child name) through the mount, from the
    /// names the kernel was told; `Err(partial)` when a folder on the way is no longer known
    /// (forgotten by the kernel) or has no name, so the path cannot be trusted.
    pub fn try_path_of(
        &self,
        ino: Ino,
        name: Option<&OsStr>,
    ) -> Result<std::path::PathBuf, std::path::PathBuf> {
        self.table.path_of(ino, name)
    }

    pub(super) fn check_writable(&self, req: &Request) -> io::Result<()> {
        if !self.flags.read_only.load(Ordering::Relaxed) || self.replay.is_replay(req) {
            return Ok(());
        }
        // The flag follows the mount table from a thread of its own; a `remount,rw` that has
        // just returned may not have reached it yet: look at the table itself before refusing.
        if let Some(now) = self.per_mount_now() {
            if self.flags.apply(&now) {
                Stats::bump(&self.stats.remounts);
                self.apply_source_atime();
            }
            if !now.read_only {
                return Ok(());
            }
        }
        Err(err(libc::EROFS))
    }

    /// Give the private copy of SOURCE's mount the atime flags MOUNTPOINT has now: `noatime`
    /// and `nodiratime` are added to what SOURCE's mount had, never taken from it. A refusal is
    /// logged (atime then moves on passthrough reads).
    pub fn apply_source_atime(&self) {
        let Some(&(orig, orig_nodir)) = self.source_atime.get() else {
            return;
        };
        let f = &self.flags;
        let atime = if f.noatime.load(Ordering::SeqCst) {
            sys::mount_api::Atime::NoAtime
        } else {
            orig
        };
        let nodir = orig_nodir || f.nodiratime.load(Ordering::SeqCst);
        if let Err(e) = sys::mount_api::set_atime(self.root_fd.as_fd(), atime, nodir) {
            warn!("atime flags of the private SOURCE mount: {e}");
        }
    }

    /// MOUNTPOINT's per-mount flags as /proc/self/mountinfo shows them now (a procfs read, never
    /// a request to this filesystem, so handlers may call it).
    pub fn per_mount_now(&self) -> Option<crate::overlay::options::PerMount> {
        let mp = self.mountpoint.get()?;
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        crate::mountinfo::parse_mountinfo_options(&info, "fuse.vfnotify", mp)
            .map(|o| crate::overlay::options::PerMount::parse(&o))
    }

    /// Extra open flags for reading SOURCE on a client's behalf: `O_NOATIME` while the mount is
    /// `noatime` (or `nodiratime`, for folders), so the atime the guest sees does not move.
    pub(super) fn atime_flags(&self, dir: bool) -> i32 {
        let f = &self.flags;
        if f.noatime.load(Ordering::Relaxed) || (dir && f.nodiratime.load(Ordering::Relaxed)) {
            libc::O_NOATIME
        } else {
            0
        }
    }
}

/// The handle table's shard for handle `fh`.
#[allow(clippy::cast_possible_truncation)] // a hash: any of the handle's bits will do
fn shard_of(fh: u64) -> usize {
    fh as usize % HANDLE_SHARDS
}

/// A device number for FUSE's `u32` `rdev`: the low 32 bits of glibc's `dev_t` are the kernel's
/// `new_encode_dev` form (major below 4096, minor below 2^20), the form the kernel decodes.
#[allow(clippy::cast_possible_truncation)] // kernel ABI: the low bits are the encoding
fn rdev_u32(rdev: libc::dev_t) -> u32 {
    rdev as u32
}
