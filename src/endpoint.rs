//! Endpoints: the `host:port` strings (and other address forms) accepted
//! wherever ringnet takes an address.
//!
//! [`Endpoint::parse`] is sans-IO: it checks the text (a port is present, is
//! a number and fits in 16 bits; the host is not empty; brackets balance; an
//! IPv6 literal is bracketed, as in `[::1]:80`) and keeps the host as given.
//! [`Endpoint::resolve`] then turns it into socket addresses: an IP literal
//! without any lookup, a name through the system resolver
//! ([`std::net::ToSocketAddrs`], that is getaddrinfo(3)).
//!
//! [`ToEndpoint`] is what address-taking functions accept: a [`SocketAddr`],
//! a string, an `(host, port)` pair, an [`Endpoint`], or a list of socket
//! addresses. A string is validated before anything else happens, so
//! `"localhost"` fails with [`EndpointError::MissingPort`] before a socket
//! exists.
//!
//! ```
//! use ringnet::endpoint::{Endpoint, EndpointError};
//!
//! let ep = Endpoint::parse("[::1]:8080")?;
//! assert_eq!((ep.host(), ep.port()), ("::1", 8080));
//! assert_eq!(ep.to_string(), "[::1]:8080");
//! assert_eq!(Endpoint::parse("localhost"), Err(EndpointError::MissingPort));
//! assert!(Endpoint::parse("127.0.0.1:0")?.resolve()?[0].ip().is_loopback());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use crate::address::{Address, UnixAddr, UNIX_PATH_MAX, UNIX_PREFIX};

/// Why an endpoint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// No `:port` after the host (`"localhost"`, `"host:"`, `"[::1]"`).
    #[error("missing port: expected host:port or [ipv6]:port")]
    MissingPort,
    /// The port is not a decimal number from 0 to 65535.
    #[error("bad port {0:?}: expected a number from 0 to 65535")]
    BadPort(String),
    /// Nothing before the `:port` (`":80"`, `"[]:80"`).
    #[error("empty host")]
    EmptyHost,
    /// A `[` without its `]`, or the reverse, or brackets in a host name.
    #[error("unbalanced brackets: an IPv6 address is written [addr]:port")]
    UnbalancedBrackets,
    /// An IPv6 address without brackets (`"::1:80"`).
    #[error("an IPv6 address needs brackets: [addr]:port")]
    Ipv6NeedsBrackets,
    /// The text inside brackets is not an IPv6 address.
    #[error("{0:?} is not an IPv6 address")]
    BadIpv6(String),
    /// An address literal was needed and a host name was given
    /// ([`Address::parse`](crate::Address::parse) does no lookup).
    #[error("{0:?} is not an IP address literal with a port, nor unix:PATH")]
    NotAnAddress(String),
    /// `unix:` or `unix:@` with nothing after it.
    #[error("empty Unix socket path: expected unix:/path or unix:@name")]
    EmptyUnixPath,
    /// A Unix socket path with a NUL byte in it.
    #[error("a Unix socket path cannot hold a NUL byte")]
    NulInUnixPath,
    /// A Unix socket path or abstract name longer than `sun_path` holds.
    #[error("Unix socket path of {len} bytes is too long (at most {max})")]
    UnixPathTooLong {
        /// Its length in bytes.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// A Unix socket address where only an IP address can be used (UDP,
    /// or a caller that asked for IP addresses).
    #[error("{0} is a Unix socket address; an IP endpoint (host:port) is needed here")]
    UnixNotAllowed(String),
}

impl From<EndpointError> for io::Error {
    fn from(e: EndpointError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// A validated `host:port`. The host is kept as given (a name, an IPv4
/// address, or an IPv6 address without its brackets) and resolved only by
/// [`Endpoint::resolve`].
///
/// ```
/// use ringnet::Endpoint;
///
/// let ep: Endpoint = "localhost:0".parse()?;
/// assert_eq!((ep.host(), ep.port()), ("localhost", 0));
/// assert!(ep.resolve()?.iter().all(|a| a.ip().is_loopback()));
/// assert_eq!(Endpoint::parse("[::1]:80")?.ip(), Some("::1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parse `host:port`, `ipv4:port` or `[ipv6]:port` without any I/O.
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or(EndpointError::UnbalancedBrackets)?;
            if inside.contains('[') || after.contains(['[', ']']) {
                return Err(EndpointError::UnbalancedBrackets);
            }
            if inside.is_empty() {
                return Err(EndpointError::EmptyHost);
            }
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(EndpointError::BadIpv6(inside.to_string()));
            }
            let port = after.strip_prefix(':').ok_or(EndpointError::MissingPort)?;
            (inside, port)
        } else {
            if s.contains(['[', ']']) {
                return Err(EndpointError::UnbalancedBrackets);
            }
            let (host, port) = s.rsplit_once(':').ok_or(EndpointError::MissingPort)?;
            if host.contains(':') {
                return Err(EndpointError::Ipv6NeedsBrackets);
            }
            if host.is_empty() {
                return Err(EndpointError::EmptyHost);
            }
            (host, port)
        };
        Ok(Endpoint {
            host: host.to_string(),
            port: parse_port(port)?,
        })
    }

    /// An endpoint from a host and a port. The host is checked as in
    /// [`Endpoint::parse`], except that an IPv6 address may be given with or
    /// without brackets.
    pub fn new(host: &str, port: u16) -> Result<Endpoint, EndpointError> {
        let bare = match host.strip_prefix('[') {
            Some(rest) => rest
                .strip_suffix(']')
                .ok_or(EndpointError::UnbalancedBrackets)?,
            None => host,
        };
        if bare.contains(['[', ']']) {
            return Err(EndpointError::UnbalancedBrackets);
        }
        if bare.is_empty() {
            return Err(EndpointError::EmptyHost);
        }
        if bare.contains(':') && bare.parse::<Ipv6Addr>().is_err() {
            return Err(EndpointError::BadIpv6(bare.to_string()));
        }
        Ok(Endpoint {
            host: bare.to_string(),
            port,
        })
    }

    /// The host as given (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (0 asks the OS for a free one when binding).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The socket addresses, in the resolver's order: an IP literal gives
    /// one without any lookup; a name is resolved with DNS (getaddrinfo).
    /// A name that resolves to nothing is an error (`NotFound`).
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Some(ip) = self.ip() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{self}: the name resolves to no address"),
            ));
        }
        Ok(addrs)
    }
}

