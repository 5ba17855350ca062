//! Import benchmark: N ByokKeys with their Secrets applied at once against the local control
//! plane, mock provider latency 50 ms. Prints seconds to all Ready, keys/s, operator peak RSS and
//! CPU seconds, and the API server's raw write rate measured in the same run with the same client,
//! so the import rate can be stated against the API-server-bound floor.
//!
//! Then the restart: the operator is SIGKILLed and started again; printed are the seconds until
//! its /readyz answers 200 (only once every cache holds all N keys), and the provider calls and
//! API writes it made in the seconds after (a restart with nothing to do makes none).
//!
//! Run with `hack/bench.sh` (starts the cluster). Options via env: BENCH_KEYS (1000),
//! BENCH_LATENCY_MS (50), BENCH_CLIENT_CONCURRENCY (32), BENCH_QUIET_SECONDS (5), BENCH_KEEP (set: the
//! namespaces are kept, to look into the operator by hand).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use byok_operator::crd::ByokKey;
use byok_operator::mock::{self, MockConfig};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

/// Mutating requests the API server has served, by `resource[/subresource] VERB`, from its own metrics.
async fn apiserver_writes_by(client: &Client) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let label = |line: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        line.split_once(&key).and_then(|(_, r)| r.split_once('"')).map(|(v, _)| v.to_string()).unwrap_or_default()
    };
    let mut by = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        // Server-side apply is its own verb, APPLY.
        let verb = label(line, "verb");
        if !["POST", "PUT", "PATCH", "APPLY", "DELETE"].contains(&verb.as_str()) {
            continue;
        }
        let (resource, sub) = (label(line, "resource"), label(line, "subresource"));
        let what = if sub.is_empty() { format!("{resource} {verb}") } else { format!("{resource}/{sub} {verb}") };
        let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *by.entry(what).or_insert(0.0) += n;
    }
    Ok(by)
}

/// Total mutating requests the API server has served.
async fn apiserver_writes(client: &Client) -> anyhow::Result<f64> {
    Ok(apiserver_writes_by(client).await?.values().sum())
}

