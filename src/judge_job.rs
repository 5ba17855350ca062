//! The judge Job of an EvalJob, its cases ConfigMap and the pod the broker expects: pure functions,
//! one owner for the operator that creates them (controller::evaljob) and the broker that admits
//! only pods that match them (broker::authz).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::{AzureSpec, EvalJob};
use crate::judge::pin;
use crate::judge::wire::{self, EndpointsConfig, JudgeConfig};
use crate::labels::{self, EVALJOB_UID};
use crate::names;

/// ConfigMap (in each EvalJob namespace) with the broker's CA certificate, for the judge pods.
pub const CA_BUNDLE_CONFIGMAP: &str = "byok-broker-ca";
pub const CASES_FILE: &str = "cases.jsonl";
pub const CONFIG_FILE: &str = "config.json";
/// The judge runs as this non-root user; the key file belongs to it.
const JUDGE_UID: i64 = 65532;

const KEY_DIR: &str = "/var/run/byok/key";
const CASES_DIR: &str = "/var/run/byok/cases";
const CA_DIR: &str = "/var/run/byok/ca";
const BROKER_TOKEN_DIR: &str = "/var/run/byok/broker-token";
const RESULTS_TOKEN_DIR: &str = "/var/run/byok/results-token";

/// Operator settings the pod spec depends on.
#[derive(Clone, Debug)]
pub struct JudgeSettings {
    /// Image holding the `byok-judge` binary.
    pub image: String,
    /// Broker URL as the pods reach it.
    pub broker_url: String,
    pub endpoints: EndpointsConfig,
    pub limits: JudgeLimits,
}

/// Judge pod timings the install may tune (operator flags; see docs/operations.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JudgeLimits {
    /// Timeout of one provider call, in seconds.
    pub call_timeout_seconds: u64,
    /// Lifetime of the pods' projected service account tokens (the kubelet renews them).
    pub token_seconds: i64,
    /// `ttlSecondsAfterFinished` of the judge Job: how long its pods (and their logs) stay.
    pub job_ttl_seconds: i32,
}

/// A judge setting outside the range the operator accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JudgeLimitError {
    #[error("--judge-call-timeout-seconds (BYOK_JUDGE_CALL_TIMEOUT_SECONDS) must be 1 to 3600, got {0}")]
    CallTimeout(u64),
    #[error(
        "--judge-token-seconds (BYOK_JUDGE_TOKEN_SECONDS) must be 600 (the shortest projected token Kubernetes \
         issues) to 86400, got {0}"
    )]
    TokenLifetime(i64),
    #[error(
        "--judge-job-ttl-seconds (BYOK_JUDGE_JOB_TTL_SECONDS) must be 60 to 2147483647 (a Job deleted sooner \
         can take its failure with it before the EvalJob sees it), got {0}"
    )]
    JobTtl(i64),
}

impl JudgeLimits {
    /// Today's behaviour: 60 s per call, 10-minute tokens, finished Jobs kept a day.
    pub const DEFAULT: Self = Self { call_timeout_seconds: 60, token_seconds: 600, job_ttl_seconds: 86_400 };

    /// Checked settings; the error names the flag and the accepted range.
    pub fn new(call_timeout_seconds: u64, token_seconds: i64, job_ttl_seconds: i64) -> Result<Self, JudgeLimitError> {
        if !(1..=3600).contains(&call_timeout_seconds) {
            return Err(JudgeLimitError::CallTimeout(call_timeout_seconds));
        }
        // A token lives no longer than needed: the client re-reads the file the kubelet renews.
        if !(600..=86_400).contains(&token_seconds) {
            return Err(JudgeLimitError::TokenLifetime(token_seconds));
        }
        let job_ttl = i32::try_from(job_ttl_seconds).ok().filter(|t| *t >= 60);
        let job_ttl_seconds = job_ttl.ok_or(JudgeLimitError::JobTtl(job_ttl_seconds))?;
        Ok(Self { call_timeout_seconds, token_seconds, job_ttl_seconds })
    }
}

impl Default for JudgeLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// SHA-256 of each file the judge reads from a ConfigMap, pinned in the Job's (immutable)
/// command: a tenant who edits the ConfigMap cannot change what the judge does with the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    pub config_sha256: String,
    pub cases_sha256: String,
    pub ca_sha256: String,
}

impl Pins {
    /// The pins of a cases ConfigMap (as built by [`cases_config_map`]) and the CA bundle.
    pub fn of(cases_cm: &ConfigMap, ca_pem: &str) -> Self {
        let file = |name: &str| {
            let text = cases_cm.data.as_ref().and_then(|d| d.get(name)).map_or("", String::as_str);
            pin::sha256_hex(text.as_bytes())
        };
        Self {
            config_sha256: file(CONFIG_FILE),
            cases_sha256: file(CASES_FILE),
            ca_sha256: pin::sha256_hex(ca_pem.as_bytes()),
        }
    }
}

