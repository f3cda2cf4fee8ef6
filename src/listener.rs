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
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use socket2::{Domain, Socket, Type};

use crate::address::Address;
use crate::error::Error;

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
        remove_stale(addr, path)?;
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

/// Make way for a Unix listener at `path`: nothing there is fine; a socket
/// file nobody listens on (a crashed server's) is removed; a socket someone
/// listens on is [`Error::AddressInUse`]; anything else that is not a
/// socket is left alone and refused.
fn remove_stale(addr: &Address, path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let bind_err = |source| Error::bind(addr.clone(), source);
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(bind_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::AddressInUse(addr.clone())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(bind_err(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(bind_err(e)),
    }
}

/// The socket file of a Unix listener this process bound. Dropping it
/// removes the file, unless the path now names another file (a newer
/// server replaced it).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

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
}

impl ListenerSpec {
    /// Listen on `addr` with the engine-wide options.
    pub fn bind(addr: impl Into<Address>) -> ListenerSpec {
        ListenerSpec {
            source: ListenSource::Bind(addr.into()),
            options: None,
        }
    }

    /// Serve on the listening socket `fd`, keeping its options.
    pub fn adopt(fd: OwnedFd) -> ListenerSpec {
        ListenerSpec {
            source: ListenSource::Adopt(Arc::new(fd)),
            options: None,
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

    /// A fresh directory for socket files, removed afterwards.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("ringnet-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("mkdir");
            Dir(p)
        }

        fn sock(&self, name: &str) -> Address {
            Address::Unix(crate::UnixAddr::Path(self.0.join(name)))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_unix_socket_file_is_made_with_its_mode_and_removed_with_its_guard() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("unix-mode");
        let addr = dir.sock("a.sock");
        let path = addr.unix_path().expect("path").to_path_buf();
        let opts = ListenOpts {
            unix_mode: Some(0o640),
            ..ListenOpts::default()
        };
        let l = listen(&addr, opts).expect("listen");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        std::os::unix::net::UnixStream::connect(&path).expect("connect");
        drop(l.file);
        assert!(!path.exists(), "socket file left behind");
    }

    #[test]
    fn a_stale_socket_file_is_replaced_and_a_live_one_is_address_in_use() {
        let dir = Dir::new("unix-stale");
        let addr = dir.sock("s.sock");
        let path = addr.unix_path().expect("path").to_path_buf();
        // A server that went away without removing its file.
        let crashed = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(crashed);
        assert!(path.exists());
        let live = listen(&addr, ListenOpts::default()).expect("stale file replaced");
        match listen(&addr, ListenOpts::default()) {
            Err(Error::AddressInUse(a)) => assert_eq!(a, addr),
            Err(e) => panic!("expected AddressInUse, got {e}"),
            Ok(_) => panic!("a live socket file was replaced"),
        }
        // Still the first listener's file, and it still serves.
        std::os::unix::net::UnixStream::connect(&path).expect("live listener still there");
        drop(live);
    }

    #[test]
    fn a_unix_path_that_cannot_be_a_listener_is_refused_with_the_reason() {
        let dir = Dir::new("unix-bad");
        // A regular file is never removed.
        let file = dir.sock("plain");
        std::fs::write(file.unix_path().expect("path"), b"data").expect("write");
        match listen(&file, ListenOpts::default()) {
            Err(Error::Bind { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists)
            }
            Err(e) => panic!("expected Bind, got {e}"),
            Ok(_) => panic!("listened over a regular file"),
        }
        assert_eq!(
            std::fs::read(file.unix_path().expect("path")).expect("read"),
            b"data"
        );
        // A directory that does not exist.
        let missing = Address::Unix(crate::UnixAddr::Path(dir.0.join("no/such/dir/s.sock")));
        match listen(&missing, ListenOpts::default()) {
            Err(Error::Bind { source, addr }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(addr, missing);
            }
            Err(e) => panic!("expected Bind, got {e}"),
            Ok(_) => panic!("listened in a missing directory"),
        }
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed_by_the_old_guard() {
        let dir = Dir::new("unix-replaced");
        let addr = dir.sock("r.sock");
        let path = addr.unix_path().expect("path").to_path_buf();
        let old = listen(&addr, ListenOpts::default()).expect("listen");
        // Someone removed it and a newer server took the path.
        std::fs::remove_file(&path).expect("rm");
        let newer = listen(&addr, ListenOpts::default()).expect("newer");
        drop(old);
        assert!(path.exists(), "the newer server's file was removed");
        std::os::unix::net::UnixStream::connect(&path).expect("newer still reachable");
        drop(newer);
        assert!(!path.exists());
    }

    #[test]
    fn an_abstract_name_is_taken_once() {
        let addr =
            Address::parse(&format!("unix:@ringnet-test-{}", std::process::id())).expect("addr");
        let l = listen(&addr, ListenOpts::default()).expect("listen");
        assert!(l.file.is_none());
        assert_eq!(
            Address::from_sock_addr(&l.sock.local_addr().expect("name")).expect("addr"),
            addr
        );
        assert!(matches!(
            listen(&addr, ListenOpts::default()),
            Err(Error::AddressInUse(_))
        ));
    }

    #[test]
    fn only_listening_stream_sockets_are_adopted() {
        let l = listen(&loopback(), ListenOpts::default()).expect("listen");
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
