//! Accepting connections from the listeners (each listener's operations
//! carry its index as their token's key).
//!
//! * io_uring: one multishot accept (5.19). It allocates the descriptor
//!   before taking the connection off the backlog, so on EMFILE/ENFILE it
//!   ends and the connection stays queued; the core backs off before
//!   re-arming. It reads RLIMIT_NOFILE when submitted. With
//!   `accept_direct` it puts each connection in a free entry of the
//!   registered-file table instead (IORING_FILE_INDEX_ALLOC), which it can
//!   only look for after taking the connection: on a full table that
//!   connection is closed and the accept ends with ENFILE; the driver then
//!   arms plain accepts until a quarter of the table is free again, and
//!   switches back (cancelling the accepts of the other kind; the core
//!   hears a plain end and re-arms).
//! * epoll: the listener in the set, level-triggered; each wake-up accepts
//!   up to [`ACCEPT_BATCH`] connections with `accept4(SOCK_NONBLOCK |
//!   SOCK_CLOEXEC)`.

use std::os::fd::RawFd;

use super::super::epoll::{EpollDriver, ACCEPT_BATCH};
use super::super::uring::AcceptArm;
use super::super::{Completion, Driver, NewConn};
use crate::sys::epoll;
use crate::token::{OpKind, Token};
use crate::uring::ring::Op;

impl Driver {
    /// Start accepting on listener `index` (descriptor `fd`); `exclusive`:
    /// other workers wait on the same socket (epoll wakes one of them per
    /// connection).
    pub(crate) fn arm_accept(
        &mut self,
        index: u16,
        fd: RawFd,
        exclusive: bool,
    ) -> std::io::Result<()> {
        match self {
            Driver::Uring(d) => {
                let kind = d.accepts.kind();
                let direct = kind == OpKind::AcceptDirect;
                let token = Token::new(kind, u32::from(index), 0);
                d.ring.submit(Op::AcceptMulti { fd, direct }, token);
                let arms = &mut d.accepts.arms;
                let slot = usize::from(index);
                if arms.len() <= slot {
                    arms.resize(slot + 1, AcceptArm::Idle);
                }
                arms[slot] = AcceptArm::armed(kind);
                Ok(())
            }
            Driver::Epoll(d) => {
                let token = Token::new(OpKind::Accept, u32::from(index), 0);
                let slot = usize::from(index);
                if d.listening.len() <= slot {
                    d.listening.resize(slot + 1, None);
                }
                if d.listening[slot].is_some() {
                    return Ok(());
                }
                let flags = epoll::IN | if exclusive { epoll::EXCLUSIVE } else { 0 };
                d.ep.add(fd, flags, token.to_user_data())?;
                d.listening[slot] = Some(fd);
                Ok(())
            }
        }
    }

    /// Stop accepting on listener `index`. `true`: a
    /// [`Completion::AcceptEnded`] follows (io_uring cancels its accept);
    /// `false`: stopped now.
    pub(crate) fn stop_accept(&mut self, index: u16) -> bool {
        match self {
            Driver::Uring(d) => {
                // Being cancelled already (to switch kinds): its end
                // follows all the same.
                if let Some(kind) = d
                    .accepts
                    .arms
                    .get(usize::from(index))
                    .and_then(|a| a.kind())
                {
                    d.cancel_accept(index, kind);
                }
                true
            }
            Driver::Epoll(d) => {
                d.unlisten(index);
                false
            }
        }
    }
}

impl EpollDriver {
    /// Listener `index` is readable: accept what is queued (at most a
    /// batch).
    pub(in crate::driver) fn accept_batch(&mut self, index: u16) {
        let Some(&Some(fd)) = self.listening.get(usize::from(index)) else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            match epoll::accept_nonblocking(fd) {
                Ok(sock) => self.ready.push_back(Completion::Accepted {
                    listener: index,
                    conn: NewConn::Plain(sock),
                }),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::ECONNABORTED) | Some(libc::EINTR) | Some(libc::EPROTO) => continue,
                    // Out of descriptors or memory (the connection stays
                    // queued) or anything unexpected: leave the set; the core
                    // backs off before listening again.
                    errno => {
                        self.unlisten(index);
                        self.ready.push_back(Completion::AcceptEnded {
                            listener: index,
                            errno: errno.unwrap_or(libc::EIO),
                        });
                        return;
                    }
                },
            }
        }
    }
}
