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

use super::mmap::AnonMap;

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
}

impl BufRing {
    /// Map, fill and register a ring of `entries` (a power of two ≤ 32768)
    /// buffers of `buf_size` bytes as group `bgid` on `ring`.
    pub(crate) fn new(
        ring: &IoUring,
        bgid: u16,
        entries: u16,
        buf_size: u32,
    ) -> io::Result<BufRing> {
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two ≤ 32768",
            ));
        }
        let page = crate::sys::page_size();
        let ring_bytes =
            (usize::from(entries) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(page);
        let map = AnonMap::new(ring_bytes + usize::from(entries) * buf_size as usize)?;
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
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, entries, bgid, 0)?
        };
        Ok(br)
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub(crate) fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid & (self.entries - 1);
        let len = len.min(self.buf_size as usize);
        // SAFETY: `bid` is masked into range, so the slice lies inside the
        // mapping; the kernel finished writing it before posting the
        // completion that named it, and will not write it again until the
        // worker recycles the buffer, which takes `&mut self`.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// The buffers of a bundle completion (IORING_RECVSEND_BUNDLE, 6.10) of
    /// `len` bytes starting with buffer `first`: `(bid, bytes)` for each, in
    /// order, into `out`. The kernel fills each buffer but the last one
    /// completely.
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

    /// Give buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.write_entry(bid & (self.entries - 1));
        self.publish();
    }

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
