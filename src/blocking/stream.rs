//! [`Stream`]: a blocking TCP stream with an input buffer and a timeout on
//! every call.
//!
//! Reads go into the buffer first and are taken from it, so a call that
//! times out (or meets the end of the stream) leaves everything it read for
//! the next call; the buffer and the frame search are the shared
//! [`Input`](super::input), this file only reads the socket. Per-call timeouts are set with `SO_RCVTIMEO` /
//! `SO_SNDTIMEO` before each system call, from one deadline per call; a
//! `Stream` is used by one thread at a time (`&mut self`), so the option is
//! never shared.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use socket2::{SockRef, Socket, Type};

use super::input::Input;
use super::wire::Wire;
use super::{timed_out, with_newline, Deadline};
use crate::address::{Address, PeerCredentials};
use crate::endpoint::ToEndpoint;

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
    /// The socket, its timeouts and its TLS session.
    wire: Wire,
    /// Input read from the socket and not yet consumed, and the receive
    /// limit.
    input: Input,
}

impl Stream {
    /// Wrap a connected, blocking socket.
    pub(crate) fn from_socket(sock: Socket) -> Stream {
        Stream {
            wire: Wire::new(sock),
            input: Input::default(),
        }
    }

    /// Connect to `endpoint` (an IP endpoint, or a Unix socket: an
    /// [`Address`] or `"unix:/path"`, `"unix:@name"`), trying its addresses
    /// in order until one accepts; if none does, the last error is returned
    /// (for example [`io::ErrorKind::ConnectionRefused`], or `NotFound` for
    /// a Unix path with no socket). `timeout` covers the whole call,
    /// resolution aside. TCP_NODELAY is set on a TCP stream.
    pub fn connect(endpoint: impl ToEndpoint, timeout: Option<Duration>) -> io::Result<Stream> {
        let addrs = endpoint.to_addresses()?;
        let deadline = Deadline::after(timeout);
        let mut last = None;
        for addr in addrs {
            if last.is_some() && deadline.expired() {
                return Err(timed_out("connect"));
            }
            match connect_one(&addr, &deadline) {
                Ok(sock) => return Ok(Stream::from_socket(sock)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
    }

    /// Up to `n` bytes: what is buffered if anything is, else what one read
    /// brings. An empty result means the end of the stream (or `n == 0`).
    pub fn recv(&mut self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        self.input.recv(n, &deadline, &mut reader(&mut self.wire))
    }

    /// Exactly `n` bytes. At the end of the stream before `n` bytes:
    /// [`io::ErrorKind::UnexpectedEof`], the bytes received stay buffered.
    pub fn recv_exact(&mut self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        self.input
            .recv_exact(n, &deadline, &mut reader(&mut self.wire))
    }

    /// Exactly `n` bytes, without consuming them: they stay buffered for the
    /// next call. Waits and fails like [`recv_exact`](Stream::recv_exact).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ringnet::blocking::{Server, Stream};
    /// # let t = Some(Duration::from_secs(5));
    /// # let server = Server::bind("127.0.0.1:0", ringnet::ListenOptions::default())?;
    /// # let mut client = Stream::connect(server.local_addr(), t)?;
    /// # let mut conn = server.accept(t)?;
    /// client.send(b"GET / HTTP/1.0\r\n", t)?;
    /// if conn.peek(4, t)? == b"GET " {
    ///     assert_eq!(conn.recv_line(t)?, "GET / HTTP/1.0");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peek(&mut self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        self.input.peek(n, &deadline, &mut reader(&mut self.wire))
    }

    /// Put `bytes` back in front of the input: the next receive returns
    /// them first, before anything buffered or still to come (for a parser
    /// that read too far). Not bounded by the receive limit.
    pub fn unget(&mut self, bytes: &[u8]) {
        self.input.unget(bytes);
    }

    /// The bytes up to and including the first `delim`. A frame longer than
    /// the [receive limit](Stream::set_recv_limit), delimiter included, is an
    /// [`io::ErrorKind::InvalidData`] error (the bytes stay buffered); so is
    /// an empty `delim` ([`io::ErrorKind::InvalidInput`]).
    pub fn recv_until(&mut self, delim: &[u8], timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        self.input
            .recv_until(delim, &deadline, "recv_until", &mut reader(&mut self.wire))
    }

    /// One line, without its `\n` and without a `\r` before it. Lines are
    /// bounded by the [receive limit](Stream::set_recv_limit). A line that is
    /// not UTF-8 is an [`io::ErrorKind::InvalidData`] error and stays
    /// buffered (read it with [`recv_until`](Stream::recv_until)).
    pub fn recv_line(&mut self, timeout: Option<Duration>) -> io::Result<String> {
        let deadline = Deadline::after(timeout);
        self.input.recv_line(&deadline, &mut reader(&mut self.wire))
    }

    /// Wait for `prompt`, then return the line that follows it (as
    /// [`recv_line`](Stream::recv_line)); what came before the prompt is
    /// discarded. The prompt and the line are consumed together: on any
    /// error (a timeout while the line is incomplete included) nothing is
    /// consumed, and a retry finds the same prompt again. The bytes up to
    /// the end of the prompt, and the line, are each bounded by the
    /// [receive limit](Stream::set_recv_limit).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ringnet::blocking::{Server, Stream};
    /// # let t = Some(Duration::from_secs(5));
    /// # let server = Server::bind("127.0.0.1:0", ringnet::ListenOptions::default())?;
    /// # let mut client = Stream::connect(server.local_addr(), t)?;
    /// # let mut conn = server.accept(t)?;
    /// conn.send(b"motd\nresult: 42\n", t)?;
    /// assert_eq!(client.recv_line_after(b"result: ", t)?, "42");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_line_after(
        &mut self,
        prompt: &[u8],
        timeout: Option<Duration>,
    ) -> io::Result<String> {
        let deadline = Deadline::after(timeout);
        self.input
            .recv_line_after(prompt, &deadline, &mut reader(&mut self.wire))
    }

    /// Send all of `data`. On a timeout or error, a prefix of `data` may
    /// have been sent.
    pub fn send(&mut self, data: &[u8], timeout: Option<Duration>) -> io::Result<()> {
        self.wire.send(data, &Deadline::after(timeout))
    }

    /// Send `line` followed by `\n`.
    pub fn send_line(
        &mut self,
        line: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.send(&with_newline(line.as_ref()), timeout)
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
        let got =
            self.input
                .recv_until(delim, &deadline, "send_after", &mut reader(&mut self.wire))?;
        self.wire.send(data, &deadline)?;
        Ok(got)
    }

    /// Wait for `prompt`, then send `line` followed by `\n`, as
    /// [`send_after`](Stream::send_after): returns what was received up to
    /// and including the prompt, and sends nothing if the wait fails.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ringnet::blocking::{Server, Stream};
    /// # let t = Some(Duration::from_secs(5));
    /// # let server = Server::bind("127.0.0.1:0", ringnet::ListenOptions::default())?;
    /// # let mut client = Stream::connect(server.local_addr(), t)?;
    /// # let mut conn = server.accept(t)?;
    /// conn.send(b"login: ", t)?;
    /// assert_eq!(client.send_line_after(b": ", "alice", t)?, b"login: ");
    /// assert_eq!(conn.recv_line(t)?, "alice");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_line_after(
        &mut self,
        prompt: &[u8],
        line: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> io::Result<Vec<u8>> {
        let deadline = Deadline::after(timeout);
        let got = self.input.recv_until(
            prompt,
            &deadline,
            "send_line_after",
            &mut reader(&mut self.wire),
        )?;
        self.wire.send(&with_newline(line.as_ref()), &deadline)?;
        Ok(got)
    }

    /// The bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.input.buffered()
    }

