//! Accepting connections from the listener.
//!
//! * io_uring: one multishot accept (5.19). It allocates the descriptor
//!   before taking the connection off the backlog, so on EMFILE/ENFILE it
//!   ends and the connection stays queued; the core backs off before
//!   re-arming. It reads RLIMIT_NOFILE when submitted.
//! * epoll: the listener in the set, level-triggered; each wake-up accepts
//!   up to [`ACCEPT_BATCH`] connections with `accept4(SOCK_NONBLOCK |
//!   SOCK_CLOEXEC)`.

use std::os::fd::RawFd;

use super::super::epoll::{EpollDriver, ACCEPT_BATCH};
use super::super::{Completion, Driver};
use crate::sys::epoll;
use crate::token::{OpKind, Token};
use crate::uring::ring::Op;

impl Driver {
    /// Start accepting on `listener`; `exclusive`: other workers wait on the
    /// same listener (epoll wakes one of them per connection).
    pub(crate) fn arm_accept(&mut self, listener: RawFd, exclusive: bool) -> std::io::Result<()> {
        match self {
            Driver::Uring(d) => {
                d.ring.submit(
                    Op::AcceptMulti { fd: listener },
                    Token::worker(OpKind::Accept),
                );
                Ok(())
            }
            Driver::Epoll(d) => {
                if d.listening.is_some() {
                    return Ok(());
                }
                let flags = epoll::IN | if exclusive { epoll::EXCLUSIVE } else { 0 };
                d.ep.add(
                    listener,
                    flags,
                    Token::worker(OpKind::Accept).to_user_data(),
                )?;
                d.listening = Some(listener);
                Ok(())
            }
        }
    }

    /// Stop accepting. `true`: a [`Completion::AcceptEnded`] follows
    /// (io_uring cancels its accept); `false`: stopped now.
    pub(crate) fn stop_accept(&mut self) -> bool {
        match self {
            Driver::Uring(d) => {
                let target = Token::worker(OpKind::Accept);
                d.ring
                    .submit(Op::Cancel { target }, Token::worker(OpKind::AcceptCancel));
                true
            }
            Driver::Epoll(d) => {
                d.unlisten();
                false
            }
        }
    }
}

impl EpollDriver {
    /// The listener is readable: accept what is queued (at most a batch).
    pub(in crate::driver) fn accept_batch(&mut self, out: &mut Vec<Completion>) {
        let Some(fd) = self.listening else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            match epoll::accept_nonblocking(fd) {
                Ok(sock) => out.push(Completion::Accepted(sock)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::ECONNABORTED) | Some(libc::EINTR) | Some(libc::EPROTO) => continue,
                    // Out of descriptors or memory (the connection stays
                    // queued) or anything unexpected: leave the set; the core
                    // backs off before listening again.
                    errno => {
                        self.unlisten();
                        out.push(Completion::AcceptEnded(errno.unwrap_or(libc::EIO)));
                        return;
                    }
                },
            }
        }
    }
}
