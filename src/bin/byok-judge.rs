//! byok-judge: the judge pod's two containers.
//! - `fetch-key` (init container): asks the key broker for the pod's key and writes it, mode 0400,
//!   to an in-memory emptyDir. Prints the key prefix only.
//! - `run` (judge container): scores its shard of the cases and reports results to the broker;
//!   exits 0 only once the final report was accepted, so the Job retries a pod that could not.
//! - `smoke` (people, not pods): validates the key in `BYOK_SMOKE_KEY` against a provider's real API
//!   as the operator would, scores three fixed cases as a judge pod would, and prints the result
//!   as one JSON line; `smoke-table` renders such lines. Driven by `hack/live-smoke.sh`.
//!
//! Logs go to stderr (RUST_LOG, default info; warn for `smoke`). Neither the key nor a token is
//! ever logged.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use byok_operator::crd::{AzureSpec, Provider, ScorerType};
use byok_operator::judge::cases::{parse_shard, shard_index};
use byok_operator::judge::client::{
    HttpReporter, fetch_key, panel_key_path, read_key_file, write_key_file, write_panel_keys,
};
use byok_operator::judge::pin::PinnedFile;
use byok_operator::judge::runner::{JudgeKeys, ReportPacing, ShardRun, run_shard};
use byok_operator::judge::scorers::scorer_names;
use byok_operator::judge::smoke::{self, NoteRow, TableLine};
use byok_operator::judge::summary::{summarize, usage};
use byok_operator::judge::wire::{CaseResult, JudgeConfig};
use byok_operator::providers::Endpoints;
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use zeroize::Zeroize as _;

#[derive(Parser)]
#[command(name = "byok-judge", version, about = "LLM-as-judge worker of byok-operator's judge pods")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the provider key from the key broker and write it to a file (mode 0400).
    FetchKey(FetchKey),
    /// Score this pod's shard of the cases and report the results to the broker.
    Run(Run),
    /// Live smoke test of one provider key, read from the BYOK_SMOKE_KEY environment variable
    /// (never from the command line): validate it, score three cases, print one JSON line.
    /// Exits 0 when the key is Valid and no case errored. See hack/live-smoke.sh.
    Smoke(Smoke),
    /// Print the JSON lines of `smoke` runs (stdin) as a table; exits 1 if any provider failed.
    SmokeTable,
}

/// How a judge pod reaches the broker, for both of its containers.
#[derive(clap::Args)]
struct BrokerArgs {
    /// Key broker base URL (https).
    #[arg(long = "broker", env = "BYOK_BROKER_URL")]
    url: String,
    /// CA bundle that signed the broker's serving certificate (the only roots trusted).
    #[arg(long)]
    ca_file: PathBuf,
    /// SHA-256 the CA bundle must have (pinned by the operator in the Job spec).
    #[arg(long)]
    ca_sha256: String,
    /// This pod's uid (downward API).
    #[arg(long, env = "POD_UID")]
    pod_uid: String,
}

