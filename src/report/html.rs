//! The report as one self-contained HTML page: inline CSS, inline SVG charts drawn here, no
//! script and nothing fetched (a Content-Security-Policy of `default-src 'none'` says so to the
//! browser as well). Case ids, inputs, outputs, reasons and scorer names are tenant-controlled:
//! maud escapes every value it is given; the only unescaped text is this file's own CSS.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::compare::{CaseChange, Change, Comparison, ScorerDelta, compare};
use super::prices::{Prices, money};
use super::{BINS, Run, ScorerStats, percent};
use crate::judge::summary::case_outcome;
use crate::judge::wire::{CaseResult, Outcome};

/// Longest case text (input, output, expected) shown; the rest is cut with a note.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Failed cases shown in full; the others are counted.
pub const MAX_FAILURES: usize = 500;
/// Failures shown open (the rest are one click away).
const OPEN_FAILURES: usize = 5;

const CSS: &str = include_str!("report.css");
/// No script, no fetch of anything: styles inline only.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

/// What the page shows besides the run.
pub struct Context<'a> {
    pub baseline: Option<&'a Run>,
    pub prices: &'a Prices,
    pub generated_at: jiff::Timestamp,
    /// The version of the tool that wrote the page.
    pub version: &'a str,
}

/// The report of `run` as an HTML document.
pub fn render(run: &Run, ctx: &Context<'_>) -> String {
    let comparison = ctx.baseline.map(|b| compare(b, run));
    let stats = run.scorer_stats();
    let title = format!("EvalJob {} — evaluation report", run.meta.name);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CSP);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main {
                    (header(run))
                    (warnings(run))
                    (cards(run, ctx.prices))
                    (scorers(&stats, comparison.as_ref()))
                    (histograms(&stats))
                    @if let Some(c) = &comparison { (baseline(c)) }
                    (failures(run))
                    (metadata(run, ctx))
                    footer {
                        "Written by kubectl byok " (ctx.version) " at " (ctx.generated_at.to_string()) ". "
                        "Self-contained: no script, nothing loaded from anywhere."
                    }
                }
            }
        }
    }
    .into_string()
}

fn header(run: &Run) -> Markup {
    let m = &run.meta;
    html! {
        header {
            h1 { "EvalJob " code { (m.name) } }
            p.sub {
                span.badge.(phase_class(&m.phase)) { (m.phase) } " "
                "namespace " code { (m.namespace) }
                " · " (m.provider.map_or("no provider", |p| p.as_str()))
                @if let Some(model) = &m.model { " · " code { (model) } }
                " · " (run.results.len()) " cases"
            }
        }
    }
}

fn phase_class(phase: &str) -> &'static str {
    match phase {
        "Succeeded" => "passed",
        "Failed" => "failed",
        _ => "errored",
    }
}

fn warnings(run: &Run) -> Markup {
    html! {
        @if run.meta.phase == "Failed" {
            p.warn id="partial" { "This run Failed before every case was judged: the results below are the cases judged before it ended." }
        }
        @if !run.agrees_with_status() {
            p.warn id="tampered" {
                "The results read from the results ConfigMaps do not match the summary the operator computed from the "
                "results it verified (the EvalJob's status). They may have been changed after the run: trust the status, "
                "and check who can write ConfigMaps in namespace " code { (run.meta.namespace) } "."
            }
        }
    }
}

fn cards(run: &Run, prices: &Prices) -> Markup {
    let s = run.summary();
    let total = run.results.len();
    let rate = (total > 0).then(|| percent(s.passed as f64 / total as f64));
    let usage = run.usage();
    html! {
        section.cards id="overview" {
            div.card { div.k { "cases passed" } div.v.passed { (rate.as_deref().unwrap_or("–")) } div.sub { (s.passed) " of " (total) } }
            div.card { div.k { "failed" } div.v.failed { (s.failed) } }
            div.card { div.k { "errored" } div.v.errored { (s.errored) } }
            div.card { div.k { "mean score" } div.v { (s.mean_score.map_or("–".to_string(), |m| format!("{m:.3}"))) } }
            div.card { div.k { "tokens in / out" } div.v.small { (thousands(usage.input_tokens)) " / " (thousands(usage.output_tokens)) } }
            div.card { div.k { "estimated cost" } div.v { (cost_value(run, prices)) } }
        }
        (cost_line(run, prices))
    }
}

