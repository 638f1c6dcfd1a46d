//! Directory listings.

use super::*;

impl OverlayFs {
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
            // No OPENDIR (see `opendir`): the listing lives in the node until it is read out.
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
