//! `kubectl byok eval report` and `eval compare` on real EvalJobs of the local control plane (the
//! judge's containers run as local processes), the report rendered in a real headless browser
//! (Chromium from Debian's packages, hack/prereqs.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use byok_operator::crd::{EvalJob, EvalPhase, Provider};
use common::TestEnv;
use common::evaljobs::{create_evaljob, default_key, phase, wait_evaljob};
use common::judge_pod::{LocalPod, judge_pods};
use serde_json::json;

/// What one run of the plugin said, with its exit code.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `kubectl-byok -n <ns> ARGS`, off the runtime thread so the in-process mock keeps serving.
async fn byok(env: &mut TestEnv, args: &[&str]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-byok"));
    cmd.args(["-n", &env.ns, "--operator-namespace", &env.op_ns]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("kubectl-byok runs")).await.expect("join");
    let ran = Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    env.extra_logs.push((format!("kubectl-byok {}", args.join(" ")), format!("{ran:?}")));
    ran
}

/// Creates an EvalJob and runs its judge pod's containers here until it Succeeded.
async fn run_to_end(env: &mut TestEnv, name: &str, spec: serde_json::Value) -> EvalJob {
    create_evaljob(env, name, spec).await;
    let ej = wait_evaljob(env, name, "Running", |e| phase(e) == Some(EvalPhase::Running)).await;
    let pod = judge_pods(env, &ej.status.and_then(|s| s.job_name).expect("job"), 1).await.remove(0);
    let local = LocalPod::prepare(env, pod).await;
    for container in ["fetch-key", "judge"] {
        let ran = local.run(container, &[]).await;
        env.extra_logs.push((format!("{name} {container}"), format!("{ran:?}")));
        assert!(ran.status.success(), "{name} {container}: {}", String::from_utf8_lossy(&ran.stderr));
    }
    wait_evaljob(env, name, "Succeeded", |e| phase(e) == Some(EvalPhase::Succeeded)).await
}

/// An EvalJob spec: an llm_judge (the mock scores each output by its `mock-score=`), `contains`
/// and `exact_match` scorers over `cases` of (id, input, output, expected).
fn spec(cases: &[(&str, &str, &str, &str)]) -> serde_json::Value {
    let cases: Vec<_> =
        cases.iter().map(|(id, i, o, e)| json!({ "id": id, "input": i, "output": o, "expected": e })).collect();
    json!({
        "provider": "openai",
        "scorers": [
            { "type": "llm_judge", "rubric": "The answer is correct and complete.", "passThreshold": 0.6 },
            { "type": "contains", "value": "answer" },
            { "type": "exact_match", "name": "exact" }
        ],
        "cases": cases
    })
}

/// Where this test's files go (kept after the run: the screenshot is looked at).
fn out_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("output dir");
    dir
}

/// Headless Chromium with a throwaway profile; `timeout` ends it if it hangs.
async fn chromium(dir: &Path, args: &[String]) -> std::process::Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("chromium runs (hack/prereqs.sh installs it)"));
    out.await.expect("join")
}

