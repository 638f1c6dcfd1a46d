//! Folders: opening, listings (readdir, readdirplus), fsyncdir.

use super::*;

impl OverlayFs {
    pub(super) fn do_opendir(&self, ino: INodeNo) -> io::Result<Opened> {
        self.s.node(ino)?;
        // With long caching, the kernel need not ask at all: ENOSYS makes it stop sending
        // OPENDIR/RELEASEDIR and open folders itself with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, so
        // a warm listing costs no request. Listings then arrive with fh 0 (`dir_entries`).
        if self.s.cfg.cache == CachePolicy::Always {
            return Err(err(libc::ENOSYS));
        }
        let fh = self.s.add_handle(Handle::Dir(OpenDir {
            entries: Mutex::new(None),
        }));
        Ok(Opened::Cached(FileHandle(fh), self.s.fopen_flags(true)))
    }

    /// READDIR from `offset` (0 and 1 are "." and ".."), as many entries as `reply` takes.
    pub(super) fn fill_readdir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> io::Result<()> {
        let (node, entries) = self.dir_entries(ino, fh, offset)?;
        let dots = self.dot_entries(&node);
        let total = entries.len() + 2;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for i in start..total {
            let next = i as u64 + 1;
            let full = if let Some(&(dino, n)) = dots.get(i) {
                reply.add(INodeNo(dino), next, FileType::Directory, n)
            } else {
                let e = &entries[i - 2];
                let dino = self.s.table.ino_for(Key {
                    dev: node.key.dev,
                    ino: e.ino,
                });
                reply.add(INodeNo(dino), next, dtype_kind(e.kind), &e.name)
            };
            if full {
                break;
            }
        }
        self.listing_done(&node, fh, start >= total);
        Ok(())
    }

    /// READDIRPLUS from `offset`: entries with their attributes (each one entered in the
    /// table: the kernel takes a lookup reference), skipping names gone since the listing.
    pub(super) fn fill_readdirplus(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: &mut ReplyDirectoryPlus,
    ) -> io::Result<()> {
        let s = &self.s;
        let (node, entries) = self.dir_entries(ino, fh, offset)?;
        let pfd = s.dir_fd(&node)?;
        let ttl = s.ttl();
        let dots = self.dot_entries(&node);
        let total = entries.len() + 2;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for i in start..total {
            let next = i as u64 + 1;
            if let Some(&(dino, n)) = dots.get(i) {
                let st = match s.table.get(dino).map(|d| s.stat_node(&d)) {
                    Some(Ok(st)) => st,
                    _ => sys::fstat(pfd.as_fd())?,
                };
                // The kernel takes no lookup reference for "." and "..".
                if reply.add(
                    INodeNo(dino),
                    next,
                    n,
                    &Duration::ZERO,
                    &s.attr(dino, &st),
                    GEN,
                ) {
                    break;
                }
                continue;
            }
            let e = &entries[i - 2];
            let seen = s.attr_seen(&node, &e.name);
            let Ok(st) = sys::cstr(&e.name).and_then(|n| sys::fstatat(pfd.as_fd(), &n)) else {
                // Gone since the listing was read: skip it.
                continue;
            };
            let key = Key {
                dev: st.st_dev,
                ino: st.st_ino,
            };
            let dino = s.table.ino_for(key);
            let ttl = if s.replay.is_pending(node.ino, &e.name) {
                Duration::ZERO
            } else {
                ttl
            };
            if reply.add(INodeNo(dino), next, &e.name, &ttl, &s.attr(dino, &st), GEN) {
                break;
            }
            s.enter_read(node.ino, &e.name, &st, seen);
        }
        self.listing_done(&node, fh, start >= total);
        Ok(())
    }

    pub(super) fn do_fsyncdir(&self, ino: INodeNo, datasync: bool) -> io::Result<()> {
        let pfd = self.s.dir_fd(&*self.s.node(ino)?)?;
        let fd = sys::openat(pfd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        sys::fsync(fd.as_fd(), datasync)
    }

    pub(super) fn dir_entries(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
    ) -> io::Result<(Arc<Node>, Arc<Vec<sys::RawDirent>>)> {
        let s = &self.s;
        let node = s.node(ino)?;
        let read = || -> io::Result<Arc<Vec<sys::RawDirent>>> {
            let pathfd = s.dir_fd(&node)?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | s.atime_flags(true);
            let fd = openat_atime(pathfd.as_fd(), c".", flags, 0)?;
            let entries = Arc::new(sys::read_dir(fd.as_fd())?);
            // Reading the listing may have moved the folder's atime on SOURCE, as a local listing
            // would; the attributes answered for it under cache=always follow (only the atime: a
            // host change waits for its notification).
            if let Ok(st) = sys::fstat(fd.as_fd()) {
                if let Some(a) = node.state().attr.as_mut() {
                    a.atime = (st.st_atime, st.st_atime_nsec);
                }
            }
            Ok(entries)
        };
        if fh.0 == 0 {
            // No OPENDIR (see `do_opendir`): the listing lives in the node until it is read out.
            let cached = node.state().listing.clone();
            let entries = match cached {
                Some(l) if offset != 0 => l,
                _ => {
                    let l = read()?;
                    node.state().listing = Some(l.clone());
                    l
                }
            };
            return Ok((node, entries));
        }
        let h = s.handle(fh)?;
        let Handle::Dir(d) = &*h else {
            return Err(err(libc::ENOTDIR));
        };
        let mut slot = lock(&d.entries);
        if slot.is_none() || offset == 0 {
            *slot = Some(read()?);
        }
        Ok((node, slot.clone().unwrap_or_default()))
    }

    /// A listing read without a handle was read to its end: let it go.
    pub(super) fn listing_done(&self, node: &Node, fh: FileHandle, end: bool) {
        if fh.0 == 0 && end {
            node.state().listing = None;
        }
    }

    pub(super) fn dot_entries(&self, node: &Node) -> [(Ino, &'static str); 2] {
        let parent = node
            .state()
            .links
            .first()
            .map(|(p, _)| *p)
            .unwrap_or(ROOT_INO);
        [(node.ino, "."), (parent, "..")]
    }
}
