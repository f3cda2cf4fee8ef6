//! The handler API: what user code implements, and the contract every backend
//! keeps with it.
//!
//! # The contract
//!
//! * **One handler per worker.** The engine calls the factory given to
//!   [`crate::Engine::start`] once on each worker thread; that instance serves
//!   every connection of its worker and is only ever called from that thread,
//!   so it needs no locks (and need not be `Send`).
//! * **Order of calls.** For each connection: [`Handler::on_open`] once, then
//!   [`Handler::on_data`] any number of times, then [`Handler::on_close`] once.
//!   Nothing is called for a connection after `on_close`.
//! * **Received bytes are lent, not copied.** `data` points straight into the
//!   provided buffer the kernel filled. It is valid only during the call; the
//!   buffer goes back to the kernel as soon as `on_data` returns.
//! * **Partial consumption.** `on_data` returns how many bytes it consumed
//!   (values above `data.len()` count as `data.len()`). The engine keeps the
//!   rest and presents it again, in front of the next bytes that arrive, so a
//!   frame split across reads is seen whole. It does not call again until
//!   more bytes arrive, so a handler should consume every complete frame it
//!   can in one call. If more than [`crate::Config::max_unconsumed`] bytes
//!   pile up, the connection is closed with [`CloseReason::InputLimit`].
//! * **Sending.** [`Conn::send`] queues bytes; the engine sends queued bytes in
//!   order, resubmitting the remainder of a short send, with at most one send
//!   in flight per connection. `send` never blocks and never fails: a peer
//!   that has gone shows up as `on_close` with an error reason.
//! * **Closing.** [`Conn::close`] stops delivery of further input and closes
//!   the connection once everything queued has been sent. A peer that shuts
//!   down its write side (end of stream) gets the same treatment: queued
//!   output is flushed, then the connection closes with
//!   [`CloseReason::PeerClosed`].
//! * **Identity.** [`Conn::id`] is stable for the life of the connection and
//!   not reused by a later connection (see [`ConnId`]).
//! * **Outbound connections.** [`Conn::connect`] (from any callback) or
//!   [`Ctx::connect`] (from [`Handler::on_start`]) asks the worker to connect
//!   out; the attempt never blocks the worker. A connection made this way is
//!   served by the same handler as accepted ones: `on_open`, `on_data`,
//!   `on_close`, with [`Conn::tag`] giving back the caller's tag. If every
//!   address fails, [`Handler::on_connect_failed`] says why (refused,
//!   unreachable, timed out are distinct).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::Socket;

use crate::bus::{Bus, Command, SendError};
use crate::config::Backend;
use crate::connect::{ConnectError, ConnectRequest};
use crate::token::ConnId;

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer ended its side of the stream (recv returned 0).
    PeerClosed,
    /// The handler called [`Conn::close`].
    Local,
    /// The engine is shutting down.
    Shutdown,
    /// The handler left more than `limit` bytes unconsumed.
    InputLimit {
        /// The configured [`crate::Config::max_unconsumed`].
        limit: usize,
    },
    /// A receive or send failed with this OS error (for example ECONNRESET
    /// or EPIPE).
    Error(i32),
    /// The peer announced a frame larger than the limit; nothing of that
    /// size was allocated.
    FrameTooLarge {
        /// The size the peer declared (for a line: the bytes seen so far).
        declared: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The peer's bytes are not valid frames for the connection's framing.
    BadFrame(String),
    /// A broadcast or `send_to` found more than `limit` bytes of output
    /// already queued for this connection (a consumer slower than the
    /// traffic sent to it); the queue was dropped.
    OutputLimit {
        /// The configured [`crate::Config::max_queued_output`].
        limit: usize,
    },
    /// No traffic either way for `Config::idle_timeout`.
    IdleTimeout,
    /// A partial message did not complete within `Config::read_timeout`
    /// (for example a slowloris peer sending one byte a second).
    ReadTimeout,
}

