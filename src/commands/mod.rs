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

type LogReload =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Lets `serve` apply its `log_level` once its config is loaded.
static LOG_RELOAD: std::sync::OnceLock<LogReload> = std::sync::OnceLock::new();

/// Logs to stderr at `info`, or as `RINGSEED_LOG` says; colour only on a
/// terminal (a file or the journal gets plain lines).
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RINGSEED_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LOG_RELOAD.set(handle);
    }
}

/// Applies the configured log filter (`--log-level`, `log_level`), unless
/// `RINGSEED_LOG` is set: the environment overrides the config.
pub(crate) fn set_log_level(filter: &str) {
    if std::env::var_os("RINGSEED_LOG").is_some() {
        return;
    }
    let Some(handle) = LOG_RELOAD.get() else {
        return;
    };
    // The config loader already checked that the filter parses.
    if let Ok(f) = tracing_subscriber::EnvFilter::try_new(filter) {
        let _ = handle.reload(f);
    }
}
