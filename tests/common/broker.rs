//! Talking to the operator's key broker as judge pods (and attackers) do.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::TestEnv;
use byok_operator::judge::wire;

/// An HTTPS client that trusts only the broker CA published to the test namespace, as judge pods do.
pub async fn broker_client(env: &TestEnv) -> reqwest::Client {
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let ca = cms.get("byok-broker-ca").await.expect("CA bundle").data.expect("data")["ca.crt"].clone();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .tls_built_in_root_certs(false)
        .build()
        .expect("client")
}

/// The broker's base URL (the address the operator listens on).
pub fn broker_url(env: &TestEnv) -> String {
    format!("https://{}", env.broker_addr())
}

/// Calls the broker's key endpoint like fetch-key does; returns (HTTP status, refusal reason or key).
/// Like fetch-key, it asks again while the broker says `Unavailable` (its caches still syncing).
pub async fn ask_broker(env: &TestEnv, token: &str, pod_uid: &str) -> (u16, String) {
    let (status, body) = ask_broker_body(env, token, pod_uid).await;
    let text = body.get("reason").or_else(|| body.get("key")).and_then(|v| v.as_str()).unwrap_or_default();
    (status, text.to_string())
}

/// The broker's whole answer to a key request (status, JSON body), once it is not Unavailable.
pub async fn ask_broker_body(env: &TestEnv, token: &str, pod_uid: &str) -> (u16, serde_json::Value) {
    let http = broker_client(env).await;
    let url = format!("{}{}", broker_url(env), wire::KEY_PATH);
    let deadline = tokio::time::Instant::now() + super::TIMEOUT;
    loop {
        let resp = http.post(&url).bearer_auth(token).json(&json!({ "podUid": pod_uid })).send().await;
        let resp = resp.expect("broker answers");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("json body");
        let unavailable = body.get("reason").and_then(|v| v.as_str()) == Some("Unavailable");
        if !unavailable || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// GET on the broker with an optional bearer token: (status, body).
pub async fn broker_get_with(env: &TestEnv, path: &str, token: Option<&str>) -> (u16, String) {
    let http = broker_client(env).await;
    let mut req = http.get(format!("{}{path}", broker_url(env)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("broker answers");
    (resp.status().as_u16(), resp.text().await.expect("text"))
}

/// The broker's /metrics, read with a token allowed to (as Prometheus would).
pub async fn metrics(env: &TestEnv) -> String {
    let token = super::metrics_token(env).await;
    let (status, body) = broker_get_with(env, "/metrics", Some(&token)).await;
    assert_eq!(status, 200, "metrics: {body}");
    body
}

/// What the kubelet reports for a pod once its sandbox has an address: the broker hands a key
/// only to requests from that address. Without a node, the tests report it themselves.
pub async fn report_pod_address(env: &TestEnv, pod: &Pod, ip: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let status = json!({ "status": { "phase": "Pending", "podIP": ip, "podIPs": [{ "ip": ip }] } });
    pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status")
}
