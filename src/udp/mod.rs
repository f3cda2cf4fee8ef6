//! UDP servers whose [`accept`](UdpServer::accept) works like a TCP accept:
//! each new peer gets a connected UDP socket of its own ([`UdpConn`]).
//!
//! This module is portable: std, socket2 and libc only, on any Unix with
//! `SO_REUSEPORT`. It does not use the engine, io_uring or epoll.
//!
//! # What the kernel does
//!
//! The listening socket is bound with `SO_REUSEADDR` and `SO_REUSEPORT`
//! (and `IPV6_V6ONLY` off for `::`, so one server hears IPv4 and IPv6). For
//! a datagram from a peer it has not seen, the server makes a new UDP
//! socket, binds it to the same address and port with `SO_REUSEPORT`, and
//! `connect(2)`s it to the peer. Since Linux 5.4 (commit "udp: correct
//! reuseport selection with connected sockets"), a connected UDP socket in
//! a reuseport group receives the datagrams of its own 4-tuple; unconnected
//! members (the listener) share the rest. So after the connect, a peer's
//! datagrams go straight to its own socket, and the server reads them
//! without any lookup. See socket(7) (`SO_REUSEPORT`) and udp(7).
//!
//! # The race, and what this module does about it
//!
//! The kernel's preference starts only once the new socket is connected.
//! Two things can go astray:
//!
//! * Between `bind` and `connect`, the new socket is an unconnected member
//!   of the group, so it can receive datagrams meant for *other* peers (the
//!   group hashes the 4-tuple over its unconnected members). `connect` does
//!   not flush them: they stay in its receive queue.
//! * Datagrams of an accepted peer can still sit in the listening socket's
//!   queue (they arrived before the connect), and on a kernel without the
//!   connected-socket preference (before 5.4, or another Unix) they keep
//!   arriving there or on other members of the group.
//!
//! So nobody trusts where a datagram landed: every datagram is read with
//! `recvfrom(2)` and its source address decides its owner.
//!
//! * On the listening socket: a known peer's datagram is *handed over* to
//!   that peer's queue; an unknown peer's datagram creates a new connection
//!   holding that datagram as its first one, queued for `accept`.
//! * On a per-peer socket: a datagram from the peer is returned by
//!   [`UdpConn::recv`]; one from any other address is routed exactly as if
//!   it had been read from the listening socket (known peer: its queue;
//!   unknown: a new connection).
//! * [`UdpConn::recv`] returns handed-over datagrams before reading its own
//!   socket, so the datagram that created the connection is always the
//!   first one it returns.
//!
//! [`UdpServer::stats`] counts each kind of correction ([`UdpStats`]).
//!
//! # Who reads the listening socket
//!
//! One internal thread per server, and nobody else. Alternatives such as
//! letting `accept` callers take turns reading it (a "leader") leave the
//! listener unread while no thread is in `accept`, and with it the
//! handed-over datagrams of peers that are already connected. With a
//! dedicated reader the listener is always drained, there is exactly one
//! reader (no two threads can route the same peer's datagrams in a
//! different order), and routing is serialised by one mutex that holds the
//! peer table and the queue of not-yet-accepted connections. A datagram is
//! therefore, at every moment, in exactly one place: a kernel socket queue,
//! the hands of the one thread that read it, a peer's queue, or returned to
//! the user.
//!
//! # What can still be lost
//!
//! Each of these is counted in [`UdpStats`] (with the one exception noted):
//!
//! * a new peer's first datagram while [`UdpOptions::backlog`] connections
//!   are already waiting for `accept` (like a full SYN queue in TCP), or
//!   when the per-peer socket cannot be made (for example `EMFILE`);
//! * a handed-over datagram for a peer whose queue already holds
//!   [`UdpOptions::max_queued`] datagrams (like a full socket buffer);
//! * a new peer's datagram that reaches a per-peer socket after the server
//!   was closed (there is nobody left to accept it);
//! * datagrams of its own peer that a connection had not read when it was
//!   closed (like unread bytes of a closed TCP connection). After
//!   [`UdpConn::close`] the peer is unknown again, and its next datagram
//!   starts a new connection. One exception is not counted: a datagram that
//!   reaches the connection's socket in the instant between its last drain
//!   and the socket's close is dropped by the kernel with the socket.
//!
//! # Waiting
//!
//! Every blocking call takes `timeout: Option<Duration>` (`None` waits for
//! ever) and returns [`std::io::ErrorKind::TimedOut`] when it runs out.
//! `accept` waits on a condition variable and is woken at once by a new
//! peer or by [`UdpServer::close`]. `recv` waits on its socket in slices of
//! at most [`UdpOptions::poll_interval`] and checks its queue between them,
//! so a handed-over datagram waits at most that long. The internal reader
//! uses the same interval as its socket timeout to notice `close`.
//!
//! ```
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use ringnet::udp::{UdpOptions, UdpServer};
//!
//! let server = UdpServer::bind("127.0.0.1:0".parse()?, UdpOptions::default())?;
//! let client = UdpSocket::bind("127.0.0.1:0")?;
//! client.connect(server.local_addr())?;
//! client.send(b"hello")?;
//!
//! let conn = server.accept(Some(Duration::from_secs(5)))?;
//! assert_eq!(conn.peer_addr(), client.local_addr()?);
//! assert_eq!(conn.recv(Some(Duration::from_secs(5)))?, b"hello");
//! conn.send(b"HELLO")?;
//!
//! let mut buf = [0u8; 16];
//! client.set_read_timeout(Some(Duration::from_secs(5)))?;
//! let n = client.recv(&mut buf)?;
//! assert_eq!(&buf[..n], b"HELLO");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

