//! byok-operator side by side with the tools users would otherwise pick (issue 12), on the same
//! machine, in the same run, on the same work, one after the other:
//!
//! - Import: the sealed-secrets controller unsealing N SealedSecrets (sealed offline with
//!   `kubeseal --cert`) versus byok-operator importing N ByokKeys to Ready. Each against the
//!   API-server floor measured in the same run: the time the same client takes to create the
//!   user's own objects with nobody watching.
//! - Judging: promptfoo's `llm-rubric` (outputs given, no generation call) versus `byok-judge run`,
//!   both grading against the mock provider at 200 ms latency.
//!
//! Run with `hack/bench.sh compare`, which builds the peers (hack/peers.sh) and starts the cluster.
//! Options via env: BENCH_KEYS (1000), BENCH_SEALED (300: sealed-secrets runs at client-go's
//! default 5 QPS), BENCH_CASES (2000), BENCH_CONCURRENCY (32,256), BENCH_CLIENT_CONCURRENCY (32).
//! Prints figures and asserts nothing about them; fails loudly when a peer cannot run.

// Shared with the other benches; not every helper is used here.
#[allow(dead_code)]
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::post;
use axum::{Json, Router};
use byok_operator::crd::{ByokKey, Provider, Scorer, ScorerType};
use byok_operator::judge::wire::{JudgeConfig, Outcome, RESULTS_PATH, ResultsAck, ResultsReport};
use byok_operator::mock::{self, MockConfig};
use common::{create_keys, env_num, install_crds, proc_usage, report, wait_all_ready};
use futures::{StreamExt, stream};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};

const IMPORT_LATENCY: Duration = Duration::from_millis(50);
const JUDGE_LATENCY: Duration = Duration::from_millis(200);
const KEY: &str = "sk-bench-0123456789abcdef";
const RUBRIC: &str = "Is the answer correct and complete?";

/// The peers as hack/peers.sh built them.
struct Peers {
    ss_version: String,
    controller: PathBuf,
    kubeseal: PathBuf,
    crd: PathBuf,
    pf_version: String,
    promptfoo: PathBuf,
}

impl Peers {
    fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .with_context(|| format!("{name} is not set: run `hack/bench.sh compare` (hack/peers.sh)"))
        };
        let path = |name: &str| -> anyhow::Result<PathBuf> {
            let p = PathBuf::from(var(name)?);
            anyhow::ensure!(p.exists(), "{name}={} does not exist: hack/peers.sh did not build it", p.display());
            Ok(p)
        };
        Ok(Self {
            ss_version: var("PEER_SEALED_SECRETS_VERSION")?,
            controller: path("PEER_SEALED_SECRETS_CONTROLLER")?,
            kubeseal: path("PEER_KUBESEAL")?,
            crd: path("PEER_SEALED_SECRETS_CRD")?,
            pf_version: var("PEER_PROMPTFOO_VERSION")?,
            promptfoo: path("PEER_PROMPTFOO")?,
        })
    }
}

/// One import run's figures.
struct ImportRow {
    tool: String,
    n: usize,
    done: Duration,
    floor: Duration,
    floor_what: &'static str,
    peak_kib: u64,
    cpu_s: f64,
}

