//! fanotify in FID mode (`FAN_REPORT_DFID_NAME[_TARGET]`), file handles, and the few other calls
//! the host watcher needs (`inotify_rm_watch`, the filesystem id).
//!
//! The nix crate parses only fd-mode fanotify events; here the records are parsed from the raw
//! buffer by [`parse`], safe code over a byte slice that never panics and never reads out of
//! bounds, whatever the buffer holds (unit tests below run it on buffers captured from the kernel
//! and on garbage). The system calls are thin wrappers, each `unsafe` block with its `SAFETY:`.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{Inotify, cvt};

/// `sizeof(struct fanotify_event_metadata)`.
pub const METADATA_LEN: usize = 24;
/// `FANOTIFY_METADATA_VERSION` this parser understands.
pub const METADATA_VERSION: u8 = 3;
/// `sizeof(struct fanotify_event_info_fid)` + `sizeof(struct file_handle)`.
const FID_HDR_LEN: usize = 4 + 8 + 8;
/// Longest file handle accepted (`MAX_HANDLE_SZ`).
pub const MAX_HANDLE: usize = 128;

/// A non-blocking fanotify group.
#[derive(Debug)]
pub struct Fanotify {
    fd: OwnedFd,
}

impl Fanotify {
    /// `fanotify_init(flags | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE)`.
    pub fn init(flags: libc::c_uint) -> io::Result<Fanotify> {
        // SAFETY: fanotify_init takes flags only; a non-negative result is a new fd we own.
        let fd = cvt(unsafe {
            libc::fanotify_init(
                flags | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint,
            )
        })?;
        // SAFETY: fd is fresh and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Fanotify { fd })
    }

    /// `fanotify_mark(FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, path)`: watch the whole
    /// filesystem `path` is on.
    pub fn mark_filesystem(&self, mask: u64, path: &CStr) -> io::Result<()> {
        // SAFETY: valid fd and C string.
        cvt(unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                mask,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        })
        .map(drop)
    }

    /// Read queued events into `buf`: `Ok(0)` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    /// Wait up to `timeout_ms` for events; Ok(true) when some are queued (EINTR: false).
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        poll_in(self.fd.as_fd(), timeout_ms)
    }
}

impl AsFd for Fanotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `poll(fd, POLLIN, timeout_ms)`: whether `fd` is readable (EINTR counts as a timeout).
pub fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the length of the call.
    match cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Inotify {
    /// `inotify_rm_watch(wd)`.
    pub fn rm_watch(&self, wd: i32) -> io::Result<()> {
        // SAFETY: valid fd; the kernel checks wd.
        cvt(unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) }).map(drop)
    }

    /// Watch the directory open at `dir` (any fd of it, `O_PATH` included) for `mask`, through
    /// its `/proc/self/fd` link: exactly that inode, whatever its path has become. Do not pass
    /// `IN_DONTFOLLOW` (the link must be followed).
    pub fn add_watch_fd(&self, dir: BorrowedFd<'_>, mask: u32) -> io::Result<i32> {
        let link = std::ffi::CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        // SAFETY: valid fd and C string.
        cvt(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), link.as_ptr(), mask) })
    }

    /// Whether events are queued, waiting up to `timeout_ms`.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        poll_in(self.fd.as_fd(), timeout_ms)
    }
}

/// A filesystem id (`__kernel_fsid_t`, as `statfs` and fanotify report it).
pub type Fsid = [i32; 2];

/// The filesystem id of the filesystem `fd` is on (`fstatfs().f_fsid`).
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<Fsid> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: st is writable memory of the right size, filled on success.
    let st = unsafe {
        cvt(libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()))?;
        st.assume_init()
    };
    // SAFETY: fsid_t is two ints; reading it as such is what glibc's __val does.
    let raw: Fsid = unsafe { std::mem::transmute_copy(&st.f_fsid) };
    Ok(raw)
}

