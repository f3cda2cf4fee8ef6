//! The crate's error type.

use std::io;
use std::net::SocketAddr;

/// Errors from starting or running the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// io_uring cannot be set up here (the reason names the errno and cause).
    #[error("io_uring unavailable: {0}")]
    UringUnavailable(String),
    /// The kernel lacks a feature the backend needs.
    #[error("kernel lacks {feature}: {detail}")]
    Unsupported {
        /// The missing feature.
        feature: &'static str,
        /// What the setup attempt returned.
        detail: String,
    },
    /// The listening address is taken by another socket.
    #[error("address {0} is already in use")]
    AddressInUse(SocketAddr),
    /// Any other failure to bind or listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// An endpoint string was rejected before any socket was made.
    #[error("bad endpoint: {0}")]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A worker thread failed.
    #[error("worker {worker}: {source}")]
    Worker {
        /// The worker index.
        worker: usize,
        /// What failed.
        source: io::Error,
    },
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// A failure to bind (or set up, or listen on) `addr`:
    /// [`Error::AddressInUse`] for EADDRINUSE, [`Error::Bind`] otherwise.
    pub(crate) fn bind(addr: SocketAddr, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::AddrInUse {
            Error::AddressInUse(addr)
        } else {
            Error::Bind { addr, source }
        }
    }

    /// Turn an error from resolving an endpoint into [`Error::Endpoint`] when
    /// it was a rejected string, [`Error::Io`] otherwise.
    pub fn from_resolve(e: io::Error) -> Error {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::endpoint::EndpointError>())
        {
            Some(bad) => Error::Endpoint(bad.clone()),
            None => Error::Io(e),
        }
    }
}
