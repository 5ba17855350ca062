//! Judge panels at the start of a run: each judge of each panel scorer resolved to a Ready key of
//! its provider in the EvalJob's namespace, and the judge's configuration built from them. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;

use super::keys::resolve;
use crate::crd::{AzureSpec, ByokKey, EvalJob, JudgeStatus, Provider};
use crate::judge::scorers::scorer_names;
use crate::judge::wire::{PanelConfig, PanelJudgeConfig};

/// A panel judge resolved to its key.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedJudge {
    /// What status says (the key broker hands out these keys and no others).
    pub status: JudgeStatus,
    /// The key's Azure resource, for an Azure OpenAI judge.
    pub azure: Option<AzureSpec>,
}

/// Resolves every panel judge of `ej`, in scorer order; the first that has no usable key says why.
/// `default_model` is the operator's model table.
pub fn resolve_judges(
    ej: &EvalJob,
    keys: &[Arc<ByokKey>],
    default_model: impl Fn(Provider, Option<&AzureSpec>) -> String,
) -> Result<Vec<ResolvedJudge>, String> {
    let mut resolved = Vec::new();
    // The names results use (two scorers of one name are told apart as `-2`, ...), as the judge does.
    for (scorer, scorer_name) in ej.spec.scorers.iter().zip(scorer_names(&ej.spec.scorers)) {
        for judge in scorer.judges.iter().flatten() {
            let key = resolve(ej.namespace(), judge.provider, judge.key_ref.as_ref(), keys)
                .map_err(|why| format!("scorer {scorer_name}, judge {}: {why}", judge.provider))?;
            let azure = key.spec.azure.clone();
            let model = judge
                .model
                .clone()
                .or_else(|| key.spec.model.clone())
                .unwrap_or_else(|| default_model(judge.provider, azure.as_ref()));
            let status = JudgeStatus {
                scorer: scorer_name.clone(),
                provider: judge.provider,
                model,
                key_ref: key.name_any(),
                key_prefix: key.status.as_ref().and_then(|s| s.key_prefix.clone()).unwrap_or_default(),
            };
            resolved.push(ResolvedJudge { status, azure });
        }
    }
    Ok(resolved)
}

