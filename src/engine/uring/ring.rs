//! Ring setup and the kernel probe run at start-up.

use std::io;

use io_uring::{opcode, IoUring, Probe};

/// Ring sizes for one shard.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Submission queue entries (power of two).
    pub sq_entries: u32,
    /// Completion queue entries (power of two, >= sq_entries). Multishot
    /// receives on thousands of connections can post many CQEs per enter.
    pub cq_entries: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            sq_entries: 2048,
            cq_entries: 16384,
        }
    }
}

/// A shard's ring. Created and used on the shard thread only.
pub struct Ring {
    pub uring: IoUring,
    /// Whether the ring was set up with DEFER_TASKRUN (completions are only
    /// reaped when the thread enters the kernel to wait).
    pub defer_taskrun: bool,
}

impl Ring {
    /// Set up a ring, preferring the single-issuer, deferred-task-run mode
    /// (less interrupting of the shard thread) and falling back to a plain
    /// ring on kernels that refuse it.
    pub fn new(cfg: RingConfig) -> io::Result<Self> {
        let fancy = IoUring::builder()
            .setup_cqsize(cfg.cq_entries)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_submit_all()
            .setup_clamp()
            .build(cfg.sq_entries);
        match fancy {
            Ok(uring) => Ok(Self {
                uring,
                defer_taskrun: true,
            }),
            Err(_) => {
                let uring = IoUring::builder()
                    .setup_cqsize(cfg.cq_entries)
                    .setup_clamp()
                    .build(cfg.sq_entries)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "io_uring_setup failed ({e}); is io_uring disabled \
                                 (sysctl kernel.io_uring_disabled) or blocked by seccomp?"
                            ),
                        )
                    })?;
                Ok(Self {
                    uring,
                    defer_taskrun: false,
                })
            }
        }
    }
}

/// What the kernel offers that the engine cares about.
#[derive(Clone, Debug)]
pub struct KernelSupport {
    pub release: String,
    /// IORING_OP_SENDMSG_ZC (6.1+); only needed for `--send-zc`.
    pub send_zc: bool,
}

/// Check, once at start-up, that this kernel has everything the serve path
/// needs, and say precisely what is missing.
pub fn probe_kernel() -> Result<KernelSupport, String> {
    let release = kernel_release();
    if let Some((major, minor)) = parse_release(&release) {
        if (major, minor) < (6, 0) {
            return Err(format!(
                "kernel {release} is too old: ringseed needs Linux 6.0 or newer for \
                 multishot receive with provided buffer rings (multishot accept needs 5.19)"
            ));
        }
    }
    let ring = IoUring::new(8).map_err(|e| {
        format!(
            "io_uring is not available ({e}): check sysctl kernel.io_uring_disabled \
             and any seccomp/container policy"
        )
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    let required = [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::Read::CODE, "READ"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::Nop::CODE, "NOP"),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "kernel {release} lacks io_uring operations {}: upgrade to Linux 6.0+",
            missing.join(", ")
        ));
    }
    Ok(KernelSupport {
        send_zc: probe.is_supported(opcode::SendMsgZc::CODE),
        release,
    })
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

impl Ring {
    /// Queue an SQE, flushing the submission queue to the kernel if full.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` (buffers, iovecs, msghdr) must stay valid and
    /// unmoved until the operation's last CQE has been reaped.
    pub unsafe fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded to the caller.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.uring.submit()?;
        }
    }

    /// Multishot accept on a listening socket.
    pub fn push_accept_multi(&mut self, fd: std::os::fd::RawFd, user_data: u64) -> io::Result<()> {
        let e = opcode::AcceptMulti::new(io_uring::types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data);
        // SAFETY: no pointers in this SQE.
        unsafe { self.push(&e) }
    }

    /// Multishot receive into buffers of group `bgid`.
    pub fn push_recv_multi(
        &mut self,
        fd: std::os::fd::RawFd,
        bgid: u16,
        user_data: u64,
    ) -> io::Result<()> {
        let e = opcode::RecvMulti::new(io_uring::types::Fd(fd), bgid)
            .build()
            .user_data(user_data);
        // SAFETY: the buffers are the registered ring's, which outlives the ring.
        unsafe { self.push(&e) }
    }

    /// Multishot poll of `fd` for `events` (POLLIN, ...).
    pub fn push_poll_multi(
        &mut self,
        fd: std::os::fd::RawFd,
        events: u32,
        user_data: u64,
    ) -> io::Result<()> {
        let e = opcode::PollAdd::new(io_uring::types::Fd(fd), events)
            .multi(true)
            .build()
            .user_data(user_data);
        // SAFETY: no pointers in this SQE.
        unsafe { self.push(&e) }
    }

    /// Cancel the operation(s) tagged `target`.
    pub fn push_cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        // SAFETY: no pointers in this SQE.
        unsafe { self.push(&e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_release() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn this_kernel_is_supported() {
        let support = probe_kernel().expect("the test machine must support the serve path");
        assert!(!support.release.is_empty());
    }
}
