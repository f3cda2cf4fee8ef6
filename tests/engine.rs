//! The engine end to end over loopback: echo under load, buffer-ring
//! exhaustion, fairness, peer faults, listener modes, shutdown.
//!
//! Every body takes the backend; each `#[test]` names the backend it runs.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringnet::{Backend, BufferMode, Config, ListenerMode};
use util::*;

fn echo_one(backend: Backend) {
    let engine = echo_engine(config(backend));
    let mut s = connect(engine.local_addr());
    ping(&mut s, b"hello, ring\n");
    ping(&mut s, &[0u8; 1]);
    ping(&mut s, b"fives");
    drop(s);
    wait_baseline(&engine);
    engine.shutdown().expect("clean shutdown");
}

/// 200 connections at once, each echoing a random size up to 1 MiB.
fn echo_many(cfg: Config) -> ringnet::Stats {
    let engine = echo_engine(cfg);
    let addr = engine.local_addr();
    let clients: Vec<_> = (0..200u64)
        .map(|i| {
            std::thread::spawn(move || {
                let len = 1 + rand_below(i, 1 << 20) as usize;
                echo_roundtrip(addr, pattern(i, len));
                len as u64
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let s = wait_baseline(&engine);
    assert_eq!(s.accepted, 200);
    assert_eq!(s.bytes_in, total);
    assert_eq!(s.bytes_out, total);
    let per_worker: Vec<u64> = engine.worker_stats().iter().map(|w| w.accepted).collect();
    println!(
        "echoed {total} bytes over 200 connections; accepted per worker {per_worker:?}; enobufs {}",
        s.enobufs
    );
    engine.shutdown().expect("clean shutdown");
    s
}

fn echo_many_one_worker(backend: Backend) {
    echo_many(config(backend));
}

fn echo_many_shared_listener(backend: Backend) {
    echo_many(Config {
        workers: 2,
        listener: ListenerMode::Shared,
        ..config(backend)
    });
}

fn echo_many_reuseport(backend: Backend) {
    echo_many(Config {
        workers: 2,
        listener: ListenerMode::ReusePort,
        ..config(backend)
    });
}

/// Registered descriptors (io_uring only): every connection installed in the
/// ring's file table, its recvs and sends by index; slots reused many times.
fn echo_many_fixed_files(backend: Backend) {
    echo_many(Config {
        workers: 2,
        fixed_files: 64,
        ..config(backend)
    });
}

/// Recv bundles (io_uring, 6.10+): one completion may carry several
/// buffers; every byte still arrives in order.
fn echo_many_recv_bundle(backend: Backend) {
    let s = echo_many(Config {
        workers: 2,
        recv_bundle: true,
        ..config(backend)
    });
    println!("buffers received in bundles: {}", s.bundled_buffers);
    assert!(
        s.bundled_buffers > 0,
        "bundles carried several buffers: {s:?}"
    );
}

/// SEND_ZC for sends of 4 KiB and more (io_uring): the send buffer is held
/// until the kernel's notification; every byte still arrives in order.
fn echo_many_send_zc(backend: Backend) {
    let s = echo_many(Config {
        workers: 2,
        send_zc_threshold: 4096,
        ..config(backend)
    });
    println!("SEND_ZC sends: {}", s.zc_sends);
    assert!(s.zc_sends > 0, "large sends went through SEND_ZC: {s:?}");
}

/// Batched waiting (io_uring min-wait, Linux 6.12; the epoll backend
/// ignores the setting): a lone request is answered once the min-wait has
/// passed instead of being held for a full batch, many connections echo, and
/// an idle worker is not woken by the min-wait timer again and again.
fn batch_wait(backend: Backend) {
    if backend == Backend::Uring {
        let report = ringnet::uring::probe::probe();
        let min_wait = report.feature("min-wait").expect("probe lists min-wait");
        if !min_wait.supported {
            eprintln!(
                "skipping batch_wait_uring: {} (kernel {})",
                min_wait.detail, report.kernel
            );
            return;
        }
    }
    let cfg = Config {
        batch_wait: Duration::from_micros(200),
        wait_batch: 64,
        ..config(backend)
    };
    let engine = echo_engine(cfg.clone());
    let mut s = connect(engine.local_addr());
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A request held until the batch fills (64 completions that never come)
    // is answered only when the batched wait's 1 s general timeout passes;
    // one answered after the 200 µs min-wait comes back in well under
    // 300 ms. Most pings must be quick, leaving room for a few delayed by
    // an overloaded machine.
    let mut quick = 0;
    for i in 0..20u8 {
        let sent = Instant::now();
        ping(&mut s, &[i; 16]);
        if sent.elapsed() < Duration::from_millis(300) {
            quick += 1;
        }
    }
    println!("pings answered within 300 ms: {quick} of 20");
    assert!(
        quick >= 15,
        "requests were held for a full batch: only {quick} of 20 pings answered within 300 ms"
    );
    drop(s);
    wait_baseline(&engine);
    let before = engine.stats().waits;
    std::thread::sleep(Duration::from_millis(500));
    let idle_waits = engine.stats().waits - before;
    println!("wake-ups of an idle worker in 500 ms: {idle_waits}");
    assert!(
        idle_waits <= 3,
        "an idle worker kept waking up: {idle_waits} times in 500 ms"
    );
    engine.shutdown().expect("clean shutdown");
    let s = echo_many(cfg);
    println!("waits for 200 echoing connections: {}", s.waits);
}

/// Bundles through a tiny ring: a completion spans consecutive entries
/// whose buffer ids are not consecutive once buffers were recycled.
fn exhaustion_with_recv_bundle(backend: Backend) {
    exhaustion(Config {
        buf_count: 4,
        buf_size: 64,
        recv_bundle: true,
        ..config(backend)
    });
}

fn echo_many_per_connection_buffers(backend: Backend) {
    echo_many(Config {
        workers: 2,
        buffers: BufferMode::PerConnection,
        ..config(backend)
    });
}

/// A tiny ring (4 buffers of 64 bytes) and 100 concurrent senders: ENOBUFS
/// must re-arm, never end the stream, and nothing may be lost or reordered.
fn exhaustion(cfg: Config) {
    let engine = echo_engine(cfg);
    let addr = engine.local_addr();
    let clients: Vec<_> = (0..100u64)
        .map(|i| std::thread::spawn(move || echo_roundtrip(addr, pattern(1000 + i, 32 * 1024))))
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let s = wait_baseline(&engine);
    assert_eq!(s.bytes_out, 100 * 32 * 1024);
    println!(
        "100 senders through 4 x 64-byte buffers: {} ENOBUFS re-arms, {} recv re-arms",
        s.enobufs, s.recv_rearms
    );
    if engine.backend() == Backend::Uring {
        assert!(
            s.enobufs > 0,
            "a 4-buffer ring under 100 senders must run dry: {s:?}"
        );
    }
    engine.shutdown().expect("clean shutdown");
}

fn exhaustion_shared_ring(backend: Backend) {
    exhaustion(Config {
        buf_count: 4,
        buf_size: 64,
        ..config(backend)
    });
}

fn exhaustion_per_connection_rings(backend: Backend) {
    exhaustion(Config {
        buffers: BufferMode::PerConnection,
        conn_buf_count: 4,
        buf_size: 64,
        ..config(backend)
    });
}

/// One client floods; ten others ping-pong small messages and must keep
/// getting answers.
fn fairness(cfg: Config) {
    let engine = echo_engine(cfg);
    let addr = engine.local_addr();
    let flood = connect(addr);
    let mut flood_r = flood.try_clone().expect("clone");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let mut flood_w = flood;
    let flooder = std::thread::spawn(move || {
        let chunk = pattern(7, 256 * 1024);
        let mut sent = 0u64;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            flood_w.write_all(&chunk).expect("flood write");
            sent += chunk.len() as u64;
        }
        flood_w
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        sent
    });
    let drainer = std::thread::spawn(move || {
        let mut buf = vec![0; 256 * 1024];
        let mut n = 0u64;
        loop {
            match flood_r.read(&mut buf) {
                Ok(0) => return n,
                Ok(k) => n += k as u64,
                Err(e) => panic!("flood read: {e}"),
            }
        }
    });
    // Let the flood get going before the others start.
    wait_stats(&engine, Duration::from_secs(10), "flood traffic", |s| {
        s.bytes_in > 4 << 20
    });
    let start = Instant::now();
    let others: Vec<_> = (0..10u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let msg = pattern(i, 64);
                let mut worst = Duration::ZERO;
                for _ in 0..200 {
                    let t = Instant::now();
                    ping(&mut s, &msg);
                    worst = worst.max(t.elapsed());
                }
                worst
            })
        })
        .collect();
    let worst: Vec<Duration> = others
        .into_iter()
        .map(|o| o.join().expect("small client"))
        .collect();
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().expect("flooder");
    let echoed = drainer.join().expect("drainer");
    assert_eq!(sent, echoed, "flood fully echoed");
    println!(
        "10 clients x 200 round trips while one floods: {:.0} round trips/s, worst single round trip {:?}, flood moved {} MiB",
        2000.0 / elapsed.as_secs_f64(),
        worst.iter().max().copied().unwrap_or_default(),
        sent >> 20
    );
    wait_baseline(&engine);
    engine.shutdown().expect("clean shutdown");
}

