//! Per-thread filesystem context: a FUSE worker thread that creates files on behalf of a client
//! takes its own `fs_struct` (`unshare(CLONE_FS)`, as virtiofsd does), so it can set the
//! client's umask for exactly the system call that creates the object, and the kernel below
//! applies it — or, where the parent folder has a default ACL, ignores it — as it would have for
//! the client.

use std::cell::Cell;
use std::io;

thread_local! {
    /// Whether this thread has its own fs_struct: None untried, Some(result) after the first try.
    static OWN_FS: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Give the calling thread its own umask, cwd and root (`unshare(CLONE_FS)`), once per thread.
/// Ok(false) where that is refused; the caller then masks modes itself.
pub fn own_fs_struct() -> io::Result<bool> {
    if let Some(done) = OWN_FS.with(Cell::get) {
        return Ok(done);
    }
    // SAFETY: unshare(CLONE_FS) only copies the calling thread's fs_struct (umask, cwd, root);
    // it is allowed in a multi-threaded process and touches no memory of ours.
    let r = unsafe { libc::unshare(libc::CLONE_FS) };
    let ok = r == 0;
    OWN_FS.with(|c| c.set(Some(ok)));
    if ok {
        Ok(true)
    } else {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::ENOSYS) => Ok(false),
            _ => Err(e),
        }
    }
}

/// Run `f` with the calling thread's umask set to `mask` (the thread must own its fs_struct, see
/// [`own_fs_struct`]); the previous mask is put back afterwards.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    let old = super::umask(mask & 0o777);
    let r = f();
    super::umask(old);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's umask, as /proc shows it (reading it with umask(2) would change it).
    fn thread_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .unwrap();
        u32::from_str_radix(v.trim(), 8).unwrap()
    }

    #[test]
    fn a_thread_with_its_own_fs_struct_has_its_own_umask() {
        let before = thread_umask();
        let seen = std::thread::spawn(|| {
            if !own_fs_struct().unwrap() {
                return None;
            }
            let old = crate::sys::umask(0o077);
            let inner = with_umask(0o007, thread_umask);
            let after = thread_umask();
            crate::sys::umask(old);
            Some((inner, after))
        })
        .join()
        .unwrap();
        if let Some((inner, after)) = seen {
            assert_eq!((inner, after), (0o007, 0o077));
        }
        // The other thread's umask never reached this one.
        assert_eq!(thread_umask(), before);
    }
}
