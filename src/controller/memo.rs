//! The status a controller last wrote, per object, until the watch cache catches up with it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Remembers, per object uid, the status last written and the resourceVersion our write produced.
/// A reconcile whose cached object is older than that (the watch has not delivered our own write
/// yet) uses the remembered status, so no work is done twice.
///
/// resourceVersions are opaque to clients in general; every API server backed by etcd uses its
/// revision, an increasing integer. When either is not an integer the cache is trusted.
pub struct StatusMemo<S> {
    written: Mutex<HashMap<String, (u64, S)>>,
}

impl<S: Clone> Default for StatusMemo<S> {
    fn default() -> Self {
        Self { written: Mutex::new(HashMap::new()) }
    }
}

impl<S: Clone> StatusMemo<S> {
    /// The status to reconcile from: ours if the cache is behind our write, otherwise the cache's.
    pub fn current(&self, uid: &str, resource_version: Option<&str>, cached: S) -> S {
        let Ok(mut written) = self.written.lock() else { return cached };
        let seen = resource_version.and_then(|rv| rv.parse::<u64>().ok());
        match (written.get(uid), seen) {
            (Some((ours, status)), Some(seen)) if seen < *ours => status.clone(),
            (Some(_), _) => {
                written.remove(uid);
                cached
            }
            (None, _) => cached,
        }
    }

    /// Records the status we wrote and the resourceVersion the write produced.
    pub fn record(&self, uid: String, produced: Option<&str>, status: S) {
        let Some(produced) = produced.and_then(|rv| rv.parse::<u64>().ok()) else { return };
        if let Ok(mut written) = self.written.lock() {
            written.insert(uid, (produced, status));
        }
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_status_wins_only_while_the_cache_is_behind() {
        let memo = StatusMemo::default();
        memo.record("u".into(), Some("7"), "written");
        assert_eq!(memo.current("u", Some("5"), "stale"), "written");
        assert_eq!(memo.current("u", Some("6"), "stale"), "written");
        assert_eq!(memo.current("u", Some("7"), "fresh"), "fresh");
        // Once the cache caught up, the memo is gone.
        assert_eq!(memo.current("u", Some("5"), "cached"), "cached");
        memo.record("v".into(), Some("not-a-number"), "written");
        assert_eq!(memo.current("v", Some("1"), "cached"), "cached");
    }
}