fn fairness_shared_ring(backend: Backend) {
    fairness(config(backend));
}

fn fairness_per_connection_rings(backend: Backend) {
    fairness(Config {
        buffers: BufferMode::PerConnection,
        ..config(backend)
    });
}

/// A peer that resets mid-stream (SO_LINGER 0) and one that half-closes: the
/// server frees their slots and keeps serving a third client throughout.
fn peer_faults(cfg: Config) {
    let engine = echo_engine(cfg);
    let addr = engine.local_addr();
    let mut steady = connect(addr);
    ping(&mut steady, b"before");
    for round in 0..20u64 {
        // Reset while the server is echoing a large message back.
        let s = connect(addr);
        (&s).write_all(&pattern(round, 256 * 1024)).expect("write");
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
        drop(s);
        // Half-close: everything sent before the FIN still comes back.
        let mut h = connect(addr);
        let msg = pattern(round + 100, 10_000);
        h.write_all(&msg).expect("write");
        h.shutdown(std::net::Shutdown::Write)
            .expect("shutdown write");
        let mut back = Vec::new();
        h.read_to_end(&mut back).expect("read rest");
        assert_eq!(back, msg, "half-closed peer gets its echo, then EOF");
        ping(&mut steady, b"still here");
    }
    drop(steady);
    let s = wait_baseline(&engine);
    assert_eq!(s.accepted, 41);
    println!("after 20 resets and 20 half-closes: {s:?}");
    engine.shutdown().expect("clean shutdown");
}

