//! The portable UDP server (`ringnet::udp`): per-peer connections from
//! `accept`, routing of misdelivered datagrams, timeouts, IPv6, dual stack,
//! closing a peer and closing the server.
//!
//! Every test runs inside [`bounded`], so a bug fails the test instead of
//! hanging it; every socket call has a timeout.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringnet::udp::{UdpConn, UdpOptions, UdpServer, UdpStats};

/// How long a client waits for one reply before sending again.
const REPLY_WAIT: Duration = Duration::from_millis(300);
/// How many times a client sends one datagram again before giving up
/// (with [`REPLY_WAIT`]: about 12 s without a reply, generous on a loaded
/// machine; every test still has its overall limit).
const MAX_RESENDS: u32 = 40;
/// Generous wait for things that should happen at once.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));

/// Run `body` on its own thread and fail if it takes longer than `limit`.
fn bounded<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().expect("test body"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("test body ended without reporting"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test still running after {limit:?}"),
    }
}

fn server(addr: &str) -> Arc<UdpServer> {
    let addr = addr.parse().expect("address");
    Arc::new(UdpServer::bind(addr, UdpOptions::default()).expect("bind"))
}

/// `addr` with a v4-mapped IPv6 address turned back into IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn ipv6_loopback_available() -> bool {
    match UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            println!("skipped: cannot bind [::1]: {e}");
            false
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

/// Parse `"{id}:{seq}"`.
fn parse_pair(text: &str) -> Option<(usize, u32)> {
    let (id, seq) = text.split_once(':')?;
    Some((id.parse().ok()?, seq.parse().ok()?))
}

