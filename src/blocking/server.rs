//! [`Server`]: a listening socket whose `accept` takes a timeout and may be
//! called from several threads at once (see the [module docs](super) for how
//! it waits).

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::Socket;

use super::{Deadline, Stream};
use crate::address::Address;
use crate::endpoint::ToEndpoint;
use crate::error::Error;
use crate::listener::{self, ListenOptions, SocketFile};
use crate::sys::epoll::{self, Epoll};

/// A blocking TCP server: bind, then [`accept`](Server::accept) from one or
/// more threads.
///
/// ```
/// use std::time::Duration;
/// use ringnet::blocking::{Server, Stream};
/// use ringnet::ListenOptions;
///
/// let server = Server::bind("127.0.0.1:0", ListenOptions::default())?;
/// let addr = server.local_addr();
/// assert_ne!(addr.as_inet().map(|a| a.port()), Some(0));
/// let client = std::thread::spawn(move || -> std::io::Result<()> {
///     let mut s = Stream::connect(addr, Some(Duration::from_secs(5)))?;
///     s.send_line("ping", None)
/// });
/// let mut conn = server.accept(Some(Duration::from_secs(5)))?;
/// assert_eq!(conn.recv_line(Some(Duration::from_secs(5)))?, "ping");
/// client.join().expect("client thread")?;
///
/// // Nobody else is connecting: the next accept times out.
/// let err = server.accept(Some(Duration::from_millis(10))).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    /// Non-blocking, so that `accept4` never sleeps inside the kernel where
    /// no timeout can reach it.
    listener: Socket,
    local_addr: Address,
    /// The socket file of a Unix path listener, removed with the server.
    _file: Option<SocketFile>,
    /// Set by `close`; read by `accept` to turn the listener's `EINVAL` and
    /// `EPOLLHUP` into a clear error.
    closed: AtomicBool,
}

