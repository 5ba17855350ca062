//! kubectl-byok: the kubectl plugin (`kubectl byok ...`) for ByokKeys and EvalJobs. Install it on
//! your PATH; kubectl finds it by name. The commands live in `byok_operator::cli::plugin`.

use std::process::ExitCode;

use byok_operator::cli::plugin::{self, Cli};
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match plugin::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
