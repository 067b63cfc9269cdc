//! `ringseed inspect` (being built; see its issue).

use std::process::ExitCode;

pub fn run(_args: &crate::cli::InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ringseed inspect` is not built yet")
}
