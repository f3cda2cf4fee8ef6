//! The worker's buffer groups.
//!
//! Group 0 is the worker's shared ring. In
//! [`BufferMode::PerConnection`](crate::BufferMode::PerConnection) every
//! connection also gets a ring of its own, taken from a pool of registered
//! rings: a closing connection's ring goes back to the pool (its recv has
//! ended and every buffer has been recycled by then), so an accept does not
//! pay for `mmap` and `io_uring_register`. Beyond `pool_max` idle rings, a
//! freed ring is unregistered and unmapped. When no ring can be had (group
//! ids run out at 65535, or the register call fails) the connection falls
//! back to the shared ring.

use std::io;

use io_uring::IoUring;

use super::bufring::BufRing;
use super::mmap::HugePages;
use super::ring::{Ring, Target};
use crate::token::Token;

/// The shared group's id.
pub(crate) const SHARED: u16 = 0;

pub(crate) struct Groups {
    /// Indexed by group id; `None` for ids not in use.
    rings: Vec<Option<BufRing>>,
    /// Registered rings owned by no connection.
    idle: Vec<u16>,
    /// Ids whose ring was unregistered, for reuse.
    free_ids: Vec<u16>,
    conn_entries: u16,
    buf_size: u32,
    pool_max: usize,
    pub(crate) in_use: usize,
    /// What backs the shared ring, when it was asked to be on huge pages.
    pub(crate) pages: Option<HugePages>,
    /// The shared ring's buffers are registered buffer 0: replies go from
    /// them with SEND_ZC ([`Groups::register_fixed`]).
    fixed: bool,
}

impl Groups {
    pub(crate) fn new(
        ring: &IoUring,
        shared_entries: u16,
        conn_entries: u16,
        buf_size: u32,
        pool_max: usize,
        (huge, inc): (bool, bool),
    ) -> io::Result<Groups> {
        let (shared, pages) = BufRing::mapped(ring, SHARED, shared_entries, buf_size, huge, inc)?;
        Ok(Groups {
            fixed: false,
            pages,
            rings: vec![Some(shared)],
            idle: Vec::new(),
            free_ids: Vec::new(),
            conn_entries,
            buf_size,
            pool_max,
            in_use: 0,
        })
    }

    /// A ring for a new connection, or `None` to use the shared one.
    pub(crate) fn acquire(&mut self, ring: &IoUring) -> Option<u16> {
        let id = match self.idle.pop() {
            Some(id) => id,
            None => {
                let id = match self.free_ids.pop() {
                    Some(id) => id,
                    None if self.rings.len() < usize::from(u16::MAX) => self.rings.len() as u16,
                    None => return None,
                };
                match BufRing::new(ring, id, self.conn_entries, self.buf_size) {
                    Ok(r) => {
                        if usize::from(id) == self.rings.len() {
                            self.rings.push(Some(r));
                        } else {
                            self.rings[usize::from(id)] = Some(r);
                        }
                        id
                    }
                    Err(_) => {
                        if usize::from(id) < self.rings.len() {
                            self.free_ids.push(id);
                        }
                        return None;
                    }
                }
            }
        };
        self.in_use += 1;
        Some(id)
    }

    /// Register the shared ring's buffers as the ring's fixed buffer 0
    /// (IORING_REGISTER_BUFFERS, Linux 5.1): replies from them then go with
    /// SEND_ZC from registered memory, whose pages the kernel pinned once
    /// instead of on every send.
    pub(crate) fn register_fixed(&mut self, ring: &IoUring) -> io::Result<()> {
        let Some(shared) = self.rings.first().and_then(Option::as_ref) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let (base, len) = shared.buffer_area();
        let iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        // SAFETY: the buffer area is part of the shared ring's mapping,
        // which lives as long as these groups; the driver drops its ring
        // (and with it this registration) before its groups.
        unsafe { ring.submitter().register_buffers(&[iov])? };
        self.fixed = true;
        Ok(())
    }

    /// Replies from the shared ring go with SEND_ZC from its registered
    /// buffers ([`Groups::register_fixed`] succeeded).
    pub(crate) fn replies_are_fixed(&self) -> bool {
        self.fixed
    }

    /// Send bytes `off..off + len` of the shared ring's taken buffer `bid`
    /// on `target` (a reply straight from the buffer it arrived in), as
    /// `token`. `false` (nothing submitted): `bid` is not a taken buffer
    /// of the shared ring with that many bytes.
    #[inline(always)]
    pub(crate) fn send_reply(
        &mut self,
        ring: &mut Ring,
        target: Target,
        (bid, off, len): (u16, u32, u32),
        token: Token,
    ) -> bool {
        let Some(shared) = self.rings.first().and_then(Option::as_ref) else {
            return false;
        };
        let end = off as usize + len as usize;
        let bytes = shared.filled(bid, end);
        if len == 0 || bytes.len() != end {
            return false;
        }
        let ptr = bytes[off as usize..].as_ptr();
        let fixed = self.fixed.then_some(0);
        // SAFETY: `ptr` points at `len` bytes of the shared ring's mapping,
        // which lives as long as these groups; the driver drops its ring
        // (cancelling what is in flight, synchronously) before its groups.
        // The buffer is taken: the kernel does not fill it again until it
        // is recycled, which the worker does only when this send's last
        // completion has been reaped (`Driver::give_back`).
        unsafe { ring.submit_provided_send(target, ptr, len, token, fixed) };
        true
    }

    /// Return a connection's ring. Its recv must have ended.
    pub(crate) fn release(&mut self, ring: &IoUring, id: u16) {
        if id == SHARED {
            return;
        }
        self.in_use -= 1;
        if self.idle.len() < self.pool_max {
            self.idle.push(id);
            return;
        }
        if ring.submitter().unregister_buf_ring(id).is_ok() {
            self.rings[usize::from(id)] = None;
            self.free_ids.push(id);
        } else {
            // Still registered: keep it mapped and reusable.
            self.idle.push(id);
        }
    }

    pub(crate) fn get_mut(&mut self, id: u16) -> Option<&mut BufRing> {
        self.rings.get_mut(usize::from(id)).and_then(Option::as_mut)
    }

    pub(crate) fn idle(&self) -> usize {
        self.idle.len()
    }
}
