//! A blocking TCP API for tools, tests and simple servers: [`Server`] and
//! [`Stream`], with a timeout on every call.
//!
//! Nothing here touches the engine; it is plain sockets (socket2) and a
//! thread per caller.
//!
//! # Buffered input
//!
//! A [`Stream`] reads into an input buffer and its receiving calls take
//! from it: `recv_exact`, `recv_until`, `recv_line`, `recv_line_after`,
//! `peek` (look without consuming), `unget` (put bytes back in front), and
//! the waits of `send_after` and `send_line_after`. That logic (the frame
//! search, a delimiter split between two reads, the
//! [receive limit](DEFAULT_RECV_LIMIT), a failed call consuming nothing) is
//! written once and shared with the UDP peer,
//! [`UdpConn`](crate::udp::UdpConn), whose byte stream is its datagrams
//! one after the other; only the step that brings more input differs.
//!
//! # Timeouts
//!
//! Every blocking call takes `timeout: Option<Duration>`: `None` waits for
//! ever, `Some(d)` gives the whole call `d` (one deadline, however many
//! system calls it takes). Running out of time returns
//! [`io::ErrorKind::TimedOut`] and loses nothing: bytes a [`Stream`] has
//! read stay in its input buffer for the next call, and a timed-out
//! [`Server::accept`] leaves pending connections in the kernel's queue.
//!
//! # How `accept` waits
//!
//! [`Server::accept`] may be called from several threads at once, each with
//! its own timeout, and each connection goes to exactly one caller. A socket
//! option cannot carry the timeout (`SO_RCVTIMEO` belongs to the open file,
//! so it is shared by every thread), so the listener is non-blocking and
//! each call does:
//!
//! 1. `accept4(SOCK_NONBLOCK)`; a connection is returned at once;
//! 2. on `EAGAIN`, it waits for the listener to become readable on an epoll
//!    instance of its own (level-triggered, created on the first miss and
//!    dropped when the call returns), with the time left as the epoll
//!    timeout, then goes back to 1.
//!
//! A readable listener wakes every waiting caller; the kernel hands each
//! queued connection to exactly one `accept4`, and a caller that loses the
//! race sees `EAGAIN` and waits again with what is left of its time. There
//! is no polling interval and no spinning. The epoll calls are the crate's
//! safe wrappers in `sys::epoll`, so this module needs no `unsafe`.
//!
//! [`Server::close`] marks the server closed and shuts down the listener's
//! read side. On Linux that takes the socket out of the listening state:
//! every epoll waiter is woken with `EPOLLHUP`, `accept4` fails with
//! `EINVAL`, and callers (blocked, or arriving later) get a "server closed"
//! error ([`io::ErrorKind::NotConnected`]) instead of waiting.
//!
//! ```
//! use std::time::Duration;
//! use ringnet::blocking::{Server, Stream};
//! use ringnet::ListenOptions;
//!
//! let server = Server::bind("127.0.0.1:0", ListenOptions::default())?;
//! let addr = server.local_addr();
//! let client = std::thread::spawn(move || -> std::io::Result<String> {
//!     let mut s = Stream::connect(addr, Some(Duration::from_secs(5)))?;
//!     s.send_line("hello", None)?;
//!     s.recv_line(Some(Duration::from_secs(5)))
//! });
//! let mut conn = server.accept(Some(Duration::from_secs(5)))?;
//! let line = conn.recv_line(Some(Duration::from_secs(5)))?;
//! conn.send_line(&line.to_uppercase(), None)?;
//! assert_eq!(client.join().expect("client thread")?, "HELLO");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::time::{Duration, Instant};

pub(crate) mod input;
mod server;
mod stream;
mod wire;

pub use input::DEFAULT_RECV_LIMIT;
pub use server::Server;
pub use stream::Stream;

/// The end of one call's time: `None` waits for ever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// A deadline `timeout` from now (a timeout too large to represent is
    /// treated as none).
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// The time left: `None` for no deadline, `Some(ZERO)` once it passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0
            .map(|end| end.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// The time left for a socket timeout option (`SO_RCVTIMEO`,
    /// `SO_SNDTIMEO`). A zero `timeval` means "no timeout" to the kernel, so
    /// anything below a microsecond becomes one microsecond (the kernel
    /// rounds it up to one tick).
    pub(crate) fn socket_timeout(&self) -> Option<Duration> {
        self.remaining().map(|d| d.max(Duration::from_micros(1)))
    }

    /// The time left in whole milliseconds for epoll_wait(2): rounded up so
    /// a wait never ends early and spins, `-1` for no deadline.
    pub(crate) fn epoll_timeout_ms(&self) -> i32 {
        match self.remaining() {
            None => -1,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        }
    }
}

/// The error every call returns when its time runs out.
pub(crate) fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// `line` followed by `\n`: what the `send_line` calls send.
pub(crate) fn with_newline(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 1);
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

/// Whether an error from a socket with a timeout option means the time ran
/// out (Linux reports `EAGAIN`).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
