//! `ringseed verify` (being built; see its issue).

use std::process::ExitCode;

pub fn run(_args: &crate::cli::VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ringseed verify` is not built yet")
}
