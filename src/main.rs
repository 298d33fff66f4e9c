//! The `pqnode` command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pqnode::cli;

/// pqnode: a libp2p node with a hybrid post-quantum layer.
#[derive(Debug, Parser)]
#[command(name = "pqnode", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node: swarm, PQ layer and HTTP API, until SIGINT or SIGTERM.
    Run(cli::run::Args),
    /// Check the configuration.
    Config(cli::config::Args),
    /// Run the start-up self-test of every suite and print the result.
    Selftest(cli::selftest::Args),
    /// Create, show, rotate and export keys and signed peer records.
    Keys(cli::keys::Args),
    /// List, add and remove pinned PQ keys (through the API while the node
    /// runs, in the database while it is stopped).
    Pins(cli::pins::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Config(args) => cli::config::run(args),
        Command::Selftest(args) => cli::selftest::run(args),
        Command::Keys(args) => cli::keys::run(args),
        Command::Pins(args) => cli::pins::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line. Most of our errors already quote
/// their cause in their message: a cause that is already in the text is
/// not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}
