//! [`UdpConn`]: one peer's connected socket, plus the queue of that peer's
//! datagrams that were read from other sockets, and the input buffer of the
//! buffered calls ([`recv_line`](UdpConn::recv_line) and the others).
//!
//! The buffered calls are the blocking API's own ([`Input`]): this file
//! only supplies their fill step, which appends the peer's next datagram.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{is_retry, recv_datagram, Inner, Origin, PeerQueue};
use crate::blocking::input::Input;
use crate::blocking::{timed_out, with_newline, Deadline, DEFAULT_RECV_LIMIT};

/// One peer of a [`UdpServer`](super::UdpServer): a UDP socket bound to the
/// server's address and connected to the peer.
///
/// Every call takes `&self`, so one thread may receive while another
/// sends. [`close`](UdpConn::close) (or drop) unregisters the peer: its
/// next datagram starts a new connection. A connection keeps working after
/// its server is closed.
///
/// # Datagrams and the buffered calls
///
/// [`recv`](UdpConn::recv) and [`send`](UdpConn::send) work datagram by
/// datagram. The buffered calls ([`recv_exact`](UdpConn::recv_exact),
/// [`recv_until`](UdpConn::recv_until), [`recv_line`](UdpConn::recv_line),
/// [`recv_line_after`](UdpConn::recv_line_after), [`peek`](UdpConn::peek),
/// and the receiving half of [`send_after`](UdpConn::send_after) and
/// [`send_line_after`](UdpConn::send_line_after)) work on the *byte stream*
/// made by concatenating the peer's datagrams in the order `recv` would
/// return them, starting with the first one: datagram boundaries are not
/// kept, a frame may span several datagrams, and one datagram may hold
/// several frames. They read a datagram only when the bytes buffered are
/// not enough, into an input buffer of the connection, so what a call does
/// not consume (and everything after a timeout) stays there for the next
/// call, exactly as on a TCP [`Stream`](crate::blocking::Stream). An empty
/// datagram adds nothing to the byte stream.
///
/// The two mix: [`recv`](UdpConn::recv) returns everything buffered, in
/// one piece, if anything is (the rest of a datagram a buffered call read,
/// or bytes put back with [`unget`](UdpConn::unget)), and otherwise the
/// next datagram whole. [`send_line`](UdpConn::send_line) sends one
/// datagram per line.
///
/// # Threads
///
/// The input buffer is behind a lock inside the connection, so the
/// receiving calls keep taking `&self` and a receiving thread never holds
/// up a sending one. Receiving calls (`recv` and the buffered ones) on one
/// connection run one at a time, as they must for a byte stream to be read
/// in order: a call that finds another one in progress waits for it to
/// end, and that wait counts against its own timeout.
/// [`unget`](UdpConn::unget) never waits.
///
/// ```
/// use std::net::UdpSocket;
/// use std::time::Duration;
/// use ringnet::udp::{UdpOptions, UdpServer};
///
/// let t = Some(Duration::from_secs(5));
/// let server = UdpServer::bind("127.0.0.1:0".parse()?, UdpOptions::default())?;
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.connect(server.local_addr())?;
/// client.send(b"HELO a\nQUIT")?;
/// client.send(b"\n")?;
/// let conn = server.accept(t)?;
/// // The first datagram is already there, then the line spans two.
/// assert_eq!(conn.recv_line(t)?, "HELO a");
/// assert_eq!(conn.recv_line(t)?, "QUIT");
/// conn.send_line("221 bye")?;
/// let mut buf = [0u8; 64];
/// client.set_read_timeout(t)?;
/// let n = client.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"221 bye\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UdpConn {
    /// `None` only while dropping.
    sock: Option<UdpSocket>,
    peer: SocketAddr,
    /// Datagrams of this peer read from the listener or another peer's
    /// socket; the datagram that created the connection is the first.
    queue: Arc<PeerQueue>,
    server: Arc<Inner>,
    /// The socket's current `SO_RCVTIMEO` in nanoseconds, to skip setting
    /// it again. `Relaxed`: a stale value only means one redundant or
    /// missing setsockopt, which changes how long one wait slice lasts,
    /// never what `recv` returns.
    read_timeout_ns: AtomicU64,
    /// The input buffer of the buffered calls, lent to one receiving call
    /// at a time.
    input: InputSlot,
    /// The receive limit, given to the input at the start of each call.
    /// `Relaxed`: a value on its own, publishing nothing else.
    limit: AtomicUsize,
}

