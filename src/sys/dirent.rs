//! Reading a directory's entries (`getdents64`).

use super::*;

/// One directory entry from [`read_dir`].
#[derive(Debug, Clone)]
pub struct RawDirent {
    pub name: OsString,
    pub ino: u64,
    pub kind: u8,
}

/// Read every entry of the directory open at `fd` (from its start), skipping `.` and `..`.
pub fn read_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<RawDirent>> {
    lseek(fd, 0, libc::SEEK_SET)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is writable for its length; getdents64 fills at most that many bytes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let n = n as usize;
        let mut off = 0;
        while off + 19 <= n {
            // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, char d_name[].
            let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let kind = buf[off + 18];
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name_bytes = &buf[off + 19..off + reclen];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            if name != b"." && name != b".." {
                out.push(RawDirent {
                    name: OsString::from_vec(name.to_vec()),
                    ino,
                    kind,
                });
            }
            off += reclen;
        }
    }
}
