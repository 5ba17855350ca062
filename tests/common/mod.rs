//! Test harness: each test gets its own namespace, its own mock provider and its own operator
//! process (watching only that namespace), against the local control plane in $KUBECONFIG.
#![allow(dead_code)]

pub mod broker;
pub mod chart;
pub mod evaljobs;
pub mod judge_pod;
pub mod kms;
pub mod node;
pub mod roles;
mod wait;

pub use wait::{eventually, random_hex};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use byok_operator::crd::{AzureSpec, ByokKey, ByokKeySpec, KeyPhase, Provider};
use byok_operator::mock::{self, MockConfig, MockHandle};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};

pub const TIMEOUT: Duration = Duration::from_secs(60);
/// In `EnvOptions::operator_args`: start the operator without the harness's Azure gateway, so
/// ByokKeys' own Azure endpoints (and the allow-list) are used.
pub const NO_AZURE_GATEWAY: &str = "--azure-base-url";
/// A ByokKey's Azure endpoint in tests: on the default allow-list; the mock serves it as the gateway.
pub const AZURE_ENDPOINT: &str = "https://byok-test.openai.azure.com";

/// A plausible provider key; `tag` picks the mock's behaviour (e.g. "invalid", "ratelimit").
pub fn fake_key(provider: Provider, tag: &str) -> String {
    let body = random_hex(20);
    let tag = if tag.is_empty() { String::new() } else { format!("{tag}-") };
    match provider {
        Provider::OpenAi => format!("sk-proj-{tag}{body}"),
        Provider::Anthropic => format!("sk-ant-api03-{tag}{body}"),
        Provider::Google => format!("AIzaSy{tag}{body}"),
        Provider::AzureOpenAi => format!("{tag}{body}"),
    }
}

pub struct TestEnv {
    pub client: Client,
    /// The team namespace: ByokKeys, source Secrets, EvalJobs.
    pub ns: String,
    /// The operator's namespace (keyring, sealing key, broker CA, grant records): never a source
    /// of keys, so a namespace of its own, as in a real install.
    pub op_ns: String,
    /// Judge pods run on the node (node_env); otherwise they stay unscheduled and the tests run
    /// their containers as local processes.
    pub node: bool,
    pub mock: MockHandle,
    operator: Option<Child>,
    pub log_path: PathBuf,
    /// The operator's key broker listens here (loopback).
    pub broker_port: u16,
    /// Every plaintext key this test handed to the cluster: none may show up where the operator writes.
    pub plaintexts: Vec<String>,
    /// Output of local judge processes, scanned like the operator's log.
    pub extra_logs: Vec<(String, String)>,
    /// Address the broker binds (loopback by default); see [`EnvOptions`].
    broker_host: std::net::IpAddr,
    /// Extra operator arguments, kept for restarts.
    operator_args: Vec<String>,
    /// Extra environment of the operator process from the next (re)start on, e.g. `FAILPOINTS`.
    pub operator_env: Vec<(String, String)>,
}

/// What [`TestEnv::with_options`] can change; the default is what [`TestEnv::new`] does.
#[derive(Default)]
pub struct EnvOptions {
    /// The in-process mock's configuration (its `addr` decides where pods can reach it).
    pub mock: MockConfig,
    /// Address the operator's broker listens on; the broker URL is `https://<it>:<free port>`.
    /// Loopback when None.
    pub broker_host: Option<std::net::IpAddr>,
    /// Appended to the operator's command line (e.g. `--judge-image`).
    pub operator_args: Vec<String>,
    /// Run the operator in the team namespace itself (to show keys are never imported from there).
    pub operator_in_team_namespace: bool,
    /// Judge pods are meant to run on the node.
    pub node: bool,
}

pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the tests with `hack/test.sh` (it starts the local control plane)"
    );
    Client::try_default().await.expect("kubeconfig loads")
}

/// The chart's admission policy for judge pods (only the Job controller creates them; no exec,
/// debug, image or label change), as `deploy/manifests/admission-judge-pods.yaml` ships it.
pub async fn install_judge_pod_policy(client: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    use serde::Deserialize;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/manifests/admission-judge-pods.yaml");
    let text = std::fs::read_to_string(path).expect("admission policy manifest");
    let pp = PatchParams::apply("byok-tests").force();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).expect("yaml");
        let name = value["metadata"]["name"].as_str().expect("name").to_string();
        match value["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                let p: ValidatingAdmissionPolicy = serde_json::from_value(value).expect("policy");
                Api::<ValidatingAdmissionPolicy>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&p))
                    .await
                    .expect("policy");
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                let b: ValidatingAdmissionPolicyBinding = serde_json::from_value(value).expect("binding");
                Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                    .patch(&name, &pp, &Patch::Apply(&b))
                    .await
                    .expect("binding");
            }
            other => panic!("unexpected {other:?} in {path}"),
        }
    }
}