#[derive(Parser)]
struct FetchKey {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Projected service account token with the broker's audience.
    #[arg(long)]
    token_file: PathBuf,
    /// Where to write the key.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Parser)]
struct Run {
    /// The judge configuration (config.json, a JudgeConfig).
    #[arg(long)]
    config: PathBuf,
    /// SHA-256 the config must have (pinned by the operator in the Job spec).
    #[arg(long)]
    config_sha256: String,
    /// The cases, JSON Lines.
    #[arg(long)]
    cases: PathBuf,
    /// SHA-256 the cases must have.
    #[arg(long)]
    cases_sha256: String,
    /// The key file written by fetch-key; needed only when an llm_judge scorer is configured.
    #[arg(long)]
    key_file: PathBuf,
    /// This pod's shard: the Indexed Job's completion index. Required (a pod without one is not a
    /// judge pod, and is never taken for shard 0).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    shard: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Projected service account token with the results audience.
    #[arg(long)]
    results_token_file: PathBuf,
    /// Also write this shard's results here as JSON Lines.
    #[arg(long)]
    results_out: Option<PathBuf>,
}

#[derive(Parser)]
struct Smoke {
    /// openai, anthropic, google or azure_openai.
    #[arg(long, value_parser = parse_provider)]
    provider: Provider,
    /// Judge model; the operator's default for the provider when omitted (Azure: the deployment).
    #[arg(long)]
    model: Option<String>,
    /// Azure OpenAI resource endpoint, e.g. https://my-resource.openai.azure.com (must be on the
    /// default allow-list unless --azure-base-url replaces it).
    #[arg(long)]
    azure_endpoint: Option<String>,
    /// Azure OpenAI deployment to validate and call.
    #[arg(long)]
    azure_deployment: Option<String>,
    /// Azure OpenAI dated API version; the v1 API when omitted.
    #[arg(long)]
    azure_api_version: Option<String>,
    /// Instead of https://api.openai.com/v1 (a gateway, or the mock provider).
    #[arg(long)]
    openai_base_url: Option<String>,
    /// Instead of https://api.anthropic.com.
    #[arg(long)]
    anthropic_base_url: Option<String>,
    /// Instead of https://generativelanguage.googleapis.com.
    #[arg(long)]
    google_base_url: Option<String>,
    /// Replaces the Azure OpenAI endpoint (a gateway, or the mock provider).
    #[arg(long)]
    azure_base_url: Option<String>,
}

fn parse_provider(value: &str) -> Result<Provider, String> {
    Provider::ALL.into_iter().find(|p| p.as_str() == value).ok_or_else(|| {
        let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown provider {value:?} (expected one of {})", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A smoke test prints its own results: its logs are for problems only.
    let default_level = match cli.command {
        Command::FetchKey(_) | Command::Run(_) => "info",
        Command::Smoke(_) | Command::SmokeTable => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::FetchKey(args) => fetch(args).await.map(|()| ExitCode::SUCCESS),
            Command::Run(args) => run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Smoke(args) => smoke_test(args).await.map(|()| ExitCode::SUCCESS),
            Command::SmokeTable => smoke_table(),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(args: FetchKey) -> anyhow::Result<()> {
    let ca = PinnedFile::new(&args.broker.ca_file, &args.broker.ca_sha256);
    let mut response = fetch_key(&args.broker.url, &args.token_file, &ca, &args.broker.pod_uid).await?;
    let written = write_key_file(&args.out, &response);
    let panel_written = written.as_ref().ok().map(|()| write_panel_keys(&args.out, &response.panel));
    // The keys now live only in the files: wipe our copies whatever happened.
    response.key.zeroize();
    for entry in &mut response.panel {
        if let Some(key) = entry.key.as_mut() {
            key.zeroize();
        }
    }
    written?;
    let refused = panel_written.transpose()?.unwrap_or_default();
    // The broker sends the prefix; print no more than its first 8 characters all the same.
    let prefix: String = response.key_prefix.chars().take(8).collect();
    println!("fetched key {prefix}... into {}", args.out.display());
    for entry in response.panel.iter().filter(|p| p.key.is_some()) {
        let prefix: String = entry.key_prefix.chars().take(8).collect();
        println!("fetched panel key {} ({prefix}...)", entry.byok_key);
    }
    for (name, reason) in refused {
        // Not fatal: that judge's verdicts error, the panel's other judges still judge.
        println!("panel key {name} refused by the broker: {reason}");
    }
    Ok(())
}

async fn run(args: Run) -> anyhow::Result<()> {
    // Both come from a ConfigMap a tenant can write: only the bytes the operator pinned are used.
    let config_text = PinnedFile::new(&args.config, &args.config_sha256).read_text()?;
    let config: JudgeConfig = serde_json::from_str(&config_text)
        .with_context(|| format!("{} is not a judge config", args.config.display()))?;
    let shards = config.shards.max(1);
    let shard = shard_index(args.shard.as_deref(), shards)?;
    let jsonl = PinnedFile::new(&args.cases, &args.cases_sha256).read_text()?;
    let cases = parse_shard(&jsonl, shard, shards);
    drop(jsonl);

    let needs_key = config.scorers.iter().any(|s| s.type_ == ScorerType::LlmJudge);
    let key =
        if needs_key {
            let key = read_key_file(&args.key_file)?;
            Some(key.with_context(|| {
                format!("llm_judge is configured but there is no key file {}", args.key_file.display())
            })?)
        } else {
            None
        };
    let keys = JudgeKeys { main: key, panel: panel_keys(&config, &args.key_file)? };
    let ca = PinnedFile::new(&args.broker.ca_file, &args.broker.ca_sha256);
    let reporter = HttpReporter::new(&args.broker.url, &args.results_token_file, &ca)?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        // A redirect would carry the key's header to wherever the answer points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the provider HTTP client")?;
    let run = ShardRun { shard, pod_uid: args.broker.pod_uid.clone(), http, pacing: ReportPacing::default() };

    tracing::info!(
        eval_job = %config.eval_job, namespace = %config.namespace, provider = %config.provider,
        model = %config.model, shard, shards, cases = cases.len(), "judging"
    );
    let outcome = run_shard(&config, &run, keys, cases, &reporter).await;

    if let Some(path) = &args.results_out {
        write_results(path, &outcome.results)?;
    }
    let summary = summarize(&outcome.results, &scorer_names(&config.scorers));
    let tokens = usage(&outcome.results);
    tracing::info!(
        passed = summary.passed, failed = summary.failed, errored = summary.errored,
        mean_score = ?summary.mean_score, input_tokens = tokens.input_tokens, output_tokens = tokens.output_tokens,
        key_revoked = outcome.key_revoked, "shard done"
    );
    outcome.final_report.map(drop).context("the final results report was not accepted")
}

/// The panel judges' keys fetch-key wrote; a judge whose key is missing (refused by the broker)
/// errors its own verdicts.
fn panel_keys(config: &JudgeConfig, key_file: &Path) -> anyhow::Result<BTreeMap<String, SecretString>> {
    let mut keys = BTreeMap::new();
    for judge in config.panels.values().flat_map(|p| &p.judges) {
        if keys.contains_key(&judge.byok_key) {
            continue;
        }
        match read_key_file(&panel_key_path(key_file, &judge.byok_key)?)? {
            Some(key) => {
                keys.insert(judge.byok_key.clone(), key);
            }
            None => tracing::warn!(byokkey = %judge.byok_key, "no key for this panel judge: its verdicts error"),
        }
    }
    Ok(keys)
}

fn write_results(path: &Path, results: &[CaseResult]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for result in results {
        serde_json::to_writer(&mut out, result)?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("cannot write {}", path.display()))
}

/// Runs the smoke test and prints its row; on an error before a row exists, prints a note row
/// saying why, so the table still shows the provider as failed.
async fn smoke_test(args: Smoke) -> anyhow::Result<()> {
    let provider = args.provider;
    let result = smoke_row(args).await;
    let line = match &result {
        Ok(row) => TableLine::Row(Box::new(row.clone())),
        Err(error) => {
            TableLine::Note(NoteRow { provider: provider.to_string(), skipped: false, message: format!("{error:#}") })
        }
    };
    println!("{}", serde_json::to_string(&line).context("cannot print the smoke result")?);
    let row = result?;
    if !row.ok {
        let (_, _, errored) = row.counts();
        bail!(
            "{provider}: smoke test failed (validation {}, {errored} case(s) errored, {} case result(s))",
            row.validation.reason,
            row.cases.len()
        );
    }
    Ok(())
}

async fn smoke_row(args: Smoke) -> anyhow::Result<smoke::SmokeRow> {
    let key = smoke_key()?;
    let azure = match (args.provider, args.azure_endpoint, args.azure_deployment) {
        (Provider::AzureOpenAi, Some(endpoint), Some(deployment)) => {
            Some(AzureSpec { endpoint, deployment, api_version: args.azure_api_version })
        }
        (Provider::AzureOpenAi, _, _) => bail!("azure_openai needs --azure-endpoint and --azure-deployment"),
        _ => None,
    };
    let mut endpoints = Endpoints::default();
    for (url, slot) in [
        (args.openai_base_url, &mut endpoints.openai),
        (args.anthropic_base_url, &mut endpoints.anthropic),
        (args.google_base_url, &mut endpoints.google),
    ] {
        if let Some(url) = url {
            *slot = url;
        }
    }
    endpoints.azure = args.azure_base_url;
    Ok(smoke::run(args.provider, key, args.model, azure, endpoints).await?)
}

/// The key, from the environment only. The error never shows the value (std's does, for a value
/// that is not Unicode).
fn smoke_key() -> anyhow::Result<SecretString> {
    match std::env::var_os(smoke::KEY_ENV) {
        None => bail!("no key: set {} in the environment (never on the command line)", smoke::KEY_ENV),
        Some(value) => match value.into_string() {
            Ok(key) if key.is_empty() => bail!("{} is empty", smoke::KEY_ENV),
            Ok(key) => Ok(SecretString::from(key)),
            Err(_) => bail!("{} is not valid UTF-8", smoke::KEY_ENV),
        },
    }
}

/// Reads `smoke` JSON lines from stdin and prints the table; exits 1 if a provider failed (the
/// table says which).
fn smoke_table() -> anyhow::Result<ExitCode> {
    let mut lines = Vec::new();
    for (index, line) in std::io::stdin().lines().enumerate() {
        let line = line.context("cannot read the smoke results")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: TableLine =
            serde_json::from_str(&line).with_context(|| format!("line {} is not a smoke result", index + 1))?;
        lines.push(parsed);
    }
    let (table, failed) = smoke::render_table(&lines);
    print!("{table}");
    std::io::stdout().flush().context("cannot print the table")?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