fn parse_port(port: &str) -> Result<u16, EndpointError> {
    if port.is_empty() {
        return Err(EndpointError::MissingPort);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::BadPort(port.to_string()));
    }
    port.parse()
        .map_err(|_| EndpointError::BadPort(port.to_string()))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointError> {
        Endpoint::parse(s)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl Address {
    /// Parse `unix:/path`, `unix:@name` or an IP socket address literal
    /// (`1.2.3.4:80`, `[::1]:80`; no name lookup: see
    /// [`Endpoint`] for host names).
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

impl FromStr for Address {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Address, EndpointError> {
        Address::parse(s)
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
    if !crate::address::unix_len_fits(bytes.len()) {
        return Err(EndpointError::UnixPathTooLong {
            len: bytes.len(),
            max: UNIX_PATH_MAX,
        });
    }
    Ok(())
}

/// Anything that names one or more socket addresses: what ringnet's
/// address-taking functions accept.
///
/// Implemented for [`SocketAddr`] (and its V4/V6 forms), `(IpAddr, u16)`,
/// endpoint strings (`str`, `String`), `(&str, u16)` and `(String, u16)`,
/// [`Endpoint`], lists of socket addresses (`[SocketAddr]`, arrays,
/// `Vec<SocketAddr>`) and references to any of these. Strings are validated
/// with [`Endpoint::parse`] before any lookup; a validation error comes back
/// as an `InvalidInput` [`io::Error`] wrapping the [`EndpointError`].
///
/// Strings may also name a Unix domain socket (`unix:/path`,
/// `unix:@name`), as may an [`Address`]: [`to_addresses`] gives those to
/// the functions that can use them (engine listeners and connects, the
/// blocking `Server` and `Stream`), while [`to_addrs`] refuses them with
/// [`EndpointError::UnixNotAllowed`].
///
/// [`to_addresses`]: ToEndpoint::to_addresses
/// [`to_addrs`]: ToEndpoint::to_addrs
pub trait ToEndpoint {
    /// The IP addresses to try, in order (never empty on success).
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>>;

    /// The addresses to try, IP or Unix, in order (never empty on
    /// success). By default the IP addresses of [`to_addrs`](Self::to_addrs).
    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        Ok(self.to_addrs()?.into_iter().map(Address::Inet).collect())
    }
}

impl<T: ToEndpoint + ?Sized> ToEndpoint for &T {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        (**self).to_addrs()
    }

    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        (**self).to_addresses()
    }
}

impl ToEndpoint for Address {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        match self {
            Address::Inet(a) => Ok(vec![*a]),
            Address::Unix(_) => Err(EndpointError::UnixNotAllowed(self.to_string()).into()),
        }
    }

    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        Ok(vec![self.clone()])
    }
}

impl ToEndpoint for [Address] {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let mut all = Vec::with_capacity(self.len());
        for a in self {
            all.extend(a.to_addrs()?);
        }
        Ok(all)
    }

    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        Ok(self.to_vec())
    }
}

impl ToEndpoint for Vec<Address> {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.as_slice().to_addrs()
    }

    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        Ok(self.clone())
    }
}

impl ToEndpoint for Endpoint {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.resolve()
    }
}

impl ToEndpoint for str {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        if parse_unix(self).is_some() {
            return Err(EndpointError::UnixNotAllowed(self.to_string()).into());
        }
        Endpoint::parse(self)?.resolve()
    }

    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        match parse_unix(self) {
            Some(unix) => Ok(vec![Address::Unix(unix?)]),
            None => Ok(Endpoint::parse(self)?
                .resolve()?
                .into_iter()
                .map(Address::Inet)
                .collect()),
        }
    }
}

