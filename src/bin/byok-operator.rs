//! The operator binary: `run` (the default) starts the controllers; `kek` operates the keyring.

use anyhow::Context as _;
use byok_operator::cli::kek;
use byok_operator::controller::OperatorConfig;
use byok_operator::judge_job::JudgeLimits;
use byok_operator::kms::vault::{VaultAuth, VaultConfig};
use byok_operator::kms::{DekPolicy, KmsConfig, KmsProvider};
use byok_operator::operator::leader::LeaseConfig;
use byok_operator::operator::loglevel::SetLevel;
use byok_operator::operator::{self, BrokerConfig};
use byok_operator::providers::{Endpoints, ModelTable};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "byok-operator: bring-your-own-key LLM provider keys on Kubernetes")]
struct Cli {
    /// Namespace of the operator and its KEK keyring Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "byok-system", global = true)]
    namespace: String,
    /// Name of the KEK keyring Secret (the BYOK_ENCRYPTION_KEY).
    #[arg(long, env = "BYOK_KEYRING_SECRET", default_value = "byok-operator-kek", global = true)]
    keyring_secret: String,
    /// Log format.
    #[arg(long, env = "BYOK_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, global = true, env = "BYOK_OPENAI_BASE_URL")]
    openai_base_url: Option<String>,
    #[arg(long, global = true, env = "BYOK_ANTHROPIC_BASE_URL")]
    anthropic_base_url: Option<String>,
    #[arg(long, global = true, env = "BYOK_GOOGLE_BASE_URL")]
    google_base_url: Option<String>,
    /// Replaces every Azure OpenAI endpoint (a gateway, or the mock provider).
    #[arg(long, global = true, env = "BYOK_AZURE_BASE_URL")]
    azure_base_url: Option<String>,
    /// Hosts a ByokKey's Azure endpoint may name, comma-separated (`*.suffix` or exact hosts):
    /// the key is sent there.
    #[arg(long, global = true, env = "BYOK_AZURE_ENDPOINT_ALLOW", value_delimiter = ',',
        default_values_t = byok_operator::providers::DEFAULT_AZURE_HOSTS.map(String::from))]
    azure_endpoint_allow: Vec<String>,
    /// /metrics needs a bearer token allowed to `get` the nonResourceURL /metrics (TokenReview +
    /// SubjectAccessReview), as controller-runtime's secure metrics do.
    #[arg(long, global = true, env = "BYOK_METRICS_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    metrics_auth: bool,
    /// Default judge model per provider, e.g. `openai=gpt-4.1,anthropic=claude-sonnet-4-6`; providers not
    /// named keep the built-in defaults (docs/providers.md: gpt-5.1, claude-sonnet-4-6, gemini-3.5-flash).
    #[arg(long, global = true, env = "BYOK_DEFAULT_MODELS")]
    default_models: Option<String>,
    /// Reconciles in flight at once.
    #[arg(long, global = true, env = "BYOK_CONCURRENCY", default_value_t = 64)]
    concurrency: u16,
    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, global = true, env = "BYOK_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address the key broker listens on (HTTPS).
    #[arg(long, global = true, env = "BYOK_BROKER_LISTEN", default_value = "0.0.0.0:8443")]
    broker_listen: std::net::SocketAddr,
    /// URL judge pods reach the broker at; default https://byok-broker.<namespace>.svc:8443.
    #[arg(long, global = true, env = "BYOK_BROKER_URL")]
    broker_url: Option<String>,
    /// Service name of the broker, for its certificate and default URL.
    #[arg(long, global = true, env = "BYOK_BROKER_SERVICE", default_value = "byok-broker")]
    broker_service: String,
    /// Secret of the broker CA (created on first start).
    #[arg(long, global = true, env = "BYOK_BROKER_CA_SECRET", default_value = "byok-broker-ca")]
    broker_ca_secret: String,
    /// Run the controllers only while holding a Lease, so several replicas can run (HA).
    #[arg(long, global = true, env = "BYOK_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease in the operator namespace.
    #[arg(long, global = true, env = "BYOK_LEASE_NAME", default_value = "byok-operator-leader")]
    lease_name: String,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, global = true, env = "BYOK_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Image holding the byok-judge binary, for judge pods.
    #[arg(long, global = true, env = "BYOK_JUDGE_IMAGE", default_value = concat!("ghcr.io/launchgate-ai/byok-operator:", env!("CARGO_PKG_VERSION")))]
    judge_image: String,
    /// Timeout of one provider call from a judge pod, in seconds (1-3600).
    #[arg(long, global = true, env = "BYOK_JUDGE_CALL_TIMEOUT_SECONDS",
        default_value_t = JudgeLimits::DEFAULT.call_timeout_seconds)]
    judge_call_timeout_seconds: u64,
    /// Lifetime of the judge pods' projected service account tokens, in seconds (600, the
    /// Kubernetes minimum, to 86400); the kubelet renews them before they expire.
    #[arg(long, global = true, env = "BYOK_JUDGE_TOKEN_SECONDS", default_value_t = JudgeLimits::DEFAULT.token_seconds)]
    judge_token_seconds: i64,
    /// How long a finished judge Job and its pods (their logs) are kept, in seconds (at least 60).
    #[arg(long, global = true, env = "BYOK_JUDGE_JOB_TTL_SECONDS",
        default_value_t = i64::from(JudgeLimits::DEFAULT.job_ttl_seconds))]
    judge_job_ttl_seconds: i64,
    #[command(flatten)]
    kms: KmsArgs,
}

