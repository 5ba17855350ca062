//! Unwrapped data encryption keys, kept in memory with a bound and a TTL (KMS v2's DEK cache):
//! keyed by a digest of the remote key id and the wrapped DEK, so a damaged envelope never finds
//! another envelope's DEK.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::{Kek, WrappedDek};

pub struct DekCache {
    entries: HashMap<[u8; 32], (Arc<Kek>, Instant)>,
    max: usize,
    ttl: Duration,
}

fn digest(key_id: &str, wrapped: &WrappedDek) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(key_id.len() as u64).to_be_bytes());
    ctx.update(key_id.as_bytes());
    ctx.update(&wrapped.ciphertext);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl DekCache {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self { entries: HashMap::new(), max: max.max(1), ttl }
    }

    /// The DEK, if cached and younger than the TTL (an expired one is dropped).
    pub fn get(&mut self, key_id: &str, wrapped: &WrappedDek) -> Option<Arc<Kek>> {
        let d = digest(key_id, wrapped);
        match self.entries.get(&d) {
            Some((dek, at)) if at.elapsed() < self.ttl => Some(dek.clone()),
            Some(_) => {
                self.entries.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Caches a DEK; when full, first drops the expired ones, then the oldest.
    pub fn insert(&mut self, key_id: &str, wrapped: &WrappedDek, dek: Arc<Kek>) {
        if self.entries.len() >= self.max {
            let ttl = self.ttl;
            self.entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        if self.entries.len() >= self.max
            && let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, at))| *at).map(|(d, _)| *d)
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(digest(key_id, wrapped), (dek, Instant::now()));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(n: u8) -> WrappedDek {
        WrappedDek { ciphertext: vec![n; 8], annotations: Default::default() }
    }

    fn dek(id: &str) -> Arc<Kek> {
        Arc::new(Kek::from_dek(id.into(), Kek::fresh_dek().as_slice()).expect("32 bytes"))
    }

    #[test]
    fn bounded_and_keyed_by_key_id_and_wrapped_dek() {
        let mut cache = DekCache::new(2, Duration::from_secs(60));
        cache.insert("k1", &wrapped(1), dek("k1"));
        assert!(cache.get("k1", &wrapped(1)).is_some());
        assert!(cache.get("k2", &wrapped(1)).is_none(), "another key id");
        assert!(cache.get("k1", &wrapped(2)).is_none(), "another wrapped DEK");
        cache.insert("k1", &wrapped(2), dek("k1"));
        cache.insert("k1", &wrapped(3), dek("k1"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("k1", &wrapped(1)).is_none(), "the oldest went first");
    }

    #[test]
    fn expired_entries_are_not_served() {
        let mut cache = DekCache::new(4, Duration::ZERO);
        cache.insert("k1", &wrapped(1), dek("k1"));
        assert!(cache.get("k1", &wrapped(1)).is_none());
        assert_eq!(cache.len(), 0);
    }
}
