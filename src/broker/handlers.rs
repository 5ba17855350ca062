//! The broker's endpoints.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use secrecy::ExposeSecret;

use super::authn::{self, PodIdentity};
use super::authz::{self, Grant};
use super::{BrokerState, Refusal, results};
use crate::controller::byokkey::desired::{ENVELOPE_DATA_KEY, encrypted_secret_name};
use crate::controller::byokkey::import::PREFIX_LEN;
use crate::crd::{ByokKey, KeyPhase};
use crate::crypto::{self, Aad, Envelope};
use crate::judge::wire::{self, KeyRequest, KeyResponse, ResultsAck, ResultsReport};

/// Pod completion index annotation the Job controller sets on Indexed Job pods.
const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    value.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()).ok_or(Refusal::MissingToken)
}

fn refuse(st: &BrokerState, endpoint: &'static str, refusal: Refusal, who: Option<&PodIdentity>) -> Response {
    st.count(endpoint, refusal.reason());
    let (ns, pod) = who.map_or(("", ""), |w| (w.namespace.as_str(), w.pod_name.as_str()));
    tracing::warn!(endpoint, reason = refusal.reason(), namespace = ns, pod, "broker refused");
    let body = wire::Refusal { reason: refusal.reason().into(), message: refusal.to_string() };
    (refusal.status(), Json(body)).into_response()
}

async fn verified_grant(
    st: &BrokerState,
    headers: &HeaderMap,
    audience: &str,
    claimed_uid: impl FnOnce() -> Result<String, Refusal>,
    require_active: bool,
) -> Result<(PodIdentity, Grant), (Refusal, Option<PodIdentity>)> {
    let token = bearer(headers).map_err(|r| (r, None))?;
    let id = authn::authenticate(&st.client, token, audience).await.map_err(|r| (r, None))?;
    let fail = |r: Refusal| (r, Some(id.clone()));
    let claimed = claimed_uid().map_err(fail)?;
    let pods: Api<Pod> = Api::namespaced(st.client.clone(), &id.namespace);
    let pod = pods.get_opt(&id.pod_name).await.map_err(|_| fail(Refusal::Unavailable))?;
    let stores = st.stores().map_err(fail)?;
    let grant = authz::authorize(&id, &claimed, pod, &stores.jobs, &stores.evaljobs, require_active).map_err(fail)?;
    Ok((id, grant))
}

/// The ByokKey an EvalJob runs with, if it may still be used.
fn usable_key(st: &BrokerState, grant: &Grant) -> Result<Arc<ByokKey>, Refusal> {
    let ns = grant.evaljob.namespace().unwrap_or_default();
    let name = grant.evaljob.status.as_ref().and_then(|s| s.key_ref.clone()).ok_or(Refusal::KeyNotReady)?;
    let key = st.stores()?.byokkeys.get(&ObjectRef::new(&name).within(&ns)).ok_or(Refusal::KeyRevoked)?;
    if key.spec.revoked || key.meta().deletion_timestamp.is_some() {
        return Err(Refusal::KeyRevoked);
    }
    if key.status.as_ref().and_then(|s| s.phase) != Some(KeyPhase::Ready) {
        return Err(Refusal::KeyNotReady);
    }
    Ok(key)
}

pub async fn key(State(st): State<Arc<BrokerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let claimed = || serde_json::from_slice::<KeyRequest>(&body).map(|r| r.pod_uid).map_err(|_| Refusal::BadRequest);
    let (id, grant) = match verified_grant(&st, &headers, wire::KEY_AUDIENCE, claimed, true).await {
        Ok(v) => v,
        Err((r, who)) => return refuse(&st, "key", r, who.as_ref()),
    };
    let key = match usable_key(&st, &grant) {
        Ok(k) => k,
        Err(r) => return refuse(&st, "key", r, Some(&id)),
    };
    let (ns, name) = (key.namespace().unwrap_or_default(), key.name_any());
    let aad = Aad::new(&ns, &name, key.uid().as_deref().unwrap_or_default(), key.spec.provider.as_str());
    let secret =
        st.stores().ok().and_then(|s| s.encrypted.get(&ObjectRef::new(&encrypted_secret_name(&name)).within(&ns)));
    let text = secret.as_ref().and_then(|s| s.data.as_ref()?.get(ENVELOPE_DATA_KEY).map(|b| b.0.clone()));
    let opened = text
        .and_then(|t| String::from_utf8(t).ok())
        .and_then(|t| Envelope::parse(&t).ok())
        .and_then(|env| st.keyring.read().ok().and_then(|ring| crypto::open(&ring, &aad, &env).ok()));
    let Some(plain) = opened else { return refuse(&st, "key", Refusal::KeyNotReady, Some(&id)) };
    st.count("key", "granted");
    tracing::info!(namespace = %id.namespace, pod = %id.pod_name, evaljob = %grant.evaljob.name_any(), byokkey = %name,
        "key handed to judge pod");
    let prefix: String = plain.expose_secret().chars().take(PREFIX_LEN).collect();
    Json(KeyResponse { key: plain.expose_secret().to_string(), key_prefix: prefix }).into_response()
}

pub async fn results(State(st): State<Arc<BrokerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let report = match serde_json::from_slice::<ResultsReport>(&body) {
        Ok(r) => r,
        Err(_) => return refuse(&st, "results", Refusal::BadRequest, None),
    };
    let claimed = || Ok(report.pod_uid.clone());
    let (id, grant) = match verified_grant(&st, &headers, wire::RESULTS_AUDIENCE, claimed, false).await {
        Ok(v) => v,
        Err((r, who)) => return refuse(&st, "results", r, who.as_ref()),
    };
    let index = grant.pod.annotations().get(COMPLETION_INDEX).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    if index != report.shard || report.results.len() > report.total as usize {
        return refuse(&st, "results", Refusal::ShardMismatch, Some(&id));
    }
    if let Err(e) = results::store(&st.client, &grant.evaljob, &report).await {
        tracing::warn!(error = %e, "could not store results");
        return refuse(&st, "results", Refusal::Unavailable, Some(&id));
    }
    st.count("results", "accepted");
    let key_revoked = matches!(usable_key(&st, &grant), Err(Refusal::KeyRevoked | Refusal::KeyNotReady));
    Json(ResultsAck { key_revoked }).into_response()
}

/// Ready once this replica leads and its caches are there (the Service then routes to it).
pub async fn ready(State(st): State<Arc<BrokerState>>) -> Response {
    if st.stores.get().is_some() {
        "ok".into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not leading").into_response()
    }
}

pub async fn metrics(State(st): State<Arc<BrokerState>>) -> String {
    st.metrics_text()
}
