//! Listening sockets, made with socket2.
//!
//! `SO_REUSEADDR` is set before every bind so a restarted server does not wait
//! out TIME_WAIT; `SO_REUSEPORT` on request; an IPv6 wildcard (`::`) listens
//! dual-stack (IPV6_V6ONLY off) unless asked otherwise; a port that is taken
//! is reported as [`Error::AddressInUse`], distinct from other bind failures.
//! TCP_NODELAY, SO_RCVBUF and SO_SNDBUF are set on the listener, and Linux
//! copies them into every accepted socket, so no per-connection setsockopt is
//! needed.
//!
//! The kernel quietly caps what it is asked for: a backlog at
//! `net.core.somaxconn`, a buffer size at `net.core.rmem_max` /
//! `net.core.wmem_max` (it stores twice the request, for its bookkeeping,
//! so `getsockopt` reports double; see socket(7)). A request above the cap
//! is logged once per process with the value that applies.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

use crate::address::Address;
use crate::error::Error;

mod spec;
mod unix;

pub(crate) use spec::{adopt, open, Opened};
pub use spec::{systemd_listeners, ListenSource, ListenerSpec};
pub(crate) use unix::SocketFile;

/// Options of a listening socket (and, through inheritance, of the streams
/// it accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Also set SO_REUSEPORT, so several sockets can listen on the port.
    pub reuseport: bool,
    /// `listen(2)` backlog (the kernel caps it at `net.core.somaxconn`).
    pub backlog: i32,
    /// TCP_NODELAY on accepted streams.
    pub nodelay: bool,
    /// For an IPv6 address: accept IPv6 only (IPV6_V6ONLY). Off by default,
    /// so `[::]` also accepts IPv4 clients as v4-mapped addresses.
    pub only_v6: bool,
    /// SO_RCVBUF for the listener and accepted streams (`None`: the
    /// kernel's default and autotuning).
    pub recv_buffer_size: Option<usize>,
    /// SO_SNDBUF for the listener and accepted streams.
    pub send_buffer_size: Option<usize>,
    /// For a Unix socket path: the socket file's permission bits (as for
    /// chmod(2), e.g. `0o660`), set after binding and before listening.
    /// `None`: as the process umask leaves them.
    pub unix_mode: Option<u32>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuseport: false,
            backlog: 1024,
            nodelay: true,
            only_v6: false,
            recv_buffer_size: None,
            send_buffer_size: None,
            unix_mode: None,
        }
    }
}

pub(crate) type ListenOpts = ListenOptions;

/// Create, configure, bind and listen. The socket is left blocking: io_uring
/// waits on it by polling, and a blocking socket never hands an operation
/// back with EAGAIN. A Unix path listener is given in [`Listening::file`]'s
/// guard, which removes the socket file when dropped.
pub(crate) fn listen(addr: &Address, opts: ListenOpts) -> Result<Listening, Error> {
    let bind_err = |source| Error::bind(addr.clone(), source);
    let sa = addr.to_sock_addr().map_err(bind_err)?;
    let (domain, protocol) = addr.stream_domain();
    let sock = Socket::new(domain, Type::STREAM.cloexec(), protocol).map_err(bind_err)?;
    if let Address::Inet(a) = addr {
        sock.set_reuse_address(true).map_err(bind_err)?;
        if opts.reuseport {
            sock.set_reuse_port(true).map_err(bind_err)?;
        }
        if opts.nodelay {
            sock.set_tcp_nodelay(true).map_err(bind_err)?;
        }
        if a.is_ipv6() {
            sock.set_only_v6(opts.only_v6).map_err(bind_err)?;
        }
    }
    set_buffer_sizes(&sock, &opts).map_err(bind_err)?;
    if let Some(path) = addr.unix_path() {
        unix::remove_stale(addr, path)?;
    }
    sock.bind(&sa).map_err(bind_err)?;
    let file = match addr.unix_path() {
        Some(path) => {
            let file = SocketFile::new(path).map_err(bind_err)?;
            if let Some(mode) = opts.unix_mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(bind_err)?;
            }
            Some(file)
        }
        None => None,
    };
    sock.listen(opts.backlog).map_err(bind_err)?;
    warn_if_backlog_capped(opts.backlog);
    Ok(Listening { sock, file })
}

