//! A connection's state as the engine core sees it, without I/O: its phase
//! (open, paused, closing, lingering, closed), its queued output and the
//! current send, the input the handler left unconsumed, and the clocks the
//! timeouts read. Both drivers serve the same `ConnCore`; every decision
//! about it is a method that takes what happened (and `now`, where time
//! matters) and returns what to do, so it is unit-tested without sockets.

use std::time::Instant;

use socket2::Socket;

use crate::connect::ConnectRequest;
use crate::reason::CloseReason;
use crate::tls::session::{Fed, TlsConn};
use crate::token::ConnId;

/// Where a connection is in its life. Transitions:
///
/// ```text
///  Open <-> Paused            queued output above / below the watermarks
///  Open|Paused -> Closing     Conn::close, end of stream, a timeout, shutdown
///  Closing -> Lingering       output handed over, write side shut down
///  any -> Closed              teardown (error, linger over, or graceful end)
/// ```
///
/// The handler is told (`on_close`) when the connection enters `Lingering`
/// or `Closed`, whichever comes first; nothing is called for it after that.
///
/// The reason of a closing or lingering connection is kept with what only
/// some connections need ([`ConnCore::close_reason`]), so the phase is a
/// byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Input is delivered to the handler.
    Open,
    /// Receiving is paused: more than the high watermark of output is
    /// queued.
    Paused,
    /// No more input is delivered; once the queued output is handed over the
    /// connection lingers (graceful reasons) or closes.
    Closing,
    /// Output handed over and the write side shut down; input is read and
    /// discarded until the peer closes or the linger time is up. The
    /// handler has been told.
    Lingering,
    /// Torn down: the handler has been told; the slot is freed once no
    /// operation on it is in flight.
    Closed,
}

/// What a callback or an event asks of a connection's receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    More,
    /// Stop reading (paused); what was already taken is still delivered.
    Enough,
    /// Stop delivering: the connection is being torn down.
    Stop,
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

/// The backpressure decision after output was queued or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pressure {
    /// Nothing changes.
    Steady,
    /// Above the high watermark: stop receiving.
    Pause,
    /// At or below the low watermark again: receive again.
    Resume,
}

/// The part of a connection both drivers share. Kept small (a unit test
/// bounds it): state few connections need (held-back input, an outbound
/// request) sits behind one optional box.
#[derive(Debug)]
pub(crate) struct ConnCore {
    pub(crate) id: ConnId,
    /// The plain descriptor; `None` for a connection io_uring accepted
    /// straight into its registered-file table (`Config::accept_direct`),
    /// which the driver reaches by table index alone.
    pub(crate) sock: Option<Socket>,
    pub(crate) phase: Phase,
    /// Output queued by the handler: `out[sent..]` is not yet written
    /// (epoll writes from it in place; io_uring lends the whole buffer to
    /// the kernel and starts a new one).
    pub(crate) out: Vec<u8>,
    sent: usize,
    /// Bytes lent to the kernel in a send in flight (io_uring).
    lent: u32,
    /// Bytes written to the socket so far, wrapping (write-timeout
    /// progress is compared between checks at most a second apart).
    pub(crate) written: u32,
    /// The index of the listener it came through; [`OUTBOUND`] for an
    /// outbound connection.
    listener: u16,
    /// Input timing for idle and read timeouts; only when they are
    /// configured (boxed: a connection without them does not pay for it).
    pub(crate) clock: Option<Box<InputClock>>,
    extra: Option<Box<Extra>>,
}

/// `ConnCore::listener` of an outbound connection.
const OUTBOUND: u16 = u16::MAX;

/// What only some connections need.
#[derive(Debug, Default)]
struct Extra {
    /// Bytes presented to the handler and not consumed.
    held: Vec<u8>,
    /// For an outbound connection, what it keeps of its request.
    outbound: Option<Outbound>,
    /// The TLS session of a connection from a TLS listener.
    tls: Option<Box<TlsConn>>,
    /// Why a closing or lingering connection closes.
    reason: Option<CloseReason>,
}

/// When a connection's input arrived, for idle and read timeouts.
#[derive(Debug)]
pub(crate) struct InputClock {
    /// When input last arrived or queued output last drained (or the
    /// connection opened).
    pub(crate) last_active: Instant,
    /// When the partial message now held back began; `None` when nothing
    /// is held.
    pub(crate) partial_since: Option<Instant>,
    /// A read-timeout entry is queued for this connection (at most one is;
    /// when it expires early it is re-queued for the current message).
    pub(crate) read_queued: bool,
}

