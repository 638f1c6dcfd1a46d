//! The session: what INIT negotiates with the kernel, and the answers about the whole
//! filesystem (statfs).

use super::*;

impl Shared {
    /// INIT: ask for the capabilities the overlay uses (those the kernel offers) and record what
    /// was agreed (passthrough, `FUSE_DONT_MASK`, the kernel's FUSE minor version).
    pub(super) fn negotiate(&self, config: &mut KernelConfig) {
        let caps = config.capabilities();
        self.kernel_minor
            .store(config.kernel_abi().1, Ordering::SeqCst);
        let mut want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_EXPORT_SUPPORT
            // Creates carry the client's umask unapplied: a default ACL on the parent overrides
            // it (`Shared::as_client`).
            | InitFlags::FUSE_DONT_MASK
            // The kernel checks ACLs too (as for a local filesystem), and after setting one drops
            // the attributes it holds: the mode may have changed with it.
            | InitFlags::FUSE_POSIX_ACL
            // The kernel then marks inodes S_NOSEC and stops asking for security.capability
            // (a GETXATTR round trip) before every write: passthrough writes never reach us
            // otherwise. In exchange set-user/group-ID clearing is ours (`do_setattr`,
            // `do_write`).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.cfg.passthrough.wanted(self.source_is_fuse)
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && sys::geteuid() == 0
        {
            want |= InitFlags::FUSE_PASSTHROUGH;
        }
        let want = want & caps;
        if let Err(missing) = config.add_capabilities(want) {
            warn!("kernel lacks FUSE capabilities {missing:?}");
        }
        self.dont_mask
            .store(want.contains(InitFlags::FUSE_DONT_MASK), Ordering::SeqCst);
        if want.contains(InitFlags::FUSE_PASSTHROUGH) && config.set_max_stack_depth(1).is_ok() {
            self.passthrough.store(true, Ordering::SeqCst);
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        info!(
            passthrough = self.passthrough.load(Ordering::SeqCst),
            source_is_fuse = self.source_is_fuse,
            abi = %format!("{:?}", config.kernel_abi()),
            "FUSE session initialised"
        );
    }

    /// STATFS: SOURCE's.
    pub(super) fn statfs(&self) -> io::Result<libc::statvfs> {
        sys::fstatvfs(self.root_fd.as_fd())
    }
}