fn peer_faults_shared_ring(backend: Backend) {
    peer_faults(config(backend));
}

fn peer_faults_per_connection_rings(backend: Backend) {
    peer_faults(Config {
        buffers: BufferMode::PerConnection,
        ..config(backend)
    });
}

/// Per-connection rings are recycled through the pool, not registered anew
/// for every accept, and the pool is bounded (io_uring only: epoll reads into
/// one buffer per worker).
fn per_connection_rings_recycle(backend: Backend) {
    let engine = echo_engine(Config {
        buffers: BufferMode::PerConnection,
        group_pool_max: 4,
        ..config(backend)
    });
    let addr = engine.local_addr();
    for _ in 0..3 {
        let conns: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
        for mut c in conns.iter() {
            c.write_all(b"x").expect("write");
        }
        for mut c in conns.iter() {
            let mut b = [0u8; 1];
            c.read_exact(&mut b).expect("echo");
        }
        let s = engine.stats();
        assert_eq!(s.groups_in_use, 8, "one ring per open connection: {s:?}");
        drop(conns);
        let s = wait_baseline(&engine);
        assert_eq!(
            s.groups_idle, 4,
            "pool keeps at most group_pool_max idle rings: {s:?}"
        );
    }
    assert_eq!(engine.stats().group_fallbacks, 0);
    engine.shutdown().expect("clean shutdown");
}

/// Shutdown closes open connections (clients see end of stream) and returns.
fn shutdown_closes_connections(backend: Backend) {
    let engine = echo_engine(Config {
        workers: 2,
        ..config(backend)
    });
    let addr = engine.local_addr();
    let mut conns: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
    for c in conns.iter_mut() {
        ping(c, b"up");
    }
    engine.shutdown().expect("clean shutdown");
    for c in conns.iter_mut() {
        let mut b = [0u8; 1];
        assert_eq!(
            c.read(&mut b).expect("read after shutdown"),
            0,
            "EOF after shutdown"
        );
    }
    assert!(TcpStream::connect(addr).is_err(), "listener is closed");
}