/// The panels as the judge runs them, by scorer name.
pub fn panels(ej: &EvalJob, judges: &[ResolvedJudge]) -> BTreeMap<String, PanelConfig> {
    ej.spec
        .scorers
        .iter()
        .zip(scorer_names(&ej.spec.scorers))
        .filter(|(s, _)| s.judges.is_some())
        .map(|(scorer, name)| {
            let judges = judges
                .iter()
                .filter(|j| j.status.scorer == name)
                .map(|j| PanelJudgeConfig {
                    provider: j.status.provider,
                    model: j.status.model.clone(),
                    byok_key: j.status.key_ref.clone(),
                    azure: j.azure.clone(),
                })
                .collect();
            (name, PanelConfig { aggregate: scorer.aggregate.unwrap_or_default(), judges })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ByokKeySpec, ByokKeyStatus, KeyPhase, PanelJudge};
    use kube::api::ObjectMeta;

    fn key(name: &str, provider: Provider, default: bool, phase: KeyPhase) -> Arc<ByokKey> {
        let spec: ByokKeySpec =
            serde_json::from_value(serde_json::json!({ "provider": provider, "sealed": "s" })).expect("spec");
        let mut k = ByokKey::new(name, spec);
        k.metadata.namespace = Some("team".into());
        k.status = Some(ByokKeyStatus {
            phase: Some(phase),
            effective_default: default,
            key_prefix: Some(format!("{name}-pre")),
            ..Default::default()
        });
        Arc::new(k)
    }

    fn judge(provider: Provider, key_ref: Option<&str>) -> PanelJudge {
        PanelJudge { provider, key_ref: key_ref.map(str::to_string), model: None }
    }

    fn evaljob(judges: Vec<PanelJudge>) -> EvalJob {
        let spec = serde_json::json!({
            "provider": "openai",
            "scorers": [{ "type": "llm_judge", "name": "panel", "rubric": "r" }, { "type": "contains", "value": "x" }],
            "cases": [{ "output": "o" }],
        });
        let mut ej = EvalJob::new("ej", serde_json::from_value(spec).expect("spec"));
        ej.metadata = ObjectMeta { name: Some("ej".into()), namespace: Some("team".into()), ..Default::default() };
        ej.spec.scorers[0].judges = Some(judges);
        ej
    }

    fn table(p: Provider, _: Option<&AzureSpec>) -> String {
        format!("{p}-default-model")
    }

    #[test]
    fn each_judge_gets_its_providers_default_key_or_the_one_named() {
        let keys = [
            key("oa", Provider::OpenAi, true, KeyPhase::Ready),
            key("an", Provider::Anthropic, true, KeyPhase::Ready),
            key("an-2", Provider::Anthropic, false, KeyPhase::Ready),
        ];
        let ej = evaljob(vec![judge(Provider::OpenAi, None), judge(Provider::Anthropic, Some("an-2"))]);
        let resolved = resolve_judges(&ej, &keys, table).expect("resolved");
        let got: Vec<(&str, &str, &str)> = resolved
            .iter()
            .map(|j| (j.status.key_ref.as_str(), j.status.model.as_str(), j.status.key_prefix.as_str()))
            .collect();
        assert_eq!(got, [("oa", "openai-default-model", "oa-pre"), ("an-2", "anthropic-default-model", "an-2-pre")]);
        let panels = panels(&ej, &resolved);
        assert_eq!(panels.keys().collect::<Vec<_>>(), ["panel"], "only the scorer with judges is a panel");
        assert_eq!(panels["panel"].judges.len(), 2);
    }

    #[test]
    fn a_judge_without_a_usable_key_holds_the_run_and_says_which() {
        let keys = [
            key("oa", Provider::OpenAi, true, KeyPhase::Ready),
            key("an", Provider::Anthropic, true, KeyPhase::Invalid),
            key("go", Provider::Google, false, KeyPhase::Ready),
        ];
        let missing = evaljob(vec![judge(Provider::OpenAi, None), judge(Provider::Anthropic, None)]);
        let why = resolve_judges(&missing, &keys, table).expect_err("no Ready anthropic key");
        assert!(why.starts_with("scorer panel, judge anthropic: "), "{why}");
        // A key of another provider is not taken for this judge's, even when named.
        let wrong = evaljob(vec![judge(Provider::OpenAi, None), judge(Provider::Anthropic, Some("go"))]);
        let why = resolve_judges(&wrong, &keys, table).expect_err("go is a google key");
        assert!(why.contains("go is not a Ready anthropic key"), "{why}");
    }

    #[test]
    fn two_unnamed_panels_keep_apart_under_the_names_results_use() {
        let keys =
            [key("oa", Provider::OpenAi, true, KeyPhase::Ready), key("an", Provider::Anthropic, true, KeyPhase::Ready)];
        let mut ej = evaljob(vec![judge(Provider::OpenAi, None), judge(Provider::Anthropic, None)]);
        ej.spec.scorers[0].name = None;
        let mut second = ej.spec.scorers[0].clone();
        second.judges = Some(vec![judge(Provider::Anthropic, None), judge(Provider::OpenAi, None)]);
        let mut plain = ej.spec.scorers[0].clone();
        plain.judges = None;
        ej.spec.scorers = vec![plain, ej.spec.scorers[0].clone(), second];
        let resolved = resolve_judges(&ej, &keys, table).expect("resolved");
        let panels = panels(&ej, &resolved);
        assert_eq!(
            panels.keys().collect::<Vec<_>>(),
            ["llm_judge-2", "llm_judge-3"],
            "the first llm_judge is no panel"
        );
        let first: Vec<&str> = panels["llm_judge-2"].judges.iter().map(|j| j.byok_key.as_str()).collect();
        assert_eq!(first, ["oa", "an"]);
    }

    #[test]
    fn scorers_without_judges_resolve_nothing() {
        let mut ej = evaljob(vec![]);
        ej.spec.scorers[0].judges = None;
        assert_eq!(resolve_judges(&ej, &[], table), Ok(vec![]));
        assert!(panels(&ej, &[]).is_empty());
    }
}
