//! `kiln completions SHELL`: a shell completion script on standard output.

use crate::cli::Cli;
use crate::error::Result;
use clap::CommandFactory;

/// Prints the completion script of `shell` for every `kiln` verb and option.
pub fn run(shell: clap_complete::Shell) -> Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut std::io::stdout());
    Ok(())
}