fn cost_value(run: &Run, prices: &Prices) -> String {
    let (Some(provider), Some(model)) = (run.meta.provider, run.meta.model.as_deref()) else { return "–".into() };
    prices.estimate(provider, model, &run.usage()).map_or("unknown".into(), |c| money(c.amount, &c.currency))
}

fn cost_line(run: &Run, prices: &Prices) -> Markup {
    let usage = run.usage();
    let (provider, model) = (run.meta.provider, run.meta.model.as_deref().unwrap_or("?"));
    let cost = provider.and_then(|p| prices.estimate(p, model, &usage));
    html! {
        p id="cost" {
            @if let Some(c) = cost {
                "Estimated cost " strong { (money(c.amount, &c.currency)) } " for "
                (thousands(usage.input_tokens)) " input and " (thousands(usage.output_tokens)) " output tokens of "
                code { (model) } " at " (money(c.price.input_per_million, &c.currency)) " / 1M input and "
                (money(c.price.output_per_million, &c.currency)) " / 1M output tokens ("
                (if c.from_file { "your price table" } else { "built-in price table" }) " of " (c.table_date) "; "
                (c.price.source.as_deref().unwrap_or(&c.table_source)) "). An estimate: caching, batch and contract prices are not counted."
            } @else {
                "No price known for model " code { (model) } " of " (provider.map_or("?", |p| p.as_str()))
                ": give one with " code { "--prices FILE" } " to estimate the cost of "
                (thousands(usage.input_tokens)) " input and " (thousands(usage.output_tokens)) " output tokens."
            }
        }
    }
}

fn scorers(stats: &[ScorerStats], comparison: Option<&Comparison>) -> Markup {
    let delta_of = |name: &str| comparison.and_then(|c| c.scorers.iter().find(|d| d.name == name));
    let panels = stats.iter().any(|s| s.agreement.is_some());
    html! {
        section id="scorers" {
            h2 { "Pass rate per scorer" }
            table {
                thead { tr {
                    th { "scorer" } th { "pass rate" } th { "" } th.num { "passed" } th.num { "failed" }
                    th.num { "errored" } th.num { "mean score" }
                    @if panels { th.num title="cases on which the panel's judges all passed or all failed it" { "judges agree" } }
                    @if comparison.is_some() { th.num { "vs baseline" } }
                } }
                tbody {
                    @for s in stats {
                        tr {
                            td { code { (s.name) } }
                            td.num { (s.pass_rate.map_or("–".to_string(), percent)) }
                            td { (rate_bar(s)) }
                            td.num { (s.passed) } td.num { (s.failed) } td.num { (s.errored) }
                            td.num { (s.mean_score.map_or("–".to_string(), |m| format!("{m:.3}"))) }
                            @if panels { td.num { (s.agreement.map_or("–".to_string(), percent)) } }
                            @if comparison.is_some() { td.num { (scorer_delta(delta_of(&s.name))) } }
                        }
                    }
                }
            }
        }
    }
}

fn scorer_delta(delta: Option<&ScorerDelta>) -> Markup {
    let Some(d) = delta else { return html! { "–" } };
    html! {
        @match d.pass_rate_delta {
            Some(x) => { span.delta.(direction(x)) { (signed(x * 100.0, 1)) " pts" } }
            None => { "new scorer" }
        }
        @if let Some(m) = d.mean_score_delta { br; span.sub { "mean " (signed(m, 3)) } }
    }
}

fn direction(x: f64) -> &'static str {
    if x > 1e-9 {
        "up"
    } else if x < -1e-9 {
        "down"
    } else {
        "same"
    }
}