impl CloseReason {
    /// The reason for a failed receive or send (EIO when the error carries
    /// no errno).
    pub(crate) fn from_io(e: &io::Error) -> CloseReason {
        CloseReason::Error(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// Whether a close for this reason is graceful: once queued output is
    /// handed to the kernel, the write side is shut down and the connection
    /// lingers until the peer closes (so unread input cannot turn the close
    /// into a reset). Every reason but an I/O error or the input limit is;
    /// those close as soon as the queued output is handed over.
    pub(crate) fn flushes(&self) -> bool {
        !matches!(self, CloseReason::Error(_) | CloseReason::InputLimit { .. })
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Local => f.write_str("closed by handler"),
            CloseReason::Shutdown => f.write_str("server shutting down"),
            CloseReason::InputLimit { limit } => {
                write!(f, "more than {limit} unconsumed input bytes")
            }
            CloseReason::Error(errno) => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))
            }
            CloseReason::FrameTooLarge { declared, limit } => {
                write!(
                    f,
                    "frame of {declared} bytes exceeds the limit of {limit} bytes"
                )
            }
            CloseReason::BadFrame(why) => write!(f, "bad frame: {why}"),
            CloseReason::OutputLimit { limit } => {
                write!(
                    f,
                    "more than {limit} bytes of output queued (slow consumer)"
                )
            }
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::ReadTimeout => {
                f.write_str("read timeout: a message did not complete in time")
            }
        }
    }
}

/// User code that serves connections. See the module docs for the contract.
pub trait Handler {
    /// The worker is about to serve; called once, on the worker's thread,
    /// before any connection. May start outbound connections.
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// An outbound connection asked for with `tag` could not be made; `err`
    /// is the failure of the last address tried.
    fn on_connect_failed(&mut self, tag: u64, err: &ConnectError) {
        let _ = (tag, err);
    }

    /// A connection was accepted, or an outbound one connected. May send a
    /// greeting or close at once.
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// Bytes arrived (with any earlier unconsumed bytes in front). Returns how
    /// many were consumed; the rest is presented again with the next bytes.
    fn on_data(&mut self, conn: &mut Conn<'_>, data: &[u8]) -> usize;

    /// The connection is closed; `id` will not be seen again.
    fn on_close(&mut self, id: ConnId, reason: &CloseReason) {
        let _ = (id, reason);
    }
}

/// The part of a connection both backends share: its socket, its queued
/// output and its held-back input.
#[derive(Debug)]
pub(crate) struct ConnCore {
    pub(crate) id: ConnId,
    pub(crate) sock: Socket,
    pub(crate) backend: Backend,
    /// Bytes queued by the handler and not yet handed to the kernel.
    pub(crate) out: Vec<u8>,
    /// Bytes presented to the handler and not consumed.
    pub(crate) held: Vec<u8>,
    /// The bytes of the current send; `sent` of them are written. On
    /// io_uring the kernel reads `sending` while a send is in flight, so the
    /// worker touches it only when none is.
    sending: Vec<u8>,
    sent: usize,
    /// Listed in the worker's dirty list (output or a close waits for the
    /// end of the batch).
    dirty: bool,
    /// The handler asked to close (or the peer ended the stream): deliver no
    /// more input, close once `out` is flushed.
    pub(crate) closing: Option<CloseReason>,
    /// For an outbound connection, what it keeps of its request (boxed:
    /// accepted connections, the many, carry only an empty pointer).
    outbound: Option<Box<Outbound>>,
    /// Receiving is paused: more than the high watermark is queued.
    pub(crate) paused: bool,
    /// Bytes written to the socket so far.
    written: u64,
    /// `written` at the last write-timeout check, and when a check first
    /// found no progress since (see `write_stalled`).
    write_mark: u64,
    stalled_since: Option<std::time::Instant>,
    /// Input timing for idle and read timeouts; only when they are
    /// configured (boxed: a connection without them does not pay for it).
    pub(crate) clock: Option<Box<InputClock>>,
}

/// When a connection's input arrived, for idle and read timeouts.
#[derive(Debug)]
pub(crate) struct InputClock {
    /// When input last arrived or queued output last drained (or the
    /// connection opened).
    pub(crate) last_active: std::time::Instant,
    /// When the partial message now held back began; `None` when nothing
    /// is held.
    pub(crate) partial_since: Option<std::time::Instant>,
    /// A partial message began during the last delivery and no read-timeout
    /// entry is queued for this connection (the worker queues one and clears
    /// this).
    pub(crate) partial_started: bool,
    /// A read-timeout entry is queued for this connection (at most one is;
    /// when it expires early it is re-queued for the current message).
    pub(crate) read_queued: std::cell::Cell<bool>,
}

impl InputClock {
    pub(crate) fn new() -> InputClock {
        InputClock {
            last_active: std::time::Instant::now(),
            partial_since: None,
            partial_started: false,
            read_queued: std::cell::Cell::new(false),
        }
    }
}

/// What became of a broadcast or directed message at one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued: flush the connection.
    Queued,
    /// Not for this connection (or it is closing).
    Skipped,
    /// Its output queue is full: tear the connection down now.
    OverLimit,
}