/// A socket [`listen`] made, and the socket file to remove with it.
pub(crate) struct Listening {
    pub(crate) sock: Socket,
    pub(crate) file: Option<SocketFile>,
}

/// SO_RCVBUF and SO_SNDBUF as `opts` asks, each logged once if capped.
fn set_buffer_sizes(sock: &Socket, opts: &ListenOpts) -> io::Result<()> {
    if let Some(n) = opts.recv_buffer_size {
        sock.set_recv_buffer_size(n)?;
        warn_if_capped(
            n,
            sock.recv_buffer_size(),
            &RCVBUF_WARNED,
            "SO_RCVBUF",
            "rmem_max",
        );
    }
    if let Some(n) = opts.send_buffer_size {
        sock.set_send_buffer_size(n)?;
        warn_if_capped(
            n,
            sock.send_buffer_size(),
            &SNDBUF_WARNED,
            "SO_SNDBUF",
            "wmem_max",
        );
    }
    Ok(())
}

fn warn_if_backlog_capped(backlog: i32) {
    if let Some(cap) = read_somaxconn().and_then(|max| backlog_cap(backlog, max)) {
        warn_once(
            &BACKLOG_WARNED,
            format_args!(
                "listen backlog {backlog} is above net.core.somaxconn; the kernel applies {cap}"
            ),
        );
    }
}

/// Where the kernel's cap on `listen(2)` backlogs is read.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

// Whether each kind of cap has been logged. Relaxed: each flag guards only
// itself (at most one warning per kind), and orders no other memory.
static BACKLOG_WARNED: AtomicBool = AtomicBool::new(false);
static RCVBUF_WARNED: AtomicBool = AtomicBool::new(false);
static SNDBUF_WARNED: AtomicBool = AtomicBool::new(false);

/// Log `msg` as a warning unless `flag` says it has been already.
fn warn_once(flag: &AtomicBool, msg: std::fmt::Arguments<'_>) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::warn!("{msg}");
    }
}

/// Log once per process (per `flag`) that a socket buffer of `requested`
/// bytes was capped by `net.core.<sysctl>`, as the size read back
/// (`reported`, which the kernel doubles for its bookkeeping) shows.
fn warn_if_capped(
    requested: usize,
    reported: io::Result<usize>,
    flag: &AtomicBool,
    option: &str,
    sysctl: &str,
) {
    if let Some((applied, cap)) = reported
        .ok()
        .and_then(|r| buffer_cap(requested, r).map(|c| (r, c)))
    {
        warn_once(
            flag,
            format_args!(
                "{option} of {requested} bytes is above net.core.{sysctl}; the kernel applies {cap} ({applied} with its bookkeeping)"
            ),
        );
    }
}

/// `net.core.somaxconn`, or `None` where it cannot be read.
fn read_somaxconn() -> Option<i32> {
    std::fs::read_to_string(SOMAXCONN).ok()?.trim().parse().ok()
}

/// The backlog the kernel applies when `requested` is above `somaxconn`
/// (`None`: the request applies as it is).
fn backlog_cap(requested: i32, somaxconn: i32) -> Option<i32> {
    (somaxconn > 0 && requested > somaxconn).then_some(somaxconn)
}

/// The buffer size that applies when a request of `requested` bytes was
/// capped, given what `getsockopt` reports afterwards (`reported`: the
/// kernel stores and reports twice the size it applies). `None`: the
/// request applies (or was raised to the kernel's minimum).
fn buffer_cap(requested: usize, reported: usize) -> Option<usize> {
    (reported < requested.saturating_mul(2)).then_some(reported / 2)
}

