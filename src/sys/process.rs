//! The process: ids, fork and setsid, umask, signal masks, the open-files limit.

use super::*;

/// The calling thread's id (what the kernel puts in a FUSE request's `pid`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Result of [`fork`].
pub enum Fork {
    Parent(i32),
    Child,
}

/// `fork()`. Call only while the process has a single thread.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child inherits a
    // consistent address space (no lock held by another thread).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `setsid()`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no preconditions.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// `dup2(from, to)`.
pub fn dup2(from: BorrowedFd<'_>, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on a valid source fd; `to` is replaced atomically.
    cvt(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

/// `umask(mask)`, returning the previous mask.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::umask(mask) }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// Block SIGTERM, SIGINT and SIGHUP in the calling thread (and threads it starts later), so a
/// dedicated thread can take them with [`wait_signal`].
pub fn block_termination_signals() -> io::Result<()> {
    termination_mask(libc::SIG_BLOCK)
}

/// `pthread_sigmask(how, {SIGTERM, SIGINT, SIGHUP})` for the calling thread.
fn termination_mask(how: libc::c_int) -> io::Result<()> {
    let set = termination_set();
    // SAFETY: set is an initialised sigset_t; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Undo [`block_termination_signals`] in the calling thread (and threads it starts later).
pub fn unblock_termination_signals() -> io::Result<()> {
    termination_mask(libc::SIG_UNBLOCK)
}

/// Wait for one of the signals blocked by [`block_termination_signals`]; returns its number.
pub fn wait_signal() -> io::Result<i32> {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: set is initialised, sig is writable.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(sig)
    }
}

/// Raise the soft open-files limit to the hard limit (a server started with a low soft limit
/// would otherwise give its clients EMFILE). Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: lim is a valid rlimit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// The soft open-files limit.
pub fn nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(lim.rlim_cur)
}

/// `kill(pid, sig)`.
pub fn kill(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: no memory is passed; the kernel checks the pid and the permission.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented to this process.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// `waitpid(pid, &status, flags)`: `Ok(None)` when WNOHANG finds the child still running,
/// else the raw wait status (read it with `libc::WIFEXITED` and friends).
pub fn waitpid(pid: i32, flags: i32) -> io::Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: status is a valid, writable int.
    match cvt(unsafe { libc::waitpid(pid, &mut status, flags) })? {
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}
