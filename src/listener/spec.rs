//! Engine listeners: where each socket comes from (bound, adopted, or
//! passed by a service manager) and opening them for the workers.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use socket2::{Domain, Socket, Type};

use super::unix::SocketFile;
use super::{
    listen, probe_free, set_buffer_sizes, warn_if_backlog_capped, ListenOptions, ListenOpts,
};
use crate::address::Address;
use crate::error::Error;

/// Check that `fd` is a listening stream socket of an IP or Unix family,
/// and take it; anything else is `InvalidInput` (and closed).
pub(crate) fn adopt(fd: OwnedFd) -> io::Result<Socket> {
    let sock = Socket::from(fd);
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a listening stream socket: {what}"),
        )
    };
    match sock.r#type() {
        Ok(t) if t == Type::STREAM => {}
        Ok(_) => return Err(invalid("not a stream socket")),
        Err(e) => return Err(invalid(&e.to_string())),
    }
    match sock.domain() {
        Ok(d) if d == Domain::IPV4 || d == Domain::IPV6 || d == Domain::UNIX => {}
        Ok(_) => return Err(invalid("neither an IP nor a Unix socket")),
        Err(e) => return Err(invalid(&e.to_string())),
    }
    if !sock.is_listener().map_err(|e| invalid(&e.to_string()))? {
        return Err(invalid("it is not listening"));
    }
    Ok(sock)
}

/// Apply `opts` to an adopted listener: TCP_NODELAY (IP), buffer sizes,
/// and the backlog (by listening again, which Linux allows).
pub(crate) fn configure_adopted(sock: &Socket, opts: &ListenOpts) -> io::Result<()> {
    if sock.domain()? != Domain::UNIX && opts.nodelay {
        sock.set_tcp_nodelay(true)?;
    }
    set_buffer_sizes(sock, opts)?;
    sock.listen(opts.backlog)?;
    warn_if_backlog_capped(opts.backlog);
    Ok(())
}

/// Where an engine listener's socket comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ListenSource {
    /// Bind this address: an IP address (port 0: a free port, reported by
    /// [`Engine::local_addrs`](crate::Engine::local_addrs)), a Unix socket
    /// path (a stale socket file is replaced; the file is removed when the
    /// engine stops) or an abstract Unix name.
    Bind(Address),
    /// Serve a listening socket made elsewhere: inherited from a parent
    /// process or a service manager (see [`systemd_listeners`]), or made by
    /// the caller. Every worker accepts on it. It is checked when the
    /// engine starts (a listening stream socket, IP or Unix) and kept
    /// open as long as this value or the engine is.
    Adopt(Arc<OwnedFd>),
}

/// One listener of an engine: where its socket comes from and its options.
///
/// ```
/// use ringnet::listener::ListenerSpec;
/// use ringnet::{Config, ListenOptions};
///
/// let public = ListenerSpec::bind("[::]:0".parse::<std::net::SocketAddr>()?);
/// let admin = ListenerSpec::bind("unix:@ringnet-admin-doc".parse::<ringnet::Address>()?)
///     .with_options(ListenOptions { backlog: 16, ..ListenOptions::default() });
/// let cfg = Config { listeners: vec![public, admin], ..Config::default() };
/// assert_eq!(cfg.listeners.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Where the socket comes from.
    pub source: ListenSource,
    /// Its own options. `None`: the engine-wide ones in [`Config`]
    /// (`listener`, `backlog`, `nodelay`, `only_v6`, `recv_buffer_size`,
    /// `send_buffer_size`) for a bound listener, and none at all for an
    /// adopted one, which keeps the options it was made with. `reuseport`
    /// gives each worker its own socket on an IP address (a Unix or an
    /// adopted listener is always one socket that every worker shares).
    ///
    /// [`Config`]: crate::Config
    pub options: Option<ListenOptions>,
    /// Speak TLS on its connections with this acceptor (`None`: plain).
    pub tls: Option<crate::tls::TlsAcceptor>,
}

impl ListenerSpec {
    /// Listen on `addr` with the engine-wide options.
    pub fn bind(addr: impl Into<Address>) -> ListenerSpec {
        ListenerSpec {
            source: ListenSource::Bind(addr.into()),
            options: None,
            tls: None,
        }
    }

    /// Serve on the listening socket `fd`, keeping its options.
    pub fn adopt(fd: OwnedFd) -> ListenerSpec {
        ListenerSpec {
            source: ListenSource::Adopt(Arc::new(fd)),
            options: None,
            tls: None,
        }
    }

    /// The same, serving TLS with `acceptor`.
    pub fn with_tls(self, acceptor: crate::tls::TlsAcceptor) -> ListenerSpec {
        ListenerSpec {
            tls: Some(acceptor),
            ..self
        }
    }

    /// The same, with its own options.
    pub fn with_options(self, options: ListenOptions) -> ListenerSpec {
        ListenerSpec {
            options: Some(options),
            ..self
        }
    }
}

/// An engine listener, open: its socket (one that every worker shares) or
/// sockets (one per worker, SO_REUSEPORT), the address it is bound to, and
/// the socket file to remove when the engine stops.
pub(crate) struct Opened {
    pub(crate) socks: Vec<Socket>,
    pub(crate) addr: Address,
    pub(crate) file: Option<SocketFile>,
}

