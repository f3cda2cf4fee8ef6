//! The blocking API: binding, concurrent accept, timeouts that keep buffered
//! bytes, closing, connecting. Every test runs under an overall time limit,
//! so a bug fails the test instead of hanging it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringnet::blocking::{Server, Stream};
use ringnet::{Error, ListenOptions};

mod util;

const T: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(100));

fn local() -> Server {
    Server::bind("127.0.0.1:0", ListenOptions::default()).expect("bind")
}

/// A connected pair: (client, server side).
fn pair(server: &Server) -> (Stream, Stream) {
    let client = Stream::connect(server.local_addr(), T).expect("connect");
    let conn = server.accept(T).expect("accept");
    (client, conn)
}

fn kind<T: std::fmt::Debug>(r: io::Result<T>) -> io::ErrorKind {
    r.expect_err("expected an error").kind()
}

/// Call `attempt` (a receive with a short timeout, which must time out)
/// until `stream` holds `want` buffered: loopback delivers at once on an
/// idle machine, but a busy one may take longer than one short timeout.
fn time_out_until_buffered<T: std::fmt::Debug>(
    stream: &mut Stream,
    want: &[u8],
    mut attempt: impl FnMut(&mut Stream) -> io::Result<T>,
) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(kind(attempt(stream)), io::ErrorKind::TimedOut);
        if stream.buffered().len() >= want.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "only {:?} buffered after 10 s",
            stream.buffered()
        );
    }
    assert_eq!(stream.buffered(), want);
}

fn ipv6_available() -> bool {
    match Server::bind("[::1]:0", ListenOptions::default()) {
        Ok(_) => true,
        Err(e) => {
            println!("skipped: IPv6 loopback unavailable here ({e})");
            false
        }
    }
}

#[test]
fn port_zero_reports_the_real_port() {
    let server = local();
    let addr = server.local_addr().as_inet().expect("ip");
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(addr.port(), 0);
    let by_name = Server::bind("localhost:0", ListenOptions::default()).expect("bind localhost");
    assert!(by_name
        .local_addr()
        .as_inet()
        .expect("ip")
        .ip()
        .is_loopback());
    assert_ne!(by_name.local_addr().as_inet().expect("ip").port(), 0);
}