/// What an outbound connection keeps of the request that made it.
#[derive(Debug)]
struct Outbound {
    tag: u64,
    /// When the connection was established.
    opened: std::time::Instant,
    /// The request, when the connection is to be kept up (re-made after a
    /// close).
    origin: Option<ConnectRequest>,
}

/// Buffers larger than this are released rather than kept for reuse once
/// they are empty, so one large transfer does not pin memory for the life of
/// an otherwise idle connection.
pub(crate) const KEEP_CAPACITY: usize = 64 << 10;

impl ConnCore {
    /// A connection's shared state; `timed`: idle or read timeouts are
    /// configured (its input is timed).
    pub(crate) fn new(id: ConnId, sock: Socket, backend: Backend, timed: bool) -> ConnCore {
        ConnCore {
            id,
            sock,
            backend,
            out: Vec::new(),
            held: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            dirty: false,
            closing: None,
            outbound: None,
            paused: false,
            written: 0,
            write_mark: 0,
            stalled_since: None,
            clock: timed.then(|| Box::new(InputClock::new())),
        }
    }

    /// Remember the request that made this (outbound) connection.
    pub(crate) fn set_origin(&mut self, origin: Option<ConnectRequest>) {
        self.outbound = origin.map(|r| {
            let tag = r.tag;
            let keep = r.persistent;
            Box::new(Outbound {
                tag,
                opened: std::time::Instant::now(),
                origin: keep.then_some(r),
            })
        });
    }

    /// The request to make again once this connection has closed, if it is
    /// to be kept up (taken: asked once), with its wait before the attempt.
    pub(crate) fn take_origin(&mut self) -> Option<(std::time::Duration, ConnectRequest)> {
        let o = self.outbound.as_mut()?;
        let lived = o.opened.elapsed();
        o.origin.take().map(|req| req.after_close(lived))
    }

    /// Receiving resumes after a pause: the time spent paused was the
    /// server's doing (it stopped reading), so idle and read timeouts count
    /// from now.
    pub(crate) fn resume(&mut self) {
        self.paused = false;
        if let Some(c) = self.clock.as_deref_mut() {
            let now = std::time::Instant::now();
            c.last_active = now;
            if c.partial_since.is_some() {
                c.partial_since = Some(now);
            }
        }
    }

    /// Output starts being watched against the write timeout.
    pub(crate) fn watch_writes(&mut self) {
        self.write_mark = self.written;
        self.stalled_since = None;
    }

    /// A write-timeout check at `now`: whether the queued output has made no
    /// progress for `timeout`. Progress is counted in bytes between checks,
    /// so the send path reads no clock; a stall is timed from the first
    /// check that saw none (so it is reported within one check interval
    /// after `timeout`).
    pub(crate) fn write_stalled(
        &mut self,
        now: std::time::Instant,
        timeout: std::time::Duration,
    ) -> bool {
        if self.written != self.write_mark {
            self.write_mark = self.written;
            self.stalled_since = None;
            return false;
        }
        let since = *self.stalled_since.get_or_insert(now);
        now.duration_since(since) >= timeout
    }

