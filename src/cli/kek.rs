//! `kek status|rotate|remove`: operating the KEK keyring from the command line.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::controller::Error;
use crate::crd::ByokKey;
use crate::keystore;
use crate::operator::{kek_state, keyring};

/// How many ByokKeys and ciphertexts use each KEK of the keyring.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KekUsage {
    pub active: String,
    /// KEK id -> (ByokKeys whose status names it, encrypted Secrets sealed under it).
    pub usage: BTreeMap<String, (usize, usize)>,
}

impl KekUsage {
    /// KEKs no ByokKey and no ciphertext uses, other than the active one: safe to remove.
    pub fn unused(&self) -> Vec<&str> {
        self.usage
            .iter()
            .filter(|(id, (k, s))| *k == 0 && *s == 0 && **id != self.active)
            .map(|(id, _)| id.as_str())
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out =
            format!("{:<28} {:<7} {:>9} {:>12}  {}\n", "KEK", "ACTIVE", "BYOKKEYS", "CIPHERTEXTS", "REMOVABLE");
        for (id, (keys, secrets)) in &self.usage {
            let active = if *id == self.active { "yes" } else { "" };
            let removable = if *id != self.active && *keys == 0 && *secrets == 0 { "yes" } else { "no" };
            out.push_str(&format!("{id:<28} {active:<7} {keys:>9} {secrets:>12}  {removable}\n"));
        }
        out
    }
}

async fn load(client: &Client, ns: &str, name: &str) -> Result<(Api<Secret>, Secret), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get(name).await?;
    Ok((api, secret))
}

/// Reads the keyring (and, with an external KMS, the KEK state the operator publishes) and counts
/// the users of each KEK or remote key version across the cluster.
pub async fn status(client: &Client, ns: &str, name: &str) -> Result<KekUsage, Error> {
    let remote = kek_state::read(client, ns).await?.filter(|s| s.source != "keyring");
    let ring = match &remote {
        // With a KMS the keyring Secret is optional: it only opens keys sealed before the move.
        Some(_) => Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await?,
        None => Some(load(client, ns, name).await?.1),
    };
    let ring = ring.as_ref().map(keyring::from_secret).transpose()?;
    let mut usage: BTreeMap<String, (usize, usize)> =
        ring.iter().flat_map(|r| r.ids()).map(|id| (id.to_string(), (0, 0))).collect();
    let active = match (&remote, &ring) {
        (Some(state), _) => state.active.clone(),
        (None, Some(r)) => r.active().id().to_string(),
        (None, None) => String::new(),
    };
    if !active.is_empty() {
        usage.entry(active.clone()).or_default();
    }
    for key in Api::<ByokKey>::all(client.clone()).list(&ListParams::default()).await? {
        if let Some(id) = key.status.and_then(|s| s.kek_id) {
            usage.entry(id).or_default().0 += 1;
        }
    }
    // Counted from the envelopes themselves: an annotation can be edited, the ciphertext cannot lie.
    let lp = ListParams::default().labels(&keystore::selector());
    for s in Api::<Secret>::all(client.clone()).list(&lp).await? {
        usage.entry(keystore::envelope_kek(&s)).or_default().1 += 1;
    }
    Ok(KekUsage { active, usage })
}

/// Adds a new KEK and makes it active. The operator re-encrypts every key under it.
pub async fn rotate(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    if let Some(state) = kek_state::read(client, ns).await?.filter(|s| s.source != "keyring") {
        return Err(Error::Internal(format!(
            "keys are sealed under the external KMS ({}): rotate its key there (Vault: `vault write -f \
             transit/keys/<key>/rotate`); the operator sees the new version and reseals every key under it",
            state.source
        )));
    }
    let (api, mut secret) = load(client, ns, name).await?;
    let mut ring = keyring::from_secret(&secret)?;
    let id = ring.rotate();
    secret.data = Some(keyring::secret_data(&ring));
    // Replace carries the resourceVersion read above: a concurrent change makes this fail, not lose a KEK.
    api.replace(name, &PostParams::default(), &secret).await?;
    Ok(id)
}

/// Removes a KEK that nothing uses any more.
pub async fn remove(client: &Client, ns: &str, name: &str, id: &str) -> Result<(), Error> {
    let usage = status(client, ns, name).await?;
    if !usage.unused().contains(&id) {
        return Err(Error::Internal(format!(
            "KEK {id} is active, unknown, or still used (see `kek status`); rotate and wait for re-encryption first"
        )));
    }
    let (api, mut secret) = load(client, ns, name).await?;
    let mut ring = keyring::from_secret(&secret)?;
    ring.remove(id);
    secret.data = Some(keyring::secret_data(&ring));
    api.replace(name, &PostParams::default(), &secret).await?;
    Ok(())
}