/// A bad configuration is refused before anything is bound.
fn bad_config_is_refused(backend: Backend) {
    let err = ringnet::Engine::start(
        Config {
            buf_count: 3,
            ..config(backend)
        },
        |_| Echo,
    )
    .err()
    .expect("refused");
    assert!(matches!(err, ringnet::Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("buf_count"), "{err}");
}

/// Sends 8 MiB when a connection opens, then closes it.
struct BigThenClose(Vec<u8>);

impl ringnet::Handler for BigThenClose {
    type State = ();

    fn on_open(&mut self, conn: &mut ringnet::Conn<'_>) {
        conn.send(&self.0);
        conn.close();
    }
    fn on_data(&mut self, _conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
}

/// Close after flush must deliver every byte even when the peer has sent
/// input the handler never read: a plain close() would then reset the
/// connection and drop what is still in the send buffer. The engine shuts
/// down the write side and lingers instead.
fn close_with_unread_input_delivers_everything(backend: Backend) {
    let big = pattern(77, 8 << 20);
    let expected = big.clone();
    let engine = ringnet::Engine::start(config(backend), move |_| BigThenClose(big.clone()))
        .expect("engine starts");
    let addr = engine.local_addr();
    for round in 0..3 {
        let mut s = connect(addr);
        // Input the server will never read, sent while it is still sending.
        s.write_all(b"unread input").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        let mut got = Vec::with_capacity(expected.len());
        s.read_to_end(&mut got)
            .expect("read everything, then end of stream (no reset)");
        assert_eq!(
            got.len(),
            expected.len(),
            "round {round}: bytes received before EOF"
        );
        assert!(got == expected, "round {round}: bytes differ");
    }
    wait_baseline(&engine);
    engine.shutdown().expect("clean shutdown");
}

struct GreetThenClose;

impl ringnet::Handler for GreetThenClose {
    type State = ();

    fn on_open(&mut self, conn: &mut ringnet::Conn<'_>) {
        conn.send(b"bye\n");
        conn.close();
    }
    fn on_data(&mut self, _conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
}

/// A connection closed in `on_open` still lingers the right way: its input
/// is read (and dropped) so the close is no reset, and the peer's own close
/// ends it at once rather than after the linger time (30 s here; the
/// baseline wait gives up after 10).
fn close_in_on_open_ends_when_the_peer_closes(backend: Backend) {
    let cfg = Config {
        linger: Duration::from_secs(30),
        ..config(backend)
    };
    let engine = ringnet::Engine::start(cfg, |_| GreetThenClose).expect("engine starts");
    for _ in 0..3 {
        let mut s = connect(engine.local_addr());
        s.write_all(b"input the handler never reads")
            .expect("write");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("the greeting, then end of stream (no reset)");
        assert_eq!(got, b"bye\n");
    }
    wait_baseline(&engine);
    engine.shutdown().expect("clean shutdown");
}

/// A worker whose setup panics makes `Engine::start` fail, not hang, and
/// the error names that worker.
fn panicking_worker_setup_fails_start(backend: Backend) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = Config {
            workers: 2,
            ..config(backend)
        };
        let res = ringnet::Engine::start(cfg, |i| {
            if i == 1 {
                panic!("handler factory fails for worker 1 (expected by this test)");
            }
            Echo
        });
        let _ = tx.send(res.err());
    });
    let err = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("Engine::start returned instead of hanging")
        .expect("Engine::start reported an error");
    assert!(
        matches!(err, ringnet::Error::WorkerPanicked { worker: 1 }),
        "{err:?}"
    );
    println!("start with a panicking worker: {err}");
}

/// Panics when its worker starts (after a successful setup).
struct PanicOnStart;

impl ringnet::Handler for PanicOnStart {
    type State = ();

