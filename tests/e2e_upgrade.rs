//! Upgrades as a user does them, on the real node (`BYOK_NODE=true hack/test.sh`): the previous
//! release (`hack/release.sh previous`: v0.1.0, built from its commit) installed with `helm install`
//! from its packaged chart, its image pulled from the cluster's registry; keys imported and an
//! EvalJob running; then the README's upgrade steps with this tree's release
//! (`hack/release.sh`, target/release-artifacts/<version>): the artefacts verified (checksums and
//! cosign signatures, offline), the image mirrored into another repository ("a private registry")
//! and pinned by the chart's digest, the CRDs applied in place from the chart
//! (`helm show crds | kubectl apply --server-side`: Helm never upgrades crds/), `helm upgrade`.
//! Then a downgrade to the previous chart, which works (with the one value charts before 0.2.0 need:
//! they roll one pod at a time and would wait forever for a follower, never Ready, to be Ready).
//!
//! It replaces the cluster's CRDs by the previous release's for a while: hack/test.sh runs it alone,
//! after the other tests (`--skip release_upgrade` there, then `--test e2e_upgrade`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use byok_operator::crd::{ByokKey, EvalPhase, KeyPhase, Provider, TEST_REQUESTED_ANNOTATION};
use byok_operator::mock::MockConfig;
use common::chart::{self, operator_pods};
use common::evaljobs::{cases, create_evaljob, default_key, judge_spec, phase, wait_evaljob_within};
use common::node::{self, POD_TIMEOUT, note};
use common::{TIMEOUT, TestEnv, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const KEYS: [(&str, Provider); 3] =
    [("openai", Provider::OpenAi), ("anthropic", Provider::Anthropic), ("google", Provider::Google)];

/// Runs a command; its stdout, or a panic with its stderr.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The previous release's directory (built once and cached; its image pushed to this cluster's registry).
fn previous_release() -> PathBuf {
    let out =
        run("hack/release.sh previous", Command::new("bash").arg(format!("{REPO}/hack/release.sh")).arg("previous"));
    PathBuf::from(out.trim().lines().last().expect("release dir"))
}

/// This tree's release, made by `hack/release.sh` before the tests (hack/test.sh does).
fn current_release() -> PathBuf {
    let dir = PathBuf::from(format!("{REPO}/target/release-artifacts/{VERSION}"));
    assert!(
        dir.join("SHA256SUMS.sig").exists(),
        "{}: run BYOK_RELEASE_DIRTY=true hack/release.sh first",
        dir.display()
    );
    dir
}

/// helm with its own config, cache and data under the test's directory.
fn helm(home: &Path) -> Command {
    let mut cmd = Command::new(chart::helm());
    for (var, sub) in [("HELM_CONFIG_HOME", "config"), ("HELM_CACHE_HOME", "cache"), ("HELM_DATA_HOME", "data")] {
        cmd.env(var, home.join(sub));
    }
    cmd
}

fn kubectl() -> Command {
    Command::new(format!("{}/kubectl", node::bin_dir()))
}

/// `kubectl apply --server-side` of the CRDs a packaged chart holds (`helm show crds`).
fn apply_crds(home: &Path, chart: &Path) {
    let crds = run("helm show crds", helm(home).args(["show", "crds"]).arg(chart));
    let file = home.join("crds.yaml");
    std::fs::write(&file, crds).expect("crds file");
    run("kubectl apply CRDs", kubectl().args(["apply", "--server-side", "--force-conflicts", "-f"]).arg(&file));
}

/// The served schema of each CRD equals the one in `chart`.
async fn crds_are_the_charts(env: &TestEnv, home: &Path, chart: &Path) -> bool {
    let text = run("helm show crds", helm(home).args(["show", "crds"]).arg(chart));
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for doc in text.split("\n---").filter(|d| d.contains("kind: CustomResourceDefinition")) {
        let want: CustomResourceDefinition = serde_yaml::from_str(doc).expect("CRD yaml");
        let Ok(have) = crds.get(&want.name_any()).await else { return false };
        let schemas = |c: &CustomResourceDefinition| {
            c.spec.versions.iter().map(|v| serde_json::to_value(&v.schema).expect("schema")).collect::<Vec<_>>()
        };
        if schemas(&have) != schemas(&want) {
            return false;
        }
    }
    true
}

/// The values every install here sets: the watched namespace, the image's repository (the chart's
/// digest stays), the mock provider, and no cluster-wide admission policies (other tests own them).
fn install_args(env: &TestEnv, image_repository: &str) -> Vec<String> {
    let ep = env.mock.endpoints();
    [
        format!("watchNamespace={}", env.ns),
        format!("image.repository={image_repository}"),
        format!("providers.openai.baseURL={}", ep.openai),
        format!("providers.anthropic.baseURL={}", ep.anthropic),
        format!("providers.google.baseURL={}", ep.google),
        "judgePolicy.enabled=false".into(),
        "logFormat=text".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

/// Two replicas, one of them the Ready leader, all running `image`.
async fn wait_rolled_out(env: &TestEnv, image: &str) {
    let pods = operator_pods(env);
    eventually(&format!("2 operator pods of {image}, the leader Ready"), POD_TIMEOUT, || async {
        let list = pods.list(&Default::default()).await.ok()?.items;
        let of_image = |p: &k8s_openapi::api::core::v1::Pod| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().is_some_and(|s| s.containers.iter().all(|c| c.image.as_deref() == Some(image)))
        };
        let ready = |p: &k8s_openapi::api::core::v1::Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        (list.len() == 2 && list.iter().all(of_image) && list.iter().filter(|p| ready(p)).count() == 1).then_some(())
    })
    .await;
}

/// Asks the operator to test `name` now and waits for the answer: the key opened and was sent.
async fn test_key(env: &TestEnv, name: &str, token: &str) -> String {
    let patch = json!({ "metadata": { "annotations": { TEST_REQUESTED_ANNOTATION: token } } });
    env.keys().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("test requested");
    let k: ByokKey = env
        .wait_key(name, &format!("test {token} answered"), |k| {
            k.status.as_ref().and_then(|s| s.last_test.as_ref()).is_some_and(|t| t.request_token == token)
        })
        .await;
    k.status.and_then(|s| s.last_test).map(|t| t.result).unwrap_or_default()
}

/// The keys the mock saw per provider key since the counts `before`.
fn new_requests(env: &TestEnv, keys: &[(String, String)], before: &[u64]) -> Vec<(String, u64)> {
    keys.iter().zip(before).map(|((name, key), b)| (name.clone(), env.mock.requests_for_key(key) - b)).collect()
}

/// `kubectl byok version` against the test's operator namespace: (stdout, stderr).
fn plugin_version(env: &TestEnv) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-byok"))
        .args(["version", "--operator-namespace", &env.op_ns])
        .output()
        .expect("kubectl-byok version");
    assert!(out.status.success(), "kubectl byok version: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The README's "Install": verify the release offline, mirror its image into another repository
/// of the registry, and return that repository (the chart's digest pins the same image there).
fn verify_and_mirror(release: &Path) -> String {
    run(
        "hack/release.sh verify",
        Command::new("bash").arg(format!("{REPO}/hack/release.sh")).arg("verify").arg(release),
    );
    let pushed = std::fs::read_to_string(release.join(".pushed")).expect("where hack/release.sh pushed the image");
    let (repo, digest) = pushed.trim().split_once('@').expect("ref by digest");
    let mirror = format!("{}/mirror/byok-operator", repo.split('/').next().expect("registry"));
    let archive = release.join(format!("byok-operator-{VERSION}.oci.tar"));
    let mirrored = run(
        "mirror the image",
        Command::new("bash").arg(format!("{REPO}/hack/image.sh")).arg("push").arg(&archive).args([&mirror, VERSION]),
    );
    assert_eq!(mirrored.trim(), format!("{mirror}@{digest}"), "the mirror holds the very image the chart pins");
    mirror
}

#[tokio::test]
async fn release_upgrade_from_the_previous_release_keeps_keys_and_running_evaljobs() {
    if !node::wanted("release_upgrade_from_the_previous_release_keeps_keys_and_running_evaljobs") {
        return;
    }
    let t0 = std::time::Instant::now();
    let (previous, current) = (previous_release(), current_release());
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("upgrade-helm");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("helm home");
    let mut env = node::node_env("upgrade", MockConfig::default()).await;
    let release = format!("up-{}", &env.ns[env.ns.len() - 6..]);
    let old_chart = previous.join("byok-operator-0.1.0.tgz");
    let new_chart = current.join(format!("byok-operator-{VERSION}.tgz"));

    // 1. The previous release, as it was installed: its CRDs, its chart, its image.
    apply_crds(&home, &old_chart);
    assert!(crds_are_the_charts(&env, &home, &old_chart).await, "the previous release's CRDs are served");
    take_over_from_the_harness(&mut env).await;
    let old_image = std::fs::read_to_string(previous.join(".pushed")).expect("previous image");
    let old_repo = old_image.trim().split_once('@').expect("by digest").0.to_string();
    run(
        "helm install (previous release)",
        helm(&home)
            .args(["install", &release])
            .arg(&old_chart)
            .args(["-n", &env.op_ns])
            .args(install_args(&env, &old_repo)),
    );
    let old_digest_image = format!("{old_repo}@{}", old_image.trim().split_once('@').expect("digest").1);
    wait_rolled_out(&env, &old_digest_image).await;
    let (_, warned) = plugin_version(&env);
    assert!(warned.contains("cannot tell the operator's version"), "0.1.0 publishes no version: {warned}");

    // 2. Keys imported and validated by it; an EvalJob running (slow provider, one call at a time).
    let mut keys = Vec::new();
    for (name, provider) in KEYS {
        keys.push((name.to_string(), default_key(&mut env, name, provider).await));
    }
    env.mock.set_latency(Duration::from_millis(1500));
    let mut spec = judge_spec("openai", cases(24));
    spec["concurrency"] = json!(1);
    create_evaljob(&env, "during", spec).await;
    wait_evaljob_within(&env, "during", "a case done", POD_TIMEOUT, |e| {
        e.status.as_ref().and_then(|s| s.progress.as_ref()).is_some_and(|p| p.completed >= 1)
    })
    .await;
    let before: Vec<u64> = keys.iter().map(|(_, k)| env.mock.requests_for_key(k)).collect();

    // 3. The upgrade, as the README says: verify, mirror, CRDs in place, helm upgrade.
    let mirror = verify_and_mirror(&current);
    apply_crds(&home, &new_chart);
    assert!(crds_are_the_charts(&env, &home, &new_chart).await, "the CRDs were upgraded in place");
    run(
        "helm upgrade",
        helm(&home)
            .args(["upgrade", &release])
            .arg(&new_chart)
            .args(["-n", &env.op_ns])
            .args(install_args(&env, &mirror)),
    );
    let ejs: Api<byok_operator::crd::EvalJob> = Api::namespaced(env.client.clone(), &env.ns);
    let at_upgrade = phase(&ejs.get("during").await.expect("during"));
    assert_eq!(at_upgrade, Some(EvalPhase::Running), "the EvalJob is still running when helm upgrade returns");
    let new_image = format!(
        "{mirror}@{}",
        std::fs::read_to_string(current.join(format!("byok-operator-{VERSION}.image")))
            .expect("image")
            .trim()
            .split_once('@')
            .expect("digest")
            .1
    );
    wait_rolled_out(&env, &new_image).await;
    upgraded_operator_publishes_its_version(&env).await;

    // 4. The EvalJob that ran across the upgrade finishes; the keys stayed Ready, nothing re-validated.
    let done = wait_evaljob_within(&env, "during", "Succeeded or Failed", POD_TIMEOUT, |e| {
        matches!(phase(e), Some(EvalPhase::Succeeded | EvalPhase::Failed))
    })
    .await;
    assert_eq!(phase(&done), Some(EvalPhase::Succeeded), "the EvalJob across the upgrade: {:?}", done.status);
    let summary = done.status.and_then(|s| s.summary).expect("summary");
    assert_eq!((summary.passed, summary.failed, summary.errored), (12, 12, 0), "{summary:?}");
    env.mock.set_latency(Duration::ZERO);
    // The new leader has reconciled every key once it answers a test request made after it started.
    assert_eq!(test_key(&env, "openai", "after-upgrade").await, "Valid");
    let storm = new_requests(&env, &keys[1..], &before[1..]);
    assert!(storm.iter().all(|(_, n)| *n == 0), "keys re-validated by the upgrade: {storm:?}");
    for (name, _) in &keys {
        let k = env.keys().get(name).await.expect("key");
        assert_eq!(k.status.and_then(|s| s.phase), Some(KeyPhase::Ready), "{name} after the upgrade");
        assert_eq!(test_key(&env, name, "opened-by-new").await, "Valid", "{name} opens under the new operator");
    }
    let after = wait_succeeded_new_evaljob(&env, "after-upgrade").await;
    note(&format!(
        "upgrade: EvalJob across it {}, a new one {after}; mock requests per key during it: {storm:?}",
        "Succeeded"
    ));

    // 5. The downgrade to the previous release works; its operator opens every key.
    run(
        "helm upgrade to the previous release",
        helm(&home)
            .args(["upgrade", &release])
            .arg(&old_chart)
            .args(["-n", &env.op_ns])
            .args(install_args(&env, &old_repo))
            .args(["--set", "updateStrategy.rollingUpdate.maxUnavailable=100%"]),
    );
    wait_rolled_out(&env, &old_digest_image).await;
    for (name, _) in &keys {
        assert_eq!(test_key(&env, name, "opened-after-rollback").await, "Valid", "{name} after the rollback");
    }
    let (_, warned) = plugin_version(&env);
    assert!(warned.contains("is not leading") || warned.contains("cannot tell"), "0.1.0 leads again: {warned}");
    chart::collect_logs(&mut env).await;
    env.assert_no_plaintext().await;
    run("helm uninstall", helm(&home).args(["uninstall", &release, "-n", &env.op_ns]));
    apply_crds(&home, &new_chart); // the cluster as the other tests expect it
    note(&format!("release_upgrade took {:.1}s", t0.elapsed().as_secs_f64()));
}

/// Stops the harness's host operator once it made the keyring (the releases reuse it), and lets the
/// operator namespace run only restricted pods.
async fn take_over_from_the_harness(env: &mut TestEnv) {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.op_ns);
    eventually("harness keyring", TIMEOUT, || async { secrets.get_opt("byok-operator-kek").await.ok().flatten() })
        .await;
    env.kill_operator();
    let restricted = json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } });
    Api::<Namespace>::all(env.client.clone())
        .patch(&env.op_ns, &PatchParams::default(), &Patch::Merge(&restricted))
        .await
        .expect("operator namespace");
}

/// The new leader wrote ConfigMap byok-operator-version, and `kubectl byok version` shows it without a warning.
async fn upgraded_operator_publishes_its_version(env: &TestEnv) {
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.op_ns);
    eventually("byok-operator-version names this version", TIMEOUT, || async {
        let cm = cms.get_opt("byok-operator-version").await.ok()??;
        (cm.data?.get("version")? == VERSION).then_some(())
    })
    .await;
    let (out, warned) = plugin_version(env);
    assert!(out.contains(&format!("operator      {VERSION} (envelope byok1")), "{out}");
    assert!(!warned.contains("warning"), "no skew once upgraded: {warned}");
}

async fn wait_succeeded_new_evaljob(env: &TestEnv, name: &str) -> String {
    create_evaljob(env, name, judge_spec("anthropic", cases(2))).await;
    let ej = wait_evaljob_within(env, name, "Succeeded or Failed", POD_TIMEOUT, |e| {
        matches!(phase(e), Some(EvalPhase::Succeeded | EvalPhase::Failed))
    })
    .await;
    assert_eq!(phase(&ej), Some(EvalPhase::Succeeded), "{name}: {:?}", ej.status);
    "Succeeded".into()
}
