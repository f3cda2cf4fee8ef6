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
//! * **Per-connection state.** [`Handler::State`] is what the handler keeps
//!   for each connection (a parser, a session). `on_open` makes it; the
//!   engine stores it in the connection's slot and lends it to every
//!   callback for that connection (no lookup), and hands it to `on_close`,
//!   after which it is dropped. `()` for a handler that keeps nothing.
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
//! * **Timers.** [`Conn::set_timer`] arms a timer for the connection
//!   ([`Handler::on_timer`]); [`Ctx::set_timer`] and [`Ctx::set_periodic`]
//!   arm worker timers ([`Handler::on_worker_timer`]). Both return a
//!   [`TimerKey`] that cancels them. Timers fire in deadline order on the
//!   worker's thread; a closing or closed connection's timers never fire.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::reason::CloseReason;

use crate::address::{Address, PeerCredentials};
use crate::bus::{Bus, Command, SendError};
use crate::config::Backend;
use crate::conn::{ConnCore, KEEP_CAPACITY};
use crate::connect::{ConnectError, ConnectRequest};
use crate::timer::{TimerKey, TimerQueue};
use crate::tls::TlsTarget;
use crate::token::ConnId;

/// User code that serves connections. See the module docs for the contract.
pub trait Handler {
    /// What the handler keeps for each connection: made by
    /// [`Handler::on_open`], stored beside the connection, lent to each of
    /// its callbacks, and given to [`Handler::on_close`] (then dropped).
    type State;

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

    /// A connection was accepted, or an outbound one connected: make its
    /// state. May send a greeting or close at once.
    fn on_open(&mut self, conn: &mut Conn<'_>) -> Self::State;

    /// Bytes arrived (with any earlier unconsumed bytes in front). Returns how
    /// many were consumed; the rest is presented again with the next bytes.
    fn on_data(&mut self, conn: &mut Conn<'_>, state: &mut Self::State, data: &[u8]) -> usize;

    /// The connection is closed; `id` will not be seen again, and `state`
    /// is dropped when this returns.
    fn on_close(&mut self, id: ConnId, state: Self::State, reason: &CloseReason) {
        let _ = (id, state, reason);
    }

    /// A timer this connection set with [`Conn::set_timer`] is due; `id` is
    /// the one given then. Never called once the connection has closed.
    fn on_timer(&mut self, conn: &mut Conn<'_>, state: &mut Self::State, id: u64) {
        let _ = (conn, state, id);
    }

    /// A worker timer set with [`Ctx::set_timer`] or [`Ctx::set_periodic`]
    /// is due; `id` is the one given then.
    fn on_worker_timer(&mut self, ctx: &mut Ctx<'_>, id: u64) {
        let _ = (ctx, id);
    }
}

/// Whose timer it is (the payload of the worker's timer queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerOwner {
    /// A connection's: due only while that connection (key and generation)
    /// is open.
    Conn { conn: ConnId, id: u64 },
    /// The worker's; repeating every `every_ns` nanoseconds when not 0.
    Worker { id: u64, every_ns: u64 },
}

/// The shortest period of a periodic timer: a shorter one would keep the
/// worker busy doing nothing else.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Present `data` to the handler (after any held-back bytes) and keep what
/// it did not consume. Input arriving once the connection is closing is
/// dropped. Returns whether a partial message began that needs a
/// read-timeout entry, or the close reason if the held-back bytes exceed
/// `limit`.
#[inline]
pub(crate) fn deliver<H: Handler + ?Sized>(
    core: &mut ConnCore,
    handler: &mut H,
    state: &mut H::State,
    data: &[u8],
    limit: usize,
    env: Env<'_>,
) -> Result<bool, CloseReason> {
    if core.is_closing() {
        return Ok(false);
    }
    let was_empty = core.held().is_empty();
    if was_empty {
        // Fast path: hand the kernel's buffer over as it is.
        let n = handler
            .on_data(&mut Conn { core, env }, state, data)
            .min(data.len());
        if n < data.len() {
            let mut buf = core.take_held();
            buf.extend_from_slice(&data[n..]);
            core.put_held(buf);
        }
    } else {
        let mut buf = core.take_held();
        buf.extend_from_slice(data);
        let n = handler
            .on_data(&mut Conn { core, env }, state, &buf)
            .min(buf.len());
        buf.drain(..n);
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = Vec::new();
        }
        core.put_held(buf);
    }
    if core.held().len() > limit {
        return Err(CloseReason::InputLimit { limit });
    }
    // The clock is read only for idle and read timeouts.
    if core.clock.is_some() {
        return Ok(core.note_input(was_empty, data.len(), std::time::Instant::now()));
    }
    Ok(false)
}

