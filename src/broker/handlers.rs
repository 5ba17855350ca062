//! The broker's endpoints.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;

use super::authn::{self, PodIdentity};
use super::authz::{self, Grant};
use super::{BrokerState, Refusal, grants, results};
use crate::crd::{ByokKey, EvalJob, KeyPhase};
use crate::judge::wire::{self, KeyRequest, KeyResponse, PanelKey, ResultsAck, ResultsReport};
use crate::keystore;

fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    value.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()).ok_or(Refusal::MissingToken)
}

fn refuse(st: &BrokerState, endpoint: &'static str, refusal: Refusal, who: Option<&PodIdentity>) -> Response {
    st.count(endpoint, refusal.reason());
    let (ns, pod) = who.map_or(("", ""), |w| (w.namespace.as_str(), w.pod_name.as_str()));
    tracing::warn!(endpoint, reason = refusal.reason(), namespace = ns, pod, "broker refused");
    let body = wire::Refusal { reason: refusal.reason().into(), message: refusal.to_string() };
    let mut response = (refusal.status(), Json(body)).into_response();
    if refusal.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        // Retryable: a failover, a cache filling, an address not reported yet.
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    }
    response
}

/// Who is calling: the bearer token, verified by the API server for `audience`.
async fn authenticated(st: &BrokerState, headers: &HeaderMap, audience: &str) -> Result<PodIdentity, Refusal> {
    authn::authenticate(st.tokens.as_ref(), bearer(headers)?, audience).await
}

/// An object from the cache or, where the cache may lag (a new object, a status written a moment
/// ago), from the API server: a terminal answer is never based on a cache miss alone.
async fn live<K>(st: &BrokerState, ns: &str, name: &str) -> Result<Option<Arc<K>>, Refusal>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(st.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(found) => Ok(found.map(Arc::new)),
        Err(e) => {
            tracing::warn!(error = %e, namespace = ns, name, "live read failed");
            Err(Refusal::Unavailable)
        }
    }
}

/// Resolves the pod's Job and EvalJob: from the caches, or live when `fresh` (or missing there).
async fn links(st: &BrokerState, ns: &str, pod: Option<&Pod>, fresh: bool) -> Result<authz::Links, Refusal> {
    let stores = st.stores()?;
    let mut links = authz::Links::default();
    if let Some(owner) = pod.and_then(authz::job_owner) {
        let cached = (!fresh).then(|| stores.jobs.get(&ObjectRef::new(&owner.name).within(ns))).flatten();
        links.job = match cached {
            Some(job) => Some(job),
            None => live::<Job>(st, ns, &owner.name).await?,
        };
    }
    if let Some(owner) = links.job.as_deref().and_then(authz::evaljob_owner) {
        let cached = (!fresh).then(|| stores.evaljobs.get(&ObjectRef::new(&owner.name).within(ns))).flatten();
        links.evaljob = match cached {
            Some(ej) => Some(ej),
            None => live::<EvalJob>(st, ns, &owner.name).await?,
        };
    }
    Ok(links)
}

/// Whether the verified pod `id` (claiming `claimed`) belongs to an EvalJob's current Job. A
/// refusal found in the caches is confirmed with live reads before it is given.
async fn granted(st: &BrokerState, id: &PodIdentity, claimed: &str, require_active: bool) -> Result<Grant, Refusal> {
    let pods: Api<Pod> = Api::namespaced(st.client.clone(), &id.namespace);
    let pod = pods.get_opt(&id.pod_name).await.map_err(|_| Refusal::Unavailable)?;
    let jobs = &st.stores()?.jobs;
    let cached = links(st, &id.namespace, pod.as_ref(), false).await?;
    match authz::authorize(id, claimed, pod.clone(), &cached, jobs, require_active) {
        Err(Refusal::NotOwnedByEvalJob | Refusal::JobFinished) => {
            let fresh = links(st, &id.namespace, pod.as_ref(), true).await?;
            authz::authorize(id, claimed, pod, &fresh, jobs, require_active)
        }
        decided => decided,
    }
}

/// Whether `key` may be used now.
fn key_state(key: &ByokKey) -> Result<(), Refusal> {
    if key.spec.revoked || key.meta().deletion_timestamp.is_some() {
        return Err(Refusal::KeyRevoked);
    }
    if key.status.as_ref().and_then(|s| s.phase) != Some(KeyPhase::Ready) {
        return Err(Refusal::KeyNotReady);
    }
    Ok(())
}

