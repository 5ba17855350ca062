//! EvalJob latency benchmark: 200 EvalJobs applied against the local control plane; prints the
//! time from each EvalJob's create call returning to its judge Job existing (p50, p99, max).
//! Run with `hack/bench.sh evaljob` (starts the cluster). BENCH_EVALJOBS tunes the count.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use byok_operator::crd::{ByokKey, ByokKeySpec, EvalJob, KeyPhase, Provider};
use byok_operator::mock::{self, MockConfig};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt, ResourceExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_EVALJOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let client = Client::try_default().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [ByokKey::crd(), EvalJob::crd()] {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("byok-bench").force(), &Patch::Apply(crd)).await?;
    }
    let ns = format!("bench-ej-{}", std::process::id());
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace { metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await?;
    // The operator's own namespace: keys are never imported from it.
    let op_ns = format!("{ns}-op");
    let obj =
        Namespace { metadata: ObjectMeta { name: Some(op_ns.clone()), ..Default::default() }, ..Default::default() };
    nsapi.create(&PostParams::default(), &obj).await?;
    let mock = mock::start(MockConfig::default()).await?;
    let ep = mock.endpoints();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut op = Command::new(env!("CARGO_BIN_EXE_byok-operator"))
        .args(["--namespace", &op_ns, "--watch-namespace", &ns, "--openai-base-url", &ep.openai])
        .args(["--broker-listen", &format!("127.0.0.1:{port}"), "--broker-url", &format!("https://127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    // One default openai key, Ready.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let s = Secret {
        metadata: ObjectMeta { name: Some("src".into()), ..Default::default() },
        type_: Some(byok_operator::controller::byokkey::import::SOURCE_SECRET_TYPE.into()),
        string_data: Some([("apiKey".to_string(), format!("sk-proj-bench{}", "x".repeat(32)))].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &s).await?;
    let keys: Api<ByokKey> = Api::namespaced(client.clone(), &ns);
    let spec = ByokKeySpec { default: true, ..ByokKeySpec::from_secret(Provider::OpenAi, "src") };
    keys.create(&PostParams::default(), &ByokKey::new("key", spec)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !keys.get("key").await?.status.is_some_and(|s| s.phase == Some(KeyPhase::Ready) && s.effective_default) {
        anyhow::ensure!(Instant::now() < deadline, "key not Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Watch Jobs; record when each appears.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut s = watcher(jobs, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(j)) = s.next().await {
            let _ = tx.send((j.name_any(), Instant::now()));
        }
    });
    let ejs: Api<EvalJob> = Api::namespaced(client.clone(), &ns);
    let mut created = HashMap::new();
    let t = Instant::now();
    for i in 0..n {
        let name = format!("ej{i:03}");
        let ej: EvalJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "launchgate.ai/v1alpha1", "kind": "EvalJob", "metadata": { "name": name },
            "spec": { "provider": "openai", "scorers": [{ "type": "llm_judge", "rubric": "correct" }],
                      "cases": [{ "output": "x" }, { "output": "y" }] }
        }))?;
        ejs.create(&PostParams::default(), &ej).await?;
        created.insert(format!("{name}-judge"), Instant::now());
    }
    let applied = t.elapsed();
    let mut latencies = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while seen.len() < n {
        let (name, at) =
            tokio::time::timeout_at(deadline, rx.recv()).await?.ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        if let Some(c) = created.get(&name)
            && seen.insert(name)
        {
            latencies.push(at.saturating_duration_since(*c));
        }
    }
    let _ = op.kill();
    let _ = op.wait();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "EvalJob applied -> judge Job created, {n} EvalJobs created back to back in {:.2} s",
        applied.as_secs_f64()
    );
    println!("  p50 {:>8.1} ms", pct(0.50).as_secs_f64() * 1000.0);
    println!("  p99 {:>8.1} ms", pct(0.99).as_secs_f64() * 1000.0);
    println!("  max {:>8.1} ms", latencies[latencies.len() - 1].as_secs_f64() * 1000.0);
    nsapi.delete(&ns, &Default::default()).await?;
    nsapi.delete(&op_ns, &Default::default()).await?;
    Ok(())
}
