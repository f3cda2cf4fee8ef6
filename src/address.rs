//! Socket addresses of either family the engine serves: an IP socket
//! address, or a Unix domain socket address (a path in the file system, a
//! name in Linux's abstract namespace, or unnamed).
//!
//! Written as text, a Unix address is `unix:/run/app.sock` (a path; a
//! relative path is relative to the working directory) or `unix:@app` (the
//! abstract name `app`: no file, gone when its last socket closes). Every
//! function that takes an endpoint accepts these forms where a Unix socket
//! makes sense (see [`ToEndpoint`](crate::endpoint::ToEndpoint)).
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
use std::str::FromStr;

use socket2::SockAddr;

use crate::endpoint::EndpointError;

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
                check_unix_len(p.as_os_str().as_bytes()).map_err(io::Error::from)?;
                SockAddr::unix(p)
            }
            Address::Unix(UnixAddr::Abstract(name)) => {
                check_unix_len(name).map_err(io::Error::from)?;
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

    /// Parse `unix:/path`, `unix:@name` or an IP socket address literal
    /// (`1.2.3.4:80`, `[::1]:80`; no name lookup: see
    /// [`Endpoint`](crate::Endpoint) for host names).
    pub fn parse(s: &str) -> Result<Address, EndpointError> {
        if let Some(unix) = parse_unix(s) {
            return unix.map(Address::Unix);
        }
        let ep = crate::Endpoint::parse(s)?;
        match ep.ip() {
            Some(ip) => Ok(Address::Inet(SocketAddr::new(ip, ep.port()))),
            None => Err(EndpointError::NotAnAddress(s.to_string())),
        }
    }
}

/// `Some` when `s` is written as a Unix address (starts with `unix:`), with
/// the address or why it is not one.
pub(crate) fn parse_unix(s: &str) -> Option<Result<UnixAddr, EndpointError>> {
    let rest = s.strip_prefix(UNIX_PREFIX)?;
    Some(if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            Err(EndpointError::EmptyUnixPath)
        } else {
            check_unix_len(name.as_bytes()).map(|()| UnixAddr::Abstract(name.as_bytes().to_vec()))
        }
    } else if rest.is_empty() {
        Err(EndpointError::EmptyUnixPath)
    } else if rest.contains('\0') {
        Err(EndpointError::NulInUnixPath)
    } else {
        check_unix_len(rest.as_bytes()).map(|()| UnixAddr::Path(PathBuf::from(rest)))
    })
}

fn check_unix_len(bytes: &[u8]) -> Result<(), EndpointError> {
    if bytes.len() > UNIX_PATH_MAX {
        return Err(EndpointError::UnixPathTooLong {
            len: bytes.len(),
            max: UNIX_PATH_MAX,
        });
    }
    Ok(())
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

impl FromStr for Address {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Address, EndpointError> {
        Address::parse(s)
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
    fn unix_forms_parse_and_print_back() {
        for s in ["unix:/tmp/a.sock", "unix:rel/a.sock", "unix:@name"] {
            let a = Address::parse(s).expect(s);
            assert!(a.is_unix());
            assert_eq!(a.to_string(), s);
        }
        assert_eq!(
            Address::parse("unix:/x").expect("path").unix_path(),
            Some(Path::new("/x"))
        );
    }

    #[test]
    fn bad_unix_forms_are_refused_with_the_reason() {
        assert_eq!(Address::parse("unix:"), Err(EndpointError::EmptyUnixPath));
        assert_eq!(Address::parse("unix:@"), Err(EndpointError::EmptyUnixPath));
        assert_eq!(
            Address::parse("unix:/a\0b"),
            Err(EndpointError::NulInUnixPath)
        );
        let long = format!("unix:/{}", "x".repeat(UNIX_PATH_MAX));
        assert_eq!(
            Address::parse(&long),
            Err(EndpointError::UnixPathTooLong {
                len: UNIX_PATH_MAX + 1,
                max: UNIX_PATH_MAX
            })
        );
        // The longest that fits.
        let fits = format!("unix:/{}", "x".repeat(UNIX_PATH_MAX - 1));
        let a = Address::parse(&fits).expect("fits");
        a.to_sock_addr().expect("fits in sun_path");
        // Built directly, a long path is still refused before any syscall.
        let built = Address::Unix(UnixAddr::Path(PathBuf::from("y".repeat(200))));
        assert_eq!(
            built.to_sock_addr().expect_err("too long").kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(Address::Unix(UnixAddr::Unnamed).to_sock_addr().is_err());
    }

    #[test]
    fn inet_literals_parse_and_names_do_not() {
        let a = Address::parse("[::1]:8080").expect("v6");
        assert_eq!(a.as_inet(), Some("[::1]:8080".parse().expect("addr")));
        assert_eq!(
            Address::parse("localhost:80"),
            Err(EndpointError::NotAnAddress("localhost:80".into()))
        );
        assert_eq!(Address::parse("1.2.3.4"), Err(EndpointError::MissingPort));
    }

    #[test]
    fn kernel_forms_round_trip() {
        for a in [
            Address::parse("127.0.0.1:9").expect("v4"),
            Address::parse("unix:/tmp/x.sock").expect("path"),
            Address::parse("unix:@abs").expect("abstract"),
        ] {
            let sa = a.to_sock_addr().expect("to kernel form");
            assert_eq!(Address::from_sock_addr(&sa).expect("back"), a);
        }
    }
}