/// The DOM Chromium built from the file, serialized after load.
async fn rendered_dom(dir: &Path, file: &Path) -> String {
    let out = chromium(dir, &["--dump-dom".into(), format!("file://{}", file.display())]).await;
    assert!(out.status.success(), "chromium --dump-dom: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(dir.join("dom.html"), &dom).expect("keep the DOM");
    dom
}

/// The report fetches nothing: no element that loads, no attribute or style that points anywhere,
/// no address at all (the test data has none), and a CSP that forbids fetching.
fn assert_self_contained(html: &str) {
    let loading = regex::Regex::new(r"(?i)<[a-z][^<>]*\s(src|href|srcset|action|poster|data)\s*=").expect("regex");
    assert!(!loading.is_match(html), "an attribute that loads: {:?}", loading.find(html));
    let lower = html.to_ascii_lowercase();
    for element in ["<script", "<link", "<iframe", "<object", "<embed", "<img", "<base"] {
        assert!(!lower.contains(element), "{element} in the report");
    }
    let style = html.split("<style>").nth(1).and_then(|s| s.split("</style>").next()).expect("inline style");
    assert!(!style.contains("url(") && !style.contains("@import"), "the style loads nothing");
    assert!(!html.contains("http://") && !html.contains("https://"), "no address");
    assert!(html.contains("default-src 'none'"), "the CSP forbids fetching");
}

const BASELINE: &[(&str, &str, &str, &str)] = &[
    (
        "capital-fr",
        "Capital of France?",
        "The answer is Paris. mock-score=0.92",
        "The answer is Paris. mock-score=0.92",
    ),
    ("capital-jp", "Capital of Japan?", "The answer is Tokyo. mock-score=0.88", "The answer is Tokyo. mock-score=0.88"),
    ("boiling", "Water boils at?", "The answer is 100 C at sea level. mock-score=0.81", "The answer is 100 C."),
    ("largest", "Largest planet?", "The answer is Jupiter. mock-score=0.74", "The answer is Jupiter. mock-score=0.74"),
    ("speed", "Speed of light?", "About 300,000 km/s. mock-score=0.55", "The answer is 299,792 km/s."),
    ("author", "Who wrote Hamlet?", "Marlowe, I think. mock-score=0.12", "The answer is Shakespeare."),
    ("sqrt", "Square root of 81?", "The answer is 9. mock-score=0.97", "The answer is 9. mock-score=0.97"),
    ("moon", "Moons of Mars?", "The answer is two: Phobos and Deimos. mock-score=0.66", "Phobos and Deimos."),
];

/// The candidate: `largest` and `sqrt` got worse, `speed` and `author` better.
const CANDIDATE: &[(&str, &str, &str, &str)] = &[
    (
        "capital-fr",
        "Capital of France?",
        "The answer is Paris. mock-score=0.92",
        "The answer is Paris. mock-score=0.92",
    ),
    ("capital-jp", "Capital of Japan?", "The answer is Tokyo. mock-score=0.88", "The answer is Tokyo. mock-score=0.88"),
    ("boiling", "Water boils at?", "The answer is 100 C at sea level. mock-score=0.83", "The answer is 100 C."),
    ("largest", "Largest planet?", "Saturn, by volume. mock-score=0.31", "The answer is Jupiter. mock-score=0.74"),
    ("speed", "Speed of light?", "The answer is 299,792 km/s. mock-score=0.95", "The answer is 299,792 km/s."),
    ("author", "Who wrote Hamlet?", "The answer is Shakespeare. mock-score=0.9", "The answer is Shakespeare."),
    ("sqrt", "Square root of 81?", "The answer is 8. mock-score=0.2", "The answer is 9. mock-score=0.97"),
    ("moon", "Moons of Mars?", "The answer is two: Phobos and Deimos. mock-score=0.7", "Phobos and Deimos."),
];

#[tokio::test]
async fn report_renders_in_a_headless_browser() {
    let mut env = TestEnv::new("report-html").await;
    let key = default_key(&mut env, "openai", Provider::OpenAi).await;
    run_to_end(&mut env, "nightly-41", spec(BASELINE)).await;
    let done = run_to_end(&mut env, "nightly-42", spec(CANDIDATE)).await;
    let st = done.status.clone().expect("status");
    let dir = out_dir("report_renders_in_a_headless_browser");
    let file = dir.join("report.html");
    let file_arg = file.display().to_string();
    let ran = byok(&mut env, &["eval", "report", "nightly-42", "--baseline", "nightly-41", "-o", &file_arg]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let html = std::fs::read_to_string(&file).expect("the report was written");
    assert_self_contained(&html);

    let dom = rendered_dom(&dir, &file).await;
    for scorer in ["llm_judge", "contains", "exact"] {
        assert!(dom.contains(&format!("<code>{scorer}</code>")), "scorer {scorer} in the DOM");
    }
    // llm_judge: 6 of 8 at or above 0.6; contains: 7 of 8; exact: 2 of 8 outputs equal expected.
    for rate in ["75.0%", "87.5%", "25.0%"] {
        assert!(dom.contains(rate), "pass rate {rate} in the DOM");
    }
    assert!(dom.contains("mock verdict: score 0.31 set by the prompt"), "a failure's reason, from the judge");
    assert!(dom.contains("Saturn, by volume."), "a failure's output");
    let cost = dom.split("id=\"cost\"").nth(1).expect("the cost line").split("</p>").next().unwrap_or_default();
    assert!(cost.contains("Estimated cost <strong>$") && cost.contains("gpt-5.1"), "cost line: {cost}");
    assert!(cost.contains("built-in price table of 2026-12-02"), "{cost}");
    assert!(dom.contains("Compared with <code>nightly-41</code>"), "the baseline section");
    assert!(
        dom.contains("2 regressed") && dom.contains("2 improved"),
        "largest and sqrt regressed; speed, author improved"
    );
    let prefix = st.key_prefix.expect("key prefix");
    assert!(dom.contains(&format!("openai ({prefix}…)")), "the key by its prefix");
    assert!(!dom.contains(&key[8..]), "never more of the key than its prefix");
    assert!(dom.contains(&env.ns) && dom.contains("KEK id"), "namespace and KEK in the metadata");

    let shot = dir.join("report.png");
    let out = chromium(
        &dir,
        &["--window-size=1280,2400".into(), format!("--screenshot={}", shot.display()), format!("file://{file_arg}")],
    )
    .await;
    assert!(out.status.success(), "chromium --screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot: {} bytes", png.len());
    eprintln!("report: {file_arg}\nscreenshot: {}", shot.display());

    // A price table of one's own is used before the built-in one, and says so.
    let prices = dir.join("prices.yaml");
    let table = "date: 2026-11-30\nsource: our contract\ncurrency: EUR\nmodels:\n  - {provider: openai, model: gpt-5.1, inputPerMillion: 1, outputPerMillion: 8}\n";
    std::fs::write(&prices, table).expect("prices");
    let ran = byok(&mut env, &["eval", "report", "nightly-42", "--prices", &prices.display().to_string()]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains(" EUR</strong>") && ran.stdout.contains("your price table of 2026-11-30"), "{ran:?}");
    // A format is not a file: the report is HTML only.
    let ran = byok(&mut env, &["eval", "report", "nightly-42", "-o", "json"]).await;
    assert!(ran.code != Some(0) && ran.stderr.contains("writes HTML"), "{ran:?}");
    env.assert_no_plaintext().await;
}

/// Case ids, inputs, outputs, expected values, scorer names and reasons are the tenant's: markup
/// in them is shown as text, never run, and cannot end the page's style or title.
#[tokio::test]
async fn report_shows_injected_markup_as_text_and_runs_none_of_it() {
    let mut env = TestEnv::new("report-xss").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    let script = "</style></title><script>document.body.setAttribute('data-pwned','script')</script>";
    let img = "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">";
    let spec = json!({
        "provider": "openai",
        "scorers": [
            { "type": "llm_judge", "name": "<script>alert(1)</script>", "rubric": "Correct." },
            // Not a valid pattern: the regex error, which quotes it, becomes every case's reason.
            { "type": "regex", "pattern": format!("{script}(") }
        ],
        "cases": [{
            "id": format!("{script}-id"), "input": script, "output": format!("{img} mock-score=0.1"),
            "expected": format!("</pre>{script}")
        }]
    });
    run_to_end(&mut env, "injected", spec).await;
    let dir = out_dir("report_shows_injected_markup_as_text_and_runs_none_of_it");
    let file = dir.join("report.html");
    let ran = byok(&mut env, &["eval", "report", "injected", "-o", &file.display().to_string()]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let html = std::fs::read_to_string(&file).expect("written");
    assert_self_contained(&html);
    assert_eq!(html.matches("</style>").count(), 1, "only the page's own style element ends");
    assert!(!html.contains("</style></title>"), "the payload never closes the page's title");

    let dom = rendered_dom(&dir, &file).await;
    assert!(!dom.contains("<script") && !dom.contains("<img"), "no injected element in the DOM");
    assert!(!dom.contains("data-pwned=\""), "nothing ran");
    assert!(dom.contains("<title>EvalJob injected — evaluation report</title>"), "title intact");
    let escaped =
        "&lt;/style&gt;&lt;/title&gt;&lt;script&gt;document.body.setAttribute('data-pwned','script')&lt;/script&gt;";
    assert!(dom.contains(&format!("{escaped}-id")), "the case id, as text");
    assert!(dom.contains(&format!("{escaped}(")), "the regex reason quoting the pattern, as text");
    assert!(dom.contains("&lt;img src=x onerror=\"document.body"), "the output, as text");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the scorer name, as text");
    env.assert_no_plaintext().await;
}

#[tokio::test]
async fn compare_exits_1_on_regressions_0_within_the_threshold_2_when_it_cannot_compare() {
    let mut env = TestEnv::new("report-compare").await;
    default_key(&mut env, "openai", Provider::OpenAi).await;
    run_to_end(&mut env, "base", spec(BASELINE)).await;
    run_to_end(&mut env, "same", spec(BASELINE)).await;
    run_to_end(&mut env, "worse", spec(CANDIDATE)).await;

    let ran = byok(&mut env, &["eval", "compare", "base", "same"]).await;
    assert_eq!(ran.code, Some(0), "identical runs: {ran:?}");
    assert!(ran.stdout.contains("8 case(s) in both, 0 regressed, 0 improved"), "{ran:?}");

    let ran = byok(&mut env, &["eval", "compare", "base", "worse"]).await;
    assert_eq!(ran.code, Some(1), "a regression fails the comparison: {ran:?}");
    assert!(
        ran.stdout.contains("2 regressed, 2 improved") && ran.stderr.contains("more than the threshold"),
        "{ran:?}"
    );
    let row = ran.stdout.lines().find(|l| l.starts_with("sqrt ")).unwrap_or_default();
    assert!(row.contains("regressed") && row.contains("llm_judge") && row.contains("passed 0.97"), "{ran:?}");

    let ran = byok(&mut env, &["eval", "compare", "base", "worse", "-o", "json"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(
        (v["regressed"].as_u64(), v["compared"].as_u64(), v["exceeded"].as_bool()),
        (Some(2), Some(8), Some(true))
    );
    let moved: Vec<&str> =
        v["changes"].as_array().expect("changes").iter().filter_map(|c| c["case"].as_str()).collect();
    assert_eq!(moved, ["largest", "speed", "author", "sqrt"]);

    for threshold in ["2", "25%", "0.25"] {
        let ran = byok(&mut env, &["eval", "compare", "base", "worse", "--threshold", threshold]).await;
        assert_eq!(ran.code, Some(0), "2 of 8 regressed is within {threshold}: {ran:?}");
    }
    let ran = byok(&mut env, &["eval", "compare", "base", "worse", "--threshold", "24%"]).await;
    assert_eq!(ran.code, Some(1), "{ran:?}");

    // Exit 2: nothing to compare with.
    let ran = byok(&mut env, &["eval", "compare", "base", "nope"]).await;
    assert!(ran.code == Some(2) && ran.stderr.contains("EvalJob nope not found"), "{ran:?}");
    let mut pending = spec(BASELINE);
    pending["provider"] = json!("anthropic");
    create_evaljob(&env, "waiting", pending).await;
    wait_evaljob(&env, "waiting", "WaitingForKey", |e| phase(e) == Some(EvalPhase::WaitingForKey)).await;
    let ran = byok(&mut env, &["eval", "compare", "base", "waiting"]).await;
    assert!(ran.code == Some(2) && ran.stderr.contains("has not finished"), "{ran:?}");
    let ran = byok(&mut env, &["eval", "compare", "base", "worse", "--threshold", "lots"]).await;
    assert_eq!(ran.code, Some(2), "a bad threshold is a usage error: {ran:?}");
    env.assert_no_plaintext().await;
}
