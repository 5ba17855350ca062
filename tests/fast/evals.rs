//! The EvalJob controller's world: the fake API server, its caches and its context.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use byok_operator::broker::authn::TokenReviewer;
use byok_operator::broker::authz::COMPLETION_INDEX;
use byok_operator::broker::results::ResultsMac;
use byok_operator::broker::{BrokerState, BrokerStores};
use byok_operator::controller::evaljob::{EvalContext, JudgeSettings};
use byok_operator::crd::{ByokKey, EvalJob, EvalJobSpec, Provider};
use byok_operator::crypto::Keyring;
use byok_operator::keystore;
use byok_operator::providers::ModelTable;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{Cache, FakeApi, NS, OPERATOR_NS, byokkey, recorder};

/// The key both the broker (signing) and the EvalJob controller (verifying) derive the results MAC from.
pub const RESULTS_KEY: &[u8] = b"fast tier results key";

pub struct Evals {
    pub api: FakeApi,
    pub ctx: Arc<EvalContext>,
    pub keys: Cache<ByokKey>,
    pub jobs: Cache<Job>,
    pub mac: Arc<ResultsMac>,
}

/// The broker CA certificate as the EvalJob controller publishes it (any PEM text: only pinned).
pub const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nZmFzdA==\n-----END CERTIFICATE-----\n";

impl Evals {
    pub fn new() -> Self {
        let api = FakeApi::new();
        let client = api.client();
        let (keys, jobs) = (Cache::new(), Cache::new());
        let mac = Arc::new(ResultsMac::derive(RESULTS_KEY));
        let settings = JudgeSettings {
            image: "byok-judge:fast".into(),
            broker_url: "https://byok-broker.byok-system.svc:8443".into(),
            endpoints: Default::default(),
            limits: Default::default(),
        };
        let ctx = EvalContext {
            recorder: recorder(&client),
            client,
            models: ModelTable::default(),
            settings,
            ca_pem: CA_PEM.into(),
            byokkeys: keys.store.clone(),
            results_mac: mac.clone(),
            jobs: jobs.store.clone(),
            metrics: Arc::new(byok_operator::metrics::Metrics::default()),
            written: Default::default(),
            retries: Default::default(),
        };
        Self { api, ctx: Arc::new(ctx), keys, jobs, mac }
    }

    /// Creates an EvalJob in the fake API server.
    pub fn create(&self, name: &str, spec: serde_json::Value) -> EvalJob {
        let spec: EvalJobSpec = serde_json::from_value(spec).expect("EvalJob spec");
        let mut ej = EvalJob::new(name, spec);
        ej.metadata.namespace = Some(NS.into());
        self.api.put(&ej)
    }

    pub fn stored(&self, name: &str) -> EvalJob {
        self.api.get::<EvalJob>(NS, name).unwrap_or_else(|| panic!("EvalJob {name} is stored"))
    }

    /// Reconciles the EvalJob `name` as stored now.
    pub async fn reconcile(&self, name: &str) -> Action {
        let ej = Arc::new(self.stored(name));
        byok_operator::controller::evaljob::reconcile::reconcile(ej, self.ctx.clone())
            .await
            .unwrap_or_else(|e| panic!("reconcile {name}: {e}"))
    }

    /// The Jobs cache shows what the API server holds.
    pub fn sync_jobs(&mut self) {
        self.jobs.reset(self.api.all::<Job>());
    }
}

impl Default for Evals {
    fn default() -> Self {
        Self::new()
    }
}

/// A Ready, effective-default ByokKey of [`NS`] as the ByokKey controller leaves one.
pub fn ready_default_key(name: &str, prefix: &str) -> ByokKey {
    let mut key = byokkey(name, Provider::OpenAi, &format!("{name}-src"), true);
    key.metadata.uid = Some(format!("{name}-uid"));
    key.status = Some(byok_operator::crd::ByokKeyStatus {
        phase: Some(byok_operator::crd::KeyPhase::Ready),
        key_prefix: Some(prefix.into()),
        encrypted_secret_ref: Some(keystore::encrypted_secret_name(name)),
        effective_default: true,
        ..Default::default()
    });
    key
}

/// TokenReview as the API server answers it, for the tokens a test registered: a pod-bound
/// service-account token, for the audience it was asked about; any other token is not
/// authenticated; while `down`, the API server cannot be reached.
#[derive(Default)]
pub struct Reviews {
    /// Token -> (pod name, pod uid).
    tokens: Mutex<HashMap<String, (String, String)>>,
    /// The audience of each review asked for, in order.
    pub asked: Mutex<Vec<String>>,
    pub down: AtomicBool,
}

impl TokenReviewer for Reviews {
    fn review(&self, token: String, audience: String) -> BoxFuture<'_, Result<Option<TokenReviewStatus>, kube::Error>> {
        self.asked.lock().expect("reviews").push(audience.clone());
        let known = self.tokens.lock().expect("tokens").get(&token).cloned();
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                return Err(kube::Error::Service("connection refused".into()));
            }
            let Some((pod, uid)) = known else {
                let error = Some("invalid bearer token".to_string());
                return Ok(Some(TokenReviewStatus { authenticated: Some(false), error, ..Default::default() }));
            };
            let extra = BTreeMap::from([
                ("authentication.kubernetes.io/pod-name".to_string(), vec![pod]),
                ("authentication.kubernetes.io/pod-uid".to_string(), vec![uid]),
            ]);
            let user = UserInfo {
                username: Some(format!("system:serviceaccount:{NS}:default")),
                extra: Some(extra),
                ..Default::default()
            };
            Ok(Some(TokenReviewStatus {
                authenticated: Some(true),
                audiences: Some(vec![audience]),
                user: Some(user),
                ..Default::default()
            }))
        })
    }
}

