//! `eval run -f cases.jsonl --provider P --scorer ...`: the cases into a ConfigMap, an EvalJob
//! reading them (casesFrom), optionally watched to the end.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use std::time::Duration;

use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use super::args::{CriteriaArgs, EvalRunArgs};
use super::ctx::Ctx;
use super::error::{Error, api_code};
use super::spec::check_name;
use crate::crd::{EvalCase, EvalJob, Scorer, ScorerType};

/// Data key of the cases in the input ConfigMap.
pub const CASES_KEY: &str = "cases.jsonl";
/// A ConfigMap holds at most 1 MiB; leave room for its metadata.
const MAX_CASES_BYTES: usize = 1_000_000;

pub async fn run(ctx: &Ctx, a: &EvalRunArgs) -> Result<(), Error> {
    let name = a.name.clone().unwrap_or_else(|| format!("eval-{}", random_suffix()));
    check_name(&name)?;
    let scorers = a.scorers.iter().map(|s| parse_scorer(s, a.pass_threshold)).collect::<Result<Vec<_>, _>>()?;
    let scorers = unique_names(scorers);
    let path = a.file.display().to_string();
    let jsonl = std::fs::read_to_string(&a.file).map_err(Error::io(format!("reading cases from {path}")))?;
    let count = check_cases(&path, &jsonl)?;
    let ej = eval_job(&name, a, &scorers)?;
    let cm_name = create_cases(ctx, &name, jsonl).await?;
    let ejs: Api<EvalJob> = ctx.api();
    let created = match ejs.create(&PostParams::default(), &ej).await {
        Ok(ej) => ej,
        Err(e) => {
            let cms: Api<ConfigMap> = ctx.api();
            let _ = cms.delete(&cm_name, &Default::default()).await;
            return Err(Error::kube(format!("creating EvalJob {name} in namespace {}", ctx.namespace))(e));
        }
    };
    own_cases(ctx, &created, &cm_name).await;
    eprintln!("evaljob/{name} created in namespace {}: {count} cases, {} scorers", ctx.namespace, scorers.len());
    // Long enough for the run's own deadline, and for its pods to start.
    let deadline = a.run_timeout.unwrap_or(Duration::from_secs(created.spec.timeout_seconds.max(0) as u64));
    let timeout = a.wait_timeout.unwrap_or(deadline + Duration::from_secs(15 * 60));
    if a.wait {
        return super::gate::wait(ctx, &name, timeout).await;
    }
    if a.watch {
        return super::eval_watch::watch(ctx, &name, timeout).await;
    }
    println!("evaljob/{name} created; follow it with `kubectl byok eval watch {name}`");
    Ok(())
}

/// The EvalJob `eval run` creates: its cases from the `<name>-input` ConfigMap.
fn eval_job(name: &str, a: &EvalRunArgs, scorers: &[Scorer]) -> Result<EvalJob, Error> {
    let mut spec = json!({
        "provider": a.provider,
        "scorers": scorers,
        "casesFrom": { "configMapKeyRef": { "name": format!("{name}-input"), "key": CASES_KEY } },
    });
    let optional = [
        ("keyRef", a.key.clone().map(Value::from)),
        ("model", a.model.clone().map(Value::from)),
        ("parallelism", a.parallelism.map(Value::from)),
        ("concurrency", a.concurrency.map(Value::from)),
        ("timeoutSeconds", a.run_timeout.map(|d| Value::from(d.as_secs()))),
        ("passCriteria", pass_criteria(&a.criteria)),
    ];
    for (field, value) in optional {
        if let Some(v) = value {
            spec[field] = v;
        }
    }
    if !a.node_selector.is_empty() {
        let labels: serde_json::Map<String, Value> =
            a.node_selector.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        spec["template"] = json!({ "nodeSelector": labels });
    }
    serde_json::from_value(json!({
        "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob",
        "metadata": { "name": name }, "spec": spec,
    }))
    .map_err(|e| Error::Usage(format!("building the EvalJob: {e}")))
}

/// `spec.passCriteria` from the command line; None when no criterion was given.
fn pass_criteria(c: &CriteriaArgs) -> Option<Value> {
    let scorers: serde_json::Map<String, Value> =
        c.scorer_min_pass_rate.iter().map(|(name, rate)| (name.clone(), json!({ "minPassRate": rate }))).collect();
    let mut criteria = serde_json::Map::new();
    let fields = [
        ("minPassRate", c.min_pass_rate.map(Value::from)),
        ("maxErrored", c.max_errored.map(Value::from)),
        ("minMeanScore", c.min_mean_score.map(Value::from)),
        ("scorers", (!scorers.is_empty()).then_some(Value::Object(scorers))),
    ];
    for (field, value) in fields {
        if let Some(v) = value {
            criteria.insert(field.into(), v);
        }
    }
    (!criteria.is_empty()).then_some(Value::Object(criteria))
}

/// Creates the `<name>-input` ConfigMap holding the cases; returns its name.
async fn create_cases(ctx: &Ctx, name: &str, jsonl: String) -> Result<String, Error> {
    let ns = &ctx.namespace;
    let cm_name = format!("{name}-input");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            labels: Some([("app.kubernetes.io/created-by".to_string(), "kubectl-byok".to_string())].into()),
            ..Default::default()
        },
        data: Some([(CASES_KEY.to_string(), jsonl)].into()),
        ..Default::default()
    };
    let cms: Api<ConfigMap> = ctx.api();
    cms.create(&PostParams::default(), &cm).await.map_err(|e| match api_code(&e) {
        Some(409) => Error::Usage(format!(
            "ConfigMap {cm_name} already exists in namespace {ns}: an EvalJob {name} probably exists too; pick \
             another --name"
        )),
        _ => Error::kube(format!("creating ConfigMap {cm_name} in namespace {ns}"))(e),
    })?;
    Ok(cm_name)
}