    fn on_open(&mut self, _conn: &mut ringnet::Conn<'_>) {}

    fn on_start(&mut self, _ctx: &mut ringnet::Ctx<'_>) {
        panic!("handler fails on start (expected by this test)");
    }
    fn on_data(&mut self, _conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
}

/// A worker that panicked takes no more requests: `Engine::connect` says it
/// has stopped, and the shutdown reports the panic, both naming the worker.
fn stopped_worker_refuses_requests(backend: Backend) {
    let engine = ringnet::Engine::start(config(backend), |_| PanicOnStart).expect("engine starts");
    let target = engine.local_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        match engine.connect(0, &[target], Duration::from_secs(1), 7) {
            Err(e) => break e,
            // The worker has not unwound yet.
            Ok(()) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(()) => panic!("connect still accepted 20 s after the worker panicked"),
        }
    };
    assert!(
        matches!(err, ringnet::Error::WorkerStopped { worker: 0 }),
        "{err:?}"
    );
    let end = engine
        .shutdown()
        .expect_err("the shutdown reports the panic");
    assert!(
        matches!(end, ringnet::Error::WorkerPanicked { worker: 0 }),
        "{end:?}"
    );
}

/// Greets each connection with what it reads back from the accepted socket:
/// TCP_NODELAY (1 byte), SO_RCVBUF and SO_SNDBUF (8 bytes each, LE).
struct ReportOptions;

impl ringnet::Handler for ReportOptions {
    type State = ();

    fn on_open(&mut self, conn: &mut ringnet::Conn<'_>) {
        let sock = conn.socket().expect("a plain descriptor");
        let on = sock.tcp_nodelay().expect("getsockopt TCP_NODELAY");
        let rcv = sock.recv_buffer_size().expect("getsockopt SO_RCVBUF") as u64;
        let snd = sock.send_buffer_size().expect("getsockopt SO_SNDBUF") as u64;
        let mut msg = vec![u8::from(on)];
        msg.extend_from_slice(&rcv.to_le_bytes());
        msg.extend_from_slice(&snd.to_le_bytes());
        conn.send(&msg);
    }
    fn on_data(&mut self, _conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
}

/// TCP_NODELAY is on for every accepted stream by default (inherited from
/// the listener, no setsockopt per connection) and off when configured off;
/// SO_RCVBUF/SO_SNDBUF set in the configuration reach accepted streams.
fn accepted_streams_have_the_configured_options(backend: Backend) {
    let cases = [(true, None), (false, Some(256 * 1024))];
    for (nodelay, buf) in cases {
        let cfg = Config {
            nodelay,
            recv_buffer_size: buf,
            send_buffer_size: buf,
            ..config(backend)
        };
        let engine = ringnet::Engine::start(cfg, |_| ReportOptions).expect("engine starts");
        for _ in 0..3 {
            let mut s = connect(engine.local_addr());
            let mut b = [0u8; 17];
            s.read_exact(&mut b).expect("greeting");
            let rcv = u64::from_le_bytes(b[1..9].try_into().expect("8 bytes"));
            let snd = u64::from_le_bytes(b[9..17].try_into().expect("8 bytes"));
            assert_eq!(
                b[0],
                u8::from(nodelay),
                "TCP_NODELAY on an accepted socket (configured {nodelay})"
            );
            if let Some(n) = buf {
                // Linux doubles the value it is given, for bookkeeping.
                assert!(
                    rcv >= n as u64 && snd >= n as u64,
                    "SO_RCVBUF {rcv} / SO_SNDBUF {snd} below {n}"
                );
            }
            println!("{backend}: nodelay {nodelay}, SO_RCVBUF {rcv}, SO_SNDBUF {snd} (configured {buf:?})");
        }
        engine.shutdown().expect("clean shutdown");
    }
}

/// Greets each connection with its peer address as text.
struct SayPeer;

impl ringnet::Handler for SayPeer {
    type State = ();

    fn on_open(&mut self, conn: &mut ringnet::Conn<'_>) {
        let peer = conn
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|e| e.to_string());
        conn.send(format!("{peer}\n").as_bytes());
    }
    fn on_data(&mut self, _conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
}

/// Listening on `[::]` is dual-stack by default: an IPv4 client arrives as a
/// v4-mapped address; with `only_v6` it is refused.
fn dual_stack_accepts_ipv4_on_the_v6_wildcard(backend: Backend) {
    let v6: std::net::SocketAddr = "[::]:0".parse().expect("addr");
    let engine = match ringnet::Engine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(v6)],
            ..config(backend)
        },
        |_| SayPeer,
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipping dual-stack test: cannot listen on [::] here: {e}");
            return;
        }
    };
    let port = engine.local_addr().port();
    let mut s = connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut line).expect("greeting");
    println!(
        "{backend}: IPv4 client on [::]:{port} seen as {}",
        line.trim()
    );
    assert!(
        line.starts_with("[::ffff:127.0.0.1]:"),
        "v4-mapped peer address, got {line:?}"
    );
    engine.shutdown().expect("clean shutdown");

    let only = ringnet::Engine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(v6)],
            only_v6: true,
            ..config(backend)
        },
        |_| SayPeer,
    )
    .expect("v6-only engine");
    let port = only.local_addr().port();
    assert!(
        std::net::TcpStream::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).is_err(),
        "an IPv6-only listener refuses IPv4 clients"
    );
    only.shutdown().expect("clean shutdown");
}