/// The ByokKey an EvalJob runs with, if it may still be used: a key missing from the cache, or
/// not usable there, is read live before the answer is "revoked" or "not ready".
async fn usable_key(st: &BrokerState, grant: &Grant) -> Result<Arc<ByokKey>, Refusal> {
    let name = grant.evaljob.status.as_ref().and_then(|s| s.key_ref.clone()).ok_or(Refusal::KeyNotReady)?;
    usable_key_named(st, grant, &name).await
}

/// The EvalJob's ByokKey `name`, if it may still be used (see [`usable_key`]).
async fn usable_key_named(st: &BrokerState, grant: &Grant, name: &str) -> Result<Arc<ByokKey>, Refusal> {
    let ns = grant.evaljob.namespace().unwrap_or_default();
    if let Some(key) = st.stores()?.byokkeys.get(&ObjectRef::new(name).within(&ns))
        && key_state(&key).is_ok()
    {
        return Ok(key);
    }
    let key = live::<ByokKey>(st, &ns, name).await?.ok_or(Refusal::KeyRevoked)?;
    key_state(&key)?;
    Ok(key)
}

/// The ByokKeys of the EvalJob's panel judges (its status, written by the operator when the run
/// started), each once, in order.
fn panel_key_names(grant: &Grant) -> Vec<(String, crate::crd::Provider)> {
    let mut names: Vec<(String, crate::crd::Provider)> =
        grant.evaljob.status.iter().flat_map(|s| &s.judges).map(|j| (j.key_ref.clone(), j.provider)).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The panel judges' keys: each opened, or why not when that is final (revoked, not Ready, not the
/// judge's provider): that judge errors, the panel's other judges go on. A refusal that asking
/// again may change (the broker's caches, a KEK not yet in this replica's keyring) refuses the
/// whole request before the grant is recorded, so that fetch-key asks again.
async fn panel_keys(st: &BrokerState, grant: &Grant) -> Result<Vec<PanelKey>, Refusal> {
    let mut keys = Vec::new();
    for (name, provider) in panel_key_names(grant) {
        let opened = async {
            let key = usable_key_named(st, grant, &name).await?;
            // status.judges is the operator's; a key of another provider there is refused all the same.
            if key.spec.provider != provider {
                return Err(Refusal::NotOwnedByEvalJob);
            }
            open_key(st, &key).await
        }
        .await;
        keys.push(match opened {
            Ok((plain, _)) => PanelKey {
                key_prefix: keystore::prefix(plain.expose_secret()),
                key: Some(plain.expose_secret().to_string()),
                byok_key: name,
                refused: None,
            },
            Err(refusal @ (Refusal::KeyRevoked | Refusal::KeyNotReady | Refusal::NotOwnedByEvalJob)) => PanelKey {
                byok_key: name,
                key: None,
                key_prefix: String::new(),
                refused: Some(refusal.reason().into()),
            },
            Err(retryable) => return Err(retryable),
        });
    }
    Ok(keys)
}

/// The ByokKey's plaintext, opened from its ciphertext, and the KEK it was sealed under.
async fn open_key(st: &BrokerState, key: &ByokKey) -> Result<(SecretString, String), Refusal> {
    let (ns, secret_name) = (key.namespace().unwrap_or_default(), keystore::encrypted_secret_name(&key.name_any()));
    let ciphertext = match st.stores()?.encrypted.get(&ObjectRef::new(&secret_name).within(&ns)) {
        Some(c) => Some(c),
        None => live::<Secret>(st, &ns, &secret_name).await?.map(|s| Arc::new(Arc::unwrap_or_clone(s).into())),
    };
    let opened = keystore::open_under(ciphertext.as_deref(), key, &st.kek).await.map_err(|e| {
        let refusal = open_refusal(&e);
        // OpenError never holds key material: the envelope's KEK id at most.
        match refusal {
            Refusal::KeyNotReady => tracing::warn!(namespace = %ns, byokkey = %key.name_any(), error = %e,
                reason = refusal.reason(), "the ByokKey has no ciphertext to open"),
            _ => tracing::error!(namespace = %ns, byokkey = %key.name_any(), error = %e,
                reason = refusal.reason(), "cannot open the ByokKey's ciphertext"),
        }
        refusal
    })?;
    let kek = opened.kek_id().to_string();
    Ok((opened.key, kek))
}

/// Each reason a stored key does not open, told apart: only a missing ciphertext is "not ready"
/// (the controller has yet to import it); the others are the broker's own data or keyring at fault.
fn open_refusal(error: &keystore::OpenError) -> Refusal {
    match error {
        keystore::OpenError::Missing => Refusal::KeyNotReady,
        // Written by a newer operator: named, so that it is not taken for a damaged ciphertext.
        keystore::OpenError::BadEnvelope(crate::crypto::EnvelopeError::Version(_)) => {
            Refusal::UnsupportedEnvelopeVersion
        }
        // A ByokKey with no namespace or uid: no ciphertext can be bound to it.
        keystore::OpenError::BadEnvelope(_) | keystore::OpenError::Unbound(_) => Refusal::KeyUnreadable,
        // A KEK added by a rotation reaches every replica's keyring a moment later: retryable.
        keystore::OpenError::UnknownKek(_) => Refusal::UnknownKek,
        keystore::OpenError::Decrypt(_) => Refusal::DecryptFailed,
        // Fail closed: no local fallback; a KMS that does not answer is retried by fetch-key.
        keystore::OpenError::Kms(crate::kms::KmsError::Unavailable(_)) => Refusal::KmsUnavailable,
        keystore::OpenError::Kms(crate::kms::KmsError::Refused(_)) => Refusal::KmsRefused,
    }
}

/// Every check a key request must pass before the key is opened: the pod is the Job controller's
/// copy of the template, still starting, and asking from its own address.
fn key_checks(grant: &Grant, peer: SocketAddr) -> Result<(), Refusal> {
    authz::matches_template(&grant.pod, &grant.job, &grant.evaljob)?;
    authz::starting(&grant.pod)?;
    authz::from_pod_address(&grant.pod, peer.ip())
}

pub async fn key(
    State(st): State<Arc<BrokerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match authenticated(&st, &headers, wire::KEY_AUDIENCE).await {
        Ok(id) => id,
        Err(r) => return refuse(&st, "key", r, None),
    };
    let claimed = match serde_json::from_slice::<KeyRequest>(&body) {
        Ok(r) => r.pod_uid,
        Err(_) => return refuse(&st, "key", Refusal::BadRequest, Some(&id)),
    };
    let grant = match granted(&st, &id, &claimed, true).await {
        Ok(g) => g,
        Err(r) => return refuse(&st, "key", r, Some(&id)),
    };
    let opened = async {
        key_checks(&grant, peer)?;
        let key = usable_key(&st, &grant).await?;
        let (plain, kek) = open_key(&st, &key).await?;
        Ok((key, plain, kek))
    }
    .await;
    let (key, plain, kek) = match opened {
        Ok(v) => v,
        Err(r) => return refuse(&st, "key", r, Some(&id)),
    };
    let panel = match panel_keys(&st, &grant).await {
        Ok(panel) => panel,
        Err(r) => return refuse(&st, "key", r, Some(&id)),
    };
    // The record names every key handed out (never a refused one).
    let handed: Vec<String> = std::iter::once(key.name_any())
        .chain(panel.iter().filter(|p| p.key.is_some()).map(|p| p.byok_key.clone()))
        .collect();
    let audit = grants::Grant::new(&id, &grant, &handed.join(","), &kek, peer.ip());
    match grants::record(&st.client, &st.namespace, &audit).await {
        Ok(()) => {}
        Err(grants::RecordError::AlreadyGranted) => {
            tracing::warn!(security_event = "KeyRequestedTwice", namespace = %id.namespace, pod = %id.pod_name,
                evaljob = %grant.evaljob.name_any(), byokkey = %key.name_any(), peer = %peer.ip(),
                "a second key request for a pod that already had its key: refused");
            grants::warn_evaljob(&st.recorder, &grant.evaljob, &id.pod_name).await;
            return refuse(&st, "key", Refusal::KeyAlreadyGranted, Some(&id));
        }
        Err(grants::RecordError::Api(e)) => {
            tracing::warn!(error = %e, "could not record the key grant");
            return refuse(&st, "key", Refusal::Unavailable, Some(&id));
        }
    }
    st.count("key", "granted");
    tracing::info!(audit = "KeyGranted", namespace = %id.namespace, pod = %id.pod_name, pod_uid = %id.pod_uid,
        job = %grant.job.name_any(), evaljob = %grant.evaljob.name_any(), byokkey = %key.name_any(), kek_id = %kek,
        panel_keys = %handed[1..].join(","),
        requester = %format!("system:serviceaccount:{}:{}", id.namespace, id.service_account), peer = %peer.ip(),
        "key handed to judge pod");
    let prefix = keystore::prefix(plain.expose_secret());
    Json(KeyResponse { key: plain.expose_secret().to_string(), key_prefix: prefix, panel }).into_response()
}

pub async fn results(
    State(st): State<Arc<BrokerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    // A bounded number of reports at once: memory stays flat whatever callers send.
    let Ok(_slot) = st.results_slots.try_acquire() else {
        return refuse(&st, "results", Refusal::Unavailable, None);
    };
    // Authenticated before the body is even read: a caller without a valid token costs nothing.
    let id = match authenticated(&st, request.headers(), wire::RESULTS_AUDIENCE).await {
        Ok(id) => id,
        Err(r) => return refuse(&st, "results", r, None),
    };
    let read = axum::body::to_bytes(request.into_body(), wire::MAX_REPORT_BYTES);
    let body = match tokio::time::timeout(std::time::Duration::from_secs(30), read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return refuse(&st, "results", Refusal::TooLarge, Some(&id)),
        Err(_) => return refuse(&st, "results", Refusal::BadRequest, Some(&id)),
    };
    let report = match serde_json::from_slice::<ResultsReport>(&body) {
        Ok(r) => r,
        Err(_) => return refuse(&st, "results", Refusal::BadRequest, Some(&id)),
    };
    let grant = match granted(&st, &id, &report.pod_uid, false).await {
        Ok(g) => g,
        Err(r) => return refuse(&st, "results", r, Some(&id)),
    };
    // Only the judge pod itself, while it runs, from its own address: a results token minted for
    // it (the `edit` role may) cannot report a passing run from elsewhere.
    let checked = authz::matches_template(&grant.pod, &grant.job, &grant.evaljob)
        .and_then(|()| authz::alive(&grant.pod))
        .and_then(|()| authz::from_pod_address(&grant.pod, peer.ip()));
    if let Err(r) = checked {
        return refuse(&st, "results", r, Some(&id));
    }
    let index = match authz::completion_index(&grant.pod) {
        Ok(index) => index,
        Err(r) => return refuse(&st, "results", r, Some(&id)),
    };
    if index != report.shard || report.results.len() > report.total as usize {
        return refuse(&st, "results", Refusal::ShardMismatch, Some(&id));
    }
    if let Err(e) = results::store(&st.client, &grant.evaljob, &report, &st.results_mac).await {
        tracing::warn!(error = %e, "could not store results");
        // A report that cannot be written as JSON will not be written by asking again.
        let refusal = if e.is_api() { Refusal::Unavailable } else { Refusal::BadRequest };
        return refuse(&st, "results", refusal, Some(&id));
    }
    st.count("results", "accepted");
    // Only a confirmed answer stops the judge; "cannot tell now" (Unavailable) does not.
    let key_revoked = matches!(usable_key(&st, &grant).await, Err(Refusal::KeyRevoked | Refusal::KeyNotReady));
    let mut revoked_panel_keys = Vec::new();
    for (name, _) in panel_key_names(&grant) {
        if matches!(usable_key_named(&st, &grant, &name).await, Err(Refusal::KeyRevoked | Refusal::KeyNotReady)) {
            revoked_panel_keys.push(name);
        }
    }
    Json(ResultsAck { key_revoked, revoked_panel_keys }).into_response()
}

/// Ready once this replica leads and its caches are there (the Service then routes to it).
pub async fn ready(State(st): State<Arc<BrokerState>>) -> Response {
    if st.stores.get().is_some() {
        "ok".into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not leading").into_response()
    }
}

/// Metrics, for a bearer token whose user may `get` the nonResourceURL /metrics (TokenReview +
/// SubjectAccessReview, as controller-runtime's secure metrics), unless the install turned it off.
pub async fn metrics(State(st): State<Arc<BrokerState>>, headers: HeaderMap) -> Response {
    if st.metrics_auth
        && let Err(r) =
            authn::authorize_non_resource(&st.client, bearer(&headers).map_err(|_| Refusal::Unauthorized), "/metrics")
                .await
    {
        return refuse(&st, "metrics", r, None);
    }
    st.metrics_text().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ByokKeySpec, Provider};
    use crate::crypto::Keyring;
    use k8s_openapi::ByteString;

    const PLAIN: &str = "sk-proj-very-secret-0123456789";

    fn key(name: &str, uid: &str) -> ByokKey {
        let mut k = ByokKey::new(name, ByokKeySpec::from_secret(Provider::OpenAi, "s"));
        k.metadata.namespace = Some("ns".into());
        k.metadata.uid = Some(uid.into());
        k
    }

    fn stored(ring: &Keyring, k: &ByokKey) -> Secret {
        let envelope = keystore::seal(ring, k, &PLAIN.to_string().into()).expect("seals");
        keystore::encrypted_secret(k, &envelope, "src/1")
    }

    /// The refusal for opening `secret` as `k` with `ring`.
    fn refusal(secret: Option<&Secret>, k: &ByokKey, ring: &Keyring) -> Refusal {
        let error = keystore::open(secret, k, ring).err().expect("does not open");
        assert!(!error.to_string().contains(PLAIN), "no key material in {error}");
        open_refusal(&error)
    }

    #[test]
    fn each_reason_a_key_does_not_open_is_told_apart() {
        let (ring, k) = (Keyring::generate(), key("a", "uid-a"));
        let secret = stored(&ring, &k);
        assert!(keystore::open(Some(&secret), &k, &ring).is_ok());
        // Not imported yet: the one case that is "not ready".
        assert_eq!(refusal(None, &k, &ring), Refusal::KeyNotReady);
        let mut damaged = secret.clone();
        damaged.data =
            Some([(keystore::ENVELOPE_DATA_KEY.to_string(), ByteString(b"not an envelope".to_vec()))].into());
        assert_eq!(refusal(Some(&damaged), &k, &ring), Refusal::KeyUnreadable);
        // A later envelope format (a newer operator sealed it): named, not "damaged".
        let mut newer = secret.clone();
        let text = String::from_utf8(secret.data.as_ref().expect("data")[keystore::ENVELOPE_DATA_KEY].0.clone())
            .expect("utf8");
        let later = text.replacen(crate::crypto::ENVELOPE_VERSION, "byok3", 1).into_bytes();
        newer.data = Some([(keystore::ENVELOPE_DATA_KEY.to_string(), ByteString(later))].into());
        assert_eq!(refusal(Some(&newer), &k, &ring), Refusal::UnsupportedEnvelopeVersion);
        assert!(Refusal::UnsupportedEnvelopeVersion.to_string().contains("newer byok-operator"));
        assert_eq!(refusal(Some(&secret), &k, &Keyring::generate()), Refusal::UnknownKek);
        // Another key's ciphertext copied over this one's: the AAD does not match.
        assert_eq!(refusal(Some(&stored(&ring, &key("b", "uid-b"))), &k, &ring), Refusal::DecryptFailed);
    }

    #[test]
    fn an_external_kms_out_of_reach_is_a_retryable_refusal_and_one_that_refuses_is_not() {
        use crate::kms::KmsError;
        let away = open_refusal(&keystore::OpenError::Kms(KmsError::Unavailable("connection refused".into())));
        assert_eq!((away, away.status().as_u16()), (Refusal::KmsUnavailable, 503), "fetch-key retries a 503");
        let no = open_refusal(&keystore::OpenError::Kms(KmsError::Refused("permission denied".into())));
        assert_eq!((no, no.status().as_u16()), (Refusal::KmsRefused, 500));
    }

    #[test]
    fn a_fault_of_the_brokers_own_data_is_a_server_error_not_a_refusal_of_the_pod() {
        use axum::http::StatusCode;
        let expect = [
            (Refusal::KeyNotReady, StatusCode::FORBIDDEN),
            (Refusal::KeyUnreadable, StatusCode::INTERNAL_SERVER_ERROR),
            (Refusal::UnsupportedEnvelopeVersion, StatusCode::INTERNAL_SERVER_ERROR),
            (Refusal::DecryptFailed, StatusCode::INTERNAL_SERVER_ERROR),
            // Retryable (Retry-After): a rotation's new KEK reaches this replica a moment later.
            (Refusal::UnknownKek, StatusCode::SERVICE_UNAVAILABLE),
            (Refusal::NoCompletionIndex, StatusCode::FORBIDDEN),
        ];
        for (refusal, status) in expect {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            // The judge fails at once on exactly the 500s, and retries the 503.
            let final_for_judge = wire::FINAL_SERVER_REFUSALS.contains(&refusal.reason());
            assert_eq!(final_for_judge, status == StatusCode::INTERNAL_SERVER_ERROR, "{refusal:?}");
        }
    }
}
