//! Running a judge pod's containers as local processes (until pods can run on a node): the exact
//! commands of the pod spec, with the pod's volumes laid out in a temp dir and real tokens from
//! the TokenRequest API for the real Pod object.

use std::path::{Path, PathBuf};
use std::process::Output;

use byok_operator::judge::wire;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

use super::{TIMEOUT, TestEnv, eventually};

/// A real token for `pod` (bound to it) with `audience`, from the TokenRequest API.
pub async fn pod_token(env: &TestEnv, ns: &str, pod: &Pod, audience: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), ns);
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
            expiration_seconds: Some(600),
        },
        ..Default::default()
    };
    let answer = sas.create_token_request(&sa, &PostParams::default(), &req).await.expect("TokenRequest");
    answer.status.expect("token status").token
}

/// The judge pods the Job controller created for an EvalJob's Job.
pub async fn judge_pods(env: &TestEnv, job: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let mut pods = eventually(&format!("{count} pods of Job {job}"), TIMEOUT, || async {
        let list = pods.list(&lp).await.ok()?;
        (list.items.len() >= count).then_some(list.items)
    })
    .await;
    pods.sort_by_key(|p| p.annotations().get("batch.kubernetes.io/job-completion-index").cloned());
    pods
}

/// The pod's volumes as files under `dir`: what kubelet would mount.
pub struct LocalPod {
    pub dir: PathBuf,
    pub pod: Pod,
}

impl LocalPod {
    pub async fn prepare(env: &TestEnv, pod: Pod) -> Self {
        // What the kubelet would report for a pod whose containers run here: its address, from
        // which the broker accepts its key request.
        let pod = super::broker::report_pod_address(env, &pod, "127.0.0.1").await;
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pods").join(format!("{}-{}", env.ns, pod.name_any()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["key", "cases", "ca", "broker-token", "results-token"] {
            std::fs::create_dir_all(dir.join(sub)).expect("pod dirs");
        }
        let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
        let spec = pod.spec.clone().expect("pod spec");
        let volumes = spec.volumes.unwrap_or_default();
        let cases_cm =
            volumes.iter().find_map(|v| v.config_map.as_ref().map(|c| c.name.clone())).expect("cases volume");
        for (k, v) in cms.get(&cases_cm).await.expect("cases ConfigMap").data.unwrap_or_default() {
            std::fs::write(dir.join("cases").join(k), v).expect("write cases");
        }
        let ca = cms.get("byok-broker-ca").await.expect("CA bundle published").data.unwrap_or_default();
        std::fs::write(dir.join("ca/ca.crt"), &ca["ca.crt"]).expect("write ca");
        let ns = env.ns.clone();
        std::fs::write(dir.join("broker-token/token"), pod_token(env, &ns, &pod, wire::KEY_AUDIENCE).await)
            .expect("token");
        std::fs::write(dir.join("results-token/token"), pod_token(env, &ns, &pod, wire::RESULTS_AUDIENCE).await)
            .expect("token");
        Self { dir, pod }
    }

    fn container(&self, name: &str) -> Container {
        let spec = self.pod.spec.clone().expect("spec");
        spec.init_containers.into_iter().flatten().chain(spec.containers).find(|c| c.name == name).expect("container")
    }

    /// Runs a container's command with mount paths mapped into `dir` and the pod's env, off the
    /// test's runtime thread (the in-process mock provider must keep serving meanwhile).
    pub async fn run(&self, container: &str, extra: &[&str]) -> Output {
        let mut cmd = self.command(container, extra);
        tokio::task::spawn_blocking(move || cmd.output().expect("judge binary runs")).await.expect("join")
    }

    fn command(&self, container: &str, extra: &[&str]) -> std::process::Command {
        let c = self.container(container);
        let command = c.command.clone().expect("command");
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| a.strip_prefix("/var/run/byok/").map_or_else(|| a.clone(), |rest| self.path(rest)))
            .collect();
        let index = self.pod.annotations().get("batch.kubernetes.io/job-completion-index").cloned().unwrap_or_default();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_byok-judge"));
        cmd.args(&args)
            .args(extra)
            .env("POD_UID", self.pod.uid().unwrap_or_default())
            .env("JOB_COMPLETION_INDEX", index)
            .env("RUST_LOG", "info");
        cmd
    }

    pub fn path(&self, rest: &str) -> String {
        self.dir.join(rest).display().to_string()
    }

    pub fn key_file(&self) -> PathBuf {
        Path::new(&self.dir).join("key/key")
    }
}
