//! The judge model's lifecycle, as an EvalJob's ModelDeprecated condition says it.

use crate::crd::conditions::{MODEL_DEPRECATED, condition, lifecycle};
use crate::crd::{ByokKey, Provider};
use crate::providers::models::{self, CHECKED};

/// The ModelDeprecated condition (status, reason, message) for a judge model: what the key's own
/// validation learnt from the provider when it checked this model, else the dated table.
pub fn model_lifecycle(
    provider: Provider,
    model: &str,
    key: Option<&ByokKey>,
    today: jiff::civil::Date,
) -> (&'static str, &'static str, String) {
    let from_key = key.and_then(|k| k.status.as_ref()).filter(|s| s.model.as_deref() == Some(model));
    let said = from_key.and_then(|s| condition(&s.conditions, MODEL_DEPRECATED)).filter(|c| c.status == "True");
    if let Some(c) = said {
        let reason = if c.reason == lifecycle::RETIRED { lifecycle::RETIRED } else { lifecycle::DEPRECATED };
        return ("True", reason, c.message.clone());
    }
    match models::notice(provider, model, today, None) {
        Some(n) if n.retired => ("True", lifecycle::RETIRED, format!("{n}: judge calls will fail")),
        Some(n) => ("True", lifecycle::DEPRECATED, n.to_string()),
        None => (
            "False",
            lifecycle::CURRENT,
            format!("no shutdown known for model {model} (lifecycle table checked {CHECKED})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_model_lifecycle_from_the_key_then_the_table() {
        let today: jiff::civil::Date = "2026-12-02".parse().unwrap();
        let (status, reason, message) = model_lifecycle(Provider::OpenAi, "gpt-4o", None, today);
        assert_eq!((status, reason), ("True", lifecycle::DEPRECATED));
        assert!(message.contains("2027-01-14"), "{message}");
        let (status, reason, message) = model_lifecycle(Provider::Anthropic, "claude-sonnet-4-5", None, today);
        assert_eq!((status, reason), ("True", lifecycle::RETIRED));
        assert!(message.contains("judge calls will fail"), "{message}");
        assert_eq!(model_lifecycle(Provider::OpenAi, "gpt-5.1", None, today).0, "False");
        // The key's validation learnt from the provider: that wins for the model it checked.
        let mut key: ByokKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "launchgate.ai/v1alpha1", "kind": "ByokKey",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": {"provider": "anthropic", "secretRef": {"name": "s", "key": "k"}}
        }))
        .unwrap();
        let mut st = crate::crd::ByokKeyStatus { model: Some("claude-opus-4-1".into()), ..Default::default() };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let said = "model claude-opus-4-1 is deprecated (source: the provider's model list)";
        crate::crd::conditions::set_condition(
            &mut st.conditions,
            MODEL_DEPRECATED,
            "True",
            lifecycle::DEPRECATED,
            said,
            None,
            &now,
        );
        key.status = Some(st);
        let (status, _, message) = model_lifecycle(Provider::Anthropic, "claude-opus-4-1", Some(&key), today);
        assert_eq!((status, message.as_str()), ("True", said));
        assert_eq!(model_lifecycle(Provider::Anthropic, "claude-sonnet-4-6", Some(&key), today).0, "False");
    }
}
