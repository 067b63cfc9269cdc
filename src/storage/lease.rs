//! Read leases on served files (`fcntl(F_SETLEASE, F_RDLCK)`).
//!
//! With a read lease held, another process that opens the file for writing
//! or truncates it is held in the kernel (for up to
//! `/proc/sys/fs/lease-break-time` seconds, 45 by default) until we release
//! the lease, and we are told at once with a signal. That turns "the bytes
//! changed under a zero-copy send" into "we withdraw the file's pieces,
//! wait for in-flight sends ([`super::fence`]), then let the writer go":
//! no peer is ever sent a byte written after the piece was verified.
//!
//! What it needs: the file opened read-only (ours are), no writer having it
//! open when the lease is taken, and the file owned by our user or
//! `CAP_LEASE`; local filesystems (not NFS). Where a lease cannot be taken
//! the watcher falls back to inotify alone and says so.
//!
//! The signal: `SIGIO` (the kernel's default for leases), handled
//! process-wide with `SA_RESTART` by a handler that only bumps a counter
//! and writes one byte to a non-blocking pipe. The watcher's lease thread
//! waits on that pipe (with a timeout, and checks the counter, so several
//! watchers in one process all notice) and then asks each leased file with
//! `F_GETLEASE` whether its lease is being broken. Nothing here relies on
//! which thread gets the signal.
//!
//! This is the only module besides the mmap in [`super::files`] with
//! `unsafe` outside `engine::uring`: each block is one libc call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Lease-break signals seen by this process (bumped by the handler).
static BREAKS: AtomicU64 = AtomicU64::new(0);
/// Write end of the wake-up pipe (-1 until installed).
static WAKE_TX: AtomicI32 = AtomicI32::new(-1);
/// Read end, plus the result of installing the handler.
static INSTALLED: OnceLock<Result<i32, String>> = OnceLock::new();

/// Why a lease could not be taken.
#[derive(Debug)]
pub enum LeaseError {
    /// Some process has the file open for writing (EAGAIN): try later.
    Busy,
    /// Leases do not work for this file here (permissions, filesystem,
    /// `fs.leases-enable=0`, or the signal handler could not be set up).
    Unsupported(String),
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Busy => f.write_str("the file is open for writing by another process"),
            LeaseError::Unsupported(why) => f.write_str(why),
        }
    }
}

extern "C" fn on_sigio(_sig: libc::c_int) {
    BREAKS.fetch_add(1, Ordering::SeqCst);
    let fd = WAKE_TX.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: errno is thread-local; saving and restoring it keeps the
        // interrupted code's errno intact. `write` is async-signal-safe and
        // writes one byte from a valid stack buffer; a full pipe (EAGAIN)
        // is fine: a wake-up is pending anyway.
        unsafe {
            let errno = *libc::__errno_location();
            let b = 1u8;
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Install the SIGIO handler and the wake-up pipe once per process.
fn install() -> Result<i32, LeaseError> {
    INSTALLED
        .get_or_init(|| {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
            let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if r != 0 {
                return Err(format!("pipe2: {}", io::Error::last_os_error()));
            }
            WAKE_TX.store(fds[1], Ordering::SeqCst);
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
            // value; we then set the handler (an `extern "C" fn(c_int)`
            // that only touches atomics and calls `write`) and SA_RESTART so
            // blocking calls in other threads are restarted, not failed.
            let r = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_sigio as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGIO, &sa, std::ptr::null_mut())
            };
            if r != 0 {
                return Err(format!("sigaction(SIGIO): {}", io::Error::last_os_error()));
            }
            Ok(fds[0])
        })
        .clone()
        .map_err(LeaseError::Unsupported)
}

fn fcntl(file: &File, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: F_SETLEASE / F_GETLEASE take an int argument and only act on
    // the descriptor, which `file` keeps open for the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Take a read lease on `file` (opened read-only).
pub fn take(file: &File) -> Result<(), LeaseError> {
    install()?;
    match fcntl(file, libc::F_SETLEASE, libc::F_RDLCK) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(LeaseError::Busy),
        Err(e) => Err(LeaseError::Unsupported(match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => {
                format!("{e}: run ringseed as the file's owner or give it CAP_LEASE")
            }
            _ => format!("{e} (leases need a local filesystem and fs.leases-enable=1)"),
        })),
    }
}

/// Whether we still hold an unbroken read lease on `file` (false while a
/// writer waits for us to release it, and after release).
pub fn held(file: &File) -> bool {
    matches!(fcntl(file, libc::F_GETLEASE, 0), Ok(t) if t == libc::F_RDLCK)
}

/// Give the lease up: a writer waiting for it proceeds.
pub fn release(file: &File) -> io::Result<()> {
    fcntl(file, libc::F_SETLEASE, libc::F_UNLCK).map(|_| ())
}

/// Lease-break signals this process has seen so far.
pub fn breaks_seen() -> u64 {
    BREAKS.load(Ordering::SeqCst)
}

/// Wait until a lease-break signal arrives after `seen` (see
/// [`breaks_seen`]) or `timeout` passes; drains the wake-up pipe.
pub fn wait_for_break(seen: u64, timeout: Duration) {
    let Ok(rx) = install() else {
        std::thread::sleep(timeout);
        return;
    };
    if breaks_seen() != seen {
        drain(rx);
        return;
    }
    let mut pfd = libc::pollfd {
        fd: rx,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) };
    drain(rx);
}

fn drain(rx: i32) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a valid stack buffer from our non-blocking pipe.
    while unsafe { libc::read(rx, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    #[test]
    fn a_writer_waits_until_the_lease_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let f = File::open(&path).unwrap();
        match take(&f) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("SKIP: leases unavailable here: {e}");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "leases must work in CI"
                );
                return;
            }
        }
        assert!(held(&f));
        let seen = breaks_seen();
        let p2 = path.clone();
        let writer = std::thread::spawn(move || {
            let t = Instant::now();
            let mut w = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
            let waited = t.elapsed();
            w.write_all(b"HELLO").unwrap();
            waited
        });
        // The break is signalled; the writer is still held.
        let deadline = Instant::now() + Duration::from_secs(5);
        while held(&f) && Instant::now() < deadline {
            wait_for_break(seen, Duration::from_millis(100));
        }
        assert!(!held(&f), "lease break not seen");
        assert!(breaks_seen() > seen, "no SIGIO counted");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!writer.is_finished(), "writer got through before release");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        release(&f).unwrap();
        let waited = writer.join().unwrap();
        assert!(waited >= Duration::from_millis(200));
        assert_eq!(std::fs::read(&path).unwrap(), b"HELLO");
        // While a writer has the file open, no lease; once it closes, yes.
        let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(matches!(take(&f), Err(LeaseError::Busy)));
        drop(w);
        take(&f).unwrap();
        release(&f).unwrap();
    }
}