/// Whether two judge pod specs are the same judge: the same containers and init containers (names,
/// images, commands, arguments, mounts), volumes of the same names and kinds, the same service
/// account, no API token and no ephemeral containers. Fields the API server defaults are ignored.
pub fn same_judge_pod(want: &PodSpec, have: &PodSpec) -> bool {
    let shape = |cs: &[Container]| {
        let mut v: Vec<_> = cs
            .iter()
            .map(|c| (c.name.clone(), c.image.clone(), c.command.clone(), c.args.clone(), c.volume_mounts.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let volumes = |s: &PodSpec| {
        let mut v: Vec<_> = s
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                let audiences: Vec<Option<String>> = v
                    .projected
                    .iter()
                    .flat_map(|p| p.sources.iter().flatten())
                    .map(|s| s.service_account_token.as_ref().and_then(|t| t.audience.clone()))
                    .collect();
                let kinds =
                    (v.empty_dir.as_ref().map(|e| e.medium.clone()), v.config_map.as_ref().map(|c| c.name.clone()));
                let other = v.host_path.is_some() || v.secret.is_some() || v.persistent_volume_claim.is_some();
                (v.name.clone(), kinds, audiences, v.projected.is_some(), other)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    shape(&want.containers) == shape(&have.containers)
        && shape(want.init_containers.as_deref().unwrap_or_default())
            == shape(have.init_containers.as_deref().unwrap_or_default())
        && volumes(want) == volumes(have)
        && want.service_account_name.as_deref().unwrap_or("default")
            == have.service_account_name.as_deref().unwrap_or("default")
        && have.automount_service_account_token == Some(false)
        && have.ephemeral_containers.as_ref().is_none_or(Vec::is_empty)
}

pub fn cases_config_map_name(ej: &str) -> String {
    names::bounded(ej, "cases")
}

/// At most 48 characters: the Job controller names pods `<job>-<index>-<random>` and cuts the
/// Job name when that prefix passes 58 characters; 48 keeps `-judge-<index>-` in every judge
/// pod's name, which the judge-pod admission policy matches on for exec and port-forward.
pub const MAX_JOB_NAME: usize = 48;

pub fn job_name(ej: &str) -> String {
    names::bounded_to(ej, "judge", MAX_JOB_NAME)
}

fn owned_meta(ej: &EvalJob, name: String, component: &str) -> ObjectMeta {
    let mut l = labels::component(component);
    l.insert(EVALJOB_UID.into(), ej.uid().unwrap_or_default());
    ObjectMeta {
        name: Some(name),
        namespace: ej.namespace(),
        labels: Some(l),
        owner_references: ej.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The judge's configuration for this EvalJob.
pub fn judge_config(
    ej: &EvalJob,
    model: &str,
    azure: Option<AzureSpec>,
    panels: std::collections::BTreeMap<String, crate::judge::wire::PanelConfig>,
    settings: &JudgeSettings,
) -> JudgeConfig {
    let s = &ej.spec;
    JudgeConfig {
        namespace: ej.namespace().unwrap_or_default(),
        eval_job: ej.name_any(),
        provider: s.provider,
        model: model.to_string(),
        azure,
        scorers: s.scorers.clone(),
        concurrency: s.concurrency.max(1) as u32,
        retries: s.retries.max(0) as u32,
        call_timeout_seconds: settings.limits.call_timeout_seconds,
        shards: s.parallelism.max(1) as u32,
        endpoints: settings.endpoints.clone(),
        panels,
    }
}

/// The cases (JSONL, as given or rendered from the inline list) and the judge config, snapshotted
/// into a ConfigMap the EvalJob owns: later edits of a source ConfigMap do not change a run. A config
/// that cannot be rendered is an error, never an empty `config.json` the judge would fail on.
pub fn cases_config_map(
    ej: &EvalJob,
    cases_jsonl: String,
    config: &JudgeConfig,
) -> Result<ConfigMap, serde_json::Error> {
    let config_json = serde_json::to_string_pretty(config)?;
    let data = BTreeMap::from([(CASES_FILE.to_string(), cases_jsonl), (CONFIG_FILE.to_string(), config_json)]);
    Ok(owned_config_map(ej, cases_config_map_name(&ej.name_any()), "eval-cases", data))
}

/// A ConfigMap the EvalJob owns (garbage-collected with it).
pub fn owned_config_map(ej: &EvalJob, name: String, component: &str, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap { metadata: owned_meta(ej, name, component), data: Some(data), ..Default::default() }
}

/// The CA bundle ConfigMap published to an EvalJob namespace.
pub fn ca_bundle(namespace: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CA_BUNDLE_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels::component("broker-ca")),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_string(), ca_pem.to_string())])),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..Default::default() }
}

