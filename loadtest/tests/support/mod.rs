//! Helpers shared by the binary tests: the `ringseed` binary of this
//! workspace and servers started as child processes (killed by PID on drop).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const LOADTEST: &str = env!("CARGO_BIN_EXE_ringseed-loadtest");

/// target/<profile>/ringseed of this workspace, built if missing.
pub fn ringseed_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let exe = Path::new(LOADTEST);
    let same_profile = exe.parent().unwrap().join("ringseed");
    if same_profile.exists() {
        return same_profile;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "ringseed", "--bin", "ringseed"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p ringseed failed");
    root.join("target/debug/ringseed")
}

pub struct Server(pub Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits (bounded) for its `listening on ADDR` line.
pub fn start(mut cmd: Command) -> (Server, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn server");
    let out = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("server printed its address");
    (server, addr)
}