#[test]
fn a_taken_port_is_address_in_use_naming_the_address() {
    let first = local();
    let addr = first.local_addr().as_inet().expect("ip");
    match Server::bind(addr, ListenOptions::default()) {
        Err(e @ Error::AddressInUse(_)) => {
            assert!(matches!(&e, Error::AddressInUse(a) if *a == addr));
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
        other => panic!("expected AddressInUse, got {other:?}"),
    }
}

/// An endpoint that breaks the `ToEndpoint` contract: no address, no error.
struct Nowhere;

impl ringnet::endpoint::ToEndpoint for Nowhere {
    fn to_addrs(&self) -> io::Result<Vec<std::net::SocketAddr>> {
        Ok(Vec::new())
    }
}

#[test]
fn no_address_to_bind_is_no_address() {
    match Server::bind(Nowhere, ListenOptions::default()) {
        Err(Error::NoAddress) => {}
        other => panic!("expected NoAddress, got {other:?}"),
    }
}

#[test]
fn dual_stack_server_accepts_ipv4_as_v4_mapped() {
    if !ipv6_available() {
        return;
    }
    util::within(20, || {
        let server = Server::bind("[::]:0", ListenOptions::default()).expect("bind [::]");
        let port = server.local_addr().as_inet().expect("ip").port();
        let mut client = Stream::connect(("127.0.0.1", port), T).expect("IPv4 connect");
        let mut conn = server.accept(T).expect("accept");
        let peer = conn.peer_addr().expect("peer").as_inet().expect("ip");
        match peer {
            SocketAddr::V6(v6) => {
                assert_eq!(
                    v6.ip().to_ipv4_mapped(),
                    Some(Ipv4Addr::LOCALHOST),
                    "{peer}"
                );
            }
            SocketAddr::V4(_) => panic!("expected a v4-mapped IPv6 peer, got {peer}"),
        }
        client.send_line("over v4", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "over v4");
    });
}

#[test]
fn only_v6_refuses_ipv4_clients() {
    if !ipv6_available() {
        return;
    }
    util::within(20, || {
        let opts = ListenOptions {
            only_v6: true,
            ..ListenOptions::default()
        };
        let server = Server::bind("[::]:0", opts).expect("bind [::] v6 only");
        let port = server.local_addr().as_inet().expect("ip").port();
        assert_eq!(
            kind(Stream::connect(("127.0.0.1", port), T)),
            io::ErrorKind::ConnectionRefused
        );
        let _v6 = Stream::connect(("::1", port), T).expect("IPv6 client still connects");
    });
}

#[test]
fn accepted_streams_carry_the_listen_options() {
    util::within(20, || {
        let opts = ListenOptions {
            recv_buffer_size: Some(40_000),
            send_buffer_size: Some(50_000),
            nodelay: true,
            ..ListenOptions::default()
        };
        let server = Server::bind("127.0.0.1:0", opts).expect("bind");
        let (_client, conn) = pair(&server);
        let sock = conn.socket();
        // Linux doubles the value set (for bookkeeping overhead).
        assert!(sock.recv_buffer_size().expect("SO_RCVBUF") >= 40_000);
        assert!(sock.send_buffer_size().expect("SO_SNDBUF") >= 50_000);
        assert!(sock.tcp_nodelay().expect("TCP_NODELAY"));

        let plain = ListenOptions {
            nodelay: false,
            ..ListenOptions::default()
        };
        let server = Server::bind("127.0.0.1:0", plain).expect("bind");
        let (client, conn) = pair(&server);
        assert!(!conn.socket().tcp_nodelay().expect("TCP_NODELAY"));
        assert!(client.socket().tcp_nodelay().expect("client TCP_NODELAY"));
    });
}

#[test]
fn eight_threads_accept_a_thousand_clients_each_exactly_once() {
    const CLIENTS: u32 = 1000;
    const ACCEPTERS: usize = 8;
    const CONNECTERS: u32 = 8;
    util::within(120, || {
        let server = Arc::new(local());
        let addr = server.local_addr().as_inet().expect("ip");
        let seen = Arc::new(Mutex::new(HashMap::<u32, usize>::new()));
        let accepters: Vec<_> = (0..ACCEPTERS)
            .map(|_| {
                let (server, seen) = (server.clone(), seen.clone());
                thread::spawn(move || loop {
                    let mut conn = match server.accept(Some(Duration::from_secs(5))) {
                        Ok(conn) => conn,
                        Err(e) if server.is_closed() => {
                            assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
                            return;
                        }
                        Err(e) => panic!("accept: {e}"),
                    };
                    let id: u32 = conn.recv_line(T).expect("id").parse().expect("number");
                    *seen.lock().expect("lock").entry(id).or_default() += 1;
                    // Dropping `conn` closes it: the client waits for that.
                })
            })
            .collect();
        let connecters: Vec<_> = (0..CONNECTERS)
            .map(|c| {
                thread::spawn(move || {
                    for id in (c..CLIENTS).step_by(CONNECTERS as usize) {
                        let mut s = Stream::connect(addr, T).expect("connect");
                        s.send_line(id.to_string(), T).expect("send id");
                        assert!(s.recv(1, T).expect("wait for close").is_empty());
                    }
                })
            })
            .collect();
        for c in connecters {
            c.join().expect("client thread");
        }
        server.close().expect("close");
        for a in accepters {
            a.join().expect("accept thread");
        }
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), CLIENTS as usize);
        assert!((0..CLIENTS).all(|id| seen.get(&id) == Some(&1)));
    });
}