/// Applies the generated CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
    install_judge_pod_policy(client).await;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [ByokKey::crd(), byok_operator::crd::EvalJob::crd()] {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("byok-tests").force(), &Patch::Apply(&crd)).await.expect("CRD applies");
        eventually("CRD established", TIMEOUT, || async {
            let c = api.get(&name).await.ok()?;
            let conds = c.status?.conditions?;
            conds.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
    }
}

impl TestEnv {
    pub async fn new(test: &str) -> Self {
        Self::with_options(test, EnvOptions::default()).await
    }

    pub async fn with_options(test: &str, options: EnvOptions) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let ns = format!("t-{}-{}", test.replace('_', "-"), random_hex(3));
        let op_ns = if options.operator_in_team_namespace { ns.clone() } else { format!("{ns}-op") };
        let nsapi: Api<Namespace> = Api::all(client.clone());
        for name in [&ns, &op_ns] {
            if nsapi.get_opt(name).await.expect("get namespace").is_some() {
                continue;
            }
            // EvalJobs may run in the team namespace (the chart's admission policy asks for this label).
            let labels = (name == &ns).then(|| [("launchgate.ai/evaljobs".to_string(), "enabled".to_string())].into());
            let obj = Namespace {
                metadata: ObjectMeta { name: Some(name.clone()), labels, ..Default::default() },
                ..Default::default()
            };
            nsapi.create(&PostParams::default(), &obj).await.expect("namespace created");
        }
        let mock = mock::start(options.mock).await.expect("mock provider starts");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log_path = dir.join(format!("{ns}.log"));
        let broker_host = options.broker_host.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let broker_port =
            std::net::TcpListener::bind((broker_host, 0)).and_then(|l| l.local_addr()).expect("free port").port();
        let mut env = Self {
            client,
            ns,
            op_ns,
            node: options.node,
            mock,
            operator: None,
            log_path,
            broker_port,
            plaintexts: Vec::new(),
            extra_logs: Vec::new(),
            broker_host,
            operator_args: options.operator_args,
            operator_env: Vec::new(),
        };
        env.start_operator();
        env
    }

    /// Starts the operator binary, appending to this test's log file.
    pub fn start_operator(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let ep = self.mock.endpoints();
        let broker = std::net::SocketAddr::from((self.broker_host, self.broker_port)).to_string();
        let harness = [
            ("--namespace", self.op_ns.clone()),
            ("--watch-namespace", self.ns.clone()),
            ("--broker-listen", broker.clone()),
            ("--broker-url", format!("https://{broker}")),
            ("--openai-base-url", ep.openai),
            ("--anthropic-base-url", ep.anthropic),
            ("--google-base-url", ep.google),
            ("--azure-base-url", self.mock.azure_endpoint()),
        ];
        // A test's own `operator_args` replace the harness's flag of the same name.
        let overridden =
            |flag: &str| self.operator_args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        let mut args: Vec<String> = Vec::new();
        for (flag, value) in harness.into_iter().filter(|(f, _)| !overridden(f)) {
            args.extend([flag.to_string(), value]);
        }
        args.extend(self.operator_args.iter().filter(|a| a.as_str() != NO_AZURE_GATEWAY).cloned());
        let child = Command::new(env!("CARGO_BIN_EXE_byok-operator"))
            .args(&args)
            .env("RUST_LOG", "info,kube=warn")
            .envs(self.operator_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("operator starts");
        self.operator = Some(child);
    }

    /// Replaces the test's own operator arguments from the next (re)start on.
    pub fn set_operator_args(&mut self, args: Vec<String>) {
        self.operator_args = args;
    }

    /// Whether the operator process has ended by itself.
    pub fn operator_exited(&mut self) -> bool {
        self.operator.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits until the operator process ends by itself (a crash point); its exit code.
    pub async fn wait_operator_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.operator.as_mut().expect("operator started");
        let code = eventually("the operator to exit", timeout, || {
            let status = child.try_wait().expect("operator status");
            async move { status.map(|s| s.code()) }
        })
        .await;
        self.operator = None;
        code
    }

    /// The operator process's id, while it runs.
    pub fn operator_pid(&self) -> Option<u32> {
        self.operator.as_ref().map(Child::id)
    }

    /// Where the operator's broker listens.
    pub fn broker_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.broker_host, self.broker_port))
    }

    /// SIGKILL: no graceful shutdown, as in a node crash or OOM kill.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn keys(&self) -> Api<ByokKey> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create_secret(&mut self, name: &str, data_key: &str, value: &[u8]) {
        if let Ok(text) = std::str::from_utf8(value)
            && text.trim().len() >= 8
        {
            self.plaintexts.push(text.trim().to_string());
        }
        // Opted in to being imported (any other Secret is refused).
        let s = Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            type_: Some(byok_operator::controller::byokkey::import::SOURCE_SECRET_TYPE.into()),
            data: Some([(data_key.to_string(), ByteString(value.to_vec()))].into()),
            ..Default::default()
        };
        self.secrets().create(&PostParams::default(), &s).await.expect("secret created");
    }

    pub fn spec(&self, provider: Provider, secret: &str) -> ByokKeySpec {
        // The operator sends Azure calls to the mock (--azure-base-url, the install's gateway).
        let azure = (provider == Provider::AzureOpenAi).then(|| AzureSpec {
            endpoint: AZURE_ENDPOINT.into(),
            deployment: "gpt-4o".into(),
            api_version: None,
        });
        ByokKeySpec { azure, ..ByokKeySpec::from_secret(provider, secret) }
    }

    pub async fn create_key(&self, name: &str, spec: ByokKeySpec) -> ByokKey {
        self.keys().create(&PostParams::default(), &ByokKey::new(name, spec)).await.expect("ByokKey created")
    }

    /// Creates a Secret with `key` and a ByokKey importing it; returns the key's plaintext.
    pub async fn add_key(&mut self, name: &str, provider: Provider, tag: &str) -> String {
        let key = fake_key(provider, tag);
        self.create_secret(&format!("{name}-src"), "apiKey", key.as_bytes()).await;
        self.create_key(name, self.spec(provider, &format!("{name}-src"))).await;
        key
    }

    pub async fn wait_key(&self, name: &str, what: &str, pred: impl Fn(&ByokKey) -> bool) -> ByokKey {
        let api = self.keys();
        eventually(&format!("{name}: {what}"), TIMEOUT, || async { api.get(name).await.ok().filter(|k| pred(k)) }).await
    }

    pub async fn wait_phase(&self, name: &str, phase: KeyPhase) -> ByokKey {
        self.wait_key(name, &format!("phase {phase:?}"), |k| phase_of(k) == Some(phase)).await
    }

    /// Event reasons recorded for an object, oldest first.
    pub async fn event_reasons(&self, object: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut evs: Vec<_> = api
            .list(&ListParams::default())
            .await
            .expect("events list")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
            .collect();
        evs.sort_by_key(|e| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        evs.into_iter().filter_map(|e| e.reason).collect()
    }

    /// Waits until an Event with `reason` was recorded for `object` (Events are published
    /// asynchronously, after status).
    pub async fn wait_event(&self, object: &str, reason: &str) {
        eventually(&format!("{object}: event {reason}"), TIMEOUT, || async {
            self.event_reasons(object).await.iter().any(|r| r == reason).then_some(())
        })
        .await
    }

    /// Security invariant: no plaintext key in the operator's log, in Events, in any ByokKey
    /// (spec, status, annotations), ConfigMap, or Secret the operator wrote.
    pub async fn assert_no_plaintext(&self) {
        let mut haystacks: Vec<(String, String)> = Vec::new();
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        assert!(!log.is_empty(), "operator log {} is empty: the scan would prove nothing", self.log_path.display());
        haystacks.push(("operator log".into(), log));
        for (what, text) in &self.extra_logs {
            haystacks.push((what.clone(), text.clone()));
        }
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        for e in events.list(&ListParams::default()).await.expect("events").items {
            haystacks.push((format!("event {}", e.name_any()), json(&e)));
        }
        for k in self.keys().list(&ListParams::default()).await.expect("keys").items {
            haystacks.push((format!("byokkey {}", k.name_any()), json(&k)));
        }
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(self.client.clone(), &self.ns);
        for j in jobs.list(&ListParams::default()).await.expect("jobs").items {
            haystacks.push((format!("job {}", j.name_any()), json(&j)));
        }
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), &self.ns);
        for p in pods.list(&ListParams::default()).await.expect("pods").items {
            haystacks.push((format!("pod {}", p.name_any()), json(&p)));
        }
        let ejs: Api<byok_operator::crd::EvalJob> = Api::namespaced(self.client.clone(), &self.ns);
        for e in ejs.list(&ListParams::default()).await.expect("evaljobs").items {
            haystacks.push((format!("evaljob {}", e.name_any()), json(&e)));
        }
        for ns in [&self.ns, &self.op_ns] {
            let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(self.client.clone(), ns);
            for c in cms.list(&ListParams::default()).await.expect("configmaps").items {
                haystacks.push((format!("configmap {ns}/{}", c.name_any()), json(&c)));
            }
        }
        for s in self.secrets().list(&ListParams::default()).await.expect("secrets").items {
            // Source Secrets are the user's plaintext by definition; everything else is the operator's.
            let managed = s.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some("byok-operator");
            if managed {
                let mut text = json(&s);
                for v in s.data.iter().flat_map(|d| d.values()) {
                    text.push_str(&String::from_utf8_lossy(&v.0));
                }
                haystacks.push((format!("secret {}", s.name_any()), text));
            }
        }
        assert!(!self.plaintexts.is_empty(), "no plaintext recorded: the scan would prove nothing");
        for (what, text) in &haystacks {
            for key in &self.plaintexts {
                // The whole key, and everything after the 8-character prefix that may be shown.
                assert!(!text.contains(key.as_str()), "plaintext key found in {what}");
                assert!(!text.contains(&key[8..]), "key material beyond the prefix found in {what}");
            }
        }
    }
}

