//! The portable [`UdpServer`]: std sockets made with socket2, one internal
//! thread reading the listening socket, and the routing of every datagram
//! by its source address (see the [module docs](super) for the design).
//!
//! The shared state lives in `Inner`: one mutex over the peer table and
//! the queue of connections waiting for `accept`, a condition variable for
//! `accept` callers, and the counters. Every routing decision is taken
//! under that mutex, so a peer is created once and each datagram has one
//! owner.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::{UdpOptions, UdpStats, MAX_DATAGRAM};

mod conn;

pub use conn::UdpConn;

/// A UDP server that hands out one connected socket per peer.
///
/// [`accept`](UdpServer::accept) may be called from several threads at
/// once; each new peer is returned to exactly one caller. Dropping the
/// server closes it ([`close`](UdpServer::close)); connections already
/// accepted stay usable.
///
/// ```
/// use std::net::UdpSocket;
/// use std::time::Duration;
/// use ringnet::udp::{UdpOptions, UdpServer};
///
/// let server = UdpServer::bind("127.0.0.1:0".parse()?, UdpOptions::default())?;
/// assert_ne!(server.local_addr().port(), 0);
///
/// // Two datagrams from one client: one connection, first datagram first.
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"one", server.local_addr())?;
/// client.send_to(b"two", server.local_addr())?;
/// let conn = server.accept(Some(Duration::from_secs(5)))?;
/// assert_eq!(conn.recv(Some(Duration::from_secs(5)))?, b"one");
/// assert_eq!(conn.recv(Some(Duration::from_secs(5)))?, b"two");
///
/// // Nobody else is sending: the next accept times out.
/// let err = server.accept(Some(Duration::from_millis(10))).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
///
/// // A closed server answers with an error.
/// server.close();
/// assert!(server.accept(None).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UdpServer {
    inner: Arc<Inner>,
    /// The thread reading the listening socket; taken by `close`.
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl UdpServer {
    /// Bind a listening socket to `addr` (`SO_REUSEADDR`, `SO_REUSEPORT`,
    /// and `IPV6_V6ONLY` as in `options` for an IPv6 address) and start the
    /// thread that reads it. Port 0 asks the OS for a free port: see
    /// [`local_addr`](UdpServer::local_addr).
    pub fn bind(addr: SocketAddr, options: UdpOptions) -> io::Result<UdpServer> {
        let options = UdpOptions {
            poll_interval: options.poll_interval.max(Duration::from_millis(1)),
            ..options
        };
        // Port 0: a port nobody holds, not one another reuseport server has.
        let addr = crate::listener::exclusive_port(addr, socket2::Type::DGRAM)?;
        let sock = new_socket(addr, &options)?;
        sock.bind(&addr.into())?;
        let local = sock.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket address")
        })?;
        let listener = UdpSocket::from(sock);
        listener.set_read_timeout(Some(options.poll_interval))?;
        let inner = Arc::new(Inner {
            local,
            options,
            state: Mutex::new(State {
                peers: HashMap::new(),
                backlog: VecDeque::new(),
                closed: false,
            }),
            accept_cv: Condvar::new(),
            counters: Counters::default(),
        });
        let reader = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("ringnet-udp-listen".into())
                .spawn(move || read_listener(&inner, &listener))?
        };
        Ok(UdpServer {
            inner,
            reader: Mutex::new(Some(reader)),
        })
    }

    /// The address the server listens on, with the real port after port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Wait for a new peer and return its connection, whose first
    /// [`recv`](UdpConn::recv) returns the peer's first datagram (and whose
    /// buffered calls, such as [`recv_line`](UdpConn::recv_line), start
    /// with its bytes).
    ///
    /// `None` waits for ever; running out of time returns
    /// [`io::ErrorKind::TimedOut`] (new peers keep waiting for the next
    /// call). After [`close`](UdpServer::close), and in callers blocked
    /// here when it happens, returns [`io::ErrorKind::NotConnected`] at once.
    pub fn accept(&self, timeout: Option<Duration>) -> io::Result<UdpConn> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.inner.lock_state();
        loop {
            if state.closed {
                return Err(server_closed());
            }
            if let Some(conn) = state.backlog.pop_front() {
                self.inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
            state = match deadline {
                None => self
                    .inner
                    .accept_cv
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(end) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "udp accept timed out",
                        ));
                    }
                    self.inner
                        .accept_cv
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Stop accepting: wake every `accept` caller with an error, drop the
    /// connections nobody accepted yet, and close the listening socket
    /// (waiting at most about [`UdpOptions::poll_interval`] for the reader
    /// thread). Connections already accepted keep working on their own
    /// sockets. Calling it again does nothing.
    pub fn close(&self) {
        let pending = {
            let mut state = self.inner.lock_state();
            state.closed = true;
            self.inner.accept_cv.notify_all();
            std::mem::take(&mut state.backlog)
        };
        // Outside the lock: each connection's drop unregisters itself.
        drop(pending);
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(reader) = reader {
            // A panic in the reader has nothing left to report here.
            let _ = reader.join();
        }
    }

    /// Whether [`close`](UdpServer::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock_state().closed
    }

    /// The server's counters, including the corrections of misdelivered
    /// datagrams.
    pub fn stats(&self) -> UdpStats {
        let (active, pending) = {
            let state = self.inner.lock_state();
            (state.peers.len(), state.backlog.len())
        };
        let c = &self.inner.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        UdpStats {
            new_peers: get(&c.new_peers),
            accepted: get(&c.accepted),
            new_peers_from_peer_socket: get(&c.new_peers_from_peer_socket),
            rerouted_from_listener: get(&c.rerouted_from_listener),
            rerouted_from_peer_socket: get(&c.rerouted_from_peer_socket),
            dropped_backlog_full: get(&c.dropped_backlog_full),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_server_closed: get(&c.dropped_server_closed),
            socket_errors: get(&c.socket_errors),
            discarded_on_close: get(&c.discarded_on_close),
            active_peers: active as u64,
            pending_accept: pending as u64,
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for UdpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServer")
            .field("local_addr", &self.inner.local)
            .finish_non_exhaustive()
    }
}

