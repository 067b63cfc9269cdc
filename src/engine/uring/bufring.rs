//! A provided-buffer ring (IORING_REGISTER_PBUF_RING) for multishot receive.
//!
//! The kernel picks a buffer per receive completion and tells us its id in
//! the CQE flags; we parse the bytes in place and hand the buffer back with
//! [`ProvidedBufRing::recycle`] on every path. Memory per shard is
//! `entries * buf_size` no matter how many connections are idle, which is
//! what keeps 10,000 idle peers cheap.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and owns.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The buffer ring of one shard. Not `Send`: it lives on its shard.
pub struct ProvidedBufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    bgid: u16,
    /// Our copy of the tail; published to the kernel through the shared one.
    tail: u16,
    registered: bool,
}

impl ProvidedBufRing {
    /// Allocate `entries` (a power of two, at most 32768) buffers of
    /// `buf_size` bytes each and register them as buffer group `bgid`.
    pub fn new(
        submitter: &Submitter<'_>,
        bgid: u16,
        entries: u16,
        buf_size: u32,
    ) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer ring entries must be a power of two <= 32768, got {entries}"),
            ));
        }
        let ring_len = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let ring = Mapping::new(ring_len.max(4096))?;
        let bufs = Mapping::new(usize::from(entries) * buf_size as usize)?;
        let mut this = Self {
            ring,
            bufs,
            entries,
            buf_size,
            bgid,
            tail: 0,
            registered: false,
        };
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        // SAFETY: the ring memory is page aligned, `entries` entries long, and
        // lives until `unregister` (called by the owner before drop) or until
        // the io_uring instance is gone; see `Drop`.
        unsafe {
            submitter.register_buf_ring_with_flags(this.ring.ptr.as_ptr() as u64, entries, bgid, 0)
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "registering the receive buffer ring failed ({e}): ringseed needs Linux 6.0+"
                ),
            )
        })?;
        this.registered = true;
        Ok(this)
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    fn entry_ptr(&self, slot: u16) -> *mut BufRingEntry {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `slot & (entries - 1)` < entries, inside the ring mapping.
        unsafe { base.add(usize::from(slot & (self.entries - 1))) }
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.entries);
        // SAFETY: bid < entries, so the offset is inside the buffer mapping.
        unsafe {
            self.bufs
                .ptr
                .as_ptr()
                .add(usize::from(bid) * self.buf_size as usize)
        }
    }

    fn push(&mut self, bid: u16) {
        let addr = self.buf_ptr(bid) as u64;
        let entry = self.entry_ptr(self.tail);
        // SAFETY: `entry` points into our ring mapping; the kernel only reads
        // entries between its head and the published tail, and this one is at
        // or past the published tail.
        unsafe {
            (*entry).set_addr(addr);
            (*entry).set_len(self.buf_size);
            (*entry).set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail field lives in the first entry of our mapping; the
        // kernel reads it with acquire semantics, so a release store makes
        // the entries written before it visible.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// The bytes the kernel wrote into buffer `bid`.
    ///
    /// Only call this for a buffer id taken from a CQE and not yet recycled;
    /// `len` is clamped to the buffer size.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.entries {
            return &[];
        }
        let len = len.min(self.buf_size as usize);
        // SAFETY: bid is in range and the buffer was handed to us by a CQE,
        // so the kernel is done writing it until we recycle it; the slice
        // borrows `self`, so `recycle` cannot run while it is alive.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// Hand buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        self.push(bid);
        self.publish();
    }

    /// Unregister from the ring. Call before dropping the ring's owner.
    pub fn unregister(&mut self, submitter: &Submitter<'_>) {
        if self.registered {
            let _ = submitter.unregister_buf_ring(self.bgid);
            self.registered = false;
        }
    }
}

impl Drop for ProvidedBufRing {
    fn drop(&mut self) {
        if self.registered {
            // The owner did not unregister: the io_uring instance may still
            // reference this memory, so leak it rather than risk the kernel
            // writing into freed pages. (Shards always unregister first.)
            tracing::warn!(
                bgid = self.bgid,
                "buffer ring dropped while registered; leaking it"
            );
            let ring = std::mem::replace(
                &mut self.ring,
                Mapping {
                    ptr: NonNull::dangling(),
                    len: 0,
                },
            );
            let bufs = std::mem::replace(
                &mut self.bufs,
                Mapping {
                    ptr: NonNull::dangling(),
                    len: 0,
                },
            );
            std::mem::forget(ring);
            std::mem::forget(bufs);
        }
    }
}
