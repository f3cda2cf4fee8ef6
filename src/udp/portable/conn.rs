//! [`UdpConn`]: one peer's connected socket, plus the queue of that peer's
//! datagrams that were read from other sockets.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{is_retry, recv_datagram, Inner, Origin, PeerQueue};

/// One peer of a [`UdpServer`](super::UdpServer): a UDP socket bound to the
/// server's address and connected to the peer.
///
/// [`recv`](UdpConn::recv) and [`send`](UdpConn::send) take `&self`, so one
/// thread may receive while another sends. [`close`](UdpConn::close) (or
/// drop) unregisters the peer: its next datagram starts a new connection.
/// A connection keeps working after its server is closed.
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

    /// Receive the peer's next datagram, whole (up to
    /// [`MAX_DATAGRAM`](crate::udp::MAX_DATAGRAM) bytes). The datagram that
    /// created the connection comes first.
    ///
    /// Handed-over datagrams (read from other sockets) are returned before
    /// the socket is read. A datagram this socket received from another
    /// address is routed to its owner and the wait goes on. `None` waits
    /// for ever; running out of time returns [`io::ErrorKind::TimedOut`].
    /// Like any connected UDP socket, it may return
    /// [`io::ErrorKind::ConnectionRefused`] after the peer's port answered
    /// an earlier send with ICMP "port unreachable".
    pub fn recv(&self, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let sock = self.socket()?;
        let interval = self.server.poll_interval();
        loop {
            if let Some(datagram) = self.queue.pop() {
                return Ok(datagram);
            }
            let slice = match deadline {
                None => interval,
                Some(end) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "udp recv timed out",
                        ));
                    }
                    // A zero timeval means "no timeout" to the kernel.
                    left.min(interval).max(Duration::from_micros(1))
                }
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

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
