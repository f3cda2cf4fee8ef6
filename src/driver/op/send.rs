//! Sending a connection's current send.
//!
//! * io_uring: `SEND` (or `SEND_ZC` from `send_zc_threshold` bytes) with
//!   MSG_NOSIGNAL; the ring holds the bytes until the completion, which
//!   gives them back with the count written. A short send is resubmitted
//!   for the remainder before anything newer.
//! * epoll: `send(2)` now, as much as the socket takes; on EAGAIN the core
//!   asks for `EPOLLOUT` and goes on when the socket is writable.

use std::io;
use std::os::fd::RawFd;

use super::super::epoll::interest;
use super::super::{Driver, DriverConn};
use crate::conn::ConnCore;
use crate::driver::uring::Reply;
use crate::token::{OpKind, Token};
use crate::uring::ring::Op;

/// What a send call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendStart {
    /// In flight: [`super::super::Completion::Sent`] follows, with the
    /// bytes.
    InFlight,
    /// Wrote this many bytes now.
    Wrote(usize),
    /// The socket takes nothing now.
    WouldBlock,
    /// The send failed with this errno.
    Failed(i32),
}

impl Driver {
    /// Send `core`'s queued output (there must be some, none lent).
    pub(crate) fn send(
        &mut self,
        key: usize,
        generation: u32,
        dc: DriverConn,
        core: &mut ConnCore,
    ) -> SendStart {
        match self {
            Driver::Uring(d) => {
                let target = dc.target(core.raw_fd());
                let buf = core.lend();
                let zc = d.zc_threshold > 0 && buf.len() >= d.zc_threshold;
                if zc {
                    d.stats.add(&d.stats.zc_sends, 1);
                }
                let op = Op::Send { target, buf, zc };
                d.ring
                    .submit(op, Token::new(OpKind::Send, key as u32, generation));
                SendStart::InFlight
            }
            Driver::Epoll(_) => {
                // An epoll connection always has its plain descriptor.
                let Ok(sock) = core.socket() else {
                    return SendStart::Failed(libc::EBADF);
                };
                match sock.send_with_flags(core.unsent(), libc::MSG_NOSIGNAL) {
                    Ok(n) => SendStart::Wrote(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => SendStart::WouldBlock,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => SendStart::Wrote(0),
                    Err(e) => SendStart::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
        }
    }

    /// io_uring: send bytes `off..off + len` of the shared ring's buffer
    /// `bid`, a buffer a receive lent and the core kept out of its ring
    /// (the handler replied with the bytes it was lent). The buffer comes
    /// back in [`super::super::SentBuf::Provided`] and stays out of its
    /// ring until [`Driver::give_back`]. `false` (nothing submitted, the
    /// buffer given back): not a buffer the core holds.
    #[inline(always)]
    pub(crate) fn send_provided(
        &mut self,
        key: usize,
        generation: u32,
        (dc, fd): (DriverConn, RawFd),
        (bgid, bid): (u16, u16),
        (off, len): (u32, u32),
    ) -> bool {
        let Driver::Uring(d) = self else {
            return false;
        };
        let target = dc.target(fd);
        let token = Token::new(OpKind::Reply, u32::from(bid), 0);
        let Some(entry) = d.replies.get_mut(usize::from(bid)) else {
            d.give_back(bgid, bid);
            return false;
        };
        if bgid != crate::uring::groups::SHARED
            || !d
                .groups
                .send_reply(&mut d.ring, target, (bid, off, len), token)
        {
            d.give_back(bgid, bid);
            return false;
        }
        // The completion names the buffer; this names the connection.
        *entry = Reply {
            key: key as u32,
            generation,
            off,
            len,
            first: 0,
        };
        d.provided_in_flight += 1;
        d.stats.add(&d.stats.buffer_replies, 1);
        if d.groups.replies_are_fixed() {
            d.stats.add(&d.stats.zc_sends, 1);
        }
        true
    }

    /// io_uring: give provided buffer `bid` of group `bgid` back to its
    /// ring (a reply sent from it is done). Nothing on epoll.
    #[inline]
    pub(crate) fn give_back(&mut self, bgid: u16, bid: u16) {
        if let Driver::Uring(d) = self {
            d.provided_in_flight = d.provided_in_flight.saturating_sub(1);
            d.give_back(bgid, bid);
        }
    }

    /// How many provided buffers replies may hold now (0 on epoll, with
    /// per-connection rings, or with as many held as allowed: a quarter of
    /// the shared ring, so receiving never runs dry for them).
    pub(crate) fn reply_room(&self) -> bool {
        match self {
            Driver::Uring(d) => !d.per_conn_groups && d.provided_in_flight < d.provided_cap,
            Driver::Epoll(_) => false,
        }
    }

    /// Bring the readiness interest up to date in one call: `read` while a
    /// receive is armed, `write` (hear when the socket takes output again)
    /// while output is blocked. epoll only: io_uring's completions say both
    /// already.
    pub(crate) fn sync_interest(
        &mut self,
        key: usize,
        generation: u32,
        dc: &mut DriverConn,
        fd: RawFd,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        match self {
            Driver::Uring(_) => Ok(()),
            Driver::Epoll(d) => {
                if dc.has(DriverConn::READ) == read && dc.has(DriverConn::WRITE) == write {
                    return Ok(());
                }
                dc.set(DriverConn::READ, read);
                dc.set(DriverConn::WRITE, write);
                let data = Token::new(OpKind::Recv, key as u32, generation).to_user_data();
                d.set_interest(dc, fd, data, interest(*dc))
            }
        }
    }
}