/// `open_by_handle_at(mount, handle, flags | O_CLOEXEC)` (needs CAP_DAC_READ_SEARCH). `mount` is
/// any descriptor on the filesystem except an `O_PATH` one (EBADF).
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle: &HandleRef<'_>,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    /// `struct file_handle` with room for [`MAX_HANDLE`] bytes.
    #[repr(C)]
    struct Buf {
        bytes: u32,
        kind: i32,
        f: [u8; MAX_HANDLE],
    }
    let mut buf = Buf {
        bytes: handle.bytes.len() as u32,
        kind: handle.kind,
        f: [0; MAX_HANDLE],
    };
    buf.f[..handle.bytes.len()].copy_from_slice(handle.bytes);
    // SAFETY: buf is a complete struct file_handle whose handle_bytes matches the bytes copied;
    // on success the returned fd is new and owned by us.
    unsafe {
        let fd = cvt(libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut buf as *mut Buf).cast(),
            flags | libc::O_CLOEXEC,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The path of the object open at `fd`, as the kernel names it (`/proc/self/fd/N`).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A file handle inside an event buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleRef<'a> {
    pub kind: i32,
    pub bytes: &'a [u8],
}

/// What one info record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoKind {
    /// `FAN_EVENT_INFO_TYPE_FID`: the object itself.
    Fid,
    /// `FAN_EVENT_INFO_TYPE_DFID_NAME`: a directory and an entry name in it (`.` for the
    /// directory itself).
    DfidName,
    /// `FAN_EVENT_INFO_TYPE_DFID`: a directory.
    Dfid,
    /// `FAN_EVENT_INFO_TYPE_OLD_DFID_NAME`: the old directory and name of a `FAN_RENAME`.
    OldDfidName,
    /// `FAN_EVENT_INFO_TYPE_NEW_DFID_NAME`: the new directory and name of a `FAN_RENAME`.
    NewDfidName,
}

/// One FID info record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info<'a> {
    pub kind: InfoKind,
    pub fsid: Fsid,
    pub handle: HandleRef<'a>,
    /// The entry name, for the `*_NAME` kinds.
    pub name: Option<&'a OsStr>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub mask: u64,
    pub pid: i32,
    /// Its FID records, in the kernel's order (dir + name, new dir + name, child).
    pub infos: Vec<Info<'a>>,
    /// Records of other types (pidfd, error), skipped.
    pub skipped: u32,
}

impl<'a> Event<'a> {
    /// The first record of `kind`.
    pub fn info(&self, kind: InfoKind) -> Option<&Info<'a>> {
        self.infos.iter().find(|i| i.kind == kind)
    }
}

/// Why (part of) a buffer could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("event at offset {at}: length {len} out of bounds")]
    EventLength { at: usize, len: usize },
    #[error("event at offset {at}: metadata version {vers}, expected {METADATA_VERSION}")]
    Version { at: usize, vers: u8 },
    #[error("event at offset {at}: info record length {len} out of bounds")]
    InfoLength { at: usize, len: usize },
    #[error("event at offset {at}: file handle of {len} bytes does not fit")]
    HandleLength { at: usize, len: usize },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parse every event in `buf` (what one `read` returned). Events are parsed until the first