impl Server {
    /// Listen on `endpoint` with `options`: an IP endpoint, or a Unix
    /// socket (`"unix:/path"`, `"unix:@name"`, an [`Address`]; a stale
    /// socket file is replaced, a live one is [`Error::AddressInUse`], and
    /// the file is removed when the server is dropped). The endpoint's
    /// addresses are tried in order and the first that binds is used; if
    /// none does, the first error is returned ([`Error::AddressInUse`] for
    /// a taken port; [`Error::NoAddress`] when there was no address to
    /// try). Port 0 asks the OS for a free port: see [`Server::local_addr`].
    pub fn bind(endpoint: impl ToEndpoint, options: ListenOptions) -> Result<Server, Error> {
        let addrs = endpoint.to_addresses().map_err(Error::from_resolve)?;
        let mut first_err = None;
        for addr in addrs {
            match listener::listen(&addr, options) {
                Ok(listener::Listening { sock, file }) => {
                    sock.set_nonblocking(true)?;
                    let local_addr = Address::from_sock_addr(&sock.local_addr()?)?;
                    return Ok(Server {
                        listener: sock,
                        local_addr,
                        _file: file,
                        closed: AtomicBool::new(false),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(Error::NoAddress))
    }

    /// Serve on a listening socket made elsewhere: one inherited from a
    /// parent process or a service manager, or a `std::net::TcpListener`
    /// or `UnixListener` (`Server::from_listener(listener.into())`). The
    /// socket must be a listening stream socket, IP or Unix; anything else
    /// (a connected socket, a datagram socket, a file) is refused with
    /// [`io::ErrorKind::InvalidInput`] and closed. The socket's options
    /// (backlog, SO_REUSEPORT, TCP_NODELAY, buffer sizes) stay as they were
    /// set; it is made non-blocking (a flag of the open file, which any
    /// other holder of the socket shares).
    pub fn from_listener(fd: std::os::fd::OwnedFd) -> io::Result<Server> {
        let sock = listener::adopt(fd)?;
        let local_addr = Address::from_sock_addr(&sock.local_addr()?)?;
        sock.set_nonblocking(true)?;
        Ok(Server {
            listener: sock,
            local_addr,
            _file: None,
            closed: AtomicBool::new(false),
        })
    }

    /// The address the server is bound to, with the real port after port
    /// 0: IP, or the Unix path or abstract name.
    pub fn local_addr(&self) -> Address {
        self.local_addr.clone()
    }

    /// Wait up to `timeout` (`None`: for ever) for the next connection.
    ///
    /// Safe to call from several threads at once: each connection goes to
    /// exactly one caller. Errors: [`io::ErrorKind::TimedOut`] when the time
    /// runs out; [`io::ErrorKind::NotConnected`] ("server closed") once
    /// [`close`](Server::close) has been called, including for calls that
    /// were already waiting.
    ///
    /// The stream is blocking, with the listener's TCP_NODELAY, SO_RCVBUF
    /// and SO_SNDBUF (Linux copies them into accepted sockets).
    pub fn accept(&self, timeout: Option<Duration>) -> io::Result<Stream> {
        let deadline = Deadline::after(timeout);
        // Created on the first EAGAIN only, so a queued connection costs
        // one system call.
        let mut waiter: Option<Epoll> = None;
        let mut events = Vec::with_capacity(1);
        loop {
            // Acquire: pairs with the Release store in `close`, so a caller
            // that sees the flag also sees the listener shut down.
            if self.closed.load(Ordering::Acquire) {
                return Err(closed());
            }
            match epoll::accept_nonblocking(self.listener.as_raw_fd()) {
                Ok(sock) => {
                    sock.set_nonblocking(false)?;
                    return Ok(Stream::from_socket(sock));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The connection was reset while queued, or a signal came in:
                // try the next one.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED) | Some(libc::EINTR)
                    ) =>
                {
                    continue
                }
                Err(_) if self.closed.load(Ordering::Acquire) => return Err(closed()),
                Err(e) => return Err(e),
            }
            if deadline.expired() {
                return Err(super::timed_out("accept"));
            }
            let ep = match &mut waiter {
                Some(ep) => ep,
                None => {
                    let ep = Epoll::new(1)?;
                    // Level-triggered: a listener that is still readable after
                    // another thread took "our" connection wakes us again.
                    ep.add(self.listener.as_raw_fd(), epoll::IN, 0)?;
                    waiter.insert(ep)
                }
            };
            match ep.wait(&mut events, deadline.epoll_timeout_ms()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            // Readable, hung up (closed), or timed out: the loop's next
            // accept4 and deadline check tell which.
        }
    }

    /// Stop accepting: calls waiting in [`accept`](Server::accept), and any
    /// made later, return a "server closed" error
    /// ([`io::ErrorKind::NotConnected`]) promptly. TCP connections still
    /// queued in the kernel are reset. A Unix socket stays bound until the
    /// server is dropped (the kernel has no "closed" listening state for
    /// it): clients that connect meanwhile are never accepted, and are
    /// reset when it is dropped. Already accepted streams are not affected.
    /// Calling it again does nothing.
    pub fn close(&self) -> io::Result<()> {
        // Release: pairs with the Acquire loads in `accept`.
        if self.closed.swap(true, Ordering::Release) {
            return Ok(());
        }
        // shutdown(SHUT_RD) on a listening TCP socket moves it to CLOSE
        // (Linux tcp_disconnect): waiters are woken with EPOLLHUP and
        // accept4 fails with EINVAL from then on. On a Unix socket it marks
        // the read side shut and wakes the waiters, which see `closed`.
        match self.listener.shutdown(Shutdown::Read) {
            // A Unix listener has no peer: some kernels say so.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            other => other,
        }
    }

    /// Whether [`close`](Server::close) has been called.
    pub fn is_closed(&self) -> bool {
        // Relaxed: an informational read; `accept` does its own ordering.
        self.closed.load(Ordering::Relaxed)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "server closed")
}

impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl AsRawFd for Server {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.listener.as_raw_fd()
    }
}
