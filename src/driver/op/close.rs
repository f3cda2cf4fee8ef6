//! A connection's registration, write-side shutdown, cancellation and
//! release.
//!
//! * io_uring: a new connection takes a buffer group and, with registered
//!   descriptors, is installed in the file table at its slab key (a
//!   `FILES_UPDATE`; its recv is armed when that completes), unless it was
//!   accepted straight into the table (`accept_direct`: the kernel chose
//!   its entry, which is its only descriptor). Shutdown, cancel and close
//!   are operations in flight; the final `Close` (of the descriptor, or of
//!   the table entry) is counted so the worker does not exit before its
//!   descriptors are released.
//! * epoll: a connection joins the set when it is first armed; shutdown is
//!   `shutdown(2)`, nothing is ever in flight to cancel, and closing the
//!   socket takes it out of the set.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use socket2::Socket;

use super::super::{Driver, DriverConn, NewConn};
use crate::token::{OpKind, Token};
use crate::uring::groups::SHARED;
use crate::uring::ring::{Op, Target};

impl Driver {
    /// A connection joins the worker at slab key `key`. `true`: a
    /// [`super::super::Completion::Registered`] follows, and the connection
    /// must not be armed before it.
    pub(crate) fn open_conn(
        &mut self,
        key: usize,
        generation: u32,
        dc: &mut DriverConn,
        conn: &NewConn,
        outbound: bool,
    ) -> io::Result<bool> {
        match self {
            Driver::Uring(d) => {
                if d.per_conn_groups {
                    dc.bgid = d.groups.acquire(d.ring.raw()).unwrap_or_else(|| {
                        d.stats.add(&d.stats.group_fallbacks, 1);
                        SHARED
                    });
                    d.sync_group_stats();
                } else {
                    dc.bgid = SHARED;
                }
                let fd = match conn {
                    NewConn::Direct(index) => {
                        dc.set_index(*index);
                        dc.set(DriverConn::FIXED | DriverConn::DIRECT, true);
                        return Ok(false);
                    }
                    NewConn::Plain(sock) => sock.as_raw_fd(),
                };
                // With accept_direct the kernel hands out the whole table,
                // so nothing is installed by key.
                if key < d.fixed_files && !d.accepts.direct {
                    dc.set_index(key as u32);
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
                if let (true, NewConn::Plain(sock)) = (outbound, conn) {
                    // Already in the set for its connect: point it at the
                    // connection, with no interest until armed.
                    dc.set(DriverConn::REGISTERED, true);
                    let data = Token::new(OpKind::Recv, key as u32, generation).to_user_data();
                    d.ep.modify(sock.as_raw_fd(), 0, data)?;
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
    pub(crate) fn shutdown_write(
        &mut self,
        key: usize,
        generation: u32,
        dc: DriverConn,
        sock: Option<&Socket>,
    ) -> bool {
        match self {
            Driver::Uring(d) => {
                let op = Op::ShutdownWrite {
                    target: dc.target(sock.map_or(-1, |s| s.as_raw_fd())),
                };
                d.ring.submit(
                    op,
                    Token::new(OpKind::ShutdownWrite, key as u32, generation),
                );
                true
            }
            Driver::Epoll(_) => {
                if let Some(sock) = sock {
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                }
                false
            }
        }
    }

    /// Cancel everything in flight on the connection (plain descriptor
    /// `fd`). `true`: the cancelled operations post their last completions.
    pub(crate) fn cancel(
        &mut self,
        key: usize,
        generation: u32,
        dc: DriverConn,
        fd: RawFd,
    ) -> bool {
        match self {
            Driver::Uring(d) => {
                d.ring.submit(
                    Op::CancelFd {
                        target: dc.target(fd),
                    },
                    Token::new(OpKind::Cancel, key as u32, generation),
                );
                true
            }
            Driver::Epoll(_) => false,
        }
    }

    /// Release a connection none of whose operations is in flight: its
    /// table entry, its descriptor and its buffer group.
    pub(crate) fn close(
        &mut self,
        key: usize,
        generation: u32,
        dc: DriverConn,
        sock: Option<Socket>,
    ) {
        match self {
            Driver::Uring(d) => {
                if dc.has(DriverConn::DIRECT) {
                    // The entry is the only descriptor: closing it closes
                    // the socket.
                    d.close_direct(
                        dc.index(),
                        Token::new(OpKind::Close, key as u32, generation),
                    );
                } else if dc.has(DriverConn::FIXED) {
                    // Drop the table's reference too, or the socket would
                    // stay open until the index is reused. Operations run in
                    // submission order, so a new connection on this key
                    // installs after this.
                    let op = Op::UpdateFile {
                        index: dc.index(),
                        fd: -1,
                    };
                    d.ring
                        .submit(op, Token::new(OpKind::FilesUpdate, key as u32, generation));
                }
                if let Some(sock) = sock {
                    d.submit_close(
                        Target::Fd(sock.into_raw_fd()),
                        Token::new(OpKind::Close, key as u32, generation),
                    );
                }
                if dc.bgid != SHARED {
                    d.groups.release(d.ring.raw(), dc.bgid);
                    d.sync_group_stats();
                }
            }
            // Closing the descriptor takes it out of the epoll set.
            Driver::Epoll(_) => drop(sock),
        }
    }

    /// Close a new connection the core will not open (over
    /// `max_connections`, or its TLS session could not start).
    pub(crate) fn discard(&mut self, conn: NewConn) {
        match (self, conn) {
            (Driver::Uring(d), NewConn::Direct(index)) => {
                d.close_direct(index, Token::worker(OpKind::Close));
            }
            // Dropping a plain socket closes it.
            (_, conn) => drop(conn),
        }
    }
}
