//! Attributes: getattr (virtual files, long-cached folders, removed folders on a replay's way) and
//! setattr (mode, owner, size and times, as the client).

use super::*;

impl OverlayFs {
    /// GETATTR: a virtual file's, a long-cached folder's or SOURCE's attributes — and, for a
    /// replay walking down a removed tree (to the files inside that watches hold), those of
    /// folders SOURCE no longer has, from the replay view.
    pub(super) fn do_getattr(
        &self,
        req: &Request,
        node: &Arc<Node>,
        fh: Option<FileHandle>,
    ) -> io::Result<(FileAttr, Duration)> {
        let s = &self.s;
        let st = self.getattr_node(node, fh);
        if let Err(e) = &st {
            if e.raw_os_error() == Some(libc::ENOENT) && s.replay.is_replay(req) {
                let links = node.state().links.clone();
                for (p, n) in links {
                    if let Some(ViewEntry::Present(snap)) = s.replay.get(p, &n) {
                        if snap.key == node.key {
                            return Ok((s.attr(node.ino, &snap_stat(&snap)), Duration::ZERO));
                        }
                    }
                }
            }
        }
        st
    }

    fn getattr_node(
        &self,
        node: &Arc<Node>,
        fh: Option<FileHandle>,
    ) -> io::Result<(FileAttr, Duration)> {
        let s = &self.s;
        if node.is_virtual {
            let mut st = snap_stat(&EntrySnap::from_stat(&sys::fstat(s.root_fd.as_fd())?));
            st.st_mode = libc::S_IFREG | 0o644;
            st.st_size = 0;
            return Ok((s.attr(node.ino, &st), s.ttl()));
        }
        // With long caching, a directory's attributes change only on notification (or a
        // change made through the overlay): the kernel drops a listing's cache whenever it
        // sees a new mtime, and it refetches attributes after every read (atime). Trusted,
        // a file's too (see `told_attr`).
        if let Some(a) = self.told_attr(node) {
            return Ok((s.attr(node.ino, &snap_stat(&a)), s.ttl()));
        }
        let seen = node.state().attr_gen;
        let st = match fh.and_then(|fh| s.handle(fh).ok()) {
            Some(h) => match &*h {
                Handle::File(OpenFile { fd: Some(fd), .. }) => sys::fstat(fd.as_fd())?,
                _ => s.stat_node(node)?,
            },
            None => s.stat_node(node)?,
        };
        // Kept only if nothing noted or cleared the attributes while SOURCE was read: a write
        // noted meanwhile is newer than this reading, and a host change cleared meanwhile may
        // have come after it.
        let mut ns = node.state();
        if ns.attr_gen == seen {
            ns.set_attr(Some(EntrySnap::from_stat(&st)));
        }
        drop(ns);
        Ok((s.attr(node.ino, &st), s.attr_ttl(node)))
    }