/// Says "bye" and closes with an error reason (one that does not flush).
struct ByeWithError;

impl ringnet::Handler for ByeWithError {
    type State = ();

    fn on_open(&mut self, _conn: &mut ringnet::Conn<'_>) {}

    fn on_data(&mut self, conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(b"bye");
        conn.close_with(ringnet::CloseReason::Error(libc::EIO));
        data.len()
    }
}

/// `close_with` a reason that does not flush still closes the connection at
/// once (it used to leave it open until shutdown).
fn close_with_an_error_reason_closes(backend: Backend) {
    let engine = ringnet::Engine::start(config(backend), |_| ByeWithError).expect("engine");
    for _ in 0..5 {
        let mut s = connect(engine.local_addr());
        s.write_all(b"hi").expect("write");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let s = wait_baseline(&engine);
    assert_eq!(s.closed, 5, "{s:?}");
    engine.shutdown().expect("shutdown");
}

/// With SO_REUSEPORT listeners, a port another engine already serves is
/// still reported as AddressInUse (not silently shared).
fn reuseport_still_reports_address_in_use(backend: Backend) {
    let first = echo_engine(Config {
        listener: ListenerMode::ReusePort,
        workers: 2,
        ..config(backend)
    });
    let taken = first.local_addr();
    match ringnet::Engine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(taken)],
            listener: ListenerMode::ReusePort,
            workers: 2,
            ..config(backend)
        },
        |_| Echo,
    ) {
        Err(ringnet::Error::AddressInUse(a)) => assert_eq!(a, taken),
        Err(e) => panic!("expected AddressInUse, got {e}"),
        Ok(_) => panic!("a second engine silently shared {taken}"),
    }
    first.shutdown().expect("shutdown");
}

#[test]
fn echo_one_uring() {
    echo_one(Backend::Uring);
}
#[test]
fn echo_one_epoll() {
    echo_one(Backend::Epoll);
}
#[test]
fn echo_many_one_worker_uring() {
    echo_many_one_worker(Backend::Uring);
}
#[test]
fn echo_many_one_worker_epoll() {
    echo_many_one_worker(Backend::Epoll);
}
#[test]
fn echo_many_shared_listener_uring() {
    echo_many_shared_listener(Backend::Uring);
}
#[test]
fn echo_many_shared_listener_epoll() {
    echo_many_shared_listener(Backend::Epoll);
}
#[test]
fn echo_many_reuseport_uring() {
    echo_many_reuseport(Backend::Uring);
}
#[test]
fn echo_many_reuseport_epoll() {
    echo_many_reuseport(Backend::Epoll);
}
#[test]
fn echo_many_per_connection_buffers_uring() {
    echo_many_per_connection_buffers(Backend::Uring);
}
#[test]
fn echo_many_per_connection_buffers_epoll() {
    echo_many_per_connection_buffers(Backend::Epoll);
}
#[test]
fn exhaustion_shared_ring_uring() {
    exhaustion_shared_ring(Backend::Uring);
}
#[test]
fn exhaustion_shared_ring_epoll() {
    exhaustion_shared_ring(Backend::Epoll);
}
#[test]
fn exhaustion_per_connection_rings_uring() {
    exhaustion_per_connection_rings(Backend::Uring);
}
#[test]
fn exhaustion_per_connection_rings_epoll() {
    exhaustion_per_connection_rings(Backend::Epoll);
}
#[test]
fn fairness_shared_ring_uring() {
    fairness_shared_ring(Backend::Uring);
}
#[test]
fn fairness_shared_ring_epoll() {
    fairness_shared_ring(Backend::Epoll);
}
#[test]
fn fairness_per_connection_rings_uring() {
    fairness_per_connection_rings(Backend::Uring);
}
#[test]
fn fairness_per_connection_rings_epoll() {
    fairness_per_connection_rings(Backend::Epoll);
}
#[test]
fn peer_faults_shared_ring_uring() {
    peer_faults_shared_ring(Backend::Uring);
}
#[test]
fn peer_faults_shared_ring_epoll() {
    peer_faults_shared_ring(Backend::Epoll);
}
#[test]
fn peer_faults_per_connection_rings_uring() {
    peer_faults_per_connection_rings(Backend::Uring);
}
#[test]
fn peer_faults_per_connection_rings_epoll() {
    peer_faults_per_connection_rings(Backend::Epoll);
}
#[test]
fn shutdown_closes_connections_uring() {
    shutdown_closes_connections(Backend::Uring);
}
#[test]
fn shutdown_closes_connections_epoll() {
    shutdown_closes_connections(Backend::Epoll);
}
#[test]
fn bad_config_is_refused_uring() {
    bad_config_is_refused(Backend::Uring);
}
#[test]
fn bad_config_is_refused_epoll() {
    bad_config_is_refused(Backend::Epoll);
}
#[test]
fn per_connection_rings_recycle_uring() {
    per_connection_rings_recycle(Backend::Uring);
}