/// Where the key-encryption key lives.
#[derive(clap::Args)]
struct KmsArgs {
    /// `keyring` (the keyring Secret), `vault-transit`, or `kms-v2` (a Kubernetes KMS v2 plugin).
    #[arg(long, global = true, env = "BYOK_KMS", default_value = "keyring",
        value_parser = ["keyring", "vault-transit", "kms-v2"])]
    kms: String,
    /// Vault's address (https://vault.example:8200).
    #[arg(long, global = true, env = "BYOK_VAULT_ADDR")]
    vault_addr: Option<String>,
    /// The Transit engine's mount path.
    #[arg(long, global = true, env = "BYOK_VAULT_TRANSIT_MOUNT", default_value = "transit")]
    vault_transit_mount: String,
    /// The Transit key that wraps the data keys.
    #[arg(long, global = true, env = "BYOK_VAULT_TRANSIT_KEY", default_value = "byok-operator")]
    vault_transit_key: String,
    /// Log in with Vault's Kubernetes auth method as this role (with --vault-jwt-file).
    #[arg(long, global = true, env = "BYOK_VAULT_ROLE")]
    vault_role: Option<String>,
    /// The Kubernetes auth method's mount path.
    #[arg(long, global = true, env = "BYOK_VAULT_AUTH_MOUNT", default_value = "kubernetes")]
    vault_auth_mount: String,
    /// The service account token presented to Vault (a projected token with Vault's audience).
    #[arg(long, global = true, env = "BYOK_VAULT_JWT_FILE", default_value = "/var/run/secrets/vault/token")]
    vault_jwt_file: std::path::PathBuf,
    /// Or a Vault token in a file (when no --vault-role).
    #[arg(long, global = true, env = "BYOK_VAULT_TOKEN_FILE")]
    vault_token_file: Option<std::path::PathBuf>,
    /// A PEM CA bundle for Vault's certificate.
    #[arg(long, global = true, env = "BYOK_VAULT_CA_FILE")]
    vault_ca_file: Option<std::path::PathBuf>,
    /// The KMS v2 plugin's unix socket.
    #[arg(long, global = true, env = "BYOK_KMS_SOCKET")]
    kms_socket: Option<std::path::PathBuf>,
    /// How often the KMS is asked for its current key (rotation and health), in seconds.
    #[arg(long, global = true, env = "BYOK_KMS_POLL_SECONDS", default_value_t = 30)]
    kms_poll_seconds: u64,
    /// Timeout of one KMS call, in seconds.
    #[arg(long, global = true, env = "BYOK_KMS_TIMEOUT_SECONDS", default_value_t = 10)]
    kms_timeout_seconds: u64,
    /// How long one data key seals new keys, and an unwrapped data key stays cached, in seconds.
    #[arg(long, global = true, env = "BYOK_DEK_TTL_SECONDS", default_value_t = 3600)]
    dek_ttl_seconds: u64,
    /// Unwrapped data keys kept in memory.
    #[arg(long, global = true, env = "BYOK_DEK_CACHE_SIZE", default_value_t = 1024)]
    dek_cache_size: usize,
}

