//! Small helpers every subsystem uses, defined once.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Lock `m`, ignoring poisoning: a thread that panicked holding the lock leaves the data as it
/// was, and every user here keeps its data consistent between statements.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wait on `cv` with `guard` until `done` holds of the guarded data or `until` passes (poisoning
/// ignored, as in [`lock`]); the guard, and whether `done` held.
pub fn wait_until<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    until: Instant,
    mut done: impl FnMut(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while !done(&guard) {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return (guard, false);
        };
        guard = cv
            .wait_timeout(guard, left)
            .map_or_else(|e| e.into_inner().0, |(g, _)| g);
    }
    (guard, true)
}

/// Seconds since the epoch (0 for a clock set before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