/// State shared by the server, its reader thread and its connections.
struct Inner {
    /// The listening address (real port); per-peer sockets bind to it.
    local: SocketAddr,
    options: UdpOptions,
    state: Mutex<State>,
    /// Signalled when a connection joins the backlog, and on close.
    accept_cv: Condvar,
    counters: Counters,
}

/// Everything a routing decision reads or changes, under one mutex.
struct State {
    /// Registered peers (keyed by [`peer_key`]) and their queues of
    /// handed-over datagrams.
    peers: HashMap<SocketAddr, Arc<PeerQueue>>,
    /// Connections made for new peers, waiting for `accept`. Never dropped
    /// while the mutex is held: a connection's drop takes it.
    backlog: VecDeque<UdpConn>,
    closed: bool,
}

/// Where a datagram was read, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Listener,
    PeerSocket,
}

/// Datagrams of one peer that were read from some other socket.
#[derive(Debug, Default)]
struct PeerQueue {
    datagrams: Mutex<VecDeque<Vec<u8>>>,
}

impl PeerQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.datagrams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest handed-over datagram, if any.
    fn pop(&self) -> Option<Vec<u8>> {
        self.lock().pop_front()
    }
}

/// Counters behind [`UdpStats`]. Each is an independent tally read only for
/// reporting, so `Relaxed` is enough everywhere: no other memory is
/// published through them.
#[derive(Debug, Default)]
struct Counters {
    new_peers: AtomicU64,
    accepted: AtomicU64,
    new_peers_from_peer_socket: AtomicU64,
    rerouted_from_listener: AtomicU64,
    rerouted_from_peer_socket: AtomicU64,
    dropped_backlog_full: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_server_closed: AtomicU64,
    socket_errors: AtomicU64,
    discarded_on_close: AtomicU64,
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_interval(&self) -> Duration {
        self.options.poll_interval
    }