/// The cases ConfigMap goes with the EvalJob when it is deleted (a warning if it cannot be so).
async fn own_cases(ctx: &Ctx, ej: &EvalJob, cm_name: &str) {
    let Some(mut owner) = ej.controller_owner_ref(&()) else { return };
    owner.controller = Some(false);
    owner.block_owner_deletion = None;
    let patch = json!({ "metadata": { "ownerReferences": [owner] } });
    let cms: Api<ConfigMap> = ctx.api();
    if let Err(e) = cms.patch(cm_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        let name = ej.name_any();
        eprintln!("warning: could not make EvalJob {name} own ConfigMap {cm_name} ({e}); delete it yourself later");
    }
}

/// `llm_judge:RUBRIC`, `contains[:TEXT]`, `exact_match`, `regex:PATTERN`, `json_valid`.
pub fn parse_scorer(s: &str, pass_threshold: Option<f64>) -> Result<Scorer, Error> {
    let (kind, arg) = match s.split_once(':') {
        Some((k, a)) => (k.trim(), Some(a.to_string())),
        None => (s.trim(), None),
    };
    let mut scorer = Scorer::of(ScorerType::JsonValid);
    let need =
        |what: &str| Error::Usage(format!("--scorer {kind} needs {what}: --scorer {kind}:{}", what.to_uppercase()));
    match (kind, arg) {
        ("llm_judge", Some(rubric)) if !rubric.trim().is_empty() => {
            scorer.type_ = ScorerType::LlmJudge;
            scorer.rubric = Some(rubric);
            scorer.pass_threshold = pass_threshold;
        }
        ("llm_judge", _) => return Err(need("a rubric")),
        ("contains", value) => {
            scorer.type_ = ScorerType::Contains;
            scorer.value = value.filter(|v| !v.is_empty());
        }
        ("regex", Some(pattern)) if !pattern.is_empty() => {
            regex::Regex::new(&pattern).map_err(|e| Error::Usage(format!("--scorer regex:{pattern}: {e}")))?;
            scorer.type_ = ScorerType::Regex;
            scorer.pattern = Some(pattern);
        }
        ("regex", _) => return Err(need("a pattern")),
        ("exact_match", None) => scorer.type_ = ScorerType::ExactMatch,
        ("json_valid", None) => scorer.type_ = ScorerType::JsonValid,
        ("exact_match" | "json_valid", Some(_)) => {
            return Err(Error::Usage(format!("--scorer {kind} takes no argument")));
        }
        _ => {
            return Err(Error::Usage(format!(
                "unknown scorer {s:?}; use llm_judge:RUBRIC, contains[:TEXT], exact_match, regex:PATTERN or json_valid"
            )));
        }
    }
    Ok(scorer)
}

/// Results are keyed by scorer name: a type used twice gets `-2`, `-3`...
fn unique_names(scorers: Vec<Scorer>) -> Vec<Scorer> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    scorers
        .into_iter()
        .map(|mut s| {
            let n = seen.entry(s.display_name()).or_default();
            *n += 1;
            if *n > 1 {
                s.name = Some(format!("{}-{n}", s.display_name()));
            }
            s
        })
        .collect()
}

/// Every non-empty line must be a case; returns how many there are.
fn check_cases(path: &str, jsonl: &str) -> Result<usize, Error> {
    if jsonl.len() > MAX_CASES_BYTES {
        return Err(Error::Usage(format!(
            "{path} is {} bytes; a ConfigMap holds about 1 MB: split the cases into several EvalJobs",
            jsonl.len()
        )));
    }
    let mut count = 0;
    for (i, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        serde_json::from_str::<EvalCase>(line).map_err(|e| {
            Error::Usage(format!(
                "{path} line {}: not a case ({e}); each line is {{\"id\":..,\"input\":..,\"output\":..,\"expected\":..}}",
                i + 1
            ))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::Usage(format!("{path} holds no cases")));
    }
    Ok(count)
}

fn random_suffix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 3];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scorers_parse() {
        let s = parse_scorer("llm_judge:Is it polite: yes?", Some(0.7)).expect("judge");
        assert_eq!(
            (s.type_, s.rubric.as_deref(), s.pass_threshold),
            (ScorerType::LlmJudge, Some("Is it polite: yes?"), Some(0.7))
        );
        assert_eq!(parse_scorer("contains", None).expect("c").value, None);
        assert_eq!(parse_scorer("contains:abc", None).expect("c").value.as_deref(), Some("abc"));
        assert_eq!(parse_scorer("regex:^a+$", None).expect("r").pattern.as_deref(), Some("^a+$"));
        assert!(parse_scorer("regex:(", None).is_err());
        assert!(parse_scorer("llm_judge", None).is_err());
        assert!(parse_scorer("bleu", None).is_err());
        let names: Vec<_> = unique_names(vec![
            parse_scorer("contains:a", None).expect("a"),
            parse_scorer("contains:b", None).expect("b"),
        ])
        .iter()
        .map(Scorer::display_name)
        .collect();
        assert_eq!(names, ["contains", "contains-2"]);
    }

    #[test]
    fn cases_are_checked_by_line() {
        assert_eq!(check_cases("f", "{\"output\":\"a\"}\n\n{\"id\":\"x\",\"output\":\"b\"}\n").expect("ok"), 2);
        let msg = check_cases("f", "{\"output\":\"a\"}\n{nope\n").expect_err("bad").to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(check_cases("f", "\n").is_err());
    }
}