#[test]
fn accept_with_no_client_times_out() {
    util::within(20, || {
        let server = local();
        assert_eq!(kind(server.accept(SHORT)), io::ErrorKind::TimedOut);
        assert_eq!(
            kind(server.accept(Some(Duration::ZERO))),
            io::ErrorKind::TimedOut
        );
        // The server still works afterwards.
        let (mut client, mut conn) = pair(&server);
        client.send_line("after", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "after");
    });
}

#[test]
fn close_wakes_every_blocked_accept() {
    util::within(20, || {
        let server = Arc::new(local());
        let (tx, rx) = mpsc::channel();
        let started = Arc::new(AtomicBool::new(false));
        for _ in 0..4 {
            let (server, tx, started) = (server.clone(), tx.clone(), started.clone());
            thread::spawn(move || {
                started.store(true, Ordering::Relaxed);
                let _ = tx.send(server.accept(None).map(|_| ()));
            });
        }
        while !started.load(Ordering::Relaxed) {
            thread::yield_now();
        }
        // Give the threads time to block (not a timing assertion: the result
        // is the same if some arrive after the close).
        thread::sleep(Duration::from_millis(200));
        server.close().expect("close");
        for _ in 0..4 {
            let r = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("a blocked accept returned after close");
            let e = r.expect_err("accept on a closed server fails");
            assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
            assert!(e.to_string().contains("closed"), "{e}");
        }
        assert_eq!(kind(server.accept(None)), io::ErrorKind::NotConnected);
        server.close().expect("closing twice is fine");
    });
}

#[test]
fn recv_line_timeout_keeps_the_partial_line() {
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        client.send(b"hello, wo", T).expect("send");
        time_out_until_buffered(&mut conn, b"hello, wo", |c| c.recv_line(SHORT));
        client.send(b"rld\r\nnext\n", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "hello, world");
        assert_eq!(conn.recv_line(T).expect("line"), "next");
        assert!(conn.buffered().is_empty());
    });
}

#[test]
fn recv_exact_timeout_keeps_the_bytes() {
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        client.send(b"0123", T).expect("send");
        time_out_until_buffered(&mut conn, b"0123", |c| c.recv_exact(10, SHORT));
        client.send(b"456789AB", T).expect("send");
        assert_eq!(conn.recv_exact(10, T).expect("exact"), b"0123456789");
        assert_eq!(conn.recv(100, T).expect("rest"), b"AB");
    });
}

#[test]
fn recv_until_timeout_keeps_the_bytes_and_finds_a_split_delimiter() {
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        client.send(b"key: value\r\n\r", T).expect("send");
        time_out_until_buffered(&mut conn, b"key: value\r\n\r", |c| {
            c.recv_until(b"\r\n\r\n", SHORT)
        });
        client.send(b"\nbody", T).expect("send");
        assert_eq!(
            conn.recv_until(b"\r\n\r\n", T).expect("until"),
            b"key: value\r\n\r\n"
        );
        assert_eq!(conn.recv_exact(4, T).expect("body"), b"body");
    });
}

#[test]
fn send_after_timeout_sends_nothing_and_keeps_the_bytes() {
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        conn.send(b"Passw", T).expect("send");
        time_out_until_buffered(&mut client, b"Passw", |c| {
            c.send_after(b"word: ", b"secret\n", SHORT)
        });
        // Nothing was sent.
        assert_eq!(kind(conn.recv(1, SHORT)), io::ErrorKind::TimedOut);
        conn.send(b"ord: ", T).expect("send");
        let got = client
            .send_after(b"word: ", b"secret\n", T)
            .expect("send_after");
        assert_eq!(got, b"Password: ");
        assert_eq!(conn.recv_line(T).expect("answer"), "secret");
    });
}