/// The key broker's world around an [`Evals`]: its state answering from the same fake API server
/// and caches, a keyring holding the keys' KEK, and tokens verified by [`Reviews`].
pub struct Broker {
    pub state: Arc<BrokerState>,
    pub keyring: Arc<RwLock<Keyring>>,
    pub evaljobs: Cache<EvalJob>,
    pub encrypted: Cache<keystore::Ciphertext>,
    pub reviews: Arc<Reviews>,
}

impl Broker {
    pub fn new(evals: &Evals) -> Self {
        let keyring = Arc::new(RwLock::new(Keyring::generate()));
        let (mut evaljobs, mut encrypted) = (Cache::new(), Cache::new());
        evaljobs.reset(evals.api.all::<EvalJob>());
        encrypted.reset(evals.api.all::<Secret>().into_iter().map(keystore::Ciphertext::from));
        let stores = BrokerStores {
            byokkeys: evals.keys.store.clone(),
            encrypted: encrypted.store.clone(),
            evaljobs: evaljobs.store.clone(),
            jobs: evals.jobs.store.clone(),
        };
        let client = evals.api.client();
        let reviews = Arc::new(Reviews::default());
        let state = BrokerState {
            recorder: recorder(&client),
            client,
            tokens: reviews.clone(),
            kek: byok_operator::kms::KekSource::Keyring(keyring.clone()),
            stores: Default::default(),
            metrics: Arc::new(byok_operator::metrics::Metrics::default()),
            namespace: OPERATOR_NS.into(),
            results_mac: ResultsMac::derive(RESULTS_KEY),
            metrics_auth: false,
            results_slots: tokio::sync::Semaphore::new(byok_operator::broker::RESULTS_IN_FLIGHT),
        };
        let _ = state.stores.set(stores);
        Self { state: Arc::new(state), keyring, evaljobs, encrypted, reviews }
    }

    /// A projected service-account token of pod `pod` (uid `uid`) for `audience`, which
    /// [`Reviews`] accepts.
    pub fn token(&self, audience: &str, pod: &str, uid: &str) -> String {
        use base64::Engine;
        let exp = jiff::Timestamp::now().as_second() + 600;
        let claims = json!({ "aud": [audience], "exp": exp, "sub": format!("system:serviceaccount:{NS}:default") });
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let token = format!("e30.{payload}.sig-{uid}-{audience}");
        self.reviews.tokens.lock().expect("tokens").insert(token.clone(), (pod.into(), uid.into()));
        token
    }

    /// Seals `plaintext` for `key` under the broker's keyring into its encrypted Secret, stored and cached.
    pub fn seal(&mut self, evals: &Evals, key: &ByokKey, plaintext: &str) {
        let envelope = {
            let ring = self.keyring.read().expect("keyring");
            keystore::seal(&ring, key, &SecretString::from(plaintext.to_string())).expect("seal")
        };
        let secret = evals.api.put(&keystore::encrypted_secret(key, &envelope, "source-uid/1"));
        self.encrypted.apply(secret.into());
    }

    /// The EvalJobs cache shows what the API server holds.
    pub fn sync(&mut self, evals: &Evals) {
        self.evaljobs.reset(evals.api.all::<EvalJob>());
    }

    /// POSTs `body` to the broker's `path` as `peer`, with `token` as bearer (none when None);
    /// returns the status code and the JSON answer.
    pub async fn post(&self, path: &str, token: Option<&str>, peer: [u8; 4], body: Value) -> (u16, Value) {
        use tower::ServiceExt as _;
        let mut request = http::Request::post(path).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = request.body(axum::body::Body::from(body.to_string())).expect("request");
        let addr = std::net::SocketAddr::from((peer, 43_210));
        request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
        let response = byok_operator::broker::router(self.state.clone()).oneshot(request).await.expect("infallible");
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// The pod the Job controller would make for shard `index` of `job`: the template's copy, owned
/// by the Job, starting, at address `ip`.
pub fn judge_pod(job: &Job, index: u32, uid: &str, ip: &str) -> Pod {
    let template = job.spec.clone().expect("job spec").template;
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(format!("{}-{index}-abcde", job.name_any()));
    metadata.namespace = Some(NS.into());
    metadata.uid = Some(uid.into());
    metadata.annotations.get_or_insert_with(Default::default).insert(COMPLETION_INDEX.into(), index.to_string());
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.name_any(),
        uid: job.uid().expect("job uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let status = PodStatus {
        phase: Some("Pending".into()),
        pod_ip: Some(ip.into()),
        pod_ips: Some(vec![PodIP { ip: ip.into() }]),
        ..Default::default()
    };
    Pod { metadata, spec: template.spec, status: Some(status) }
}
