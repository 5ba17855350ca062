//! Secrets the operator makes for itself on first start (the KEK keyring, the sealing key, the
//! broker CA): read when present, else generated and created once. Replicas starting together
//! race; the loser reads what the winner stored. An existing Secret is never overwritten: a new
//! keyring or CA over an old one would make every stored key or issued certificate useless.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::labels;

/// What [`load_or_create`] found.
#[derive(Debug)]
pub enum Loaded<T> {
    /// Stored before, by an earlier start or by the replica that won the race.
    Found(T),
    /// Generated and stored now: the created Secret alongside (for an Event on it).
    Created(T, Box<Secret>),
}

impl<T> Loaded<T> {
    pub fn into_inner(self) -> T {
        match self {
            Self::Found(v) | Self::Created(v, _) => v,
        }
    }
}

/// The two calls bootstrapping needs: `Api<Secret>` in the operator, a map in tests.
pub trait SecretStore {
    fn get_opt(&self, name: &str) -> impl Future<Output = Result<Option<Secret>, kube::Error>> + Send;
    fn create(&self, secret: &Secret) -> impl Future<Output = Result<Secret, kube::Error>> + Send;
}

impl SecretStore for Api<Secret> {
    async fn get_opt(&self, name: &str) -> Result<Option<Secret>, kube::Error> {
        Api::get_opt(self, name).await
    }

    async fn create(&self, secret: &Secret) -> Result<Secret, kube::Error> {
        Api::create(self, &PostParams::default(), secret).await
    }
}

/// Reads Secret `name` with `read`, or awaits `generate` (only then: it may refuse, or be
/// costly) and creates what it made. On a conflict another replica created it first: what it
/// stored is read and used, ours dropped.
pub async fn load_or_create<T, E: From<kube::Error>>(
    store: &impl SecretStore,
    name: &str,
    read: impl Fn(&Secret) -> Result<T, E>,
    generate: impl Future<Output = Result<(T, Secret), E>>,
) -> Result<Loaded<T>, E> {
    if let Some(found) = store.get_opt(name).await? {
        return read(&found).map(Loaded::Found);
    }
    let (value, secret) = generate.await?;
    match store.create(&secret).await {
        Ok(created) => Ok(Loaded::Created(value, Box::new(created))),
        Err(e) if lost_race(&e) => match store.get_opt(name).await? {
            Some(winner) => read(&winner).map(Loaded::Found),
            // Created and deleted again meanwhile: say what happened rather than guess.
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// A create refused because the name is taken.
fn lost_race(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Metadata of a bootstrap object of the operator's namespace: labelled as the operator's.
pub fn meta(namespace: &str, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels::component(component)),
        ..Default::default()
    }
}

/// A bootstrap Secret holding `data`.
pub fn secret(meta: ObjectMeta, type_: Option<&str>, data: BTreeMap<String, ByteString>) -> Secret {
    Secret { metadata: meta, type_: type_.map(Into::into), data: Some(data), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A Secret store that can let a "replica" win the race between our read and our create.
    #[derive(Default)]
    struct Fake {
        stored: Mutex<BTreeMap<String, Secret>>,
        rival: Option<Secret>,
        creates: Mutex<u32>,
    }

    impl SecretStore for Fake {
        async fn get_opt(&self, name: &str) -> Result<Option<Secret>, kube::Error> {
            Ok(self.stored.lock().expect("lock").get(name).cloned())
        }

        async fn create(&self, secret: &Secret) -> Result<Secret, kube::Error> {
            *self.creates.lock().expect("lock") += 1;
            let name = secret.metadata.name.clone().expect("name");
            let mut stored = self.stored.lock().expect("lock");
            if let Some(rival) = &self.rival {
                stored.insert(name.clone(), rival.clone());
            }
            if stored.contains_key(&name) {
                return Err(api_error(409));
            }
            stored.insert(name, secret.clone());
            Ok(secret.clone())
        }
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("refused", "Refused").with_code(code).boxed())
    }

    fn holding(value: &str) -> Secret {
        let data = BTreeMap::from([("v".to_string(), ByteString(value.as_bytes().to_vec()))]);
        secret(meta("ops", "boot", "test"), Some("example/type"), data)
    }

    fn read(s: &Secret) -> Result<String, kube::Error> {
        Ok(String::from_utf8_lossy(&s.data.as_ref().expect("data")["v"].0).into_owned())
    }

    async fn generate(value: &str) -> Result<(String, Secret), kube::Error> {
        Ok((value.to_string(), holding(value)))
    }

    #[tokio::test]
    async fn creates_when_absent_and_reads_afterwards() {
        let store = Fake::default();
        let first = load_or_create(&store, "boot", read, generate("one")).await.expect("created");
        assert!(matches!(&first, Loaded::Created(v, s) if v == "one" && s.metadata.name.as_deref() == Some("boot")));
        let again = load_or_create(&store, "boot", read, generate("two")).await.expect("read");
        assert!(matches!(again, Loaded::Found(v) if v == "one"), "never overwritten");
        assert_eq!(*store.creates.lock().expect("lock"), 1, "nothing generated or created the second time");
    }

    #[tokio::test]
    async fn a_replica_that_loses_the_race_uses_the_winners() {
        let store = Fake { rival: Some(holding("winner")), ..Fake::default() };
        let loaded = load_or_create(&store, "boot", read, generate("ours")).await.expect("read");
        assert!(matches!(loaded, Loaded::Found(v) if v == "winner"));
        assert_eq!(read(&store.stored.lock().expect("lock")["boot"]).expect("v"), "winner");
    }

    #[tokio::test]
    async fn a_refusal_to_generate_creates_nothing() {
        let store = Fake::default();
        let refuse = async { Err::<(String, Secret), _>(api_error(403)) };
        assert!(load_or_create(&store, "boot", read, refuse).await.is_err());
        assert!(store.stored.lock().expect("lock").is_empty());
    }

    #[test]
    fn bootstrap_objects_are_labelled_as_the_operators() {
        let s = holding("x");
        let labels = s.metadata.labels.expect("labels");
        assert_eq!(labels[labels::COMPONENT], "test");
        assert_eq!(labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
        assert_eq!((s.metadata.namespace.as_deref(), s.type_.as_deref()), (Some("ops"), Some("example/type")));
        assert!(lost_race(&api_error(409)) && !lost_race(&api_error(403)) && !lost_race(&api_error(500)));
    }
}