/// Open `spec` for `workers` workers; `defaults` are the engine-wide
/// options for a bound listener without its own.
pub(crate) fn open(
    spec: &ListenerSpec,
    defaults: ListenOpts,
    workers: usize,
) -> Result<Opened, Error> {
    match &spec.source {
        ListenSource::Bind(addr) => {
            let opts = spec.options.unwrap_or(defaults);
            let reuseport = opts.reuseport && !addr.is_unix();
            if let (true, Address::Inet(a)) = (reuseport, addr) {
                // Sockets with SO_REUSEPORT (of the same user) share a port
                // without complaint, so another server already there would
                // go unnoticed. A probe without SO_REUSEPORT is refused by
                // any existing listener: reported as AddressInUse, like a
                // plain bind.
                probe_free(*a, Type::STREAM)?;
            }
            let first = listen(addr, opts)?;
            let bound = Address::from_sock_addr(&first.sock.local_addr()?)?;
            let mut socks = vec![first.sock];
            if reuseport {
                for _ in 1..workers {
                    socks.push(listen(&bound, opts)?.sock);
                }
            }
            Ok(Opened {
                socks,
                addr: bound,
                file: first.file,
            })
        }
        ListenSource::Adopt(fd) => {
            let sock = adopt(fd.try_clone()?)?;
            if let Some(opts) = &spec.options {
                configure_adopted(&sock, opts)?;
            }
            let addr = Address::from_sock_addr(&sock.local_addr()?)?;
            Ok(Opened {
                socks: vec![sock],
                addr,
                file: None,
            })
        }
    }
}

/// The listening sockets a service manager passed to this process with the
/// systemd socket-activation protocol (sd_listen_fds(3)): `LISTEN_FDS`
/// descriptors from 3 on, meant for this process when `LISTEN_PID` is its
/// pid, named by `LISTEN_FDNAMES` (colon-separated; `None` where unnamed).
///
/// Empty when the variables are absent or name another process (a parent
/// that forgot to unset them): those descriptors are not ours and are left
/// alone. They are taken at most once per process; a second call is an
/// error, as is a descriptor that is not open or not a listening stream
/// socket. Each is made close-on-exec.
pub fn systemd_listeners() -> Result<Vec<(Option<String>, OwnedFd)>, Error> {
    let var = |name: &str| std::env::var(name).ok();
    let Some(count) = sd_listen_count(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(Vec::new());
    };
    let names = var("LISTEN_FDNAMES");
    let names: Vec<&str> = names
        .as_deref()
        .map_or(Vec::new(), |n| n.split(':').collect());
    let fds = crate::sys::take_inherited_fds(SD_LISTEN_FDS_START, count)?;
    let mut out = Vec::with_capacity(fds.len());
    for (i, fd) in fds.into_iter().enumerate() {
        let sock = adopt(fd).map_err(|e| {
            Error::Config(format!(
                "LISTEN_FDS descriptor {}: {e}",
                SD_LISTEN_FDS_START + i as i32
            ))
        })?;
        sock.set_cloexec(true)?;
        let name = names
            .get(i)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string());
        out.push((name, OwnedFd::from(sock)));
    }
    Ok(out)
}

/// The first descriptor of the socket-activation protocol.
const SD_LISTEN_FDS_START: i32 = 3;

/// How many descriptors `LISTEN_FDS` passes to process `pid`: `None` when
/// they are not for it (no variables, or `LISTEN_PID` names another
/// process); an error when the values are not numbers.
fn sd_listen_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> Result<Option<usize>, Error> {
    let (Some(for_pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let for_pid: u32 = for_pid
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("LISTEN_PID must be a process id, got {for_pid:?}")))?;
    if for_pid != pid {
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("LISTEN_FDS must be a count, got {fds:?}")))?;
    if n > 4096 {
        return Err(Error::Config(format!(
            "LISTEN_FDS of {n} is more than 4096"
        )));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::super::listen;
    use super::*;

    #[test]
    fn only_listening_stream_sockets_are_adopted() {
        let loopback = Address::parse("127.0.0.1:0").expect("addr");
        let l = listen(&loopback, ListenOpts::default()).expect("listen");
        adopt(OwnedFd::from(l.sock)).expect("a listener is adopted");
        let udp = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("udp");
        let e = adopt(OwnedFd::from(udp)).expect_err("datagram");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let unbound = Socket::new(Domain::IPV4, Type::STREAM, None).expect("tcp");
        let e = adopt(OwnedFd::from(unbound)).expect_err("not listening");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let file = std::fs::File::open("/proc/self/stat").expect("file");
        let e = adopt(OwnedFd::from(file)).expect_err("a file");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn listen_pid_decides_whose_descriptors_they_are() {
        assert_eq!(sd_listen_count(None, None, 7).expect("none"), None);
        assert_eq!(sd_listen_count(Some("7"), None, 7).expect("no fds"), None);
        assert_eq!(
            sd_listen_count(Some("8"), Some("2"), 7).expect("other"),
            None
        );
        assert_eq!(
            sd_listen_count(Some("7"), Some("2"), 7).expect("ours"),
            Some(2)
        );
        assert!(sd_listen_count(Some("x"), Some("2"), 7).is_err());
        assert!(sd_listen_count(Some("7"), Some("-1"), 7).is_err());
        assert!(sd_listen_count(Some("7"), Some("99999"), 7).is_err());
    }
}