/// One judging run's figures.
struct JudgeRow {
    tool: String,
    concurrency: u32,
    cases: usize,
    elapsed: Duration,
    peak_kib: u64,
    parsed: usize,
    calls: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let peers = Peers::from_env()?;
    let n_byok = env_num("BENCH_KEYS", 1000);
    let n_sealed = env_num("BENCH_SEALED", 300);
    let cases = env_num("BENCH_CASES", 2000);
    let par = env_num("BENCH_CLIENT_CONCURRENCY", 32);
    let mut concurrencies = Vec::new();
    for c in std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "32,256".into()).split(',') {
        concurrencies.push(c.trim().parse::<u32>().map_err(|e| anyhow::anyhow!("BENCH_CONCURRENCY {c:?}: {e}"))?);
    }
    let client = Client::try_default().await?;
    let load_before = loadavg();

    let mut imports = Vec::new();
    eprintln!("[compare] sealed-secrets {}: {n_sealed} SealedSecrets", peers.ss_version);
    imports.push(sealed_secrets(&client, &peers, n_sealed, par).await.context("sealed-secrets import")?);
    let import_mock = mock::start(MockConfig { latency: IMPORT_LATENCY, ..MockConfig::default() }).await?;
    for n in [n_sealed, n_byok] {
        eprintln!("[compare] byok-operator: {n} ByokKeys");
        imports
            .push(byok_import(&client, &import_mock.endpoints().openai, n, par).await.context("byok-operator import")?);
    }
    drop(import_mock);

    let mut judges = Vec::new();
    for &c in &concurrencies {
        eprintln!("[compare] promptfoo {}: {cases} cases at concurrency {c}", peers.pf_version);
        judges.push(promptfoo(&peers, cases, c).await.context("promptfoo")?);
        eprintln!("[compare] byok-judge run: {cases} cases at concurrency {c}");
        judges.push(byok_judge(cases, c).await.context("byok-judge run")?);
    }
    let load_after = loadavg();

    println!("compare: byok-operator {} against its peers, one after the other", env!("CARGO_PKG_VERSION"));
    println!(
        "  machine: {} cores, load average {load_before} before, {load_after} after (shared: other work runs too;",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  figures are one run each, not medians)");
    println!();
    println!(
        "import (client concurrency {par}; floor = the same client creating the user's own objects, nobody watching)"
    );
    println!(
        "  {:<28} {:>5} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8}",
        "tool", "N", "done", "objects/s", "floor", "done/floor", "peak RSS", "CPU"
    );
    for r in &imports {
        println!(
            "  {:<28} {:>5} {:>7.2} s {:>9.1} {:>7.2} s {:>10.2} {:>5.1} MiB {:>6.2} s",
            r.tool,
            r.n,
            r.done.as_secs_f64(),
            r.n as f64 / r.done.as_secs_f64(),
            r.floor.as_secs_f64(),
            r.done.as_secs_f64() / r.floor.as_secs_f64(),
            r.peak_kib as f64 / 1024.0,
            r.cpu_s
        );
    }
    for r in &imports {
        println!("  floor of {} at N={}: {}", r.tool, r.n, r.floor_what);
    }
    println!(
        "  sealed-secrets N={n_sealed}, not {n_byok}: at client-go's default 5 QPS / burst 10 it needs ~10 min for 1,000;"
    );
    println!("  byok-operator runs at both N; compare rows of the same N. byok validates each key against the mock");
    println!(
        "  provider ({} ms latency); sealed-secrets calls no provider (RSA-OAEP + AES-GCM decrypt locally).",
        IMPORT_LATENCY.as_millis()
    );
    println!("  objects/s: N / done. peak RSS/CPU: the controller process over its life (start, sync, the N objects).");
    if let (Some(ss), Some(byok)) =
        (imports.first(), imports.iter().find(|r| r.n == n_sealed && r.tool.starts_with("byok")))
    {
        println!(
            "  like for like at N={n_sealed}: byok-operator {:.1}x the objects/s of sealed-secrets, {:.2}x its peak RSS, {:.2}x its CPU",
            ss.done.as_secs_f64() / byok.done.as_secs_f64(),
            byok.peak_kib as f64 / ss.peak_kib.max(1) as f64,
            byok.cpu_s / ss.cpu_s.max(0.01)
        );
    }
    println!();
    println!(
        "judging ({cases} cases, 1 LLM rubric each, outputs given, mock latency {} ms; ideal = concurrency / latency)",
        JUDGE_LATENCY.as_millis()
    );
    println!(
        "  {:<22} {:>11} {:>9} {:>9} {:>7} {:>9} {:>9} {:>16} {:>7}",
        "tool", "concurrency", "wall", "cases/s", "ideal", "of ideal", "peak RSS", "verdicts parsed", "calls"
    );
    for r in &judges {
        let ideal = f64::from(r.concurrency) / JUDGE_LATENCY.as_secs_f64();
        let rate = r.cases as f64 / r.elapsed.as_secs_f64();
        let all = if r.parsed == r.cases { "all" } else { "NOT all" };
        println!(
            "  {:<22} {:>11} {:>7.2} s {:>9.1} {:>7.0} {:>7.1} % {:>5.1} MiB {:>7} {:>4}/{:<4} {:>7}",
            r.tool,
            r.concurrency,
            r.elapsed.as_secs_f64(),
            rate,
            ideal,
            100.0 * rate / ideal,
            r.peak_kib as f64 / 1024.0,
            all,
            r.parsed,
            r.cases,
            r.calls
        );
    }
    println!(
        "  verdicts parsed: cases whose grade carries the mock's own verdict (its reason), i.e. the judge read it;"
    );
    println!("  calls: grader requests the mock served (one per case expected). peak RSS: the process tree's VmHWM.");
    for &c in &concurrencies {
        let rate = |tool: &str| {
            judges
                .iter()
                .find(|r| r.concurrency == c && r.tool.starts_with(tool))
                .map(|r| (r.cases as f64 / r.elapsed.as_secs_f64(), r.peak_kib as f64))
        };
        if let (Some((pf, pf_rss)), Some((bj, bj_rss))) = (rate("promptfoo"), rate("byok-judge")) {
            println!(
                "  at concurrency {c}: byok-judge {:.2}x the cases/s of promptfoo, {:.3}x its peak RSS",
                bj / pf,
                bj_rss / pf_rss.max(1.0)
            );
        }
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let obj =
        Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await.with_context(|| format!("create namespace {name}"))?;
    Ok(())
}

