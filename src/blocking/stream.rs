//! [`Stream`]: a blocking TCP stream with an input buffer and a timeout on
//! every call.
//!
//! Reads go into the buffer first and are taken from it, so a call that
//! times out (or meets the end of the stream) leaves everything it read for
//! the next call. Per-call timeouts are set with `SO_RCVTIMEO` /
//! `SO_SNDTIMEO` before each system call, from one deadline per call; a
//! `Stream` is used by one thread at a time (`&mut self`), so the option is
//! never shared.

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::{is_timeout, timed_out, Deadline};
use crate::endpoint::ToEndpoint;

/// The default for [`Stream::set_recv_limit`]: 64 KiB.
pub const DEFAULT_RECV_LIMIT: usize = 64 * 1024;

/// How many bytes one read asks the kernel for.
const READ_CHUNK: usize = 16 * 1024;

/// A connected TCP stream with buffered reads and per-call timeouts.
///
/// Made by [`Server::accept`](super::Server::accept) or
/// [`Stream::connect`]. Every call takes `timeout: Option<Duration>` (`None`:
/// wait for ever). A read that runs out of time returns
/// [`io::ErrorKind::TimedOut`] and keeps what it read: the next call sees
/// the same bytes. A read that meets the end of the stream first returns
/// [`io::ErrorKind::UnexpectedEof`], again keeping the partial bytes (see
/// [`buffered`](Stream::buffered)).
///
/// ```
/// use std::time::Duration;
/// use ringnet::blocking::{Server, Stream};
/// use ringnet::ListenOptions;
///
/// let t = Some(Duration::from_secs(5));
/// let server = Server::bind("127.0.0.1:0", ListenOptions::default())?;
/// let mut client = Stream::connect(server.local_addr(), t)?;
/// let mut conn = server.accept(t)?;
///
/// client.send(b"HELO a\r\nrest", t)?;
/// assert_eq!(conn.recv_line(t)?, "HELO a");
/// // Half a line, then a timeout: the half stays buffered.
/// let e = conn.recv_line(Some(Duration::from_millis(50))).unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
/// assert_eq!(conn.buffered(), b"rest");
/// client.send_line(" of it", t)?;
/// assert_eq!(conn.recv_line(t)?, "rest of it");
///
/// // send_after: wait for the prompt, then answer.
/// conn.send(b"name? ", t)?;
/// assert_eq!(client.send_after(b"? ", b"ringnet\n", t)?, b"name? ");
/// assert_eq!(conn.recv_exact(8, t)?, b"ringnet\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Stream {
    sock: Socket,
    /// Input read from the socket; `buf[start..]` is not yet consumed.
    buf: Vec<u8>,
    start: usize,
    /// The longest frame `recv_until` and `recv_line` accept.
    limit: usize,
    /// The SO_RCVTIMEO / SO_SNDTIMEO last set (`None` inside: no timeout),
    /// so an unchanged value costs no system call.
    read_timeout: Option<Option<Duration>>,
    write_timeout: Option<Option<Duration>>,
}