impl KmsArgs {
    fn config(&self) -> anyhow::Result<KmsConfig> {
        use std::time::Duration;
        let provider = match self.kms.as_str() {
            "vault-transit" => {
                let address = self.vault_addr.clone().context("--kms vault-transit needs --vault-addr")?;
                let auth = match (&self.vault_role, &self.vault_token_file) {
                    (Some(role), _) => VaultAuth::Kubernetes {
                        mount: self.vault_auth_mount.clone(),
                        role: role.clone(),
                        jwt_file: self.vault_jwt_file.clone(),
                    },
                    (None, Some(file)) => VaultAuth::TokenFile(file.clone()),
                    (None, None) => anyhow::bail!("--kms vault-transit needs --vault-role or --vault-token-file"),
                };
                KmsProvider::Vault(VaultConfig {
                    address,
                    mount: self.vault_transit_mount.clone(),
                    key: self.vault_transit_key.clone(),
                    auth,
                    ca_file: self.vault_ca_file.clone(),
                    timeout: Duration::from_secs(self.kms_timeout_seconds.max(1)),
                })
            }
            "kms-v2" => {
                KmsProvider::KmsV2 { socket: self.kms_socket.clone().context("--kms kms-v2 needs --kms-socket")? }
            }
            _ => KmsProvider::Keyring,
        };
        let policy = DekPolicy {
            ttl: Duration::from_secs(self.dek_ttl_seconds.max(1)),
            max_cached: self.dek_cache_size.max(1),
            ..DekPolicy::default()
        };
        Ok(KmsConfig {
            provider,
            policy,
            poll: Duration::from_secs(self.kms_poll_seconds.max(1)),
            timeout: Duration::from_secs(self.kms_timeout_seconds.max(1)),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run,
    /// Operate the KEK keyring.
    #[command(subcommand)]
    Kek(KekCommand),
}

#[derive(Subcommand)]
enum KekCommand {
    /// Which KEK each key uses, and which KEKs can be removed.
    Status,
    /// Add a new active KEK; the operator re-encrypts every key under it.
    Rotate,
    /// Remove a KEK no key uses any more.
    Remove { id: String },
}

/// Logs to stderr (JSON or text); the returned setter changes the level at run time.
fn init_logs(format: &str) -> SetLevel {
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, reload, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if format == "json" { fmt.json().boxed() } else { fmt.boxed() };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

fn config(cli: &Cli) -> anyhow::Result<OperatorConfig> {
    let mut endpoints = Endpoints::default();
    let r = &cli.run;
    if let Some(u) = &r.openai_base_url {
        endpoints.openai = u.clone();
    }
    if let Some(u) = &r.anthropic_base_url {
        endpoints.anthropic = u.clone();
    }
    if let Some(u) = &r.google_base_url {
        endpoints.google = u.clone();
    }
    endpoints.azure = r.azure_base_url.clone();
    endpoints.azure_allowed_hosts =
        r.azure_endpoint_allow.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    let models = match &r.default_models {
        Some(s) => ModelTable::parse(s).context("--default-models")?,
        None => ModelTable::default(),
    };
    Ok(OperatorConfig {
        namespace: cli.namespace.clone(),
        keyring_secret: cli.keyring_secret.clone(),
        endpoints,
        models,
        concurrency: r.concurrency.max(1),
        watch_namespace: r.watch_namespace.clone(),
        judge: JudgeLimits::new(r.judge_call_timeout_seconds, r.judge_token_seconds, r.judge_job_ttl_seconds)?,
        kms: r.kms.config()?,
    })
}

fn broker_config(cli: &Cli) -> BrokerConfig {
    let r = &cli.run;
    let svc = format!("{}.{}.svc", r.broker_service, cli.namespace);
    let url = r.broker_url.clone().unwrap_or_else(|| format!("https://{svc}:{}", r.broker_listen.port()));
    let mut names = vec![r.broker_service.clone(), format!("{}.{}", r.broker_service, cli.namespace), svc.clone()];
    names.extend([format!("{svc}.cluster.local"), "localhost".into(), "127.0.0.1".into()]);
    // The host of a custom URL must be in the certificate too.
    let host = url.split("://").nth(1).and_then(|rest| rest.split(['/', ':']).next()).map(str::to_string);
    names.extend(host.filter(|h| !names.contains(h)));
    let lease = r.leader_elect.then(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "byok-operator".into());
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("{host}-{}", std::process::id()));
        let duration = std::time::Duration::from_secs(r.lease_seconds.max(3));
        LeaseConfig {
            namespace: cli.namespace.clone(),
            name: r.lease_name.clone(),
            identity,
            duration,
            retry: duration / 5,
        }
    });
    BrokerConfig {
        listen: r.broker_listen,
        url,
        names,
        ca_secret: r.broker_ca_secret.clone(),
        judge_image: r.judge_image.clone(),
        metrics_auth: r.metrics_auth,
        lease,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    byok_operator::failpoints::setup();
    let set_level = init_logs(&cli.log_format);
    let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
    let (ns, name) = (cli.namespace.as_str(), cli.keyring_secret.as_str());
    match &cli.command {
        None | Some(Command::Run) => operator::run(client, config(&cli)?, broker_config(&cli), Some(set_level)).await?,
        Some(Command::Kek(KekCommand::Status)) => print!("{}", kek::status(&client, ns, name).await?.render()),
        Some(Command::Kek(KekCommand::Rotate)) => {
            let id = kek::rotate(&client, ns, name).await?;
            println!("new active KEK {id}; the operator re-encrypts every key. Watch `kek status`.");
        }
        Some(Command::Kek(KekCommand::Remove { id })) => {
            kek::remove(&client, ns, name, id).await?;
            println!("removed KEK {id}");
        }
    }
    Ok(())
}
