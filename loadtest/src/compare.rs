//! `ringseed-loadtest compare`: ringseed vs a libtorrent 2.1.1 seeder vs
//! two baselines, the minimal epoll + writev [`crate::epollseed`] (the bar
//! to beat) and the protocol-less io_uring [`crate::ceiling`], same load,
//! same machine.
//!
//! The generator discards payload in the kernel by default (`--copy` reads
//! it instead), so that it is not the limit; its own CPU time is printed
//! with every run, and a run where it was busy more than 90% of the time is
//! marked `generator-bound`: that run measured the generator, not the seeder.
//!
//! Each server runs as a child process pinned to `--server-cpu`; the
//! generator runs in this process pinned to `--generator-cpu`. The page
//! cache is warmed first. Runs alternate (A B C A B C ...) and medians are
//! reported, because the machine is shared and noisy. Server CPU time is
//! the utime+stime delta of the child (all its threads) from
//! `/proc/<pid>/stat` over the load window only (start-up verification and
//! libtorrent's data check are excluded).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::{parse_duration, Popularity, RunConfig, Transport};
use crate::leecher::Pattern;
use crate::net::pin_to_cpu;
use crate::report::Environment;
use crate::run::run_load;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    #[arg(long)]
    pub torrent: PathBuf,
    /// The torrent's content (or the directory that contains it).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    #[arg(long, default_value_t = 64)]
    pub pipeline: usize,
    /// Length of each measured run.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Rounds of (ringseed, libtorrent, epoll, ceiling).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    #[arg(long, default_value_t = 1)]
    pub generator_cpu: usize,
    /// The ringseed binary [default: target/release/ringseed of this workspace].
    #[arg(long)]
    pub ringseed_bin: Option<PathBuf>,
    /// The libtorrent seeder script [default: loadtest/lt_seed.py].
    #[arg(long)]
    pub lt_script: Option<PathBuf>,
    /// Leave out the libtorrent seeder (e.g. libtorrent not installed).
    #[arg(long)]
    pub no_libtorrent: bool,
    /// Leave out the epoll baseline seeder.
    #[arg(long)]
    pub no_epoll: bool,
    /// Generator threads; thread i is pinned to CPU generator-cpu + i.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// tcp | utp. Over uTP only ringseed and libtorrent run (the baselines
    /// speak TCP) and the payload is never discarded.
    #[arg(long, default_value = "tcp")]
    pub transport: Transport,
    /// Read the payload into user space instead of discarding it in the
    /// kernel (as a real client does; the generator saturates sooner).
    #[arg(long)]
    pub copy: bool,
    /// Write all runs and medians as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl CompareArgs {
    /// The generator discards payload in the kernel.
    pub fn discard(&self) -> bool {
        !self.copy && self.transport == Transport::Tcp
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Ringseed,
    Libtorrent,
    Epoll,
    Ceiling,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ringseed => "ringseed",
            Server::Libtorrent => "libtorrent",
            Server::Epoll => "epoll",
            Server::Ceiling => "ceiling",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub server: Server,
    pub round: usize,
    pub throughput_mb_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub server_cpu_s: f64,
    pub payload_bytes: u64,
    pub cpu_s_per_gib: f64,
    /// Share of the server's core that was busy (any process, softirq
    /// included) over the run.
    pub server_core_busy: f64,
    /// Busy seconds of the server's core per GiB sent: the cost of the
    /// whole send and loopback receive path on that core.
    pub core_s_per_gib: f64,
    /// The generator's CPU time over the run, and the share of its threads'
    /// wall time it was busy.
    pub generator_cpu_s: f64,
    pub generator_busy: f64,
    pub errors: u64,
}

/// A generator busier than this share of its threads' time was the limit.
const GENERATOR_BOUND: f64 = 0.9;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// utime + stime of `pid` (all threads), seconds.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    let after = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    // Fields after ")" start at field 3 (state); utime is 14, stime 15.
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11).and_then(|x| x.parse().ok()).context("utime")?;
    let stime: f64 = f.get(12).and_then(|x| x.parse().ok()).context("stime")?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) / hz)
}

/// (busy, total) jiffies of one CPU from `/proc/stat`. On loopback the
/// receiver's TCP work runs in softirq on the sender's core, outside any
/// process's utime+stime, so the server core's busy share is the honest
/// measure of what a run cost it.
fn cpu_jiffies(cpu: usize) -> anyhow::Result<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = s
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} line in /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    Ok((total - idle.min(total), total))
}

