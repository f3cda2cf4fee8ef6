//! Outbound connections: the request a handler (or the engine) makes, and
//! how a failed attempt is reported. Each backend runs the attempts its own
//! way (io_uring: IORING_OP_CONNECT linked to a timeout; epoll: a
//! non-blocking connect and a deadline); both try every address of a request
//! in order and report only the last failure.

use crate::address::Address;
use std::time::Duration;

/// Why an outbound connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing listens there (ECONNREFUSED).
    #[error("connection refused")]
    Refused,
    /// No route to the network or host (ENETUNREACH, EHOSTUNREACH).
    #[error("network or host unreachable")]
    Unreachable,
    /// No answer within the timeout.
    #[error("connect timed out")]
    TimedOut,
    /// The engine shut down before the attempt finished.
    #[error("engine shutting down")]
    Shutdown,
    /// Any other OS error.
    #[error("connect failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Os(i32),
    /// Connected, but the TLS handshake failed (the server's certificate
    /// was refused, an alert, no common version) or timed out.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ConnectError {
    /// Classify a failed connect (or socket setup) by its errno.
    pub(crate) fn from_io(e: &std::io::Error) -> ConnectError {
        ConnectError::from_errno(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// Classify a connect errno.
    pub(crate) fn from_errno(errno: i32) -> ConnectError {
        match errno {
            libc::ECONNREFUSED => ConnectError::Refused,
            libc::ENETUNREACH | libc::EHOSTUNREACH => ConnectError::Unreachable,
            libc::ETIMEDOUT => ConnectError::TimedOut,
            e => ConnectError::Os(e),
        }
    }
}

/// One outbound connection wanted: the addresses to try in order, the time
/// each attempt may take, and the caller's tag (given back in
/// [`crate::Conn::tag`] or [`crate::Handler::on_connect_failed`]).
#[derive(Debug, Clone)]
pub(crate) struct ConnectRequest {
    pub(crate) addrs: Vec<Address>,
    pub(crate) next: usize,
    pub(crate) timeout: Duration,
    pub(crate) tag: u64,
    /// Keep the connection up: reconnect after a close or a failed round,
    /// waiting `backoff` first (doubled after each failure, up to
    /// [`MAX_BACKOFF`]; reset to [`FIRST_BACKOFF`] once a connection has
    /// stayed up for [`STABLE_AFTER`], so a peer that accepts and closes at
    /// once is retried with growing waits, not ten times a second).
    pub(crate) persistent: bool,
    pub(crate) backoff: Duration,
    /// Speak TLS once connected.
    pub(crate) tls: Option<crate::tls::TlsTarget>,
}

/// The first wait before a persistent connection is tried again.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between tries of a persistent connection.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a persistent connection must stay up for its backoff to start
/// over.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(1);
/// Bounds of one connect attempt's timeout: a zero timeout would fail every
/// attempt at once on io_uring, and a huge one overflows deadlines.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl ConnectRequest {
    pub(crate) fn new(
        addrs: Vec<Address>,
        timeout: Duration,
        tag: u64,
        persistent: bool,
    ) -> ConnectRequest {
        ConnectRequest {
            addrs,
            next: 0,
            timeout: timeout.clamp(MIN_TIMEOUT, MAX_TIMEOUT),
            tag,
            persistent,
            backoff: FIRST_BACKOFF,
            tls: None,
        }
    }

    /// The request to run again after a failed round: from the first
    /// address, with the backoff doubled for the round after.
    pub(crate) fn retry(&self) -> (Duration, ConnectRequest) {
        let wait = self.backoff;
        let mut next = self.clone();
        next.next = 0;
        next.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        (wait, next)
    }

    /// The request to run again after an established connection closed,
    /// having been up for `lived`: a connection that stayed up starts the
    /// backoff over, one that closed at once counts as a failed round.
    pub(crate) fn after_close(&self, lived: Duration) -> (Duration, ConnectRequest) {
        let mut next = self.clone();
        next.next = 0;
        if lived >= STABLE_AFTER {
            next.backoff = FIRST_BACKOFF;
        }
        next.retry()
    }

    /// The address of the current attempt.
    pub(crate) fn addr(&self) -> Option<&Address> {
        self.addrs.get(self.next)
    }

    /// Move to the next address; `false` when there is none.
    pub(crate) fn advance(&mut self) -> bool {
        self.next += 1;
        self.next < self.addrs.len()
    }
}

/// A new, unconnected socket for `addr`, with the engine's socket options
/// (TCP_NODELAY for an IP address).
pub(crate) fn socket_for(
    addr: &Address,
    cfg: &crate::Config,
    nonblocking: bool,
) -> std::io::Result<socket2::Socket> {
    let ty = socket2::Type::STREAM.cloexec();
    let ty = if nonblocking { ty.nonblocking() } else { ty };
    let (domain, protocol) = addr.stream_domain();
    let sock = socket2::Socket::new(domain, ty, protocol)?;
    if cfg.nodelay && !addr.is_unix() {
        sock.set_tcp_nodelay(true)?;
    }
    if let Some(n) = cfg.recv_buffer_size {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(n) = cfg.send_buffer_size {
        sock.set_send_buffer_size(n)?;
    }
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_classified() {
        assert_eq!(
            ConnectError::from_errno(libc::ECONNREFUSED),
            ConnectError::Refused
        );
        assert_eq!(
            ConnectError::from_errno(libc::ENETUNREACH),
            ConnectError::Unreachable
        );
        assert_eq!(
            ConnectError::from_errno(libc::EHOSTUNREACH),
            ConnectError::Unreachable
        );
        assert_eq!(
            ConnectError::from_errno(libc::ETIMEDOUT),
            ConnectError::TimedOut
        );
        assert_eq!(
            ConnectError::from_errno(libc::EACCES),
            ConnectError::Os(libc::EACCES)
        );
        assert!(ConnectError::Os(libc::EACCES)
            .to_string()
            .contains("ermission"));
    }

    #[test]
    fn addresses_are_tried_in_order() {
        let a = Address::parse("127.0.0.1:1").expect("addr");
        let b = Address::parse("unix:@b").expect("addr");
        let mut r =
            ConnectRequest::new(vec![a.clone(), b.clone()], Duration::from_secs(1), 7, false);
        assert_eq!(r.addr(), Some(&a));
        assert!(r.advance());
        assert_eq!(r.addr(), Some(&b));
        assert!(!r.advance());
        assert_eq!(r.addr(), None);
    }
}
