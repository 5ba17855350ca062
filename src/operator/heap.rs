//! Gives the heap's free pages back to the system after a burst of work.
//!
//! glibc's malloc keeps what a burst frees (the first list of 10,000 keys, a mass import, their
//! HTTP bodies) inside its arenas, and gives back only the top of each: after importing 10,000
//! keys, a third of the operator's resident memory was free heap that it would never use again
//! until the next burst. `malloc_trim` hands those pages back. It is checked every few seconds
//! and runs only when the free heap grew by enough since the last trim (trimmed chunks stay on
//! malloc's free lists, so "free" alone would trim again and again), so an idle operator does nothing.

use std::time::Duration;

/// How often the free heap is looked at.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Growth of the free heap below this is left alone: trimming it would not be noticed.
const WORTH_TRIMMING: usize = 4 << 20;

/// Trims the heap every [`PERIOD`] when its free part grew by more than [`WORTH_TRIMMING`]
/// since the last trim. A no-op where the allocator is not glibc's.
pub async fn trim_after_bursts() {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after_last: usize = 0;
    loop {
        tick.tick().await;
        let Some(free) = free_heap() else { return };
        if free < after_last.saturating_add(WORTH_TRIMMING) {
            // Shrunk (reused by new work) or grown by little: remember the lower mark.
            after_last = after_last.min(free);
            continue;
        }
        // It locks every arena and walks its free lists: not on a runtime worker.
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(free_bytes = free, released, "gave the free heap back to the system");
        after_last = free_heap().unwrap_or(free);
    }
}

/// Bytes free inside malloc's arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_heap() -> Option<usize> {
    // SAFETY: reads glibc's allocator statistics under its arena locks; takes no pointer.
    Some(unsafe { libc::mallinfo2() }.fordblks)
}

/// Whether pages were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: adjusts glibc's own allocator state under its arena locks; takes no pointer. 0 keeps
    // no padding at the top of the main heap.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_heap() -> Option<usize> {
    None
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