fn signed(x: f64, decimals: usize) -> String {
    if x.abs() < 0.5 * 10f64.powi(-(decimals as i32)) {
        format!("±{:.decimals$}", 0.0)
    } else {
        format!("{x:+.decimals$}")
    }
}

/// A stacked bar: passed, failed, errored.
fn rate_bar(s: &ScorerStats) -> Markup {
    const WIDTH: f64 = 160.0;
    let total = (s.passed + s.failed + s.errored).max(1) as f64;
    let (p, f) = (s.passed as f64 / total * WIDTH, s.failed as f64 / total * WIDTH);
    let e = s.errored as f64 / total * WIDTH;
    html! {
        svg.bar width="160" height="12" viewBox="0 0 160 12" role="img" aria-label="passed, failed and errored share" {
            rect x="0" y="0" width="160" height="12" rx="3" fill="#eaeef2" {}
            rect x="0" y="0" width=(fmt(p)) height="12" fill="#1a7f37" { title { "passed " (s.passed) } }
            rect x=(fmt(p)) y="0" width=(fmt(f)) height="12" fill="#cf222e" { title { "failed " (s.failed) } }
            rect x=(fmt(p + f)) y="0" width=(fmt(e)) height="12" fill="#bf8700" { title { "errored " (s.errored) } }
        }
    }
}

fn fmt(x: f64) -> String {
    format!("{x:.1}")
}

fn histograms(stats: &[ScorerStats]) -> Markup {
    html! {
        section id="histograms" {
            h2 { "Score distribution per scorer" }
            div.hists {
                @for s in stats {
                    figure {
                        figcaption { code { (s.name) } }
                        (histogram(s))
                    }
                }
            }
        }
    }
}

/// Ten bins over 0..1 and a bar for errored results (they have no score), each bar with its count.
fn histogram(s: &ScorerStats) -> Markup {
    const LEFT: f64 = 8.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 118.0;
    const SLOT: f64 = 26.0;
    const BAR: f64 = 22.0;
    let max = s.histogram.iter().copied().max().unwrap_or(0).max(s.errored.max(0) as u64).max(1) as f64;
    let height = |n: u64| n as f64 / max * (BOTTOM - TOP);
    let bars = s.histogram.iter().enumerate().map(|(i, &n)| {
        let (from, to) = (i as f64 / BINS as f64, (i + 1) as f64 / BINS as f64);
        (LEFT + i as f64 * SLOT, n, format!("hsl({}, 62%, 42%)", i * 12), format!("{from:.1}–{to:.1}: {n}"))
    });
    let err_x = LEFT + BINS as f64 * SLOT + 14.0;
    let errored = s.errored.max(0) as u64;
    html! {
        svg.hist width="310" height="140" viewBox="0 0 310 140" role="img" aria-label="score histogram" {
            line x1=(LEFT) y1=(BOTTOM) x2=(LEFT + BINS as f64 * SLOT) y2=(BOTTOM) stroke="#8c959f" {}
            @for (x, n, color, label) in bars {
                @if n > 0 {
                    rect x=(fmt(x + 2.0)) y=(fmt(BOTTOM - height(n))) width=(BAR) height=(fmt(height(n))) fill=(color) { title { (label) } }
                    text x=(fmt(x + SLOT / 2.0)) y=(fmt(BOTTOM - height(n) - 3.0)) text-anchor="middle" { (n) }
                }
            }
            @if errored > 0 {
                rect x=(fmt(err_x)) y=(fmt(BOTTOM - height(errored))) width=(BAR) height=(fmt(height(errored))) fill="#bf8700" { title { "errored: " (errored) } }
                text x=(fmt(err_x + BAR / 2.0)) y=(fmt(BOTTOM - height(errored) - 3.0)) text-anchor="middle" { (errored) }
            }
            text x=(LEFT) y="132" text-anchor="start" { "0" }
            text x=(LEFT + 5.0 * SLOT) y="132" text-anchor="middle" { "0.5" }
            text x=(LEFT + BINS as f64 * SLOT) y="132" text-anchor="end" { "1" }
            text x=(fmt(err_x + BAR / 2.0)) y="132" text-anchor="middle" { "err" }
        }
    }
}

