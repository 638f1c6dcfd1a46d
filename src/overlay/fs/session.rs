//! The session: what INIT negotiates with the kernel, and the answers about the whole
//! filesystem (statfs).

use super::*;

/// The read-ahead the overlay wants for its files (KiB): a sequential read then reaches it, and
/// through it SOURCE, in requests of up to half a MiB instead of the kernel's default 128 KiB
/// (over virtiofs each request is a round trip to the host).
pub const READ_AHEAD_KB: u32 = 1024;

/// How long an answer of a FUSE SOURCE to statfs is given again: each asking is a round trip
/// to the host, and find, grep and df each ask once a run (free space may be this old).
pub const STATFS_REUSE: Duration = Duration::from_secs(1);

/// Give the mount at `mountpoint` the read-ahead of [`READ_AHEAD_KB`], after INIT: the kernel
/// offers a FUSE server no more than its default at INIT and keeps the smaller of the two, so
/// this is set on the mount's bdi in sysfs (as root; otherwise the default stays, logged).
pub fn raise_readahead(mountpoint: &std::path::Path) {
    let Some(dev) = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| {
            crate::mountinfo::parse_mountinfo_device(&info, "fuse.vfnotify", mountpoint)
        })
    else {
        debug!("read-ahead left as it is: the mount is not in mountinfo");
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    let now: Option<u32> = std::fs::read_to_string(&knob)
        .ok()
        .and_then(|v| v.trim().parse().ok());
    if now.is_some_and(|kb| kb >= READ_AHEAD_KB) {
        return;
    }
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => debug!(kb = READ_AHEAD_KB, was = ?now, "read-ahead raised"),
        Err(e) => info!("read-ahead left at {now:?} KiB: {knob}: {e}"),
    }
}

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
        // A listing with attributes costs a stat of every entry on SOURCE; over a FUSE or
        // virtiofs SOURCE each is a round trip to the host, which a listing without them (find,
        // ls, globbing) never needs. There the kernel gets plain listings and looks up only the
        // entries a client asks about (the same stats at SOURCE for an `ls -l`).
        if !self.source_is_fuse {
            want |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        }
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
        let _ = config.set_max_readahead(READ_AHEAD_KB << 10);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        info!(
            passthrough = self.passthrough.load(Ordering::SeqCst),
            source_is_fuse = self.source_is_fuse,
            abi = %format!("{:?}", config.kernel_abi()),
            "FUSE session initialised"
        );
    }

    /// STATFS: SOURCE's; over a FUSE SOURCE the same answer for [`STATFS_REUSE`].
    pub(super) fn statfs(&self) -> io::Result<libc::statvfs> {
        if !self.source_is_fuse {
            return sys::fstatvfs(self.root_fd.as_fd());
        }
        let mut last = lock(&self.statfs_reused);
        if let Some((at, v)) = *last {
            if at.elapsed() < STATFS_REUSE {
                return Ok(v);
            }
        }
        let v = sys::fstatvfs(self.root_fd.as_fd())?;
        *last = Some((std::time::Instant::now(), v));
        Ok(v)
    }
}