/// What the server side of an echo run saw.
#[derive(Default)]
struct ServerSide {
    /// Peers returned by `accept` (canonical addresses), in order.
    accepted: Mutex<Vec<SocketAddr>>,
    /// Connections whose first datagram was not seq 0 of their own peer.
    bad_first: AtomicU64,
    /// Datagrams whose peer id does not match the connection's peer.
    misdelivered: AtomicU64,
    /// Connections for an address that is none of the clients.
    unknown_peers: AtomicU64,
    /// Datagrams whose seq was not above the previous one (a client's
    /// resend, or a reroute overtaken by a later datagram).
    not_increasing: AtomicU64,
    errors: AtomicU64,
    echo_threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What a client saw: resends, stale replies, replies for another peer.
#[derive(Debug, Default, Clone, Copy)]
struct ClientSide {
    resends: u32,
    stale_replies: u32,
    foreign_replies: u32,
}

/// One server-side connection: echo every datagram as `echo:{id}:{seq}`
/// until the run is over and the peer has gone quiet.
fn echo_conn(conn: UdpConn, expected: Option<usize>, side: Arc<ServerSide>, done: Arc<AtomicBool>) {
    let mut last: Option<u32> = None;
    loop {
        let datagram = match conn.recv(Some(Duration::from_millis(200))) {
            Ok(d) => d,
            Err(e) if is_timeout(&e) => {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(_) => {
                side.errors.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        let text = String::from_utf8_lossy(&datagram);
        let Some((id, seq)) = parse_pair(&text) else {
            side.misdelivered.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        if last.is_none() && (Some(id) != expected || seq != 0) {
            side.bad_first.fetch_add(1, Ordering::SeqCst);
        }
        if Some(id) != expected {
            side.misdelivered.fetch_add(1, Ordering::SeqCst);
        }
        if last.is_some_and(|l| seq <= l) {
            side.not_increasing.fetch_add(1, Ordering::SeqCst);
        }
        last = Some(last.map_or(seq, |l| l.max(seq)));
        if conn.send(format!("echo:{id}:{seq}").as_bytes()).is_err() {
            side.errors.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One client: send `"{id}:{seq}"` for each seq, the next only after the
/// reply to the previous one, sending again after [`REPLY_WAIT`].
fn run_client(
    sock: &UdpSocket,
    id: usize,
    target: SocketAddr,
    seqs: u32,
) -> io::Result<ClientSide> {
    sock.connect(target)?;
    sock.set_read_timeout(Some(REPLY_WAIT))?;
    let mut seen = ClientSide::default();
    let mut buf = [0u8; 256];
    for seq in 0..seqs {
        let msg = format!("{id}:{seq}");
        sock.send(msg.as_bytes())?;
        let mut resends = 0;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let reply = text.strip_prefix("echo:").and_then(parse_pair);
                    match reply {
                        Some((rid, _)) if rid != id => seen.foreign_replies += 1,
                        Some((_, rseq)) if rseq == seq => break,
                        Some((_, rseq)) if rseq < seq => seen.stale_replies += 1,
                        _ => seen.foreign_replies += 1,
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    resends += 1;
                    if resends > MAX_RESENDS {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("peer {id}: no reply to seq {seq}"),
                        ));
                    }
                    seen.resends += 1;
                    sock.send(msg.as_bytes())?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(seen)
}

/// The outcome of [`echo_run`].
struct Report {
    clients: Vec<ClientSide>,
    accepted: Vec<SocketAddr>,
    client_addrs: HashSet<SocketAddr>,
    stats: UdpStats,
}

impl Report {
    fn total(&self, f: impl Fn(&ClientSide) -> u32) -> u32 {
        self.clients.iter().map(f).sum()
    }
}

/// `peers` clients bound to `client_bind`, started at once, each sending
/// `seqs` numbered datagrams to `target`; `acceptors` threads accepting on
/// `server`, one echo thread per connection. Asserts everything the issue
/// asks for and returns the figures.
fn echo_run(
    server: Arc<UdpServer>,
    target: SocketAddr,
    client_bind: &str,
    peers: usize,
    seqs: u32,
    acceptors: usize,
) -> Report {
    let sockets: Vec<UdpSocket> = (0..peers)
        .map(|_| UdpSocket::bind(client_bind).expect("client bind"))
        .collect();
    let ids: Arc<HashMap<SocketAddr, usize>> = Arc::new(
        sockets
            .iter()
            .enumerate()
            .map(|(id, s)| (canonical(s.local_addr().expect("client addr")), id))
            .collect(),
    );
    let side = Arc::new(ServerSide::default());
    let done = Arc::new(AtomicBool::new(false));

    let acceptor_threads: Vec<JoinHandle<()>> = (0..acceptors)
        .map(|_| {
            let (server, ids, side, done) = (
                Arc::clone(&server),
                Arc::clone(&ids),
                Arc::clone(&side),
                Arc::clone(&done),
            );
            thread::spawn(move || loop {
                match server.accept(Some(Duration::from_millis(200))) {
                    Ok(conn) => {
                        let peer = canonical(conn.peer_addr());
                        side.accepted.lock().expect("lock").push(peer);
                        let expected = ids.get(&peer).copied();
                        if expected.is_none() {
                            side.unknown_peers.fetch_add(1, Ordering::SeqCst);
                        }
                        let (side2, done2) = (Arc::clone(&side), Arc::clone(&done));
                        let echo = thread::spawn(move || echo_conn(conn, expected, side2, done2));
                        side.echo_threads.lock().expect("lock").push(echo);
                    }
                    Err(e) if is_timeout(&e) => {
                        if done.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    Err(_) => {
                        side.errors.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            })
        })
        .collect();

    let barrier = Arc::new(Barrier::new(peers));
    // Each client thread hands its socket back, so it stays open until the
    // echo threads are done (a late reply to a closed port would come back
    // as ECONNREFUSED on the server side).
    let client_threads: Vec<JoinHandle<(io::Result<ClientSide>, UdpSocket)>> = sockets
        .into_iter()
        .enumerate()
        .map(|(id, sock)| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                (run_client(&sock, id, target, seqs), sock)
            })
        })
        .collect();
    let (results, _open): (Vec<_>, Vec<UdpSocket>) = client_threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .unzip();
    let clients: Vec<ClientSide> = results
        .into_iter()
        .map(|r| r.expect("client finishes"))
        .collect();

    done.store(true, Ordering::SeqCst);
    for t in acceptor_threads {
        t.join().expect("acceptor thread");
    }
    let echoes = std::mem::take(&mut *side.echo_threads.lock().expect("lock"));
    for t in echoes {
        t.join().expect("echo thread");
    }

    let accepted = side.accepted.lock().expect("lock").clone();
    let report = Report {
        clients,
        client_addrs: ids.keys().copied().collect(),
        accepted,
        stats: server.stats(),
    };
    println!(
        "{peers} peers x {seqs} datagrams: accepted {}, resends {}, stale replies {}, \
         server-side not-increasing seqs {}",
        report.accepted.len(),
        report.total(|c| c.resends),
        report.total(|c| c.stale_replies),
        side.not_increasing.load(Ordering::SeqCst),
    );
    println!("stats: {:?}", report.stats);

    let distinct: HashSet<SocketAddr> = report.accepted.iter().copied().collect();
    assert_eq!(report.accepted.len(), peers, "each peer accepted once");
    assert_eq!(
        distinct, report.client_addrs,
        "exactly the clients were accepted"
    );
    assert_eq!(
        side.unknown_peers.load(Ordering::SeqCst),
        0,
        "unknown peers"
    );
    assert_eq!(
        side.bad_first.load(Ordering::SeqCst),
        0,
        "first datagram is seq 0"
    );
    assert_eq!(side.misdelivered.load(Ordering::SeqCst), 0, "misdeliveries");
    assert_eq!(side.errors.load(Ordering::SeqCst), 0, "server-side errors");
    assert_eq!(
        report.total(|c| c.foreign_replies),
        0,
        "replies for other peers"
    );
    assert_eq!(report.stats.new_peers, peers as u64);
    assert_eq!(report.stats.accepted, peers as u64);
    report
}

#[test]
fn two_hundred_peers_at_once() {
    bounded(Duration::from_secs(120), || {
        let server = server("127.0.0.1:0");
        let target = server.local_addr();
        let report = echo_run(Arc::clone(&server), target, "127.0.0.1:0", 200, 100, 6);
        println!(
            "rerouted: {} from the listener, {} from peer sockets, {} new peers found on peer sockets",
            report.stats.rerouted_from_listener,
            report.stats.rerouted_from_peer_socket,
            report.stats.new_peers_from_peer_socket,
        );
        server.close();
    });
}

#[test]
fn concurrent_accept_gives_each_peer_once() {
    bounded(Duration::from_secs(60), || {
        const PEERS: usize = 50;
        let server = server("127.0.0.1:0");
        let target = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let acceptors: Vec<JoinHandle<Vec<UdpConn>>> = (0..4)
            .map(|_| {
                let (server, stop, accepted) = (
                    Arc::clone(&server),
                    Arc::clone(&stop),
                    Arc::clone(&accepted),
                );
                thread::spawn(move || {
                    // Keep every connection open, so a client's resend goes
                    // to it and cannot make the peer new again.
                    let mut conns = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match server.accept(Some(Duration::from_millis(100))) {
                            Ok(conn) => {
                                accepted.lock().expect("lock").push(conn.peer_addr());
                                let first = conn.recv(WAIT).expect("first datagram");
                                conn.send(&first).expect("reply");
                                conns.push(conn);
                            }
                            Err(e) if is_timeout(&e) => {}
                            Err(e) => panic!("accept: {e}"),
                        }
                    }
                    conns
                })
            })
            .collect();

        let barrier = Arc::new(Barrier::new(PEERS));
        let clients: Vec<JoinHandle<SocketAddr>> = (0..PEERS)
            .map(|id| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").expect("client bind");
                    barrier.wait();
                    let report = run_hello(&sock, id, target);
                    report.expect("client gets its reply");
                    sock.local_addr().expect("client addr")
                })
            })
            .collect();
        let client_addrs: HashSet<SocketAddr> = clients
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect();
        // Leave time for a duplicate accept to show up, then stop.
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let conns: usize = acceptors
            .into_iter()
            .map(|t| t.join().expect("acceptor").len())
            .sum();
        let accepted = accepted.lock().expect("lock").clone();
        let distinct: HashSet<SocketAddr> = accepted.iter().copied().collect();
        println!("stats: {:?}", server.stats());
        assert_eq!(accepted.len(), PEERS, "accepts");
        assert_eq!(conns, PEERS);
        assert_eq!(distinct, client_addrs, "each peer once");
    });
}

/// Send `hello:{id}` and wait for it to come back, sending again on a
/// timeout.
fn run_hello(sock: &UdpSocket, id: usize, target: SocketAddr) -> io::Result<()> {
    sock.connect(target)?;
    sock.set_read_timeout(Some(REPLY_WAIT))?;
    let msg = format!("hello:{id}");
    let mut buf = [0u8; 64];
    for _ in 0..=MAX_RESENDS {
        sock.send(msg.as_bytes())?;
        match sock.recv(&mut buf) {
            Ok(n) if buf[..n] == *msg.as_bytes() => return Ok(()),
            Ok(_) => return Err(io::Error::other("someone else's reply")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no reply"))
}

#[test]
fn accept_times_out() {
    bounded(Duration::from_secs(10), || {
        let server = server("127.0.0.1:0");
        let err = server
            .accept(Some(Duration::from_millis(100)))
            .expect_err("nobody sends");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    });
}

#[test]
fn recv_times_out_on_a_quiet_peer() {
    bounded(Duration::from_secs(10), || {
        let server = server("127.0.0.1:0");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .send_to(b"only one", server.local_addr())
            .expect("send");
        let conn = server.accept(WAIT).expect("accept");
        assert_eq!(conn.recv(WAIT).expect("first"), b"only one");
        let err = conn
            .recv(Some(Duration::from_millis(100)))
            .expect_err("the peer is quiet");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    });
}

#[test]
fn ipv6_loopback() {
    bounded(Duration::from_secs(60), || {
        if !ipv6_loopback_available() {
            return;
        }
        let server = server("[::1]:0");
        let target = server.local_addr();
        let report = echo_run(Arc::clone(&server), target, "[::1]:0", 20, 20, 4);
        assert!(report.accepted.iter().all(|a| a.is_ipv6()));
    });
}

#[test]
fn dual_stack_wildcard_hears_ipv4() {
    bounded(Duration::from_secs(60), || {
        if !ipv6_loopback_available() {
            return;
        }
        let server = server("[::]:0");
        assert!(server.local_addr().is_ipv6());
        let target = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), server.local_addr().port());
        echo_run(Arc::clone(&server), target, "127.0.0.1:0", 20, 20, 4);

        // The peer is reported v4-mapped, and the reply comes from the
        // address the client sent to.
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client.set_read_timeout(WAIT).expect("timeout");
        client.send_to(b"v4", target).expect("send");
        let conn = server.accept(WAIT).expect("accept");
        let peer = conn.peer_addr();
        assert!(matches!(peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
        assert_eq!(canonical(peer), client.local_addr().expect("addr"));
        assert_eq!(conn.recv(WAIT).expect("recv"), b"v4");
        conn.send(b"V4").expect("send");
        let mut buf = [0u8; 8];
        let (n, from) = client.recv_from(&mut buf).expect("reply");
        assert_eq!(&buf[..n], b"V4");
        assert_eq!(from, target);
    });
}

#[test]
fn closed_peer_is_accepted_again() {
    bounded(Duration::from_secs(20), || {
        let server = server("127.0.0.1:0");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client.connect(server.local_addr()).expect("connect");
        client.set_read_timeout(WAIT).expect("timeout");
        let mut buf = [0u8; 8];

        client.send(b"a").expect("send");
        let first = server.accept(WAIT).expect("accept");
        assert_eq!(first.recv(WAIT).expect("recv"), b"a");
        first.send(b"A").expect("reply");
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], b"A");
        let peer = first.peer_addr();
        first.close();

        client.send(b"b").expect("send again");
        let second = server.accept(WAIT).expect("accepted again");
        assert_eq!(second.peer_addr(), peer);
        assert_eq!(second.recv(WAIT).expect("recv"), b"b");
        second.send(b"B").expect("reply");
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], b"B");

        let stats = server.stats();
        println!("stats: {stats:?}");
        assert_eq!(stats.new_peers, 2);
        assert_eq!(stats.accepted, 2);
        assert_eq!(stats.active_peers, 1);
    });
}

#[test]
fn closing_the_server_wakes_every_acceptor() {
    bounded(Duration::from_secs(20), || {
        let server = server("127.0.0.1:0");

        // A connection accepted before the close keeps working after it.
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client.connect(server.local_addr()).expect("connect");
        client.send(b"before").expect("send");
        let conn = server.accept(WAIT).expect("accept");
        assert_eq!(conn.recv(WAIT).expect("recv"), b"before");

        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            let (server, tx) = (Arc::clone(&server), tx.clone());
            thread::spawn(move || {
                let _ = tx.send(server.accept(None).map(|c| c.peer_addr()));
            });
        }
        thread::sleep(Duration::from_millis(200));
        server.close();
        for _ in 0..4 {
            let result = rx
                .recv_timeout(Duration::from_secs(2))
                .expect("a blocked accept returns after close");
            let err = result.expect_err("accept fails on a closed server");
            assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        }
        assert!(server.is_closed());
        assert!(server.accept(None).is_err());
        assert!(server.accept(Some(Duration::from_millis(10))).is_err());

        client.send(b"after").expect("send");
        assert_eq!(conn.recv(WAIT).expect("recv after close"), b"after");
    });
}

/// Peers that send a burst without waiting: most of each burst reaches the
/// listening socket before the peer's socket is connected, and must be
/// handed over to the right connection. The kernel may drop datagrams when
/// the listener's buffer overflows (not this module's doing, so not
/// asserted); every datagram that is delivered must reach its own peer,
/// once.
#[test]
fn burst_before_connect_is_handed_over() {
    bounded(Duration::from_secs(60), || {
        const PEERS: usize = 100;
        const BURST: u32 = 10;
        let options = UdpOptions {
            recv_buffer_size: Some(4 << 20),
            ..UdpOptions::default()
        };
        let addr = "127.0.0.1:0".parse().expect("address");
        let server = Arc::new(UdpServer::bind(addr, options).expect("bind"));
        let target = server.local_addr();
        let sockets: Vec<UdpSocket> = (0..PEERS)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("client bind"))
            .collect();
        let ids: Arc<HashMap<SocketAddr, usize>> = Arc::new(
            sockets
                .iter()
                .enumerate()
                .map(|(id, s)| (s.local_addr().expect("client addr"), id))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        // Datagrams read by the connections so far.
        let read = Arc::new(AtomicU64::new(0));
        type Seen = Vec<(SocketAddr, Vec<(usize, u32)>)>;
        let acceptors: Vec<JoinHandle<Seen>> = (0..4)
            .map(|_| {
                let (server, stop, read) =
                    (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&read));
                thread::spawn(move || {
                    let mut readers = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(conn) = server.accept(Some(Duration::from_millis(100))) else {
                            continue;
                        };
                        let (stop, read) = (Arc::clone(&stop), Arc::clone(&read));
                        readers.push(thread::spawn(move || {
                            let mut got = Vec::new();
                            while !stop.load(Ordering::SeqCst) {
                                if let Ok(d) = conn.recv(Some(Duration::from_millis(100))) {
                                    let text = String::from_utf8_lossy(&d);
                                    got.push(parse_pair(&text).expect("well-formed"));
                                    read.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            (conn.peer_addr(), got)
                        }));
                    }
                    readers
                        .into_iter()
                        .map(|r| r.join().expect("reader"))
                        .collect()
                })
            })
            .collect();
        let barrier = Arc::new(Barrier::new(PEERS));
        let clients: Vec<JoinHandle<()>> = sockets
            .into_iter()
            .enumerate()
            .map(|(id, sock)| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    for seq in 0..BURST {
                        sock.send_to(format!("{id}:{seq}").as_bytes(), target)
                            .expect("send");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client");
        }
        // Every datagram is sent, but the server may still be routing some
        // (a new peer's datagram can wait on another peer's socket until
        // that connection reads it). Stop once every peer found so far is
        // accepted and neither new peers nor datagrams have turned up for a
        // while.
        const QUIET: Duration = Duration::from_millis(500);
        let end = Instant::now() + Duration::from_secs(20);
        let progress = || (server.stats().new_peers, read.load(Ordering::SeqCst));
        let mut last = progress();
        let mut since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = progress();
            if now != last {
                last = now;
                since = Instant::now();
            }
            let stats = server.stats();
            if stats.accepted == stats.new_peers && since.elapsed() >= QUIET {
                break;
            }
            assert!(
                Instant::now() < end,
                "peers or datagrams still arriving, or peers waiting for accept: {stats:?}"
            );
        }
        stop.store(true, Ordering::SeqCst);
        let seen: Seen = acceptors
            .into_iter()
            .flat_map(|a| a.join().expect("acceptor"))
            .collect();

        let mut delivered = 0;
        let mut peers = HashSet::new();
        for (peer, got) in &seen {
            assert!(peers.insert(*peer), "{peer} accepted twice");
            let me = ids[peer];
            let seqs: HashSet<u32> = got.iter().map(|&(_, seq)| seq).collect();
            assert!(
                got.iter().all(|&(id, _)| id == me),
                "misdelivered to {peer}"
            );
            assert_eq!(seqs.len(), got.len(), "duplicates for {peer}");
            delivered += got.len();
        }
        let stats = server.stats();
        println!(
            "burst: {} of {} datagrams delivered (any missing were dropped by the kernel), \
             {} peers, {} handed over from the listener",
            delivered,
            PEERS as u32 * BURST,
            seen.len(),
            stats.rerouted_from_listener,
        );
        println!("stats: {stats:?}");
        assert_eq!(stats.new_peers, seen.len() as u64);
        assert_eq!(stats.dropped_queue_full + stats.dropped_backlog_full, 0);
    });
}

/// Port 0 means a port nobody uses. The kernel's own port-0 choice may give
/// UDP sockets that all set SO_REUSEADDR (as every member of a reuseport
/// group does) the same port, which would make two servers share their
/// traffic: with 600 servers at once such a collision is almost certain
/// (seen: 3) unless the server picks its port itself.
#[test]
fn port_zero_servers_get_distinct_ports() {
    bounded(Duration::from_secs(60), || {
        let servers: Vec<Arc<UdpServer>> = (0..600).map(|_| server("127.0.0.1:0")).collect();
        let ports: HashSet<u16> = servers.iter().map(|s| s.local_addr().port()).collect();
        for s in &servers {
            s.close();
        }
        assert_eq!(ports.len(), servers.len(), "servers sharing a port");
    });
}
