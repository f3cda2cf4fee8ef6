//! Receiving: arming, pausing, and taking what arrived.
//!
//! * io_uring: one multishot recv per connection over its buffer group
//!   (6.0; with bundles, 6.10, one completion may name several consecutive
//!   buffers). Each completion's buffers are lent to the core and go back to
//!   their ring when it returns. ENOBUFS (the ring ran dry) is not end of
//!   stream: the core re-arms once every buffer is back. Pausing cancels
//!   the recv; its last completion says `ECANCELED`.
//! * epoll: read interest in the set; a readable connection is read into
//!   the driver's one buffer up to [`READS_PER_EVENT`] times, each read
//!   lent to the core. Pausing drops the interest.

use std::io;
use std::os::fd::RawFd;

use io_uring::cqueue;

use super::super::epoll::{interest, EpollDriver, READS_PER_EVENT};
use super::super::uring::UringDriver;
use super::super::{Driver, DriverConn, RecvEvent};
use crate::conn::Flow;
use crate::token::{OpKind, Token};
use crate::uring::ring::Op;

/// How a receive event ended, for the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Still receiving.
    Armed,
    /// The multishot recv ended (a full CQ, or its own fairness rule): arm
    /// again if still wanted.
    Ended,
    /// The buffer ring ran dry (not end of stream): arm again once buffers
    /// are back.
    NoBuffers,
    /// End of stream: the peer shut down its write side.
    Eof,
    /// A pause (or teardown) cancelled the recv.
    Cancelled,
    /// The receive failed with this errno.
    Failed(i32),
}

impl Driver {
    /// Start receiving on connection `key`.
    pub(crate) fn arm_recv(
        &mut self,
        key: usize,
        generation: u32,
        dc: &mut DriverConn,
        fd: RawFd,
    ) -> io::Result<()> {
        match self {
            Driver::Uring(d) => {
                let op = Op::RecvMulti {
                    target: dc.target(fd),
                    bgid: dc.bgid,
                    bundle: d.bundle,
                };
                d.ring
                    .submit(op, Token::new(OpKind::Recv, key as u32, generation));
                Ok(())
            }
            Driver::Epoll(d) => {
                dc.set(DriverConn::READ, true);
                let data = Token::new(OpKind::Recv, key as u32, generation).to_user_data();
                d.set_interest(dc, fd, data, interest(*dc))
            }
        }
    }

    /// Stop receiving (a pause). `true`: the recv's last completion follows
    /// (`Received::Cancelled`, possibly after data already taken).
    pub(crate) fn stop_recv(
        &mut self,
        key: usize,
        generation: u32,
        dc: &mut DriverConn,
        fd: RawFd,
    ) -> io::Result<bool> {
        match self {
            Driver::Uring(d) => {
                let target = Token::new(OpKind::Recv, key as u32, generation);
                d.ring.submit(
                    Op::Cancel { target },
                    Token::new(OpKind::Cancel, key as u32, generation),
                );
                Ok(true)
            }
            Driver::Epoll(d) => {
                dc.set(DriverConn::READ, false);
                let data = Token::new(OpKind::Recv, key as u32, generation).to_user_data();
                d.set_interest(dc, fd, data, interest(*dc))?;
                Ok(false)
            }
        }
    }

    /// Take what a receive event brought: each chunk of bytes is lent to
    /// `take`, which says whether to go on, and (io_uring) whether it keeps
    /// the chunk's provided buffer out of its ring because a reply is sent
    /// straight from it ([`Driver::kept`] names it then).
    #[inline]
    pub(crate) fn receive(
        &mut self,
        dc: DriverConn,
        fd: RawFd,
        ev: RecvEvent,
        take: impl FnMut(&[u8]) -> (Flow, bool),
    ) -> Received {
        match (self, ev) {
            (Driver::Uring(d), RecvEvent::Uring { res, flags }) => d.receive(dc, res, flags, take),
            (Driver::Epoll(d), RecvEvent::Readable) => d.receive(dc, fd, take),
            // Each driver reports only its own kind of event.
            _ => Received::Armed,
        }
    }
}

impl Driver {
    /// The provided buffer the last receive's `take` kept (group, buffer
    /// id), once.
    pub(crate) fn kept(&mut self) -> Option<(u16, u16)> {
        match self {
            Driver::Uring(d) => d.kept.take(),
            Driver::Epoll(_) => None,
        }
    }
}

impl UringDriver {
    /// Lend the buffers a recv completion names to `take`, and give them
    /// back. Buffers taken and not given back (by the ring's own records)
    /// are added up in `lent_total` (`buffers_in_use` between batches): 0
    /// unless one leaked.
    ///
    /// The common completion (bytes in one whole buffer) is taken here,
    /// where `take` is inlined; the others in [`UringDriver::receive_other`].
    #[inline(always)]
    fn receive(
        &mut self,
        dc: DriverConn,
        res: i32,
        flags: u32,
        mut take: impl FnMut(&[u8]) -> (Flow, bool),
    ) -> Received {
        let (Some(bid), Some(ring)) = (cqueue::buffer_select(flags), self.groups.get_mut(dc.bgid))
        else {
            return self.receive_other(dc, res, flags, &mut take);
        };
        if res <= 0 || self.bundle || ring.is_incremental() {
            return self.receive_other(dc, res, flags, &mut take);
        }
        let st = &self.stats;
        st.add(&st.bytes_in, res as u64);
        // One buffer: lent, then kept for a reply or given back.
        let taken = ring.take(bid);
        let (_, keep) = take(ring.filled(bid, res as usize));
        let returned = if keep && self.kept.is_none() {
            self.kept = Some((dc.bgid, bid));
            false
        } else {
            ring.recycle(bid)
        };
        if taken != returned {
            self.lent_total =
                (self.lent_total + u64::from(taken)).saturating_sub(u64::from(returned));
        }
        if cqueue::more(flags) {
            Received::Armed
        } else {
            Received::Ended
        }
    }