    /// Give a datagram read from `origin` to its owner: a registered peer's
    /// queue, or a new connection for `accept` if `from` is unknown.
    fn route(self: &Arc<Self>, from: SocketAddr, data: Vec<u8>, origin: Origin) {
        let from = peer_key(from);
        let counters = &self.counters;
        let mut state = self.lock_state();
        if let Some(queue) = state.peers.get(&from) {
            let mut datagrams = queue.lock();
            if datagrams.len() >= self.options.max_queued {
                counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                return;
            }
            datagrams.push_back(data);
            let counter = match origin {
                Origin::Listener => &counters.rerouted_from_listener,
                Origin::PeerSocket => &counters.rerouted_from_peer_socket,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if state.closed {
            counters
                .dropped_server_closed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if state.backlog.len() >= self.options.backlog {
            counters
                .dropped_backlog_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sock = match self.peer_socket(from) {
            Ok(sock) => sock,
            Err(_) => {
                counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let queue = Arc::new(PeerQueue::default());
        queue.lock().push_back(data);
        state.peers.insert(from, Arc::clone(&queue));
        state
            .backlog
            .push_back(UdpConn::new(sock, from, queue, Arc::clone(self)));
        self.accept_cv.notify_one();
        counters.new_peers.fetch_add(1, Ordering::Relaxed);
        if origin == Origin::PeerSocket {
            counters
                .new_peers_from_peer_socket
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A socket in the listener's reuseport group, connected to `peer`.
    fn peer_socket(&self, peer: SocketAddr) -> io::Result<UdpSocket> {
        let sock = new_socket(self.local, &self.options)?;
        sock.bind(&self.local.into())?;
        // From here until connect returns, this socket may receive other
        // peers' datagrams; its connection routes them (see `UdpConn::recv`).
        sock.connect(&peer.into())?;
        let sock = UdpSocket::from(sock);
        sock.set_read_timeout(Some(self.options.poll_interval))?;
        Ok(sock)
    }

    /// Take `peer` out of the table if `queue` is still its entry, and count
    /// the datagrams left in the queue as discarded. Returns the guard so the
    /// caller can close its socket before anyone routes to the peer again.
    fn unregister(&self, peer: SocketAddr, queue: &Arc<PeerQueue>) -> MutexGuard<'_, State> {
        let mut state = self.lock_state();
        if state
            .peers
            .get(&peer)
            .is_some_and(|q| Arc::ptr_eq(q, queue))
        {
            state.peers.remove(&peer);
        }
        let left = std::mem::take(&mut *queue.lock()).len();
        self.count_discarded(left as u64);
        state
    }

    fn count_discarded(&self, n: u64) {
        self.counters
            .discarded_on_close
            .fetch_add(n, Ordering::Relaxed);
    }
}

/// A UDP socket for `addr`'s family with the options every member of the
/// server's reuseport group shares. socket2 sets close-on-exec.
fn new_socket(addr: SocketAddr, options: &UdpOptions) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(options.only_v6)?;
    }
    if let Some(n) = options.recv_buffer_size {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(n) = options.send_buffer_size {
        sock.set_send_buffer_size(n)?;
    }
    Ok(sock)
}

/// The reader thread: route every datagram of the listening socket until
/// the server is closed. The socket's read timeout bounds how long `close`
/// waits; the socket is closed when this returns and the thread drops it.
fn read_listener(inner: &Arc<Inner>, listener: &UdpSocket) {
    while !inner.lock_state().closed {
        match recv_datagram(listener) {
            Ok((data, from)) => inner.route(from, data, Origin::Listener),
            Err(e) if is_retry(&e) => {}
            Err(_) => {
                inner.counters.socket_errors.fetch_add(1, Ordering::Relaxed);
                // Do not spin on a persistent error.
                std::thread::sleep(inner.options.poll_interval);
            }
        }
    }
}

thread_local! {
    /// One receive buffer per thread, large enough for any datagram.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Read one whole datagram and its (normalised) source address.
fn recv_datagram(sock: &UdpSocket) -> io::Result<(Vec<u8>, SocketAddr)> {
    RECV_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let (n, from) = sock.recv_from(&mut buf)?;
        Ok((buf[..n].to_vec(), peer_key(from)))
    })
}

/// A peer's address as the table keys it: the IPv6 flow label is not part
/// of a peer's identity (the scope id is, for link-local peers).
fn peer_key(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(mut a) => {
            a.set_flowinfo(0);
            SocketAddr::V6(a)
        }
        v4 => v4,
    }
}

/// Errors after which a read is simply tried again: the socket timeout ran
/// out (`EAGAIN`) or a signal interrupted it.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The error of every call on a closed server.
fn server_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "udp server closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Option<Duration> = Some(Duration::from_secs(5));

    fn server() -> UdpServer {
        UdpServer::bind("127.0.0.1:0".parse().expect("addr"), UdpOptions::default()).expect("bind")
    }

    /// A datagram "read" from a peer socket for an unknown address starts
    /// a new connection; one for a known address joins its queue, after the
    /// first datagram.
    #[test]
    fn route_by_source() {
        let server = server();
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        let peer = client.local_addr().expect("addr");
        server
            .inner
            .route(peer, b"first".to_vec(), Origin::PeerSocket);
        server
            .inner
            .route(peer, b"second".to_vec(), Origin::PeerSocket);
        let conn = server.accept(WAIT).expect("accept");
        assert_eq!(conn.peer_addr(), peer);
        assert_eq!(conn.recv(WAIT).expect("recv"), b"first");
        assert_eq!(conn.recv(WAIT).expect("recv"), b"second");
        server
            .inner
            .route(peer, b"third".to_vec(), Origin::Listener);
        assert_eq!(conn.recv(WAIT).expect("recv"), b"third");
        let stats = server.stats();
        assert_eq!(stats.new_peers, 1);
        assert_eq!(stats.new_peers_from_peer_socket, 1);
        assert_eq!(stats.rerouted_from_peer_socket, 1);
        assert_eq!(stats.rerouted_from_listener, 1);
        conn.close();
        assert_eq!(server.stats().active_peers, 0);
    }

    /// Unread handed-over datagrams are counted when a connection closes,
    /// and a full backlog drops (and counts) new peers.
    #[test]
    fn limits_are_counted() {
        let server = UdpServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            UdpOptions {
                backlog: 1,
                max_queued: 2,
                ..UdpOptions::default()
            },
        )
        .expect("bind");
        let a: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let b: SocketAddr = "127.0.0.2:9".parse().expect("addr");
        for _ in 0..3 {
            server.inner.route(a, vec![1], Origin::PeerSocket);
        }
        server.inner.route(b, vec![2], Origin::PeerSocket);
        let stats = server.stats();
        assert_eq!(stats.new_peers, 1);
        assert_eq!(stats.dropped_queue_full, 1);
        assert_eq!(stats.dropped_backlog_full, 1);
        let conn = server.accept(WAIT).expect("accept");
        drop(conn);
        assert_eq!(server.stats().discarded_on_close, 2);
    }
}