#[test]
fn close_in_on_open_ends_when_the_peer_closes_uring() {
    close_in_on_open_ends_when_the_peer_closes(Backend::Uring);
}
#[test]
fn close_in_on_open_ends_when_the_peer_closes_epoll() {
    close_in_on_open_ends_when_the_peer_closes(Backend::Epoll);
}
#[test]
fn close_with_unread_input_delivers_everything_uring() {
    close_with_unread_input_delivers_everything(Backend::Uring);
}

#[test]
fn close_with_unread_input_delivers_everything_epoll() {
    close_with_unread_input_delivers_everything(Backend::Epoll);
}

#[test]
fn stopped_worker_refuses_requests_uring() {
    stopped_worker_refuses_requests(Backend::Uring);
}
#[test]
fn stopped_worker_refuses_requests_epoll() {
    stopped_worker_refuses_requests(Backend::Epoll);
}
#[test]
fn panicking_worker_setup_fails_start_uring() {
    panicking_worker_setup_fails_start(Backend::Uring);
}

#[test]
fn panicking_worker_setup_fails_start_epoll() {
    panicking_worker_setup_fails_start(Backend::Epoll);
}

#[test]
fn echo_many_fixed_files_uring() {
    echo_many_fixed_files(Backend::Uring);
}

#[test]
fn accepted_streams_have_the_configured_options_uring() {
    accepted_streams_have_the_configured_options(Backend::Uring);
}

#[test]
fn accepted_streams_have_the_configured_options_epoll() {
    accepted_streams_have_the_configured_options(Backend::Epoll);
}

#[test]
fn dual_stack_accepts_ipv4_on_the_v6_wildcard_uring() {
    dual_stack_accepts_ipv4_on_the_v6_wildcard(Backend::Uring);
}

#[test]
fn dual_stack_accepts_ipv4_on_the_v6_wildcard_epoll() {
    dual_stack_accepts_ipv4_on_the_v6_wildcard(Backend::Epoll);
}

#[test]
fn echo_many_recv_bundle_uring() {
    echo_many_recv_bundle(Backend::Uring);
}

#[test]
fn echo_many_send_zc_uring() {
    echo_many_send_zc(Backend::Uring);
}

#[test]
fn exhaustion_with_recv_bundle_uring() {
    exhaustion_with_recv_bundle(Backend::Uring);
}

#[test]
fn close_with_an_error_reason_closes_uring() {
    close_with_an_error_reason_closes(Backend::Uring);
}

#[test]
fn close_with_an_error_reason_closes_epoll() {
    close_with_an_error_reason_closes(Backend::Epoll);
}

#[test]
fn reuseport_still_reports_address_in_use_uring() {
    reuseport_still_reports_address_in_use(Backend::Uring);
}

#[test]
fn reuseport_still_reports_address_in_use_epoll() {
    reuseport_still_reports_address_in_use(Backend::Epoll);
}

#[test]
fn batch_wait_uring() {
    batch_wait(Backend::Uring);
}

#[test]
fn batch_wait_epoll() {
    batch_wait(Backend::Epoll);
}
