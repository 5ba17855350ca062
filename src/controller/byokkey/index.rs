//! Indexes over the ByokKey cache, kept from its watch events, so that the work of one event or
//! one reconcile does not grow with the number of keys: which keys import a given source Secret,
//! and which keys of a namespace and provider ask to be the default (the only ones the effective
//! default is computed over). Without them, each source Secret event and each reconcile scanned
//! every key in the cache: quadratic in the number of keys.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

use crate::crd::{ByokKey, Provider};

type Refs = HashSet<ObjectRef<ByokKey>>;

/// A key's reference without the resourceVersion and uid `ObjectRef::from_obj` carries (they are
/// not part of its identity, and at 10,000 keys each copy held costs memory).
fn bare(key: &ByokKey) -> ObjectRef<ByokKey> {
    let r = ObjectRef::new(&key.name_any());
    match key.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// What a key is indexed under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    /// (namespace, source Secret name)
    source: Option<(String, String)>,
    /// (namespace, provider), when the key asks to be the default.
    default: Option<(String, Provider)>,
}

impl Entry {
    fn of(key: &ByokKey) -> Self {
        let ns = key.namespace().unwrap_or_default();
        Self {
            source: key.spec.secret_ref.as_ref().map(|r| (ns.clone(), r.name.clone())),
            default: key.spec.default.then_some((ns, key.spec.provider)),
        }
    }
}

#[derive(Default)]
struct Maps {
    of_key: HashMap<ObjectRef<ByokKey>, Entry>,
    /// Almost always one key per source Secret: a list, not a set (a set of one is four slots).
    by_source: HashMap<(String, String), Vec<ObjectRef<ByokKey>>>,
    defaults: HashMap<(String, Provider), Refs>,
}

impl Maps {
    fn insert(&mut self, key: &ByokKey) {
        let r = bare(key);
        let entry = Entry::of(key);
        if self.of_key.get(&r) == Some(&entry) {
            return;
        }
        self.remove(&r);
        if let Some(s) = &entry.source {
            let refs = self.by_source.entry(s.clone()).or_default();
            if !refs.contains(&r) {
                refs.push(r.clone());
            }
        }
        if let Some(d) = &entry.default {
            self.defaults.entry(d.clone()).or_default().insert(r.clone());
        }
        self.of_key.insert(r, entry);
    }

    fn remove(&mut self, r: &ObjectRef<ByokKey>) {
        let Some(entry) = self.of_key.remove(r) else { return };
        if let Some(s) = entry.source
            && let Some(refs) = self.by_source.get_mut(&s)
        {
            refs.retain(|k| k != r);
            if refs.is_empty() {
                self.by_source.remove(&s);
            }
        }
        if let Some(d) = entry.default
            && let Some(set) = self.defaults.get_mut(&d)
        {
            set.remove(r);
            if set.is_empty() {
                self.defaults.remove(&d);
            }
        }
    }
}

/// The indexes, shared between the watch (which writes them) and the reconciles (which read).
#[derive(Clone, Default)]
pub struct KeyIndex {
    maps: Arc<RwLock<Maps>>,
    /// A relist in progress: the keys seen so far replace the maps at InitDone.
    relist: Arc<RwLock<Option<Maps>>>,
}

impl KeyIndex {
    /// Follows one watch event of the ByokKey watcher, as the reflector does for the store.
    pub fn observe(&self, event: &Event<ByokKey>) {
        let (Ok(mut maps), Ok(mut relist)) = (self.maps.write(), self.relist.write()) else { return };
        match event {
            Event::Apply(k) => maps.insert(k),
            Event::Delete(k) => maps.remove(&bare(k)),
            Event::Init => *relist = Some(Maps::default()),
            Event::InitApply(k) => relist.get_or_insert_with(Maps::default).insert(k),
            Event::InitDone => *maps = relist.take().unwrap_or_default(),
        }
    }

    /// The keys of `store` that import Secret `name` of namespace `ns`.
    pub fn importing(&self, ns: &str, name: &str) -> Vec<ObjectRef<ByokKey>> {
        let Ok(maps) = self.maps.read() else { return Vec::new() };
        maps.by_source.get(&(ns.to_string(), name.to_string())).map_or_else(Vec::new, Clone::clone)
    }

    /// The keys of namespace `ns` and `provider` that ask to be the default, from `store`.
    pub fn defaults(&self, store: &Store<ByokKey>, ns: &str, provider: Provider) -> Vec<Arc<ByokKey>> {
        let Ok(maps) = self.maps.read() else { return Vec::new() };
        let refs = maps.defaults.get(&(ns.to_string(), provider));
        refs.into_iter().flatten().filter_map(|r| store.get(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ByokKeySpec;

    fn key(name: &str, source: &str, default: bool) -> ByokKey {
        let mut k = ByokKey::new(name, ByokKeySpec { default, ..ByokKeySpec::from_secret(Provider::OpenAi, source) });
        k.metadata.namespace = Some("team".into());
        k
    }

    fn names(refs: Vec<ObjectRef<ByokKey>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn keys_are_found_by_their_source_and_move_with_it() {
        let index = KeyIndex::default();
        index.observe(&Event::Apply(key("a", "s1", false)));
        index.observe(&Event::Apply(key("b", "s1", false)));
        assert_eq!(names(index.importing("team", "s1")), ["a", "b"]);
        index.observe(&Event::Apply(key("b", "s2", false)));
        assert_eq!(names(index.importing("team", "s1")), ["a"]);
        assert_eq!(names(index.importing("team", "s2")), ["b"]);
        index.observe(&Event::Delete(key("a", "s1", false)));
        assert!(index.importing("team", "s1").is_empty());
        assert!(index.importing("other", "s2").is_empty());
    }

    #[test]
    fn only_keys_asking_to_be_default_are_candidates() {
        let index = KeyIndex::default();
        index.observe(&Event::Apply(key("a", "s", true)));
        index.observe(&Event::Apply(key("b", "s", false)));
        let maps = index.maps.read().expect("lock");
        let candidates = maps.defaults.get(&("team".to_string(), Provider::OpenAi)).expect("defaults");
        assert_eq!(candidates.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(!maps.defaults.contains_key(&("team".to_string(), Provider::Anthropic)));
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let index = KeyIndex::default();
        index.observe(&Event::Apply(key("gone", "s1", true)));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(key("kept", "s2", false)));
        // Until the relist is done, the old picture stays in use.
        assert_eq!(names(index.importing("team", "s1")), ["gone"]);
        index.observe(&Event::InitDone);
        assert!(index.importing("team", "s1").is_empty());
        assert_eq!(names(index.importing("team", "s2")), ["kept"]);
        assert!(index.maps.read().expect("lock").defaults.is_empty());
    }
}
