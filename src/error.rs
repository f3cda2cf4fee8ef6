//! The crate's error type.

use std::io;

use crate::address::Address;

/// Errors from starting or running the engine.
///
/// Each variant means one thing; match on the variant, not on the message.
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
    AddressInUse(Address),
    /// Any other failure to bind or listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: Address,
        /// What the kernel said.
        source: io::Error,
    },
    /// An endpoint string was rejected before any socket was made.
    #[error("bad endpoint: {0}")]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// An endpoint gave no address and no error (a [`ToEndpoint`] that
    /// breaks its contract; the crate's own fail with the reason instead),
    /// so there is nothing to bind.
    ///
    /// [`ToEndpoint`]: crate::endpoint::ToEndpoint
    #[error("the endpoint resolves to no address")]
    NoAddress,
    /// A configuration value is invalid (out of range, or not one of the
    /// values allowed); the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A worker failed with an I/O error: in its setup (pinning it to a CPU,
    /// building its ring or epoll set) or while serving.
    #[error("worker {worker}: {source}")]
    Worker {
        /// The worker index.
        worker: usize,
        /// What failed.
        source: io::Error,
    },
    /// A worker's thread panicked: in its setup (the handler factory, or the
    /// backend's set-up) or while serving (a handler callback). The panic
    /// message went to the panic hook (stderr by default).
    #[error("worker {worker} panicked")]
    WorkerPanicked {
        /// The worker index.
        worker: usize,
    },
    /// The worker asked to do something has stopped (it failed or panicked)
    /// and takes no more requests.
    #[error("worker {worker} has stopped")]
    WorkerStopped {
        /// The worker index.
        worker: usize,
    },
    /// TLS could not be set up (a certificate or key file, or what rustls
    /// made of them).
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// A failure to bind (or set up, or listen on) `addr`:
    /// [`Error::AddressInUse`] for EADDRINUSE, [`Error::Bind`] otherwise.
    pub(crate) fn bind(addr: impl Into<Address>, source: io::Error) -> Error {
        let addr = addr.into();
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
