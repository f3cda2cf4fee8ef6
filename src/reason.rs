//! Why a connection closed: [`CloseReason`], given to
//! [`Handler::on_close`](crate::Handler::on_close), and whether a close for
//! it is graceful.

use std::io;

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer ended its side of the stream (recv returned 0).
    PeerClosed,
    /// The handler called `Conn::close`.
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
    /// The TLS session failed: the peer's bytes were not TLS, it sent an
    /// alert, its certificate was refused, or no common version or cipher
    /// suite; the text is rustls' (the alert sent or received is named).
    Tls(String),
    /// The TLS handshake did not complete within
    /// `Config::tls_handshake_timeout`.
    TlsHandshakeTimeout,
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
        !matches!(
            self,
            CloseReason::Error(_)
                | CloseReason::InputLimit { .. }
                | CloseReason::Tls(_)
                | CloseReason::TlsHandshakeTimeout
        )
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
            CloseReason::Tls(why) => write!(f, "TLS: {why}"),
            CloseReason::TlsHandshakeTimeout => f.write_str("TLS handshake timed out"),
        }
    }
}
