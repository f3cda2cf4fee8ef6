//! Listeners and addresses, on both backends: several listeners of every
//! kind (IPv4, IPv6, Unix path, abstract Unix name) in one engine, each
//! connection knowing its listener's index; the life of a Unix socket file
//! (its mode, removed on shutdown, a stale one replaced, a live one
//! `AddressInUse`); Unix paths that cannot be listened on; peer credentials
//! and addresses of Unix and TCP connections; an engine without listeners
//! that connects out over TCP and Unix sockets; adopted listening sockets
//! (served, refused when not listening, and still open after the engine
//! stops, so a second engine serves the clients that waited in the
//! backlog); and a listener failing in the middle of the list, which
//! releases the ones opened before it.
//!
//! No test asserts how long anything took: each waits for events, with
//! generous limits only there so a broken feature fails instead of hanging.
//! Socket files live in a fresh directory per test and backend, removed by
//! a guard; abstract names carry the test, the backend and the pid.

mod util;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ringnet::endpoint::EndpointError;
use ringnet::listener::ListenerSpec;
use ringnet::{
    Address, Backend, Config, Conn, ConnId, ConnectError, Engine, Error, Handler, ListenOptions,
    PeerCredentials, UnixAddr,
};
use util::*;

/// How long any awaited event may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers

/// A fresh directory for one test's socket files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str, backend: Backend) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ringnet-listeners-{test}-{backend}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The Unix address of the socket file `name` in this directory.
    fn addr(&self, name: &str) -> Address {
        Address::Unix(UnixAddr::Path(self.path(name)))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An abstract Unix name unique to this test, backend and process.
fn abstract_addr(test: &str, backend: Backend) -> Address {
    let name = format!("ringnet-listeners-{test}-{backend}-{}", std::process::id());
    Address::Unix(UnixAddr::Abstract(name.into_bytes()))
}

fn ip(s: &str) -> Address {
    Address::Inet(s.parse().expect("IP socket address"))
}

/// A client stream of either family.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// Connect a std Unix stream to a path or abstract name, with timeouts.
fn dial_unix(addr: &UnixAddr) -> io::Result<UnixStream> {
    let s = match addr {
        UnixAddr::Path(p) => UnixStream::connect(p)?,
        UnixAddr::Abstract(name) => {
            UnixStream::connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)?
        }
        UnixAddr::Unnamed => panic!("cannot connect to an unnamed address"),
    };
    s.set_read_timeout(Some(LIMIT))?;
    s.set_write_timeout(Some(LIMIT))?;
    Ok(s)
}

/// Connect a std client to `addr`, TCP or Unix.
fn dial(addr: &Address) -> Box<dyn Duplex> {
    match addr {
        Address::Inet(a) => Box::new(connect(*a)),
        Address::Unix(u) => Box::new(dial_unix(u).expect("connect to the Unix listener")),
    }
}

/// Read one `\n`-terminated line, byte by byte (so nothing after it is
/// taken from the stream), without its `\n`.
fn read_line(s: &mut dyn Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        s.read_exact(&mut b).expect("read a line");
        if b[0] == b'\n' {
            return String::from_utf8(line).expect("utf-8 line");
        }
        line.push(b[0]);
    }
}

/// Send `msg` and read exactly its echo.
fn roundtrip(s: &mut dyn Duplex, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("read the echo");
    assert_eq!(got, msg, "echoed bytes");
}

/// Read the listener index the [`Indexed`] handler greets with, check it,
/// then check an echo round trip.
fn check_greeting_and_echo(s: &mut dyn Duplex, index: usize, msg: &[u8]) {
    assert_eq!(read_line(s), index.to_string(), "the listener's index");
    roundtrip(s, msg);
}

/// Greets each connection with its listener's index (`none` for an
/// outbound one) and a newline, then echoes.
struct Indexed;

impl Handler for Indexed {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let line = match conn.listener() {
            Some(i) => format!("{i}\n"),
            None => "none\n".to_string(),
        };
        conn.send(line.as_bytes());
    }
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

fn start_indexed(cfg: Config) -> Engine {
    let asked = cfg.backend;
    let engine = Engine::start(cfg, |_| Indexed).expect("engine starts");
    assert_eq!(
        ringnet::BackendChoice::from(engine.backend()),
        asked,
        "engine runs on the backend asked for"
    );
    engine
}

