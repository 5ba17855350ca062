//! The command line of `kubectl byok` (clap derive). Parsing only: no behaviour.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::duration::parse_duration;
use crate::crd::Provider;
use crate::report::compare::Threshold;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-byok",
    bin_name = "kubectl-byok",
    version,
    about = "Manage bring-your-own LLM provider keys (ByokKey) and evaluations (EvalJob)",
    after_help = "The key is read from stdin or a hidden prompt, never from the command line.\n\
                  Examples:\n  printf %s \"$OPENAI_API_KEY\" | kubectl byok create openai-main --provider openai --default\n  \
                  kubectl byok list -A\n  kubectl byok test openai-main"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Namespace (default: the kubeconfig context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Namespace the operator runs in (its KEK keyring and sealing key live there).
    #[arg(long, global = true, env = "BYOK_OPERATOR_NAMESPACE", default_value = "byok-system")]
    pub operator_namespace: String,
    /// Name of the operator's KEK keyring Secret.
    #[arg(long, global = true, default_value = "byok-operator-kek", hide = true)]
    pub keyring_secret: String,
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Output format: text (or table), json or yaml; for `eval report`, the HTML file to write.
    #[arg(short = 'o', long, global = true, value_name = "FORMAT|FILE", value_parser = parse_output, default_value = "text")]
    pub output: OutputArg,
}

/// What `-o` names: a format, or the file `eval report` writes (any other command refuses a file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputArg {
    Format(Output),
    File(PathBuf),
}

impl OutputArg {
    /// The format to print in (text when `-o` names a file).
    pub fn format(&self) -> Output {
        match self {
            Self::Format(o) => *o,
            Self::File(_) => Output::Text,
        }
    }
}

