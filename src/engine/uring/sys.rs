//! Thin wrappers over the few raw syscalls the engine needs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Take ownership of a descriptor returned by a successful accept CQE.
///
/// Only call with the result of an accept completion (a new descriptor
/// nothing else owns); negative values are rejected.
pub fn fd_from_accept(res: i32) -> Option<OwnedFd> {
    if res < 0 {
        return None;
    }
    // SAFETY: a non-negative accept result is a fresh descriptor that the
    // kernel handed to us alone.
    Some(unsafe { OwnedFd::from_raw_fd(res) })
}

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside `set` for cpu < CPU_SETSIZE, checked here.
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index too large",
        ));
    }
    // SAFETY: see above, cpu is in range.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `pin_to_cpu`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid for writes of its size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: i < CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as usize
    } else {
        4096
    }
}

/// Whether every page of `data` (a slice of a file mmap) is in the page
/// cache, so touching it cannot take a major fault. Errors count as "not
/// resident" (the caller then reads asynchronously, which is always safe).
pub fn is_resident(data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    let ps = page_size();
    let start = data.as_ptr() as usize;
    let mut addr = start & !(ps - 1);
    let end = start + data.len();
    // Checked in windows of up to 256 pages with a stack buffer: no
    // allocation on the serve path, one syscall per MiB of 4 KiB pages.
    let mut vec = [0u8; 256];
    while addr < end {
        let pages = (end - addr).div_ceil(ps).min(vec.len());
        let len = pages * ps;
        // SAFETY: `addr..addr+len` lies within pages of the caller's live
        // mapping (page-aligned start, at most the pages `data` touches);
        // `vec` has at least one byte per page as mincore requires.
        let rc = unsafe { libc::mincore(addr as *mut _, len, vec.as_mut_ptr()) };
        if rc != 0 || vec[..pages].iter().any(|b| b & 1 == 0) {
            return false;
        }
        addr += len;
    }
    true
}

/// Drop a file's pages from the page cache (POSIX_FADV_DONTNEED). Used by
/// tests and by `ringseed` tooling to simulate a cold cache.
pub fn evict_from_page_cache(file: &std::fs::File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Current RLIMIT_NOFILE soft limit, raised to the hard limit if possible.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: rlimit is plain data.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: valid pointer to an rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    rl.rlim_cur
}

/// Bytes in the socket's send queue not yet acknowledged by the peer
/// (`SIOCOUTQ`): data a peer that stopped reading leaves with us.
pub fn unsent_bytes(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one c_int through the pointer,
    // which points at `n`, live for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_memory_is_resident_once_touched() {
        let v = vec![1u8; 1 << 16];
        assert!(is_resident(&v));
        assert!(is_resident(&v[5..100]));
        assert!(is_resident(&[]));
    }

    #[test]
    fn cpus_are_listed() {
        assert!(!allowed_cpus().is_empty());
    }
}