fn baseline(c: &Comparison) -> Markup {
    let regressions: Vec<&CaseChange> = c.changes.iter().filter(|x| x.change == Change::Regressed).collect();
    let improvements: Vec<&CaseChange> = c.changes.iter().filter(|x| x.change == Change::Improved).collect();
    html! {
        section id="baseline" {
            h2 { "Compared with " code { (c.baseline) } }
            p {
                (c.compared) " cases in both runs: "
                strong.failed { (c.regressed) " regressed" } ", " strong.passed { (c.improved) " improved" } "."
                @if !c.only_in_baseline.is_empty() { " Only in the baseline: " (ids(&c.only_in_baseline)) "." }
                @if !c.only_in_candidate.is_empty() { " Only in this run: " (ids(&c.only_in_candidate)) "." }
            }
            @if !regressions.is_empty() { h3 { "Regressions" } (changes(&regressions)) }
            @if !improvements.is_empty() { h3 { "Improvements" } (changes(&improvements)) }
        }
    }
}

/// Case ids, the first 50.
fn ids(list: &[String]) -> Markup {
    html! {
        @for (i, id) in list.iter().take(50).enumerate() { @if i > 0 { ", " } code { (id) } }
        @if list.len() > 50 { " and " (list.len() - 50) " more" }
    }
}

fn changes(list: &[&CaseChange]) -> Markup {
    html! {
        table.changes {
            thead { tr { th { "case" } th { "scorer" } th { "baseline" } th { "this run" } th { "reason now" } } }
            tbody {
                @for change in list {
                    @for s in &change.scorers {
                        tr {
                            td { code { (change.case) } }
                            td { code { (s.scorer) } }
                            td { (outcome(s.baseline, s.baseline_score)) }
                            td { (outcome(s.candidate, s.candidate_score)) }
                            td.reason { (s.reason) }
                        }
                    }
                }
            }
        }
    }
}

fn outcome(o: Outcome, score: Option<f64>) -> Markup {
    let (class, word) = outcome_words(o);
    html! {
        span.(class) { (word) } @if let Some(v) = score { " " span.sub { (format!("{v:.2}")) } }
    }
}

fn outcome_words(o: Outcome) -> (&'static str, &'static str) {
    match o {
        Outcome::Passed => ("passed", "passed"),
        Outcome::Failed => ("failed", "failed"),
        Outcome::Errored => ("errored", "errored"),
    }
}

fn failures(run: &Run) -> Markup {
    let all: Vec<&CaseResult> = run.failures().collect();
    html! {
        section id="failures" {
            h2 { "Failed and errored cases (" (all.len()) ")" }
            @if all.is_empty() { p.passed { "Every case passed every scorer." } }
            @for (i, r) in all.iter().take(MAX_FAILURES).enumerate() { (failure(run, r, i < OPEN_FAILURES)) }
            @if all.len() > MAX_FAILURES {
                p { (all.len() - MAX_FAILURES) " more not shown: see " code { "kubectl byok eval results " (run.meta.name) } "." }
            }
        }
    }
}

fn failure(run: &Run, r: &CaseResult, open: bool) -> Markup {
    let (class, word) = outcome_words(case_outcome(r, &run.scorers));
    let case = run.cases.get(&r.line);
    html! {
        details.case open[open] {
            summary { span.badge.(class) { (word) } " " code { (r.id) } span.sub { " · line " (r.line) } }
            table.scores {
                thead { tr { th { "scorer" } th { "outcome" } th { "reason" } } }
                tbody {
                    @for s in r.scores.iter().filter(|s| s.outcome != Outcome::Passed) {
                        tr { td { code { (s.scorer) } } td { (outcome(s.outcome, s.score)) } td.reason { (s.reason) } }
                    }
                }
            }
            @match case {
                Some(c) => {
                    h4 { "Input" } pre.input { (cut(&c.input)) }
                    h4 { "Output" } pre.output { (cut(&c.output)) }
                    h4 { "Expected" }
                    @match &c.expected {
                        Some(e) => { pre.expected { (cut(e)) } }
                        None => { p.sub { "none given" } }
                    }
                }
                None => { p.sub { "The case's text is not available (its cases ConfigMap is gone, or the line did not parse)." } }
            }
        }
    }
}

