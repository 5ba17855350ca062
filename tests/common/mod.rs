//! Test harness: each test gets its own namespace, its own mock provider and its own operator
//! process (watching only that namespace), against the local control plane in $KUBECONFIG.
#![allow(dead_code)]

pub mod evaljobs;
pub mod judge_pod;
pub mod node;

use std::future::Future;
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
use rand::RngCore;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

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
    pub ns: String,
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
}

pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the tests with `hack/test.sh` (it starts the local control plane)"
    );
    Client::try_default().await.expect("kubeconfig loads")
}

/// Applies the generated CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
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
        let nsapi: Api<Namespace> = Api::all(client.clone());
        let obj =
            Namespace { metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() }, ..Default::default() };
        nsapi.create(&PostParams::default(), &obj).await.expect("namespace created");
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
            mock,
            operator: None,
            log_path,
            broker_port,
            plaintexts: Vec::new(),
            extra_logs: Vec::new(),
            broker_host,
            operator_args: options.operator_args,
        };
        env.start_operator();
        env
    }

    /// Starts the operator binary, appending to this test's log file.
    pub fn start_operator(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let ep = self.mock.endpoints();
        let broker = std::net::SocketAddr::from((self.broker_host, self.broker_port)).to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_byok-operator"))
            .args(["--namespace", &self.ns, "--watch-namespace", &self.ns])
            .args(["--broker-listen", &broker, "--broker-url", &format!("https://{broker}")])
            .args(["--openai-base-url", &ep.openai, "--anthropic-base-url", &ep.anthropic])
            .args(["--google-base-url", &ep.google])
            .args(&self.operator_args)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("operator starts");
        self.operator = Some(child);
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
        let s = Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some([(data_key.to_string(), ByteString(value.to_vec()))].into()),
            ..Default::default()
        };
        self.secrets().create(&PostParams::default(), &s).await.expect("secret created");
    }

    pub fn spec(&self, provider: Provider, secret: &str) -> ByokKeySpec {
        let azure = (provider == Provider::AzureOpenAi).then(|| AzureSpec {
            endpoint: self.mock.azure_endpoint(),
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
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        for c in cms.list(&ListParams::default()).await.expect("configmaps").items {
            haystacks.push((format!("configmap {}", c.name_any()), json(&c)));
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
