//! Forgetting nodes, and those the kernel forgot but may still ask for by handle (export):
//! keeping, reaching and reviving them.

use super::*;

impl Shared {
    /// FORGET: drop `nlookup` references to `ino`; on the last one, keep what finds the object
    /// again by a handle (see [`Export`]).
    pub(super) fn forget(&self, ino: Ino, nlookup: u64) {
        let last = self.table.get(ino).filter(|n| n.state().nlookup <= nlookup);
        let kept = last.as_deref().and_then(|n| self.keep_for_export(n));
        self.table.forget(ino, nlookup);
        if let Some(n) = last {
            if self.table.get(ino).is_none_or(|m| !Arc::ptr_eq(&m, &n)) {
                self.fd_cache.forget(ino);
                self.forget_orphan(ino);
                self.forgotten(ino, kept);
            }
        }
    }

    /// The kernel is about to forget `node`: what will find it again (see [`Export`]).
    pub(super) fn keep_for_export(&self, node: &Node) -> Option<Kept> {
        if node.is_virtual
            || node.ino == ROOT_INO
            || node.ino != node.key.ino
            || self.export.unsupported.load(Ordering::Relaxed)
        {
            return None;
        }
        let res = if node.is_dir {
            self.dir_fd(node).and_then(|fd| {
                Ok(Kept::Dir {
                    key: node.key,
                    handle: sys::handle::name_to_handle_at(fd.as_fd(), c"")?,
                })
            })
        } else {
            self.kept_file(node)
        };
        match res {
            Ok(k) => Some(k),
            Err(e) => {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    info!(
                        "SOURCE cannot encode file handles: open_by_handle_at on the overlay works only while the kernel holds the inode"
                    );
                    self.export.unsupported.store(true, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// How a file the kernel is forgetting is reached again: the handle of the folder of its
    /// first name whose folder is still known, and that name (a file found again by its handle
    /// and not named since: as it was found). The name is not checked here: [`Shared::reach`]
    /// checks it when a handle is used, and over a FUSE SOURCE a check is three round trips to
    /// the host for every inode the guest's memory reclaim lets go. The folder's fd is nearly
    /// always held (the kernel forgets a folder after its entries), so nothing here asks SOURCE.
    fn kept_file(&self, node: &Node) -> io::Result<Kept> {
        if node.state().links.is_empty() {
            if let Some(k @ Kept::File { .. }) = self.found_of(node.ino) {
                return Ok(k);
            }
        }
        let res = self.resolve_by(node, |pfd, name| {
            Ok(Kept::File {
                key: node.key,
                folder_key: Key::of(&sys::fstatat_held(pfd.as_fd(), c"")?),
                folder: sys::handle::name_to_handle_at(pfd.as_fd(), c"")?,
                name: name.to_owned(),
            })
        });
        match res {
            Err(e) => self.kept_in_forgotten_folder(node).ok_or(e),
            kept => kept,
        }
    }

    /// A file whose folder's FORGET was handled first (the kernel sends a folder's after its
    /// entries', but each FORGET is handled by whichever thread reads it, in any order): the
    /// folder's node is gone, and what was kept for it reaches the file too, with its name.
    fn kept_in_forgotten_folder(&self, node: &Node) -> Option<Kept> {
        let links = node.state().links.clone();
        let kept = lock(&self.export.kept);
        let found = lock(&self.export.found);
        links.into_iter().find_map(|(parent, name)| {
            let folder = kept.map.get(&parent).map(|(_, k)| k).or(found.get(&parent));
            match folder {
                Some(Kept::Dir { key, handle }) => Some(Kept::File {
                    key: node.key,
                    folder_key: *key,
                    folder: handle.clone(),
                    name,
                }),
                _ => None,
            }
        })
    }

    /// The kernel forgot `ino` (the node is gone from the table): keep `kept` for it.
    pub(super) fn forgotten(&self, ino: Ino, kept: Option<Kept>) {
        lock(&self.export.found).remove(&ino);
        if let Some(k) = kept {
            let dropped = lock(&self.export.kept).insert(ino, k);
            Stats::bump(&self.stats.handles_kept);
            self.stats
                .handles_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Open a folder of SOURCE by `handle` (`O_PATH`), checking it is `key` and inside SOURCE.
    pub(super) fn open_kept_dir(
        &self,
        handle: &sys::handle::FileHandle,
        key: Key,
    ) -> io::Result<OwnedFd> {
        let mount = match self.export.mount_fd.get() {
            Some(fd) => fd,
            None => {
                let fd = sys::openat(
                    self.root_fd.as_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?;
                self.export.mount_fd.get_or_init(|| fd)
            }
        };
        let fd = sys::handle::open_by_handle_at(
            mount.as_fd(),
            handle,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        check_key(&sys::fstatat_held(fd.as_fd(), c"")?, key)?;
        self.inside_source(&fd)?;
        Ok(fd)
    }

    /// Whether the folder `fd` is SOURCE or below it: its `..` chain reaches SOURCE's root
    /// (handles are for the whole filesystem, and the host may have moved a folder out of the
    /// share since). ESTALE otherwise.
    pub(super) fn inside_source(&self, fd: &OwnedFd) -> io::Result<()> {
        let root = sys::fstat(self.root_fd.as_fd())?;
        let mut cur = fd.try_clone()?;
        for _ in 0..4096 {
            let st = sys::fstat(cur.as_fd())?;
            if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino) {
                return Ok(());
            }
            let up = sys::openat(cur.as_fd(), c"..", libc::O_PATH | libc::O_DIRECTORY, 0)?;
            let ust = sys::fstat(up.as_fd())?;
            if (ust.st_dev, ust.st_ino) == (st.st_dev, st.st_ino) {
                break;
            }
            cur = up;
        }
        Err(err(libc::ESTALE))
    }

    /// Reach what `k` names: a folder's own fd (and no name), or a non-directory's folder fd
    /// and its name there, checked to be the same object.
    pub(super) fn reach(&self, k: &Kept) -> io::Result<(OwnedFd, OsString)> {
        match k {
            Kept::Dir { key, handle } => Ok((self.open_kept_dir(handle, *key)?, OsString::new())),
            Kept::File {
                key,
                folder_key,
                folder,
                name,
            } => {
                let fd = self.open_kept_dir(folder, *folder_key)?;
                check_key(&sys::fstatat_held(fd.as_fd(), &sys::cstr(name)?)?, *key)?;
                Ok((fd, name.clone()))
            }
        }
    }

    /// How a node found again by a handle (and not by a name since) is reached.
    pub(super) fn found_of(&self, ino: Ino) -> Option<Kept> {
        lock(&self.export.found).get(&ino).cloned()
    }

    /// LOOKUP(ino, "."): the kernel lost the inode of a handle it decoded. The node if the
    /// overlay still has it (a FORGET in flight), else found again by what was kept; the kernel
    /// takes a reference on success.
    pub(super) fn lookup_self(&self, ino: Ino) -> io::Result<FileAttr> {
        let node = match self.table.get(ino) {
            Some(n) => n,
            None => self.revive(ino)?,
        };
        let st = self.stat_node(&node)?;
        node.state().nlookup += 1;
        Ok(self.attr(node.ino, &st))
    }

    pub(super) fn revive(&self, ino: Ino) -> io::Result<Arc<Node>> {
        let kept = lock(&self.export.kept)
            .map
            .get(&ino)
            .map(|(_, k)| k.clone())
            .ok_or_else(|| err(libc::ESTALE))?;
        let is_dir = matches!(kept, Kept::Dir { .. });
        // Reachable first, then entered with no name (the kernel reconnects folders by
        // LOOKUP(dir, "..") and a listing of the parent, which names them again).
        let (fd, _) = self.reach(&kept)?;
        lock(&self.export.found).insert(ino, kept.clone());
        let (node, created) = self.table.node_for(kept.key(), is_dir);
        if is_dir {
            self.table.cache_dirfd(&node, &Arc::new(fd));
        }
        if created && is_dir && self.cfg.channel.is_some() {
            self.request_baseline(node.ino);
        }
        Stats::bump(&self.stats.handles_found);
        Ok(node)
    }

    /// LOOKUP(dir, ".."): the parent of a folder the kernel holds without its path (found by a
    /// handle); the kernel takes a reference on success.
    pub(super) fn lookup_parent(&self, ino: Ino) -> io::Result<FileAttr> {
        let node = self.table.get(ino).ok_or_else(|| err(libc::ESTALE))?;
        if !node.is_dir {
            return Err(err(libc::ENOTDIR));
        }
        let known = match node.ino {
            ROOT_INO => Some(node.clone()),
            _ => node
                .state()
                .links
                .first()
                .and_then(|(p, _)| self.table.get(*p)),
        };
        let parent = match known {
            Some(p) => p,
            None => {
                let fd = self.dir_fd(&node)?;
                let up = sys::openat(fd.as_fd(), c"..", libc::O_PATH | libc::O_DIRECTORY, 0)?;
                self.inside_source(&up)?;
                let st = sys::fstat(up.as_fd())?;
                let key = Key {
                    dev: st.st_dev,
                    ino: st.st_ino,
                };
                let (p, created) = self.table.node_for(key, true);
                if p.ino != ROOT_INO && p.state().links.is_empty() {
                    let handle = sys::handle::name_to_handle_at(up.as_fd(), c"")?;
                    lock(&self.export.found).insert(p.ino, Kept::Dir { key, handle });
                    self.table.cache_dirfd(&p, &Arc::new(up));
                }
                if created && self.cfg.channel.is_some() {
                    self.request_baseline(p.ino);
                }
                p
            }
        };
        let st = self.stat_node(&parent)?;
        parent.state().nlookup += 1;
        Ok(self.attr(parent.ino, &st))
    }
}