#[test]
fn recv_returns_buffered_bytes_first_and_empty_at_end_of_stream() {
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        assert_eq!(kind(conn.recv(10, SHORT)), io::ErrorKind::TimedOut);
        client.send(b"line\nabc", T).expect("send");
        client.shutdown_write().expect("shutdown");
        assert_eq!(conn.recv_line(T).expect("line"), "line");
        // Three bytes, then the end of the stream: recv_exact keeps them.
        assert_eq!(kind(conn.recv_exact(5, T)), io::ErrorKind::UnexpectedEof);
        assert_eq!(conn.buffered(), b"abc");
        assert_eq!(kind(conn.recv_line(T)), io::ErrorKind::UnexpectedEof);
        assert_eq!(conn.recv(2, T).expect("buffered"), b"ab");
        assert_eq!(conn.recv(2, T).expect("buffered"), b"c");
        assert!(conn.recv(2, T).expect("end of stream").is_empty());
        // The other direction still works after the client's shutdown.
        conn.send_line("bye", T).expect("send");
        assert_eq!(client.recv_line(T).expect("line"), "bye");
        conn.close();
        assert!(client.recv(1, T).expect("closed").is_empty());
    });
}

#[test]
fn a_line_over_the_limit_is_an_error_not_unbounded_memory() {
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        conn.set_recv_limit(16);
        client.send(&[b'x'; 40], T).expect("send");
        assert_eq!(kind(conn.recv_line(T)), io::ErrorKind::InvalidData);
        assert_eq!(kind(conn.recv_until(b"", T)), io::ErrorKind::InvalidInput);
        conn.set_recv_limit(64);
        client.send(b"\n\xff\n", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line").len(), 40);
        // Not UTF-8: an error, and the line stays for recv_until.
        assert_eq!(kind(conn.recv_line(T)), io::ErrorKind::InvalidData);
        assert_eq!(conn.recv_until(b"\n", T).expect("raw"), b"\xff\n");
    });
}

#[test]
fn send_to_a_peer_that_does_not_read_times_out() {
    util::within(30, || {
        let opts = ListenOptions {
            recv_buffer_size: Some(16_384),
            ..ListenOptions::default()
        };
        let server = Server::bind("127.0.0.1:0", opts).expect("bind");
        let (mut client, _conn) = pair(&server);
        let big = vec![7u8; 64 << 20];
        assert_eq!(kind(client.send(&big, SHORT)), io::ErrorKind::TimedOut);
    });
}

#[test]
fn connect_to_nothing_is_refused() {
    util::within(20, || {
        // A bound socket that does not listen holds the port, so nothing
        // else can listen there during the test; connecting gets a reset.
        let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        holder.bind(&any.into()).expect("bind");
        let addr = holder
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        assert_eq!(
            kind(Stream::connect(addr, T)),
            io::ErrorKind::ConnectionRefused
        );
        assert_eq!(
            kind(Stream::connect(addr, None)),
            io::ErrorKind::ConnectionRefused
        );

        // Several addresses: the first refuses, a later one listens.
        let server = local();
        let good = server.local_addr().as_inet().expect("ip");
        let mut client = Stream::connect(&[addr, addr, good][..], T).expect("falls through");
        assert_eq!(client.peer_addr().expect("peer"), good);
        let mut conn = server.accept(T).expect("accept");
        client.send_line("reached", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "reached");
        assert!(client.socket().tcp_nodelay().expect("nodelay"));

        // All refuse: the last error comes back.
        assert_eq!(
            kind(Stream::connect([addr, addr], T)),
            io::ErrorKind::ConnectionRefused
        );
    });
}

