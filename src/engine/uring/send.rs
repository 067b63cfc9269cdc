//! In-flight send slots: one SENDMSG (or SENDMSG_ZC) of
//! `[control bytes][13-byte piece header, file slice(s)] x up to 16 blocks`.
//!
//! A slot is boxed and owned by the shard's slot table from submission until
//! its last CQE, so the `msghdr`, the iovec array, the headers and the
//! control bytes never move while the kernel may read them. The file slices
//! point into mmaps kept alive by the `Arc` the slot holds ([`SendSlot::keep`]).

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

use io_uring::{opcode, squeue, types};

use super::readpool::{ReadPool, READ_BUF_SIZE};
use super::Ring;

/// Blocks batched into one send (measured: ~16 x 16 KiB per SENDMSG gives the
/// best throughput on loopback and keeps latency low).
pub const MAX_BLOCKS_PER_SEND: usize = 16;

/// Linux IOV_MAX.
const IOV_MAX: usize = 1024;

/// A zeroed region used for pad bytes (BEP 47 pad files and v2 alignment).
static ZEROS: [u8; 16384] = [0u8; 16384];

/// One block of the batch, for accounting when the send completes.
#[derive(Clone, Copy, Debug)]
pub struct SentBlock {
    pub piece: u32,
    pub begin: u32,
    pub len: u32,
    /// Read-pool buffer holding this block's data (page-cache miss path).
    pub read_buf: Option<u32>,
    /// When the peer's request arrived.
    pub at: std::time::Instant,
}

/// Whose memory an iovec points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The slot's own buffers or a read-pool buffer (reused once the slot
    /// completes).
    Slot,
    /// `keep[i]`: a torrent's mmap, alive while the `Arc` is.
    Keep(u16),
    /// The static zero page.
    Zeros,
}

/// One piece of a slot's pending bytes, for a carrier that keeps bytes
/// past the send's completion (uTP holds them until acknowledged).
pub enum Pending<'a> {
    /// Memory the slot reuses: copy it.
    Copy(&'a [u8]),
    /// Memory that lives as long as this handle (mmap or static): keep it.
    Shared(Bytes),
}

