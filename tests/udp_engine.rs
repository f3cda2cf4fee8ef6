//! UDP on the engine (`UdpEngine`), both backends: io_uring serves every
//! peer from one socket per worker (multishot recvmsg, peers told apart by
//! source address); epoll uses the portable server (a connected socket per
//! peer). 100 peers at once, each with 50 numbered datagrams: every peer
//! gets exactly its own replies.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ringnet::udp::engine::{UdpEcho, UdpEngine};
use ringnet::{Backend, Config};

fn udp_echo_many_peers(backend: Backend) {
    let cfg = Config {
        listeners: vec![ringnet::listener::ListenerSpec::bind(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"),
        )],
        workers: 2,
        backend: backend.into(),
        ..Config::default()
    };
    let engine = UdpEngine::start(cfg, |_| UdpEcho).expect("udp engine");
    assert_eq!(engine.backend(), backend);
    let addr = engine.local_addr();
    let peers: Vec<_> = (0..100u32)
        .map(|p| {
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .expect("timeout");
                let (mut resends, mut misdelivered) = (0u32, 0u32);
                let mut buf = [0u8; 64];
                for seq in 0..50u32 {
                    let msg = format!("{p}:{seq}");
                    let mut tries = 0;
                    loop {
                        s.send(msg.as_bytes()).expect("send");
                        match s.recv(&mut buf) {
                            Ok(n) if &buf[..n] == msg.as_bytes() => break,
                            Ok(n) => {
                                // An older reply after a resend is fine; another
                                // peer's datagram is not.
                                let got = String::from_utf8_lossy(&buf[..n]).to_string();
                                if !got.starts_with(&format!("{p}:")) {
                                    misdelivered += 1;
                                }
                            }
                            Err(_) => {}
                        }
                        tries += 1;
                        resends += 1;
                        assert!(
                            tries < 20,
                            "peer {p} seq {seq}: no reply after {tries} tries"
                        );
                    }
                }
                (resends, misdelivered)
            })
        })
        .collect();
    let (mut resends, mut misdelivered) = (0, 0);
    for p in peers {
        let (r, m) = p.join().expect("peer");
        resends += r;
        misdelivered += m;
    }
    let s = engine.stats();
    println!("{backend}: 100 peers x 50 datagrams: {s:?}, resends {resends}, misdelivered {misdelivered}");
    assert_eq!(misdelivered, 0);
    assert_eq!(s.send_errors, 0, "every reply sent: {s:?}");
    assert_eq!(s.truncated, 0, "{s:?}");
    assert!(s.datagrams_in >= 5000, "{s:?}");
    engine.shutdown().expect("shutdown");
}

#[test]
fn udp_echo_many_peers_uring() {
    udp_echo_many_peers(Backend::Uring);
}

#[test]
fn udp_echo_many_peers_epoll() {
    udp_echo_many_peers(Backend::Epoll);
}

fn udp_config(backend: Backend) -> Config {
    Config {
        listeners: vec![ringnet::listener::ListenerSpec::bind(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"),
        )],
        workers: 1,
        backend: backend.into(),
        ..Config::default()
    }
}

/// Generous wait for an echo that should come at once.
const ECHO_WAIT: Duration = Duration::from_secs(10);

/// One datagram from `s` and its echo (waiting up to [`ECHO_WAIT`]).
fn echo_once(s: &UdpSocket, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(ECHO_WAIT)).expect("timeout");
    s.send(msg)?;
    let mut buf = vec![0u8; 70_000];
    let n = s.recv(&mut buf)?;
    Ok(buf[..n].to_vec())
}