#[test]
fn stream_addresses_match_both_ends() {
    util::within(20, || {
        let server = local();
        let (client, conn) = pair(&server);
        assert_eq!(client.peer_addr().expect("peer"), server.local_addr());
        assert_eq!(conn.local_addr().expect("local"), server.local_addr());
        assert_eq!(
            conn.peer_addr().expect("peer"),
            client.local_addr().expect("local")
        );
        assert!(format!("{conn:?}").contains("buffered"));
    });
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Signals do not stretch a timeout: a blocking receive interrupted over and
/// over (EINTR every 20 ms, handler installed without SA_RESTART) still
/// times out when its deadline passes, instead of starting its full timeout
/// again after each interruption and never returning.
#[test]
fn a_timeout_holds_when_signals_interrupt_the_receive() {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the
    // handler is an `extern "C" fn` that does nothing, so it is
    // async-signal-safe. SIGUSR1 is used by no other test in this binary.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    util::within(20, || {
        let server = local();
        let (mut client, mut conn) = pair(&server);
        client.send(b"0123", T).expect("send");
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let done = Arc::new(AtomicBool::new(false));
        let signaller = {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut sent = 0u32;
                while !done.load(Ordering::Acquire) {
                    // SAFETY: `me` is alive: it sets `done` before it
                    // joins this thread, and only then may it exit.
                    assert_eq!(unsafe { libc::pthread_kill(me, libc::SIGUSR1) }, 0);
                    sent += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                sent
            })
        };
        let got = conn.recv_exact(10, Some(Duration::from_millis(300)));
        done.store(true, Ordering::Release);
        let sent = signaller.join().expect("signaller");
        assert!(sent >= 5, "only {sent} signals were sent");
        assert_eq!(kind(got), io::ErrorKind::TimedOut);
        // The bytes that came stay buffered.
        client.send(b"456789", T).expect("send");
        assert_eq!(conn.recv_exact(10, T).expect("exact"), b"0123456789");
    });
}

/// A listener made elsewhere (a std `TcpListener`, as a parent process or a
/// service manager would hand one down) serves like a bound one, and its
/// descriptor is the one the `Server` exposes.
#[test]
fn a_server_adopts_a_listener_made_elsewhere() {
    use std::os::fd::{AsRawFd, OwnedFd};
    util::within(20, || {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("std bind");
        let addr = std_listener.local_addr().expect("addr");
        let raw = std_listener.as_raw_fd();
        let server = Server::from_listener(OwnedFd::from(std_listener)).expect("adopted");
        assert_eq!(server.local_addr(), addr);
        assert_eq!(server.as_raw_fd(), raw, "the same descriptor, shared");
        let (mut client, mut conn) = pair(&server);
        client.send_line("hello", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("recv"), "hello");
        assert_eq!(kind(server.accept(SHORT)), io::ErrorKind::TimedOut);
    });
}

/// What is not a listening TCP socket is refused, clearly, and nothing is
/// served from it.
#[test]
fn adopting_anything_but_a_listening_socket_is_refused() {
    use std::os::fd::OwnedFd;
    util::within(20, || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let connected =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let file = std::fs::File::open("/dev/null").expect("file");
        let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        for (what, fd) in [
            ("connected stream", OwnedFd::from(connected)),
            ("datagram socket", OwnedFd::from(udp)),
            ("file", OwnedFd::from(file)),
            ("unbound socket", OwnedFd::from(unbound)),
        ] {
            let err = Server::from_listener(fd).expect_err(what);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{what}: {err}");
            assert!(
                err.to_string().contains("not a listening stream socket"),
                "{what}: {err}"
            );
        }
    });
}

/// A fresh directory for socket files, removed with its guard.
struct SockDir(std::path::PathBuf);