/// A slice of memory kept alive by `_keep` (a torrent, and so its mmaps).
struct Pinned {
    _keep: Arc<dyn Any + Send + Sync>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr` points into read-only memory owned by `_keep` (Send + Sync),
// valid for `len` bytes as long as `_keep` is alive, which is as long as
// this value.
unsafe impl Send for Pinned {}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `unsafe impl Send for Pinned`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A batch being built or in flight.
pub struct SendSlot {
    msghdr: libc::msghdr,
    iov: Vec<libc::iovec>,
    /// Whose memory each of `iov` points at.
    srcs: Vec<Source>,
    headers: Vec<[u8; 13]>,
    control: Vec<u8>,
    /// Blocks in this batch.
    pub blocks: Vec<SentBlock>,
    /// Keeps the memory the iovecs point at (the torrents' mmaps) alive.
    keep: Vec<Arc<dyn Any + Send + Sync>>,
    total: usize,
    sent: usize,
    /// Connection slot index and generation that owns this send.
    pub owner: (u32, u32),
    /// SEND_ZC notifications still due for this slot's operations.
    pub notifs: u32,
    /// The batch is done (sent or failed); free once `notifs` is 0.
    pub finished: bool,
    /// Protocol (non-payload) bytes in this batch.
    pub control_len: usize,
    /// Fence epoch the batch was built under (`storage::fence`).
    pub epoch: u64,
}

// SAFETY: the raw pointers inside `msghdr`/`iov` point into this slot's own
// heap buffers or into memory kept alive by `keep` (Send + Sync); a slot is
// only ever used by one thread at a time.
unsafe impl Send for SendSlot {}

impl Default for SendSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl SendSlot {
    pub fn new() -> Self {
        Self {
            // SAFETY: msghdr is a plain C struct for which all-zero is valid.
            msghdr: unsafe { std::mem::zeroed() },
            iov: Vec::with_capacity(1 + 2 * MAX_BLOCKS_PER_SEND),
            srcs: Vec::with_capacity(1 + 2 * MAX_BLOCKS_PER_SEND),
            headers: Vec::with_capacity(MAX_BLOCKS_PER_SEND),
            control: Vec::new(),
            blocks: Vec::with_capacity(MAX_BLOCKS_PER_SEND),
            keep: Vec::new(),
            total: 0,
            sent: 0,
            owner: (0, 0),
            notifs: 0,
            finished: false,
            control_len: 0,
            epoch: 0,
        }
    }

    /// Reset for a new batch. Call only when no CQE for this slot is pending.
    pub fn reset(&mut self, owner: (u32, u32)) {
        self.iov.clear();
        self.srcs.clear();
        self.headers.clear();
        self.control.clear();
        self.blocks.clear();
        self.keep.clear();
        self.total = 0;
        self.sent = 0;
        self.owner = owner;
        self.notifs = 0;
        self.finished = false;
        self.control_len = 0;
    }

    /// Set the control bytes (handshake, bitfield, choke, reject...) that go
    /// first. Must be called before any block is added.
    pub fn set_control(&mut self, bytes: &[u8]) {
        debug_assert!(self.iov.is_empty());
        self.control.clear();
        self.control.extend_from_slice(bytes);
        self.control_len = bytes.len();
        if !bytes.is_empty() {
            self.iov.push(libc::iovec {
                iov_base: self.control.as_ptr() as *mut _,
                iov_len: self.control.len(),
            });
            self.srcs.push(Source::Slot);
            self.total += bytes.len();
        }
    }

    /// Whether another block fits (header + `segments` data iovecs).
    pub fn has_room(&self, segments: usize) -> bool {
        self.headers.len() < MAX_BLOCKS_PER_SEND && self.iov.len() + 1 + segments <= IOV_MAX
    }

    pub fn block_count(&self) -> usize {
        self.headers.len()
    }

    /// Start a block: its 13-byte header. Follow with `push_data` /
    /// `push_zeros` for exactly `block.len` bytes.
    pub fn push_block(&mut self, header: [u8; 13], block: SentBlock) {
        assert!(
            self.headers.len() < MAX_BLOCKS_PER_SEND,
            "caller checks has_room"
        );
        self.headers.push(header);
        // The headers Vec never reallocates (capacity reserved in `new`), so
        // this address stays valid.
        let last = self.headers.len() - 1;
        self.iov.push(libc::iovec {
            iov_base: self.headers[last].as_ptr() as *mut _,
            iov_len: 13,
        });
        self.srcs.push(Source::Slot);
        self.total += 13;
        self.blocks.push(block);
    }

    /// Append bytes owned by `owner` (e.g. a slice of a torrent's mmap):
    /// the slot keeps a clone of `owner` until it is reset, so the memory
    /// outlives the send.
    pub fn push_owned<T: Any + Send + Sync>(
        &mut self,
        owner: &Arc<T>,
        get: impl FnOnce(&T) -> &[u8],
    ) {
        let bytes = get(owner);
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        let as_any: Arc<dyn Any + Send + Sync> = owner.clone();
        let at = match self.keep.iter().position(|k| Arc::ptr_eq(k, &as_any)) {
            Some(at) => at,
            None => {
                self.keep.push(as_any);
                self.keep.len() - 1
            }
        };
        self.push_raw(ptr, len);
        // A slot has at most ~2 x MAX_BLOCKS_PER_SEND iovecs, so the index
        // fits; the fallback (copy) is only a missed optimisation.
        *self.srcs.last_mut().expect("just pushed") =
            u16::try_from(at).map_or(Source::Slot, Source::Keep);
    }

    /// Append `len` bytes of read-pool buffer `idx`. The pool buffer must
    /// stay reserved for this slot until it is reset (the shard releases it
    /// when the slot completes). Returns false (nothing appended) when `idx`
    /// is not a buffer of `pool`.
    #[must_use]
    pub fn push_read_buf(&mut self, pool: &ReadPool, idx: u32, len: usize) -> bool {
        let len = len.min(READ_BUF_SIZE);
        let Some(ptr) = pool.ptr(idx) else {
            return false;
        };
        self.push_raw(ptr, len);
        true
    }

    fn push_raw(&mut self, ptr: *const u8, len: usize) {
        self.iov.push(libc::iovec {
            iov_base: ptr as *mut _,
            iov_len: len,
        });
        self.srcs.push(Source::Slot);
        self.total += len;
    }

    /// Append `len` zero bytes (pad).
    pub fn push_zeros(&mut self, mut len: usize) {
        while len > 0 {
            let n = len.min(ZEROS.len());
            self.iov.push(libc::iovec {
                iov_base: ZEROS.as_ptr() as *mut _,
                iov_len: n,
            });
            self.srcs.push(Source::Zeros);
            self.total += n;
            len -= n;
        }
    }

    /// Copy the whole batch into the slot's own buffer and let `f` rewrite
    /// it in place (RC4 encryption for the rare peer that insists on it).
    /// The iovecs then describe only that buffer; block bookkeeping stays.
    /// Call before submitting.
    pub fn flatten_and_transform(&mut self, f: impl FnOnce(&mut [u8])) {
        let mut flat = Vec::with_capacity(self.total);
        for iov in &self.iov {
            // SAFETY: every iovec points into memory this slot owns or keeps
            // alive (`push_owned`, its own buffers, reserved read-pool
            // buffers, the static zero page), valid for `iov_len` bytes.
            flat.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            });
        }
        f(&mut flat);
        self.iov.clear();
        self.srcs.clear();
        self.control = flat;
        self.total = self.control.len();
        if !self.control.is_empty() {
            self.iov.push(libc::iovec {
                iov_base: self.control.as_ptr() as *mut _,
                iov_len: self.control.len(),
            });
            self.srcs.push(Source::Slot);
        }
    }

    /// The bytes still to send, in order (what the iovecs describe now).
    pub fn pending(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.iov.iter().map(|iov| {
            // SAFETY: every iovec points into memory this slot owns or keeps
            // alive (its control bytes and headers, `push_owned` mmaps,
            // reserved read-pool buffers, the static zero page), valid for
            // `iov_len` bytes while the slot is borrowed.
            unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) }
        })
    }

    /// [`SendSlot::pending`] for a carrier that keeps the bytes after the
    /// send completes: mmap and zero slices of at least `min_shared` bytes
    /// as shared handles (no copy), the rest to be copied (a handle costs
    /// an allocation and a record in the carrier's buffer: tiny blocks are
    /// cheaper copied, and bound that buffer's records). Lazy: take only
    /// what fits.
    pub fn pending_parts(&self, min_shared: usize) -> impl Iterator<Item = Pending<'_>> + '_ {
        self.iov.iter().zip(&self.srcs).map(move |(iov, src)| {
            let (ptr, len) = (iov.iov_base as *const u8, iov.iov_len);
            let src = if len < min_shared { Source::Slot } else { *src };
            match src {
                Source::Keep(k) => match self.keep.get(usize::from(k)) {
                    Some(keep) => Pending::Shared(Bytes::from_owner(Pinned {
                        _keep: Arc::clone(keep),
                        ptr,
                        len,
                    })),
                    // Unreachable (indices come from `push_owned`).
                    // SAFETY: as in `pending`.
                    None => Pending::Copy(unsafe { std::slice::from_raw_parts(ptr, len) }),
                },
                Source::Zeros => {
                    Pending::Shared(Bytes::from_static(&ZEROS[..len.min(ZEROS.len())]))
                }
                // SAFETY: the slot's own buffers, reserved read-pool
                // buffers, or (below `min_shared`) an mmap kept by `keep`
                // or the zero page: valid for `len` bytes while the slot is
                // borrowed.
                Source::Slot => Pending::Copy(unsafe { std::slice::from_raw_parts(ptr, len) }),
            }
        })
    }

    pub fn total_len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Build the SQE for the (remaining part of the) batch.
    fn sqe(&mut self, fd: types::Fd, zero_copy: bool, user_data: u64) -> squeue::Entry {
        self.msghdr.msg_iov = self.iov.as_mut_ptr();
        self.msghdr.msg_iovlen = self.iov.len() as _;
        let msg = &self.msghdr as *const libc::msghdr;
        let entry = if zero_copy {
            opcode::SendMsgZc::new(fd, msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        } else {
            opcode::SendMsg::new(fd, msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        };
        entry.user_data(user_data)
    }

    /// Account `n` bytes the kernel sent. Returns true when the whole batch
    /// has gone; otherwise the iovecs now describe the rest (resubmit).
    pub fn advance(&mut self, mut n: usize) -> bool {
        self.sent += n;
        if self.sent >= self.total {
            return true;
        }
        let mut skip = 0;
        for iov in self.iov.iter_mut() {
            if n >= iov.iov_len {
                n -= iov.iov_len;
                skip += 1;
            } else {
                // SAFETY: n < iov_len, so the new base is inside the segment.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n) }.cast();
                iov.iov_len -= n;
                break;
            }
        }
        self.iov.drain(..skip);
        self.srcs.drain(..skip);
        false
    }

    pub fn bytes_sent(&self) -> usize {
        self.sent
    }
}

/// The shard's send slots, keyed by slot id (the `user_data` index of their
/// operations). A slot is owned by the table from [`SendTable::submit`]
/// until [`SendTable::release`], which the shard calls only after the
/// slot's last CQE (for SEND_ZC: the last notification).
// Boxed on purpose: a slot's address is in the kernel's hands while in
// flight, so slots must not move when the table grows.
#[allow(clippy::vec_box)]
#[derive(Default)]
pub struct SendTable {
    slots: Vec<Option<Box<SendSlot>>>,
    spare: Vec<Box<SendSlot>>,
    free_ids: Vec<u32>,
}

impl SendTable {
    /// A cleared slot and the id it will have once submitted.
    pub fn take(&mut self, owner: (u32, u32)) -> (u32, Box<SendSlot>) {
        let mut slot = self.spare.pop().unwrap_or_default();
        slot.reset(owner);
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        (id, slot)
    }

    /// Give back a slot that was taken but not submitted.
    pub fn put_back(&mut self, id: u32, mut slot: Box<SendSlot>) {
        slot.reset((0, 0));
        self.spare.push(slot);
        self.free_ids.push(id);
    }

    /// Keep `slot` as in flight without submitting it: its bytes are
    /// carried by the caller (a uTP connection copies them), which then
    /// completes it like a CQE would.
    pub fn hold(&mut self, id: u32, slot: Box<SendSlot>) {
        self.slots[id as usize] = Some(slot);
    }

    /// Submit `slot` as SENDMSG (or SENDMSG_ZC) on `fd`.
    pub fn submit(
        &mut self,
        ring: &mut Ring,
        id: u32,
        slot: Box<SendSlot>,
        fd: types::Fd,
        zero_copy: bool,
        user_data: u64,
    ) -> std::io::Result<()> {
        let cell = &mut self.slots[id as usize];
        *cell = Some(slot);
        self.resubmit(ring, id, fd, zero_copy, user_data)
    }

    /// Submit the rest of slot `id` after a partial send.
    pub fn resubmit(
        &mut self,
        ring: &mut Ring,
        id: u32,
        fd: types::Fd,
        zero_copy: bool,
        user_data: u64,
    ) -> std::io::Result<()> {
        let Some(slot) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut()) else {
            return Err(std::io::Error::other("resubmit of an unknown send slot"));
        };
        let entry = slot.sqe(fd, zero_copy, user_data);
        // SAFETY: the slot is boxed in this table and stays there, unmoved
        // and unmodified, until `release`, which the shard calls only after
        // the operation's last CQE. Its iovecs point into its own buffers or
        // into memory it keeps alive (`push_owned`) or reserved read-pool
        // buffers.
        unsafe { ring.push(&entry) }
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut SendSlot> {
        self.slots
            .get_mut(id as usize)
            .and_then(|s| s.as_deref_mut())
    }

    /// Take slot `id` out of the table. The caller releases the read-pool
    /// buffers listed in its blocks, then calls [`SendTable::recycle`].
    ///
    /// # Safety
    ///
    /// The kernel must be done with the slot: its operation's last CQE has
    /// been reaped (for SEND_ZC, the notification too). The slot's msghdr,
    /// iovecs, headers and control bytes are in a submitted SQE until then;
    /// recycling or dropping it earlier lets the kernel read freed or reused
    /// memory.
    pub unsafe fn release(&mut self, id: u32) -> Option<Box<SendSlot>> {
        let slot = self.slots.get_mut(id as usize)?.take()?;
        self.free_ids.push(id);
        Some(slot)
    }

    pub fn recycle(&mut self, mut slot: Box<SendSlot>) {
        slot.reset((0, 0));
        self.spare.push(slot);
    }

    /// Slots submitted and not yet released.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(slot: &SendSlot) -> Vec<u8> {
        let mut out = Vec::new();
        for iov in &slot.iov {
            // SAFETY: test iovecs point at live test buffers.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            });
        }
        out
    }

    #[test]
    fn builds_and_advances() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut slot = SendSlot::new();
        slot.reset((1, 1));
        slot.set_control(b"ctl");
        slot.push_block(
            [7; 13],
            SentBlock {
                piece: 0,
                begin: 0,
                len: 60,
                read_buf: None,
                at: std::time::Instant::now(),
            },
        );
        let owner = Arc::new(data.clone());
        slot.push_owned(&owner, |d| &d[..50]);
        slot.push_zeros(10);
        let mut expected = b"ctl".to_vec();
        expected.extend_from_slice(&[7; 13]);
        expected.extend_from_slice(&data[..50]);
        expected.extend_from_slice(&[0; 10]);
        assert_eq!(slot.total_len(), expected.len());
        assert_eq!(gather(&slot), expected);
        assert!(!slot.advance(5));
        assert_eq!(gather(&slot), expected[5..]);
        assert!(!slot.advance(20));
        assert_eq!(gather(&slot), expected[25..]);
        assert!(slot.advance(expected.len() - 25));
    }

    /// Mmap and zero slices come out shared from `min_shared` bytes on,
    /// everything else (and shorter slices) to be copied; the bytes are
    /// the slot's either way.
    #[test]
    fn pending_parts_share_long_mmap_slices_only() {
        let data: Vec<u8> = (0..=255u8).cycle().take(4000).collect();
        let owner = Arc::new(data.clone());
        let mut slot = SendSlot::new();
        slot.reset((1, 1));
        slot.set_control(b"ctl");
        let block = |len| SentBlock {
            piece: 0,
            begin: 0,
            len,
            read_buf: None,
            at: std::time::Instant::now(),
        };
        slot.push_block([1; 13], block(3000));
        slot.push_owned(&owner, |d| &d[..3000]);
        slot.push_block([2; 13], block(600));
        slot.push_owned(&owner, |d| &d[3000..3600]);
        slot.push_zeros(2000);
        let kinds: Vec<(bool, Vec<u8>)> = slot
            .pending_parts(1024)
            .map(|p| match p {
                Pending::Copy(b) => (false, b.to_vec()),
                Pending::Shared(b) => (true, b.to_vec()),
            })
            .collect();
        let shared: Vec<bool> = kinds.iter().map(|k| k.0).collect();
        assert_eq!(shared, [false, false, true, false, false, true]);
        let flat: Vec<u8> = kinds.into_iter().flat_map(|k| k.1).collect();
        assert_eq!(flat, gather(&slot));
    }
}
