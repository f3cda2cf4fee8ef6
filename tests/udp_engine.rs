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