/// Parses `-o`: `text` (or `table`), `json`, `yaml`; anything else is a file name.
pub fn parse_output(s: &str) -> Result<OutputArg, String> {
    let format = match s.trim().to_ascii_lowercase().as_str() {
        "" => return Err("expected text, table, json, yaml, or a file name".into()),
        "text" | "table" => Output::Text,
        "json" => Output::Json,
        "yaml" => Output::Yaml,
        _ => return Ok(OutputArg::File(PathBuf::from(s))),
    };
    Ok(OutputArg::Format(format))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Tables and sentences for people.
    Text,
    /// JSON for scripts.
    Json,
    /// YAML for scripts.
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a ByokKey from a key read on stdin (or a hidden prompt) and wait until it is validated.
    Create(CreateArgs),
    /// List ByokKeys.
    #[command(alias = "ls")]
    List {
        /// List keys of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Test a key against its provider now, and wait for the answer.
    Test {
        name: String,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Revoke a key: its ciphertext is deleted at once and nothing can use it any more.
    Revoke {
        name: String,
        /// Do not wait until the operator reports the key Revoked.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Ask for a key to be its provider's default in the namespace (the newest marked default wins).
    SetDefault {
        name: String,
        /// Do not wait until the key is the effective default.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Seal a key for GitOps: prints a ByokKey manifest with spec.sealed that is safe to commit.
    Seal(SealArgs),
    /// Print the operator's public sealing key (store it in git to seal offline with `seal --cert`).
    FetchCert,
    /// Operate the operator's key-encryption keys (KEKs).
    #[command(subcommand)]
    Kek(KekCommand),
    /// Run and inspect LLM-as-judge evaluations.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Print this plugin's version and the running operator's; warns when they are apart.
    Version,
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The ByokKey spec fields `create` and `seal` share.
#[derive(Args, Debug, Clone)]
pub struct KeySpecArgs {
    /// Name of the ByokKey.
    pub name: String,
    /// openai, anthropic, google or azure_openai.
    #[arg(long, value_parser = parse_provider)]
    pub provider: Provider,
    /// Ask for this key to be the provider's default in the namespace.
    #[arg(long)]
    pub default: bool,
    /// A name for people, shown by `list`.
    #[arg(long)]
    pub display_name: Option<String>,
    /// Model to validate and judge with.
    #[arg(long)]
    pub model: Option<String>,
    /// Azure OpenAI resource endpoint, e.g. https://my-resource.openai.azure.com (azure_openai only).
    #[arg(long, requires = "azure_deployment")]
    pub azure_endpoint: Option<String>,
    /// Azure OpenAI deployment name (azure_openai only).
    #[arg(long, requires = "azure_endpoint")]
    pub azure_deployment: Option<String>,
    /// Azure OpenAI dated API version (default: the v1 API).
    #[arg(long, requires = "azure_endpoint")]
    pub azure_api_version: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    #[command(flatten)]
    pub spec: KeySpecArgs,
    /// Keep the plaintext Secret after import (default: the operator deletes it).
    #[arg(long)]
    pub retain: bool,
    /// Return once created, without waiting for validation.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for Ready or Invalid.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("public-key").required(true).args(["cert", "fetch_cert"])))]
pub struct SealArgs {
    #[command(flatten)]
    pub spec: KeySpecArgs,
    /// The operator's public sealing key, as printed by `kubectl byok fetch-cert` (works offline).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Read the public sealing key from the cluster (ConfigMap byok-sealing-key in the operator namespace).
    #[arg(long)]
    pub fetch_cert: bool,
}

#[derive(Subcommand, Debug)]
pub enum KekCommand {
    /// Which KEK each key uses, and which KEKs can be removed.
    Status,
    /// Add a new active KEK; the operator re-encrypts every key under it.
    Rotate,
    /// How to back up and restore the keyring.
    BackupHelp,
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Create an EvalJob from a JSON Lines file of cases.
    Run(Box<EvalRunArgs>),
    /// Show an EvalJob's progress until it Succeeded or Failed.
    Watch {
        name: String,
        #[arg(long, default_value = "2h", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print an EvalJob's per-case results.
    Results {
        name: String,
        /// The results as JSON (one object per case).
        #[arg(long, conflicts_with = "junit")]
        json: bool,
        /// The results as JUnit XML, for CI.
        #[arg(long)]
        junit: bool,
    },
    /// Write a finished EvalJob's report: one self-contained HTML file (-o FILE, else stdout).
    Report(EvalReportArgs),
    /// Compare two finished EvalJobs over the same case ids; exit 1 when regressions exceed the
    /// threshold, 2 when they cannot be compared.
    Compare(EvalCompareArgs),
}

#[derive(Args, Debug, Clone)]
pub struct EvalReportArgs {
    /// The EvalJob (Succeeded or Failed).
    pub name: String,
    /// Another EvalJob over the same cases: per-case regressions and improvements, per-scorer deltas.
    #[arg(long, value_name = "EVALJOB")]
    pub baseline: Option<String>,
    /// Prices per model (YAML or JSON), used before the built-in table.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct EvalCompareArgs {
    /// The EvalJob compared against (e.g. the last good run).
    pub baseline: String,
    /// The EvalJob compared with it.
    pub candidate: String,
    /// Regressed cases tolerated: a number of cases (3), a percentage (5%) or a fraction (0.05) of
    /// the cases in both runs.
    #[arg(long, default_value = "0")]
    pub threshold: Threshold,
}

#[derive(Args, Debug, Clone)]
pub struct EvalRunArgs {
    /// Cases as JSON Lines: {"id": .., "input": .., "output": .., "expected": ..} per line.
    #[arg(short = 'f', long = "file", value_name = "CASES.jsonl")]
    pub file: PathBuf,
    /// Provider of the judge model.
    #[arg(long, value_parser = parse_provider)]
    pub provider: Provider,
    /// A scorer, repeatable: llm_judge:RUBRIC, contains[:TEXT], exact_match, regex:PATTERN, json_valid.
    #[arg(long = "scorer", required = true)]
    pub scorers: Vec<String>,
    /// Pass threshold (0..1) of llm_judge scorers.
    #[arg(long)]
    pub pass_threshold: Option<f64>,
    /// EvalJob name (default: eval-<random>).
    #[arg(long)]
    pub name: Option<String>,
    /// ByokKey to judge with (default: the provider's effective default key).
    #[arg(long)]
    pub key: Option<String>,
    /// Judge model.
    #[arg(long)]
    pub model: Option<String>,
    /// Judge pods running at once.
    #[arg(long)]
    pub parallelism: Option<i32>,
    /// Provider calls in flight per pod.
    #[arg(long)]
    pub concurrency: Option<i32>,
    /// Deadline of the whole run.
    #[arg(long, value_parser = parse_duration)]
    pub run_timeout: Option<Duration>,
    /// Run the judge pods only on nodes with this label (KEY=VALUE; repeatable): the EvalJob's
    /// `spec.template.nodeSelector`.
    #[arg(long = "node-selector", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub node_selector: Vec<(String, String)>,
    /// Show progress until the run ends.
    #[arg(long)]
    pub watch: bool,
    /// Wait until the run ends, print its summary and exit by its gate (condition Passed): 0 passed,
    /// 1 the pass criteria were not met, 2 the run could not complete (Failed, timed out, an error).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait and --watch wait for the end (default: the run's deadline plus 15m to start).
    #[arg(long, value_parser = parse_duration)]
    pub wait_timeout: Option<Duration>,
    #[command(flatten)]
    pub criteria: CriteriaArgs,
}

/// The gate of `eval run`: the EvalJob's `spec.passCriteria` (without any, every case must pass).
#[derive(Args, Debug, Clone, Default)]
pub struct CriteriaArgs {
    /// Least fraction (0..1) of cases every scorer passed.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub min_pass_rate: Option<f64>,
    /// Most cases that may be errored.
    #[arg(long, value_name = "N")]
    pub max_errored: Option<u32>,
    /// Least mean score (0..1) over all scores.
    #[arg(long, value_name = "SCORE", value_parser = parse_rate)]
    pub min_mean_score: Option<f64>,
    /// Least pass rate (0..1) of one scorer, by its name in results (repeatable).
    #[arg(long = "scorer-min-pass-rate", value_name = "SCORER=RATE", value_parser = parse_scorer_rate)]
    pub scorer_min_pass_rate: Vec<(String, f64)>,
}

/// Parses a rate or score between 0 and 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

/// Parses `SCORER=RATE`.
pub fn parse_scorer_rate(s: &str) -> Result<(String, f64), String> {
    let (name, rate) = parse_label(s).map_err(|_| format!("expected SCORER=RATE, got {s:?}"))?;
    Ok((name, parse_rate(&rate)?))
}

/// Parses `key=value` (a node label).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parses a provider as written in manifests (`azure-openai` is accepted too).
pub fn parse_provider(s: &str) -> Result<Provider, String> {
    let norm = s.trim().to_ascii_lowercase().replace('-', "_");
    Provider::ALL.into_iter().find(|p| p.as_str() == norm).ok_or_else(|| {
        let all: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown provider {s:?}; use one of {}", all.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_a_format_or_a_file() {
        assert_eq!(parse_output("table"), Ok(OutputArg::Format(Output::Text)));
        assert_eq!(parse_output("JSON"), Ok(OutputArg::Format(Output::Json)));
        assert_eq!(parse_output("report.html"), Ok(OutputArg::File("report.html".into())));
        assert_eq!(parse_output("report.html").map(|o| o.format()), Ok(Output::Text));
        assert!(parse_output(" ").is_err());
        let cli = Cli::try_parse_from(["kubectl-byok", "eval", "report", "a", "-o", "r.html", "--baseline", "b"]);
        let cli = cli.expect("parses");
        assert_eq!(cli.global.output, OutputArg::File("r.html".into()));
        let cli = Cli::try_parse_from(["kubectl-byok", "eval", "compare", "a", "b", "--threshold", "5%", "-o", "json"]);
        assert!(matches!(cli.expect("parses").command, Command::Eval(EvalCommand::Compare(_))));
    }

    #[test]
    fn labels_are_key_equals_value() {
        assert_eq!(parse_label(" zone = a "), Ok(("zone".into(), "a".into())));
        assert_eq!(parse_label("gpu="), Ok(("gpu".into(), String::new())));
        assert!(parse_label("=a").is_err());
        assert!(parse_label("zone").is_err());
    }

    #[test]
    fn rates_are_between_zero_and_one() {
        assert_eq!(parse_rate("0.8"), Ok(0.8));
        assert_eq!(parse_rate("1"), Ok(1.0));
        assert!(parse_rate("1.5").is_err() && parse_rate("-0.1").is_err() && parse_rate("NaN").is_err());
        assert_eq!(parse_scorer_rate("llm_judge=0.9"), Ok(("llm_judge".into(), 0.9)));
        assert!(parse_scorer_rate("llm_judge").is_err() && parse_scorer_rate("llm_judge=2").is_err());
    }
}
