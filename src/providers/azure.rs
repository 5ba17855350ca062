//! Azure OpenAI: `api-key` header; dated URLs (`/openai/deployments/{d}/...?api-version=`) when the
//! ByokKey names an API version, the v1 API (`/openai/v1/...`, `"model": deployment`) otherwise.
//! Bodies, responses and error envelopes are OpenAI's (see `openai.rs`).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::config::{join, segment};
use super::error::CallError;
use super::http::{call, judge_call, secret_header};
use super::openai::{chat_body, classify, model_ids, parse_chat_response};
use super::{
    CheckOutcome, Endpoints, InvalidReason, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, request_id,
    unexpected_body,
};
use crate::crd::AzureSpec;

/// [unconfirmed] API version for the deployment lookup when the key uses the v1 API, which has
/// no deployment endpoint of its own. The latest dated GA version.
pub(super) const DEPLOYMENT_LOOKUP_API_VERSION: &str = "2024-10-21";

/// Where and what to call, resolved from the ByokKey's Azure spec and the endpoint override.
struct Target<'a> {
    endpoint: &'a str,
    deployment: &'a str,
    api_version: Option<&'a str>,
}

fn target<'a>(endpoints: &'a Endpoints, azure: Option<&'a AzureSpec>) -> Result<Target<'a>, CallError> {
    let misconfigured =
        |message: &str| CallError::Misconfigured { reason: InvalidReason::Misconfigured, message: message.into() };
    let azure = azure.ok_or_else(|| misconfigured("azure_openai keys need spec.azure (endpoint and deployment)"))?;
    // The install's gateway is trusted; an endpoint from the ByokKey must be on the allow-list.
    let endpoint = match endpoints.azure.as_deref() {
        Some(gateway) => gateway,
        None => {
            endpoints.check_azure_endpoint(&azure.endpoint).map_err(|e| CallError::Misconfigured {
                reason: InvalidReason::EndpointNotAllowed,
                message: e.to_string(),
            })?;
            &azure.endpoint
        }
    };
    if azure.deployment.trim().is_empty() {
        return Err(misconfigured("spec.azure.deployment is empty"));
    }
    Ok(Target { endpoint, deployment: &azure.deployment, api_version: azure.api_version.as_deref() })
}

fn authed(request: reqwest::RequestBuilder, key: &SecretString) -> Result<reqwest::RequestBuilder, CallError> {
    Ok(request.header("api-key", secret_header(key.expose_secret())?))
}

/// The model list validates the key and endpoint but not the deployment, so the deployment is
/// looked up too: a missing deployment is ModelUnavailable, not a 404 at judge time.
pub(super) async fn check(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    check: &KeyCheck<'_>,
    timeout: Duration,
) -> CheckOutcome {
    let target = match target(endpoints, check.azure) {
        Ok(target) => target,
        Err(e) => return e.into_check_outcome(check.model),
    };
    let deployment = target.deployment;
    let list = match target.api_version {
        Some(version) => http.get(join(target.endpoint, "openai/models")).query(&[("api-version", version)]),
        None => http.get(join(target.endpoint, "openai/v1/models")),
    };
    let reply = match authed(list, check.key) {
        Ok(request) => call(request, timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return e.into_check_outcome(deployment),
    };
    if model_ids(&reply.body).is_none() {
        return unexpected_body(reply.status, "an Azure OpenAI model list");
    }
    let version = target.api_version.unwrap_or(DEPLOYMENT_LOOKUP_API_VERSION);
    let lookup = http
        .get(join(target.endpoint, &format!("openai/deployments/{}", segment(deployment))))
        .query(&[("api-version", version)]);
    let lookup = match authed(lookup, check.key) {
        Ok(request) => call(request, timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    match lookup {
        Ok(found) => CheckOutcome::Valid {
            http_status: found.status,
            request_id: request_id(&found.headers, "apim-request-id")
                .or_else(|| request_id(&found.headers, "x-request-id")),
        },
        Err(e) => e.into_check_outcome(deployment),
    }
}

pub(super) async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    let target = target(endpoints, request.azure).map_err(|e| e.into_judge_error(request.model))?;
    let deployment = target.deployment;
    let builder = match target.api_version {
        Some(version) => http
            .post(join(target.endpoint, &format!("openai/deployments/{}/chat/completions", segment(deployment))))
            .query(&[("api-version", version)])
            .json(&chat_body(None, deployment, request)),
        None => http.post(join(target.endpoint, "openai/v1/chat/completions")).json(&chat_body(
            Some(deployment),
            deployment,
            request,
        )),
    };
    let reply = judge_call(authed(builder, request.key), request.timeout, request.key, deployment, classify).await?;
    parse_chat_response(&reply.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::error::FailureKind;

    #[test]
    fn error_mapping() {
        let denied = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}"#;
        assert_eq!(classify(401, denied).kind, FailureKind::Unauthorized);
        let missing = r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#;
        assert_eq!(classify(404, missing).kind, FailureKind::ModelNotFound);
        let not_found = r#"{"error":{"code":"404","message":"Resource not found"}}"#;
        assert_eq!(classify(404, not_found).kind, FailureKind::Unexpected);
        let limited = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation ... Please retry after 6 seconds."}}"#;
        assert_eq!(classify(429, limited).kind, FailureKind::RateLimited);
    }

    #[test]
    fn target_requires_a_spec_and_prefers_the_override() {
        let endpoints = Endpoints::default();
        assert!(matches!(
            target(&endpoints, None),
            Err(CallError::Misconfigured { reason: InvalidReason::Misconfigured, .. })
        ));
        let spec =
            AzureSpec { endpoint: "https://r.openai.azure.com".into(), deployment: "d".into(), api_version: None };
        assert_eq!(target(&endpoints, Some(&spec)).ok().map(|t| t.endpoint), Some("https://r.openai.azure.com"));
        let gateway = Endpoints { azure: Some("http://gw".into()), ..Endpoints::default() };
        assert_eq!(target(&gateway, Some(&spec)).ok().map(|t| t.endpoint), Some("http://gw"));
        let empty = AzureSpec { deployment: " ".into(), ..spec };
        assert!(target(&endpoints, Some(&empty)).is_err());
    }
}
