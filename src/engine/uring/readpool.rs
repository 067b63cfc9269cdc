//! A bounded pool of 16 KiB buffers for blocks whose pages are not in the
//! page cache: the shard reads them with io_uring READ (never touching the
//! mmap, which could stall the whole shard on a major fault) and sends from
//! the buffer. The pool's memory is one allocation that never moves.

use io_uring::{opcode, squeue, types};

/// Size of one read buffer: the largest block a peer may request.
pub const READ_BUF_SIZE: usize = 16 * 1024;

pub struct ReadPool {
    mem: Box<[u8]>,
    free: Vec<u32>,
    count: u32,
}

impl ReadPool {
    pub fn new(count: u32) -> Self {
        Self {
            mem: vec![0u8; count as usize * READ_BUF_SIZE].into_boxed_slice(),
            free: (0..count).rev().collect(),
            count,
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Return buffer `idx` to the pool. Indices out of range and buffers
    /// already free are ignored.
    ///
    /// # Safety
    ///
    /// No operation the kernel may still perform may point into buffer
    /// `idx`: its READ's CQE has been reaped (or no READ was submitted), and
    /// every send whose iovecs point into it has had its last CQE (for
    /// SEND_ZC, its notification). A buffer released early can be handed to
    /// another read while the kernel still writes into it or sends from it.
    pub unsafe fn release(&mut self, idx: u32) {
        if idx < self.count && !self.free.contains(&idx) {
            self.free.push(idx);
        }
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> u32 {
        self.count
    }

    pub fn in_use(&self) -> usize {
        (self.count as usize) - self.free.len()
    }

    /// Fill `len` bytes of buffer `idx` at `offset` with zeros (pad bytes).
    pub fn zero(&mut self, idx: u32, offset: usize, len: usize) {
        if idx >= self.count || offset + len > READ_BUF_SIZE {
            return;
        }
        let start = idx as usize * READ_BUF_SIZE + offset;
        self.mem[start..start + len].fill(0);
    }

    /// Start of buffer `idx` (stable for the pool's lifetime); `None` for an
    /// index outside the pool (never another buffer in its place).
    pub(super) fn ptr(&self, idx: u32) -> Option<*const u8> {
        if idx >= self.count {
            return None;
        }
        let start = idx as usize * READ_BUF_SIZE;
        self.mem
            .get(start..start + READ_BUF_SIZE)
            .map(<[u8]>::as_ptr)
    }

    /// Submit a READ of `len` bytes at `file_offset` of `fd` into buffer
    /// `idx` at `dest_offset`. Returns false if the range does not fit.
    ///
    /// The caller keeps `idx` reserved until the CQE arrives, and the shard
    /// reaps every READ before dropping the pool (see `Shard::finish`).
    #[allow(clippy::too_many_arguments)]
    pub fn submit_read(
        &mut self,
        ring: &mut super::Ring,
        idx: u32,
        dest_offset: usize,
        fd: types::Fd,
        file_offset: u64,
        len: u32,
        user_data: u64,
    ) -> std::io::Result<bool> {
        let Some(entry) = self.read_sqe(idx, dest_offset, fd, file_offset, len, user_data) else {
            return Ok(false);
        };
        // SAFETY: the destination lies inside this pool's allocation, which
        // never moves; buffer `idx` stays reserved until the CQE is reaped.
        unsafe { ring.push(&entry) }?;
        Ok(true)
    }

    /// An SQE reading `len` bytes at `file_offset` of `fd` into buffer `idx`
    /// at `dest_offset`.
    ///
    /// Returns `None` if the range does not fit the buffer. The caller must
    /// not release `idx` before the CQE arrives, and must keep the pool
    /// alive until then (the shard drains its ring before dropping it).
    fn read_sqe(
        &mut self,
        idx: u32,
        dest_offset: usize,
        fd: types::Fd,
        file_offset: u64,
        len: u32,
        user_data: u64,
    ) -> Option<squeue::Entry> {
        if idx >= self.count || dest_offset + len as usize > READ_BUF_SIZE {
            return None;
        }
        let start = idx as usize * READ_BUF_SIZE + dest_offset;
        let dest = self.mem[start..start + len as usize].as_mut_ptr();
        Some(
            opcode::Read::new(fd, dest, len)
                .offset(file_offset)
                .build()
                .user_data(user_data),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_refuses_an_index_outside_the_pool() {
        let pool = ReadPool::new(2);
        let a = pool.ptr(0).unwrap();
        let b = pool.ptr(1).unwrap();
        assert_eq!(b as usize - a as usize, READ_BUF_SIZE);
        assert!(pool.ptr(2).is_none(), "no clamping to the last buffer");
        assert!(pool.ptr(u32::MAX).is_none());
        assert!(ReadPool::new(0).ptr(0).is_none());
    }

    #[test]
    fn release_ignores_double_frees_and_bad_indices() {
        let mut pool = ReadPool::new(2);
        let a = pool.alloc().unwrap();
        assert_eq!(pool.in_use(), 1);
        // SAFETY: nothing was submitted for `a`; the pool is never read by a kernel here.
        unsafe {
            pool.release(a);
            pool.release(a);
            pool.release(7);
        }
        assert_eq!(pool.in_use(), 0);
        assert!(pool.alloc().is_some() && pool.alloc().is_some() && pool.alloc().is_none());
    }
}
