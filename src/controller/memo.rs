//! The status a controller last wrote, per object, until the watch cache catches up with it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Remembers, per object uid, the status last written and the resourceVersion that write was
/// based on. A reconcile that still sees that version in the cache (the watch has not delivered
/// our own write yet) uses the remembered status, so no work is done twice.
pub struct StatusMemo<S> {
    written: Mutex<HashMap<String, (String, S)>>,
}

impl<S: Clone> Default for StatusMemo<S> {
    fn default() -> Self {
        Self { written: Mutex::new(HashMap::new()) }
    }
}

impl<S: Clone> StatusMemo<S> {
    /// The status to reconcile from: ours if the cache is behind, otherwise the cache's.
    pub fn current(&self, uid: &str, resource_version: Option<&str>, cached: S) -> S {
        let Ok(mut written) = self.written.lock() else { return cached };
        match written.get(uid) {
            Some((based_on, status)) if resource_version == Some(based_on.as_str()) => status.clone(),
            Some(_) => {
                written.remove(uid);
                cached
            }
            None => cached,
        }
    }

    pub fn record(&self, uid: String, based_on: String, status: S) {
        if let Ok(mut written) = self.written.lock() {
            written.insert(uid, (based_on, status));
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
        memo.record("u".into(), "5".into(), "written");
        assert_eq!(memo.current("u", Some("5"), "stale"), "written");
        assert_eq!(memo.current("u", Some("6"), "fresh"), "fresh");
        // Once the cache moved on, the memo is gone.
        assert_eq!(memo.current("u", Some("5"), "stale"), "stale");
    }
}
