//! Provided buffer rings (buffer groups), io_uring_setup_buf_ring(3),
//! io_uring_provided_buffers(7); Linux 5.19.
//!
//! A [`BufRing`] is one anonymous mapping ([`AnonMap`]): the ring of `entries`
//! `io_uring_buf` descriptors at the start (page-aligned, as the kernel
//! requires), then `entries` buffers of `buf_size` bytes. The kernel takes a
//! buffer from the head when a recv needs one and reports its id in the
//! completion; the worker gives it back at the tail as soon as the handler is
//! done with it. Pages are touched lazily, so an unused buffer costs address
//! space, not memory.
//!
//! The ring must stay mapped while it is registered. [`BufRing`] does not
//! unregister itself (that needs the io_uring submitter): the owner calls
//! `unregister_buf_ring(bgid)` before dropping it, or drops it after the ring
//! that it was registered with. The kernel pins the descriptor ring's pages,
//! not the buffers': before this is dropped no operation may still be able
//! to write into a buffer, so owners drop it only with nothing in flight or
//! after a synchronous cancel of everything (both workers' `Drop`).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use super::mmap::{AnonMap, HugePages};

/// The kernel's `struct io_uring_buf` (16 bytes); `resv` of descriptor 0 is
/// the ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<BufRingEntry>());

/// One registered buffer group.
pub(crate) struct BufRing {
    /// The descriptors, then the buffers; unmapped when this is dropped.
    map: AnonMap,
    ring_bytes: usize,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
    /// Which buffer each ring entry holds (by entry index) and where each
    /// buffer was last put (by bid): a bundle completion names only its
    /// first buffer, and the kernel took the entries that follow it.
    bid_at: Vec<u16>,
    pos_of: Vec<u16>,
    /// Buffers a completion named and the worker has not given back yet,
    /// one bit each, and how many.
    lent: Vec<u64>,
    lent_count: u16,
    /// Incremental consumption (IOU_PBUF_RING_INC, 6.12): per buffer, how
    /// many of its bytes earlier completions carried in this trip through
    /// the ring. Empty when the ring is not incremental.
    consumed: Vec<u32>,
}

/// `IOU_PBUF_RING_INC`: the kernel consumes a buffer piece by piece.
const IOU_PBUF_RING_INC: u16 = 2;

impl BufRing {
    /// Map, fill and register a ring of `entries` (a power of two ≤ 32768)
    /// buffers of `buf_size` bytes as group `bgid` on `ring`.
    pub(crate) fn new(
        ring: &IoUring,
        bgid: u16,
        entries: u16,
        buf_size: u32,
    ) -> io::Result<BufRing> {
        Ok(Self::mapped(ring, bgid, entries, buf_size, false, false)?.0)
    }

