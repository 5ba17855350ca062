//! Judge throughput and memory: the real `byok-judge run` binary as a child process scoring cases
//! (one llm_judge scorer and one deterministic scorer) against the in-process mock provider with
//! 200 ms latency, reporting to a fake HTTPS broker; one run per concurrency.
//!
//!     cargo bench --bench judge
//!     BENCH_CONCURRENCY=32,256,1024 BENCH_CASES=100000 cargo bench --bench judge
//!
//! BENCH_CONCURRENCY: the concurrencies, one run each (default 32,256,1024). BENCH_CASES: cases per
//! run (default: 2,000, or 20 rounds of the concurrency when that is more, so the ramp up and the
//! last round do not decide the rate, up to 8,192: a shard's every report carries all its results,
//! and the broker reads at most 4 MiB, about 10,000 of these). Prints cases/s against the ideal (concurrency / latency)
//! and the child's peak RSS (VmHWM from /proc/<pid>/status, sampled while it runs). Goals (issue
//! 12): >= 97 % / 95 % / 90 % of ideal at 32 / 256 / 1,024; <= 32 MiB at 100,000 cases.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use byok_operator::crd::{Provider, Scorer, ScorerType};
use byok_operator::judge::wire::{JudgeConfig, MAX_REPORT_BYTES, Outcome, RESULTS_PATH, ResultsAck, ResultsReport};
use byok_operator::mock::{self, MockConfig};

const LATENCY: Duration = Duration::from_millis(200);
const KEY: &str = "sk-bench-0123456789abcdef";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let list = std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "32,256,1024".into());
    let mut runs = Vec::new();
    for c in list.split(',') {
        let concurrency: u32 = c.trim().parse().map_err(|e| anyhow::anyhow!("BENCH_CONCURRENCY {c:?}: {e}"))?;
        let cases = match std::env::var("BENCH_CASES") {
            Ok(v) => v.parse().map_err(|e| anyhow::anyhow!("BENCH_CASES {v:?}: {e}"))?,
            // A shard reports all its results in each report (at most 4 MiB): about 10,000 of
            // these cases fit, so 1,024 runs 8 rounds rather than 20.
            Err(_) => 2000.max(20 * concurrency as usize).min(8192),
        };
        runs.push(runtime.block_on(bench(cases, concurrency))?);
    }
    println!("judge bench: 1 llm_judge + 1 contains scorer, mock latency {LATENCY:?}, 2 cores");
    println!(
        "  {:>11} {:>8} {:>9} {:>12} {:>8} {:>10} {:>8}",
        "concurrency", "cases", "wall", "cases/s", "ideal", "of ideal", "peak RSS"
    );
    for r in &runs {
        let ideal = f64::from(r.concurrency) / LATENCY.as_secs_f64();
        let rate = r.cases as f64 / r.elapsed.as_secs_f64();
        println!(
            "  {:>11} {:>8} {:>7.2} s {:>12.1} {:>8.0} {:>8.1} % {:>4.1} MiB",
            r.concurrency,
            r.cases,
            r.elapsed.as_secs_f64(),
            rate,
            ideal,
            100.0 * rate / ideal,
            r.peak_kib as f64 / 1024.0
        );
    }
    Ok(())
}

/// One run's figures.
struct Run {
    cases: usize,
    concurrency: u32,
    elapsed: Duration,
    peak_kib: u64,
}