/// A token allowed to read the operator's /metrics (a ServiceAccount of the test namespace bound
/// to a ClusterRole with `get` on /metrics), as Prometheus would hold.
pub async fn metrics_token(env: &TestEnv) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let pp = PatchParams::apply("byok-tests").force();
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": "byok-tests-metrics-reader" },
        "rules": [{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }]
    }))
    .expect("role");
    Api::<ClusterRole>::all(env.client.clone())
        .patch("byok-tests-metrics-reader", &pp, &Patch::Apply(&role))
        .await
        .expect("role");
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "prometheus" }
    }))
    .expect("sa");
    sas.patch("prometheus", &pp, &Patch::Apply(&sa)).await.expect("sa");
    let binding_name = format!("byok-tests-metrics-{}", env.ns);
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": binding_name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "byok-tests-metrics-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "prometheus", "namespace": env.ns }]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .patch(&binding_name, &pp, &Patch::Apply(&binding))
        .await
        .expect("binding");
    let req = TokenRequest { spec: TokenRequestSpec { audiences: vec![], ..Default::default() }, ..Default::default() };
    let answer = sas.create_token_request("prometheus", &PostParams::default(), &req).await.expect("token");
    answer.status.expect("token status").token
}

pub fn phase_of(k: &ByokKey) -> Option<KeyPhase> {
    k.status.as_ref().and_then(|s| s.phase)
}

pub fn condition_reason(k: &ByokKey, type_: &str) -> Option<String> {
    k.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.clone())
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializes")
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_operator();
    }
}

/// A token for `pod` that expired a minute ago, signed with the local cluster's service-account
/// key (so only its expiry is wrong). None against a cluster whose signing key we do not hold.
pub fn expired_token(env: &TestEnv, pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG")?);
    let key = kubeconfig.parent()?.join("pki/sa.key");
    if !key.exists() {
        eprintln!("no local service-account key: skipping the expired-token case on this cluster");
        return None;
    }
    let now = jiff::Timestamp::now().as_second();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    let claims = serde_json::json!({
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:".to_string() + &env.ns + ":default",
        "aud": [byok_operator::judge::wire::KEY_AUDIENCE],
        "iat": now - 700, "nbf": now - 700, "exp": now - 60,
        "kubernetes.io": {
            "namespace": env.ns,
            "pod": { "name": pod.name_any(), "uid": pod.uid() },
            "serviceaccount": { "name": "default", "uid": "" }
        }
    });
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut s| s.write_all(signing_input.as_bytes())).transpose()?;
            child.wait_with_output()
        })
        .ok()?;
    Some(format!("{signing_input}.{}", b64(&out.stdout)))
}