/// Reads the whole file so it is in the page cache.
fn warm(path: &Path) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else {
            let mut f = std::fs::File::open(&p).with_context(|| format!("open {}", p.display()))?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    Ok(total)
}

struct ServerProc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(mut cmd: Command, cpu: usize, what: &str) -> anyhow::Result<ServerProc> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    // SAFETY: the closure only calls sched_setaffinity (async-signal-safe)
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || pin_to_cpu(cpu));
    }
    let mut child = cmd.spawn().with_context(|| format!("start {what}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let mut proc = ServerProc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(300))
        .with_context(|| format!("{what} did not print `listening on ADDR` within 300 s"))?;
    proc.addr = addr
        .parse()
        .with_context(|| format!("{what} printed a bad address {addr:?}"))?;
    Ok(proc)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn main_compare(args: CompareArgs) -> anyhow::Result<bool> {
    let duration = parse_duration(&args.duration).map_err(anyhow::Error::msg)?;
    let root = workspace_root();
    let ringseed_bin = args
        .ringseed_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/ringseed"));
    if !ringseed_bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p ringseed` or pass --ringseed-bin",
            ringseed_bin.display()
        );
    }
    let lt_script = args
        .lt_script
        .clone()
        .unwrap_or_else(|| root.join("loadtest/lt_seed.py"));
    let me = std::env::current_exe().context("current exe")?;
    let bytes = warm(&args.data)?;
    let env = Environment::capture();
    println!(
        "compare: {} ({} bytes, page cache warmed), {} connections x pipeline {}, {} runs of {:?} per server, server on CPU {}, generator: {} thread(s) from CPU {}, over {}, payload {}",
        args.torrent.display(),
        bytes,
        args.connections,
        args.pipeline,
        args.rounds,
        duration,
        args.server_cpu,
        args.threads,
        args.generator_cpu,
        args.transport.as_str(),
        if args.discard() { "discarded in the kernel" } else { "copied to user space" }
    );
    println!(
        "machine: {} x {}, kernel {}, {}, commit {}",
        env.cores,
        env.cpu_model.as_deref().unwrap_or("?"),
        env.kernel.as_deref().unwrap_or("?"),
        env.rustc.as_deref().unwrap_or("?"),
        env.git_commit.as_deref().unwrap_or("?")
    );
    pin_to_cpu(args.generator_cpu).context("pin generator")?;
    let mut servers = vec![Server::Ringseed];
    if !args.no_libtorrent {
        servers.push(Server::Libtorrent);
    }
    if args.transport == Transport::Tcp {
        if !args.no_epoll {
            servers.push(Server::Epoll);
        }
        servers.push(Server::Ceiling);
    }
    let mut runs: Vec<Measured> = Vec::new();
    for round in 0..args.rounds {
        for &server in &servers {
            let data = args.data.display().to_string();
            let torrent = args.torrent.display().to_string();
            let cmd = match server {
                Server::Ringseed => {
                    let mut c = Command::new(&ringseed_bin);
                    c.args([
                        "serve",
                        "--torrent",
                        &torrent,
                        "--data",
                        &data,
                        "--listen",
                        "127.0.0.1:0",
                        "--shards",
                        "1",
                        // Metrics on (as deployed), on a free port.
                        "--metrics",
                        "127.0.0.1:0",
                    ]);
                    c
                }
                Server::Libtorrent => {
                    let mut c = Command::new("python3");
                    c.arg(&lt_script)
                        .args(["--torrent", &torrent, "--data", &data]);
                    if args.transport == Transport::Utp {
                        c.arg("--utp");
                    }
                    c
                }
                Server::Epoll | Server::Ceiling => {
                    let mut c = Command::new(&me);
                    c.args([
                        if server == Server::Epoll {
                            "epoll-seed"
                        } else {
                            "ceiling"
                        },
                        "--torrent",
                        &torrent,
                        "--data",
                        &data,
                        "--listen",
                        "127.0.0.1:0",
                    ]);
                    c
                }
            };
            let proc = spawn_server(cmd, args.server_cpu, server.name())?;
            let cfg = RunConfig {
                target: proc.addr,
                torrents: vec![args.torrent.clone()],
                connections: args.connections,
                duration,
                ramp: 0.0,
                pipeline: args.pipeline,
                pattern: Pattern::Random,
                churn: 0.0,
                popularity: Popularity::Uniform,
                source_ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                threads: args.threads.max(1),
                first_cpu: args.generator_cpu,
                verify: false,
                discard: args.discard(),
                transport: args.transport,
                report: None,
                stall_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                quiet: true,
            };
            let pid = proc.child.id();
            let cpu0 = process_cpu_seconds(pid)?;
            let gen0 = process_cpu_seconds(std::process::id())?;
            let core0 = cpu_jiffies(args.server_cpu)?;
            let result = run_load(&cfg)?;
            let core1 = cpu_jiffies(args.server_cpu)?;
            let gen1 = process_cpu_seconds(std::process::id())?;
            let cpu1 = process_cpu_seconds(pid)?;
            drop(proc);
            let s = &result.stats;
            let secs = result.elapsed.as_secs_f64();
            let gib = s.payload_bytes as f64 / (1u64 << 30) as f64;
            let busy = (core1.0 - core0.0) as f64 / (core1.1 - core0.1).max(1) as f64;
            let m = Measured {
                server,
                round,
                throughput_mb_s: s.payload_bytes as f64 / secs / 1e6,
                p50_us: s.block_latency_us.value_at_quantile(0.5),
                p99_us: s.block_latency_us.value_at_quantile(0.99),
                server_cpu_s: cpu1 - cpu0,
                payload_bytes: s.payload_bytes,
                cpu_s_per_gib: if gib > 0.0 {
                    (cpu1 - cpu0) / gib
                } else {
                    f64::NAN
                },
                server_core_busy: busy,
                core_s_per_gib: if gib > 0.0 {
                    busy * secs / gib
                } else {
                    f64::NAN
                },
                generator_cpu_s: gen1 - gen0,
                generator_busy: (gen1 - gen0) / (secs * cfg.threads as f64),
                errors: s.protocol_errors.values().sum::<u64>() + s.hash_failures + s.error_drops(),
            };
            println!(
                "  round {} {:<10} {:>8.1} MB/s  p50 {:>7} us  p99 {:>7} us  server CPU {:>6.2} s = {:>6.3} CPU-s/GiB  core {:>3.0}% busy = {:>6.3} core-s/GiB  generator {:>3.0}% busy{}  errors {} {:?}  closed {:?}",
                round + 1,
                server.name(),
                m.throughput_mb_s,
                m.p50_us,
                m.p99_us,
                m.server_cpu_s,
                m.cpu_s_per_gib,
                m.server_core_busy * 100.0,
                m.core_s_per_gib,
                m.generator_busy * 100.0,
                if m.generator_busy > GENERATOR_BOUND { " (generator-bound)" } else { "" },
                m.errors,
                s.protocol_errors,
                s.dropped
            );
            runs.push(m);
        }
    }
    let med = |server: Server, f: fn(&Measured) -> f64| {
        median(runs.iter().filter(|m| m.server == server).map(f).collect())
    };
    println!();
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>10}",
        "median", "MB/s", "p50 us", "p99 us", "CPU-s/GiB", "core busy", "core-s/GiB", "generator"
    );
    for &s in &servers {
        let busy = med(s, |m| m.generator_busy);
        println!(
            "{:<12} {:>10.1} {:>10.0} {:>10.0} {:>10.3} {:>9.0}% {:>11.3} {:>9.0}%{}",
            s.name(),
            med(s, |m| m.throughput_mb_s),
            med(s, |m| m.p50_us as f64),
            med(s, |m| m.p99_us as f64),
            med(s, |m| m.cpu_s_per_gib),
            med(s, |m| m.server_core_busy) * 100.0,
            med(s, |m| m.core_s_per_gib),
            busy * 100.0,
            if busy > GENERATOR_BOUND {
                "  generator-bound: this measured the generator, add --threads"
            } else {
                ""
            }
        );
    }
    let rs = |f: fn(&Measured) -> f64| med(Server::Ringseed, f);
    let ratio = |other: Server| {
        println!(
            "ringseed/{:<10} throughput {:.2}x   p99 latency {:.2}x   CPU-s/GiB {:.2}x   core-s/GiB {:.2}x",
            other.name(),
            rs(|m| m.throughput_mb_s) / med(other, |m| m.throughput_mb_s),
            rs(|m| m.p99_us as f64) / med(other, |m| m.p99_us as f64),
            rs(|m| m.cpu_s_per_gib) / med(other, |m| m.cpu_s_per_gib),
            rs(|m| m.core_s_per_gib) / med(other, |m| m.core_s_per_gib),
        );
    };
    if !args.no_libtorrent {
        ratio(Server::Libtorrent);
    }
    if args.transport == Transport::Tcp {
        if !args.no_epoll {
            ratio(Server::Epoll);
        }
        ratio(Server::Ceiling);
    }
    if let Some(path) = &args.report {
        let json = serde_json::json!({ "environment": env, "runs": runs });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(runs.iter().all(|m| m.errors == 0))
}