impl Stream {
    /// Wrap a connected, blocking socket.
    pub(crate) fn from_socket(sock: Socket) -> Stream {
        Stream {
            sock,
            buf: Vec::new(),
            start: 0,
            limit: DEFAULT_RECV_LIMIT,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Connect to `endpoint`, trying its addresses in order until one
    /// accepts; if none does, the last error is returned (for example
    /// [`io::ErrorKind::ConnectionRefused`]). `timeout` covers the whole
    /// call, resolution aside. TCP_NODELAY is set.
    pub fn connect(endpoint: impl ToEndpoint, timeout: Option<Duration>) -> io::Result<Stream> {
        let addrs = endpoint.to_addrs()?;
        let deadline = Deadline::after(timeout);
        let mut last = None;
        for addr in addrs {
            if last.is_some() && deadline.expired() {
                return Err(timed_out("connect"));
            }
            match connect_one(addr, &deadline) {
                Ok(sock) => return Ok(Stream::from_socket(sock)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
    }

    /// Up to `n` bytes: what is buffered if anything is, else what one read
    /// brings. An empty result means the end of the stream (or `n == 0`).
    pub fn recv(&mut self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.buffered().is_empty() {
            self.fill(&Deadline::after(timeout), true, "recv")?;
        }
        let n = n.min(self.buffered().len());
        Ok(self.take(n))
    }

    /// Exactly `n` bytes. At the end of the stream before `n` bytes:
    /// [`io::ErrorKind::UnexpectedEof`], the bytes received stay buffered.
    pub fn recv_exact(&mut self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        let mut first = true;
        while self.buffered().len() < n {
            if self.fill(&deadline, first, "recv_exact")? == 0 {
                return Err(eof(self.buffered().len(), "recv_exact"));
            }
            first = false;
        }
        Ok(self.take(n))
    }

    /// The bytes up to and including the first `delim`. A frame longer than
    /// the [receive limit](Stream::set_recv_limit), delimiter included, is an
    /// [`io::ErrorKind::InvalidData`] error (the bytes stay buffered); so is
    /// an empty `delim` ([`io::ErrorKind::InvalidInput`]).
    pub fn recv_until(&mut self, delim: &[u8], timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let len = self.frame(delim, &Deadline::after(timeout), "recv_until")?;
        Ok(self.take(len))
    }

    /// One line, without its `\n` and without a `\r` before it. Lines are
    /// bounded by the [receive limit](Stream::set_recv_limit). A line that is
    /// not UTF-8 is an [`io::ErrorKind::InvalidData`] error and stays
    /// buffered (read it with [`recv_until`](Stream::recv_until)).
    pub fn recv_line(&mut self, timeout: Option<Duration>) -> io::Result<String> {
        let len = self.frame(b"\n", &Deadline::after(timeout), "recv_line")?;
        let line = &self.buffered()[..len - 1];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .to_string();
        self.start += len;
        Ok(line)
    }

    /// Send all of `data`. On a timeout or error, a prefix of `data` may
    /// have been sent.
    pub fn send(&mut self, data: &[u8], timeout: Option<Duration>) -> io::Result<()> {
        self.send_by(data, &Deadline::after(timeout))
    }

    /// Send `line` followed by `\n`.
    pub fn send_line(
        &mut self,
        line: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let line = line.as_ref();
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        self.send(&out, timeout)
    }

    /// Wait for `delim` (as [`recv_until`](Stream::recv_until)), then send
    /// `data`; returns what was received, delimiter included. `timeout`
    /// covers both. If the wait times out, nothing is sent and the bytes
    /// received stay buffered.
    pub fn send_after(
        &mut self,
        delim: &[u8],
        data: &[u8],
        timeout: Option<Duration>,
    ) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        let len = self.frame(delim, &deadline, "send_after")?;
        let got = self.take(len);
        self.send_by(data, &deadline)?;
        Ok(got)
    }

    /// The bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The longest frame [`recv_until`](Stream::recv_until) and
    /// [`recv_line`](Stream::recv_line) accept (default
    /// [`DEFAULT_RECV_LIMIT`]), which bounds the buffer they can grow.
    pub fn set_recv_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// The current receive limit.
    pub fn recv_limit(&self) -> usize {
        self.limit
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        ip_addr(self.sock.peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        ip_addr(self.sock.local_addr()?)
    }

    /// Shut down the write side: the peer sees the end of the stream after
    /// the bytes already sent; reading goes on.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.sock.shutdown(std::net::Shutdown::Write)
    }

    /// Close the stream (the same as dropping it). Buffered input is
    /// discarded; unread input in the kernel makes Linux reset the
    /// connection, so read what the peer sends or
    /// [`shutdown_write`](Stream::shutdown_write) first for a clean close.
    pub fn close(self) {
        drop(self);
    }

    /// The socket, to read or set options (TCP_NODELAY, SO_RCVBUF, ...) with
    /// socket2. Read and write through the `Stream`, or buffered bytes get
    /// out of order.
    pub fn socket(&self) -> SockRef<'_> {
        SockRef::from(&self.sock)
    }

    /// Read until `buffered()` holds a frame ending in `delim`; its length.
    fn frame(&mut self, delim: &[u8], deadline: &Deadline, what: &str) -> io::Result<usize> {
        if delim.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty delimiter",
            ));
        }
        let mut from = 0;
        let mut first = true;
        loop {
            let have = self.buffered();
            if let Some(pos) = find(&have[from..], delim) {
                let len = from + pos + delim.len();
                return if len > self.limit {
                    Err(too_long(self.limit, what))
                } else {
                    Ok(len)
                };
            }
            if have.len() >= self.limit {
                return Err(too_long(self.limit, what));
            }
            // A delimiter may straddle the old end and the next read.
            from = have.len().saturating_sub(delim.len() - 1);
            if self.fill(deadline, first, what)? == 0 {
                return Err(eof(self.buffered().len(), what));
            }
            first = false;
        }
    }

    /// One read into the buffer; returns how many bytes came (0: end of
    /// stream). After the first read of a call, an expired deadline is a
    /// timeout without a read (a zero timeout still makes one attempt).
    fn fill(&mut self, deadline: &Deadline, first: bool, what: &str) -> io::Result<usize> {
        if !first && deadline.expired() {
            return Err(timed_out(what));
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let res = loop {
            // Set again after EINTR, so a signal does not stretch the call
            // past its deadline.
            let t = deadline.socket_timeout();
            if self.read_timeout != Some(t) {
                if let Err(e) = self.sock.set_read_timeout(t) {
                    break Err(e);
                }
                self.read_timeout = Some(t);
            }
            match (&self.sock).read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if deadline.expired() {
                        break Err(io::ErrorKind::TimedOut.into());
                    }
                }
                res => break res,
            }
        };
        match res {
            Ok(n) => {
                self.buf.truncate(old + n);
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(if is_timeout(&e) { timed_out(what) } else { e })
            }
        }
    }

    /// Consume the first `n` buffered bytes (`n <= buffered().len()`).
    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        out
    }

    fn send_by(&mut self, data: &[u8], deadline: &Deadline) -> io::Result<()> {
        let mut sent = 0;
        while sent < data.len() {
            if sent > 0 && deadline.expired() {
                return Err(timed_out("send"));
            }
            let t = deadline.socket_timeout();
            if self.write_timeout != Some(t) {
                self.sock.set_write_timeout(t)?;
                self.write_timeout = Some(t);
            }
            match self.sock.send_with_flags(&data[sent..], libc::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(timed_out("send")),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn connect_one(addr: SocketAddr, deadline: &Deadline) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    match deadline.remaining() {
        None => sock.connect(&addr.into())?,
        // socket2 polls in whole milliseconds and gives up at once on zero.
        Some(t) => sock.connect_timeout(&addr.into(), t.max(Duration::from_millis(1)))?,
    }
    sock.set_tcp_nodelay(true)?;
    Ok(sock)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => hay.iter().position(|x| x == b),
        _ => hay.windows(needle.len()).position(|w| w == needle),
    }
}

fn ip_addr(addr: socket2::SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
}

fn eof(have: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{what}: end of stream ({have} bytes left buffered)"),
    )
}

fn too_long(limit: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what}: no delimiter within the {limit}-byte receive limit"),
    )
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("fd", &self.sock.as_raw_fd())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("buffered", &self.buffered().len())
            .finish()
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