/// malformed one, whose error ends the list (the kernel never produces one; a bad buffer is
/// reported, never read beyond).
pub fn parse(buf: &[u8]) -> (Vec<Event<'_>>, Option<ParseError>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        match parse_one(buf, at) {
            Ok((ev, len)) => {
                out.push(ev);
                at += len;
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn parse_one(buf: &[u8], at: usize) -> Result<(Event<'_>, usize), ParseError> {
    let rest = buf.get(at..).unwrap_or_default();
    let bad_len = |len| ParseError::EventLength { at, len };
    let event_len = u32_at(rest, 0).ok_or(bad_len(rest.len()))? as usize;
    if event_len < METADATA_LEN || event_len > rest.len() {
        return Err(bad_len(event_len));
    }
    let vers = rest.get(4).copied().unwrap_or_default();
    if vers != METADATA_VERSION {
        return Err(ParseError::Version { at, vers });
    }
    let metadata_len = u16_at(rest, 6).ok_or(bad_len(event_len))? as usize;
    if metadata_len < METADATA_LEN || metadata_len > event_len {
        return Err(bad_len(metadata_len));
    }
    let mask = u64_at(rest, 8).ok_or(bad_len(event_len))?;
    let pid = i32_at(rest, 20).ok_or(bad_len(event_len))?;
    let body = rest.get(metadata_len..event_len).unwrap_or_default();
    let mut infos = Vec::new();
    let mut skipped = 0;
    let mut off = 0usize;
    while off < body.len() {
        let rec_at = at + metadata_len + off;
        let rec = body.get(off..).unwrap_or_default();
        let info_type = rec.first().copied().unwrap_or_default();
        let len = u16_at(rec, 2).ok_or(ParseError::InfoLength {
            at: rec_at,
            len: rec.len(),
        })? as usize;
        if len < 4 || len > rec.len() {
            return Err(ParseError::InfoLength { at: rec_at, len });
        }
        let rec = rec.get(..len).unwrap_or_default();
        let kind = match info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => Some(InfoKind::Fid),
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME => Some(InfoKind::DfidName),
            libc::FAN_EVENT_INFO_TYPE_DFID => Some(InfoKind::Dfid),
            libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => Some(InfoKind::OldDfidName),
            libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => Some(InfoKind::NewDfidName),
            _ => None,
        };
        match kind {
            Some(kind) => infos.push(parse_fid(rec, rec_at, kind)?),
            None => skipped += 1,
        }
        off += len;
    }
    Ok((
        Event {
            mask,
            pid,
            infos,
            skipped,
        },
        event_len,
    ))
}

fn parse_fid(rec: &[u8], at: usize, kind: InfoKind) -> Result<Info<'_>, ParseError> {
    if rec.len() < FID_HDR_LEN {
        return Err(ParseError::InfoLength { at, len: rec.len() });
    }
    let fsid = [
        i32_at(rec, 4).unwrap_or_default(),
        i32_at(rec, 8).unwrap_or_default(),
    ];
    let handle_bytes = u32_at(rec, 12).unwrap_or_default() as usize;
    let handle_type = i32_at(rec, 16).unwrap_or_default();
    let after = rec.get(FID_HDR_LEN..).unwrap_or_default();
    if handle_bytes > MAX_HANDLE || handle_bytes > after.len() {
        return Err(ParseError::HandleLength {
            at,
            len: handle_bytes,
        });
    }
    let (bytes, tail) = after.split_at(handle_bytes);
    let name = match kind {
        InfoKind::DfidName | InfoKind::OldDfidName | InfoKind::NewDfidName => {
            // The name runs to its NUL; padding follows.
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            Some(OsStr::from_bytes(tail.get(..end).unwrap_or_default()))
        }
        _ => None,
    };
    Ok(Info {
        kind,
        fsid,
        handle: HandleRef {
            kind: handle_type,
            bytes,
        },
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build one FID record as the kernel lays it out (header, fsid, file_handle, name, NUL,
    /// padding to 4).
    fn record(
        info_type: u8,
        fsid: Fsid,
        htype: i32,
        handle: &[u8],
        name: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&fsid[0].to_ne_bytes());
        body.extend_from_slice(&fsid[1].to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&htype.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(n) = name {
            body.extend_from_slice(n);
            body.push(0);
        }
        let mut len = 4 + body.len();
        len = len.div_ceil(4) * 4;
        let mut out = vec![info_type, 0];
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&body);
        out.resize(len, 0);
        out
    }

    fn event(mask: u64, pid: i32, records: &[Vec<u8>]) -> Vec<u8> {
        let body: usize = records.iter().map(Vec::len).sum();
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_LEN + body) as u32).to_ne_bytes());
        out.push(METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes());
        out.extend_from_slice(&pid.to_ne_bytes());
        for r in records {
            out.extend_from_slice(r);
        }
        out
    }

    #[test]
    fn builds_match_the_kernel_layout() {
        // A DFID_NAME record with an 8-byte handle and the name "a.txt": 20 + 8 + 6 → 36.
        let r = record(2, [1, 2], 1, &[9; 8], Some(b"a.txt"));
        assert_eq!(r.len(), 36);
        let e = event(libc::FAN_CREATE, 7, &[r]);
        assert_eq!(e.len(), 60);
    }

    #[test]
    fn overflow_event_has_no_records() {
        let buf = event(libc::FAN_Q_OVERFLOW, 0, &[]);
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].mask, libc::FAN_Q_OVERFLOW);
        assert!(evs[0].infos.is_empty());
    }

    #[test]
    fn garbage_never_panics_nor_reads_out_of_bounds() {
        let valid = event(
            libc::FAN_RENAME,
            3,
            &[
                record(10, [1, 2], 1, &[1; 12], Some(b"old")),
                record(12, [1, 2], 1, &[2; 12], Some(b"new")),
                record(1, [1, 2], 1, &[3; 12], None),
            ],
        );
        let mut seed: u32 = 0x2545_f491;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..20_000 {
            let mut buf = valid.clone();
            buf.extend_from_slice(&valid);
            for _ in 0..(next() % 6) {
                let i = next() as usize % buf.len();
                buf[i] = next() as u8;
            }
            let cut = next() as usize % (buf.len() + 1);
            let (evs, _) = parse(&buf[..cut]);
            for e in evs {
                for i in e.infos {
                    assert!(i.handle.bytes.len() <= MAX_HANDLE);
                }
            }
        }
        // Random bytes too.
        for _ in 0..5_000 {
            let len = next() as usize % 200;
            let buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = parse(&buf);
        }
    }

    #[test]
    fn truncated_and_inconsistent_lengths_are_errors() {
        let one = event(
            libc::FAN_CREATE,
            1,
            &[record(2, [0, 0], 1, &[5; 8], Some(b"x"))],
        );
        assert!(matches!(
            parse(&one[..10]).1,
            Some(ParseError::EventLength { .. })
        ));
        let mut bad = one.clone();
        bad[4] = 2; // version
        assert!(matches!(parse(&bad).1, Some(ParseError::Version { .. })));
        let mut bad = one.clone();
        // handle_bytes larger than the record
        bad[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&200u32.to_ne_bytes());
        assert!(matches!(
            parse(&bad).1,
            Some(ParseError::HandleLength { .. })
        ));
        let mut bad = one.clone();
        bad[METADATA_LEN + 2..METADATA_LEN + 4].copy_from_slice(&2u16.to_ne_bytes());
        assert!(matches!(parse(&bad).1, Some(ParseError::InfoLength { .. })));
        // A good event followed by a bad one: the good one is kept.
        let mut two = one.clone();
        two.extend_from_slice(&[1, 2, 3]);
        let (evs, err) = parse(&two);
        assert_eq!(evs.len(), 1);
        assert!(err.is_some());
    }

    /// Buffers captured from Linux 6.18 on tmpfs (`FAN_REPORT_DFID_NAME_TARGET`, a filesystem
    /// mark), one `read` after each operation.
    mod captured {
        pub const CREATE: &str = "60000000030018000a01000000000000ffffffffc93d0000020028008b35f984f4c5c0be0c00000001000000a375a7540100000000000000612e747874000000010020008b35f984f4c5c0be0c000000010000002e4668fb0200000000000000";
        pub const CHMOD_DIR: &str = "3c000000030018000400004000000000ffffffffc93d0000020024008b35f984f4c5c0be0c00000001000000b3b348fe03000000000000002e000000";
        pub const RENAME: &str = "88000000030018000000001000000000ffffffffc93d00000a0028008b35f984f4c5c0be0c00000001000000a375a7540100000000000000612e7478740000000c0028008b35f984f4c5c0be0c00000001000000b3b348fe0300000000000000622e747874000000010020008b35f984f4c5c0be0c000000010000002e4668fb0200000000000000";
        pub const LINK: &str = "38000000030018000400000000000000ffffffffc93d0000010020008b35f984f4c5c0be0c000000010000002e4668fb020000000000000060000000030018000001000000000000ffffffffc93d0000020028008b35f984f4c5c0be0c00000001000000a375a7540100000000000000682e747874000000010020008b35f984f4c5c0be0c000000010000002e4668fb0200000000000000";
        pub const RMTREE: &str = "38000000030018000400000000000000ffffffffc93d0000010020008b35f984f4c5c0be0c000000010000002e4668fb020000000000000060000000030018000002000000000000ffffffffc93d0000020028008b35f984f4c5c0be0c00000001000000b3b348fe0300000000000000622e747874000000010020008b35f984f4c5c0be0c000000010000002e4668fb02000000000000005c000000030018000002004000000000ffffffffc93d0000020024008b35f984f4c5c0be0c00000001000000a375a754010000000000000073756200010020008b35f984f4c5c0be0c00000001000000b3b348fe0300000000000000";
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn name(i: &Info<'_>) -> Option<String> {
        i.name.map(|n| n.to_string_lossy().into_owned())
    }

    #[test]
    fn captured_create_reports_folder_name_and_child() {
        let buf = hex(captured::CREATE);
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        // The kernel merged the create, the write and the close of `fs::write`.
        assert_eq!(
            e.mask,
            libc::FAN_CREATE | libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE
        );
        let dir = e.info(InfoKind::DfidName).unwrap();
        assert_eq!(name(dir).as_deref(), Some("a.txt"));
        assert_eq!(dir.handle.kind, 1);
        assert_eq!(dir.handle.bytes.len(), 12);
        let child = e.info(InfoKind::Fid).unwrap();
        assert_eq!(child.name, None);
        assert_eq!(child.fsid, dir.fsid);
        assert_ne!(child.handle, dir.handle);
    }

    #[test]
    fn captured_event_on_a_folder_itself_is_named_dot() {
        let buf = hex(captured::CHMOD_DIR);
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        assert_eq!(evs[0].mask, libc::FAN_ATTRIB | libc::FAN_ONDIR);
        assert_eq!(evs[0].infos.len(), 1);
        assert_eq!(name(&evs[0].infos[0]).as_deref(), Some("."));
    }

    #[test]
    fn captured_rename_has_old_new_and_child() {
        let create = hex(captured::CREATE);
        let buf = hex(captured::RENAME);
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        let e = &evs[0];
        assert_eq!(e.mask, libc::FAN_RENAME);
        let kinds: Vec<InfoKind> = e.infos.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [InfoKind::OldDfidName, InfoKind::NewDfidName, InfoKind::Fid]
        );
        assert_eq!(name(&e.infos[0]).as_deref(), Some("a.txt"));
        assert_eq!(name(&e.infos[1]).as_deref(), Some("b.txt"));
        // The moved file is the one created before.
        let (c, _) = parse(&create);
        assert_eq!(e.infos[2].handle, c[0].info(InfoKind::Fid).unwrap().handle);
    }

    #[test]
    fn captured_hard_link_gives_a_fid_only_attrib_then_the_create() {
        let buf = hex(captured::LINK);
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, libc::FAN_ATTRIB);
        assert_eq!(evs[0].infos.len(), 1);
        assert_eq!(evs[0].infos[0].kind, InfoKind::Fid);
        assert_eq!(evs[1].mask, libc::FAN_CREATE);
        assert_eq!(name(&evs[1].infos[0]).as_deref(), Some("h.txt"));
    }

    #[test]
    fn captured_tree_removal_names_each_folder_by_its_child_record() {
        let buf = hex(captured::RMTREE);
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        let masks: Vec<u64> = evs.iter().map(|e| e.mask).collect();
        assert_eq!(
            masks,
            [
                libc::FAN_ATTRIB,
                libc::FAN_DELETE,
                libc::FAN_DELETE | libc::FAN_ONDIR
            ]
        );
        // The file's folder (`sub`) is the child of the folder's own delete event: a folder gone
        // before its handle is resolved is found through it.
        let file_dir = evs[1].info(InfoKind::DfidName).unwrap().handle;
        let sub = evs[2].info(InfoKind::Fid).unwrap().handle;
        assert_eq!(file_dir, sub);
        assert_eq!(
            name(evs[2].info(InfoKind::DfidName).unwrap()).as_deref(),
            Some("sub")
        );
    }
}
