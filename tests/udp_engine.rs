//! UDP on the engine (`UdpEngine`), both backends: io_uring serves every
//! peer from one socket per worker (multishot recvmsg, peers told apart by
//! source address); epoll uses the portable server (a connected socket per
//! peer). 100 peers at once, each with 50 numbered datagrams: every peer
//! gets exactly its own replies.

use std::net::UdpSocket;
use std::time::Duration;

use ringnet::udp::engine::{UdpEcho, UdpEngine};
use ringnet::{Backend, Config};

fn udp_echo_many_peers(backend: Backend) {
    let cfg = Config {
        addr: "127.0.0.1:0".parse().expect("addr"),
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
        addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        backend: backend.into(),
        ..Config::default()
    }
}

/// One datagram from `s`, echoed within a second (or `None`).
fn echo_once(s: &UdpSocket, msg: &[u8]) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    s.send(msg).expect("send");
    let mut buf = vec![0u8; 70_000];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn wait_udp(
    engine: &UdpEngine,
    what: &str,
    done: impl Fn(&ringnet::udp::engine::UdpStats) -> bool,
) -> ringnet::udp::engine::UdpStats {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = engine.stats();
        if done(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send one datagram from each socket, then count the echoes that came
/// back within half a second.
fn echo_round(socks: &[UdpSocket], msg: &[u8]) -> usize {
    for s in socks {
        s.send(msg).expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut buf = [0u8; 64];
    socks
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            let got = s.recv(&mut buf).is_ok_and(|n| &buf[..n] == msg);
            s.set_nonblocking(false).expect("blocking");
            got
        })
        .count()
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
    let served = echo_round(&peers, b"first");
    let s = engine.stats();
    println!("{backend}: 30 peers, {served} served at once: {s:?}");
    if backend == Backend::Epoll {
        assert_eq!(served, 10, "the peer limit: {s:?}");
        assert_eq!(s.peers_refused, 20);
        assert_eq!(s.peers_open + s.peers_expired, 10);
        let s = wait_udp(&engine, "idle peers let go", |s| s.peers_open == 0);
        assert_eq!(s.peers_expired, 10);
    } else {
        assert_eq!(served, 30);
        assert_eq!(s.peers_open, 0, "no per-peer state on io_uring");
    }
    // Every peer (refused or let go) is served when it comes back.
    for chunk in peers.chunks(10) {
        assert_eq!(echo_round(chunk, b"again"), 10, "{:?}", engine.stats());
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
    assert_eq!(
        echo_once(&s, &big).as_deref(),
        Some(&big[..]),
        "{max} bytes"
    );
    assert_eq!(
        echo_once(&s, &vec![7u8; max + 1]),
        None,
        "{} bytes",
        max + 1
    );
    let st = wait_udp(&engine, "the drop counted", |st| st.truncated == 1);
    println!(
        "{backend}: max datagram {max} bytes echoed, {} dropped: {st:?}",
        max + 1
    );
    assert_eq!(echo_once(&s, b"small").as_deref(), Some(&b"small"[..]));
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
            addr: taken,
            ..udp_config(backend)
        },
        |_| UdpEcho,
    )
    .err()
    .expect("a held port is refused");
    assert!(
        matches!(err, ringnet::Error::AddressInUse(a) if a == taken),
        "{err}"
    );
    drop(holder);
    let first = UdpEngine::start(udp_config(backend), |_| UdpEcho).expect("first engine");
    let err = UdpEngine::start(
        Config {
            addr: first.local_addr(),
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