async fn bench(cases: usize, concurrency: u32) -> anyhow::Result<Run> {
    let mock = mock::start(MockConfig { latency: LATENCY, ..MockConfig::default() }).await?;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);

    // A fake broker over HTTPS that records the final report's outcome counts.
    let (ca, cert, key) = pki()?;
    std::fs::write(path("ca.crt"), ca)?;
    std::fs::write(path("results-token"), "bench-results-token")?;
    std::fs::write(path("key"), KEY)?;
    let passed = Arc::new(AtomicUsize::new(usize::MAX));
    let reports = Arc::new(AtomicUsize::new(0));
    let (passed_in, reports_in) = (passed.clone(), reports.clone());
    let app = Router::new()
        .route(
            RESULTS_PATH,
            post(move |Json(report): Json<ResultsReport>| {
                let (passed, reports) = (passed_in.clone(), reports_in.clone());
                async move {
                    reports.fetch_add(1, Ordering::SeqCst);
                    if report.done {
                        let ok =
                            report.results.iter().filter(|r| r.scores.iter().all(|s| s.outcome == Outcome::Passed));
                        passed.store(ok.count(), Ordering::SeqCst);
                    }
                    Json(ResultsAck::default())
                }
            }),
        )
        // What the real broker reads (axum's default, 2 MiB, would refuse reports the broker takes).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REPORT_BYTES));
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let broker = format!("https://{}", listener.local_addr()?);
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await?;
    tokio::spawn(axum_server::tls_rustls::from_tcp_rustls(listener, tls)?.serve(app.into_make_service()));

    let endpoints = mock.endpoints();
    let config = JudgeConfig {
        panels: Default::default(),
        namespace: "bench".into(),
        eval_job: "bench".into(),
        provider: Provider::OpenAi,
        model: "gpt-4o".into(),
        azure: None,
        scorers: vec![
            Scorer { rubric: Some("Is the answer correct and complete?".into()), ..Scorer::of(ScorerType::LlmJudge) },
            Scorer { ignore_case: true, ..Scorer::of(ScorerType::Contains) },
        ],
        concurrency,
        retries: 2,
        call_timeout_seconds: 30,
        shards: 1,
        endpoints: endpoints.into(),
    };
    std::fs::write(path("config.json"), serde_json::to_vec(&config)?)?;
    let lines: String = (0..cases)
        .map(|i| {
            let output = format!("The answer to question {i} is forty-two. mock-score=0.8");
            serde_json::json!({"id": format!("case-{i}"), "input": format!("Question {i}?"), "output": output, "expected": "forty-two"})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path("cases.jsonl"), lines)?;

    let p = |name: &str| path(name).display().to_string();
    let sha = |file: &str| std::fs::read(file).map(|b| byok_operator::judge::pin::sha256_hex(&b));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_byok-judge"))
        .args(["run", "--config", &p("config.json"), "--cases", &p("cases.jsonl"), "--key-file", &p("key")])
        .args(["--shard", "0", "--broker", &broker, "--results-token-file", &p("results-token")])
        .args(["--ca-file", &p("ca.crt"), "--pod-uid", "bench-pod"])
        // The pins the operator would put in the Job's command.
        .args(["--config-sha256", &sha(&p("config.json"))?, "--cases-sha256", &sha(&p("cases.jsonl"))?])
        .args(["--ca-sha256", &sha(&p("ca.crt"))?])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Sample the child's high-water mark while it runs (it is gone from /proc once reaped).
    let (status, peak_kib) = tokio::task::spawn_blocking(move || {
        let mut peak = 0u64;
        loop {
            peak = peak.max(vm_hwm_kib(pid).unwrap_or(0));
            if let Some(status) = child.try_wait()? {
                return Ok::<_, std::io::Error>((status, peak));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await??;
    let elapsed = started.elapsed();
    anyhow::ensure!(status.success(), "byok-judge run failed: {status}");
    let passed = passed.load(Ordering::SeqCst);
    anyhow::ensure!(passed == cases, "{passed} of {cases} cases passed");
    anyhow::ensure!(mock.requests_for_key(KEY) == cases as u64, "expected one provider call per case");
    eprintln!(
        "  judge: {cases} cases at concurrency {concurrency} in {:.2} s, {} reports",
        elapsed.as_secs_f64(),
        reports.load(Ordering::SeqCst)
    );
    Ok(Run { cases, concurrency, elapsed, peak_kib })
}

/// VmHWM (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A CA and a serving certificate for 127.0.0.1, as PEM.
fn pki() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&server_key, &issuer)?;
    Ok((ca.pem(), server.pem(), server_key.serialize_pem()))
}