/// A config with these listeners and the test defaults otherwise.
fn with_listeners(backend: Backend, listeners: Vec<ListenerSpec>) -> Config {
    Config {
        listeners,
        ..config(backend)
    }
}

/// `Engine::start`'s error, for a start that must fail.
#[track_caller]
fn start_error(cfg: Config) -> Error {
    match Engine::start(cfg, |_| Indexed) {
        Ok(engine) => panic!("the engine started on {:?}", engine.local_addrs()),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_in_use(err: Error, addr: &Address) {
    match err {
        Error::AddressInUse(a) => assert_eq!(&a, addr, "the address named"),
        e => panic!("expected AddressInUse({addr}), got {e:?}"),
    }
}

#[track_caller]
fn assert_bind_error(err: Error, addr: &Address, kind: io::ErrorKind) {
    match err {
        Error::Bind { addr: a, source } => {
            assert_eq!(&a, addr, "the address named");
            assert_eq!(source.kind(), kind, "the reason: {source}");
        }
        e => panic!("expected Bind({addr}, {kind:?}), got {e:?}"),
    }
}

/// Whether a TCP listener can be bound on `addr` now (it is not held).
fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// A free port on 127.0.0.1, chosen by the kernel and released.
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

// ---------------------------------------------------------------------------
// 1. Several listeners at once

fn several_listeners_at_once(backend: Backend, workers: usize) {
    let dir = TempDir::new(&format!("several-{workers}"), backend);
    let unix = dir.addr("s.sock");
    let abs = abstract_addr(&format!("several-{workers}"), backend);
    let engine = start_indexed(Config {
        workers,
        ..with_listeners(
            backend,
            vec![
                ListenerSpec::bind(unix.clone()),
                ListenerSpec::bind(ip("127.0.0.1:0")),
                ListenerSpec::bind(abs.clone()),
                ListenerSpec::bind(ip("[::1]:0")),
            ],
        )
    });
    let addrs = engine.local_addrs().to_vec();
    assert_eq!(addrs.len(), 4, "one address per listener: {addrs:?}");
    assert_eq!(addrs[0], unix, "the Unix path as given");
    let v4 = addrs[1].as_inet().expect("listener 1 is IP");
    assert!(
        v4.is_ipv4() && v4.ip().is_loopback() && v4.port() != 0,
        "{v4}"
    );
    assert_eq!(addrs[2], abs, "the abstract name as given");
    let v6 = addrs[3].as_inet().expect("listener 3 is IP");
    assert!(
        v6.is_ipv6() && v6.ip().is_loopback() && v6.port() != 0,
        "{v6}"
    );
    assert_eq!(engine.local_addr(), v4, "local_addr: the first IP listener");
    assert!(unix.unix_path().expect("path").exists(), "socket file made");

    // Several clients per listener, all open at once, so with two workers
    // both the per-worker reuseport sockets and the shared Unix sockets
    // are accepted on by every worker.
    let mut clients: Vec<(usize, Box<dyn Duplex>)> = Vec::new();
    for _ in 0..4 {
        for (i, a) in addrs.iter().enumerate() {
            clients.push((i, dial(a)));
        }
    }
    for (n, (i, s)) in clients.iter_mut().enumerate() {
        check_greeting_and_echo(s.as_mut(), *i, format!("hello {n}").as_bytes());
    }
    drop(clients);
    let stats = wait_baseline(&engine);
    assert_eq!(stats.accepted, 16, "every client accepted once");
    engine.shutdown().expect("shutdown");
    assert!(
        !unix.unix_path().expect("path").exists(),
        "socket file removed"
    );
}

// ---------------------------------------------------------------------------
// 2. The life of a Unix socket file

fn unix_socket_file_lifecycle(backend: Backend) {
    let dir = TempDir::new("lifecycle", backend);

    // The mode asked for; there while running, gone after shutdown.
    let addr = dir.addr("mode.sock");
    let path = dir.path("mode.sock");
    let spec = ListenerSpec::bind(addr.clone()).with_options(ListenOptions {
        unix_mode: Some(0o600),
        ..ListenOptions::default()
    });
    let engine = start_indexed(with_listeners(backend, vec![spec]));
    assert_eq!(engine.local_addrs(), std::slice::from_ref(&addr));
    let meta = std::fs::symlink_metadata(&path).expect("the socket file exists");
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "unix_mode");
    check_greeting_and_echo(&mut dial(&addr), 0, b"mode");
    engine.shutdown().expect("shutdown");
    assert!(!path.exists(), "socket file removed after shutdown");

    // A stale socket file (its server went away without removing it) is
    // replaced and served.
    let addr = dir.addr("stale.sock");
    let path = dir.path("stale.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    assert!(path.exists(), "the stale file is left behind");
    let engine = start_indexed(with_listeners(
        backend,
        vec![ListenerSpec::bind(addr.clone())],
    ));
    check_greeting_and_echo(&mut dial(&addr), 0, b"stale");
    engine.shutdown().expect("shutdown");
    assert!(!path.exists(), "the replacement is removed after shutdown");

    // A path another engine listens on is AddressInUse, and that engine
    // keeps its file and serves on.
    let addr = dir.addr("live.sock");
    let path = dir.path("live.sock");
    let cfg = with_listeners(backend, vec![ListenerSpec::bind(addr.clone())]);
    let live = start_indexed(cfg.clone());
    assert_in_use(start_error(cfg), &addr);
    assert!(path.exists(), "the live engine's file is left alone");
    check_greeting_and_echo(&mut dial(&addr), 0, b"still served");
    live.shutdown().expect("shutdown");
    assert!(!path.exists());

    // The same for a std listener.
    let addr = dir.addr("std.sock");
    let path = dir.path("std.sock");
    let std_live = UnixListener::bind(&path).expect("bind");
    assert_in_use(
        start_error(with_listeners(
            backend,
            vec![ListenerSpec::bind(addr.clone())],
        )),
        &addr,
    );
    assert!(path.exists(), "the std listener's file is left alone");
    let mut client = dial_unix(&UnixAddr::Path(path.clone())).expect("still listening");
    client.write_all(b"hi").expect("write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    // The engine's check may have left a connection of its own in the
    // backlog, closed: skip it.
    let mut served = false;
    for _ in 0..2 {
        let (mut s, _) = std_live.accept().expect("accept");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok();
        if buf.is_empty() {
            continue;
        }
        assert_eq!(buf, b"hi");
        served = true;
        break;
    }
    assert!(served, "the std listener served the client");
    drop(client);
}

// ---------------------------------------------------------------------------
// 3. Unix paths that cannot be listened on

fn bad_unix_paths(backend: Backend) {
    let dir = TempDir::new("bad", backend);

    // 200 bytes: more than sun_path holds.
    let base = dir.0.to_str().expect("utf-8 temp dir").to_string();
    let long = format!("{base}/{}", "x".repeat(200 - base.len() - 1));
    assert_eq!(long.len(), 200);
    match config(backend).listen_on(format!("unix:{long}")) {
        Err(Error::Endpoint(EndpointError::UnixPathTooLong { len, max })) => {
            assert_eq!((len, max), (200, 107));
        }
        Err(e) => panic!("expected UnixPathTooLong, got {e:?}"),
        Ok(cfg) => panic!("accepted a 200-byte path: {:?}", cfg.listeners),
    }
    // Built directly, it gets past the parser: Engine::start refuses it.
    let too_long = Address::Unix(UnixAddr::Path(PathBuf::from(&long)));
    let err = start_error(with_listeners(
        backend,
        vec![ListenerSpec::bind(too_long.clone())],
    ));
    assert_bind_error(err, &too_long, io::ErrorKind::InvalidInput);
    assert!(!Path::new(&long).exists());

    // A directory that does not exist.
    let missing = dir.addr("no/such/dir/s.sock");
    let err = start_error(with_listeners(
        backend,
        vec![ListenerSpec::bind(missing.clone())],
    ));
    assert_bind_error(err, &missing, io::ErrorKind::NotFound);

    // A regular file at the path is refused and left as it was.
    let file = dir.path("plain");
    std::fs::write(&file, b"precious").expect("write");
    let plain = dir.addr("plain");
    let err = start_error(with_listeners(
        backend,
        vec![ListenerSpec::bind(plain.clone())],
    ));
    assert_bind_error(err, &plain, io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&file).expect("still there"), b"precious");

    // unix_mode is for Unix socket paths only.
    let moded = ListenOptions {
        unix_mode: Some(0o600),
        ..ListenOptions::default()
    };
    let adopted = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    for (what, spec) in [
        ("an IP listener", ListenerSpec::bind(ip("127.0.0.1:0"))),
        (
            "an abstract name",
            ListenerSpec::bind(abstract_addr("bad", backend)),
        ),
        (
            "an adopted socket",
            ListenerSpec::adopt(adopted.try_clone().expect("dup").into()),
        ),
    ] {
        let err = start_error(with_listeners(
            backend,
            vec![
                ListenerSpec::bind(ip("127.0.0.1:0")),
                spec.with_options(moded),
            ],
        ));
        match err {
            Error::Config(msg) => {
                assert!(
                    msg.contains("listeners[1]") && msg.contains("unix_mode"),
                    "{what}: the message names the listener and the field: {msg}"
                );
            }
            e => panic!("{what}: expected Config, got {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Peer credentials and addresses

/// What a handler saw of one connection.
#[derive(Debug)]
struct Seen {
    listener: Option<usize>,
    creds: Result<PeerCredentials, io::ErrorKind>,
    peer: Option<Address>,
    local: Option<Address>,
}

/// Reports each connection it opens.
struct Reporter(mpsc::Sender<Seen>);

impl Handler for Reporter {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = self.0.send(Seen {
            listener: conn.listener(),
            creds: conn.peer_credentials().map_err(|e| e.kind()),
            peer: conn.peer_addr().ok(),
            local: conn.local_addr().ok(),
        });
    }
    fn on_data(&mut self, _conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
}

fn peer_credentials_and_addresses(backend: Backend) {
    let dir = TempDir::new("creds", backend);
    let unix = dir.addr("c.sock");
    let abs = abstract_addr("creds", backend);
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(
        with_listeners(
            backend,
            vec![
                ListenerSpec::bind(unix.clone()),
                ListenerSpec::bind(ip("127.0.0.1:0")),
                ListenerSpec::bind(abs.clone()),
            ],
        ),
        move |_| Reporter(tx.clone()),
    )
    .expect("engine starts");
    // This process's effective ids: /proc/self belongs to them.
    let me = std::fs::metadata("/proc/self").expect("stat /proc/self");
    let expected = PeerCredentials {
        pid: std::process::id(),
        uid: me.uid(),
        gid: me.gid(),
    };

    for (index, addr) in [(0, &unix), (2, &abs)] {
        let Address::Unix(u) = addr else {
            unreachable!()
        };
        let client = dial_unix(u).expect("connect");
        let seen = rx.recv_timeout(LIMIT).expect("the connection opens");
        assert_eq!(seen.listener, Some(index), "{addr}");
        assert_eq!(seen.creds, Ok(expected), "{addr}: this process");
        assert_eq!(
            seen.peer,
            Some(Address::Unix(UnixAddr::Unnamed)),
            "{addr}: an unbound client"
        );
        assert_eq!(seen.local.as_ref(), Some(addr), "{addr}: the listener's");
        drop(client);
    }

    let tcp = engine.local_addrs()[1].as_inet().expect("IP");
    let client = connect(tcp);
    let seen = rx.recv_timeout(LIMIT).expect("the connection opens");
    assert_eq!(seen.listener, Some(1));
    assert_eq!(
        seen.creds,
        Err(io::ErrorKind::InvalidInput),
        "no credentials over TCP"
    );
    assert_eq!(
        seen.peer,
        Some(Address::Inet(client.local_addr().expect("client addr")))
    );
    assert_eq!(seen.local, Some(Address::Inet(tcp)));
    drop(client);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

// ---------------------------------------------------------------------------
// 5. An engine without listeners, connecting out

/// What an outbound handler reports.
#[derive(Debug)]
enum Event {
    Open {
        tag: Option<u64>,
        id: ConnId,
        listener: Option<usize>,
        peer: Option<Address>,
    },
    Data {
        tag: Option<u64>,
        bytes: Vec<u8>,
    },
    Failed {
        tag: u64,
        err: ConnectError,
    },
}

/// Sends `ping` on every connection it opens and reports everything.
struct Outbound(mpsc::Sender<Event>);

impl Handler for Outbound {
    type State = ();

    fn on_connect_failed(&mut self, tag: u64, err: &ConnectError) {
        let _ = self.0.send(Event::Failed {
            tag,
            err: err.clone(),
        });
    }
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = self.0.send(Event::Open {
            tag: conn.tag(),
            id: conn.id(),
            listener: conn.listener(),
            peer: conn.peer_addr().ok(),
        });
        conn.send(b"ping");
    }
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let _ = self.0.send(Event::Data {
            tag: conn.tag(),
            bytes: data.to_vec(),
        });
        data.len()
    }
}

/// Everything the outbound handler reported so far, by tag.
#[derive(Default)]
struct Outcomes {
    opened: HashMap<u64, (ConnId, Option<usize>, Option<Address>)>,
    received: HashMap<u64, Vec<u8>>,
    failed: HashMap<u64, ConnectError>,
}

impl Outcomes {
    /// Take events until `done` holds.
    fn wait(&mut self, rx: &mpsc::Receiver<Event>, what: &str, done: impl Fn(&Outcomes) -> bool) {
        while !done(self) {
            let event = rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            match event {
                Event::Open {
                    tag,
                    id,
                    listener,
                    peer,
                } => {
                    let tag = tag.expect("an outbound connection has its tag");
                    assert!(self.opened.insert(tag, (id, listener, peer)).is_none());
                }
                Event::Data { tag, bytes } => {
                    let tag = tag.expect("an outbound connection has its tag");
                    self.received.entry(tag).or_default().extend(bytes);
                }
                Event::Failed { tag, err } => {
                    assert!(self.failed.insert(tag, err).is_none());
                }
            }
        }
    }

    fn got(&self, tag: u64) -> &[u8] {
        self.received.get(&tag).map_or(&[], |v| v.as_slice())
    }
}

fn an_engine_without_listeners_connects_out(backend: Backend) {
    let dir = TempDir::new("outbound", backend);
    let unix = dir.addr("server.sock");
    let abs = abstract_addr("outbound", backend);
    let server = start_indexed(with_listeners(
        backend,
        vec![
            ListenerSpec::bind(ip("127.0.0.1:0")),
            ListenerSpec::bind(unix.clone()),
            ListenerSpec::bind(abs.clone()),
        ],
    ));
    let tcp = server.local_addrs()[0].clone();
    // Nobody there at all, and a socket file nobody listens on.
    let missing = dir.addr("nobody.sock");
    let stale = dir.addr("stale.sock");
    drop(UnixListener::bind(dir.path("stale.sock")).expect("bind"));

    let (tx, rx) = mpsc::channel();
    let client = Engine::start(
        Config {
            listeners: vec![],
            ..config(backend)
        },
        move |_| Outbound(tx.clone()),
    )
    .expect("an engine without listeners starts");
    assert!(client.local_addrs().is_empty(), "no listener, no address");
    let t = Duration::from_secs(5);
    client
        .connect(0, std::slice::from_ref(&tcp), t, 1)
        .expect("connect");
    client
        .connect(0, std::slice::from_ref(&unix), t, 2)
        .expect("connect");
    client.connect(0, &[missing], t, 3).expect("connect");
    client.connect(0, &[stale], t, 4).expect("connect");
    client
        .connect(0, std::slice::from_ref(&abs), t, 5)
        .expect("connect");

    let mut out = Outcomes::default();
    out.wait(&rx, "three connections served and two failures", |o| {
        o.got(1) == b"0\nping"
            && o.got(2) == b"1\nping"
            && o.got(5) == b"2\nping"
            && o.failed.len() == 2
    });
    for (tag, peer) in [(1, &tcp), (2, &unix), (5, &abs)] {
        let (_, listener, seen_peer) = &out.opened[&tag];
        assert_eq!(*listener, None, "tag {tag}: outbound, no listener");
        assert_eq!(seen_peer.as_ref(), Some(peer), "tag {tag}: peer address");
    }
    assert_eq!(
        out.failed[&3],
        ConnectError::Os(libc::ENOENT),
        "no socket file"
    );
    assert_eq!(out.failed[&4], ConnectError::Refused, "nobody listens");
    assert_eq!(out.opened.len(), 3, "only the three that worked opened");

    // Both connections still served after the failures.
    let (id1, id2) = (out.opened[&1].0, out.opened[&2].0);
    client.send_to(id1, b"again").expect("send_to the TCP one");
    client.send_to(id2, b"again").expect("send_to the Unix one");
    out.wait(&rx, "the second echoes", |o| {
        o.got(1) == b"0\npingagain" && o.got(2) == b"1\npingagain"
    });
    client.shutdown().expect("client shutdown");
    wait_baseline(&server);
    server.shutdown().expect("server shutdown");
}

// ---------------------------------------------------------------------------
// 6. Adopted listeners

fn adopted_listeners_are_served(backend: Backend) {
    let dir = TempDir::new("adopt", backend);
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tcp_addr = Address::Inet(tcp.local_addr().expect("addr"));
    let unix_addr = dir.addr("adopted.sock");
    let unix = UnixListener::bind(dir.path("adopted.sock")).expect("bind");
    let engine = start_indexed(with_listeners(
        backend,
        vec![
            ListenerSpec::adopt(OwnedFd::from(tcp)),
            ListenerSpec::adopt(OwnedFd::from(unix)),
        ],
    ));
    assert_eq!(engine.local_addrs(), [tcp_addr.clone(), unix_addr.clone()]);
    check_greeting_and_echo(&mut dial(&tcp_addr), 0, b"adopted tcp");
    check_greeting_and_echo(&mut dial(&unix_addr), 1, b"adopted unix");
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

fn adopting_a_socket_that_does_not_listen_fails(backend: Backend) {
    let dir = TempDir::new("adopt-bad", backend);
    let bound =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    bound
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for (what, fd) in [
        ("bound, not listening", OwnedFd::from(bound)),
        ("a UDP socket", OwnedFd::from(udp)),
    ] {
        // A Unix listener before it in the list: opened, then released.
        let unix = dir.addr("before.sock");
        let err = start_error(with_listeners(
            backend,
            vec![ListenerSpec::bind(unix.clone()), ListenerSpec::adopt(fd)],
        ));
        match err {
            Error::Io(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}: {e}"),
            e => panic!("{what}: expected an InvalidInput error, got {e:?}"),
        }
        assert!(
            !dir.path("before.sock").exists(),
            "{what}: the earlier listener's socket file is removed"
        );
    }
}

/// The listening socket outlives the engine serving it: a client that
/// connects while no engine runs waits in the backlog, and the next engine
/// adopting the socket serves it.
fn restart_refuses_nothing(backend: Backend) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let kept = listener.try_clone().expect("dup");
    let first = start_indexed(with_listeners(
        backend,
        vec![ListenerSpec::adopt(OwnedFd::from(listener))],
    ));
    check_greeting_and_echo(&mut connect(addr), 0, b"first");
    first.shutdown().expect("shutdown");

    // No engine now: the socket still listens, so the handshake completes
    // and the bytes wait.
    assert_eq!(kept.local_addr().expect("still open"), addr);
    let mut waiting = connect(addr);
    waiting
        .write_all(b"waited")
        .expect("write while no engine runs");

    let second = start_indexed(with_listeners(
        backend,
        vec![ListenerSpec::adopt(OwnedFd::from(
            kept.try_clone().expect("dup"),
        ))],
    ));
    assert_eq!(read_line(&mut waiting), "0", "served by the second engine");
    let mut echo = [0u8; 6];
    waiting
        .read_exact(&mut echo)
        .expect("the early bytes echoed");
    assert_eq!(&echo, b"waited");
    roundtrip(&mut waiting, b"and more");
    drop(waiting);
    wait_baseline(&second);
    second.shutdown().expect("shutdown");
    assert_eq!(kept.local_addr().expect("still ours"), addr);
}

// ---------------------------------------------------------------------------
// 7. A listener failing in the middle of the list (and a start failing
//    after all of them opened)

fn a_failing_listener_releases_the_ones_before_it(backend: Backend) {
    let dir = TempDir::new("middle", backend);
    let unix = dir.addr("first.sock");
    let abs = abstract_addr("middle", backend);
    let port = free_loopback_port();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = Address::Inet(taken.local_addr().expect("addr"));
    let err = start_error(Config {
        // Two workers: the IP listener is one reuseport socket per worker.
        workers: 2,
        ..with_listeners(
            backend,
            vec![
                ListenerSpec::bind(Address::Inet(port)),
                ListenerSpec::bind(taken_addr.clone()),
                ListenerSpec::bind(unix.clone()),
            ],
        )
    });
    assert_in_use(err, &taken_addr);
    assert!(port_is_free(port), "the first listener's port is released");

    // Unix listeners before the failing one: the file is removed and the
    // abstract name released.
    let err = start_error(with_listeners(
        backend,
        vec![
            ListenerSpec::bind(unix.clone()),
            ListenerSpec::bind(abs.clone()),
            ListenerSpec::bind(taken_addr.clone()),
        ],
    ));
    assert_in_use(err, &taken_addr);
    assert!(
        !dir.path("first.sock").exists(),
        "the earlier listener's socket file is removed"
    );
    let Address::Unix(UnixAddr::Abstract(name)) = &abs else {
        unreachable!()
    };
    let again = std::os::unix::net::SocketAddr::from_abstract_name(name).expect("name");
    drop(UnixListener::bind_addr(&again).expect("the abstract name is released"));

    // A start that fails after every listener opened (a worker cannot be
    // pinned to a CPU that does not exist) releases them all the same.
    let err = start_error(Config {
        workers: 2,
        cpus: vec![100_000],
        ..with_listeners(
            backend,
            vec![
                ListenerSpec::bind(unix.clone()),
                ListenerSpec::bind(Address::Inet(port)),
                ListenerSpec::bind(abs.clone()),
            ],
        )
    });
    assert!(matches!(err, Error::Worker { .. }), "{err:?}");
    assert!(port_is_free(port), "the port is released");
    assert!(
        !dir.path("first.sock").exists(),
        "the socket file is removed"
    );
    drop(UnixListener::bind_addr(&again).expect("the abstract name is released"));
    drop(taken);
}

// ---------------------------------------------------------------------------
// The tests, on each backend

#[test]
fn several_listeners_at_once_uring() {
    several_listeners_at_once(Backend::Uring, 1);
}

#[test]
fn several_listeners_at_once_epoll() {
    several_listeners_at_once(Backend::Epoll, 1);
}

#[test]
fn several_listeners_two_workers_uring() {
    several_listeners_at_once(Backend::Uring, 2);
}

#[test]
fn several_listeners_two_workers_epoll() {
    several_listeners_at_once(Backend::Epoll, 2);
}

#[test]
fn unix_socket_file_lifecycle_uring() {
    unix_socket_file_lifecycle(Backend::Uring);
}

#[test]
fn unix_socket_file_lifecycle_epoll() {
    unix_socket_file_lifecycle(Backend::Epoll);
}

#[test]
fn bad_unix_paths_uring() {
    bad_unix_paths(Backend::Uring);
}

#[test]
fn bad_unix_paths_epoll() {
    bad_unix_paths(Backend::Epoll);
}

#[test]
fn peer_credentials_and_addresses_uring() {
    peer_credentials_and_addresses(Backend::Uring);
}

#[test]
fn peer_credentials_and_addresses_epoll() {
    peer_credentials_and_addresses(Backend::Epoll);
}

#[test]
fn an_engine_without_listeners_connects_out_uring() {
    an_engine_without_listeners_connects_out(Backend::Uring);
}

#[test]
fn an_engine_without_listeners_connects_out_epoll() {
    an_engine_without_listeners_connects_out(Backend::Epoll);
}

#[test]
fn adopted_listeners_are_served_uring() {
    adopted_listeners_are_served(Backend::Uring);
}

#[test]
fn adopted_listeners_are_served_epoll() {
    adopted_listeners_are_served(Backend::Epoll);
}

#[test]
fn adopting_a_socket_that_does_not_listen_fails_uring() {
    adopting_a_socket_that_does_not_listen_fails(Backend::Uring);
}

#[test]
fn adopting_a_socket_that_does_not_listen_fails_epoll() {
    adopting_a_socket_that_does_not_listen_fails(Backend::Epoll);
}

#[test]
fn restart_refuses_nothing_uring() {
    restart_refuses_nothing(Backend::Uring);
}

#[test]
fn restart_refuses_nothing_epoll() {
    restart_refuses_nothing(Backend::Epoll);
}

#[test]
fn a_failing_listener_releases_the_ones_before_it_uring() {
    a_failing_listener_releases_the_ones_before_it(Backend::Uring);
}

#[test]
fn a_failing_listener_releases_the_ones_before_it_epoll() {
    a_failing_listener_releases_the_ones_before_it(Backend::Epoll);
}