impl InputClock {
    pub(crate) fn new(now: Instant) -> InputClock {
        InputClock {
            last_active: now,
            partial_since: None,
            read_queued: false,
        }
    }
}

/// What an outbound connection keeps of the request that made it.
#[derive(Debug)]
struct Outbound {
    tag: u64,
    /// When the connection was established.
    opened: Instant,
    /// The request, when the connection is to be kept up (re-made after a
    /// close).
    origin: Option<ConnectRequest>,
}

/// Buffers larger than this are released rather than kept for reuse once
/// they are empty, so one large transfer does not pin memory for the life of
/// an otherwise idle connection.
pub(crate) const KEEP_CAPACITY: usize = 64 << 10;

/// The most one send hands the kernel at once (a send's length is 32 bits).
pub(crate) const MAX_SEND: usize = 1 << 30;

impl ConnCore {
    /// A connection's shared state; `timed`: when idle or read timeouts are
    /// configured, the time its input is timed from.
    /// A connection that came through listener `listener` (`None`:
    /// connected out); `timed`: input timeouts are on, starting now.
    pub(crate) fn new(
        id: ConnId,
        sock: Option<Socket>,
        listener: Option<u16>,
        timed: Option<Instant>,
    ) -> ConnCore {
        ConnCore {
            id,
            sock,
            phase: Phase::Open,
            out: Vec::new(),
            sent: 0,
            lent: 0,
            written: 0,
            listener: listener.unwrap_or(OUTBOUND),
            clock: timed.map(|now| Box::new(InputClock::new(now))),
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Input is no longer delivered (closing, lingering or closed).
    #[inline]
    pub(crate) fn is_closing(&self) -> bool {
        !matches!(self.phase, Phase::Open | Phase::Paused)
    }

    /// Receiving is paused by backpressure.
    #[inline]
    pub(crate) fn is_paused(&self) -> bool {
        self.phase == Phase::Paused
    }

    /// Torn down (waiting only for operations in flight).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether a receive should be armed now: open and not paused, or
    /// lingering (which reads and discards until the peer closes).
    #[inline]
    pub(crate) fn wants_input(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Lingering)
    }

    /// How the receiving side goes on after a delivery.
    #[inline]
    pub(crate) fn flow(&self) -> Flow {
        match self.phase {
            Phase::Open | Phase::Closing | Phase::Lingering => Flow::More,
            Phase::Paused => Flow::Enough,
            Phase::Closed => Flow::Stop,
        }
    }

    /// Start closing for `reason` (no more input; output flushed first).
    /// No effect once closing.
    #[inline]
    pub(crate) fn close(&mut self, reason: CloseReason) {
        if !self.is_closing() {
            // A graceful close of a TLS session says so first.
            if reason.flushes() {
                if let Some(tls) = self.extra.as_deref_mut().and_then(|e| e.tls.as_deref_mut()) {
                    if !tls.is_handshaking() {
                        tls.close_notify(&mut self.out);
                    }
                }
            }
            self.phase = Phase::Closing;
            self.extra().reason = Some(reason);
        }
    }

    /// Queue `bytes` for the peer: as they are, or encrypted on a TLS
    /// connection.
    #[inline]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        match self.extra.as_deref_mut().and_then(|e| e.tls.as_deref_mut()) {
            None => self.out.extend_from_slice(bytes),
            Some(tls) => tls.encrypt(bytes, &mut self.out),
        }
    }

    /// Make this a TLS connection with `session`.
    pub(crate) fn set_tls(&mut self, session: TlsConn) {
        self.extra().tls = Some(Box::new(session));
    }

    /// The TLS session, on a TLS connection.
    #[inline]
    pub(crate) fn tls(&self) -> Option<&TlsConn> {
        self.extra.as_deref()?.tls.as_deref()
    }

    /// A TLS connection whose handshake has not completed.
    #[inline]
    pub(crate) fn tls_handshaking(&self) -> bool {
        self.tls().is_some_and(TlsConn::is_handshaking)
    }

    /// On a TLS connection, take ciphertext `input` (see `TlsConn::feed`):
    /// plaintext into `plain`, the session's records into the output.
    /// `None` on a plain connection.
    #[inline]
    pub(crate) fn feed_tls(
        &mut self,
        input: &[u8],
        plain: &mut Vec<u8>,
    ) -> Option<Result<Fed, String>> {
        let tls = self.extra.as_deref_mut()?.tls.as_deref_mut()?;
        Some(tls.feed(input, plain, &mut self.out))
    }

    /// The reason a closing, lingering connection gives.
    pub(crate) fn close_reason(&self) -> CloseReason {
        match self.phase {
            Phase::Closing | Phase::Lingering => self
                .extra
                .as_deref()
                .and_then(|e| e.reason.clone())
                .unwrap_or(CloseReason::Local),
            _ => CloseReason::Local,
        }
    }

    /// Closing → lingering: output handed over, the handler told; the
    /// reason stays.
    pub(crate) fn linger(&mut self) {
        self.phase = Phase::Lingering;
    }

    /// The bytes presented to the handler and not consumed.
    #[inline]
    pub(crate) fn held(&self) -> &[u8] {
        self.extra.as_deref().map_or(&[], |e| &e.held)
    }

    /// Take the held-back bytes (to present them with new ones).
    #[inline]
    pub(crate) fn take_held(&mut self) -> Vec<u8> {
        self.extra
            .as_deref_mut()
            .map(|e| std::mem::take(&mut e.held))
            .unwrap_or_default()
    }

    /// Keep `buf` as the held-back bytes.
    #[inline]
    pub(crate) fn put_held(&mut self, buf: Vec<u8>) {
        if !buf.is_empty() || buf.capacity() > 0 {
            self.extra().held = buf;
        }
    }

    /// Remember the request that made this (outbound) connection.
    pub(crate) fn set_origin(&mut self, origin: Option<ConnectRequest>, now: Instant) {
        if let Some(r) = origin {
            let keep = r.persistent;
            self.extra().outbound = Some(Outbound {
                tag: r.tag,
                opened: now,
                origin: keep.then_some(r),
            });
        }
    }

    /// The plain descriptor, or why there is none.
    pub(crate) fn socket(&self) -> std::io::Result<&Socket> {
        self.sock.as_ref().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "accepted straight into io_uring's registered-descriptor table \
                 (accept_direct): the connection has no plain descriptor",
            )
        })
    }

    /// The plain descriptor, or -1 for a connection in the registered table
    /// alone (the driver names it by index then).
    #[inline]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    /// The index of the listener the connection came through (`None`:
    /// connected out).
    #[inline]
    pub(crate) fn listener(&self) -> Option<usize> {
        (self.listener != OUTBOUND).then_some(usize::from(self.listener))
    }

    /// For an outbound connection, the tag its request carried.
    pub(crate) fn tag(&self) -> Option<u64> {
        self.extra.as_deref()?.outbound.as_ref().map(|o| o.tag)
    }

    /// The request to make again once this connection has closed, if it is
    /// to be kept up (taken: asked once), with its wait before the attempt.
    pub(crate) fn take_origin(&mut self) -> Option<(std::time::Duration, ConnectRequest)> {
        let o = self.extra.as_deref_mut()?.outbound.as_mut()?;
        let lived = o.opened.elapsed();
        o.origin.take().map(|req| req.after_close(lived))
    }

    /// The backpressure decision for `high`/`low` watermarks; applies it to
    /// the phase. Resuming restarts the input clocks: the time spent paused
    /// was the server's doing.
    #[inline]
    pub(crate) fn pressure(
        &mut self,
        high: usize,
        low: usize,
        now: impl FnOnce() -> Instant,
    ) -> Pressure {
        let queued = self.queued();
        match self.phase {
            Phase::Open if queued > high => {
                self.phase = Phase::Paused;
                Pressure::Pause
            }
            Phase::Paused if queued <= low => {
                self.phase = Phase::Open;
                if let Some(c) = self.clock.as_deref_mut() {
                    let now = now();
                    c.last_active = now;
                    if c.partial_since.is_some() {
                        c.partial_since = Some(now);
                    }
                }
                Pressure::Resume
            }
            _ => Pressure::Steady,
        }
    }

    /// Bytes queued and not yet written to the socket (lent ones included).
    #[inline]
    pub(crate) fn queued(&self) -> usize {
        self.out.len() - self.sent + self.lent as usize
    }

    /// Output waits to be handed to the kernel (and none is lent to it).
    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        self.lent == 0 && self.sent < self.out.len()
    }

    /// The output not yet written, to write in place (epoll).
    #[inline]
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` bytes of [`ConnCore::unsent`] were written. Output is activity:
    /// while any is queued the connection is not idle, and when the last of
    /// it is written the idle clock restarts (read from `now` only then), so
    /// a connection whose output just drained is not closed as idle at once.
    #[inline]
    pub(crate) fn wrote(&mut self, n: usize, now: impl FnOnce() -> Instant) {
        let n = n.min(self.out.len() - self.sent);
        self.written = self.written.wrapping_add(n as u32);
        self.sent += n;
        if self.sent == self.out.len() {
            self.sent = 0;
            self.out.clear();
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            }
            if n > 0 {
                self.drained(now);
            }
        }
    }

    /// Lend the queued output (at most [`MAX_SEND`] bytes) to the kernel;
    /// newer output queues in a new buffer. Comes back with
    /// [`ConnCore::returned`].
    #[inline]
    pub(crate) fn lend(&mut self) -> Vec<u8> {
        if self.sent > 0 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        let rest = if self.out.len() > MAX_SEND {
            self.out.split_off(MAX_SEND)
        } else {
            Vec::new()
        };
        let buf = std::mem::replace(&mut self.out, rest);
        self.lent = buf.len() as u32;
        buf
    }

    /// A reply of `len` bytes goes straight from a receive buffer: it
    /// counts as lent to the kernel from now (newer output queues behind
    /// it).
    #[inline]
    pub(crate) fn claim_reply(&mut self, len: u32) {
        self.lent = len;
    }

    /// A reply sent from a receive buffer wrote `n` of its `len` bytes;
    /// the rest (`len - n`) is sent next, from the same buffer.
    #[inline]
    pub(crate) fn reply_sent(&mut self, n: u32, len: u32, now: impl FnOnce() -> Instant) {
        self.written = self.written.wrapping_add(n);
        self.lent = len.saturating_sub(n);
        if self.lent == 0 && self.out.is_empty() && n > 0 {
            self.drained(now);
        }
    }

    /// No reply is in flight from a receive buffer after all (the
    /// connection closed before it was sent).
    #[inline]
    pub(crate) fn drop_reply(&mut self) {
        self.lent = 0;
    }

    /// The lent buffer is back with its first `n` bytes written. The rest
    /// goes next, before anything queued since; a fully written buffer is
    /// kept for the next output when nothing newer is queued.
    #[inline]
    pub(crate) fn returned(&mut self, mut buf: Vec<u8>, n: usize, now: impl FnOnce() -> Instant) {
        let n = n.min(buf.len());
        self.lent = 0;
        self.written = self.written.wrapping_add(n as u32);
        if n < buf.len() {
            buf.drain(..n);
            buf.extend_from_slice(&self.out[self.sent..]);
            self.out = buf;
            self.sent = 0;
            return;
        }
        if self.out.is_empty() {
            buf.clear();
            if buf.capacity() <= KEEP_CAPACITY {
                self.out = buf;
            }
            if n > 0 {
                self.drained(now);
            }
        }
    }

    /// Every queued byte is written: the idle clock restarts.
    #[inline]
    fn drained(&mut self, now: impl FnOnce() -> Instant) {
        if let Some(c) = self.clock.as_deref_mut() {
            c.last_active = now();
        }
    }

    /// Queue a broadcast or directed message on this connection: unless it
    /// is `except`, it is `to` (when given), and it is not closing. When the
    /// bytes would take the queued output past `limit`, nothing is queued,
    /// the connection is marked closing with [`CloseReason::OutputLimit`]
    /// and the caller must tear it down.
    pub(crate) fn take_message(
        &mut self,
        except: Option<ConnId>,
        to: Option<ConnId>,
        bytes: &[u8],
        limit: usize,
    ) -> Delivery {
        if self.is_closing() || Some(self.id) == except || to.is_some_and(|t| t != self.id) {
            return Delivery::Skipped;
        }
        if self.tls_handshaking() {
            // Not open to the handler yet.
            return Delivery::Skipped;
        }
        if self.queued().saturating_add(bytes.len()) > limit {
            self.close(CloseReason::OutputLimit { limit });
            return Delivery::OverLimit;
        }
        self.push(bytes);
        Delivery::Queued
    }

    /// Note a delivery at `now` that brought `len` bytes (`was_empty`:
    /// nothing was held before it). Returns whether a partial message began
    /// and no read-timeout entry is queued for it yet (the caller queues
    /// one).
    #[inline]
    pub(crate) fn note_input(&mut self, was_empty: bool, len: usize, now: Instant) -> bool {
        let held = self.held().len();
        let Some(c) = self.clock.as_deref_mut() else {
            return false;
        };
        c.last_active = now;
        if held == 0 {
            c.partial_since = None;
        } else if was_empty || held <= len {
            // A message began in this delivery: nothing was held before,
            // or the handler consumed all that was (held now is only new
            // bytes), so the earlier message completed.
            c.partial_since = Some(now);
            if !c.read_queued {
                c.read_queued = true;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