    /// [`BufRing::new`], on huge pages when `huge` (see
    /// [`AnonMap::new_huge`]), saying what backs it; consumed incrementally
    /// when `inc` (a receive takes only the bytes it needs of a buffer, and
    /// the next one continues in it: [`BufRing::take_part`]).
    pub(crate) fn mapped(
        ring: &IoUring,
        bgid: u16,
        entries: u16,
        buf_size: u32,
        huge: bool,
        inc: bool,
    ) -> io::Result<(BufRing, Option<HugePages>)> {
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two ≤ 32768",
            ));
        }
        let page = crate::sys::page_size();
        let ring_bytes =
            (usize::from(entries) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(page);
        let len = ring_bytes + usize::from(entries) * buf_size as usize;
        let (map, pages) = if huge {
            let (map, kind) = AnonMap::new_huge(len)?;
            (map, Some(kind))
        } else {
            (AnonMap::new(len)?, None)
        };
        let base = map.as_ptr();
        let n = usize::from(entries);
        let mut br = BufRing {
            map,
            ring_bytes,
            entries,
            buf_size,
            tail: 0,
            bid_at: vec![0; n],
            pos_of: vec![0; n],
            lent: vec![0; n.div_ceil(64)],
            lent_count: 0,
            consumed: if inc { vec![0; n] } else { Vec::new() },
        };
        for bid in 0..entries {
            br.write_entry(bid);
        }
        br.publish();
        // SAFETY: the ring memory is page-aligned, holds `entries` descriptors
        // and stays mapped until `self` is dropped, which the owner does only
        // after unregistering `bgid` or tearing down `ring` (module docs). If
        // registering fails, nothing was registered when `br` is unmapped.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                base as u64,
                entries,
                bgid,
                if inc { IOU_PBUF_RING_INC } else { 0 },
            )?
        };
        Ok((br, pages))
    }

    /// Buffer `bid` was named by a completion: it is the worker's until
    /// [`BufRing::recycle`]. `false` (and nothing changes) if it already
    /// was: the kernel hands a buffer out once per trip through the ring.
    #[inline]
    pub(crate) fn take(&mut self, bid: u16) -> bool {
        let bid = usize::from(bid & (self.entries - 1));
        let (word, bit) = (bid / 64, 1u64 << (bid % 64));
        if self.lent[word] & bit != 0 {
            return false;
        }
        self.lent[word] |= bit;
        self.lent_count += 1;
        true
    }

    #[inline]
    fn is_lent(&self, bid: u16) -> bool {
        let bid = usize::from(bid & (self.entries - 1));
        self.lent[bid / 64] & (1u64 << (bid % 64)) != 0
    }

    /// Buffers taken and not yet given back.
    #[cfg(test)]
    pub(crate) fn lent(&self) -> u16 {
        self.lent_count
    }

    /// The bytes the kernel wrote into buffer `bid` (empty unless the
    /// buffer is taken).
    #[inline]
    pub(crate) fn filled(&self, bid: u16, len: usize) -> &[u8] {
        if !self.is_lent(bid) {
            return &[];
        }
        let bid = bid & (self.entries - 1);
        let len = len.min(self.buf_size as usize);
        // SAFETY: `bid` is masked into range, so the slice lies inside the
        // mapping; the buffer is taken (a completion named it and it has not
        // been recycled since), so the kernel finished writing it and will
        // not write it again until it is recycled, which takes `&mut self`.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// Where the buffers are: their start and total length.
    pub(crate) fn buffer_area(&self) -> (*mut u8, usize) {
        (
            self.buf_ptr(0),
            usize::from(self.entries) * self.buf_size as usize,
        )
    }

    /// Whether the kernel consumes this ring's buffers incrementally.
    #[inline]
    pub(crate) fn is_incremental(&self) -> bool {
        !self.consumed.is_empty()
    }

    /// Incremental ring: a completion carried `len` bytes of buffer `bid`,
    /// placed after what earlier completions of this trip carried; `more`:
    /// the kernel keeps the buffer for further data (IORING_CQE_F_BUF_MORE),
    /// else the buffer is the worker's now, taken, until
    /// [`BufRing::recycle`]. Returns where the bytes are in the buffer.
    #[inline]
    pub(crate) fn take_part(&mut self, bid: u16, len: usize, more: bool) -> (usize, usize) {
        let bid = bid & (self.entries - 1);
        let at = &mut self.consumed[usize::from(bid)];
        let start = (*at as usize).min(self.buf_size as usize);
        let len = len.min(self.buf_size as usize - start);
        *at = (start + len) as u32;
        if !more {
            *at = 0;
            self.take(bid);
        }
        (start, len)
    }

    /// Incremental ring: the `len` bytes at `start` of buffer `bid` that a
    /// completion just carried ([`BufRing::take_part`]).
    #[inline]
    pub(crate) fn part(&self, bid: u16, (start, len): (usize, usize)) -> &[u8] {
        let bid = bid & (self.entries - 1);
        let end = (start + len).min(self.buf_size as usize);
        let start = start.min(end);
        // SAFETY: `bid` is masked into range and `start..end` lies within
        // its buffer, inside the mapping. The kernel wrote these bytes
        // before posting the completion that carried them; it writes an
        // incremental buffer only past what it has handed out, and writes
        // none of it again before the buffer is recycled, which takes
        // `&mut self`.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid).add(start), end - start) }
    }

    /// The buffers of a bundle completion (IORING_RECVSEND_BUNDLE, 6.10) of
    /// `len` bytes starting with buffer `first`: `(bid, bytes)` for each, in
    /// order, into `out`. The kernel fills each buffer but the last one
    /// completely.
    #[inline]
    pub(crate) fn bundle_into(&self, first: u16, len: usize, out: &mut Vec<(u16, usize)>) {
        let mask = self.entries - 1;
        let mut pos = self.pos_of[usize::from(first & mask)];
        let mut left = len;
        out.clear();
        while left > 0 && out.len() < usize::from(self.entries) {
            let bid = self.bid_at[usize::from(pos & mask)];
            let n = left.min(self.buf_size as usize);
            out.push((bid, n));
            left -= n;
            pos = pos.wrapping_add(1);
        }
    }

    /// Give buffer `bid` back to the kernel. Only a taken buffer goes back
    /// (`false` otherwise): a second recycle would put it in the ring twice,
    /// and the kernel could then fill it for two completions at once.
    #[inline]
    pub(crate) fn recycle(&mut self, bid: u16) -> bool {
        let bid = bid & (self.entries - 1);
        if !self.is_lent(bid) {
            return false;
        }
        let b = usize::from(bid);
        self.lent[b / 64] &= !(1u64 << (b % 64));
        self.lent_count -= 1;
        self.write_entry(bid);
        self.publish();
        true
    }

    #[inline]
    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < entries, so the offset stays within the mapping.
        unsafe {
            self.map
                .as_ptr()
                .add(self.ring_bytes + usize::from(bid) * self.buf_size as usize)
        }
    }

    /// Write the descriptor for `bid` at our tail and advance it (not yet
    /// visible to the kernel).
    #[inline]
    fn write_entry(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        self.bid_at[slot] = bid;
        self.pos_of[usize::from(bid)] = self.tail;
        let addr = self.buf_ptr(bid) as u64;
        // SAFETY: slot < entries, so the descriptor lies in the ring area. The
        // kernel reads only descriptors between its head and the published
        // tail, and this one is beyond the published tail. The fields are
        // written one by one through raw pointers, never through a reference
        // to the whole descriptor: descriptor 0's `resv` is the tail that the
        // kernel reads concurrently, and it is not touched here.
        unsafe {
            let entry = self.map.as_ptr().cast::<RawBuf>().add(slot);
            std::ptr::addr_of_mut!((*entry).addr).write(addr);
            std::ptr::addr_of_mut!((*entry).len).write(self.buf_size);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every written descriptor visible to the kernel.
    #[inline]
    fn publish(&self) {
        // SAFETY: the tail field overlays the `resv` of descriptor 0 inside the
        // mapping and is 2-byte aligned; the kernel reads it concurrently, so
        // it is accessed only as an atomic.
        let tail = unsafe {
            &*BufRingEntry::tail(self.map.as_ptr().cast::<BufRingEntry>()).cast::<AtomicU16>()
        };
        // Release: the descriptor writes above must be visible before the
        // kernel sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use io_uring::{types, IoUring};

    use super::BufRing;
    use crate::token::{OpKind, Token};
    use crate::uring::ring::{Op, Ring, Target};

    /// `struct io_uring_buf_status` (IORING_REGISTER_PBUF_STATUS, 6.8).
    #[repr(C)]
    struct BufStatus {
        buf_group: u32,
        head: u32,
        resv: [u32; 8],
    }

    /// The kernel's head of buffer ring `bgid`: the next entry it will hand
    /// out.
    fn kernel_head(ring: &IoUring, bgid: u16) -> std::io::Result<u16> {
        let mut st = BufStatus {
            buf_group: u32::from(bgid),
            head: 0,
            resv: [0; 8],
        };
        // SAFETY: `st` is a valid, writable io_uring_buf_status for the
        // whole call; the ring descriptor is open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring.as_raw_fd(),
                26, // IORING_REGISTER_PBUF_STATUS
                std::ptr::addr_of_mut!(st),
                1,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st.head as u16)
    }

    /// Drive a multishot recv (with bundles when `bundle`) over an 8-entry
    /// ring of 64-byte buffers until `sent` bytes came back; every buffer a
    /// completion named is lent, read and given back.
    fn recv_all(bundle: bool) {
        let raw = IoUring::new(16).expect("ring");
        if bundle && !raw.params().is_feature_recvsend_bundle() {
            eprintln!("skipping bundles: this kernel lacks recv bundles (Linux 6.10)");
            return;
        }
        let mut br = BufRing::new(&raw, 7, 8, 64).expect("buffer ring");
        let mut ring = Ring::new(raw);
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let sent: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let arm = |ring: &mut Ring| {
            let op = Op::RecvMulti {
                target: Target::Fd(a.as_raw_fd()),
                bgid: 7,
                bundle,
            };
            ring.submit(op, Token::new(OpKind::Recv, 0, 0));
        };
        arm(&mut ring);
        let mut got = Vec::new();
        let mut cqes = Vec::new();
        let mut bufs = Vec::new();
        let ts = types::Timespec::new().sec(1);
        let mut chunks = sent.chunks(100);
        while got.len() < sent.len() {
            if let Some(c) = chunks.next() {
                b.write_all(c).expect("write");
            }
            ring.submit_and_wait(None, &ts).expect("wait");
            ring.reap(|c| cqes.push(c));
            for c in cqes.drain(..) {
                let more = c.more();
                if c.res > 0 {
                    let bid = io_uring::cqueue::buffer_select(c.flags).expect("a buffer");
                    if bundle {
                        br.bundle_into(bid, c.res as usize, &mut bufs);
                    } else {
                        bufs = vec![(bid, c.res as usize)];
                    }
                    for &(b, _) in &bufs {
                        assert!(br.take(b), "a buffer is handed out once");
                    }
                    for &(b, n) in &bufs {
                        got.extend_from_slice(br.filled(b, n));
                        assert!(br.recycle(b));
                        assert!(!br.recycle(b), "a second recycle is refused");
                    }
                }
                if !more {
                    // ENOBUFS or a full ring: every buffer is back, go on.
                    arm(&mut ring);
                }
            }
        }
        assert_eq!(got, sent, "every byte, in order");
        assert_eq!(br.lent(), 0);
        match kernel_head(ring.raw(), 7) {
            Ok(head) => assert_eq!(
                br.tail.wrapping_sub(head),
                8,
                "every buffer is back in the kernel's ring"
            ),
            Err(e) => eprintln!("skipping the kernel's view: PBUF_STATUS (Linux 6.8): {e}"),
        }
        drop(a);
    }

    #[test]
    fn every_buffer_goes_back_to_the_kernel() {
        recv_all(false);
    }

    #[test]
    fn every_bundled_buffer_goes_back_to_the_kernel() {
        recv_all(true);
    }

    #[test]
    fn only_taken_buffers_are_read_or_recycled() {
        let raw = IoUring::new(4).expect("ring");
        let mut br = BufRing::new(&raw, 3, 4, 64).expect("buffer ring");
        let tail = br.tail;
        assert!(br.filled(1, 10).is_empty(), "not lent: nothing to read");
        assert!(!br.recycle(1), "not lent: not put in the ring twice");
        assert_eq!(br.tail, tail);
        assert!(br.take(1));
        assert!(!br.take(1));
        assert_eq!((br.lent(), br.filled(1, 10).len()), (1, 10));
        assert!(br.recycle(1));
        assert_eq!((br.lent(), br.tail), (0, tail.wrapping_add(1)));
    }
}
