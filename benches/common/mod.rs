//! What the benches share: options from the environment, a process's peak RSS and CPU, and the
//! workload (source Secrets and the ByokKeys importing them).

use std::time::Duration;

use byok_operator::crd::{ByokKey, ByokKeySpec, KeyPhase, Provider};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What a process holds and has used, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcUsage {
    /// Peak resident set (VmHWM), KiB.
    pub peak_kib: u64,
    /// Resident set now (VmRSS), KiB.
    pub rss_kib: u64,
    /// User + system CPU, seconds.
    pub cpu_s: f64,
}

/// Reads [`ProcUsage`] of process `pid`.
pub fn proc_usage(pid: u32) -> anyhow::Result<ProcUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line =
            status.lines().find(|l| l.starts_with(name)).ok_or_else(|| anyhow::anyhow!("no {name} for {pid}"))?;
        let kib = line.split_whitespace().nth(1).ok_or_else(|| anyhow::anyhow!("empty {name}"))?;
        Ok(kib.parse()?)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow::anyhow!("bad /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut ticks = 0.0;
    for i in [11, 12] {
        ticks += fields.get(i).ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?.parse::<f64>()?;
    }
    Ok(ProcUsage { peak_kib: field("VmHWM:")?, rss_kib: field("VmRSS:")?, cpu_s: ticks / 100.0 })
}

/// Waits until process `pid` has used no CPU for `quiet` (its work drained), at most `limit`,
/// and returns its usage then: the idle figures.
pub async fn when_idle(pid: u32, quiet: Duration, limit: Duration) -> anyhow::Result<ProcUsage> {
    let start = std::time::Instant::now();
    let mut last = proc_usage(pid)?;
    loop {
        tokio::time::sleep(quiet).await;
        let now = proc_usage(pid)?;
        // One tick of slack: timers and the metrics endpoint are not work.
        if now.cpu_s - last.cpu_s <= 0.01 || start.elapsed() >= limit {
            return Ok(now);
        }
        last = now;
    }
}

/// Says a failed write (the benches go on: the figures show it).
pub async fn report<T>(r: Result<T, kube::Error>) {
    if let Err(e) = r {
        eprintln!("write failed: {e}");
    }
}

/// Creates `n` source Secrets and ByokKeys importing them, `par` requests in flight.
pub async fn create_keys(client: &Client, ns: &str, n: usize, par: usize) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let keys: Api<ByokKey> = Api::namespaced(client.clone(), ns);
    stream::iter(0..n)
        .map(|i| {
            let (secrets, keys) = (secrets.clone(), keys.clone());
            async move {
                let name = format!("k{i:04}");
                let value = format!("sk-proj-bench{i:04}{}", "x".repeat(32));
                secrets.create(&PostParams::default(), &secret(&format!("{name}-src"), &value)).await?;
                let spec = ByokKeySpec::from_secret(Provider::OpenAi, &format!("{name}-src"));
                keys.create(&PostParams::default(), &ByokKey::new(&name, spec)).await.map(|_| ())
            }
        })
        .buffer_unordered(par)
        .for_each(report)
        .await;
}

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        type_: Some(byok_operator::controller::byokkey::import::SOURCE_SECRET_TYPE.into()),
        string_data: Some([("apiKey".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

/// Waits until `n` ByokKeys of `ns` are Ready, counted from a watch (polling full lists would load
/// the API server being measured).
pub async fn wait_all_ready(client: &Client, ns: &str, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let keys: Api<ByokKey> = Api::namespaced(client.clone(), ns);
    let mut ready = std::collections::HashSet::new();
    let mut events = watcher::watcher(keys, watcher::Config::default()).applied_objects().boxed();
    let wait = async {
        while ready.len() < n {
            match events.next().await {
                Some(Ok(k)) if k.status.as_ref().and_then(|s| s.phase) == Some(KeyPhase::Ready) => {
                    ready.insert(k.metadata.name.unwrap_or_default());
                }
                Some(_) => {}
                None => anyhow::bail!("watch ended"),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, wait).await.map_err(|_| anyhow::anyhow!("not all Ready in {timeout:?}"))?
}

/// The CRDs as this build generates them (server-side apply).
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::api::{Patch, PatchParams};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [ByokKey::crd(), byok_operator::crd::EvalJob::crd()] {
        // A generated CRD always has its name.
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("byok-bench").force(), &Patch::Apply(crd)).await?;
    }
    Ok(())
}