/// Fail with [`Error::AddressInUse`] if a socket of type `ty` (TCP stream
/// or UDP datagram) holds `addr` (port 0 always passes): a bind without
/// SO_REUSEPORT, released at once. Servers that bind with SO_REUSEPORT call
/// it first, or a port another SO_REUSEPORT server holds would be shared
/// silently instead of reported.
pub(crate) fn probe_free(addr: SocketAddr, ty: Type) -> Result<(), Error> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), ty.cloexec(), None)?;
    if ty == Type::STREAM {
        // TCP: a port in TIME_WAIT is free. (For UDP, SO_REUSEADDR on both
        // sides would let the probe share a held port.)
        probe.set_reuse_address(true)?;
    }
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(Error::AddressInUse(addr.into())),
        _ => Ok(()),
    }
}

/// `addr`, with port 0 replaced by a port no socket of type `ty` uses. The
/// kernel's own port-0 choice for UDP does not count sockets that set
/// SO_REUSEADDR as users of a port when the new one sets it too, so two
/// reuseport servers could be handed the same port and share each other's
/// traffic; a bind without those options, released at once, picks a port
/// that is really free.
pub(crate) fn exclusive_port(addr: SocketAddr, ty: Type) -> io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = Socket::new(Domain::for_address(addr), ty.cloexec(), None)?;
    probe.bind(&addr.into())?;
    local_addr(&probe)
}

/// The address a socket is bound to (with the real port after port 0).
pub(crate) fn local_addr(sock: &Socket) -> io::Result<SocketAddr> {
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_found_from_what_the_kernel_reports() {
        assert_eq!(backlog_cap(1024, 4096), None);
        assert_eq!(backlog_cap(4096, 4096), None);
        assert_eq!(backlog_cap(65536, 4096), Some(4096));
        assert_eq!(backlog_cap(65536, 0), None);
        // Applied as asked: reported doubled.
        assert_eq!(buffer_cap(65536, 131072), None);
        // Raised to the kernel's minimum: not a cap.
        assert_eq!(buffer_cap(1, 4608), None);
        // Capped at rmem_max = 212992.
        assert_eq!(buffer_cap(1 << 30, 425984), Some(212992));
    }

    fn loopback() -> Address {
        Address::parse("127.0.0.1:0").expect("addr")
    }

    #[test]
    fn a_capped_buffer_still_listens() {
        let opts = ListenOpts {
            backlog: i32::MAX,
            recv_buffer_size: Some(1 << 30),
            send_buffer_size: Some(1 << 30),
            ..ListenOpts::default()
        };
        let l = listen(&loopback(), opts).expect("listen");
        assert!(l.sock.recv_buffer_size().expect("SO_RCVBUF") > 0);
    }

    #[test]
    fn port_zero_reports_the_real_port_and_a_taken_port_is_address_in_use() {
        let opts = ListenOpts {
            backlog: 16,
            ..ListenOpts::default()
        };
        let a = listen(&loopback(), opts).expect("bind");
        let addr = local_addr(&a.sock).expect("local addr");
        assert_ne!(addr.port(), 0);
        match listen(&addr.into(), opts) {
            Err(Error::AddressInUse(x)) => assert_eq!(x, addr),
            Err(e) => panic!("expected AddressInUse, got {e}"),
            Ok(_) => panic!("expected AddressInUse, got a listener"),
        }
    }

    #[test]
    fn reuseport_listeners_share_a_port() {
        let opts = ListenOpts {
            reuseport: true,
            backlog: 16,
            ..ListenOpts::default()
        };
        let a = listen(&loopback(), opts).expect("bind");
        let addr = local_addr(&a.sock).expect("local addr");
        let b = listen(&addr.into(), opts).expect("second reuseport bind");
        assert_eq!(local_addr(&b.sock).expect("addr"), addr);
    }
}
