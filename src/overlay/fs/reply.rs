//! Replies built from an operation's `io::Result`: the value, or the errno from [`errno`]. Each
//! method of `impl Filesystem` calls an inherent operation and hands its result to
//! [`Answer::answer`].

use super::*;

pub(super) trait Answer<T> {
    fn answer(self, s: &Shared, res: io::Result<T>);
}

macro_rules! answer {
    ($reply:ty, $t:ty, |$r:ident, $s:ident, $v:pat_param| $ok:expr) => {
        impl Answer<$t> for $reply {
            fn answer(self, $s: &Shared, res: io::Result<$t>) {
                let $r = self;
                match res {
                    Ok($v) => $ok,
                    Err(e) => $r.error(errno(&e)),
                }
            }
        }
    };
}

answer!(ReplyEntry, FileAttr, |r, s, a| r.entry(&s.ttl(), &a, GEN));
answer!(ReplyEntry, (FileAttr, Duration), |r, _s, (a, ttl)| r
    .entry(&ttl, &a, GEN));
answer!(ReplyAttr, FileAttr, |r, s, a| r.attr(&s.ttl(), &a));
answer!(ReplyAttr, (FileAttr, Duration), |r, _s, (a, ttl)| r
    .attr(&ttl, &a));
answer!(ReplyEmpty, (), |r, _s, ()| r.ok());
answer!(ReplyDirectory, (), |r, _s, ()| r.ok());
answer!(ReplyDirectoryPlus, (), |r, _s, ()| r.ok());
answer!(ReplyData, Vec<u8>, |r, _s, d| r.data(&d));
answer!(ReplyWrite, usize, |r, _s, n| r.written(clamp_u32(n)));
answer!(ReplyLseek, i64, |r, _s, o| r.offset(o));
answer!(ReplyStatfs, libc::statvfs, |r, _s, v| r.statfs(
    v.f_blocks,
    v.f_bfree,
    v.f_bavail,
    v.f_files,
    v.f_ffree,
    clamp_u32(v.f_bsize),
    clamp_u32(v.f_namemax),
    clamp_u32(v.f_frsize),
));

/// An xattr reply: the size asked for (a zero-size request) or the bytes.
pub(super) enum Xattr {
    Size(usize),
    Data(Vec<u8>),
}

impl Xattr {
    /// What a get/list xattr call of `size` answers with `(length, bytes)`.
    pub(super) fn of(size: u32, (n, data): (usize, Vec<u8>)) -> Self {
        if size == 0 {
            Xattr::Size(n)
        } else {
            Xattr::Data(data)
        }
    }
}

answer!(ReplyXattr, Xattr, |r, _s, x| match x {
    Xattr::Size(n) => r.size(clamp_u32(n)),
    Xattr::Data(d) => r.data(&d),
});

/// An open handle for the reply to OPEN, OPENDIR or CREATE.
pub(super) enum Opened {
    /// Served here, with these flags.
    Cached(FileHandle, FopenFlags),
    /// Kernel passthrough to this backing file (page-cache flags are refused there:
    /// `FOPEN_PASSTHROUGH_MASK`).
    Passthrough(FileHandle, Arc<fuser::BackingId>),
}

answer!(ReplyOpen, Opened, |r, _s, o| match o {
    Opened::Cached(fh, flags) => r.opened(fh, flags),
    Opened::Passthrough(fh, b) => r.opened_passthrough(fh, NOFLUSH, &b),
});

answer!(ReplyCreate, (FileAttr, Opened), |r, s, (a, o)| match o {
    Opened::Cached(fh, flags) => r.created(&s.ttl(), &a, GEN, fh, flags),
    Opened::Passthrough(fh, b) => r.created_passthrough(&s.ttl(), &a, GEN, fh, NOFLUSH, &b),
});