/// What a callback can reach besides its connection: the worker's queue of
/// requests (carried out after the callback) and the bus to other workers.
pub(crate) struct Env<'a> {
    pub(crate) requests: &'a mut Vec<Command>,
    /// The worker's timer queue.
    pub(crate) timers: &'a mut TimerQueue<TimerOwner>,
    pub(crate) backend: Backend,
    pub(crate) bus: &'a Bus,
    pub(crate) worker: usize,
    /// io_uring: the receive buffer lent to `on_data` now, which a reply
    /// may be sent straight from.
    pub(crate) lent: Option<&'a mut crate::reply::LentReply>,
}

impl Env<'_> {
    /// The same reach, for one more callback.
    pub(crate) fn reborrow(&mut self) -> Env<'_> {
        Env {
            requests: &mut *self.requests,
            timers: &mut *self.timers,
            backend: self.backend,
            bus: self.bus,
            worker: self.worker,
            lent: self.lent.as_deref_mut(),
        }
    }

    fn set_timer(&mut self, after: Duration, owner: TimerOwner) -> TimerKey {
        self.timers
            .arm(crate::timer::after(Instant::now(), after), owner)
    }

    fn cancel_timer(&mut self, key: TimerKey) -> bool {
        self.timers.cancel(key).is_some()
    }

    fn connect(
        &mut self,
        addrs: Vec<Address>,
        timeout: std::time::Duration,
        tag: u64,
        persistent: bool,
        tls: Option<&TlsTarget>,
    ) {
        let mut req = ConnectRequest::new(addrs, timeout, tag, persistent);
        req.tls = tls.cloned();
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
    /// Call [`Handler::on_worker_timer`] with `id` once, after `after`. The
    /// key cancels it. Timers fire in deadline order (ties in the order
    /// they were set), on this worker's thread; a worker keeps one kernel
    /// timer whatever the number of timers set.
    pub fn set_timer(&mut self, after: Duration, id: u64) -> TimerKey {
        self.env
            .set_timer(after, TimerOwner::Worker { id, every_ns: 0 })
    }

    /// Call [`Handler::on_worker_timer`] with `id` every `every` (at least
    /// [`MIN_PERIOD`]), first after `every`, until cancelled; the key stays
    /// the same.
    pub fn set_periodic(&mut self, every: Duration, id: u64) -> TimerKey {
        let every = every.max(MIN_PERIOD);
        let every_ns = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
        self.env
            .set_timer(every, TimerOwner::Worker { id, every_ns })
    }

    /// Cancel a timer; whether it was still pending.
    pub fn cancel_timer(&mut self, key: TimerKey) -> bool {
        self.env.cancel_timer(key)
    }

    /// Connect out to `addrs` (tried in order, each for at most `timeout`);
    /// see [`Conn::connect`].
    pub fn connect<A: Into<Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: std::time::Duration,
        tag: u64,
    ) {
        self.env
            .connect(addresses(addrs), timeout, tag, false, None);
    }

    /// Like [`Ctx::connect`], but the engine keeps the connection up: when it
    /// closes, or every address failed, it connects again after a backoff
    /// that starts at 100 ms and doubles up to 5 s (it starts over once a
    /// connection has stayed up for a second, so a peer that accepts and
    /// closes at once is not hammered). Every failed round is still reported
    /// to `on_connect_failed`. The connection is kept up until the engine
    /// shuts down. A timeout is clamped to 1 ms ..= 24 h.
    pub fn connect_persistent<A: Into<Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: std::time::Duration,
        tag: u64,
    ) {
        self.env.connect(addresses(addrs), timeout, tag, true, None);
    }

    /// [`Ctx::connect`] with TLS to `tls`'s server: the handler hears
    /// `on_open` once the handshake is over, or `on_connect_failed` with
    /// [`ConnectError::Tls`] if it fails (the certificate is always
    /// verified).
    pub fn connect_tls<A: Into<Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: std::time::Duration,
        tag: u64,
        tls: &TlsTarget,
    ) {
        self.env
            .connect(addresses(addrs), timeout, tag, false, Some(tls));
    }

    /// [`Ctx::connect_persistent`] with TLS (see [`Ctx::connect_tls`]).
    pub fn connect_persistent_tls<A: Into<Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: std::time::Duration,
        tag: u64,
        tls: &TlsTarget,
    ) {
        self.env
            .connect(addresses(addrs), timeout, tag, true, Some(tls));
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
    /// Call [`Handler::on_timer`] for this connection with `id` after
    /// `after` (a heartbeat, a request deadline). The key cancels it.
    /// Timers fire only while the connection is open: once it is closing
    /// ([`Conn::close`], an error, the peer's end of stream) none fires,
    /// including one set after that. Timers fire in deadline order (ties
    /// in the order they were set).
    pub fn set_timer(&mut self, after: Duration, id: u64) -> TimerKey {
        let conn = self.core.id;
        self.env.set_timer(after, TimerOwner::Conn { conn, id })
    }

    /// Cancel a timer set with [`Conn::set_timer`] (or a worker timer);
    /// whether it was still pending.
    pub fn cancel_timer(&mut self, key: TimerKey) -> bool {
        self.env.cancel_timer(key)
    }

    /// The connection's stable id.
    pub fn id(&self) -> ConnId {
        self.core.id
    }

    /// For a connection this worker made with [`Conn::connect`] or
    /// [`Ctx::connect`], the tag given then; `None` for accepted ones.
    pub fn tag(&self) -> Option<u64> {
        self.core.tag()
    }

    /// The index in `Config::listeners` of the listener this connection
    /// came through (its address is `Engine::local_addrs()[i]`); `None`
    /// for an outbound connection.
    pub fn listener(&self) -> Option<usize> {
        self.core.listener()
    }

    /// Connect out to `addrs`, tried in order, each attempt for at most
    /// `timeout`. Returns at once; the new connection arrives in `on_open`
    /// with [`Conn::tag`] `== Some(tag)`, or the failure in
    /// `on_connect_failed(tag, ..)`. Addresses are not resolved here (the
    /// worker never blocks on DNS): resolve endpoints first, e.g. with
    /// `Endpoint::resolve`.
    pub fn connect<A: Into<Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: std::time::Duration,
        tag: u64,
    ) {
        self.env
            .connect(addresses(addrs), timeout, tag, false, None);
    }

    /// [`Conn::connect`] with TLS (see [`Ctx::connect_tls`]).
    pub fn connect_tls<A: Into<Address> + Clone>(
        &mut self,
        addrs: &[A],
        timeout: std::time::Duration,
        tag: u64,
        tls: &TlsTarget,
    ) {
        self.env
            .connect(addresses(addrs), timeout, tag, false, Some(tls));
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
    ///
    /// On io_uring, bytes of the buffer `on_data` was just lent, sent when
    /// nothing else is queued or being sent, go out straight from that
    /// buffer (no copy); it returns to the kernel when the send completes.
    #[inline]
    pub fn send(&mut self, data: &[u8]) {
        if self.core.is_closing() {
            return;
        }
        if let Some(lent) = self.env.lent.as_deref_mut() {
            if self.core.queued() == 0 && self.core.tls().is_none() {
                if let Some(len) = lent.claim(data) {
                    // Counted as in flight from now: whatever the handler
                    // sends next queues behind it.
                    self.core.claim_reply(len);
                    return;
                }
            }
        }
        self.core.push(data);
    }

    /// Close after everything queued has been sent; no more input is
    /// delivered.
    pub fn close(&mut self) {
        self.core.close(CloseReason::Local);
    }

    /// Close after everything queued has been sent, reporting `reason` to
    /// `on_close` (for example a protocol error the handler detected).
    pub fn close_with(&mut self, reason: CloseReason) {
        self.core.close(reason);
    }

    /// Whether [`Conn::close`] was called (or the peer ended the stream).
    pub fn is_closing(&self) -> bool {
        self.core.is_closing()
    }

    /// Bytes queued by the handler and not yet written to the socket (the
    /// unwritten rest of the send in progress included).
    pub fn queued(&self) -> usize {
        self.core.queued()
    }

    /// The peer's address (`getpeername(2)`): an IP address, or for a
    /// Unix socket usually [`UnixAddr::Unnamed`](crate::UnixAddr::Unnamed)
    /// (clients seldom bind). An `Unsupported` error for a connection
    /// accepted straight into the registered-descriptor table
    /// ([`Config::accept_direct`](crate::Config::accept_direct)), which has
    /// no plain descriptor to ask.
    pub fn peer_addr(&self) -> io::Result<Address> {
        Address::from_sock_addr(&self.core.socket()?.peer_addr()?)
    }

    /// The local address of the connection (`getsockname(2)`); like
    /// [`Conn::peer_addr`], an `Unsupported` error with `accept_direct`.
    pub fn local_addr(&self) -> io::Result<Address> {
        Address::from_sock_addr(&self.core.socket()?.local_addr()?)
    }

    /// For a Unix socket connection, the peer process's credentials as
    /// they were when it connected (SO_PEERCRED); an error for an IP
    /// connection.
    pub fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        PeerCredentials::of(self.core.socket()?)
    }

    /// The connection's socket, to read or set options (TCP_NODELAY,
    /// SO_RCVBUF, SO_SNDBUF, ...) with socket2. Do not read, write or close
    /// it directly: the engine owns its I/O. An `Unsupported` error for a
    /// connection accepted straight into the registered-descriptor table
    /// ([`Config::accept_direct`](crate::Config::accept_direct)).
    pub fn socket(&self) -> io::Result<socket2::SockRef<'_>> {
        Ok(socket2::SockRef::from(self.core.socket()?))
    }

    /// On a connection from a TLS listener, what its handshake negotiated
    /// (ALPN protocol, server name, the client's certificates, version,
    /// cipher suite); `None` on a plain connection.
    pub fn tls(&self) -> Option<crate::tls::TlsInfo<'_>> {
        self.core
            .tls()
            .map(|t| crate::tls::TlsInfo { conn: &t.conn })
    }

    /// The backend serving this connection.
    pub fn backend(&self) -> Backend {
        self.env.backend
    }
}

