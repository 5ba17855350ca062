//! Loading, creating and following the KEK keyring Secret.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::events::{Event, EventType, Recorder};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc::UnboundedSender;

use crate::bootstrap::{self, Loaded};
use crate::controller::Error;
use crate::crypto::Keyring;

/// Secret type of the keyring, to tell it apart from ordinary Secrets.
pub const KEYRING_SECRET_TYPE: &str = "launchgate.ai/kek-keyring";

pub fn secret_data(ring: &Keyring) -> BTreeMap<String, ByteString> {
    ring.to_secret_data().into_iter().map(|(k, v)| (k, ByteString(v))).collect()
}

pub fn from_secret(secret: &Secret) -> Result<Keyring, crate::crypto::KeyringError> {
    let data: BTreeMap<String, Vec<u8>> = secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    Keyring::from_secret_data(&data)
}

/// The keyring Secret for `ring`. The caller must not log it.
fn keyring_secret(namespace: &str, name: &str, ring: &Keyring) -> Secret {
    bootstrap::secret(bootstrap::meta(namespace, name, "kek-keyring"), Some(KEYRING_SECRET_TYPE), secret_data(ring))
}

/// Reads the keyring Secret, or generates and stores a new keyring when there is none and no
/// encrypted key exists in `scope` (a namespace, or the cluster when None).
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    name: &str,
    scope: Option<&str>,
    recorder: &Recorder,
) -> Result<Keyring, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let generate = async {
        refuse_over_ciphertexts(client, namespace, name, scope).await?;
        let ring = Keyring::generate();
        let secret = keyring_secret(namespace, name, &ring);
        Ok((ring, secret))
    };
    let read = |s: &Secret| from_secret(s).map_err(Error::from);
    match bootstrap::load_or_create(&api, name, read, generate).await? {
        Loaded::Found(ring) => Ok(ring),
        Loaded::Created(ring, created) => {
            announce(recorder, &ring, &created, namespace, name).await;
            Ok(ring)
        }
    }
}

/// Reads the keyring Secret if there is one, never creating it: with an external KMS it only opens
/// keys sealed before the move to the KMS, which are then resealed under it.
pub async fn load_existing(client: &Client, namespace: &str, name: &str) -> Result<Option<Keyring>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await? {
        Some(secret) => Ok(Some(from_secret(&secret)?)),
        None => Ok(None),
    }
}

/// With ciphertexts and no keyring, fails closed: a new keyring would silently make every
/// stored key useless.
async fn refuse_over_ciphertexts(
    client: &Client,
    namespace: &str,
    name: &str,
    scope: Option<&str>,
) -> Result<(), Error> {
    let encrypted: Api<Secret> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = kube::api::ListParams::default().labels(&crate::keystore::selector()).limit(1);
    let Some(found) = encrypted.list_metadata(&lp).await?.items.into_iter().next() else { return Ok(()) };
    let at = format!("{}/{}", found.metadata.namespace.unwrap_or_default(), found.metadata.name.unwrap_or_default());
    Err(Error::KeyringMissing { namespace: namespace.into(), name: name.into(), example: at })
}

/// Says a keyring was generated: a log line with its id only, and an Event asking for a backup.
async fn announce(recorder: &Recorder, ring: &Keyring, created: &Secret, namespace: &str, name: &str) {
    tracing::info!(secret = name, namespace, kek_id = ring.active().id(), "generated a new KEK keyring");
    let note = format!(
        "Generated KEK keyring with active KEK {}. Back this Secret up: without it no ByokKey can be decrypted.",
        ring.active().id()
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "KeyringGenerated".into(),
        note: Some(note),
        action: "GenerateKeyring".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &created.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record the KeyringGenerated event");
    }
}

/// Follows the keyring Secret: on a change (rotation, added or removed KEK) swaps the shared
/// keyring and signals `changed`, so every ByokKey is reconciled (and re-encrypted if needed).
pub async fn follow(
    client: Client,
    namespace: String,
    name: String,
    ring: Arc<RwLock<Keyring>>,
    changed: UnboundedSender<()>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, cfg).default_backoff().applied_objects().boxed();
    while let Some(item) = stream.next().await {
        let secret = match item {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "keyring watch error");
                continue;
            }
        };
        match from_secret(&secret) {
            Ok(new) => {
                let differs = {
                    let Ok(current) = ring.read() else { return };
                    current.active().id() != new.active().id() || !current.ids().eq(new.ids())
                };
                if differs {
                    tracing::info!(active = new.active().id(), keks = new.ids().count(), "keyring changed");
                    if let Ok(mut current) = ring.write() {
                        *current = new;
                    }
                    let _ = changed.send(());
                }
            }
            Err(e) => tracing::error!(error = %e, "keyring Secret is malformed; keeping the keyring in memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyring_secret_reads_back_as_the_keyring() {
        let mut ring = Keyring::generate();
        ring.rotate();
        let secret = keyring_secret("ops", "byok-operator-kek", &ring);
        assert_eq!(secret.type_.as_deref(), Some(KEYRING_SECRET_TYPE));
        assert_eq!(secret.metadata.labels.as_ref().expect("labels")[crate::labels::COMPONENT], "kek-keyring");
        let back = from_secret(&secret).expect("loads");
        assert_eq!((back.active().id(), back.ids().count()), (ring.active().id(), 2));
    }
}