pub(crate) mod datagram;
pub mod engine;
pub mod portable;

pub use portable::{UdpConn, UdpServer};

/// The largest datagram read whole: anything a UDP socket can receive
/// (65,535 bytes, more than the largest IPv4 or IPv6 payload).
pub const MAX_DATAGRAM: usize = 65535;

/// Options of a [`UdpServer`] and the per-peer sockets it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// For an IPv6 address: IPv6 only (`IPV6_V6ONLY`). Off by default, so
    /// `[::]` also hears IPv4 peers, as v4-mapped addresses.
    pub only_v6: bool,
    /// How many new connections may wait for `accept`; a new peer beyond
    /// that is dropped (and counted) until a caller catches up.
    pub backlog: usize,
    /// How many handed-over datagrams a connection may hold before newer
    /// ones are dropped (and counted).
    pub max_queued: usize,
    /// The longest a `recv` waits on its socket before checking its queue
    /// of handed-over datagrams, and the internal reader's socket timeout
    /// (how soon it notices `close`). At least one millisecond is used.
    pub poll_interval: Duration,
    /// `SO_RCVBUF` for the listener and every per-peer socket (`None`: the
    /// kernel's default).
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` for the listener and every per-peer socket.
    pub send_buffer_size: Option<usize>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            only_v6: false,
            backlog: 1024,
            max_queued: 1024,
            poll_interval: Duration::from_millis(20),
            recv_buffer_size: None,
            send_buffer_size: None,
        }
    }
}

/// Counters of a [`UdpServer`] since it was bound ([`UdpServer::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpStats {
    /// Connections made for new peers (whether accepted yet or not).
    pub new_peers: u64,
    /// Connections returned by `accept`.
    pub accepted: u64,
    /// Of `new_peers`: those whose first datagram had landed on another
    /// peer's socket instead of the listener.
    pub new_peers_from_peer_socket: u64,
    /// Datagrams of a known peer read from the listening socket and handed
    /// to that peer's connection.
    pub rerouted_from_listener: u64,
    /// Datagrams of a known peer read from another peer's socket and handed
    /// to the right connection.
    pub rerouted_from_peer_socket: u64,
    /// New peers dropped because the backlog was full.
    pub dropped_backlog_full: u64,
    /// Handed-over datagrams dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// New peers' datagrams dropped because the server was closed.
    pub dropped_server_closed: u64,
    /// Failures to make a per-peer socket or to read the listener (the
    /// datagram concerned, if any, is dropped).
    pub socket_errors: u64,
    /// A peer's own datagrams that its connection had not read when it was
    /// closed.
    pub discarded_on_close: u64,
    /// Connections currently registered (accepted and not closed, or
    /// waiting for `accept`).
    pub active_peers: u64,
    /// Connections waiting for `accept`.
    pub pending_accept: u64,
}
