//! Socket addresses of either family the engine serves: an IP socket
//! address, or a Unix domain socket address (a path in the file system, a
//! name in Linux's abstract namespace, or unnamed).
//!
//! Written as text, a Unix address is `unix:/run/app.sock` (a path; a
//! relative path is relative to the working directory) or `unix:@app` (the
//! abstract name `app`: no file, gone when its last socket closes). Every
//! function that takes an endpoint accepts these forms where a Unix socket
//! makes sense (see `ToEndpoint::to_addresses`).
//!
//! ```
//! use ringnet::{Address, UnixAddr};
//!
//! let a: Address = "unix:@ringnet-doc".parse()?;
//! assert_eq!(a, Address::Unix(UnixAddr::Abstract(b"ringnet-doc".to_vec())));
//! assert_eq!(a.to_string(), "unix:@ringnet-doc");
//! let b: Address = "127.0.0.1:80".parse()?;
//! assert_eq!(b.as_inet(), Some("127.0.0.1:80".parse()?));
//! // sun_path holds 108 bytes with its terminating NUL.
//! assert!(format!("unix:/{}", "x".repeat(107)).parse::<Address>().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use socket2::SockAddr;

/// The longest Unix socket path or abstract name, in bytes: `sun_path` is
/// 108 bytes and a path needs its terminating NUL (an abstract name spends
/// the first byte on its marker).
pub const UNIX_PATH_MAX: usize = 107;

/// The prefix that marks a Unix socket address in an endpoint string.
pub const UNIX_PREFIX: &str = "unix:";

/// A Unix domain socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file at this path.
    Path(PathBuf),
    /// A name in the abstract namespace (without its leading NUL).
    Abstract(Vec<u8>),
    /// No name: a client socket that was never bound.
    Unnamed,
}

/// An IP or a Unix domain socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 socket address.
    Inet(SocketAddr),
    /// A Unix domain socket address.
    Unix(UnixAddr),
}

impl Address {
    /// The IP socket address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            Address::Unix(_) => None,
        }
    }

    /// Whether this is a Unix domain socket address.
    pub fn is_unix(&self) -> bool {
        matches!(self, Address::Unix(_))
    }

    /// The socket file's path, for a Unix address with one.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(UnixAddr::Path(p)) => Some(p),
            _ => None,
        }
    }

    /// The domain and protocol of a stream socket for this address: TCP
    /// over IPv4 or IPv6, or a Unix stream socket.
    pub(crate) fn stream_domain(&self) -> (socket2::Domain, Option<socket2::Protocol>) {
        match self {
            Address::Inet(a) => (
                socket2::Domain::for_address(*a),
                Some(socket2::Protocol::TCP),
            ),
            Address::Unix(_) => (socket2::Domain::UNIX, None),
        }
    }

    /// The address in the kernel's form. A Unix path or name that does not
    /// fit in `sun_path` is an `InvalidInput` error (also checked when
    /// parsing); an unnamed address cannot be bound or connected to.
    pub fn to_sock_addr(&self) -> io::Result<SockAddr> {
        match self {
            Address::Inet(a) => Ok(SockAddr::from(*a)),
            Address::Unix(UnixAddr::Path(p)) => {
                let len = p.as_os_str().len();
                if !unix_len_fits(len) {
                    return Err(too_long(len));
                }
                SockAddr::unix(p)
            }
            Address::Unix(UnixAddr::Abstract(name)) => {
                if !unix_len_fits(name.len()) {
                    return Err(too_long(name.len()));
                }
                // A leading NUL marks the abstract namespace.
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(std::ffi::OsStr::from_bytes(&bytes))
            }
            Address::Unix(UnixAddr::Unnamed) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an unnamed Unix socket address cannot be bound or connected to",
            )),
        }
    }

    /// The address the kernel reported (`getsockname`, `getpeername`,
    /// `accept`): IP or Unix; any other family is `InvalidData`.
    pub fn from_sock_addr(sa: &SockAddr) -> io::Result<Address> {
        if let Some(a) = sa.as_socket() {
            return Ok(Address::Inet(a));
        }
        if sa.is_unix() {
            if let Some(p) = sa.as_pathname() {
                return Ok(Address::Unix(UnixAddr::Path(p.to_path_buf())));
            }
            if let Some(name) = sa.as_abstract_namespace() {
                return Ok(Address::Unix(UnixAddr::Abstract(name.to_vec())));
            }
            return Ok(Address::Unix(UnixAddr::Unnamed));
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "neither an IP nor a Unix socket address",
        ))
    }
}

/// Whether a Unix path or abstract name of `len` bytes fits in `sun_path`.
pub(crate) fn unix_len_fits(len: usize) -> bool {
    len <= UNIX_PATH_MAX
}

/// The error for a Unix path or name that does not fit.
fn too_long(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("Unix socket path of {len} bytes is too long (at most {UNIX_PATH_MAX})"),
    )
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
            UnixAddr::Abstract(name) => {
                write!(f, "{UNIX_PREFIX}@{}", String::from_utf8_lossy(name))
            }
            UnixAddr::Unnamed => write!(f, "{UNIX_PREFIX}(unnamed)"),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => a.fmt(f),
            Address::Unix(u) => u.fmt(f),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Inet(a)
    }
}

/// An IP address equals the same [`SocketAddr`]; a Unix address none.
impl PartialEq<SocketAddr> for Address {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.as_inet() == Some(*other)
    }
}

impl From<UnixAddr> for Address {
    fn from(a: UnixAddr) -> Address {
        Address::Unix(a)
    }
}

/// The credentials of the process at the other end of a Unix socket
/// connection, as the kernel recorded them when it connected (SO_PEERCRED,
/// see unix(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Its process id (0 when the process is in another pid namespace
    /// that this one cannot see).
    pub pid: u32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

impl PeerCredentials {
    /// The credentials of `sock`'s peer; `InvalidInput` when it is not a
    /// Unix socket.
    pub(crate) fn of(sock: &socket2::Socket) -> io::Result<PeerCredentials> {
        use std::os::fd::AsRawFd;
        if sock.domain()? != socket2::Domain::UNIX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "peer credentials exist only for Unix sockets",
            ));
        }
        let (pid, uid, gid) = crate::sys::peer_credentials(sock.as_raw_fd())?;
        Ok(PeerCredentials { pid, uid, gid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_forms_round_trip() {
        for a in [
            Address::Inet("127.0.0.1:9".parse().expect("v4")),
            Address::Unix(UnixAddr::Path(PathBuf::from("/tmp/x.sock"))),
            Address::Unix(UnixAddr::Abstract(b"abs".to_vec())),
        ] {
            let sa = a.to_sock_addr().expect("to kernel form");
            assert_eq!(Address::from_sock_addr(&sa).expect("back"), a);
        }
    }

    #[test]
    fn a_path_too_long_for_sun_path_is_refused_before_any_syscall() {
        let fits = Address::Unix(UnixAddr::Path(PathBuf::from("y".repeat(UNIX_PATH_MAX))));
        fits.to_sock_addr().expect("fits in sun_path");
        let built = Address::Unix(UnixAddr::Path(PathBuf::from("y".repeat(200))));
        assert_eq!(
            built.to_sock_addr().expect_err("too long").kind(),
            io::ErrorKind::InvalidInput
        );
        let name = Address::Unix(UnixAddr::Abstract(vec![b'n'; UNIX_PATH_MAX + 1]));
        assert!(name.to_sock_addr().is_err());
        assert!(Address::Unix(UnixAddr::Unnamed).to_sock_addr().is_err());
    }
}
