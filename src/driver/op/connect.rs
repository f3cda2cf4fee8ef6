//! Outbound connects.
//!
//! * io_uring: `IORING_OP_CONNECT` on a blocking socket; the ring holds the
//!   address until the completion. A timeout (kept by the core with its
//!   other deadlines) cancels it: the completion then says `ECANCELED`.
//! * epoll: a non-blocking `connect(2)` and `EPOLLOUT`; when the socket is
//!   writable, `SO_ERROR` says how it went. A timeout drops the socket.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{SockAddr, Socket};

use super::super::{Driver, DriverConn};
use crate::sys::epoll;
use crate::token::{OpKind, Token};
use crate::uring::ring::Op;

impl Driver {
    /// Whether sockets handed to this driver must be non-blocking.
    pub(crate) fn nonblocking(&self) -> bool {
        matches!(self, Driver::Epoll(_))
    }

    /// Start connecting `sock` (pending slot `key`) to `addr`; a
    /// [`super::super::Completion::Connected`] follows.
    pub(crate) fn connect(
        &mut self,
        key: usize,
        generation: u32,
        sock: &Socket,
        addr: SockAddr,
    ) -> io::Result<()> {
        let token = Token::new(OpKind::Connect, key as u32, generation);
        match self {
            Driver::Uring(d) => {
                let op = Op::Connect {
                    fd: sock.as_raw_fd(),
                    addr,
                };
                d.ring.submit(op, token);
                Ok(())
            }
            Driver::Epoll(d) => {
                if let Err(e) = sock.connect(&addr) {
                    if e.raw_os_error() != Some(libc::EINPROGRESS) {
                        return Err(e);
                    }
                }
                // Connected at once or in progress: EPOLLOUT says which.
                d.ep.add(sock.as_raw_fd(), epoll::OUT, token.to_user_data())
            }
        }
    }

    /// Give up an attempt (timeout, shutdown). `true`: its completion
    /// follows (`ECANCELED`); `false`: dropping the socket ends it.
    pub(crate) fn abort_connect(&mut self, key: usize, generation: u32, fd: RawFd) -> bool {
        self.cancel(key, generation, DriverConn::default(), fd)
    }

    /// How a finished attempt went: io_uring's result, or epoll's
    /// `SO_ERROR`.
    pub(crate) fn connect_result(res: Option<i32>, sock: &Socket) -> io::Result<()> {
        match res {
            Some(0) => Ok(()),
            Some(r) => Err(io::Error::from_raw_os_error(-r)),
            None => match sock.take_error() {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            },
        }
    }
}