fn token_volume(name: &str, audience: &str, seconds: i64) -> Volume {
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o400),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(audience.into()),
                    expiration_seconds: Some(seconds),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

fn pod_uid_env() -> EnvVar {
    EnvVar {
        name: "POD_UID".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.uid".into(), api_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.into());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".into(), q("100m")), ("memory".into(), q("64Mi"))])),
        limits: Some(BTreeMap::from([("memory".into(), q("128Mi"))])),
        ..Default::default()
    }
}

/// The judge Job: an Indexed Job with one shard of cases per index. The init container
/// `fetch-key` alone holds a token for the broker's audience and writes the key to a
/// memory-backed volume; the `judge` container has no Kubernetes API token at all.
/// One long literal on purpose: the pod's whole security posture reads top to bottom in one place
/// (the admission policy and `same_judge_pod` are checked against exactly this).
pub fn judge_job(ej: &EvalJob, settings: &JudgeSettings, pins: &Pins) -> Job {
    let s = &ej.spec;
    let shards = s.parallelism.max(1);
    let o = s.template.clone().unwrap_or_default();
    let fetch_key = fetch_key_container(settings, pins);
    let judge = judge_container(settings, pins, o.resources.clone().unwrap_or_else(default_resources));
    let volumes = judge_volumes(ej, settings);
    let mut meta = owned_meta(ej, job_name(&ej.name_any()), "judge");
    let pod_labels = meta.labels.clone();
    meta.annotations = None;
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(shards),
            parallelism: Some(shards),
            backoff_limit: Some(3 * shards),
            active_deadline_seconds: Some(s.timeout_seconds),
            ttl_seconds_after_finished: Some(settings.limits.job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: pod_labels, ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    init_containers: Some(vec![fetch_key]),
                    containers: vec![judge],
                    volumes: Some(volumes),
                    node_selector: o.node_selector.clone(),
                    tolerations: o.tolerations.clone(),
                    security_context: Some(pod_security()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The init container: fetches the key from the broker into the memory-backed volume.
fn fetch_key_container(settings: &JudgeSettings, pins: &Pins) -> Container {
    // The image that receives the key is the install's; `template.image` is refused by the CRD.
    let image = settings.image.clone();
    let (ca_file, key_file) = (format!("{CA_DIR}/ca.crt"), format!("{KEY_DIR}/key"));
    Container {
        name: "fetch-key".into(),
        image: Some(image.clone()),
        command: Some(
            [
                "byok-judge",
                "fetch-key",
                "--broker",
                &settings.broker_url,
                "--token-file",
                &format!("{BROKER_TOKEN_DIR}/token"),
                "--ca-file",
                &ca_file,
                "--ca-sha256",
                &pins.ca_sha256,
                "--out",
                &key_file,
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![pod_uid_env()]),
        volume_mounts: Some(vec![
            mount("key", KEY_DIR, false),
            mount("broker-token", BROKER_TOKEN_DIR, true),
            mount("ca", CA_DIR, true),
        ]),
        security_context: Some(restricted()),
        resources: Some(default_resources()),
        ..Default::default()
    }
}

/// The judge: reads the key from the memory-backed volume and the pinned cases and config.
fn judge_container(settings: &JudgeSettings, pins: &Pins, resources: ResourceRequirements) -> Container {
    let image = settings.image.clone();
    let (ca_file, key_file) = (format!("{CA_DIR}/ca.crt"), format!("{KEY_DIR}/key"));
    Container {
        name: "judge".into(),
        image: Some(image),
        command: Some(
            [
                "byok-judge",
                "run",
                "--config",
                &format!("{CASES_DIR}/{CONFIG_FILE}"),
                "--config-sha256",
                &pins.config_sha256,
                "--cases",
                &format!("{CASES_DIR}/{CASES_FILE}"),
                "--cases-sha256",
                &pins.cases_sha256,
                "--key-file",
                &key_file,
                "--broker",
                &settings.broker_url,
                "--results-token-file",
                &format!("{RESULTS_TOKEN_DIR}/token"),
                "--ca-file",
                &ca_file,
                "--ca-sha256",
                &pins.ca_sha256,
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![pod_uid_env()]),
        volume_mounts: Some(vec![
            mount("key", KEY_DIR, true),
            mount("cases", CASES_DIR, true),
            mount("results-token", RESULTS_TOKEN_DIR, true),
            mount("ca", CA_DIR, true),
        ]),
        security_context: Some(restricted()),
        resources: Some(resources),
        ..Default::default()
    }
}

fn judge_volumes(ej: &EvalJob, settings: &JudgeSettings) -> Vec<Volume> {
    vec![
        Volume {
            name: "key".into(),
            // tmpfs: the plaintext key never touches a disk, and goes with the pod.
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("64Ki".into())),
            }),
            ..Default::default()
        },
        Volume {
            name: "cases".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cases_config_map_name(&ej.name_any()),
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "ca".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o444),
                sources: Some(vec![VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: CA_BUNDLE_CONFIGMAP.into(),
                        items: Some(vec![KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), mode: None }]),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        },
        token_volume("broker-token", wire::KEY_AUDIENCE, settings.limits.token_seconds),
        token_volume("results-token", wire::RESULTS_AUDIENCE, settings.limits.token_seconds),
    ]
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(JUDGE_UID),
        run_as_group: Some(JUDGE_UID),
        fs_group: Some(JUDGE_UID),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ej(parallelism: i32) -> EvalJob {
        let spec = serde_json::from_value(serde_json::json!({
            "provider": "openai", "parallelism": parallelism,
            "scorers": [{"type": "llm_judge", "rubric": "be right"}],
            "cases": [{"output": "x"}]
        }))
        .expect("spec");
        let mut e = EvalJob::new("my-eval", spec);
        e.metadata.namespace = Some("team-a".into());
        e.metadata.uid = Some("uid-1".into());
        e
    }

    fn settings() -> JudgeSettings {
        JudgeSettings {
            image: "byok-operator:dev".into(),
            broker_url: "https://b:8443".into(),
            endpoints: Default::default(),
            limits: JudgeLimits::DEFAULT,
        }
    }

    fn pins() -> Pins {
        Pins { config_sha256: "c0".into(), cases_sha256: "ca5e".into(), ca_sha256: "ca".into() }
    }

    fn pod(job: &Job) -> PodSpec {
        job.spec.clone().expect("spec").template.spec.expect("pod spec")
    }

    #[test]
    fn key_lives_only_on_tmpfs_and_only_fetch_key_has_the_broker_token() {
        let p = pod(&judge_job(&ej(1), &settings(), &pins()));
        let key = p.volumes.iter().flatten().find(|v| v.name == "key").expect("key volume");
        assert_eq!(key.empty_dir.as_ref().and_then(|e| e.medium.as_deref()), Some("Memory"));
        assert_eq!(p.automount_service_account_token, Some(false));
        let mounts = |c: &Container| c.volume_mounts.iter().flatten().map(|m| m.name.clone()).collect::<Vec<_>>();
        let init = &p.init_containers.as_ref().expect("init")[0];
        assert_eq!(init.name, "fetch-key");
        assert!(mounts(init).contains(&"broker-token".to_string()));
        let judge = &p.containers[0];
        assert!(!mounts(judge).contains(&"broker-token".to_string()), "the judge never holds a broker-audience token");
        assert!(judge.volume_mounts.iter().flatten().any(|m| m.name == "key" && m.read_only == Some(true)));
        // Tokens are for our audiences only, never the API server's.
        for v in p.volumes.iter().flatten().filter(|v| v.name.ends_with("token")) {
            let aud =
                v.projected.as_ref().and_then(|p| p.sources.as_ref()).and_then(|s| s[0].service_account_token.as_ref());
            assert!(aud.and_then(|t| t.audience.as_deref()).is_some_and(|a| a.ends_with(".launchgate.ai")));
        }
    }

    #[test]
    fn pod_meets_the_restricted_standard() {
        let p = pod(&judge_job(&ej(1), &settings(), &pins()));
        let psc = p.security_context.expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.map(|s| s.type_), Some("RuntimeDefault".into()));
        for c in p.init_containers.iter().flatten().chain(p.containers.iter()) {
            let sc = c.security_context.clone().expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
            assert!(c.resources.as_ref().and_then(|r| r.limits.as_ref()).is_some());
        }
    }

    #[test]
    fn the_config_file_is_the_rendered_config_never_empty() {
        let config = judge_config(&ej(1), "gpt-5.1", None, Default::default(), &settings());
        let cm = cases_config_map(&ej(1), "{\"output\":\"x\"}\n".into(), &config).expect("renders");
        let text = cm.data.as_ref().and_then(|d| d.get(CONFIG_FILE)).expect("config.json");
        assert_eq!(serde_json::from_str::<JudgeConfig>(text).expect("the judge can read it"), config);
    }

    #[test]
    fn shards_become_an_indexed_job_owned_by_the_evaljob() {
        let job = judge_job(&ej(4), &settings(), &pins());
        let spec = job.spec.clone().expect("spec");
        assert_eq!(
            (spec.completion_mode.as_deref(), spec.completions, spec.parallelism),
            (Some("Indexed"), Some(4), Some(4))
        );
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let owner = &job.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("EvalJob", Some(true)));
        assert_eq!(job.metadata.name.as_deref(), Some("my-eval-judge"));
        let long = job_name(&"e".repeat(253));
        assert!(long.len() <= MAX_JOB_NAME && long.ends_with("-judge"), "{long}");
        // The pod name prefix the Job controller builds stays under its 58-character cut.
        assert!(format!("{long}-63-").len() <= 58);
    }

    #[test]
    fn overrides_apply_but_never_to_the_image() {
        let mut e = ej(1);
        e.spec.template = Some(crate::crd::PodOverrides {
            image: Some("registry.example/attacker:1".into()),
            node_selector: Some(BTreeMap::from([("pool".into(), "eval".into())])),
            ..Default::default()
        });
        let p = pod(&judge_job(&e, &settings(), &pins()));
        for c in p.init_containers.iter().flatten().chain(p.containers.iter()) {
            assert_eq!(c.image.as_deref(), Some("byok-operator:dev"), "{} runs the install's image", c.name);
        }
        assert_eq!(p.node_selector.and_then(|n| n.get("pool").cloned()), Some("eval".into()));
    }

    #[test]
    fn every_file_from_a_configmap_is_pinned_in_the_command() {
        let p = pod(&judge_job(&ej(1), &settings(), &pins()));
        let args = |c: &Container| c.command.clone().unwrap_or_default().join(" ");
        let init = &p.init_containers.as_ref().expect("init")[0];
        assert!(args(init).contains("--ca-sha256 ca"));
        let judge = args(&p.containers[0]);
        for pin in ["--config-sha256 c0", "--cases-sha256 ca5e", "--ca-sha256 ca"] {
            assert!(judge.contains(pin), "{pin} in {judge}");
        }
    }

    #[test]
    fn judge_limits_keep_todays_defaults_and_refuse_what_kubernetes_would_not_take() {
        assert_eq!(JudgeLimits::new(60, 600, 86_400), Ok(JudgeLimits::DEFAULT));
        assert_eq!(JudgeLimits::default(), JudgeLimits::DEFAULT);
        assert_eq!(JudgeLimits::new(0, 600, 86_400), Err(JudgeLimitError::CallTimeout(0)));
        assert_eq!(JudgeLimits::new(3601, 600, 86_400), Err(JudgeLimitError::CallTimeout(3601)));
        // Kubernetes refuses a projected token shorter than 10 minutes.
        assert_eq!(JudgeLimits::new(60, 599, 86_400), Err(JudgeLimitError::TokenLifetime(599)));
        assert_eq!(JudgeLimits::new(60, 86_401, 86_400), Err(JudgeLimitError::TokenLifetime(86_401)));
        assert_eq!(JudgeLimits::new(60, 600, 59), Err(JudgeLimitError::JobTtl(59)));
        assert_eq!(JudgeLimits::new(60, 600, 1 << 31), Err(JudgeLimitError::JobTtl(1 << 31)));
        let message = JudgeLimits::new(60, 60, 86_400).expect_err("too short").to_string();
        assert!(message.contains("--judge-token-seconds") && message.contains("600"), "{message}");
    }

    #[test]
    fn the_settings_reach_the_job_and_the_config() {
        let mut s = settings();
        s.limits = JudgeLimits::new(120, 3600, 600).expect("valid");
        let job = judge_job(&ej(1), &s, &pins());
        assert_eq!(job.spec.as_ref().and_then(|j| j.ttl_seconds_after_finished), Some(600));
        let tokens: Vec<_> = pod(&job)
            .volumes
            .iter()
            .flatten()
            .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
            .filter_map(|s| s.service_account_token.as_ref().and_then(|t| t.expiration_seconds))
            .collect();
        assert_eq!(tokens, vec![3600, 3600], "both tokens, broker and results");
        assert_eq!(judge_config(&ej(1), "m", None, Default::default(), &s).call_timeout_seconds, 120);
        let defaults = judge_job(&ej(1), &settings(), &pins());
        assert_eq!(defaults.spec.and_then(|j| j.ttl_seconds_after_finished), Some(86_400));
    }
}