/// At most [`MAX_TEXT_CHARS`] characters, saying how many more there were.
fn cut(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_TEXT_CHARS {
        return text.to_string();
    }
    let kept: String = text.chars().take(MAX_TEXT_CHARS).collect();
    format!("{kept}\n… ({} more characters)", count - MAX_TEXT_CHARS)
}

fn metadata(run: &Run, ctx: &Context<'_>) -> Markup {
    let m = &run.meta;
    let dash = || "–".to_string();
    let key = match (&m.key_ref, &m.key_prefix) {
        (Some(name), Some(prefix)) => format!("{name} ({prefix}…)"),
        (Some(name), None) => name.clone(),
        (None, _) => "none (no llm_judge scorer)".into(),
    };
    let duration = match (m.start_time, m.completion_time) {
        (Some(a), Some(b)) => human_duration(b.as_second() - a.as_second()),
        _ => dash(),
    };
    html! {
        section id="meta" {
            h2 { "Run" }
            dl.meta {
                dt { "EvalJob" } dd { code { (m.name) } }
                dt { "Namespace" } dd { code { (m.namespace) } }
                dt { "Phase" } dd { (m.phase) }
                dt { "Provider" } dd { (m.provider.map_or("–", |p| p.as_str())) }
                dt { "Model" } dd { (m.model.clone().unwrap_or_else(dash)) }
                dt { "Key" } dd { (key) }
                dt { "KEK id" } dd { (m.kek_id.clone().unwrap_or_else(dash)) }
                dt { "Started" } dd { (m.start_time.map_or_else(dash, |t| t.to_string())) }
                dt { "Finished" } dd { (m.completion_time.map_or_else(dash, |t| t.to_string())) }
                dt { "Duration" } dd { (duration) }
                dt { "Scorers" } dd { (run.scorers.join(", ")) }
                @if let Some(b) = ctx.baseline { dt { "Baseline" } dd { code { (b.meta.name) } } }
            }
        }
    }
}

