//! The KEK outside the cluster, what it costs: N ByokKeys imported to Ready under the keyring
//! Secret, then N more under Vault Transit (a dev server built by hack/kms.sh, on this machine), in
//! the same run, same client, same mock provider latency. Prints seconds to all Ready, keys/s, the
//! ratio, the operator's peak RSS and CPU, and the Vault requests the import made (from Vault's
//! own request metrics): DEK caching makes that a handful, not one per key.
//!
//! Run with `hack/bench.sh kms` (starts the cluster). Options via env: BENCH_KEYS (1000),
//! BENCH_LATENCY_MS (50), BENCH_CLIENT_CONCURRENCY (32).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use byok_operator::crd::ByokKey;
use byok_operator::mock::{self, MockConfig};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

mod common;
/// The Vault dev server of the tests (tests/common/kms.rs), with the waiting it needs.
#[path = "../tests/common/kms.rs"]
#[allow(dead_code)]
mod kms;
#[path = "../tests/common/wait.rs"]
mod wait;

use common::{create_keys, env_num, install_crds, proc_usage, wait_all_ready};
use wait::{eventually, random_hex};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let obj =
        Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await?;
    Ok(())
}

struct Run {
    seconds: f64,
    rss_mib: f64,
    idle_rss_mib: f64,
    cpu: f64,
}

/// One import of `n` keys with the operator started with `extra` arguments.
async fn import(
    client: &Client,
    tag: &str,
    extra: &[String],
    endpoint: &str,
    n: usize,
    par: usize,
) -> anyhow::Result<Run> {
    let ns = format!("bench-kms-{tag}-{}", std::process::id());
    let op_ns = format!("{ns}-op");
    namespace(client, &ns).await?;
    namespace(client, &op_ns).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut op = Command::new(env!("CARGO_BIN_EXE_byok-operator"))
        .args(["--namespace", &op_ns, "--watch-namespace", &ns, "--log-format", "json"])
        .args(["--openai-base-url", endpoint, "--broker-listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Started and serving (/healthz) before the clock runs.
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
    let healthz = format!("https://127.0.0.1:{port}/healthz");
    eventually("the operator listening", TIMEOUT, || async { http.get(&healthz).send().await.ok().map(|_| ()) }).await;
    let t = Instant::now();
    create_keys(client, &ns, n, par).await;
    wait_all_ready(client, &ns, n, Duration::from_secs(900)).await?;
    let seconds = t.elapsed().as_secs_f64();
    let usage = proc_usage(op.id())?;
    let idle = common::when_idle(op.id(), Duration::from_secs(2), Duration::from_secs(60)).await?;
    let _ = op.kill();
    let _ = op.wait();
    let nsapi: Api<Namespace> = Api::all(client.clone());
    nsapi.delete(&ns, &Default::default()).await?;
    nsapi.delete(&op_ns, &Default::default()).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Run { seconds, rss_mib: mib(usage.peak_kib), idle_rss_mib: mib(idle.rss_kib), cpu: usage.cpu_s })
}

/// Requests to the Transit mount so far, from Vault's file audit device (one request entry each).
fn transit_requests(audit: &std::path::Path) -> anyhow::Result<usize> {
    let log =
        std::fs::read_to_string(audit).map_err(|e| anyhow::anyhow!("Vault's audit log {}: {e}", audit.display()))?;
    Ok(log.lines().filter(|l| l.contains("\"type\":\"request\"") && l.contains("\"path\":\"transit/")).count())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_num("BENCH_KEYS", 1000);
    let latency = Duration::from_millis(env_num("BENCH_LATENCY_MS", 50) as u64);
    let par = env_num("BENCH_CLIENT_CONCURRENCY", 32);
    let client = Client::try_default().await?;
    install_crds(&client).await?;
    let keys: Api<ByokKey> = Api::all(client.clone());
    while keys.list(&ListParams::default().limit(1)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mock = mock::start(MockConfig { latency, ..MockConfig::default() }).await?;
    let ep = mock.endpoints().openai;
    let vault = kms::Vault::start("bench").await;
    let audit = vault.dir().join("audit.log");
    let options = serde_json::json!({"type": "file", "options": {"file_path": audit.to_string_lossy()}});
    vault.call("PUT", "sys/audit/file", Some(options)).await;

    let keyring = import(&client, "keyring", &[], &ep, n, par).await?;
    let before = transit_requests(&audit)?;
    let args: Vec<String> = [
        "--kms",
        "vault-transit",
        "--vault-addr",
        &vault.addr,
        "--vault-token-file",
        &vault.root_token_file.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let under_vault = import(&client, "vault", &args, &ep, n, par).await?;
    let calls = transit_requests(&audit)? - before;

    println!("byok-operator KMS benchmark: {n} ByokKeys + Secrets, mock latency {latency:?}, client concurrency {par}");
    println!(
        "  {:<26} {:>10} {:>8} {:>10} {:>10} {:>8}",
        "KEK source", "all Ready", "keys/s", "peak RSS", "idle RSS", "CPU"
    );
    for (what, r) in [("keyring Secret", &keyring), ("Vault Transit (dev server)", &under_vault)] {
        println!(
            "  {what:<26} {:>8.2} s {:>8.1} {:>6.1} MiB {:>6.1} MiB {:>6.2} s",
            r.seconds,
            n as f64 / r.seconds,
            r.rss_mib,
            r.idle_rss_mib,
            r.cpu
        );
    }
    println!("  Vault / keyring            {:>8.2}x  (goal <= 1.2)", under_vault.seconds / keyring.seconds);
    println!(
        "  Transit requests            {calls:>8}  (Vault's audit log; for {n} keys: one DEK per batch, key polls)"
    );
    Ok(())
}