/// Deletes a namespace and waits until it is gone, so no controller started later sees its objects.
async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let nsapi: Api<Namespace> = Api::all(client.clone());
    nsapi.delete(name, &Default::default()).await?;
    let t = Instant::now();
    while nsapi.get_opt(name).await?.is_some() {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(300), "namespace {name} not gone after 300 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// byok-operator importing `n` ByokKeys to Ready; its floor is the same `n` Secrets + `n` ByokKeys
/// created in a namespace nobody watches.
async fn byok_import(client: &Client, openai: &str, n: usize, par: usize) -> anyhow::Result<ImportRow> {
    install_crds(client).await?;
    let ns = format!("cmp-byok-{n}-{}", std::process::id());
    let (floor_ns, op_ns) = (format!("{ns}-floor"), format!("{ns}-op"));
    for name in [&ns, &floor_ns, &op_ns] {
        create_namespace(client, name).await?;
    }
    // Let the CRD be served before timing anything.
    let keys: Api<ByokKey> = Api::namespaced(client.clone(), &ns);
    while keys.list(&ListParams::default().limit(1)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Untimed: the first writes of a kind pay for connections and the API server's first use of it.
    let warm_ns = format!("{ns}-warm");
    create_namespace(client, &warm_ns).await?;
    create_keys(client, &warm_ns, 2, par).await;
    delete_namespace(client, &warm_ns).await?;
    let t = Instant::now();
    create_keys(client, &floor_ns, n, par).await;
    let floor = t.elapsed();
    delete_namespace(client, &floor_ns).await?;

    let port = free_port()?;
    let op = Command::new(env!("CARGO_BIN_EXE_byok-operator"))
        .args(["--namespace", &op_ns, "--watch-namespace", &ns, "--log-format", "json"])
        .args(["--openai-base-url", openai, "--broker-listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start byok-operator")?;
    let op = KillOnDrop(op);
    let pid = op.0.id();
    // The operator creates its keyring on first start: it is up.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &op_ns);
    while secrets.get_opt("byok-operator-kek").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    create_keys(client, &ns, n, par).await;
    wait_all_ready(client, &ns, n, Duration::from_secs(1200)).await?;
    let done = t.elapsed();
    let usage = proc_usage(pid)?;
    drop(op);
    let nsapi: Api<Namespace> = Api::all(client.clone());
    nsapi.delete(&ns, &Default::default()).await?;
    nsapi.delete(&op_ns, &Default::default()).await?;
    Ok(ImportRow {
        tool: "byok-operator".into(),
        n,
        done,
        floor,
        floor_what: "N Secrets + N ByokKeys created, no operator",
        peak_kib: usage.peak_kib,
        cpu_s: usage.cpu_s,
    })
}

/// The API server's address and CA (PEM) from the kubeconfig, for the controller's in-cluster config.
fn api_server() -> anyhow::Result<(String, String, Vec<u8>)> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read().context("read the kubeconfig")?;
    let cluster_name = kc
        .current_context
        .as_ref()
        .and_then(|c| kc.contexts.iter().find(|n| &n.name == c))
        .and_then(|n| n.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| cluster_name.as_ref().is_none_or(|n| &c.name == n))
        .and_then(|c| c.cluster.clone())
        .context("no cluster in the kubeconfig")?;
    let server: http::Uri = cluster.server.context("no server in the kubeconfig")?.parse()?;
    let host = server.host().context("no host in the server URL")?.to_string();
    let port = server.port_u16().unwrap_or(443).to_string();
    let ca = match (cluster.certificate_authority_data, cluster.certificate_authority) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD.decode(data.trim())?,
        (None, Some(file)) => std::fs::read(&file).with_context(|| format!("read {file}"))?,
        (None, None) => anyhow::bail!("no CA in the kubeconfig"),
    };
    Ok((host, port, ca))
}

/// The sealed-secrets controller as a local process. It only knows the in-cluster config (no
/// kubeconfig flag), so it runs in a private mount namespace where a tmpfs on /run holds the
/// ServiceAccount token and CA at the in-cluster path; the host's /run is untouched. That needs
/// root (CAP_SYS_ADMIN); without it the controller's start fails with unshare's message.
struct Controller {
    child: KillOnDrop,
    health: String,
    log: PathBuf,
}

impl Controller {
    fn start(peers: &Peers, dir: &Path, ctrl_ns: &str, api: &(String, String, Vec<u8>)) -> anyhow::Result<Self> {
        let (http_port, metrics_port) = (free_port()?, free_port()?);
        let log = dir.join(format!("controller-{http_port}.log"));
        let script = r#"mount -t tmpfs tmpfs /run && d=/run/secrets/kubernetes.io/serviceaccount && mkdir -p $d \
            && cp "$0/token" "$0/ca.crt" $d/ && exec "$1" --listen-addr="127.0.0.1:$2" --listen-metrics-addr="127.0.0.1:$3""#;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .arg(dir)
            .arg(&peers.controller)
            .args([http_port.to_string(), metrics_port.to_string()])
            .env("KUBERNETES_SERVICE_HOST", &api.0)
            .env("KUBERNETES_SERVICE_PORT", &api.1)
            .env("POD_NAMESPACE", ctrl_ns)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("start the sealed-secrets controller (unshare)")?;
        Ok(Self { child: KillOnDrop(child), health: format!("http://127.0.0.1:{http_port}/healthz"), log })
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.0.try_wait()? {
                anyhow::bail!("sealed-secrets controller exited ({status}): {}", self.log_tail());
            }
            if http.get(&self.health).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(180) {
                anyhow::bail!("sealed-secrets controller not healthy after 180 s: {}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A child process killed when dropped, so no error path leaves a controller running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sealed_secret_resource() -> ApiResource {
    ApiResource {
        group: "bitnami.com".into(),
        version: "v1alpha1".into(),
        api_version: "bitnami.com/v1alpha1".into(),
        kind: "SealedSecret".into(),
        plural: "sealedsecrets".into(),
    }
}

/// Creates the SealedSecrets in `ns`, `par` requests in flight.
async fn create_sealed(client: &Client, ns: &str, sealed: &[DynamicObject], par: usize) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &sealed_secret_resource());
    stream::iter(sealed)
        .map(|obj| {
            let (api, mut obj) = (api.clone(), obj.clone());
            async move {
                obj.metadata.namespace = Some(ns.to_string());
                api.create(&PostParams::default(), &obj).await.map(|_| ())
            }
        })
        .buffer_unordered(par)
        .for_each(report)
        .await;
}

/// The sealed-secrets controller unsealing `n` SealedSecrets; its floor is the same `n`
/// SealedSecrets created with no controller running.
async fn sealed_secrets(client: &Client, peers: &Peers, n: usize, par: usize) -> anyhow::Result<ImportRow> {
    // The release's CRD, as its chart installs it.
    let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&peers.crd)?)
        .with_context(|| format!("parse {}", peers.crd.display()))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_name = crd.metadata.name.clone().context("the CRD has no name")?;
    crds.patch(&crd_name, &PatchParams::apply("byok-bench").force(), &Patch::Apply(&crd)).await?;

    let pid = std::process::id();
    let (ctrl_ns, floor_ns, ns) =
        (format!("cmp-ss-system-{pid}"), format!("cmp-ss-floor-{pid}"), format!("cmp-ss-{pid}"));
    create_namespace(client, &ctrl_ns).await?;
    let sealed_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ctrl_ns, &sealed_secret_resource());
    while sealed_api.list(&ListParams::default().limit(1)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its identity: a ServiceAccount bound to cluster-admin (the chart's role is narrower; RBAC
    // does not change the work) and a token for it.
    let sa_name = "sealed-secrets-controller";
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ctrl_ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(sa_name.into()), ..Default::default() },
        ..Default::default()
    };
    sas.create(&PostParams::default(), &sa).await?;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta { name: Some(ctrl_ns.clone()), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa_name.into(),
            namespace: Some(ctrl_ns.clone()),
            ..Default::default()
        }]),
    };
    crbs.create(&PostParams::default(), &crb).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(7200), ..Default::default() },
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa_name, &PostParams::default(), &request)
        .await?
        .status
        .context("no token in the TokenRequest")?
        .token;
    let dir = tempfile::tempdir()?;
    let api = api_server()?;
    std::fs::write(dir.path().join("token"), token)?;
    std::fs::write(dir.path().join("ca.crt"), &api.2)?;

    // First start: the controller generates its sealing key; its certificate is what users seal with.
    let mut ctrl = Controller::start(peers, dir.path(), &ctrl_ns, &api)?;
    ctrl.wait_healthy().await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ctrl_ns);
    let keys = secrets.list(&ListParams::default().labels("sealedsecrets.bitnami.com/sealed-secrets-key")).await?;
    let cert = keys
        .items
        .iter()
        .find_map(|s| s.data.as_ref()?.get("tls.crt").cloned())
        .context("the controller made no sealing key")?;
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, cert.0)?;
    drop(ctrl);

    // Offline sealing, untimed: the user's side of the workflow.
    let t = Instant::now();
    let (kubeseal, cert, sealed_ns) = (peers.kubeseal.clone(), cert_path.clone(), ns.clone());
    let sealed = tokio::task::spawn_blocking(move || {
        (0..n).map(|i| seal(&kubeseal, &cert, &sealed_ns, i)).collect::<anyhow::Result<Vec<DynamicObject>>>()
    })
    .await??;
    eprintln!("[compare]   sealed {n} Secrets offline with kubeseal --cert in {:.1} s", t.elapsed().as_secs_f64());

    // The floor: the same SealedSecrets, same client, no controller running.
    // Untimed warm-up, as for byok-operator's floor.
    let warm_ns = format!("{floor_ns}-warm");
    create_namespace(client, &warm_ns).await?;
    create_sealed(client, &warm_ns, &sealed[..n.min(2)], par).await;
    delete_namespace(client, &warm_ns).await?;
    create_namespace(client, &floor_ns).await?;
    let t = Instant::now();
    create_sealed(client, &floor_ns, &sealed, par).await;
    let floor = t.elapsed();
    delete_namespace(client, &floor_ns).await?;

    // Second start, the measured one: it finds its key and waits for work.
    create_namespace(client, &ns).await?;
    let mut ctrl = Controller::start(peers, dir.path(), &ctrl_ns, &api)?;
    ctrl.wait_healthy().await?;
    let pid = ctrl.child.0.id();
    let t = Instant::now();
    let unsealed: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut events = watcher::watcher(unsealed, watcher::Config::default()).applied_objects().boxed();
    create_sealed(client, &ns, &sealed, par).await;
    let mut seen = HashSet::new();
    let wait = async {
        while seen.len() < n {
            match events.next().await {
                Some(Ok(s)) => {
                    let name = s.metadata.name.unwrap_or_default();
                    if name.starts_with("ss") {
                        seen.insert(name);
                    }
                }
                Some(Err(e)) => eprintln!("watch: {e}"),
                None => anyhow::bail!("watch ended"),
            }
        }
        Ok(())
    };
    let waited = tokio::time::timeout(Duration::from_secs(1800), wait).await;
    let done = t.elapsed();
    let usage = proc_usage(pid);
    let tail = ctrl.log_tail();
    drop(ctrl);
    match waited {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("only {} of {n} Secrets unsealed in 1800 s; controller log: {tail}", seen.len()),
    }
    let usage = usage?;
    let nsapi: Api<Namespace> = Api::all(client.clone());
    for name in [&ns, &ctrl_ns] {
        nsapi.delete(name, &Default::default()).await?;
    }
    crbs.delete(&ctrl_ns, &Default::default()).await?;
    Ok(ImportRow {
        tool: format!("sealed-secrets {}", peers.ss_version),
        n,
        done,
        floor,
        floor_what: "N SealedSecrets created, no controller",
        peak_kib: usage.peak_kib,
        cpu_s: usage.cpu_s,
    })
}

