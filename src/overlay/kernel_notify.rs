//! The FUSE notification fuser does not offer, written to the session's device fd directly:
//! `FUSE_NOTIFY_INC_EPOCH` (Linux 6.16, FUSE 7.44: every cached name becomes invalid at once,
//! positive and negative). A notification is a reply with `unique == 0` whose `error` field
//! carries the code. [`KernelNotifier::inc_epoch`] checks the kernel's FUSE version itself
//! (ENOSYS where the kernel would reject the code); like every kernel notification it is sent
//! from the sync worker only.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// `FUSE_NOTIFY_INC_EPOCH`.
pub const NOTIFY_INC_EPOCH: i32 = 8;

/// Encode one notification: `fuse_out_header { len: u32, error: i32 = code, unique: u64 = 0 }`
/// followed by `payload` (EINVAL: too long for the `u32` length).
pub fn encode(code: i32, payload: &[u8]) -> io::Result<Vec<u8>> {
    let total = 16 + payload.len();
    let len = u32::try_from(total).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&code.to_ne_bytes());
    m.extend_from_slice(&0u64.to_ne_bytes());
    m.extend_from_slice(payload);
    Ok(m)
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
        self.send(&encode(NOTIFY_INC_EPOCH, &[])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let m = encode(NOTIFY_INC_EPOCH, &[]).unwrap();
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
    fn old_kernels_are_not_sent_unknown_codes() {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let k = KernelNotifier::new(fd, 40);
        assert_eq!(
            k.inc_epoch().unwrap_err().raw_os_error(),
            Some(libc::ENOSYS)
        );
    }
}
