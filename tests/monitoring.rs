//! The chart's Grafana dashboard and Prometheus alerts name only metrics the operator exports:
//! every PromQL expression is parsed, and the metric names it selects are compared with what a
//! running operator (the harness's, against the real control plane) serves at /metrics.

mod common;

use std::collections::BTreeSet;

use byok_operator::crd::{EvalPhase, KeyPhase, Provider};
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob};
use common::judge_pod::{LocalPod, judge_pods};
use common::{TestEnv, fake_key};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/byok-operator/dashboards/byok-operator.json");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/byok-operator/rules/byok-operator.rules.yaml");

/// The metric names of every selector in `expr`.
struct Selected(BTreeSet<String>);

impl ExprVisitor for Selected {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(v) => Some(v),
            Expr::MatrixSelector(m) => Some(&m.vs),
            _ => None,
        };
        if let Some(v) = selector {
            let name = v.name.clone().ok_or_else(|| format!("a selector without a metric name: {v}"))?;
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// Parses one expression (Grafana's interval variables replaced by a duration) and returns the
/// metric names it selects.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let promql = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h");
    let parsed = parser::parse(&promql).map_err(|e| format!("{expr}: {e}"))?;
    let mut names = Selected(BTreeSet::new());
    walk_expr(&mut names, &parsed).map_err(|e| format!("{expr}: {e}"))?;
    Ok(names.0)
}

/// Every `expr` of the dashboard's panels (rows' nested panels included).
fn dashboard_exprs() -> Vec<String> {
    fn panels(v: &serde_json::Value, out: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.extend(t["expr"].as_str().map(str::to_string));
            }
            panels(&p["panels"], out);
        }
    }
    let text = std::fs::read_to_string(DASHBOARD).expect("dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    out
}

/// (alert name, expr) of every rule in the rule file.
fn rule_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(RULES).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("the rules are YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    let rules = groups.iter().flat_map(|g| g["rules"].as_sequence().expect("rules").iter());
    rules
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).expect("alert or record").to_string();
            (name, r["expr"].as_str().expect("expr").to_string())
        })
        .collect()
}

/// The sample names an OpenMetrics exposition can hold, from its `# TYPE` lines (a family is
/// described even before it has a sample): counters add `_total`, histograms `_bucket`, `_sum` and
/// `_count`, info metrics `_info`.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let Some((name, kind)) = rest.split_once(' ') else { continue };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn every_expression_parses_and_names_a_metric() {
    let dashboard = dashboard_exprs();
    let rules = rule_exprs();
    assert!(dashboard.len() >= 15 && rules.len() >= 10, "{} panels' queries, {} rules", dashboard.len(), rules.len());
    for expr in dashboard.iter().chain(rules.iter().map(|(_, e)| e)) {
        let names = metric_names(expr).unwrap_or_else(|e| panic!("does not parse: {e}"));
        assert!(!names.is_empty(), "{expr} names no metric");
    }
    // A made-up name is caught by the comparison below, not lost by the parse.
    assert_eq!(
        metric_names("sum(rate(byok_nope_total[$__rate_interval]))").unwrap(),
        ["byok_nope_total".to_string()].into()
    );
}

#[test]
fn every_alert_says_how_bad_and_what_happened() {
    let text = std::fs::read_to_string(RULES).expect("rules file");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("only alerting rules");
            let severity = rule["labels"]["severity"].as_str();
            assert!(matches!(severity, Some("critical" | "warning" | "info")), "{name}: severity {severity:?}");
            for a in ["summary", "description"] {
                assert!(rule["annotations"][a].as_str().is_some_and(|s| !s.is_empty()), "{name}: no {a}");
            }
        }
    }
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_metrics_the_operator_exports() {
    let mut env = TestEnv::new("monitoring").await;
    // Every family with a sample: a key on a model with an announced shutdown, and an EvalJob run
    // to the end (judged cases, a gate, a key granted, results accepted).
    default_key(&mut env, "judge", Provider::OpenAi).await;
    let source = fake_key(Provider::OpenAi, "");
    env.create_secret("dying-src", "apiKey", source.as_bytes()).await;
    let mut spec = env.spec(Provider::OpenAi, "dying-src");
    spec.model = Some("gpt-4o".into());
    env.create_key("dying", spec).await;
    let dying = env.wait_phase("dying", KeyPhase::Ready).await;
    let shutdown = dying.status.and_then(|s| s.model_shutdown).expect("status.modelShutdown of gpt-4o");
    run_evaljob(&mut env).await;

    let exposition = common::broker::metrics(&env).await;
    let exported = exported_names(&exposition);
    let ns = &env.ns;
    let at = format!("{shutdown}T00:00:00Z").parse::<jiff::Timestamp>().expect("date").as_second();
    for sample in [
        "byok_leader 1".to_string(),
        format!(r#"byok_byokkeys{{namespace="{ns}",provider="openai",phase="Ready"}} 2"#),
        format!(r#"byok_model_shutdown_timestamp_seconds{{namespace="{ns}",provider="openai",model="gpt-4o"}} {at}"#),
        r#"byok_broker_requests_total{endpoint="key",outcome="KeyAlreadyGranted"} 0"#.to_string(),
    ] {
        assert!(exposition.contains(&sample), "{sample} in:\n{exposition}");
    }

    let mut unknown = Vec::new();
    let exprs = dashboard_exprs().into_iter().map(|e| ("dashboard".to_string(), e));
    for (source, expr) in exprs.chain(rule_exprs()) {
        let names = metric_names(&expr).unwrap_or_else(|e| panic!("does not parse: {e}"));
        unknown.extend(names.into_iter().filter(|n| !exported.contains(n)).map(|n| format!("{source}: {n} in {expr}")));
    }
    assert!(
        unknown.is_empty(),
        "metrics the operator does not export:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    env.assert_no_plaintext().await;
}

/// An EvalJob judged to the end, its judge pod's containers run as local processes.
async fn run_evaljob(env: &mut TestEnv) {
    create_evaljob(env, "eval", judge_spec("openai", cases(2))).await;
    let ej = wait_evaljob(env, "eval", "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let pod = judge_pods(env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
    let local = LocalPod::prepare(env, pod).await;
    for container in ["fetch-key", "judge"] {
        let ran = local.run(container, &[]).await;
        env.extra_logs.push((container.into(), format!("{ran:?}")));
        assert!(ran.status.success(), "{container}: {}", String::from_utf8_lossy(&ran.stderr));
    }
    wait_evaljob(env, "eval", "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await;
}