/// Secret `ss<i>` of namespace `ns`, sealed by kubeseal with the controller's certificate.
fn seal(kubeseal: &Path, cert: &Path, ns: &str, i: usize) -> anyhow::Result<DynamicObject> {
    use std::io::Write;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": format!("ss{i:04}"), "namespace": ns},
        "stringData": {"apiKey": format!("sk-proj-bench{i:04}{}", "x".repeat(32))}
    });
    let mut child = Command::new(kubeseal)
        .arg("--cert")
        .arg(cert)
        .args(["--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run kubeseal")?;
    let mut stdin = child.stdin.take().context("kubeseal stdin")?;
    stdin.write_all(secret.to_string().as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "kubeseal failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).context("kubeseal's output is not a SealedSecret")
}

/// Peak resident set of a process and its descendants (sum of VmHWM), sampled until it exits.
async fn wait_sampling(mut child: Child) -> anyhow::Result<(std::process::ExitStatus, u64)> {
    tokio::task::spawn_blocking(move || {
        let pid = child.id();
        let mut peak = 0u64;
        loop {
            peak = peak.max(tree_hwm_kib(pid));
            if let Some(status) = child.try_wait()? {
                return Ok((status, peak));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await?
}

fn tree_hwm_kib(root: u32) -> u64 {
    let status_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let field = |status: &str, name: &str| -> Option<u64> {
        status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(s) = status_of(pid) {
                let ppid = field(&s, "PPid:").unwrap_or(0) as u32;
                all.push((pid, ppid, field(&s, "VmHWM:").unwrap_or(0)));
            }
        }
    }
    let mut tree = vec![root];
    let mut total = 0;
    while let Some(p) = tree.pop() {
        for &(pid, ppid, hwm) in &all {
            if pid == p {
                total += hwm;
            }
            if ppid == p {
                tree.push(pid);
            }
        }
    }
    total
}

/// promptfoo grading the given outputs with `llm-rubric` against the mock (OpenAI chat, gpt-4o).
async fn promptfoo(peers: &Peers, cases: usize, concurrency: u32) -> anyhow::Result<JudgeRow> {
    let mock = mock::start(MockConfig { latency: JUDGE_LATENCY, ..MockConfig::default() }).await?;
    let dir = tempfile::tempdir()?;
    let tests: Vec<Value> = (0..cases).map(|i| json!({"vars": {"output": case_output(i)}})).collect();
    // The `echo` provider returns the prompt, so the output is the case's and no model generates it.
    let config = json!({
        "description": "byok-operator compare bench",
        "prompts": ["{{output}}"],
        "providers": ["echo"],
        "defaultTest": {
            "options": {"provider": {"id": "openai:chat:gpt-4o", "config": {"apiBaseUrl": mock.endpoints().openai, "apiKey": KEY}}},
            "assert": [{"type": "llm-rubric", "value": RUBRIC}]
        },
        "tests": tests
    });
    let config_path = dir.path().join("promptfooconfig.json");
    std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
    let out = dir.path().join("results.json");
    let started = Instant::now();
    let child = Command::new(&peers.promptfoo)
        .arg("eval")
        .arg("--config")
        .arg(&config_path)
        .arg("--output")
        .arg(&out)
        .args(["--max-concurrency", &concurrency.to_string(), "--no-cache", "--no-progress-bar", "--no-table"])
        .env("PROMPTFOO_DISABLE_TELEMETRY", "1")
        .env("PROMPTFOO_DISABLE_UPDATE", "1")
        .env("PROMPTFOO_DISABLE_SHARING", "1")
        // Its results database and logs stay in the temporary directory.
        .env("PROMPTFOO_CONFIG_DIR", dir.path())
        .env("OPENAI_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr"))?)
        .current_dir(dir.path())
        .spawn()
        .context("start promptfoo")?;
    let (status, peak_kib) = wait_sampling(child).await?;
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    // promptfoo exits 100 when a test fails: the figures say how many did.
    let results: Value = serde_json::from_slice(
        &std::fs::read(&out).with_context(|| format!("promptfoo wrote no results ({status}): {stderr}"))?,
    )
    .context("promptfoo's results are not JSON")?;
    let rows = results["results"]["results"].as_array().context("no results.results in promptfoo's output")?;
    // A verdict was parsed when the grade carries the mock's own reason.
    let parsed = rows
        .iter()
        .filter(|r| {
            r["gradingResult"]["componentResults"]
                .as_array()
                .is_some_and(|c| c.iter().any(|g| g["reason"].as_str().is_some_and(|s| s.starts_with("mock verdict"))))
        })
        .count();
    if parsed < cases {
        let example = rows.iter().find_map(|r| r["gradingResult"]["reason"].as_str()).unwrap_or("-");
        eprintln!("[compare]   promptfoo: {parsed} of {cases} verdicts parsed, e.g. {example:?} ({status})");
    }
    Ok(JudgeRow {
        tool: format!("promptfoo {}", peers.pf_version),
        concurrency,
        cases,
        elapsed,
        peak_kib,
        parsed,
        calls: mock.requests_for_key(KEY),
    })
}

/// The same output text for both judges; `mock-score=0.8` makes the mock's verdict a pass.
fn case_output(i: usize) -> String {
    format!("The answer to question {i} is forty-two. mock-score=0.8")
}

/// `byok-judge run` as the judge bench drives it (config.json, cases.jsonl, key file, a fake
/// HTTPS broker), with the one llm_judge scorer promptfoo's run also has.
async fn byok_judge(cases: usize, concurrency: u32) -> anyhow::Result<JudgeRow> {
    let mock = mock::start(MockConfig { latency: JUDGE_LATENCY, ..MockConfig::default() }).await?;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let (ca, cert, key) = pki()?;
    std::fs::write(path("ca.crt"), ca)?;
    std::fs::write(path("results-token"), "bench-results-token")?;
    std::fs::write(path("key"), KEY)?;
    let passed = Arc::new(AtomicUsize::new(0));
    let passed_in = passed.clone();
    let app = Router::new().route(
        RESULTS_PATH,
        post(move |Json(report): Json<ResultsReport>| {
            let passed = passed_in.clone();
            async move {
                if report.done {
                    let ok = report.results.iter().filter(|r| r.scores.iter().all(|s| s.outcome == Outcome::Passed));
                    passed.store(ok.count(), Ordering::SeqCst);
                }
                Json(ResultsAck::default())
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let broker = format!("https://{}", listener.local_addr()?);
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await?;
    let server = tokio::spawn(axum_server::tls_rustls::from_tcp_rustls(listener, tls)?.serve(app.into_make_service()));

    let config = JudgeConfig {
        panels: Default::default(),
        namespace: "bench".into(),
        eval_job: "bench".into(),
        provider: Provider::OpenAi,
        model: "gpt-4o".into(),
        azure: None,
        scorers: vec![Scorer { rubric: Some(RUBRIC.into()), ..Scorer::of(ScorerType::LlmJudge) }],
        concurrency,
        retries: 2,
        call_timeout_seconds: 30,
        shards: 1,
        endpoints: mock.endpoints().into(),
    };
    std::fs::write(path("config.json"), serde_json::to_vec(&config)?)?;
    let lines: String = (0..cases)
        .map(|i| {
            json!({"id": format!("case-{i}"), "input": format!("Question {i}?"), "output": case_output(i)}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path("cases.jsonl"), lines)?;
    let p = |name: &str| path(name).display().to_string();
    let sha = |file: &str| std::fs::read(file).map(|b| byok_operator::judge::pin::sha256_hex(&b));
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_byok-judge"))
        .args(["run", "--config", &p("config.json"), "--cases", &p("cases.jsonl"), "--key-file", &p("key")])
        .args(["--shard", "0", "--broker", &broker, "--results-token-file", &p("results-token")])
        .args(["--ca-file", &p("ca.crt"), "--pod-uid", "bench-pod"])
        .args(["--config-sha256", &sha(&p("config.json"))?, "--cases-sha256", &sha(&p("cases.jsonl"))?])
        .args(["--ca-sha256", &sha(&p("ca.crt"))?])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start byok-judge")?;
    let (status, peak_kib) = wait_sampling(child).await?;
    let elapsed = started.elapsed();
    server.abort();
    anyhow::ensure!(status.success(), "byok-judge run failed: {status}");
    Ok(JudgeRow {
        tool: "byok-judge run".into(),
        concurrency,
        cases,
        elapsed,
        peak_kib,
        parsed: passed.load(Ordering::SeqCst),
        calls: mock.requests_for_key(KEY),
    })
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