    /// Bytes queued and not yet written to the socket.
    pub(crate) fn queued(&self) -> usize {
        self.out.len() + self.unsent().len()
    }

    /// The bytes of the current send not yet written.
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.sending[self.sent..]
    }

    /// Record `n` more bytes written; `true` once the current send is done.
    /// Output is activity: while any is queued the connection is not idle,
    /// and when the last of it is written the idle clock restarts, so a
    /// connection whose output just drained is not closed as idle at once.
    pub(crate) fn advance(&mut self, n: usize) -> bool {
        self.written += n as u64;
        self.sent = (self.sent + n).min(self.sending.len());
        let done = self.sent == self.sending.len();
        if n > 0 && done && self.out.is_empty() {
            if let Some(c) = self.clock.as_deref_mut() {
                c.last_active = std::time::Instant::now();
            }
        }
        done
    }

    /// Whether part of the current send is still unwritten.
    pub(crate) fn send_pending(&self) -> bool {
        self.sent < self.sending.len()
    }

    /// Make the next send current: once the current one is done, recycle its
    /// buffer and take everything queued since, in order. Returns whether
    /// there is anything to write.
    pub(crate) fn next_send(&mut self) -> bool {
        if !self.send_pending() {
            self.sending.clear();
            self.sent = 0;
            if self.sending.capacity() > KEEP_CAPACITY {
                self.sending = Vec::new();
            }
            if !self.out.is_empty() {
                std::mem::swap(&mut self.sending, &mut self.out);
            }
        }
        self.send_pending()
    }

    /// Queue a broadcast or directed message on this connection: unless it
    /// is `except`, it is `to` (when given), and it is not closing. Returns
    /// whether the bytes were queued; when they would take the queued output
    /// past `limit`, nothing is queued, the connection is marked closing
    /// with [`CloseReason::OutputLimit`] and the caller must tear it down.
    pub(crate) fn take_message(
        &mut self,
        except: Option<ConnId>,
        to: Option<ConnId>,
        bytes: &[u8],
        limit: usize,
    ) -> Delivery {
        if self.closing.is_some() || Some(self.id) == except || to.is_some_and(|t| t != self.id) {
            return Delivery::Skipped;
        }
        if self.queued().saturating_add(bytes.len()) > limit {
            self.closing = Some(CloseReason::OutputLimit { limit });
            return Delivery::OverLimit;
        }
        self.out.extend_from_slice(bytes);
        Delivery::Queued
    }

    /// Put `key` on the worker's dirty list once.
    pub(crate) fn mark_dirty(&mut self, key: usize, list: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            list.push(key);
        }
    }

    /// Take the connection off the dirty list (the worker is flushing it).
    pub(crate) fn clear_dirty(&mut self) {
        self.dirty = false;
    }

    /// Present `data` to the handler (after any held-back bytes) and keep
    /// what it did not consume. Returns the close reason if the held-back
    /// bytes exceed `limit`.
    pub(crate) fn deliver<H: Handler + ?Sized>(
        &mut self,
        handler: &mut H,
        data: &[u8],
        limit: usize,
        env: Env<'_>,
    ) -> Result<(), CloseReason> {
        if self.closing.is_some() {
            return Ok(());
        }
        let was_empty = self.held.is_empty();
        let result = self.present(handler, data, limit, env);
        // The clock is read only for idle and read timeouts.
        let (held, clock) = (self.held.len(), self.clock.as_deref_mut());
        if let Some(c) = clock {
            let now = std::time::Instant::now();
            c.last_active = now;
            if held == 0 {
                c.partial_since = None;
            } else if was_empty || held <= data.len() {
                // A message began in this delivery: nothing was held before,
                // or the handler consumed all that was (held now is only
                // new bytes), so the earlier message completed.
                c.partial_since = Some(now);
                if !c.read_queued.get() {
                    c.read_queued.set(true);
                    c.partial_started = true;
                }
            }
        }
        result
    }

    fn present<H: Handler + ?Sized>(
        &mut self,
        handler: &mut H,
        data: &[u8],
        limit: usize,
        env: Env<'_>,
    ) -> Result<(), CloseReason> {
        if self.held.is_empty() {
            // Fast path: hand the kernel's buffer over as it is.
            let n = handler
                .on_data(&mut Conn { core: self, env }, data)
                .min(data.len());
            if n < data.len() {
                self.held.extend_from_slice(&data[n..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.held);
            buf.extend_from_slice(data);
            let n = handler
                .on_data(&mut Conn { core: self, env }, &buf)
                .min(buf.len());
            buf.drain(..n);
            if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
                buf = Vec::new();
            }
            self.held = buf;
        }
        if self.held.len() > limit {
            return Err(CloseReason::InputLimit { limit });
        }
        Ok(())
    }
}

