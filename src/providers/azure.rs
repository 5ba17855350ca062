//! Azure OpenAI: `api-key` header; dated URLs (`/openai/deployments/{d}/...?api-version=`) when the
//! ByokKey names an API version, the v1 API (`/openai/v1/...`, `"model": deployment`) otherwise.
//! Bodies, responses and error envelopes are OpenAI's (see `openai.rs`).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use serde_json::{Value, json};

use super::config::{join, segment};
use super::error::{CallError, Failure, FailureKind};
use super::http::{call, judge_call, judge_with_fallback, secret_header};
use super::openai::{OPTIONAL, Shape, chat_body, classify, is_chat_completion, parse_chat_response};
use super::{
    CheckOutcome, Endpoints, InvalidReason, JudgeError, JudgeRequest, KeyCheck, Usage, Verdict, request_id,
    unexpected_body,
};
use crate::crd::{AzureSpec, Provider};

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

/// The chat-completions request for a deployment, in the key's URL style, carrying `body`.
fn chat_request(http: &reqwest::Client, target: &Target<'_>, body: &Value) -> reqwest::RequestBuilder {
    match target.api_version {
        Some(version) => http
            .post(join(target.endpoint, &format!("openai/deployments/{}/chat/completions", segment(target.deployment))))
            .query(&[("api-version", version)])
            .json(body),
        None => {
            let mut body = body.clone();
            body["model"] = json!(target.deployment);
            http.post(join(target.endpoint, "openai/v1/chat/completions")).json(&body)
        }
    }
}

/// There is no data-plane deployment lookup (removed from api-version 2023-05-15 on), so one
/// chat request with no messages checks key, endpoint and deployment at once, for free: 400 (the
/// empty list) means the deployment exists, 404 `DeploymentNotFound` that it does not, 401/403
/// is the key; any other 404 is a wrong endpoint or API version.
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
    let probe = match authed(chat_request(http, &target, &json!({"messages": []})), check.key) {
        Ok(request) => call(request, timeout, check.key, classify).await,
        Err(e) => Err(e),
    };
    match probe {
        Err(CallError::Http(Failure { kind: FailureKind::BadRequest, status, .. })) => {
            CheckOutcome::Valid { http_status: status, request_id: None, note: None, lifecycle: None }
        }
        // A 2xx to an empty message list is not what Azure does: a gateway in the way, probably.
        // It says the key passed only if it is a completion.
        Ok(reply) if !is_chat_completion(&reply.body) => {
            unexpected_body(reply.status, "an Azure OpenAI chat completion")
        }
        Ok(reply) => CheckOutcome::Valid {
            http_status: reply.status,
            request_id: request_id(&reply.headers, "apim-request-id"),
            note: Some("the deployment answered an empty chat request with success".into()),
            lifecycle: None,
        },
        Err(e) => e.into_check_outcome(target.deployment),
    }
}

pub(super) async fn judge(
    http: &reqwest::Client,
    endpoints: &Endpoints,
    request: &JudgeRequest<'_>,
) -> Result<(Verdict, Usage), JudgeError> {
    let target = target(endpoints, request.azure).map_err(|e| e.into_judge_error(request.model))?;
    let deployment = target.deployment;
    // The deployment's model is unknown: temperature is sent, and dropped if the model refuses it.
    let body = chat_body(None, Shape::for_model(Provider::AzureOpenAi, deployment), request);
    let reply = judge_with_fallback(body, &OPTIONAL, |body| {
        let builder = authed(chat_request(http, &target, body), request.key);
        judge_call(builder, request.timeout, request.key, deployment, classify)
    })
    .await?;
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
