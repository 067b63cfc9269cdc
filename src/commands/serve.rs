//! `ringseed serve` (being built; see its issue).

use std::process::ExitCode;

pub fn run(_args: crate::cli::ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ringseed serve` is not built yet")
}
