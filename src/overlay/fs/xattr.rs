//! Extended attributes: which fd and name an xattr call acts on, and the calls.

use super::*;

impl OverlayFs {
    pub(super) fn xattr_target(&self, node: &Node) -> io::Result<(Arc<OwnedFd>, OsString)> {
        if node.is_dir {
            Ok((self.s.dir_fd(node)?, OsString::new()))
        } else if let Some(fd) = self.s.held_fd(node) {
            // The object itself, through its /proc link (see `Shared::held_fd`).
            Ok((fd, OsString::new()))
        } else {
            let (pfd, name, _) = self.s.resolve(node)?;
            Ok((pfd, name))
        }
    }

    pub(super) fn do_setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        let s = &self.s;
        s.check_writable(req)?;
        let node = s.node(ino)?;
        s.audit(req, "setxattr", ino.0, None);
        let _local = s.xattr_change(&node);
        let (fd, n) = self.xattr_target(&node)?;
        sys::setxattr(fd.as_fd(), &sys::cstr(&n)?, &sys::cstr(name)?, value, flags)?;
        if let Ok(st) = s.stat_node(&node) {
            s.note_local_node(&node, &st);
        }
        Ok(())
    }

    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr, size: u32) -> io::Result<Xattr> {
        let node = self.s.node(ino)?;
        let (fd, n) = self.xattr_target(&node)?;
        let size_max = usize::try_from(size).unwrap_or(usize::MAX);
        let got = sys::getxattr(fd.as_fd(), &sys::cstr(&n)?, &sys::cstr(name)?, size_max)?;
        Ok(Xattr::of(size, got))
    }

    pub(super) fn do_listxattr(&self, ino: INodeNo, size: u32) -> io::Result<Xattr> {
        let node = self.s.node(ino)?;
        let (fd, n) = self.xattr_target(&node)?;
        let size_max = usize::try_from(size).unwrap_or(usize::MAX);
        Ok(Xattr::of(
            size,
            sys::listxattr(fd.as_fd(), &sys::cstr(&n)?, size_max)?,
        ))
    }

    pub(super) fn do_removexattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
    ) -> io::Result<()> {
        let s = &self.s;
        s.check_writable(req)?;
        let node = s.node(ino)?;
        let _local = s.xattr_change(&node);
        let (fd, n) = self.xattr_target(&node)?;
        sys::removexattr(fd.as_fd(), &sys::cstr(&n)?, &sys::cstr(name)?)?;
        if let Ok(st) = s.stat_node(&node) {
            s.note_local_node(&node, &st);
        }
        Ok(())
    }
}