    /// The longest frame [`recv_until`](Stream::recv_until),
    /// [`recv_line`](Stream::recv_line) and the calls built on them accept
    /// (default [`DEFAULT_RECV_LIMIT`](super::DEFAULT_RECV_LIMIT)), which
    /// bounds the buffer they can grow. At least 1.
    pub fn set_recv_limit(&mut self, limit: usize) {
        self.input.set_limit(limit);
    }

    /// The current receive limit.
    pub fn recv_limit(&self) -> usize {
        self.input.limit()
    }

    /// The remote address: IP, or Unix (a client of a Unix server is
    /// usually [`UnixAddr::Unnamed`](crate::UnixAddr::Unnamed)).
    pub fn peer_addr(&self) -> io::Result<Address> {
        Address::from_sock_addr(&self.wire.sock.peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<Address> {
        Address::from_sock_addr(&self.wire.sock.local_addr()?)
    }

    /// For a Unix socket, the peer process's credentials as they were when
    /// the connection was made (SO_PEERCRED); `InvalidInput` for TCP.
    pub fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        PeerCredentials::of(&self.wire.sock)
    }

    /// Shut down the write side: the peer sees the end of the stream after
    /// the bytes already sent (on TLS, a `close_notify` first); reading
    /// goes on.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.wire.shutdown_write()
    }

