//! `kubectl byok`: the kubectl plugin for ByokKeys and EvalJobs. Every command is a small module;
//! `run` dispatches. Errors say what is wrong and what to do; the binary only prints them.

pub mod args;
mod completion;
mod create;
mod ctx;
mod duration;
mod error;
mod eval_compare;
mod eval_report;
mod eval_results;
mod eval_run;
mod eval_watch;
mod gate;
mod kek;
mod keyinput;
mod keytest;
mod list;
mod modify;
mod output;
mod seal;
mod spec;
mod version;
mod wait;

pub use args::Cli;
pub use ctx::Ctx;
pub use duration::parse_duration;
pub use error::Error;

use args::{Command, EvalCommand, Output, OutputArg};

/// Runs one command. Writes results to stdout, progress and warnings to stderr.
pub async fn run(cli: Cli) -> Result<(), Error> {
    if let Command::Eval(EvalCommand::Compare(ref a)) = cli.command {
        // Exit 2 for anything but the comparison's answer: a CI job tells "regressed" from "broken".
        output_file(&cli).map_err(Error::unless_gate)?;
        let ctx = Ctx::new(&cli.global).await.map_err(Error::unless_gate)?;
        return eval_compare::compare(&ctx, a).await.map_err(Error::unless_gate);
    }
    let file = output_file(&cli)?;
    match cli.command {
        // Commands that need no cluster.
        Command::Completion { shell } => return completion::print(shell),
        Command::Version => return version::print(&cli.global, cli.global.output.format()).await,
        Command::Kek(args::KekCommand::BackupHelp) => {
            print!("{}", kek::backup_help(&cli.global.operator_namespace, &cli.global.keyring_secret));
            return Ok(());
        }
        Command::Seal(ref a) if a.cert.is_some() => return seal::seal(None, &cli.global, a).await,
        Command::Eval(EvalCommand::Run(ref a)) if a.wait => {
            // Exit 2 for anything but the gate's answer: a CI job tells "worse model" from "broken run".
            let ctx = Ctx::new(&cli.global).await.map_err(Error::unless_gate)?;
            return eval_run::run(&ctx, a).await.map_err(Error::unless_gate);
        }
        _ => {}
    }
    let ctx = Ctx::new(&cli.global).await?;
    match cli.command {
        Command::Create(a) => create::create(&ctx, &a).await,
        Command::List { all_namespaces } => list::list(&ctx, all_namespaces).await,
        Command::Test { name, timeout } => keytest::test(&ctx, &name, timeout).await,
        Command::Revoke { name, no_wait, timeout } => modify::revoke(&ctx, &name, no_wait, timeout).await,
        Command::SetDefault { name, no_wait, timeout } => modify::set_default(&ctx, &name, no_wait, timeout).await,
        Command::Seal(a) => seal::seal(Some(&ctx), &cli.global, &a).await,
        Command::FetchCert => seal::fetch_cert(&ctx).await,
        Command::Kek(k) => kek::run(&ctx, &cli.global.keyring_secret, k).await,
        Command::Eval(EvalCommand::Run(a)) => eval_run::run(&ctx, &a).await,
        Command::Eval(EvalCommand::Watch { name, timeout }) => eval_watch::watch(&ctx, &name, timeout).await,
        Command::Eval(EvalCommand::Results { name, json, junit }) => {
            eval_results::results(&ctx, &name, json, junit).await
        }
        Command::Eval(EvalCommand::Report(a)) => eval_report::report(&ctx, &a, file.as_deref()).await,
        Command::Completion { .. } | Command::Version | Command::Eval(EvalCommand::Compare(_)) => Ok(()),
    }
}

/// The file `-o` names: only `eval report` writes one, and it writes nothing but HTML.
fn output_file(cli: &Cli) -> Result<Option<std::path::PathBuf>, Error> {
    let report = matches!(cli.command, Command::Eval(EvalCommand::Report(_)));
    match (&cli.global.output, report) {
        (OutputArg::File(path), true) => Ok(Some(path.clone())),
        (OutputArg::File(path), false) => Err(Error::Usage(format!(
            "-o {}: not an output format (text, table, json or yaml); only `eval report` writes a file",
            path.display()
        ))),
        (OutputArg::Format(format), true) if *format != Output::Text => Err(Error::Usage(format!(
            "eval report writes HTML, not {format:?}: give -o FILE.html, or no -o to print it"
        ))),
        (OutputArg::Format(_), _) => Ok(None),
    }
}
