//! Scheduling: which CPU a thread runs on, and which CPUs it may run on.

use std::io;

use super::cvt;

/// A set of CPUs (`cpu_set_t`).
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The set holding only `cpu`.
    pub fn single(cpu: usize) -> CpuSet {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET bounds-checks `cpu` against the set's size (it ignores larger ones).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        CpuSet(set)
    }

    /// Whether `cpu` is in the set.
    pub fn has(&self, cpu: usize) -> bool {
        // SAFETY: CPU_ISSET bounds-checks `cpu` (false beyond the set's size).
        unsafe { libc::CPU_ISSET(cpu, &self.0) }
    }

    /// How many CPUs the set holds.
    pub fn count(&self) -> usize {
        // SAFETY: reads the set only.
        unsafe { libc::CPU_COUNT(&self.0) as usize }
    }
}

/// The CPU the calling thread is running on now.
pub fn current_cpu() -> io::Result<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = cvt(unsafe { libc::sched_getcpu() })?;
    Ok(cpu as usize)
}

/// The CPUs thread `tid` (of any process, 0 = the caller) may run on.
pub fn thread_affinity(tid: u32) -> io::Result<CpuSet> {
    // SAFETY: as in CpuSet::single.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    cvt(unsafe {
        libc::sched_getaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    })?;
    Ok(CpuSet(set))
}

/// Let thread `tid` (0 = the caller) run only on the CPUs of `set`.
pub fn set_thread_affinity(tid: u32, set: &CpuSet) -> io::Result<()> {
    // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes from `set`.
    cvt(unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set.0,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_round_trip() {
        let cpu = current_cpu().unwrap();
        let before = thread_affinity(0).unwrap();
        assert!(before.has(cpu));
        set_thread_affinity(0, &CpuSet::single(cpu)).unwrap();
        let pinned = thread_affinity(0).unwrap();
        assert_eq!(pinned.count(), 1);
        assert!(pinned.has(cpu));
        set_thread_affinity(0, &before).unwrap();
        assert_eq!(thread_affinity(0).unwrap().count(), before.count());
    }
}
