//! FUSE notifications fuser does not offer, written to the session's device fd directly:
//! `FUSE_NOTIFY_INC_EPOCH` (Linux 6.16, FUSE 7.44: every cached name becomes invalid at once,
//! positive and negative) and `FUSE_NOTIFY_PRUNE` (Linux 6.18, FUSE 7.45: ask the kernel to drop
//! unused inodes). A notification is a reply with `unique == 0` whose `error` field carries the
//! code. Callers must check [`KernelNotifier::supports_epoch`] first (older kernels reject the
//! codes), and, like every kernel notification, send them from the sync worker only.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// `FUSE_NOTIFY_INC_EPOCH`.
pub const NOTIFY_INC_EPOCH: i32 = 8;
/// `FUSE_NOTIFY_PRUNE`.
pub const NOTIFY_PRUNE: i32 = 9;
/// Node ids one PRUNE message may carry (the kernel's own limit is larger; keep messages small).
pub const PRUNE_BATCH: usize = 256;

/// Encode one notification: `fuse_out_header { len: u32, error: i32 = code, unique: u64 = 0 }`
/// followed by `payload`.
pub fn encode(code: i32, payload: &[u8]) -> Vec<u8> {
    let len = (16 + payload.len()) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&code.to_ne_bytes());
    m.extend_from_slice(&0u64.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// The PRUNE payload: `fuse_notify_prune_out { count: u32, padding: u32, spare: u64 }` and then
/// `count` node ids.
pub fn prune_payload(nodes: &[u64]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + 8 * nodes.len());
    p.extend_from_slice(&(nodes.len() as u32).to_ne_bytes());
    p.extend_from_slice(&0u32.to_ne_bytes());
    p.extend_from_slice(&0u64.to_ne_bytes());
    for n in nodes {
        p.extend_from_slice(&n.to_ne_bytes());
    }
    p
}

/// Writes raw notifications to a duplicate of the session's `/dev/fuse` fd.
pub struct KernelNotifier {
    fd: OwnedFd,
    minor: u32,
}

impl KernelNotifier {
    /// `fd`: a duplicate of the session fd; `minor`: the kernel's FUSE minor version from INIT.
    pub fn new(fd: OwnedFd, minor: u32) -> Self {
        KernelNotifier { fd, minor }
    }

    pub fn supports_epoch(&self) -> bool {
        self.minor >= 44
    }

    pub fn supports_prune(&self) -> bool {
        self.minor >= 45
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let n = crate::sys::write_fuse(self.fd.as_fd(), msg)?;
        if n == msg.len() {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
    }

    /// Invalidate every cached name of this mount at once.
    pub fn inc_epoch(&self) -> io::Result<()> {
        if !self.supports_epoch() {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        self.send(&encode(NOTIFY_INC_EPOCH, &[]))
    }

    /// Ask the kernel to forget these nodes if nothing uses them.
    pub fn prune(&self, nodes: &[u64]) -> io::Result<()> {
        if !self.supports_prune() {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        for chunk in nodes.chunks(PRUNE_BATCH) {
            self.send(&encode(NOTIFY_PRUNE, &prune_payload(chunk)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let m = encode(NOTIFY_INC_EPOCH, &[]);
        assert_eq!(m.len(), 16);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 16);
        assert_eq!(i32::from_ne_bytes(m[4..8].try_into().unwrap()), 8);
        assert_eq!(
            u64::from_ne_bytes(m[8..16].try_into().unwrap()),
            0,
            "unique 0 marks a notification"
        );
    }

    #[test]
    fn prune_layout() {
        let m = encode(NOTIFY_PRUNE, &prune_payload(&[5, 7]));
        assert_eq!(m.len(), 16 + 16 + 16);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 48);
        assert_eq!(u32::from_ne_bytes(m[16..20].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(m[32..40].try_into().unwrap()), 5);
        assert_eq!(u64::from_ne_bytes(m[40..48].try_into().unwrap()), 7);
    }

    #[test]
    fn old_kernels_are_not_sent_unknown_codes() {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let k = KernelNotifier::new(fd, 40);
        assert_eq!(
            k.inc_epoch().unwrap_err().raw_os_error(),
            Some(libc::ENOSYS)
        );
        assert_eq!(
            k.prune(&[1]).unwrap_err().raw_os_error(),
            Some(libc::ENOSYS)
        );
    }
}
