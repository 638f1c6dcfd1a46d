//! Acting as the client (its ids), backing files for passthrough, and ownership of what a
//! client creates.

use super::*;

impl Shared {
    /// Run the system call that creates an object for a client, under the client's `umask`.
    /// With `FUSE_DONT_MASK` the kernel leaves the umask to the server, because a default ACL on
    /// the parent folder replaces it; so the worker thread takes a umask of its own (see
    /// [`sys::fs_struct`]), sets the client's for this one call, and the kernel under SOURCE
    /// applies it or the default ACL exactly as it would have for the client. Where a thread
    /// cannot have its own umask, the mode is masked here (default ACLs then lose to the umask,
    /// as before; counted).
    pub(super) fn as_client<T>(
        &self,
        umask: u32,
        mode: u32,
        f: impl FnOnce(u32) -> io::Result<T>,
    ) -> io::Result<T> {
        if !self.dont_mask.load(Ordering::Relaxed) {
            return f(mode);
        }
        match sys::fs_struct::own_fs_struct() {
            Ok(true) => sys::fs_struct::with_umask(umask, || f(mode)),
            _ => {
                Stats::bump(&self.stats.umask_fallbacks);
                f(mode & !(umask & 0o777))
            }
        }
    }

    /// Kernel passthrough for an open of `node`: the backing id every open handle of the inode
    /// shares (registered from `fd` by the first open), counted per handle. `None`: serve the
    /// data here (passthrough off or refused; a refusal is counted).
    pub(super) fn attach_backing(
        &self,
        node: &Node,
        fd: Option<&OwnedFd>,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> Option<Arc<fuser::BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let existing = node.state().backing.as_ref().map(|u| u.0.clone());
        let b = match existing {
            Some(b) => b,
            None if self.passthrough_refused.load(Ordering::Relaxed) => {
                Stats::bump(&self.stats.passthrough_skipped);
                return None;
            }
            None => match register(fd?) {
                Ok(b) => Arc::new(b),
                Err(e) => {
                    self.passthrough_refused_by_kernel(node, &e);
                    return None;
                }
            },
        };
        let mut st = node.state();
        let b = match st.backing.as_mut() {
            // A concurrent open registered first: every handle must use the same id.
            Some(u) => {
                u.1 += 1;
                u.0.clone()
            }
            None => {
                st.backing = Some(Box::new((b.clone(), 1)));
                b
            }
        };
        drop(st);
        Stats::bump(&self.stats.passthrough_opens);
        Some(b)
    }

    /// The kernel refused to register a backing file: the refusals that come from the mount
    /// (ELOOP: SOURCE stacks on passthrough itself; EPERM, EOPNOTSUPP...) would repeat for every
    /// open, so stop asking (logged once; later opens counted in `passthrough_skipped`). Handles
    /// of inodes already registered keep their backing (the kernel wants one I/O mode per inode).
    fn passthrough_refused_by_kernel(&self, node: &Node, e: &io::Error) {
        Stats::bump(&self.stats.passthrough_failed);
        let transient = matches!(
            e.raw_os_error(),
            Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EINTR)
        );
        if transient {
            debug!("passthrough unavailable for {}: {e}", node.ino);
        } else if !self.passthrough_refused.swap(true, Ordering::Relaxed) {
            warn!(
                ino = node.ino,
                "kernel passthrough refused ({e}); file data goes through the overlay from now on"
            );
        }
    }

    /// Give a newly created object the requester's ownership (as the kernel would for a local
    /// filesystem): uid of the caller; gid of the caller unless the parent is set-group-ID.
    /// Returns its attributes and birth time (where SOURCE reports one), read through the open
    /// file when there is one: the create's reply gave SOURCE's kernel those attributes, so no
    /// request goes to SOURCE for them (see [`sys::fstat_held`]).
    pub(super) fn own(
        &self,
        req: &Request,
        made: Made<'_>,
        parent_st: &libc::stat,
        mode: u32,
    ) -> io::Result<(libc::stat, Option<(i64, i64)>)> {
        let gid = if parent_st.st_mode & libc::S_ISGID != 0 {
            u32::MAX
        } else {
            req.gid()
        };
        let stat = || match made {
            Made::Open(fd) => sys::fstat_held(fd),
            Made::At(pfd, name) => sys::fstatat_fresh_btime(pfd, name),
        };
        let (st, btime) = stat()?;
        if (req.uid() != st.st_uid) || (gid != u32::MAX && gid != st.st_gid) {
            let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
            match made {
                Made::Open(fd) => sys::fchownat(fd, c"", req.uid(), gid)?,
                Made::At(pfd, name) => sys::fchownat(pfd, name, req.uid(), gid)?,
            }
            // chown clears set-user/group-ID bits: restore what was asked for.
            if mode & 0o6000 != 0 && !is_link {
                match made {
                    Made::Open(fd) => sys::fchmod_any(fd, st.st_mode & 0o7777)?,
                    Made::At(pfd, name) => sys::fchmodat_nofollow(pfd, name, st.st_mode & 0o7777)?,
                }
            }
            // The same object: its birth time stays.
            return Ok((stat()?.0, btime));
        }
        Ok((st, btime))
    }
}

/// What [`Shared::own`] acts on: the open file a create made, or a name (mkdir, mknod, symlink).
#[derive(Clone, Copy)]
pub(super) enum Made<'a> {
    Open(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}
