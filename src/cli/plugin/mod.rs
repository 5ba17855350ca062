//! `kubectl byok`: the kubectl plugin for ByokKeys and EvalJobs. Every command is a small module;
//! `run` dispatches. Errors say what is wrong and what to do; the binary only prints them.

pub mod args;
mod completion;
mod create;
mod ctx;
mod duration;
mod error;
mod eval_results;
mod eval_run;
mod eval_watch;
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

use args::{Command, EvalCommand};

/// Runs one command. Writes results to stdout, progress and warnings to stderr.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        // Commands that need no cluster.
        Command::Completion { shell } => return completion::print(shell),
        Command::Version => return version::print(&cli.global, cli.global.output).await,
        Command::Kek(args::KekCommand::BackupHelp) => {
            print!("{}", kek::backup_help(&cli.global.operator_namespace, &cli.global.keyring_secret));
            return Ok(());
        }
        Command::Seal(ref a) if a.cert.is_some() => return seal::seal(None, &cli.global, a).await,
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
        Command::Completion { .. } | Command::Version => Ok(()),
    }
}
