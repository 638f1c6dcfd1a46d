//! Extended attributes: which fd and name an xattr call acts on.

use super::*;

impl OverlayFs {
    pub(super) fn xattr_target(&self, node: &Node) -> io::Result<(Arc<OwnedFd>, OsString)> {
        if node.is_dir {
            Ok((self.s.dir_fd(node)?, OsString::new()))
        } else {
            let (pfd, name, _) = self.s.resolve(node)?;
            Ok((pfd, name))
        }
    }
}
