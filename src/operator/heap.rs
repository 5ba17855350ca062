//! Gives the heap's free pages back to the system after a burst of work.
//!
//! glibc's malloc keeps what a burst frees (the first list of 10,000 keys, a mass import, their
//! HTTP bodies) inside its arenas, and gives back only the top of each: after importing 10,000
//! keys, a third of the operator's resident memory was free heap that it would never use again
//! until the next burst. `malloc_trim` hands those pages back. It is checked every few seconds
//! and runs only when enough is free to be worth it, so an idle operator does nothing.

use std::time::Duration;

/// How often the free heap is looked at.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Free heap below this is left alone: trimming it would not be noticed.
const WORTH_TRIMMING: usize = 4 << 20;

/// Trims the heap every [`PERIOD`] while there is more than [`WORTH_TRIMMING`] free. A no-op
/// where the allocator is not glibc's.
pub async fn trim_after_bursts() {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some((free, released)) = trim() {
            tracing::debug!(free_bytes = free, released, "gave the free heap back to the system");
        }
    }
}

/// The free bytes found and whether pages were released, when a trim ran.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> Option<(usize, bool)> {
    // SAFETY: both read or adjust glibc's own allocator state under its arena locks; neither
    // touches memory the program holds.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free < WORTH_TRIMMING {
        return None;
    }
    // SAFETY: as above; 0 keeps no padding at the top of the main heap.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    Some((free, released))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> Option<(usize, bool)> {
    None
}