impl ToEndpoint for String {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.as_str().to_addrs()
    }

    fn to_addresses(&self) -> io::Result<Vec<Address>> {
        self.as_str().to_addresses()
    }
}

impl ToEndpoint for (&str, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Endpoint::new(self.0, self.1)?.resolve()
    }
}

impl ToEndpoint for (String, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Endpoint::new(&self.0, self.1)?.resolve()
    }
}

impl ToEndpoint for SocketAddr {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![*self])
    }
}

impl ToEndpoint for SocketAddrV4 {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::V4(*self)])
    }
}

impl ToEndpoint for SocketAddrV6 {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::V6(*self)])
    }
}

impl ToEndpoint for (IpAddr, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::from(*self)])
    }
}

impl ToEndpoint for (Ipv4Addr, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::from(*self)])
    }
}

impl ToEndpoint for (Ipv6Addr, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::from(*self)])
    }
}

impl ToEndpoint for [SocketAddr] {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        if self.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty list of addresses",
            ));
        }
        Ok(self.to_vec())
    }
}

impl<const N: usize> ToEndpoint for [SocketAddr; N] {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.as_slice().to_addrs()
    }
}

impl ToEndpoint for Vec<SocketAddr> {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.as_slice().to_addrs()
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
            Some(std::path::Path::new("/x"))
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
    fn good_inputs() {
        let table: &[(&str, &str, u16)] = &[
            ("127.0.0.1:80", "127.0.0.1", 80),
            ("localhost:0", "localhost", 0),
            ("example.com:65535", "example.com", 65535),
            ("[::1]:8080", "::1", 8080),
            ("[::]:0", "::", 0),
            ("[::ffff:127.0.0.1]:1", "::ffff:127.0.0.1", 1),
            ("host:007", "host", 7),
        ];
        for &(input, host, port) in table {
            let ep = Endpoint::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((ep.host(), ep.port()), (host, port), "{input}");
        }
    }

    #[test]
    fn bad_inputs_give_the_exact_error() {
        use EndpointError::*;
        let bad = |s: &str| BadPort(s.to_string());
        let table: Vec<(&str, EndpointError)> = vec![
            ("localhost", MissingPort),
            ("", MissingPort),
            ("host:", MissingPort),
            ("[::1]", MissingPort),
            ("[::1]:", MissingPort),
            ("[::1]80", MissingPort),
            (":80", EmptyHost),
            ("[]:80", EmptyHost),
            ("[::1:80", UnbalancedBrackets),
            ("::1]:80", UnbalancedBrackets),
            ("[[::1]]:80", UnbalancedBrackets),
            ("h[o]st:80", UnbalancedBrackets),
            ("::1:80", Ipv6NeedsBrackets),
            ("::1", Ipv6NeedsBrackets),
            ("[localhost]:80", BadIpv6("localhost".into())),
            ("host:65536", bad("65536")),
            ("host:-1", bad("-1")),
            ("host:+1", bad("+1")),
            ("host:abc", bad("abc")),
            ("host: 80", bad(" 80")),
            ("host:99999999999999999999", bad("99999999999999999999")),
        ];
        for (input, want) in table {
            assert_eq!(Endpoint::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:80", "[::1]:0", "localhost:9"] {
            assert_eq!(Endpoint::parse(s).expect("parse").to_string(), s);
        }
        let v6: SocketAddr = "[::1]:5".parse().expect("addr");
        assert_eq!(Endpoint::from(v6).to_string(), "[::1]:5");
    }

    #[test]
    fn new_checks_the_host() {
        assert_eq!(Endpoint::new("", 1), Err(EndpointError::EmptyHost));
        assert_eq!(Endpoint::new("[::1]", 1).expect("bracketed").host(), "::1");
        assert_eq!(Endpoint::new("::1", 1).expect("bare").host(), "::1");
        assert_eq!(
            Endpoint::new("[::1", 1),
            Err(EndpointError::UnbalancedBrackets)
        );
        assert_eq!(
            Endpoint::new("a:b", 1),
            Err(EndpointError::BadIpv6("a:b".into()))
        );
    }

    #[test]
    fn literals_resolve_without_lookup_and_localhost_is_loopback() {
        let v4 = Endpoint::parse("127.0.0.1:7")
            .expect("parse")
            .resolve()
            .expect("resolve");
        assert_eq!(v4, vec!["127.0.0.1:7".parse::<SocketAddr>().expect("addr")]);
        let v6 = Endpoint::parse("[::1]:0")
            .expect("parse")
            .resolve()
            .expect("resolve");
        assert_eq!(v6, vec!["[::1]:0".parse::<SocketAddr>().expect("addr")]);
        let local = "localhost:0".to_addrs().expect("resolve localhost");
        assert!(!local.is_empty());
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 0));
    }

    #[test]
    fn strings_are_validated_before_lookup() {
        let err = "localhost".to_addrs().expect_err("no port");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<EndpointError>());
        assert_eq!(inner, Some(&EndpointError::MissingPort));
        assert!(Vec::<SocketAddr>::new().to_addrs().is_err());
    }
}
