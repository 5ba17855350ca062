//! The status a controller last wrote, per object, until the watch cache catches up with it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Versions remembered as older than our last write: enough for a cache several writes behind.
const KEEP_OLDER: usize = 8;

/// Remembers, per object uid, the status last written and the resourceVersion our write returned,
/// with the versions that write replaced. A reconcile whose cached object still shows one of those
/// (the watch has not delivered our own write yet) uses the remembered status, so no work is done
/// twice.
///
/// resourceVersions are opaque: they are only ever compared for equality, never ordered. A cached
/// version the memo does not know (another writer's, or one after ours) means the cache moved on,
/// and the cache is trusted.
pub struct StatusMemo<S> {
    written: Mutex<HashMap<String, Written<S>>>,
}

struct Written<S> {
    /// What our write returned.
    produced: String,
    /// Versions known to precede `produced`: what it replaced, and what earlier writes replaced.
    older: Vec<String>,
    status: S,
}

/// Where the cache stands against our last write.
#[derive(Debug, PartialEq, Eq)]
enum Cache {
    /// It shows a version our write replaced: our status is newer than its.
    Behind,
    /// It shows our write.
    CaughtUp,
    /// It shows a version we do not know: someone wrote after us, or around us.
    MovedOn,
}

impl<S> Written<S> {
    fn compare(&self, seen: Option<&str>) -> Cache {
        match seen {
            Some(rv) if self.older.iter().any(|o| o == rv) => Cache::Behind,
            Some(rv) if rv == self.produced => Cache::CaughtUp,
            _ => Cache::MovedOn,
        }
    }
}

impl<S: Clone> Default for StatusMemo<S> {
    fn default() -> Self {
        Self { written: Mutex::new(HashMap::new()) }
    }
}

impl<S: Clone> StatusMemo<S> {
    /// The status to reconcile from: ours while the cache is behind our write, otherwise the
    /// cache's (and the memo is dropped).
    pub fn current(&self, uid: &str, resource_version: Option<&str>, cached: S) -> S {
        let Ok(mut written) = self.written.lock() else { return cached };
        match written.get(uid).map(|w| (w.compare(resource_version), w)) {
            Some((Cache::Behind, w)) => w.status.clone(),
            Some(_) => {
                written.remove(uid);
                cached
            }
            None => cached,
        }
    }

    /// Records the status we wrote: `replaced` are the versions of the object it was computed
    /// from (all older than the write), `produced` the version the write returned. A memo still
    /// held here was in use, so its versions are older too.
    pub fn record<V: Into<String>>(
        &self,
        uid: String,
        replaced: impl IntoIterator<Item = V>,
        produced: Option<&str>,
        status: S,
    ) {
        let Ok(mut written) = self.written.lock() else { return };
        let earlier = written.remove(&uid);
        let Some(produced) = produced else { return };
        let mut older: Vec<String> = earlier.map(|w| [w.older, vec![w.produced]].concat()).unwrap_or_default();
        older.extend(replaced.into_iter().map(Into::into));
        older.retain(|rv| rv != produced);
        older.dedup();
        older.drain(..older.len().saturating_sub(KEEP_OLDER));
        written.insert(uid, Written { produced: produced.to_string(), older, status });
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
    fn remembered_status_wins_only_while_the_cache_shows_what_our_write_replaced() {
        let memo = StatusMemo::default();
        memo.record("u".into(), ["a7"], Some("b2"), "written");
        assert_eq!(memo.current("u", Some("a7"), "stale"), "written");
        assert_eq!(memo.current("u", Some("a7"), "stale"), "written", "kept while the cache lags");
        assert_eq!(memo.current("u", Some("b2"), "fresh"), "fresh");
        // Once the cache caught up, the memo is gone.
        assert_eq!(memo.current("u", Some("a7"), "cached"), "cached");
    }

    #[test]
    fn versions_are_never_ordered() {
        // Numerically smaller or larger, an unknown version is someone else's: the cache is trusted.
        for unknown in ["5", "99", "zz", ""] {
            let memo = StatusMemo::default();
            memo.record("u".into(), ["10"], Some("20"), "written");
            assert_eq!(memo.current("u", Some(unknown), "cached"), "cached", "{unknown:?}");
            assert_eq!(memo.current("u", Some("10"), "stale"), "stale", "the memo was dropped");
        }
        let memo = StatusMemo::default();
        memo.record("u".into(), ["10"], Some("20"), "written");
        assert_eq!(memo.current("u", None, "cached"), "cached");
    }

    #[test]
    fn writes_made_while_the_cache_lags_chain() {
        let memo = StatusMemo::default();
        memo.record("u".into(), ["v1"], Some("v2"), "first");
        // The next reconcile still sees v1, works from "first" and writes again.
        assert_eq!(memo.current("u", Some("v1"), "stale"), "first");
        memo.record("u".into(), ["v1"], Some("v3"), "second");
        for behind in ["v1", "v2"] {
            assert_eq!(memo.current("u", Some(behind), "stale"), "second", "{behind}");
        }
        assert_eq!(memo.current("u", Some("v3"), "fresh"), "fresh");
    }

    #[test]
    fn every_replaced_version_counts_and_only_a_few_are_kept() {
        let memo = StatusMemo::default();
        // A metadata patch (v2) before the status write: the cache may still show v1.
        memo.record("u".into(), ["v2", "v1"], Some("v3"), "written");
        assert_eq!(memo.current("u", Some("v1"), "stale"), "written");
        assert_eq!(memo.current("u", Some("v2"), "stale"), "written");
        let replaced: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        memo.record("w".into(), replaced, Some("r20"), "written");
        assert_eq!(memo.current("w", Some("r19"), "stale"), "written");
        assert_eq!(memo.current("w", Some("r0"), "cached"), "cached", "too old to be remembered");
    }

    #[test]
    fn a_write_without_a_version_or_a_forget_leaves_nothing() {
        let memo = StatusMemo::default();
        memo.record("u".into(), ["v1"], Some("v2"), "first");
        memo.record("u".into(), ["v2"], None, "second");
        assert_eq!(memo.current("u", Some("v1"), "cached"), "cached");
        memo.record("u".into(), ["v1"], Some("v2"), "first");
        memo.forget("u");
        assert_eq!(memo.current("u", Some("v1"), "cached"), "cached");
    }
}