fn human_duration(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// 1234567 as 1,234,567.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{case, run, score};
    use super::*;

    fn ctx<'a>(prices: &'a Prices, baseline: Option<&'a Run>) -> Context<'a> {
        Context { baseline, prices, generated_at: jiff::Timestamp::UNIX_EPOCH, version: "0.1.0" }
    }

    #[test]
    fn shows_scorers_rates_failures_and_cost() {
        let r = run("nightly", vec![case("c1", 1, Some(0.9), true), case("c2", 2, Some(0.2), false)]);
        let prices = Prices::default();
        let page = render(&r, &ctx(&prices, None));
        for want in ["EvalJob <code>nightly</code>", "llm_judge", "50.0%", "not correct", "question c2", "answer c2"] {
            assert!(page.contains(want), "{want} missing");
        }
        assert!(
            page.contains("Estimated cost <strong>$0.002</strong>") || page.contains("Estimated cost <strong>$0.00")
        );
        assert!(page.contains("built-in price table of 2026-12-02"), "{page}");
        assert!(!page.contains("question c1"), "a passed case is not listed as a failure");
        assert!(!page.contains("id=\"baseline\""), "no baseline section without one");
    }

    #[test]
    fn a_panels_agreement_has_its_column_only_when_there_is_a_panel() {
        let mut r = run("panel", vec![case("c1", 1, Some(0.9), true), case("c2", 2, Some(0.2), false)]);
        let prices = Prices::default();
        assert!(!render(&r, &ctx(&prices, None)).contains("judges agree"), "no panel, no column");
        r.results[0].scores[0].agreed = Some(true);
        r.results[1].scores[0].agreed = Some(false);
        let page = render(&r, &ctx(&prices, None));
        assert!(page.contains("judges agree") && page.contains("50.0%"), "{page}");
    }

    #[test]
    fn every_tenant_value_is_escaped() {
        let evil = "</style><script>alert(1)</script><img src=x onerror=alert(2)>\"'&";
        let mut c = case(evil, 1, Some(0.1), false);
        c.scores[0] = score(evil, Outcome::Failed, Some(0.1), evil);
        let mut r = run(evil, vec![c]);
        r.scorers[0] = evil.to_string();
        r.meta.namespace = evil.into();
        r.meta.model = Some(evil.into());
        r.meta.key_ref = Some(evil.into());
        r.meta.kek_id = Some(evil.into());
        let text = r.cases.get_mut(&1).expect("case");
        (text.input, text.output, text.expected) = (evil.into(), evil.into(), Some(evil.into()));
        let prices = Prices::default();
        let page = render(&r, &ctx(&prices, Some(&r.clone())));
        assert!(!page.contains("<script"), "no script element at all");
        assert!(!page.contains("<img"), "no injected element");
        assert_eq!(page.matches("</style>").count(), 1, "only our own style element ends");
        assert!(page.contains("&lt;/style&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"));
        assert!(page.contains("&quot;"), "quotes escaped in attributes and text");
    }

    #[test]
    fn nothing_is_fetched() {
        let r = run("a", vec![case("c1", 1, Some(0.2), false)]);
        let prices = Prices::default();
        let page = render(&r, &ctx(&prices, Some(&r)));
        for attr in [" src=", " href=", "url(", "@import", "http://", "https://"] {
            assert!(!page.contains(attr), "{attr} in the page");
        }
        assert!(page.contains("default-src 'none'"));
    }

    #[test]
    fn baseline_shows_regressions_and_deltas() {
        let base = run("v1", vec![case("c1", 1, Some(0.9), true), case("c2", 2, Some(0.2), true)]);
        let now = run("v2", vec![case("c1", 1, Some(0.3), true), case("c2", 2, Some(0.8), true)]);
        let prices = Prices::default();
        let page = render(&now, &ctx(&prices, Some(&base)));
        assert!(page.contains("Compared with <code>v1</code>"));
        assert!(page.contains("1 regressed") && page.contains("1 improved"), "{page}");
        assert!(page.contains("Regressions") && page.contains("Improvements"));
        assert!(page.contains("±0.0 pts"), "same pass rate for llm_judge: {page}");
    }

    #[test]
    fn unknown_model_cost_says_how_to_price_it() {
        let mut r = run("a", vec![case("c1", 1, Some(0.9), true)]);
        r.meta.model = Some("my-deployment".into());
        let prices = Prices::default();
        let page = render(&r, &ctx(&prices, None));
        assert!(page.contains("No price known for model <code>my-deployment</code>"));
        assert!(page.contains("--prices FILE"));
    }

    #[test]
    fn long_texts_are_cut_and_numbers_read_well() {
        let long = "x".repeat(MAX_TEXT_CHARS + 7);
        assert!(cut(&long).ends_with("(7 more characters)"));
        assert_eq!(cut("short"), "short");
        assert_eq!(
            (thousands(1_234_567), thousands(12), thousands(-1000)),
            ("1,234,567".into(), "12".into(), "-1,000".into())
        );
        assert_eq!(
            (human_duration(42), human_duration(125), human_duration(7300)),
            ("42s".into(), "2m 5s".into(), "2h 1m".into())
        );
        assert_eq!(
            (signed(0.05, 1), signed(-0.0001, 3), signed(-12.0, 1)),
            ("+0.1".into(), "±0.000".into(), "-12.0".into())
        );
    }
}