/// What a callback can reach besides its connection: the worker's queue of
/// requests (carried out after the callback) and the bus to other workers.
pub(crate) struct Env<'a> {
    pub(crate) requests: &'a mut Vec<Command>,
    pub(crate) bus: &'a Bus,
    pub(crate) worker: usize,
}

impl Env<'_> {
    fn connect(
        &mut self,
        addrs: &[SocketAddr],
        timeout: std::time::Duration,
        tag: u64,
        persistent: bool,
    ) {
        let req = ConnectRequest::new(addrs.to_vec(), timeout, tag, persistent);
        self.requests.push(Command::Connect(req));
    }

    fn broadcast(&mut self, except: Option<ConnId>, bytes: &[u8]) {
        self.bus
            .broadcast(self.worker, except, Arc::from(bytes), self.requests);
    }

    fn send_to(&mut self, to: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        self.bus
            .send_to(self.worker, to, Arc::from(bytes), self.requests)
    }
}

/// A handle on one connection, lent to the handler during a callback.
pub struct Conn<'a> {
    pub(crate) core: &'a mut ConnCore,
    pub(crate) env: Env<'a>,
}

/// The worker, lent to [`Handler::on_start`].
pub struct Ctx<'a> {
    pub(crate) env: Env<'a>,
}

impl Ctx<'_> {
    /// Connect out to `addrs` (tried in order, each for at most `timeout`);
    /// see [`Conn::connect`].
    pub fn connect(&mut self, addrs: &[SocketAddr], timeout: std::time::Duration, tag: u64) {
        self.env.connect(addrs, timeout, tag, false);
    }

    /// Like [`Ctx::connect`], but the engine keeps the connection up: when it
    /// closes, or every address failed, it connects again after a backoff
    /// that starts at 100 ms and doubles up to 5 s (it starts over once a
    /// connection has stayed up for a second, so a peer that accepts and
    /// closes at once is not hammered). Every failed round is still reported
    /// to `on_connect_failed`. The connection is kept up until the engine
    /// shuts down. A timeout is clamped to 1 ms ..= 24 h.
    pub fn connect_persistent(
        &mut self,
        addrs: &[SocketAddr],
        timeout: std::time::Duration,
        tag: u64,
    ) {
        self.env.connect(addrs, timeout, tag, true);
    }

    /// Queue `bytes` on every open connection of the node.
    pub fn broadcast(&mut self, bytes: &[u8]) {
        self.env.broadcast(None, bytes);
    }

    /// The index of this worker.
    pub fn worker(&self) -> usize {
        self.env.worker
    }
}

