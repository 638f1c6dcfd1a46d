//! Operations on names: lookup, create (mknod, mkdir, symlink, create), remove, rename, link,
//! readlink.

use super::*;

impl OverlayFs {
    pub(super) fn do_lookup(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
    ) -> io::Result<Option<FileAttr>> {
        let s = &self.s;
        Stats::bump(&s.stats.lookups);
        // Only decoding a file handle makes the kernel look these up (fuse_get_dentry,
        // fuse_get_parent); path walks resolve them themselves.
        if name == "." {
            return s.lookup_self(parent.0).map(Some);
        }
        if name == ".." {
            return s.lookup_parent(parent.0).map(Some);
        }
        let pnode = s.node(parent)?;
        if s.replay.is_replay(req) {
            match s.replay.get(parent.0, name) {
                Some(ViewEntry::Absent) => return Err(err(libc::ENOENT)),
                Some(ViewEntry::Present(snap)) => {
                    let (node, _) = s.table.lookup(snap.key, snap.is_dir(), parent.0, name);
                    return Ok(Some(s.attr(node.ino, &snap_stat(&snap))));
                }
                Some(ViewEntry::Virtual) => return Err(err(libc::ENOENT)),
                None => {}
            }
        }
        if let Some(attr) = self.lookup_in_view(&pnode, parent.0, name) {
            return Ok(Some(attr));
        }
        let pfd = s.dir_fd(&pnode)?;
        let seen = s.attr_seen(&pnode, name);
        match self.stat_child(pfd.as_fd(), &sys::cstr(name)?) {
            Ok((st, path)) => {
                let (node, attr) = s.enter_read(parent.0, name, &st, seen);
                match path.filter(|_| node.key == Key::of(&st)) {
                    // The folder's fd for its first view and the lookups in it: no second walk.
                    Some(path) if node.is_dir => s.table.cache_dirfd(&node, &Arc::new(path)),
                    Some(path) => s
                        .fd_cache
                        .put(node.ino, node.key, libc::O_PATH, &Arc::new(path)),
                    None => {}
                }
                Ok(Some(attr))
            }
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT)
                    && s.policy() == CachePolicy::Always
                    && !s.replay.is_pending(parent.0, name) =>
            {
                let mut ps = pnode.state();
                if ps.negatives.len() < NEGATIVE_BUDGET {
                    ps.negatives.insert(name.to_owned());
                    Stats::bump(&s.stats.negative_cached);
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A LOOKUP answered from the folder's view, with no request to SOURCE: the kernel's first
    /// lookup of a file (it holds nothing of the object) in a folder that has a view, while
    /// notifications are trusted or the view is fresh. The view is what SOURCE had when it was
    /// last read, first view or notification; trusted, a host change since is the next
    /// notification's to find (by this same view) and to expire, node included, as a GETATTR
    /// is answered from the told attributes meanwhile (`told_file_attr`). That holds only if no
    /// notification ran while this read the view and made the node (it could have compared
    /// against the view and looked for nodes before this one existed): [`Shared::views_epoch`]
    /// is read before and after, and when one ran the lookup is undone for the caller to read
    /// SOURCE. Without trust the same holds for a view read whole from SOURCE within the last
    /// [`fresh_views::FRESH_VIEW`] (see there why; the open that follows checks the file
    /// against SOURCE as every open does without trust).
    fn lookup_in_view(&self, pnode: &Node, parent: Ino, name: &OsStr) -> Option<FileAttr> {
        let s = &self.s;
        if s.policy() != CachePolicy::Always
            || !(s.trusts_notifications()
                || s.fresh_views.is_fresh(parent, pnode.state().attr.as_ref()))
            || s.replay.is_pending(parent, name)
        {
            return None;
        }
        let epoch = s.views_epoch.load(Ordering::SeqCst);
        if epoch % 2 == 1 {
            return None;
        }
        let e = *pnode.state().snapshot.as_deref()?.get(name)?;
        if e.is_dir() {
            return None;
        }
        let ino = s.table.ino_if_known(e.key)?;
        if s.table.get(ino).is_some() {
            return None;
        }
        let (node, created) = s.table.lookup(e.key, false, parent, name);
        if created {
            node.state().set_attr(Some(e));
        }
        if !created || s.views_epoch.load(Ordering::SeqCst) != epoch {
            // Another lookup made the node first (a hard link), or a notification ran.
            s.table.forget(node.ino, 1);
            return None;
        }
        Stats::bump(&s.stats.lookups_from_view);
        Some(s.attr(node.ino, &snap_stat(&e)))
    }

    /// A name's attributes for LOOKUP. Over a FUSE SOURCE the name is taken as an `O_PATH` fd
    /// and that fd's attributes read: the same requests at SOURCE as a stat by name (the walk's
    /// LOOKUP, the folder's GETATTR, the file's GETATTR), and the fd, kept, spares a file's
    /// next open a second walk of the name ([`OverlayFs::keeps_lookup_paths`]), and a folder's
    /// first view and the lookups in it (its cached fd).
    fn stat_child(
        &self,
        pfd: BorrowedFd<'_>,
        name: &CStr,
    ) -> io::Result<(libc::stat, Option<OwnedFd>)> {
        if !self.keeps_lookup_paths() {
            return sys::fstatat(pfd, name).map(|st| (st, None));
        }
        let path = sys::openat(pfd, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = sys::fstat(path.as_fd())?;
        let kept = matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR);
        Ok((st, kept.then_some(path)))
    }

    /// mknod / mkdir / symlink: create on SOURCE (or, for the replay thread, only report the
    /// object that already exists there) and enter it. `make` gets the mode to create with,
    /// under the client's `umask` (see [`Shared::as_client`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_create_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        op: &str,
        make: impl FnOnce(BorrowedFd<'_>, &CStr, u32) -> io::Result<()>,
        mode: u32,
        umask: u32,
    ) -> io::Result<FileAttr> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        if s.replay.is_replay(req) {
            if let Some(ViewEntry::Virtual) = s.replay.get(parent.0, name) {
                let node = s.table.insert_virtual(parent.0, name);
                let mut st = snap_stat(&EntrySnap::from_stat(&sys::fstat(s.root_fd.as_fd())?));
                st.st_mode = libc::S_IFREG | 0o644;
                st.st_size = 0;
                st.st_nlink = 1;
                return Ok(s.attr(node.ino, &st));
            }
            return s
                .enter_replayed(&pnode, parent.0, name)
                .map(|(_, attr)| attr);
        }
        s.check_writable(req)?;
        s.audit(req, op, parent.0, Some(name));
        let _local = s.entries_change(&[(parent.0, name)]);
        let pfd = s.dir_fd(&pnode)?;
        let cname = sys::cstr(name)?;
        s.as_client(umask, mode, |m| make(pfd.as_fd(), &cname, m))?;
        let pst = sys::fstat(pfd.as_fd())?;
        let (st, btime) = s.own(req, Made::At(pfd.as_fd(), &cname), &pst, mode)?;
        s.note_made(parent.0, name, (&st, btime), &pst);
        let (node, attr) = s.enter(parent.0, name, &st);
        if node.is_dir {
            // A folder made here is empty: that is its first view, at once. Left to the
            // baseline job, what the guest made in it first would be left out of the view (as
            // changed after the kernel learned the folder), and a host removal of it then never
            // reported.
            let mut ns = node.state();
            if ns.snapshot.is_none() {
                ns.snapshot = Some(Box::default());
            }
        }
        Ok(attr)
    }

    pub(super) fn do_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
    ) -> io::Result<FileAttr> {
        let t = sys::cstr(target.as_os_str())?;
        self.do_create_node(
            req,
            parent,
            name,
            "symlink",
            |pfd, n, _| sys::symlinkat(&t, pfd, n),
            0,
            0,
        )
    }

    pub(super) fn do_readlink(&self, ino: INodeNo) -> io::Result<Vec<u8>> {
        let (pfd, name, _) = self.s.resolve(&*self.s.node(ino)?)?;
        sys::readlinkat(pfd.as_fd(), &sys::cstr(&name)?)
    }

    /// CREATE (a client's; the replay thread's is [`OverlayFs::replay_create`]): create the
    /// file exclusively and open it. `register`: the reply's backing registration (see
    /// [`Shared::attach_backing`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> io::Result<(FileAttr, Opened)> {
        let s = &self.s;
        let (node, attr, fd) = {
            s.check_writable(req)?;
            s.audit(req, "create", parent.0, Some(name));
            let _local = s.entries_change(&[(parent.0, name)]);
            let pnode = s.node(parent)?;
            let pfd = s.dir_fd(&pnode)?;
            let cname = sys::cstr(name)?;
            let strip = libc::O_NOCTTY | libc::O_APPEND | libc::O_DIRECT | libc::O_TRUNC;
            let base = (flags & !strip) | libc::O_NOFOLLOW | s.atime_flags(false);
            // Create exclusively: only a file made here gets the requester's ownership. The name
            // may exist on SOURCE although the kernel was told it does not (a host change not
            // notified yet): then open it as an open(2) without O_EXCL would, truncating if asked.
            let made = s.as_client(umask, mode, |m| {
                openat_atime(pfd.as_fd(), &cname, base | libc::O_CREAT | libc::O_EXCL, m)
            });
            let (fd, created) = match made {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => (
                    self.open_existing(req, pfd.as_fd(), &cname, base, flags)?,
                    false,
                ),
                Err(e) => return Err(e),
            };
            let st = if created {
                let pst = sys::fstat(pfd.as_fd())?;
                let (st, btime) = s.own(req, Made::Open(fd.as_fd()), &pst, mode)?;
                s.note_made(parent.0, name, (&st, btime), &pst);
                st
            } else {
                let st = sys::fstat(fd.as_fd())?;
                s.note_local(parent.0, name, Some(&st));
                st
            };
            let (node, attr) = s.enter(parent.0, name, &st);
            (node, attr, fd)
        };
        Stats::bump(&s.stats.opens);
        if s.open_free.load(Ordering::Relaxed) {
            // No release will come (see `open_free`): the fd is the inode's, in the cache.
            let kept = (flags & libc::O_ACCMODE) | s.atime_flags(false);
            s.fd_cache.put(node.ino, node.key, kept, &Arc::new(fd));
            return Ok((attr, Opened::Cached(FileHandle(0), s.fopen_flags(false))));
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if let Some(b) = s.attach_backing(&node, Some(&fd), register) {
            let fh = s.add_handle(Handle::File(OpenFile {
                node,
                fd: Some(fd.into()),
                backing: true,
                writable,
            }));
            return Ok((attr, Opened::Passthrough(FileHandle(fh), b)));
        }
        let fh = s.add_handle(Handle::File(OpenFile {
            node,
            fd: Some(fd.into()),
            backing: false,
            writable,
        }));
        Ok((attr, Opened::Cached(FileHandle(fh), s.fopen_flags(false))))
    }

    pub(super) fn do_remove(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        dir: bool,
    ) -> io::Result<()> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        let child = s.child_of(&pnode, name);
        let _local = (!s.replay.is_replay(req)).then(|| s.entries_change(&[(parent.0, name)]));
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(
                req,
                if dir { "rmdir" } else { "unlink" },
                parent.0,
                Some(name),
            );
            let pfd = s.dir_fd(&pnode)?;
            let held = child
                .as_ref()
                .filter(|_| dir)
                .and_then(|c| s.dir_fd(c).ok());
            sys::unlinkat(
                pfd.as_fd(),
                &sys::cstr(name)?,
                if dir { libc::AT_REMOVEDIR } else { 0 },
            )?;
            s.note_local(parent.0, name, None);
            if let (Some(c), Some(fd)) = (&child, held) {
                s.note_removed_dir(c, &fd);
            }
        }
        if let Some(c) = &child {
            if dir {
                if s.replay.is_replay(req) {
                    // Removed by the host: the same for a client holding it open.
                    let held = c.state().dirfd.clone();
                    if let Some(fd) = held {
                        s.note_removed_dir(c, &fd);
                    }
                }
                s.table.drop_dirfd(c);
                // A removed folder's attributes are served from the view under cache=always: it
                // has no links from now on (a GETATTR after this, from a client holding it
                // open, must not revive it: its cached entry's end is its watchers'
                // IN_DELETE_SELF).
                let mut st = c.state();
                if let Some(a) = st.attr.as_mut() {
                    a.nlink = 0;
                }
            }
        }
        s.unlink_child(child, parent.0, name);
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> io::Result<()> {
        let s = &self.s;
        let pnode = s.node(parent)?;
        let npnode = s.node(newparent)?;
        // A replay's temporary name: its node is known under the real name too.
        let standin = s
            .replay
            .is_replay(req)
            .then(|| s.replay.standin(parent.0, name))
            .flatten();
        let moved = match &standin {
            // SOURCE has the object under the real name (the parent's view still has the old one
            // there); the node is the one known by the temporary name.
            Some(real) => sys::cstr(real)
                .and_then(|c| sys::fstatat(s.dir_fd(&pnode)?.as_fd(), &c))
                .ok()
                .and_then(|st| {
                    let key = Key {
                        dev: st.st_dev,
                        ino: st.st_ino,
                    };
                    s.table.get(s.table.ino_for(key)).filter(|n| n.key == key)
                }),
            None => s.child_of(&pnode, name),
        };
        let replaced = s.child_of(&npnode, newname);
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let mut change = (!s.replay.is_replay(req))
            .then(|| s.entries_change(&[(parent.0, name), (newparent.0, newname)]));
        if let Some(c) = change.as_mut() {
            // Their ctime moves, and the kernel's attribute version of them does not.
            for n in moved.iter().chain(replaced.iter()) {
                c.also(n.ino);
            }
        }
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(req, "rename", parent.0, Some(name));
            let pfd = s.dir_fd(&pnode)?;
            let npfd = s.dir_fd(&npnode)?;
            // A folder replaced by the rename is removed by it: its attributes change (link count
            // 0, ctime) for whoever still holds it open.
            let held = replaced
                .as_ref()
                .filter(|r| r.is_dir && !exchange)
                .and_then(|r| s.dir_fd(r).ok());
            // What the guest was told `name` is (a host change not notified yet may have put
            // another object there).
            let believed = pnode
                .state()
                .snapshot
                .as_ref()
                .and_then(|v| v.get(name).copied());
            sys::renameat2(
                pfd.as_fd(),
                &sys::cstr(name)?,
                npfd.as_fd(),
                &sys::cstr(newname)?,
                flags.bits(),
            )?;
            let st_new = sys::fstatat(npfd.as_fd(), &sys::cstr(newname)?).ok();
            let other = believed.filter(|b| {
                st_new
                    .as_ref()
                    .is_some_and(|st| (b.key.dev, b.key.ino) != (st.st_dev, st.st_ino))
            });
            if let Some(b) = other {
                // The guest moved another object than it believed (and its watchers saw move):
                // the view keeps what they saw there, so the next rescan tells them of the host's
                // object in its place.
                s.note_local_entry(newparent.0, newname, b);
            } else {
                s.note_local(newparent.0, newname, st_new.as_ref());
                // A rename changes the ctime of what moved (a directory's attributes are served
                // from the overlay's view under cache=always, so refresh it).
                if let (Some(m), Some(st)) = (&moved, &st_new) {
                    s.note_local_node(m, st);
                }
            }
            if exchange {
                let st_old = sys::fstatat(pfd.as_fd(), &sys::cstr(name)?).ok();
                s.note_local(parent.0, name, st_old.as_ref());
                if let (Some(r), Some(st)) = (&replaced, &st_old) {
                    s.note_local_node(r, st);
                }
            } else {
                s.note_local(parent.0, name, None);
            }
            if let (Some(r), Some(fd)) = (&replaced, held) {
                s.note_removed_dir(r, &fd);
                s.table.drop_dirfd(r);
            }
        }
        if let Some(m) = &moved {
            let mut st = m.state();
            st.links.retain(|(p, n)| !(*p == parent.0 && n == name));
            if !st
                .links
                .iter()
                .any(|(p, n)| *p == newparent.0 && n == newname)
            {
                st.links.push((newparent.0, newname.to_owned()));
            }
        }
        if let Some(r) = &replaced {
            let mut st = r.state();
            st.links
                .retain(|(p, n)| !(*p == newparent.0 && n == newname));
            if exchange {
                st.links.push((parent.0, name.to_owned()));
            }
            drop(st);
            s.lost_a_name(r);
        }
        Ok(())
    }

    pub(super) fn do_link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> io::Result<FileAttr> {
        let s = &self.s;
        let node = s.node(ino)?;
        let npnode = s.node(newparent)?;
        let npfd = s.dir_fd(&npnode)?;
        let _local =
            (!s.replay.is_replay(req)).then(|| s.entries_change(&[(newparent.0, newname)]));
        if !s.replay.is_replay(req) {
            s.check_writable(req)?;
            s.audit(req, "link", newparent.0, Some(newname));
            let (pfd, name, _) = s.resolve(&node)?;
            sys::linkat(
                pfd.as_fd(),
                &sys::cstr(&name)?,
                npfd.as_fd(),
                &sys::cstr(newname)?,
            )?;
        }
        let st = sys::fstatat(npfd.as_fd(), &sys::cstr(newname)?)?;
        if !s.replay.is_replay(req) {
            s.note_local(newparent.0, newname, Some(&st));
            s.note_local_node(&node, &st);
        }
        Ok(s.enter(newparent.0, newname, &st).1)
    }
}