    /// Connect to `endpoint` as [`Stream::connect`] does, then run a TLS
    /// handshake with `tls`'s server (its certificate verified against the
    /// connector's trust anchors and the target's name), all within
    /// `timeout`. Every call then reads and writes plaintext; a failed
    /// handshake is `InvalidData` with rustls' reason (an unknown issuer, a
    /// name mismatch, an alert from the server).
    pub fn connect_tls(
        endpoint: impl ToEndpoint,
        tls: &crate::tls::TlsTarget,
        timeout: Option<Duration>,
    ) -> io::Result<Stream> {
        let deadline = Deadline::after(timeout);
        let mut stream = Stream::connect(endpoint, deadline.remaining())?;
        let session = tls
            .connector
            .session(&tls.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        stream.wire.handshake(session, &deadline)?;
        Ok(stream)
    }

    /// On a TLS stream, the ALPN protocol the server chose.
    pub fn tls_alpn(&self) -> Option<&[u8]> {
        self.wire.tls()?.alpn_protocol()
    }

    /// On a TLS stream, the protocol version (`"TLSv1.3"`, `"TLSv1.2"`).
    pub fn tls_version(&self) -> Option<&'static str> {
        crate::tls::version_name(self.wire.tls()?.protocol_version()?)
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
        SockRef::from(&self.wire.sock)
    }
}

fn connect_one(addr: &Address, deadline: &Deadline) -> io::Result<Socket> {
    let (domain, protocol) = addr.stream_domain();
    let sa = addr.to_sock_addr()?;
    let sock = Socket::new(domain, Type::STREAM.cloexec(), protocol)?;
    match deadline.remaining() {
        None => sock.connect(&sa)?,
        // socket2 polls in whole milliseconds and gives up at once on zero.
        Some(t) => sock.connect_timeout(&sa, t.max(Duration::from_millis(1)))?,
    }
    if !addr.is_unix() {
        sock.set_tcp_nodelay(true)?;
    }
    Ok(sock)
}

/// The fill function of the buffered calls: one read of the wire (plain
/// bytes, or plaintext out of its TLS session). It borrows only the wire,
/// so it can be used while the stream's input is borrowed too.
fn reader(wire: &mut Wire) -> impl FnMut(&mut Input, &Deadline, &str) -> io::Result<usize> + '_ {
    move |input, deadline, what| wire.read_some(input, deadline, what)
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("fd", &self.wire.sock.as_raw_fd())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("buffered", &self.buffered().len())
            .finish()
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wire.sock.as_fd()
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.wire.sock.as_raw_fd()
    }
}