impl Conn<'_> {
    /// The connection's stable id.
    pub fn id(&self) -> ConnId {
        self.core.id
    }

    /// For a connection this worker made with [`Conn::connect`] or
    /// [`Ctx::connect`], the tag given then; `None` for accepted ones.
    pub fn tag(&self) -> Option<u64> {
        self.core.outbound.as_ref().map(|o| o.tag)
    }

    /// Connect out to `addrs`, tried in order, each attempt for at most
    /// `timeout`. Returns at once; the new connection arrives in `on_open`
    /// with [`Conn::tag`] `== Some(tag)`, or the failure in
    /// `on_connect_failed(tag, ..)`. Addresses are not resolved here (the
    /// worker never blocks on DNS): resolve endpoints first, e.g. with
    /// `Endpoint::resolve`.
    pub fn connect(&mut self, addrs: &[SocketAddr], timeout: std::time::Duration, tag: u64) {
        self.env.connect(addrs, timeout, tag, false);
    }

    /// Queue `bytes` on every open connection of the node, on every worker
    /// (this one included), after what each already has queued. The bytes
    /// are handed out after the callback returns, so on this connection they
    /// follow anything the same callback queues with [`Conn::send`].
    /// A connection whose queue would pass `Config::max_queued_output` is
    /// closed instead ([`CloseReason::OutputLimit`]).
    pub fn broadcast(&mut self, bytes: &[u8]) {
        self.env.broadcast(None, bytes);
    }

    /// [`Conn::broadcast`] to every connection but this one.
    pub fn broadcast_others(&mut self, bytes: &[u8]) {
        let me = self.core.id;
        self.env.broadcast(Some(me), bytes);
    }

    /// Queue `bytes` on connection `to`, on whichever worker owns it. An id
    /// that is not open now is an error; `Ok` does not promise delivery: if
    /// `to` is closing, or closes before the bytes reach its worker, they
    /// are dropped with it.
    pub fn send_to(&mut self, to: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        self.env.send_to(to, bytes)
    }

    /// Queue bytes to send, in order after everything queued before. Ignored
    /// once the connection is closing.
    pub fn send(&mut self, data: &[u8]) {
        if self.core.closing.is_none() {
            self.core.out.extend_from_slice(data);
        }
    }

    /// Close after everything queued has been sent; no more input is
    /// delivered.
    pub fn close(&mut self) {
        if self.core.closing.is_none() {
            self.core.closing = Some(CloseReason::Local);
        }
    }

    /// Close after everything queued has been sent, reporting `reason` to
    /// `on_close` (for example a protocol error the handler detected).
    pub fn close_with(&mut self, reason: CloseReason) {
        if self.core.closing.is_none() {
            self.core.closing = Some(reason);
        }
    }

    /// Whether [`Conn::close`] was called (or the peer ended the stream).
    pub fn is_closing(&self) -> bool {
        self.core.closing.is_some()
    }

    /// Bytes queued by the handler and not yet written to the socket (the
    /// unwritten rest of the send in progress included).
    pub fn queued(&self) -> usize {
        self.core.queued()
    }

    /// The peer's address (`getpeername(2)`).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sock_addr(self.core.sock.peer_addr()?)
    }

    /// The local address of the connection (`getsockname(2)`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_addr(self.core.sock.local_addr()?)
    }

    /// The connection's socket, to read or set options (TCP_NODELAY,
    /// SO_RCVBUF, SO_SNDBUF, ...) with socket2. Do not read, write or close
    /// it directly: the engine owns its I/O.
    pub fn socket(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.core.sock)
    }

    /// The backend serving this connection.
    pub fn backend(&self) -> Backend {
        self.core.backend
    }
}

