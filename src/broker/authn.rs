//! Who is calling: the projected service-account token, checked by the API server (TokenReview)
//! for our audience, gives the caller's pod name and uid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Deserialize;

use super::Refusal;

/// The pod a verified token was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Audience,
    #[serde(default)]
    exp: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

/// Reads the (unverified) claims only to give a precise refusal reason before asking the API
/// server; nothing is trusted from them.
pub fn precheck(token: &str, audience: &str, now_unix: i64) -> Result<(), Refusal> {
    let payload = token.split('.').nth(1).ok_or(Refusal::InvalidToken)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|_| Refusal::InvalidToken)?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| Refusal::InvalidToken)?;
    let has_aud = match &claims.aud {
        Audience::One(a) => a == audience,
        Audience::Many(v) => v.iter().any(|a| a == audience),
        Audience::None => false,
    };
    if !has_aud {
        return Err(Refusal::WrongAudience);
    }
    if claims.exp.is_some_and(|exp| exp <= now_unix) {
        return Err(Refusal::TokenExpired);
    }
    Ok(())
}

/// The API server's TokenReview, behind a trait: the broker's handlers authenticate through the
/// one their state holds (the API server, through the client), so they are tested without one
/// (tests/fast_evaljob.rs).
pub trait TokenReviewer: Send + Sync {
    /// The API server's answer to a review of `token` for `audience`: its status, if it gave one.
    fn review(&self, token: String, audience: String) -> BoxFuture<'_, Result<Option<TokenReviewStatus>, kube::Error>>;
}

impl TokenReviewer for Client {
    fn review(&self, token: String, audience: String) -> BoxFuture<'_, Result<Option<TokenReviewStatus>, kube::Error>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec { token: Some(token), audiences: Some(vec![audience]) },
                ..Default::default()
            };
            Ok(Api::<TokenReview>::all(self.clone()).create(&PostParams::default(), &review).await?.status)
        })
    }
}

/// Verifies `token` for `audience` with the API server and returns the pod it is bound to.
pub async fn authenticate(reviewer: &dyn TokenReviewer, token: &str, audience: &str) -> Result<PodIdentity, Refusal> {
    precheck(token, audience, jiff::Timestamp::now().as_second())?;
    let answer = reviewer.review(token.to_string(), audience.to_string()).await.map_err(|e| {
        tracing::warn!(error = %e, "TokenReview failed");
        Refusal::Unavailable
    })?;
    let status = answer.ok_or(Refusal::InvalidToken)?;
    if status.authenticated != Some(true) {
        return Err(Refusal::InvalidToken);
    }
    if !status.audiences.unwrap_or_default().iter().any(|a| a == audience) {
        return Err(Refusal::WrongAudience);
    }
    let user = status.user.ok_or(Refusal::InvalidToken)?;
    identity(user.username.as_deref().unwrap_or_default(), user.extra.as_ref())
}

/// Whether the bearer token's user may `get` the non-resource `path` (TokenReview with the API
/// server's own audiences, then a SubjectAccessReview): how /metrics is protected.
pub async fn authorize_non_resource(client: &Client, token: Result<&str, Refusal>, path: &str) -> Result<(), Refusal> {
    use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token?.to_string()), audiences: None },
        ..Default::default()
    };
    let answer =
        Api::<TokenReview>::all(client.clone()).create(&PostParams::default(), &review).await.map_err(|e| {
            tracing::warn!(error = %e, "TokenReview failed");
            Refusal::Unavailable
        })?;
    let status = answer.status.filter(|s| s.authenticated == Some(true)).ok_or(Refusal::Unauthorized)?;
    let user = status.user.ok_or(Refusal::Unauthorized)?;
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes { path: Some(path.into()), verb: Some("get".into()) }),
            ..Default::default()
        },
        ..Default::default()
    };
    let decided =
        Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &sar).await.map_err(|e| {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            Refusal::Unavailable
        })?;
    if decided.status.is_some_and(|s| s.allowed) { Ok(()) } else { Err(Refusal::Forbidden) }
}

/// The identity in a verified TokenReview user: a service account, with the pod it is bound to.
pub fn identity(
    username: &str,
    extra: Option<&std::collections::BTreeMap<String, Vec<String>>>,
) -> Result<PodIdentity, Refusal> {
    let mut parts = username.strip_prefix("system:serviceaccount:").ok_or(Refusal::NotAPodToken)?.splitn(2, ':');
    let (Some(namespace), Some(sa)) = (parts.next(), parts.next()) else { return Err(Refusal::NotAPodToken) };
    let first = |k: &str| extra.and_then(|e| e.get(k)).and_then(|v| v.first()).cloned();
    let (Some(pod_name), Some(pod_uid)) =
        (first("authentication.kubernetes.io/pod-name"), first("authentication.kubernetes.io/pod-uid"))
    else {
        return Err(Refusal::NotAPodToken);
    };
    Ok(PodIdentity { namespace: namespace.into(), service_account: sa.into(), pod_name, pod_uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[test]
    fn precheck_names_the_problem() {
        let aud = "byok-broker.launchgate.ai";
        assert_eq!(precheck(&token(serde_json::json!({"aud": [aud], "exp": 200})), aud, 100), Ok(()));
        assert_eq!(precheck(&token(serde_json::json!({"aud": aud, "exp": 200})), aud, 100), Ok(()));
        assert_eq!(
            precheck(&token(serde_json::json!({"aud": ["https://kubernetes.default.svc"], "exp": 200})), aud, 100),
            Err(Refusal::WrongAudience)
        );
        assert_eq!(
            precheck(&token(serde_json::json!({"aud": [aud], "exp": 50})), aud, 100),
            Err(Refusal::TokenExpired)
        );
        assert_eq!(precheck("garbage", aud, 100), Err(Refusal::InvalidToken));
        assert_eq!(precheck("a.!!!.c", aud, 100), Err(Refusal::InvalidToken));
    }

    #[test]
    fn identity_needs_a_pod_bound_service_account() {
        let extra = std::collections::BTreeMap::from([
            ("authentication.kubernetes.io/pod-name".to_string(), vec!["p".to_string()]),
            ("authentication.kubernetes.io/pod-uid".to_string(), vec!["u".to_string()]),
        ]);
        let id = identity("system:serviceaccount:ns:default", Some(&extra)).expect("identity");
        assert_eq!((id.namespace.as_str(), id.pod_name.as_str(), id.pod_uid.as_str()), ("ns", "p", "u"));
        assert_eq!(identity("system:serviceaccount:ns:default", None), Err(Refusal::NotAPodToken));
        assert_eq!(identity("admin", Some(&extra)), Err(Refusal::NotAPodToken));
    }
}
