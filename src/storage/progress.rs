//! Progress for long hashing jobs (`create`, `verify`, the server's start-up
//! check): an indicatif bar when stderr is a terminal, otherwise a plain line
//! every few seconds (journald and CI logs stay readable). Safe to call from
//! many threads; [`Progress::add`] is cheap (one atomic add, and a clock read
//! only in plain mode).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

enum Mode {
    Bar(ProgressBar),
    Plain {
        every: Duration,
        last: Mutex<Instant>,
    },
    Hidden,
}

/// A byte-counting progress reporter.
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    start: Instant,
    mode: Mode,
}

impl Progress {
    /// A bar on a terminal, plain lines every 5 s otherwise.
    pub fn new(label: &str, total_bytes: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total_bytes);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label.to_string());
            Self::with_mode(label, total_bytes, Mode::Bar(bar))
        } else {
            Self::plain(label, total_bytes, Duration::from_secs(5))
        }
    }

    /// Plain lines on stderr at most every `every`.
    pub fn plain(label: &str, total_bytes: u64, every: Duration) -> Self {
        Self::with_mode(
            label,
            total_bytes,
            Mode::Plain {
                every,
                last: Mutex::new(Instant::now()),
            },
        )
    }

    /// Counts but prints nothing (e.g. `--json` output).
    pub fn hidden(label: &str, total_bytes: u64) -> Self {
        Self::with_mode(label, total_bytes, Mode::Hidden)
    }

    fn with_mode(label: &str, total: u64, mode: Mode) -> Self {
        Self {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
            mode,
        }
    }

    /// Record `bytes` more done.
    pub fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        match &self.mode {
            Mode::Bar(bar) => bar.set_position(done.min(self.total)),
            Mode::Plain { every, last } => {
                // Only one thread prints; the others skip rather than wait.
                if let Ok(mut last) = last.try_lock() {
                    if last.elapsed() >= *every {
                        *last = Instant::now();
                        eprintln!("{}", self.line(done));
                    }
                }
            }
            Mode::Hidden => {}
        }
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Bytes per second since the start.
    pub fn rate(&self) -> f64 {
        let secs = self.start.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.done() as f64 / secs
        } else {
            0.0
        }
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Close the bar (or print a final plain line).
    pub fn finish(&self) {
        match &self.mode {
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Plain { .. } => eprintln!("{}", self.line(self.done())),
            Mode::Hidden => {}
        }
    }

    fn line(&self, done: u64) -> String {
        // Never above 100%: a piece may be hashed twice (re-verified) or
        // counted with its padding.
        let done = done.min(self.total);
        let pct = if self.total > 0 {
            done as f64 * 100.0 / self.total as f64
        } else {
            100.0
        };
        format!(
            "{}: {:.1}% ({} / {} MiB, {:.0} MiB/s)",
            self.label,
            pct,
            done >> 20,
            self.total >> 20,
            self.rate() / (1024.0 * 1024.0)
        )
    }
}