fn wait_udp(
    engine: &UdpEngine,
    what: &str,
    done: impl Fn(&ringnet::udp::engine::UdpStats) -> bool,
) -> ringnet::udp::engine::UdpStats {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = engine.stats();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `msg` from each socket and count the sockets its echo came back
/// to: wait (up to [`ECHO_WAIT`]) until `expected` have, then a little
/// longer, so that an echo too many is counted too. With `resend`, a socket
/// still without an echo sends `msg` again every 300 ms (a datagram may be
/// lost); without it, each sends once.
fn echo_round(socks: &[UdpSocket], msg: &[u8], expected: usize, resend: bool) -> usize {
    const POLL: Duration = Duration::from_millis(10);
    const RESEND_AFTER: Duration = Duration::from_millis(300);
    const GRACE: Duration = Duration::from_millis(200);
    for s in socks {
        s.set_nonblocking(true).expect("nonblocking");
        s.send(msg).expect("send");
    }
    let start = Instant::now();
    let mut sent_at = start;
    let mut served = vec![false; socks.len()];
    let mut buf = [0u8; 64];
    let mut grace_until: Option<Instant> = None;
    loop {
        for (s, got) in socks.iter().zip(served.iter_mut()) {
            // Read everything queued: a resend may bring a second echo.
            while let Ok(n) = s.recv(&mut buf) {
                if &buf[..n] == msg {
                    *got = true;
                }
            }
        }
        let count = served.iter().filter(|&&g| g).count();
        let now = Instant::now();
        if count >= expected && grace_until.is_none() {
            grace_until = Some(now + GRACE);
        }
        if grace_until.is_some_and(|g| now >= g) || now >= start + ECHO_WAIT {
            for s in socks {
                s.set_nonblocking(false).expect("blocking");
            }
            return count;
        }
        if resend && count < expected && now >= sent_at + RESEND_AFTER {
            for (s, _) in socks.iter().zip(&served).filter(|(_, got)| !**got) {
                s.send(msg).expect("resend");
            }
            sent_at = now;
        }
        std::thread::sleep(POLL);
    }
}

/// Many distinct peers (source ports, which anyone can make up). The
/// portable backend (epoll) gives each a socket and a thread, so it caps
/// them (`max_connections`) and lets silent ones go (`idle_timeout`), after
/// which a peer is served again as a new one; io_uring keeps no per-peer
/// state and serves them all.
fn udp_peers_are_bounded(backend: Backend) {
    let engine = UdpEngine::start(
        Config {
            max_connections: 10,
            idle_timeout: Some(Duration::from_secs(2)),
            ..udp_config(backend)
        },
        |_| UdpEcho,
    )
    .expect("udp engine");
    let addr = engine.local_addr();
    let peers: Vec<UdpSocket> = (0..30)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.connect(addr).expect("connect");
            s
        })
        .collect();
    // On epoll each peer sends once: a resend from a refused peer would be
    // refused again, and counted.
    let (expected, resend) = match backend {
        Backend::Epoll => (10, false),
        Backend::Uring => (30, true),
    };
    let served = echo_round(&peers, b"first", expected, resend);
    let s = engine.stats();
    println!("{backend}: 30 peers, {served} served at once: {s:?}");
    if backend == Backend::Epoll {
        assert_eq!(served, 10, "the peer limit: {s:?}");
        wait_udp(&engine, "10 peers admitted and 20 refused", |s| {
            s.peers_refused == 20 && s.peers_open + s.peers_expired == 10
        });
        let s = wait_udp(&engine, "idle peers let go", |s| s.peers_open == 0);
        assert_eq!(s.peers_expired, 10);
    } else {
        assert_eq!(served, 30, "{s:?}");
        assert_eq!(s.peers_open, 0, "no per-peer state on io_uring");
    }
    // Every peer (refused or let go) is served when it comes back.
    for chunk in peers.chunks(10) {
        assert_eq!(
            echo_round(chunk, b"again", 10, true),
            10,
            "{:?}",
            engine.stats()
        );
        if backend == Backend::Epoll {
            wait_udp(&engine, "idle peers let go", |s| s.peers_open == 0);
        }
    }
    engine.shutdown().expect("shutdown");
}

/// The largest datagram served is the same on both backends
/// (`max_datagram`); one byte more is dropped and counted, and the peer is
/// still served afterwards.
fn udp_datagram_size_limit(backend: Backend) {
    let cfg = udp_config(backend);
    let max = ringnet::udp::engine::max_datagram(&cfg);
    let engine = UdpEngine::start(cfg, |_| UdpEcho).expect("udp engine");
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(engine.local_addr()).expect("connect");
    let big = vec![7u8; max];
    match echo_once(&s, &big) {
        Ok(got) => assert!(got == big, "{max} bytes: {} came back", got.len()),
        Err(e) => panic!("{max} bytes: no echo: {e}"),
    }
    s.send(&vec![7u8; max + 1]).expect("send");
    let st = wait_udp(&engine, "the drop counted", |st| st.truncated == 1);
    println!(
        "{backend}: max datagram {max} bytes echoed, {} dropped: {st:?}",
        max + 1
    );
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = vec![0u8; 70_000];
    if let Ok(n) = s.recv(&mut buf) {
        panic!("{} bytes: a reply of {n} bytes came back", max + 1);
    }
    // Also catches a reply to the dropped datagram that came later still.
    match echo_once(&s, b"small") {
        Ok(got) => assert_eq!(got, b"small", "the echo of \"small\""),
        Err(e) => panic!("no echo after the drop: {e}"),
    }
    engine.shutdown().expect("shutdown");
}