impl UdpConn {
    pub(super) fn new(
        sock: UdpSocket,
        peer: SocketAddr,
        queue: Arc<PeerQueue>,
        server: Arc<Inner>,
    ) -> UdpConn {
        let ns = duration_ns(server.poll_interval());
        UdpConn {
            sock: Some(sock),
            peer,
            queue,
            server,
            read_timeout_ns: AtomicU64::new(ns),
            input: InputSlot::default(),
            limit: AtomicUsize::new(DEFAULT_RECV_LIMIT),
        }
    }

    fn socket(&self) -> io::Result<&UdpSocket> {
        self.sock
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "udp connection closed"))
    }

    /// The peer's address. On a dual-stack (`[::]`) server an IPv4 peer is
    /// a v4-mapped IPv6 address (`::ffff:a.b.c.d`), as the kernel reports
    /// it; [`std::net::IpAddr::to_canonical`] turns it back into IPv4.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of this connection's socket (the server's port,
    /// with the address the kernel chose if the server is bound to a
    /// wildcard).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket()?.local_addr()
    }

    /// Send one datagram to the peer.
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let n = self.socket()?.send(datagram)?;
        if n == datagram.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "datagram sent in part",
            ))
        }
    }

    /// Send `line` followed by `\n`, as one datagram.
    pub fn send_line(&self, line: impl AsRef<[u8]>) -> io::Result<()> {
        self.send(&with_newline(line.as_ref()))
    }

    /// Receive the peer's next datagram, whole (up to
    /// [`MAX_DATAGRAM`](crate::udp::MAX_DATAGRAM) bytes). The datagram that
    /// created the connection comes first. If a buffered call left bytes in
    /// the input buffer (or [`unget`](UdpConn::unget) put some there),
    /// those are returned instead, all of them, and no datagram is read
    /// (see [the type's docs](UdpConn#datagrams-and-the-buffered-calls)).
    ///
    /// Handed-over datagrams (read from other sockets) are returned before
    /// the socket is read. A datagram this socket received from another
    /// address is routed to its owner and the wait goes on. `None` waits
    /// for ever; running out of time returns [`io::ErrorKind::TimedOut`].
    /// Like any connected UDP socket, it may return
    /// [`io::ErrorKind::ConnectionRefused`] after the peer's port answered
    /// an earlier send with ICMP "port unreachable".
    pub fn recv(&self, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        const WHAT: &str = "udp recv";
        let deadline = Deadline::after(timeout);
        let mut input = self.input.lend(&deadline, WHAT)?;
        if !input.buffered().is_empty() {
            return Ok(input.take_all());
        }
        self.next_datagram(&deadline, WHAT)
    }

    /// Exactly `n` bytes of the byte stream (from as many datagrams as it
    /// takes). On a timeout or error the bytes received stay buffered.
    pub fn recv_exact(&self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        self.with_input(timeout, "recv_exact", |input, d, fill| {
            input.recv_exact(n, d, fill)
        })
    }

    /// Exactly `n` bytes, without consuming them: they stay buffered for the
    /// next call. Waits and fails like [`recv_exact`](UdpConn::recv_exact).
    pub fn peek(&self, n: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        self.with_input(timeout, "peek", |input, d, fill| input.peek(n, d, fill))
    }

    /// Put `bytes` back in front of the input: the next receiving call
    /// returns them first. Never waits: if another thread is in a
    /// receiving call, the bytes go in front of what that call leaves.
    pub fn unget(&self, bytes: &[u8]) {
        self.input.unget(bytes);
    }

    /// The bytes up to and including the first `delim`. A frame longer than
    /// the [receive limit](UdpConn::set_recv_limit), delimiter included, is
    /// an [`io::ErrorKind::InvalidData`] error (the bytes stay buffered); so
    /// is an empty `delim` ([`io::ErrorKind::InvalidInput`]).
    pub fn recv_until(&self, delim: &[u8], timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        self.with_input(timeout, "recv_until", |input, d, fill| {
            input.recv_until(delim, d, "recv_until", fill)
        })
    }

    /// One line, without its `\n` and without a `\r` before it; as
    /// [`Stream::recv_line`](crate::blocking::Stream::recv_line).
    pub fn recv_line(&self, timeout: Option<Duration>) -> io::Result<String> {
        self.with_input(timeout, "recv_line", |input, d, fill| {
            input.recv_line(d, fill)
        })
    }

    /// Wait for `prompt`, then return the line that follows it; what came
    /// before the prompt is discarded. Prompt and line are consumed
    /// together or not at all, as
    /// [`Stream::recv_line_after`](crate::blocking::Stream::recv_line_after).
    pub fn recv_line_after(&self, prompt: &[u8], timeout: Option<Duration>) -> io::Result<String> {
        self.with_input(timeout, "recv_line_after", |input, d, fill| {
            input.recv_line_after(prompt, d, fill)
        })
    }

    /// Wait for `prompt` (as [`recv_until`](UdpConn::recv_until)), then
    /// send `data` as one datagram; returns what was received up to and
    /// including the prompt. If the wait fails, nothing is sent and the
    /// bytes received stay buffered.
    pub fn send_after(
        &self,
        prompt: &[u8],
        data: &[u8],
        timeout: Option<Duration>,
    ) -> io::Result<Vec<u8>> {
        let got = self.with_input(timeout, "send_after", |input, d, fill| {
            input.recv_until(prompt, d, "send_after", fill)
        })?;
        self.send(data)?;
        Ok(got)
    }

    /// Wait for `prompt`, then send `line` followed by `\n` as one
    /// datagram, as [`send_after`](UdpConn::send_after).
    pub fn send_line_after(
        &self,
        prompt: &[u8],
        line: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> io::Result<Vec<u8>> {
        self.send_after(prompt, &with_newline(line.as_ref()), timeout)
    }

    /// The longest frame the buffered calls accept (default
    /// [`DEFAULT_RECV_LIMIT`]), which bounds the input buffer they can
    /// grow. At least 1; applies from the next receiving call.
    pub fn set_recv_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    /// The current receive limit.
    pub fn recv_limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Run the buffered call `call` on the input, with one deadline for the
    /// wait for the input and the call, and the next datagram as its fill.
    fn with_input<R>(
        &self,
        timeout: Option<Duration>,
        what: &str,
        call: impl FnOnce(
            &mut Input,
            &Deadline,
            &mut dyn FnMut(&mut Input, &Deadline, &str) -> io::Result<usize>,
        ) -> io::Result<R>,
    ) -> io::Result<R> {
        let deadline = Deadline::after(timeout);
        let mut input = self.input.lend(&deadline, what)?;
        input.set_limit(self.recv_limit());
        call(&mut input, &deadline, &mut |input, d, what| {
            self.fill(input, d, what)
        })
    }

    /// The fill step of the buffered calls: append the next non-empty
    /// datagram to `input`; returns its length (never 0: UDP has no end of
    /// stream).
    fn fill(&self, input: &mut Input, deadline: &Deadline, what: &str) -> io::Result<usize> {
        loop {
            let datagram = self.next_datagram(deadline, what)?;
            if !datagram.is_empty() {
                let n = datagram.len();
                input.append(datagram);
                return Ok(n);
            }
        }
    }

    /// The peer's next datagram: a handed-over one if any, else one read
    /// from the socket (routing other peers' datagrams it finds there).
    fn next_datagram(&self, deadline: &Deadline, what: &str) -> io::Result<Vec<u8>> {
        let sock = self.socket()?;
        let interval = self.server.poll_interval();
        loop {
            if let Some(datagram) = self.queue.pop() {
                return Ok(datagram);
            }
            let slice = match deadline.remaining() {
                None => interval,
                Some(left) if left.is_zero() => return Err(timed_out(what)),
                // A zero timeval means "no timeout" to the kernel.
                Some(left) => left.min(interval).max(Duration::from_micros(1)),
            };
            self.set_read_timeout(sock, slice)?;
            match recv_datagram(sock) {
                Ok((datagram, from)) if from == self.peer => return Ok(datagram),
                Ok((datagram, from)) => self.server.route(from, datagram, Origin::PeerSocket),
                Err(e) if is_retry(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn set_read_timeout(&self, sock: &UdpSocket, timeout: Duration) -> io::Result<()> {
        let ns = duration_ns(timeout);
        if self.read_timeout_ns.load(Ordering::Relaxed) != ns {
            sock.set_read_timeout(Some(timeout))?;
            self.read_timeout_ns.store(ns, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Close the connection (the same as dropping it): datagrams of other
    /// peers still in its socket are routed to their owners, its own unread
    /// datagrams are discarded (and counted), and the peer is forgotten, so
    /// its next datagram is a new peer for `accept`.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for UdpConn {
    fn drop(&mut self) {
        let Some(sock) = self.sock.take() else {
            return;
        };
        // Datagrams from other peers can only be queued here from before
        // the connect (a connected socket receives only its 4-tuple), so one
        // non-blocking drain finds them all.
        if sock.set_nonblocking(true).is_ok() {
            let mut own = 0;
            loop {
                match recv_datagram(&sock) {
                    Ok((_, from)) if from == self.peer => own += 1,
                    Ok((datagram, from)) => self.server.route(from, datagram, Origin::PeerSocket),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A pending ICMP error is reported once; data may follow.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(_) => break,
                }
            }
            self.server.count_discarded(own);
        }
        // Close the socket while the peer is being unregistered, so that
        // when anyone can route the peer again this socket no longer exists.
        let state = self.server.unregister(self.peer, &self.queue);
        drop(sock);
        drop(state);
    }
}

impl std::fmt::Debug for UdpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpConn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The input buffer of a connection, lent out to one receiving call at a
/// time: a call takes it out of the slot (waiting, within its deadline,
/// while another call has it) and [`Lent`] puts it back when the call
/// returns, even by a panic. Nobody holds the mutex while waiting for a
/// datagram.
#[derive(Default)]
struct InputSlot {
    state: Mutex<SlotState>,
    /// Signalled when the input is put back and someone is waiting.
    returned: Condvar,
}

struct SlotState {
    /// `None` while lent.
    input: Option<Input>,
    /// Bytes given to `unget` while the input was lent, to go in front of
    /// it when it comes back.
    ungot: Vec<u8>,
    /// Calls waiting for the input (so a return with nobody waiting costs
    /// no wake-up).
    waiting: usize,
}

impl InputSlot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take the input for one call, waiting until `deadline` at most.
    fn lend(&self, deadline: &Deadline, what: &str) -> io::Result<Lent<'_>> {
        let mut state = self.lock();
        loop {
            if let Some(input) = state.input.take() {
                return Ok(Lent {
                    slot: self,
                    input: Some(input),
                });
            }
            let left = deadline.remaining();
            if left == Some(Duration::ZERO) {
                return Err(timed_out(what));
            }
            state.waiting += 1;
            state = match left {
                None => self
                    .returned
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    self.returned
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.waiting -= 1;
        }
    }

    /// Put `bytes` in front of the input, now or (if it is lent) when it
    /// comes back.
    fn unget(&self, bytes: &[u8]) {
        let mut state = self.lock();
        let state = &mut *state;
        match &mut state.input {
            Some(input) => input.unget(bytes),
            None => {
                state.ungot.splice(..0, bytes.iter().copied());
            }
        }
    }
}

impl Default for SlotState {
    fn default() -> SlotState {
        SlotState {
            input: Some(Input::default()),
            ungot: Vec::new(),
            waiting: 0,
        }
    }
}

/// The input, lent to one call; goes back to its slot when dropped.
struct Lent<'a> {
    slot: &'a InputSlot,
    /// `Some` until dropped.
    input: Option<Input>,
}

impl Deref for Lent<'_> {
    type Target = Input;
    fn deref(&self) -> &Input {
        self.input.as_ref().expect("lent input")
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut Input {
        self.input.as_mut().expect("lent input")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let Some(mut input) = self.input.take() else {
            return;
        };
        let mut state = self.slot.lock();
        let ungot = std::mem::take(&mut state.ungot);
        input.unget(&ungot);
        state.input = Some(input);
        if state.waiting > 0 {
            self.slot.returned.notify_one();
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
