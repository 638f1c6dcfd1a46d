//! Conversions between kernel stats, snapshots and fuser's types; small helpers of the
//! operations (times, file types, the set-id bits, group membership).

use super::*;

pub(super) fn time(s: i64, ns: i64) -> SystemTime {
    // The kernel's nanoseconds are in 0..1e9 (a negative count, never given, is taken as 0).
    let ns = Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s.unsigned_abs()) + ns
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + ns
    }
}

pub(super) fn set_time(t: Option<TimeOrNow>) -> sys::SetTime {
    match t {
        None => sys::SetTime::Omit,
        Some(TimeOrNow::Now) => sys::SetTime::Now,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => sys::SetTime::At(secs_i64(d), i64::from(d.subsec_nanos())),
            // fuser 0.18 decodes a time before the epoch, (secs < 0, nsecs), as
            // -(|secs| + nsecs) instead of secs + nsecs; undo that to get the kernel's fields
            // back (Cargo.lock pins the version; `pre_epoch_times_round_trip` checks it).
            Err(e) => {
                let d = e.duration();
                sys::SetTime::At(-secs_i64(d), i64::from(d.subsec_nanos()))
            }
        },
    }
}

/// Whole seconds of `d` (fuser's times came from the kernel's `i64` seconds: they fit).
fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `n` for a `u32` field of a reply, clamped to its range (sizes, counts and block sizes).
pub(super) fn clamp_u32<N: TryInto<u32> + PartialOrd + Default>(n: N) -> u32 {
    let negative = n < N::default();
    n.try_into().unwrap_or(if negative { 0 } else { u32::MAX })
}

/// A non-negative kernel count (`st_size`, `st_blocks`) as a `u64` (a negative one as 0).
pub(super) fn count_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The FUSE file type of a mode.
pub fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub(super) fn dtype_kind(t: u8) -> FileType {
    match t {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// A negative entry: node id 0 with a timeout, which the kernel caches until `inval_entry`.
pub(super) fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// `openat`, dropping `O_NOATIME` where the kernel refuses it (EPERM: neither owner nor
/// CAP_FOWNER, as in a user namespace).
pub(super) fn openat_atime(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    with_atime(flags, |f| sys::openat(dir, name, f, mode))
}

/// `open(flags)`, and again without `O_NOATIME` where that is refused (EPERM).
pub(super) fn with_atime(
    flags: i32,
    open: impl Fn(i32) -> io::Result<OwnedFd>,
) -> io::Result<OwnedFd> {
    match open(flags) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && flags & libc::O_NOATIME != 0 => {
            open(flags & !libc::O_NOATIME)
        }
        r => r,
    }
}

/// A `stat` built from a snapshot (for replies about objects SOURCE no longer has).
pub fn snap_stat(e: &EntrySnap) -> libc::stat {
    let mut st = sys::zeroed_stat();
    st.st_dev = e.key.dev;
    st.st_ino = e.key.ino;
    st.st_mode = e.mode;
    st.st_size = i64::try_from(e.size).unwrap_or(i64::MAX);
    st.st_mtime = e.mtime.0;
    st.st_mtime_nsec = e.mtime.1;
    st.st_ctime = e.ctime.0;
    st.st_ctime_nsec = e.ctime.1;
    st.st_atime = e.atime.0;
    st.st_atime_nsec = e.atime.1;
    st.st_uid = e.uid;
    st.st_gid = e.gid;
    st.st_rdev = e.rdev;
    st.st_nlink = e.nlink.into();
    st.st_blocks = i64::try_from(e.blocks).unwrap_or(i64::MAX);
    st.st_blksize = 4096;
    st
}

/// The mode a write, truncate, fallocate or hole punch by a caller without CAP_FSETID leaves
/// behind, as the VFS computes it (`setattr_should_drop_suidgid`): set-user-ID goes;
/// set-group-ID goes with group execute, and without it too when the caller is not in the
/// file's group (`caller_in_group`, asked only then). `None`: no change (not a regular file, or
/// nothing to drop).
pub(super) fn without_suid_sgid(mode: u32, caller_in_group: impl FnOnce() -> bool) -> Option<u32> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || !caller_in_group()) {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

/// Whether the caller of `req` is in group `gid`: its fs group, or one of its supplementary
/// groups (from /proc; a caller gone meanwhile counts as not in it).
pub(super) fn in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", req.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}