/// Shutdown while a flood keeps an 8-entry CQ full (io_uring: the kernel
/// may end the wake poll then; the worker must arm it again or it never
/// hears the stop). Fails by timing out instead of hanging.
fn udp_shutdown_under_flood(backend: Backend) {
    let engine = UdpEngine::start(
        Config {
            sq_entries: 4,
            cq_entries: 8,
            buf_count: 8,
            ..udp_config(backend)
        },
        |_| UdpEcho,
    )
    .expect("udp engine");
    let addr = engine.local_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.connect(addr).expect("connect");
                s.set_nonblocking(true).expect("nonblocking");
                let mut buf = [0u8; 64];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = s.send(&[1u8; 32]);
                    let _ = s.recv(&mut buf);
                }
            })
        })
        .collect();
    wait_udp(&engine, "the flood to arrive", |s| s.datagrams_in > 10_000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(engine.shutdown());
    });
    let done = rx.recv_timeout(Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in floods {
        f.join().expect("flood");
    }
    done.expect("shutdown returned under the flood")
        .expect("clean shutdown");
}

/// A UDP port already held is "address in use" on both backends: held by
/// a plain socket, and held by another engine (both engines bind with
/// SO_REUSEPORT, so without the check the second would share the port and
/// take part of the first one's traffic).
fn udp_port_in_use_is_reported(backend: Backend) {
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr");
    let err = UdpEngine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(taken)],
            ..udp_config(backend)
        },
        |_| UdpEcho,
    )
    .err()
    .expect("a held port is refused");
    assert!(
        matches!(&err, ringnet::Error::AddressInUse(a) if *a == taken),
        "{err}"
    );
    drop(holder);
    let first = UdpEngine::start(udp_config(backend), |_| UdpEcho).expect("first engine");
    let err = UdpEngine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(first.local_addr())],
            ..udp_config(backend)
        },
        |_| UdpEcho,
    )
    .err()
    .expect("a second engine on the same port is refused");
    println!("{backend}: {err}");
    assert!(matches!(err, ringnet::Error::AddressInUse(_)), "{err}");
    first.shutdown().expect("shutdown");
}

/// Panics on the first datagram it is given.
struct PanicOnDatagram;

impl ringnet::udp::engine::DatagramHandler for PanicOnDatagram {
    fn on_datagram(
        &mut self,
        _from: std::net::SocketAddr,
        _data: &[u8],
        _out: &mut ringnet::udp::engine::Replies,
    ) {
        panic!("handler fails on a datagram (expected by this test)");
    }
}

/// A panicking handler is reported as the panic of the worker it served
/// for: io_uring builds each worker's handler in its setup, so a factory
/// that panics for worker 1 fails the start naming it (epoll builds one per
/// peer, later); and a handler that panics while serving is reported by the
/// shutdown.
fn udp_panics_name_the_worker(backend: Backend) {
    let started = UdpEngine::start(
        Config {
            workers: 2,
            ..udp_config(backend)
        },
        |i| {
            if i == 1 {
                panic!("handler factory fails for worker 1 (expected by this test)");
            }
            PanicOnDatagram
        },
    );
    match (backend, started) {
        (Backend::Uring, Err(ringnet::Error::WorkerPanicked { worker: 1 })) => {}
        (Backend::Epoll, Ok(engine)) => engine.shutdown().expect("no peer, no handler yet"),
        (_, other) => panic!("{backend}: unexpected start: {:?}", other.err()),
    }

    let engine = UdpEngine::start(udp_config(backend), |_| PanicOnDatagram).expect("udp engine");
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(engine.local_addr()).expect("connect");
    // Counted just before the handler sees it; resent in case one is lost.
    let end = Instant::now() + Duration::from_secs(10);
    while engine.stats().datagrams_in == 0 {
        assert!(Instant::now() < end, "no datagram arrived");
        s.send(b"boom").expect("send");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = engine
        .shutdown()
        .expect_err("the shutdown reports the panic");
    assert!(
        matches!(err, ringnet::Error::WorkerPanicked { worker: 0 }),
        "{backend}: {err:?}"
    );
}

#[test]
fn udp_panics_name_the_worker_uring() {
    udp_panics_name_the_worker(Backend::Uring);
}

#[test]
fn udp_panics_name_the_worker_epoll() {
    udp_panics_name_the_worker(Backend::Epoll);
}

#[test]
fn udp_port_in_use_is_reported_uring() {
    udp_port_in_use_is_reported(Backend::Uring);
}

#[test]
fn udp_port_in_use_is_reported_epoll() {
    udp_port_in_use_is_reported(Backend::Epoll);
}

#[test]
fn udp_peers_are_bounded_uring() {
    udp_peers_are_bounded(Backend::Uring);
}

#[test]
fn udp_peers_are_bounded_epoll() {
    udp_peers_are_bounded(Backend::Epoll);
}

#[test]
fn udp_datagram_size_limit_uring() {
    udp_datagram_size_limit(Backend::Uring);
}

#[test]
fn udp_datagram_size_limit_epoll() {
    udp_datagram_size_limit(Backend::Epoll);
}

#[test]
fn udp_shutdown_under_flood_uring() {
    udp_shutdown_under_flood(Backend::Uring);
}

#[test]
fn udp_shutdown_under_flood_epoll() {
    udp_shutdown_under_flood(Backend::Epoll);
}
