//! The `kiln` command: parses the command line (clap, [`kiln::cli`]) and
//! hands each verb to its driver in [`kiln::commands`].

use clap::Parser;
use kiln::cli::{Cli, ClusterCommand, Command};
use kiln::commands;
use kiln::error::Result;
use kiln::progress::{Progress, Verbosity};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let progress = Progress::new(verbosity);
    match run(cli.command, &progress) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.message.lines() {
                eprintln!("kiln: error: {line}");
            }
            ExitCode::from(e.kind.exit_code())
        }
    }
}

/// Runs one verb: each has a file of its own under `commands/`.
fn run(cmd: Command, progress: &Progress) -> Result<()> {
    match cmd {
        Command::Build(a) => commands::build::run(a, progress),
        Command::Check(a) => commands::check::run(a, progress),
        Command::Pin(a) => commands::pin::run(a, progress),
        Command::Cluster(ClusterCommand::Init(a)) => commands::cluster::init(a, progress),
        Command::Cluster(ClusterCommand::Show { dir }) => commands::cluster::show(&dir),
        Command::Cluster(ClusterCommand::RotateToken { dir }) => commands::cluster::rotate_token(&dir, progress),
        Command::Userdata(a) => commands::userdata::run(a, progress),
        Command::Fleet(cmd) => commands::fleet::run(cmd, progress),
        Command::Flash(a) => commands::flash::run(a, progress),
        Command::Mirror(a) => commands::mirror::run(a, progress),
        Command::Completions { shell } => commands::completions::run(shell),
    }
}