impl SockDir {
    fn new(name: &str) -> SockDir {
        let p = std::env::temp_dir().join(format!("ringnet-blk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        SockDir(p)
    }

    fn endpoint(&self, file: &str) -> String {
        format!("unix:{}", self.0.join(file).display())
    }
}

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_unix_path_server_serves_lines_knows_its_peer_and_removes_its_file() {
    util::within(20, || {
        let dir = SockDir::new("path");
        let ep = dir.endpoint("s.sock");
        let path = dir.0.join("s.sock");
        let server = Server::bind(ep.as_str(), ListenOptions::default()).expect("bind");
        assert_eq!(server.local_addr().to_string(), ep);
        let mut client = Stream::connect(ep.as_str(), T).expect("connect");
        let mut conn = server.accept(T).expect("accept");
        client.send_line("over unix", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "over unix");
        conn.send_line("back", T).expect("reply");
        assert_eq!(client.recv_line(T).expect("reply line"), "back");
        // Both ends of a Unix connection are this process.
        let cred = conn.peer_credentials().expect("SO_PEERCRED");
        assert_eq!(cred.pid, std::process::id());
        assert_eq!(
            client.peer_credentials().expect("server's").pid,
            std::process::id()
        );
        assert_eq!(conn.local_addr().expect("local"), server.local_addr());
        assert_eq!(
            conn.peer_addr().expect("peer"),
            ringnet::Address::Unix(ringnet::UnixAddr::Unnamed)
        );
        assert!(path.exists());
        drop(server);
        assert!(!path.exists(), "the socket file outlived its server");
        // The accepted stream still works without its server.
        client.send_line("still", T).expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "still");
    });
}

#[test]
fn peer_credentials_of_a_tcp_stream_are_an_error() {
    util::within(20, || {
        let server = local();
        let (client, _conn) = pair(&server);
        let e = client.peer_credentials().expect_err("TCP has none");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn a_closed_unix_server_wakes_its_waiting_accept() {
    util::within(20, || {
        let server = Arc::new(
            Server::bind(
                format!("unix:@ringnet-blk-close-{}", std::process::id()).as_str(),
                ListenOptions::default(),
            )
            .expect("bind abstract"),
        );
        let (tid_tx, tid_rx) = mpsc::channel();
        let waiting = {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                let tid = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
                tid_tx.send(tid).expect("send tid");
                server.accept(None).map(|_| ())
            })
        };
        // Close once the accept is asleep waiting for a connection.
        let task = tid_rx.recv().expect("tid");
        let tid = task
            .file_name()
            .expect("tid")
            .to_string_lossy()
            .into_owned();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                .expect("the accept returned before close");
            if stat[stat.rfind(')').expect("comm") + 1..]
                .trim_start()
                .starts_with('S')
            {
                break;
            }
            thread::yield_now();
        }
        server.close().expect("close");
        let e = waiting.join().expect("thread").expect_err("closed");
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
        // And a later call does not wait either.
        let e = server.accept(None).map(|_| ()).expect_err("closed");
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    });
}

#[test]
fn bad_unix_endpoints_are_refused_with_the_reason() {
    util::within(20, || {
        let dir = SockDir::new("bad");
        // Nobody listens at the path.
        let e = Stream::connect(dir.endpoint("none.sock").as_str(), T)
            .map(|_| ())
            .expect_err("no socket");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // Longer than sun_path.
        let long = format!("unix:/{}", "x".repeat(200));
        match Server::bind(long.as_str(), ListenOptions::default()) {
            Err(Error::Endpoint(ringnet::endpoint::EndpointError::UnixPathTooLong {
                len, ..
            })) => {
                assert_eq!(len, 201)
            }
            other => panic!("expected UnixPathTooLong, got {other:?}"),
        }
        let e = Stream::connect(long.as_str(), T)
            .map(|_| ())
            .expect_err("too long");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // A live socket file is in use, and keeps serving.
        let live = Server::bind(dir.endpoint("live.sock").as_str(), ListenOptions::default())
            .expect("bind");
        match Server::bind(dir.endpoint("live.sock").as_str(), ListenOptions::default()) {
            Err(Error::AddressInUse(a)) => assert_eq!(a, live.local_addr()),
            other => panic!("expected AddressInUse, got {other:?}"),
        }
        let _client = Stream::connect(live.local_addr(), T).expect("still served");
        live.accept(T).expect("accept");
    });
}

#[test]
fn an_adopted_unix_listener_is_served() {
    util::within(20, || {
        let dir = SockDir::new("adopt");
        let path = dir.0.join("a.sock");
        let std_listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = Server::from_listener(std_listener.into()).expect("adopt");
        assert_eq!(server.local_addr().unix_path(), Some(path.as_path()));
        let mut client = Stream::connect(server.local_addr(), T).expect("connect");
        let mut conn = server.accept(T).expect("accept");
        client.send(b"x", T).expect("send");
        assert_eq!(conn.recv_exact(1, T).expect("byte"), b"x");
        drop(server);
        // Adopted: the file is its maker's to remove.
        assert!(path.exists());
    });
}
