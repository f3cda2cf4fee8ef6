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

mod util;

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

/// Every client's datagrams after its reply go to the connection already
/// accepted for it. Once every connection has read its client's flush mark
/// (sent after the reply) and a new peer has been accepted behind them,
/// every datagram the clients sent has been routed: a peer accepted twice
/// has shown up by then, however slow the machine.
#[test]
fn concurrent_accept_gives_each_peer_once() {
    bounded(Duration::from_secs(60), || {
        const PEERS: usize = 50;
        // The flush mark: `"{id}:{FLUSH}"` (hellos do not parse as marks).
        const FLUSH: u32 = 0;
        let server = server("127.0.0.1:0");
        let target = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let marks: Arc<Marks> = Arc::default();
        let acceptors: Vec<JoinHandle<usize>> = (0..4)
            .map(|_| {
                let (server, stop, accepted, marks) = (
                    Arc::clone(&server),
                    Arc::clone(&stop),
                    Arc::clone(&accepted),
                    Arc::clone(&marks),
                );
                thread::spawn(move || {
                    // Keep every connection open and read, so a client's
                    // later datagrams go to it and cannot make the peer
                    // new again (and other peers' datagrams that landed on
                    // its socket are routed).
                    let mut readers = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match server.accept(Some(Duration::from_millis(100))) {
                            Ok(conn) => {
                                let peer = conn.peer_addr();
                                accepted.lock().expect("lock").push(peer);
                                let (stop, marks) = (Arc::clone(&stop), Arc::clone(&marks));
                                readers.push(thread::spawn(move || {
                                    let note = |d: &[u8]| {
                                        let text = String::from_utf8_lossy(d);
                                        if let Some((_, seq)) = parse_pair(&text) {
                                            marks.lock().expect("lock").insert((peer, seq));
                                        }
                                    };
                                    let first = conn.recv(WAIT).expect("first datagram");
                                    conn.send(&first).expect("reply");
                                    note(&first);
                                    while !stop.load(Ordering::SeqCst) {
                                        match conn.recv(Some(Duration::from_millis(100))) {
                                            Ok(d) => note(&d),
                                            Err(e) if is_timeout(&e) => {}
                                            Err(e) => panic!("recv from {peer}: {e}"),
                                        }
                                    }
                                }));
                            }
                            Err(e) if is_timeout(&e) => {}
                            Err(e) => panic!("accept: {e}"),
                        }
                    }
                    let conns = readers.len();
                    for r in readers {
                        r.join().expect("reader");
                    }
                    conns
                })
            })
            .collect();

        let barrier = Arc::new(Barrier::new(PEERS));
        // Each client hands its socket back, to send its flush mark from.
        let clients: Vec<JoinHandle<UdpSocket>> = (0..PEERS)
            .map(|id| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").expect("client bind");
                    barrier.wait();
                    let report = run_hello(&sock, id, target);
                    report.expect("client gets its reply");
                    sock
                })
            })
            .collect();
        let clients: Vec<UdpSocket> = clients
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect();
        let client_addrs: HashSet<SocketAddr> = clients
            .iter()
            .map(|s| s.local_addr().expect("client addr"))
            .collect();

        // Every client has its reply, so every peer has been accepted; its
        // resends may still be anywhere (its own socket, the listener's,
        // another peer's). A flush mark after them reaches the
        // connection's own socket behind its resends: a connection that
        // has read it has read (or routed) everything that socket had
        // before.
        let clients: Vec<(usize, &UdpSocket)> = clients.iter().enumerate().collect();
        send_marks(&clients, target, FLUSH, &marks, Duration::from_secs(20));
        // Then a new peer: its datagram reaches the listening socket
        // behind whatever was still queued there, and the listener is read
        // in order, so once it is accepted, every datagram the clients sent
        // has been routed, and a duplicate is in the accept queue ahead of
        // it (accept takes them in order).
        let sentinel = UdpSocket::bind("127.0.0.1:0").expect("sentinel bind");
        run_hello(&sentinel, PEERS, target).expect("the sentinel gets its reply");
        let sentinel = sentinel.local_addr().expect("sentinel addr");

        stop.store(true, Ordering::SeqCst);
        let conns: usize = acceptors
            .into_iter()
            .map(|t| t.join().expect("acceptor"))
            .sum();
        let accepted = accepted.lock().expect("lock").clone();
        let distinct: HashSet<SocketAddr> = accepted.iter().copied().collect();
        let mut expected = client_addrs;
        expected.insert(sentinel);
        let stats = server.stats();
        println!("stats: {stats:?}");
        assert_eq!(
            accepted.len(),
            PEERS + 1,
            "accepts (the clients, the sentinel)"
        );
        assert_eq!(conns, PEERS + 1);
        assert_eq!(distinct, expected, "each peer once");
        assert_eq!(stats.new_peers, PEERS as u64 + 1, "connections made");
        assert_eq!(stats.pending_accept, 0, "connections left unaccepted");
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
        let (tids_tx, tids) = mpsc::channel();
        for _ in 0..4 {
            let (server, tx, tids_tx) = (Arc::clone(&server), tx.clone(), tids_tx.clone());
            thread::spawn(move || {
                tids_tx.send(util::thread_id()).expect("send thread id");
                let _ = tx.send(server.accept(None).map(|c| c.peer_addr()));
            });
        }
        let tids: Vec<u64> = (0..4)
            .map(|_| tids.recv_timeout(WAIT.expect("wait")).expect("thread id"))
            .collect();
        // Close only once every acceptor is blocked: after saying who it
        // is, it does nothing but call accept, so asleep on a futex it is
        // waiting in accept, and it is the close that has to wake it.
        util::wait_until(
            Duration::from_secs(10),
            "every acceptor to block in accept",
            || {
                tids.iter()
                    .all(|&tid| util::asleep_in(tid, Some(libc::SYS_futex)))
            },
        );
        assert!(
            rx.try_recv().is_err(),
            "no accept returned before the close"
        );
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
        // Marks: seqs past the burst, sent after it (see below).
        const KNOWN: u32 = BURST;
        const DRAINED: u32 = BURST + 1;
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
        let marks: Arc<Marks> = Arc::default();
        type Seen = Vec<(SocketAddr, Vec<(usize, u32)>)>;
        let acceptors: Vec<JoinHandle<Seen>> = (0..4)
            .map(|_| {
                let (server, stop, marks) =
                    (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&marks));
                thread::spawn(move || {
                    let mut readers = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(conn) = server.accept(Some(Duration::from_millis(100))) else {
                            continue;
                        };
                        let (stop, marks) = (Arc::clone(&stop), Arc::clone(&marks));
                        readers.push(thread::spawn(move || {
                            let peer = conn.peer_addr();
                            let mut got = Vec::new();
                            let mut note = |d: Vec<u8>| {
                                let text = String::from_utf8_lossy(&d);
                                let (id, seq) = parse_pair(&text).expect("well-formed");
                                if seq >= BURST {
                                    marks.lock().expect("lock").insert((peer, seq));
                                }
                                got.push((id, seq));
                            };
                            while !stop.load(Ordering::SeqCst) {
                                if let Ok(d) = conn.recv(Some(Duration::from_millis(100))) {
                                    note(d);
                                }
                            }
                            // Everything has been routed by now: read what
                            // is left, queued or on the socket.
                            while let Ok(d) = conn.recv(Some(Duration::from_millis(1))) {
                                note(d);
                            }
                            (peer, got)
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
        // Each client hands its socket back, to send its marks from.
        let clients: Vec<JoinHandle<UdpSocket>> = sockets
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
                    sock
                })
            })
            .collect();
        let clients: Vec<UdpSocket> = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        let clients: Vec<(usize, &UdpSocket)> = clients.iter().enumerate().collect();
        // Every datagram is sent, but the server may still be routing some
        // (a new peer's datagram can wait on another peer's socket until
        // that connection reads it). Rather than wait for a quiet spell,
        // wait until nothing can be left in flight:
        // 1. every client's KNOWN mark is read by its connection: every
        //    client is a peer with a connected socket of its own;
        // 2. a new peer (the sentinel) is accepted: its first datagram
        //    reached the listening socket behind everything still queued
        //    there, and the listener is read in order, so all of that has
        //    been routed;
        // 3. every peer's DRAINED mark, which reaches its own socket, is
        //    read: each connection has read or routed everything its
        //    socket held before.
        // What was routed to a connection after its mark, it reads once
        // told to stop.
        let limit = Duration::from_secs(20);
        send_marks(&clients, target, KNOWN, &marks, limit);
        let sentinel = UdpSocket::bind("127.0.0.1:0").expect("sentinel bind");
        send_marks(&[(PEERS, &sentinel)], target, KNOWN, &marks, limit);
        let mut all = clients.clone();
        all.push((PEERS, &sentinel));
        send_marks(&all, target, DRAINED, &marks, limit);
        stop.store(true, Ordering::SeqCst);
        let seen: Seen = acceptors
            .into_iter()
            .flat_map(|a| a.join().expect("acceptor"))
            .collect();

        let sentinel = sentinel.local_addr().expect("sentinel addr");
        let mut delivered = 0;
        let mut peers = HashSet::new();
        for (peer, got) in &seen {
            assert!(peers.insert(*peer), "{peer} accepted twice");
            let me = if *peer == sentinel { PEERS } else { ids[peer] };
            assert!(
                got.iter().all(|&(id, _)| id == me),
                "misdelivered to {peer}"
            );
            // Marks may come more than once (sent again); the burst not.
            let burst: Vec<u32> = got
                .iter()
                .map(|&(_, seq)| seq)
                .filter(|&seq| seq < BURST)
                .collect();
            let seqs: HashSet<u32> = burst.iter().copied().collect();
            assert_eq!(seqs.len(), burst.len(), "duplicates for {peer}");
            delivered += burst.len();
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
        assert_eq!(peers.len(), PEERS + 1, "every client and the sentinel");
        assert_eq!(stats.new_peers, seen.len() as u64);
        assert_eq!(stats.dropped_queue_full + stats.dropped_backlog_full, 0);
    });
}

/// Marks read by connections: (peer, seq).
type Marks = Mutex<HashSet<(SocketAddr, u32)>>;

/// Send `"{id}:{mark}"` to `target` from each `(id, socket)`, again after
/// [`REPLY_WAIT`] from those whose connection has not read it yet (the
/// kernel may have dropped it), until every one has; panic after `limit`.
fn send_marks(
    socks: &[(usize, &UdpSocket)],
    target: SocketAddr,
    mark: u32,
    marks: &Marks,
    limit: Duration,
) {
    let end = Instant::now() + limit;
    loop {
        let missing: Vec<&(usize, &UdpSocket)> = {
            let marks = marks.lock().expect("lock");
            socks
                .iter()
                .filter(|(_, s)| !marks.contains(&(s.local_addr().expect("addr"), mark)))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "mark {mark} not read after {limit:?} for {} peers",
            missing.len()
        );
        for (id, sock) in missing {
            sock.send_to(format!("{id}:{mark}").as_bytes(), target)
                .expect("send mark");
        }
        thread::sleep(REPLY_WAIT);
    }
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
