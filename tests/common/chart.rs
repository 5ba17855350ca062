//! The operator as users run it: the Helm chart's Deployment (2 replicas, one leader by a Lease),
//! from the packaged chart (`helm package`, as hack/release.sh makes it) rendered with the pinned
//! helm that `hack/helm.sh` builds, its image pulled from the cluster's registry by digest.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::node::{self, POD_TIMEOUT};
use super::{TIMEOUT, TestEnv, eventually};

/// The pinned helm of hack/helm.sh (built once, cached).
pub fn helm() -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let helm =
        std::process::Command::new("bash").arg(format!("{repo}/hack/helm.sh")).arg("build").output().expect("helm.sh");
    assert!(helm.status.success(), "hack/helm.sh build: {}", String::from_utf8_lossy(&helm.stderr));
    String::from_utf8_lossy(&helm.stdout).trim().lines().last().unwrap_or_default().to_string()
}

/// `helm package` of charts/byok-operator with the crate's version as version and appVersion, into
/// `dir`: the chart as a user downloads it. Returns the .tgz.
pub fn package(helm: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let (repo, version) = (env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION"));
    std::fs::create_dir_all(dir).expect("chart dir");
    let out = std::process::Command::new(helm)
        .args(["package", &format!("{repo}/charts/byok-operator"), "--version", version, "--app-version", version])
        .arg("--destination")
        .arg(dir)
        .output()
        .expect("helm package");
    assert!(out.status.success(), "helm package: {}", String::from_utf8_lossy(&out.stderr));
    dir.join(format!("byok-operator-{version}.tgz"))
}

/// `--set` values pointing the chart at the pushed operator image: repository and digest.
pub fn image_values(image: &str) -> [String; 2] {
    let (repository, digest) = image.split_once('@').expect("an image reference by digest");
    [format!("image.repository={repository}"), format!("image.digest={digest}")]
}

/// Renders the packaged chart (namespaced mode, watching the test namespace) for release `release`
/// in the harness's operator namespace.
fn render(release: &str, op_ns: &str, watch_ns: &str, mock: &byok_operator::providers::Endpoints) -> String {
    let helm = helm();
    let chart = package(&helm, &std::env::temp_dir().join(format!("byok-chart-{release}")));
    let [repository, digest] = image_values(&node::judge_image());
    let sets = [
        format!("watchNamespace={watch_ns}"),
        repository,
        digest,
        format!("providers.openai.baseURL={}", mock.openai),
        format!("providers.anthropic.baseURL={}", mock.anthropic),
        format!("providers.google.baseURL={}", mock.google),
    ];
    let mut cmd = std::process::Command::new(&helm);
    cmd.args(["template", release]).arg(&chart).args(["-n", op_ns]);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm template");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready(p: &Pod) -> bool {
    let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Replaces the harness's host operator by the chart's Deployment in `env.op_ns` (reusing the
/// keyring the harness made) and waits until one of its two replicas leads and is Ready.
pub async fn install(env: &mut TestEnv) {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    eventually("harness keyring", TIMEOUT, || async { secrets.get_opt("byok-operator-kek").await.ok().flatten() })
        .await;
    env.kill_operator();
    let restricted = json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } });
    Api::<Namespace>::all(env.client.clone())
        .patch(&env.op_ns, &PatchParams::default(), &Patch::Merge(&restricted))
        .await
        .expect("operator namespace");
    let release = format!("op-{}", &env.ns[env.ns.len() - 6..]);
    let manifests = render(&release, &env.op_ns, &env.ns, &env.mock.endpoints());
    // The cluster-wide admission policies are shared with other tests: take them over.
    let kubectl = std::process::Command::new(format!("{}/kubectl", node::bin_dir()))
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().map(|mut s| s.write_all(manifests.as_bytes())).transpose()?;
            c.wait_with_output()
        })
        .expect("kubectl apply");
    assert!(kubectl.status.success(), "apply: {}", String::from_utf8_lossy(&kubectl.stderr));
    let pods = operator_pods(env);
    eventually("an operator pod Ready (the leader)", POD_TIMEOUT, || async {
        let list = pods.list(&Default::default()).await.ok()?;
        (list.items.len() == 2 && list.items.iter().filter(|p| ready(p)).count() == 1).then_some(())
    })
    .await;
}

pub fn operator_pods(env: &TestEnv) -> Api<Pod> {
    Api::namespaced(env.client.clone(), &env.op_ns)
}

/// The replica holding the leader Lease (its identity is the pod's name) and its Lease's duration.
pub async fn leader(env: &TestEnv) -> Option<(String, Duration)> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.op_ns);
    let spec = leases.get_opt("byok-operator-leader").await.ok()??.spec?;
    Some((spec.holder_identity?, Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15) as u64)))
}

/// SIGKILLs the leader replica's operator process on the node (as an OOM kill or a crash would);
/// the kubelet restarts the container. Returns the killed pod's name.
pub async fn kill_leader(env: &TestEnv) -> String {
    let (name, _) = eventually("a leader", TIMEOUT, || leader(env)).await;
    let pod = operator_pods(env).get(&name).await.expect("leader pod");
    let id = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().find_map(|c| c.container_id))
        .expect("leader container id");
    let pid = node::container_pid(id.trim_start_matches("containerd://"));
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(killed.success(), "kill -9 {pid}");
    name
}

/// The operator replicas' logs, for the plaintext scan.
pub async fn collect_logs(env: &mut TestEnv) {
    let pods = operator_pods(env);
    for p in pods.list(&Default::default()).await.expect("pods").items {
        let logs = pods.logs(&p.name_any(), &Default::default()).await.unwrap_or_default();
        env.extra_logs.push((format!("operator pod {}", p.name_any()), logs));
    }
}