    #[allow(clippy::too_many_arguments)] // mirrors the FUSE SETATTR fields
    pub(super) fn do_setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> io::Result<FileAttr> {
        let s = &self.s;
        let node = s.node(ino)?;
        if s.replay.is_replay(req) {
            // Replays change nothing: answer with SOURCE's current attributes (and remember
            // them as told, so the next open does not find them changed again).
            let st = match s.stat_node(&node) {
                Ok(st) => {
                    node.state().set_attr(Some(EntrySnap::from_stat(&st)));
                    st
                }
                Err(_) => node
                    .state()
                    .attr
                    .map(|a| snap_stat(&a))
                    .ok_or(err(libc::ESTALE))?,
            };
            return Ok(s.attr(node.ino, &st));
        }
        s.check_writable(req)?;
        s.audit(req, "setattr", ino.0, None);
        let _local = s.local_node(&node);
        // Where to act: an open file, the directory itself, or the name in its parent — and for
        // an open file whose last name is gone, any open handle of it.
        let handle_fd: Option<Arc<OwnedFd>> =
            fh.and_then(|fh| s.handle(fh).ok()).and_then(|h| match &*h {
                Handle::File(OpenFile { fd: Some(fd), .. }) => Some(fd.clone()),
                _ => None,
            });
        // A truncate by name keeps to the name (`truncate_nofollow` below): a held fd may be
        // read-only or `O_PATH`.
        let held = || size.is_none().then(|| s.held_fd(&node)).flatten();
        let (self_fd, at): (Option<Arc<OwnedFd>>, Option<Resolved>) = if let Some(fd) = handle_fd {
            (Some(fd), None)
        } else if node.is_dir {
            (Some(s.dir_fd(&node)?), None)
        } else if let Some(fd) = held() {
            (Some(fd), None)
        } else {
            match s.resolve(&node) {
                Ok(r) => (None, Some(r)),
                Err(e) => (Some(s.open_fd_of(&node).ok_or(e)?), None),
            }
        };
        let cname = sys::cstr(
            at.as_ref()
                .map(|(_, n, _)| n.as_os_str())
                .unwrap_or_default(),
        )?;
        let (target, name): (BorrowedFd<'_>, &CStr) = match (&self_fd, &at) {
            (Some(fd), _) => (fd.as_fd(), c""),
            (None, Some((pfd, _, _))) => (pfd.as_fd(), &cname),
            (None, None) => return Err(err(libc::ESTALE)),
        };
        let on_self = self_fd.is_some();
        let is_link = at
            .as_ref()
            .is_some_and(|(_, _, st)| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
        if uid.is_some() || gid.is_some() {
            sys::fchownat(
                target,
                name,
                uid.unwrap_or(u32::MAX),
                gid.unwrap_or(u32::MAX),
            )?;
        }
        let chmod = |mode: u32| -> io::Result<()> {
            if is_link {
                return Err(err(libc::EOPNOTSUPP));
            }
            if on_self {
                sys::fchmod_any(target, mode & 0o7777)
            } else {
                sys::fchmodat_nofollow(target, name, mode & 0o7777)
            }
        };
        if let Some(mode) = mode {
            chmod(mode)?;
        }
        if let Some(size) = size {
            if node.is_dir {
                return Err(err(libc::EISDIR));
            }
            if on_self {
                sys::ftruncate(target, size)?;
            } else {
                // truncate(2), not a write open of its own: its close would show on SOURCE as a
                // write session of its own (an IN_CLOSE_WRITE of the emptied file, before the
                // client's write of an O_TRUNC open), which a host watcher would pass on.
                let mut p = format!(
                    "/proc/self/fd/{}/",
                    std::os::fd::AsRawFd::as_raw_fd(&target)
                )
                .into_bytes();
                p.extend_from_slice(name.to_bytes());
                sys::truncate_nofollow(&std::ffi::CString::new(p)?, size)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            // With an empty name this acts on the fd itself (AT_EMPTY_PATH), O_PATH included.
            sys::utimensat(target, name, set_time(atime), set_time(mtime))?;
        }
        // After a change through the object's own fd, SOURCE's reply to it gave the kernel
        // underneath the object's attributes: read those (no request; see `sys::fstat_held`).
        let changed = mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || size.is_some()
            || atime.is_some()
            || mtime.is_some();
        let stat = |changed: bool| {
            if on_self && changed {
                sys::fstat_held(target).map(|(st, _)| st)
            } else if on_self {
                sys::fstat(target)
            } else {
                sys::fstatat(target, &cname)
            }
        };
        let mut st = stat(changed)?;
        // FUSE_HANDLE_KILLPRIV_V2 makes set-user/group-ID clearing ours (see
        // `Shared::negotiate`). The kernel asks for it with a SETATTR that carries nothing
        // (file_remove_privs before a write by a caller without CAP_FSETID, and chown(-1, -1)),
        // or with FATTR_KILL_SUIDGID on a truncate, a bit fuser does not pass on: a truncate by
        // anyone but root stands for it.
        let asks_kill = mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && atime.is_none()
            && mtime.is_none()
            && (size.is_none() || req.uid() != 0);
        if asks_kill && !is_link {
            if let Some(m) = without_suid_sgid(st.st_mode, || in_group(req, st.st_gid)) {
                chmod(m)?;
                st = stat(true)?;
            }
        }
        s.note_local_node(&node, &st);
        Ok(s.attr(node.ino, &st))
    }
}