fn sock_addr(a: socket2::SockAddr) -> io::Result<SocketAddr> {
    a.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owns what an `Env` borrows, for calls outside a worker.
    #[derive(Default)]
    struct TestEnv {
        requests: Vec<Command>,
        bus: Bus,
    }

    impl TestEnv {
        fn env(&mut self) -> Env<'_> {
            Env {
                requests: &mut self.requests,
                bus: &self.bus,
                worker: 0,
            }
        }
    }

    /// Consumes whole 4-byte frames only and records them.
    struct Frames(Vec<Vec<u8>>);

    impl Handler for Frames {
        fn on_data(&mut self, _conn: &mut Conn<'_>, data: &[u8]) -> usize {
            let whole = data.len() / 4 * 4;
            for f in data[..whole].chunks(4) {
                self.0.push(f.to_vec());
            }
            whole
        }
    }

    fn core() -> ConnCore {
        let sock = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        ConnCore::new(ConnId::new(0, 1, 1), sock, Backend::Uring, true)
    }

    /// The read timeout counts from the start of the message now held: when
    /// a delivery completes the held message and leaves the start of the
    /// next, the clock restarts; while one message stays incomplete, it does
    /// not. One read-timeout entry is asked for per connection.
    #[test]
    fn read_clock_restarts_when_a_message_completes() {
        let mut t = TestEnv::default();
        let mut c = core();
        let mut h = Frames(Vec::new());
        c.deliver(&mut h, &[1, 2], 1 << 20, t.env()).expect("ok");
        let clock = |c: &ConnCore| c.clock.as_deref().expect("timed").partial_since;
        let first = clock(&c).expect("a message began");
        let started = |c: &mut ConnCore| {
            std::mem::take(&mut c.clock.as_deref_mut().expect("timed").partial_started)
        };
        assert!(started(&mut c));
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Still the same message: the clock keeps its start.
        c.deliver(&mut h, &[3], 1 << 20, t.env()).expect("ok");
        assert_eq!(clock(&c), Some(first));
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Completes it and starts the next one.
        c.deliver(&mut h, &[4, 5], 1 << 20, t.env()).expect("ok");
        let second = clock(&c).expect("the next message began");
        assert!(second > first, "the clock restarted");
        assert!(!started(&mut c), "one entry is already queued");
        c.deliver(&mut h, &[6, 7, 8], 1 << 20, t.env()).expect("ok");
        assert_eq!(clock(&c), None, "nothing held");
        assert_eq!(h.0, vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
    }

    #[test]
    fn frames_split_across_reads_are_seen_whole() {
        let mut t = TestEnv::default();
        let stream: Vec<u8> = (0u8..40).collect();
        for split in 1..stream.len() {
            let mut c = core();
            let mut h = Frames(Vec::new());
            for chunk in stream.chunks(split) {
                c.deliver(&mut h, chunk, 1024, t.env())
                    .expect("under limit");
            }
            let got: Vec<u8> = h.0.concat();
            assert_eq!(got, stream, "split {split}");
            assert!(c.held.is_empty());
        }
    }

    #[test]
    fn too_much_unconsumed_input_closes() {
        let mut t = TestEnv::default();
        struct Never;
        impl Handler for Never {
            fn on_data(&mut self, _c: &mut Conn<'_>, _d: &[u8]) -> usize {
                0
            }
        }
        let mut c = core();
        c.deliver(&mut Never, &[0; 8], 10, t.env())
            .expect("8 <= 10");
        assert_eq!(
            c.deliver(&mut Never, &[0; 8], 10, t.env()),
            Err(CloseReason::InputLimit { limit: 10 })
        );
    }

    #[test]
    fn over_consumption_is_clamped_and_closing_drops_input() {
        let mut t = TestEnv::default();
        struct Greedy;
        impl Handler for Greedy {
            fn on_data(&mut self, c: &mut Conn<'_>, d: &[u8]) -> usize {
                c.send(d);
                usize::MAX
            }
        }
        let mut c = core();
        c.deliver(&mut Greedy, b"abc", 10, t.env()).expect("ok");
        assert_eq!(c.out, b"abc");
        assert!(c.held.is_empty());
        Conn {
            core: &mut c,
            env: t.env(),
        }
        .close();
        c.deliver(&mut Greedy, b"def", 10, t.env()).expect("ok");
        assert_eq!(c.out, b"abc", "no delivery after close");
        Conn {
            core: &mut c,
            env: t.env(),
        }
        .send(b"x");
        assert_eq!(c.out, b"abc", "send after close is ignored");
    }
}
#[cfg(test)]
mod size_guard {
    /// Every open connection carries a `ConnCore` in its worker's slab; the
    /// memory target is at most 256 bytes of server RSS per idle connection
    /// (measured with `ringnet bench hold`), which leaves ~170 bytes for
    /// this part. Optional state (outbound requests, input timing) is boxed
    /// so connections that do not use it do not pay for it.
    #[test]
    fn conn_core_stays_small() {
        let size = std::mem::size_of::<super::ConnCore>();
        println!("ConnCore: {size} bytes");
        assert!(size <= 176, "ConnCore grew to {size} bytes");
    }
}
