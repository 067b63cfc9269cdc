//! Running the `ringseed` binary from integration tests: a `serve` child
//! process (killed by its PID on drop) with the addresses it printed, the
//! libtorrent availability check, and a `/metrics` reader.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringseed");

/// A `ringseed serve` child process.
pub struct ServeProc {
    pub child: Child,
    /// Peer address (`listening on ADDR`).
    pub addr: String,
    /// Metrics address (`metrics on http://ADDR/metrics`), if enabled.
    pub metrics: Option<String>,
    /// Everything printed on stdout before `listening on` (torrents, magnets).
    pub banner: Vec<String>,
    /// Control API address (`control on http://ADDR`), if enabled.
    pub control: Option<String>,
    /// Lines printed on stdout after `listening on` (torrents added later).
    pub later: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProc {
    /// `ringseed serve ARGS...`, waiting (bounded) for its listen address.
    pub fn start(args: &[&str]) -> ServeProc {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args(args);
        Self::spawn(cmd)
    }

    /// Any command that ends up exec'ing `ringseed serve` (e.g. under
    /// `sh -c 'ulimit ...; exec ...'`).
    pub fn spawn(mut cmd: Command) -> ServeProc {
        // stderr: inherited unless the caller redirected it.
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ringseed serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let later = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let later2 = std::sync::Arc::clone(&later);
        std::thread::spawn(move || {
            let mut banner = Vec::new();
            let mut metrics = None;
            let mut control = None;
            let mut listening = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if listening {
                    later2.lock().unwrap().push(line);
                    continue;
                }
                if let Some(m) = line.strip_prefix("metrics on http://") {
                    metrics = Some(m.trim_end_matches("/metrics").to_string());
                }
                if let Some(c) = line.strip_prefix("control on http://") {
                    control = Some(c.to_string());
                }
                if let Some(rest) = line.strip_prefix("listening on ") {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((
                        addr,
                        metrics.clone(),
                        control.clone(),
                        std::mem::take(&mut banner),
                    ));
                    listening = true;
                    continue;
                }
                banner.push(line);
            }
        });
        let (addr, metrics, control, banner) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("ringseed serve printed its listen address");
        ServeProc {
            child,
            addr,
            metrics,
            banner,
            control,
            later,
        }
    }

    /// (v1 info-hash, piece length, size) of torrent `name`, from the
    /// banner `serve` printed (`torrent NAME`, `size ...`, `v1 HEX`).
    pub fn torrent(&self, name: &str) -> ([u8; 20], u32, u64) {
        let at = self
            .banner
            .iter()
            .position(|l| {
                l == &format!("torrent {name}") || l.starts_with(&format!("torrent {name} ("))
            })
            .unwrap_or_else(|| panic!("no torrent {name} in {:#?}", self.banner));
        let words: Vec<&str> = self.banner[at + 1].split_whitespace().collect();
        let size: u64 = words[1].parse().unwrap();
        let plen: u32 = words[words.iter().position(|w| *w == "of").unwrap() + 1]
            .parse()
            .unwrap();
        let v1 = self.banner[at + 2].split_whitespace().nth(1).unwrap();
        let mut hash = [0u8; 20];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&v1[2 * i..2 * i + 2], 16).unwrap();
        }
        (hash, plen, size)
    }

    /// The first line printed after `listening on` that satisfies `f`,
    /// waiting up to `timeout`.
    pub fn wait_line(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.later.lock().unwrap().iter().find(|l| f(l)) {
                return Some(l.clone());
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM (by PID) and how long the process took to exit.
    pub fn terminate(mut self) -> (Duration, std::process::ExitStatus) {
        let start = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (start.elapsed(), status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("ringseed serve did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// libtorrent 2.1's Python bindings, or a loud skip (a failure under CI=true).
pub fn libtorrent_available() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import libtorrent, sys; sys.exit(0 if libtorrent.__version__.startswith('2.1') else 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("libtorrent 2.1.x Python bindings are required under CI=true (pip install libtorrent==2.1.1)");
        }
        eprintln!("\n**** SKIP: libtorrent Python bindings missing; run `python3 -m pip install libtorrent==2.1.1` ****\n");
    }
    ok
}

/// The sum of every sample of metric family `name` (prefix match, e.g.
/// `ringseed_connections{`) on a `/metrics` endpoint; -1 if unreachable.
pub fn metric(addr: &str, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return -1.0;
    };
    // Bounded: a server that cannot accept (out of descriptors) must not
    // hang the test.
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
