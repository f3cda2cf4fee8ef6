//! UDP datagrams per second for 1, 64 and 512 peers, two designs:
//!
//! * `one-socket-demux`: the io_uring UDP engine — one SO_REUSEPORT socket
//!   per worker, one multishot recvmsg, peers told apart by source address
//!   in user space;
//! * `socket-per-peer`: the portable server on the epoll backend — each peer
//!   gets its own connected socket (and here its own thread).
//!
//! One iteration: every peer sends one datagram, then every peer reads its
//! echo (checked). The server runs one worker pinned to CPU 0, the client
//! (one thread, all peers) on CPU 1. Run with `cargo bench --bench udp`;
//! the HTML report lands in `target/criterion/report/index.html`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{bench_config, CLIENT_CPU};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnet::udp::engine::{UdpEcho, UdpEngine};
use ringnet::{Backend, Config};

/// Client sockets with the payload each sends.
type Peers = Vec<(UdpSocket, Vec<u8>)>;

fn start(backend: Backend) -> UdpEngine {
    // 512 datagrams arrive in one burst: room for all of them.
    let cfg = Config {
        recv_buffer_size: Some(4 << 20),
        ..bench_config(backend)
    };
    let engine = UdpEngine::start(cfg, |_| UdpEcho).expect("udp engine");
    assert_eq!(
        engine.backend(),
        backend,
        "the contender runs on its own backend"
    );
    engine
}

/// `n` client sockets connected to `addr`, each with its own payload.
fn peers(addr: SocketAddr, n: usize) -> Peers {
    (0..n)
        .map(|i| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            (s, format!("peer {i:04} datagram").into_bytes())
        })
        .collect()
}

/// One datagram out from every peer, then every echo back.
fn round(peers: &[(UdpSocket, Vec<u8>)], buf: &mut [u8]) {
    for (s, msg) in peers {
        s.send(msg).expect("send");
    }
    for (s, msg) in peers {
        let n = s.recv(buf).expect("echo");
        assert_eq!(&buf[..n], &msg[..], "a peer got someone else's datagram");
    }
}

fn udp(c: &mut Criterion) {
    ringnet::pin_current_thread(CLIENT_CPU).expect("pin the client thread");
    for n in [1usize, 64, 512] {
        let mut group = c.benchmark_group(format!("udp/{n}peers"));
        group
            .throughput(Throughput::Elements(n as u64))
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for (name, backend) in [
            ("one-socket-demux", Backend::Uring),
            ("socket-per-peer", Backend::Epoll),
        ] {
            let mut setup: Option<(UdpEngine, Peers)> = None;
            let mut buf = vec![0u8; 2048];
            group.bench_function(name, |b| {
                let (engine, ps) = setup.get_or_insert_with(|| {
                    let e = start(backend);
                    let ps = peers(e.local_addr(), n);
                    (e, ps)
                });
                let _ = engine.local_addr();
                b.iter(|| round(ps, &mut buf));
            });
            if let Some((engine, ps)) = setup {
                drop(ps);
                engine.shutdown().expect("shutdown");
            }
        }
        group.finish();
    }
}

criterion_group!(benches, udp);
criterion_main!(benches);
