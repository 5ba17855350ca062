//! `completion bash|zsh|fish|...`: shell completion scripts.

use clap::CommandFactory;

use super::args::Cli;
use super::error::Error;

pub fn print(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "kubectl-byok", &mut std::io::stdout());
    Ok(())
}