/// Peak resident set (KiB) and CPU seconds of a process, from /proc.
use common::{create_keys, env_num, install_crds, proc_usage, report, wait_all_ready, when_idle};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_num("BENCH_KEYS", 1000);
    let latency = Duration::from_millis(env_num("BENCH_LATENCY_MS", 50) as u64);
    let par = env_num("BENCH_CLIENT_CONCURRENCY", 32);
    let client = Client::try_default().await?;

    install_crds(&client).await?;
    let ns = format!("bench-{}", std::process::id());
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace { metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await?;
    // Let the CRD be served before timing anything.
    let keys: Api<ByokKey> = Api::namespaced(client.clone(), &ns);
    while keys.list(&ListParams::default().limit(1)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. The API server's raw write rate, same client, same concurrency, no operator watching:
    //    N ConfigMap creates, and the workload's own mix (N Secrets + N ByokKeys) in a namespace
    //    no operator watches.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let raw_n = n;
    let t = Instant::now();
    stream::iter(0..raw_n)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let cm = ConfigMap {
                    metadata: ObjectMeta { name: Some(format!("raw-{i}")), ..Default::default() },
                    data: Some([("k".to_string(), "v".repeat(64))].into()),
                    ..Default::default()
                };
                cms.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        })
        .buffer_unordered(par)
        .for_each(report)
        .await;
    let raw_rate = raw_n as f64 / t.elapsed().as_secs_f64();
    let raw_ns = format!("{ns}-raw");
    let obj =
        Namespace { metadata: ObjectMeta { name: Some(raw_ns.clone()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await?;
    let t = Instant::now();
    create_keys(&client, &raw_ns, n, par).await;
    let mix_rate = (2 * n) as f64 / t.elapsed().as_secs_f64();
    nsapi.delete(&raw_ns, &Default::default()).await?;

    // 2. The operator, against a mock provider with the given latency, in a namespace of its own
    //    (keys are never imported from the operator's namespace).
    let op_ns = format!("{ns}-op");
    let obj =
        Namespace { metadata: ObjectMeta { name: Some(op_ns.clone()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await?;
    let mock = mock::start(MockConfig { latency, ..MockConfig::default() }).await?;
    let ep = mock.endpoints();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let start_operator = || {
        Command::new(env!("CARGO_BIN_EXE_byok-operator"))
            .args(["--namespace", &op_ns, "--watch-namespace", &ns, "--log-format", "json"])
            .args(["--openai-base-url", &ep.openai, "--broker-listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let mut op = start_operator()?;
    let pid = op.id();
    // Wait until the operator has its keyring (it creates it on first start).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &op_ns);
    while secrets.get_opt("byok-operator-kek").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let writes_before = apiserver_writes(&client).await?;
    let by_before = apiserver_writes_by(&client).await?;
    let t = Instant::now();
    create_keys(&client, &ns, n, par).await;
    let applied = t.elapsed();
    wait_all_ready(&client, &ns, n, Duration::from_secs(600)).await?;
    let all_ready = t.elapsed();
    let writes = apiserver_writes(&client).await? - writes_before;
    let by_after = apiserver_writes_by(&client).await?;
    let usage = proc_usage(pid)?;
    let idle = when_idle(pid, Duration::from_secs(2), Duration::from_secs(60)).await?;
    let _ = op.kill();
    let _ = op.wait();

    // 3. Restart: SIGKILLed above; ready only once its caches hold every key.
    let quiet = Duration::from_secs(env_num("BENCH_QUIET_SECONDS", 5) as u64);
    let calls_before = mock.requests_total();
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
    let readyz = format!("https://127.0.0.1:{port}/readyz");
    let t = Instant::now();
    let mut op = start_operator()?;
    let restart_pid = op.id();
    let mut first_answer = None;
    loop {
        match http.get(&readyz).send().await {
            Ok(r) if r.status().is_success() => break,
            Ok(_) => {
                first_answer.get_or_insert(t.elapsed());
            }
            Err(_) => {}
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(600), "not ready in 600 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_after = t.elapsed();
    let writes_at_ready = apiserver_writes(&client).await?;
    tokio::time::sleep(quiet).await;
    let restart_writes = apiserver_writes(&client).await? - writes_at_ready;
    let restart_calls = mock.requests_total() - calls_before;
    let restart = proc_usage(restart_pid)?;
    let _ = op.kill();
    let _ = op.wait();

    let writes_per_key = writes / n as f64;
    let floor = n as f64 * writes_per_key / raw_rate;
    let mix_floor = n as f64 * writes_per_key / mix_rate;
    println!(
        "byok-operator import benchmark: {n} ByokKeys + Secrets, mock latency {latency:?}, client concurrency {par}"
    );
    println!("  applied all objects in        {:>8.2} s", applied.as_secs_f64());
    println!("  all Ready after               {:>8.2} s", all_ready.as_secs_f64());
    println!("  keys/s                        {:>8.1}", n as f64 / all_ready.as_secs_f64());
    println!("  API server raw writes/s       {:>8.1}  (same client, {raw_n} ConfigMap creates)", raw_rate);
    println!("  API writes per key            {:>8.2}  (all clients, from apiserver_request_total)", writes_per_key);
    for (what, after) in &by_after {
        let per_key = (after - by_before.get(what).copied().unwrap_or(0.0)) / n as f64;
        if per_key >= 0.01 {
            println!("    {what:<34} {per_key:>6.2} per key");
        }
    }
    println!("  API-server-bound floor        {:>8.2} s  (keys x writes/key / raw writes/s)", floor);
    println!("  all Ready / floor             {:>8.2}", all_ready.as_secs_f64() / floor);
    println!(
        "  API server raw writes/s, mix  {:>8.1}  (same client, {n} Secrets + {n} ByokKeys, nobody watching)",
        mix_rate
    );
    println!("  floor from the mix            {:>8.2} s", mix_floor);
    println!("  all Ready / mix floor         {:>8.2}  (goal <= 1.2)", all_ready.as_secs_f64() / mix_floor);
    println!("  operator peak RSS             {:>8.1} MiB", usage.peak_kib as f64 / 1024.0);
    println!(
        "  operator CPU                  {:>8.2} s  ({:.0} us per key)",
        usage.cpu_s,
        usage.cpu_s * 1e6 / n as f64
    );
    println!("  operator RSS, Ready and idle  {:>8.1} MiB (target <= 64)", idle.rss_kib as f64 / 1024.0);
    println!("restart after SIGKILL, {n} Ready keys:");
    let not_ready = first_answer.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!("  /readyz first answered 503    {:>8}  (listening, caches not synced yet)", not_ready);
    println!("  /readyz 200 after             {:>8.2} s  (every cache synced)", ready_after.as_secs_f64());
    println!("  provider calls after restart  {:>8}  (target 0)", restart_calls);
    println!(
        "  API writes in {:>2} s after ready {:>6}  (all clients; target 0 from the operator)",
        quiet.as_secs(),
        restart_writes
    );
    println!("  peak RSS / CPU after restart  {:>8.1} MiB / {:.2} s", restart.peak_kib as f64 / 1024.0, restart.cpu_s);
    if std::env::var_os("BENCH_KEEP").is_some() {
        // To look into the operator with these keys (a heap profiler, a restart by hand).
        println!("kept: keys in namespace {ns}, the operator's keyring in {op_ns}");
        return Ok(());
    }
    nsapi.delete(&ns, &Default::default()).await?;
    nsapi.delete(&op_ns, &Default::default()).await?;
    Ok(())
}
