//! Records the git commit for `ringseed_build_info` (and `--version` if the
//! CLI wants it) as `RINGSEED_GIT_COMMIT`: `git rev-parse --short HEAD`, or
//! "unknown" outside a git checkout or without git. Setting
//! `RINGSEED_GIT_COMMIT` in the environment (container builds without `.git`)
//! overrides it.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RINGSEED_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(commit) = std::env::var("RINGSEED_GIT_COMMIT") {
        println!("cargo:rustc-env=RINGSEED_GIT_COMMIT={commit}");
        return;
    }
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RINGSEED_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves. In a worktree `.git` is a file and HEAD lives
    // in the worktree's git dir, the branch refs in the common dir.
    // A path that does not exist would make cargo rerun this on every build,
    // so only existing files are watched.
    let watch = |p: PathBuf| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
        watch(git_dir.join("HEAD"));
        let common = git(&["rev-parse", "--git-common-dir"])
            .map(PathBuf::from)
            .unwrap_or_else(|| git_dir.clone());
        watch(common.join("packed-refs"));
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(common.join(head_ref));
        }
    }
}
