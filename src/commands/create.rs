//! `ringseed create` (being built; see its issue).

use std::process::ExitCode;

pub fn run(_args: &crate::cli::CreateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ringseed create` is not built yet")
}