    /// [`UringDriver::receive`] of the other completions: an end or an
    /// error, a bundle, an incremental buffer's part (never one whole
    /// buffer without bundles).
    #[inline(never)]
    fn receive_other(
        &mut self,
        dc: DriverConn,
        res: i32,
        flags: u32,
        take: &mut impl FnMut(&[u8]) -> (Flow, bool),
    ) -> Received {
        let st = &self.stats;
        let buffer = cqueue::buffer_select(flags);
        let Some(ring) = self.groups.get_mut(dc.bgid) else {
            return Received::Failed(libc::EIO);
        };
        let (mut taken, mut returned) = (0u64, 0u64);
        let got = if res <= 0 {
            // Some kernels consume a buffer even for an error or end of
            // stream; give back any buffer a completion names.
            // (An incremental buffer the kernel keeps is not ours.)
            if let Some(bid) = buffer.filter(|_| !cqueue::buffer_more(flags)) {
                if ring.is_incremental() {
                    ring.take_part(bid, 0, false);
                    taken += 1;
                } else {
                    taken += u64::from(ring.take(bid));
                }
                returned += u64::from(ring.recycle(bid));
            }
            match -res {
                0 => Received::Eof,
                libc::ENOBUFS => {
                    st.add(&st.enobufs, 1);
                    Received::NoBuffers
                }
                libc::ECANCELED => Received::Cancelled,
                errno => Received::Failed(errno),
            }
        } else if let Some(bid) = buffer {
            st.add(&st.bytes_in, res as u64);
            if ring.is_incremental() {
                // Incremental: these bytes follow the buffer's earlier ones;
                // the buffer is ours (to give back) only when the kernel
                // says it is done with it. Nothing is kept for replies.
                let more_buf = cqueue::buffer_more(flags);
                if more_buf {
                    st.add(&st.partial_buffers, 1);
                }
                let part = ring.take_part(bid, res as usize, more_buf);
                let _ = take(ring.part(bid, part));
                if !more_buf {
                    taken += 1;
                    returned += u64::from(ring.recycle(bid));
                }
                if taken != returned {
                    self.lent_total = (self.lent_total + taken).saturating_sub(returned);
                }
                return if cqueue::more(flags) {
                    Received::Armed
                } else {
                    Received::Ended
                };
            }
            // A bundle (one buffer without bundles is taken by `receive`):
            // the consecutive ring entries from `bid`.
            let bufs = &mut self.recv_bufs;
            ring.bundle_into(bid, res as usize, bufs);
            if bufs.len() > 1 {
                st.add(&st.bundled_buffers, bufs.len() as u64);
            }
            for &(b, _) in bufs.iter() {
                taken += u64::from(ring.take(b));
            }
            let mut flow = Flow::More;
            for &(b, n) in bufs.iter() {
                // Bytes already taken from the socket are delivered even
                // when paused; a teardown drops the rest.
                let mut keep = false;
                if flow != Flow::Stop {
                    (flow, keep) = take(ring.filled(b, n));
                }
                if keep && self.kept.is_none() {
                    self.kept = Some((dc.bgid, b));
                } else {
                    returned += u64::from(ring.recycle(b));
                }
            }
            if cqueue::more(flags) {
                Received::Armed
            } else {
                Received::Ended
            }
        } else {
            // The kernel always names a buffer for a selected recv.
            Received::Failed(libc::EIO)
        };
        if taken != returned {
            self.lent_total = (self.lent_total + taken).saturating_sub(returned);
        }
        got
    }
}

impl EpollDriver {
    fn receive(
        &mut self,
        dc: DriverConn,
        fd: RawFd,
        mut take: impl FnMut(&[u8]) -> (Flow, bool),
    ) -> Received {
        if !dc.has(DriverConn::READ) {
            return Received::Armed;
        }
        for _ in 0..READS_PER_EVENT {
            let end = match crate::sys::recv(fd, &mut self.buf) {
                Ok(0) => Received::Eof,
                Ok(n) => {
                    let st = &self.stats;
                    st.add(&st.bytes_in, n as u64);
                    // Nothing is kept: this buffer is read into again.
                    let (flow, _) = take(&self.buf[..n]);
                    // Drained (the next read would say EAGAIN), paused or
                    // torn down: stop here.
                    if flow != Flow::More || n < self.buf.len() {
                        return Received::Armed;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::Armed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Received::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
            };
            // The stream is over. Level-triggered readiness would report it
            // again and again, so the core drops the read interest if the
            // connection stays (its flush follows in this batch); one it
            // tears down leaves the set when its socket closes.
            return end;
        }
        Received::Armed
    }
}
