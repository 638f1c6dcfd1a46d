//! A burst's names on one CPU: the replay thread and the FUSE readers share the CPU the replay
//! thread is on while it makes a run of new files (see [`Pinned`]).
//!
//! Each replayed name is three round trips to the overlay (the folder's permission check, the
//! lookup of the name, the create), one after the other — the kernel serialises creates in a
//! folder — and each round trip is two wakeups: a reader for the request, then the replay thread
//! for the answer. A wakeup on another CPU costs an inter-processor interrupt, which on a virtual
//! machine is an exit to the host: measured on the 2-vCPU benchmark machine, a round trip took
//! ~5 µs with both threads on one CPU and 25–60 µs across CPUs, and the scheduler puts a woken
//! reader on the idle CPU whenever there is one. Pinned, a burst of 1,000 names is made in
//! ≈ 35–40 ms instead of 75–180 ms (bench/NOTES.md).
//!
//! Only for the run's names: the CPU sets each thread had come back when the guard goes, before
//! the contents (which run on several threads) and before any other request load builds up.

use tracing::debug;

use crate::overlay::fs::Stats;
use crate::sys::{self, CpuSet};

/// The threads pinned for a run and the CPU sets they had (restored on drop).
pub(super) struct Pinned {
    saved: Vec<(u32, CpuSet)>,
}

/// Whether a thread name is one of fuser's request readers (`fuser-0`, `fuser-1`, …; not
/// `fuser-bg`).
fn is_reader(comm: &[u8]) -> bool {
    comm.strip_prefix(b"fuser-")
        .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit))
}

/// The ids of this process's FUSE request reader threads.
fn readers() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read(t.path().join("comm")).ok()?;
            is_reader(comm.trim_ascii_end()).then_some(tid)
        })
        .collect()
}

impl Pinned {
    /// Pin the calling (replay) thread and the readers to the CPU it is on. None when there is
    /// nothing to gain: one CPU allowed, or no reader found.
    pub(super) fn new(stats: &Stats) -> Option<Pinned> {
        let cpu = sys::current_cpu().ok()?;
        let mine = sys::thread_affinity(0).ok()?;
        if mine.count() <= 1 {
            return None;
        }
        let readers = readers();
        if readers.is_empty() {
            return None;
        }
        let target = CpuSet::single(cpu);
        let mut saved = Vec::with_capacity(readers.len() + 1);
        for tid in std::iter::once(sys::gettid()).chain(readers) {
            let Ok(had) = sys::thread_affinity(tid) else {
                continue;
            };
            // A thread kept off this CPU (or on it alone) is left as it is.
            if !had.has(cpu) || had.count() <= 1 {
                continue;
            }
            match sys::set_thread_affinity(tid, &target) {
                Ok(()) => saved.push((tid, had)),
                Err(e) => debug!(tid, "pinning for a burst: {e}"),
            }
        }
        Stats::bump(&stats.burst_pins);
        Some(Pinned { saved })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for (tid, had) in &self.saved {
            // ESRCH: the thread is gone (the session ended).
            if let Err(e) = sys::set_thread_affinity(*tid, had) {
                debug!(tid, "unpinning after a burst: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names() {
        assert!(is_reader(b"fuser-0"));
        assert!(is_reader(b"fuser-12"));
        assert!(!is_reader(b"fuser-bg"));
        assert!(!is_reader(b"fuser-"));
        assert!(!is_reader(b"vfnotify-sync"));
    }
}
