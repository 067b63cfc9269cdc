//! What one send of a connection carries, decided in the core.
//!
//! [`Conn::fill_send`] is the core's `poll_transmit`: when the driver has a
//! send to build for a connection (it has no send in flight and is in the
//! dirty list), it hands the core a [`SendSink`] and the core fills it, in
//! this order:
//!
//! 1. the MSE handshake reply, if one is pending (already in its final
//!    form: the RC4 the driver applies to the rest must skip it), then the
//!    control bytes the peer state machine queued (choke, have, reject,
//!    metadata, ...);
//! 2. blocks, as the connection's [`BlockPipeline`] decides step by step:
//!    read earlier and ready (from its pool buffer), resident (from the
//!    mmap), or not resident (a read into a pool buffer starts, and the
//!    block goes in a later send), until the pipeline stops (idle, full,
//!    waiting for upload-cap credit, or its cold-read share used).
//!
//! The sink is the driver's: the only code that builds iovecs, submits
//! READs and gives pool buffers back (memory the kernel may own). The core
//! does the bookkeeping of every step (reads in flight, buffers held,
//! credit paid, a block parked for want of a buffer) and reports what the
//! driver must do next in [`Filled`]. Tested without a ring through a fake
//! sink (`tests/engine_policies.rs`).

use std::io;
use std::time::Instant;

use crate::wire::BlockRequest;

use super::conn::Conn;
use super::pipeline::{BlockPipeline, Blocks, ReadyBlock, Step, Stop};

/// Where the core puts one send's bytes: the driver's send being built.
pub trait SendSink {
    /// The control bytes at the head of the send (called once, first).
    fn set_control(&mut self, bytes: &[u8]);
    /// The send has room for a block taking `iovecs` more entries.
    fn has_room(&self, iovecs: usize) -> bool;
    /// A resident block: its piece message from the mmap.
    fn push_mmap(&mut self, req: BlockRequest, at: Instant);
    /// A block read earlier: its piece message from its pool buffer, which
    /// stays reserved until the send completes. `false`: `rb.buf` is not a
    /// buffer of the pool (a bug; the driver closes the connection).
    fn push_ready(&mut self, rb: ReadyBlock) -> bool;
    /// Give a ready block's buffer back to the pool (its piece was
    /// withdrawn and it will not be sent).
    ///
    /// # Safety
    ///
    /// The READ into `rb.buf` has completed and the buffer is in no send:
    /// the kernel holds no reference to it.
    unsafe fn free_ready(&mut self, rb: ReadyBlock);
    /// Start reading a non-resident block into a free pool buffer.
    fn start_read(&mut self, req: BlockRequest, at: Instant) -> io::Result<ReadStart>;
}

/// What [`SendSink::start_read`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStart {
    /// READs were submitted; the block is ready when they complete.
    Submitted,
    /// The block needed no I/O (all padding): ready at once in `buf`.
    Done { buf: u32 },
    /// No buffer free (or the block cannot be read): it parks.
    NoBuffer,
}

/// What filling one send did, for the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filled {
    /// Bytes at the head of the control bytes that are the MSE handshake's
    /// own (RC4 must not touch them).
    pub pre_len: usize,
    /// Blocks the send carries.
    pub blocks: u32,
    /// Reads started.
    pub reads: u32,
    /// Pool buffers given back (parked peers may use them).
    pub freed_bufs: u32,
    /// Requests of withdrawn pieces were rejected: their rejects are
    /// control bytes for the next send (flush again).
    pub withdrawn: bool,
    /// A block found no pool buffer and the connection must join the
    /// shard's waiters (woken when a buffer frees).
    pub wait_for_buffer: bool,
    /// A ready block's buffer was not the pool's: close the connection.
    pub broken: bool,
    /// Why the pipeline stopped (None: the send was cut short, see above).
    pub stop: Option<Stop>,
}

impl Conn {
    /// Fill the send being built for this connection (see the module
    /// docs). `blocks` is its torrent as the pipeline sees it (None before
    /// the handshake named one: control bytes only); `read_share` the pool
    /// buffers it may hold.
    pub fn fill_send(
        &mut self,
        blocks: Option<&impl Blocks>,
        read_share: u32,
        sink: &mut impl SendSink,
    ) -> io::Result<Filled> {
        let mut f = Filled {
            pre_len: self.pre_tx.len(),
            ..Filled::default()
        };
        if self.pre_tx.is_empty() {
            let ctl = self.peer.poll_transmit();
            let n = ctl.len();
            sink.set_control(ctl);
            self.peer.advance_transmit(n);
        } else {
            // The MSE handshake reply goes first.
            let mut ctl = std::mem::take(&mut self.pre_tx);
            ctl.extend_from_slice(self.peer.poll_transmit());
            let n = ctl.len() - f.pre_len;
            self.peer.advance_transmit(n);
            sink.set_control(&ctl);
        }
        let Some(blocks) = blocks else {
            return Ok(f);
        };
        loop {
            let step = self.pipe.next(
                &mut self.peer,
                blocks,
                |n| sink.has_room(n),
                self.egress.as_mut(),
                read_share,
            );
            match step {
                Step::Ready(rb) => {
                    if !sink.push_ready(rb) {
                        f.broken = true;
                        return Ok(f);
                    }
                    f.blocks += 1;
                }
                Step::Dropped(rb) => {
                    // SAFETY: the pipeline gives back only ready blocks,
                    // whose READ completed, and never one it put in a send.
                    unsafe { sink.free_ready(rb) };
                    f.freed_bufs += 1;
                    f.withdrawn = true;
                }
                Step::Rejected => f.withdrawn = true,
                Step::Mmap { req, at, .. } => {
                    sink.push_mmap(req, at);
                    f.blocks += 1;
                }
                Step::Read { req, at } => match sink.start_read(req, at)? {
                    ReadStart::Submitted => {
                        self.pipe.read_submitted();
                        BlockPipeline::paid_read(self.egress.as_mut(), &req);
                        f.reads += 1;
                    }
                    ReadStart::Done { buf } => {
                        self.pipe.read_done_at_once(ReadyBlock { req, buf, at });
                        BlockPipeline::paid_read(self.egress.as_mut(), &req);
                        f.reads += 1;
                    }
                    ReadStart::NoBuffer => {
                        f.wait_for_buffer = self.pipe.no_read_buffer(req, at);
                        return Ok(f);
                    }
                },
                Step::Stop(s) => {
                    f.stop = Some(s);
                    return Ok(f);
                }
            }
        }
    }
}
