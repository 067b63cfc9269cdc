//! The `ringseed` subcommands. `main.rs` parses the command line and calls
//! [`run`]; each subcommand lives in its own file.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

mod create;
mod inspect;
mod ledger;
mod serve;
mod torrents;
mod verify;

/// Run one subcommand, print its error (with context) and map it to an exit
/// code: 0 success, 1 failure (e.g. bad pieces found), 2 usage/input error.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing();
    let result = match cli.command {
        Command::Create(args) => create::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Serve(args) => serve::run(*args),
        Command::Ledger(args) => ledger::run(args.command),
        Command::Torrents(args) => torrents::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ringseed: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RINGSEED_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
