//! A connection's registration, write-side shutdown, cancellation and
//! release.
//!
//! * io_uring: a new connection takes a buffer group and, with registered
//!   descriptors, is installed in the file table at its slab key (a
//!   `FILES_UPDATE`; its recv is armed when that completes). Shutdown,
//!   cancel and close are operations in flight; the final `Close` is counted
//!   so the worker does not exit before its descriptors are released.
//! * epoll: a connection joins the set when it is first armed; shutdown is
//!   `shutdown(2)`, nothing is ever in flight to cancel, and closing the
//!   socket takes it out of the set.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use socket2::Socket;

use super::super::{Driver, DriverConn};
use crate::token::{OpKind, Token};
use crate::uring::groups::SHARED;
use crate::uring::ring::Op;

impl Driver {
    /// A connection joins the worker at slab key `key`. `true`: a
    /// [`super::super::Completion::Registered`] follows, and the connection
    /// must not be armed before it.
    pub(crate) fn open_conn(
        &mut self,
        key: usize,
        generation: u32,
        dc: &mut DriverConn,
        fd: RawFd,
        outbound: bool,
    ) -> io::Result<bool> {
        match self {
            Driver::Uring(d) => {
                dc.bgid = if d.per_conn_groups {
                    d.groups.acquire(d.ring.raw()).unwrap_or_else(|| {
                        d.stats.add(&d.stats.group_fallbacks, 1);
                        SHARED
                    })
                } else {
                    SHARED
                };
                d.sync_group_stats();
                if key < d.fixed_files {
                    let op = Op::UpdateFile {
                        index: key as u32,
                        fd,
                    };
                    d.ring
                        .submit(op, Token::new(OpKind::FilesUpdate, key as u32, generation));
                    return Ok(true);
                }
                Ok(false)
            }
            Driver::Epoll(d) => {
                if outbound {
                    // Already in the set for its connect: point it at the
                    // connection, with no interest until armed.
                    dc.set(DriverConn::REGISTERED, true);
                    let data = Token::new(OpKind::Recv, key as u32, generation).to_user_data();
                    d.ep.modify(fd, 0, data)?;
                }
                Ok(false)
            }
        }
    }

    /// A registration finished: operations name the table index from now on
    /// when `ok`.
    pub(crate) fn registered(&mut self, dc: &mut DriverConn, ok: bool) {
        if let Driver::Uring(d) = self {
            dc.set(DriverConn::FIXED, ok);
            if ok {
                d.stats.add(&d.stats.fixed_installs, 1);
            }
        }
    }

    /// Shut down the write side (the peer sees end of stream after the last
    /// byte). `true`: a [`super::super::Completion::ShutDown`] follows.
    pub(crate) fn shutdown_write(&mut self, key: usize, generation: u32, sock: &Socket) -> bool {
        match self {
            Driver::Uring(d) => {
                let op = Op::ShutdownWrite {
                    fd: sock.as_raw_fd(),
                };
                d.ring.submit(
                    op,
                    Token::new(OpKind::ShutdownWrite, key as u32, generation),
                );
                true
            }
            Driver::Epoll(_) => {
                let _ = sock.shutdown(std::net::Shutdown::Write);
                false
            }
        }
    }

    /// Cancel everything in flight on `fd`. `true`: the cancelled
    /// operations post their last completions.
    pub(crate) fn cancel(&mut self, key: usize, generation: u32, fd: RawFd) -> bool {
        match self {
            Driver::Uring(d) => {
                d.ring.submit(
                    Op::CancelFd { fd },
                    Token::new(OpKind::Cancel, key as u32, generation),
                );
                true
            }
            Driver::Epoll(_) => false,
        }
    }

    /// Release a connection none of whose operations is in flight: its
    /// table entry, its descriptor and its buffer group.
    pub(crate) fn close(&mut self, key: usize, generation: u32, dc: DriverConn, sock: Socket) {
        match self {
            Driver::Uring(d) => {
                if dc.has(DriverConn::FIXED) {
                    // Drop the table's reference too, or the socket would
                    // stay open until the index is reused. Operations run in
                    // submission order, so a new connection on this key
                    // installs after this.
                    let op = Op::UpdateFile {
                        index: key as u32,
                        fd: -1,
                    };
                    d.ring
                        .submit(op, Token::new(OpKind::FilesUpdate, key as u32, generation));
                }
                let fd = sock.into_raw_fd();
                d.ring.submit(
                    Op::Close { fd },
                    Token::new(OpKind::Close, key as u32, generation),
                );
                d.closes_in_flight += 1;
                d.groups.release(d.ring.raw(), dc.bgid);
                d.sync_group_stats();
            }
            // Closing the descriptor takes it out of the epoll set.
            Driver::Epoll(_) => drop(sock),
        }
    }
}