/// IP or Unix addresses, as a connect request holds them.
pub(crate) fn addresses<A: Into<Address> + Clone>(addrs: &[A]) -> Vec<Address> {
    addrs.iter().cloned().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owns what an `Env` borrows, for calls outside a worker.
    #[derive(Default)]
    struct TestEnv {
        requests: Vec<Command>,
        bus: Bus,
        timers: Option<TimerQueue<TimerOwner>>,
    }

    impl TestEnv {
        fn env(&mut self) -> Env<'_> {
            Env {
                requests: &mut self.requests,
                timers: self
                    .timers
                    .get_or_insert_with(|| TimerQueue::new(Instant::now())),
                bus: &self.bus,
                worker: 0,
                backend: Backend::Epoll,
                lent: None,
            }
        }
    }

    /// Consumes whole 4-byte frames only and records them.
    struct Frames(Vec<Vec<u8>>);

    impl Handler for Frames {
        type State = ();

        fn on_open(&mut self, _conn: &mut Conn<'_>) {}

        fn on_data(&mut self, _conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
            let whole = data.len() / 4 * 4;
            for f in data[..whole].chunks(4) {
                self.0.push(f.to_vec());
            }
            whole
        }
    }

    fn core() -> ConnCore {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        ConnCore::new(
            ConnId::new(0, 1, 1),
            Some(sock),
            Some(0),
            Some(std::time::Instant::now()),
        )
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
        let started = deliver(&mut c, &mut h, &mut (), &[1, 2], 1 << 20, t.env()).expect("ok");
        let clock = |c: &ConnCore| c.clock.as_deref().expect("timed").partial_since;
        let first = clock(&c).expect("a message began");
        assert!(started, "one read-timeout entry is asked for");
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Still the same message: the clock keeps its start.
        deliver(&mut c, &mut h, &mut (), &[3], 1 << 20, t.env()).expect("ok");
        assert_eq!(clock(&c), Some(first));
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Completes it and starts the next one.
        let started = deliver(&mut c, &mut h, &mut (), &[4, 5], 1 << 20, t.env()).expect("ok");
        let second = clock(&c).expect("the next message began");
        assert!(second > first, "the clock restarted");
        assert!(!started, "one entry is already queued");
        deliver(&mut c, &mut h, &mut (), &[6, 7, 8], 1 << 20, t.env()).expect("ok");
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
                deliver(&mut c, &mut h, &mut (), chunk, 1024, t.env()).expect("under limit");
            }
            let got: Vec<u8> = h.0.concat();
            assert_eq!(got, stream, "split {split}");
            assert!(c.held().is_empty());
        }
    }

    #[test]
    fn too_much_unconsumed_input_closes() {
        let mut t = TestEnv::default();
        struct Never;
        impl Handler for Never {
            type State = ();

            fn on_open(&mut self, _conn: &mut Conn<'_>) {}

            fn on_data(&mut self, _c: &mut Conn<'_>, _: &mut (), _d: &[u8]) -> usize {
                0
            }
        }
        let mut c = core();
        deliver(&mut c, &mut Never, &mut (), &[0; 8], 10, t.env()).expect("8 <= 10");
        assert_eq!(
            deliver(&mut c, &mut Never, &mut (), &[0; 8], 10, t.env()),
            Err(CloseReason::InputLimit { limit: 10 })
        );
    }

    #[test]
    fn over_consumption_is_clamped_and_closing_drops_input() {
        let mut t = TestEnv::default();
        struct Greedy;
        impl Handler for Greedy {
            type State = ();

            fn on_open(&mut self, _conn: &mut Conn<'_>) {}

            fn on_data(&mut self, c: &mut Conn<'_>, _: &mut (), d: &[u8]) -> usize {
                c.send(d);
                usize::MAX
            }
        }
        let mut c = core();
        deliver(&mut c, &mut Greedy, &mut (), b"abc", 10, t.env()).expect("ok");
        assert_eq!(c.out, b"abc");
        assert!(c.held().is_empty());
        Conn {
            core: &mut c,
            env: t.env(),
        }
        .close();
        deliver(&mut c, &mut Greedy, &mut (), b"def", 10, t.env()).expect("ok");
        assert_eq!(c.out, b"abc", "no delivery after close");
        Conn {
            core: &mut c,
            env: t.env(),
        }
        .send(b"x");
        assert_eq!(c.out, b"abc", "send after close is ignored");
    }
}
