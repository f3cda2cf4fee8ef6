//! Limits and shutdown, in a test process of their own (descriptor counts
//! are process-wide): max_connections, shutdown with a deadline (counts,
//! nothing left behind), descriptors released as connections close, and a
//! burst through 8 buffers and an 8-entry CQ.

mod util;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use ringnet::{Backend, Config};
use util::*;

static TURN: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn max_connections_refuses_then_recovers(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let engine = echo_engine(Config {
        max_connections: 5,
        workers: 2,
        ..config(backend)
    });
    let addr = engine.local_addr();
    let mut five: Vec<_> = (0..5).map(|_| connect(addr)).collect();
    for c in five.iter_mut() {
        ping(c, b"in");
    }
    // The sixth is accepted and closed at once.
    let mut sixth = connect(addr);
    let _ = sixth.write_all(b"knock");
    let mut b = [0u8; 8];
    let got = sixth.read(&mut b);
    assert!(
        matches!(got, Ok(0) | Err(_)),
        "the sixth connection is closed, got {got:?}"
    );
    let s = wait_stats(&engine, Duration::from_secs(5), "a refusal", |s| {
        s.refused >= 1
    });
    assert_eq!(s.open, 5, "the table never grows past the limit: {s:?}");
    for c in five.iter_mut() {
        ping(c, b"still served");
    }
    // A slot frees up: service resumes.
    drop(five.pop());
    wait_stats(&engine, Duration::from_secs(5), "a slot freed", |s| {
        s.open == 4
    });
    let mut again = connect(addr);
    ping(&mut again, b"welcome");
    println!(
        "{backend}: limit 5, refused {}, open {}",
        engine.stats().refused,
        engine.stats().open
    );
    drop((five, again, sixth));
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// A shutdown with a deadline: idle connections close gracefully (their
/// peers close when told, or their lingering close runs out), the one whose
/// output never drains is forced at the deadline, and no descriptor is left
/// behind.
fn shutdown_with_a_deadline(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let fds_before = open_fds();
    // The deadline is well past the linger time: an idle connection closes
    // gracefully even if its client is slow to see the end of stream (its
    // lingering close runs out first), while the stuck peer's output never
    // drains, so it never reaches its lingering close and only the
    // deadline ends it.
    const LINGER: Duration = Duration::from_secs(1);
    const DEADLINE: Duration = Duration::from_secs(3);
    let engine = echo_engine(Config {
        workers: 2,
        linger: LINGER,
        ..config(backend)
    });
    let addr = engine.local_addr();
    // Idle clients that close when told, and one that never reads while
    // the server has megabytes queued for it.
    let mut idle: Vec<_> = (0..10).map(|_| connect(addr)).collect();
    for c in idle.iter_mut() {
        ping(c, b"idle");
    }
    let stuck = connect(addr);
    let mut w = stuck.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..16 {
            if w.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    wait_stats(
        &engine,
        Duration::from_secs(10),
        "a backlog towards the stuck peer",
        |s| s.bytes_in >= 4 << 20,
    );
    // Idle clients close their side when the server's end of stream comes.
    let closers: Vec<_> = idle
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let mut b = [0u8; 16];
                while matches!(c.read(&mut b), Ok(n) if n > 0) {}
            })
        })
        .collect();
    let report = engine.shutdown_within(DEADLINE).expect("shutdown");
    println!("{backend}: {report:?}");
    assert_eq!(report.open_at_start, 11);
    assert_eq!(report.forced, 1, "only the peer that never reads is forced");
    assert_eq!(report.closed_gracefully, 10);
    assert!(
        report.elapsed < Duration::from_secs(10),
        "returns by the deadline (bounded): {report:?}"
    );
    for c in closers {
        c.join().expect("closer");
    }
    drop(stuck);
    let _ = writer.join();
    // Every descriptor should be closed by now; allow a moment for a close
    // still in flight. A leaked one stays and fails the count.
    let counted = std::time::Instant::now();
    while open_fds() != fds_before && counted.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open_fds(), fds_before, "no descriptor left behind");
}

/// Each connection's descriptor is released as soon as it closes, while
/// the server goes on serving (on io_uring a close posts no completion when
/// it succeeds, so nothing waits for one): 100 connections come and go,
/// half of them reset by their peers, and the process holds the same
/// sockets as before they came.
fn closed_connections_release_their_descriptors(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let engine = echo_engine(config(backend));
    let addr = engine.local_addr();
    let mut steady = connect(addr);
    ping(&mut steady, b"steady");
    let sockets_before = own_socket_inodes();
    for i in 0..100u32 {
        let mut s = connect(addr);
        ping(&mut s, &i.to_be_bytes());
        if i % 2 == 0 {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .expect("linger 0");
        }
    }
    wait_stats(&engine, Duration::from_secs(10), "100 closes", |s| {
        s.accepted == 101 && s.closed == 100
    });
    let counted = std::time::Instant::now();
    let mut now = own_socket_inodes();
    while now != sockets_before && counted.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        now = own_socket_inodes();
    }
    let left: Vec<_> = now.difference(&sockets_before).collect();
    assert!(left.is_empty(), "{backend}: sockets left open: {left:?}");
    ping(&mut steady, b"still served");
    drop(steady);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// io_uring only: 8 buffers of 64 bytes and an 8-entry CQ under a burst of
/// 50 senders. Multishot recvs end (ENOBUFS, full CQ) and are re-armed;
/// nothing is lost or reordered.
fn tiny_ring_and_cq_under_burst(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let engine = echo_engine(Config {
        sq_entries: 4,
        cq_entries: 8,
        buf_count: 8,
        buf_size: 64,
        ..config(backend)
    });
    let addr = engine.local_addr();
    let clients: Vec<_> = (0..50u64)
        .map(|i| std::thread::spawn(move || echo_roundtrip(addr, pattern(500 + i, 16 * 1024))))
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let s = wait_baseline(&engine);
    println!(
        "{backend}: 50 x 16 KiB through 8 buffers and an 8-entry CQ: {} ENOBUFS, {} recv re-arms, {} batches with the CQ overflowed, {} dropped",
        s.enobufs, s.recv_rearms, s.cq_overflows, s.cq_dropped
    );
    assert_eq!(s.bytes_out, 50 * 16 * 1024);
    assert!(
        s.recv_rearms > 0,
        "multishot recvs ended and were re-armed: {s:?}"
    );
    assert_eq!(s.cq_dropped, 0, "NODROP: no completion lost");
    engine.shutdown().expect("shutdown");
}

/// A client that sends but never reads: the server stops receiving from it
/// once a watermark of output is queued (memory stays bounded), serves the
/// others normally, and closes it when `write_timeout` passes with no
/// progress.
fn slow_reader_is_paused_then_timed_out(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    const HIGH: usize = 256 << 10;
    let engine = echo_engine(Config {
        send_high_watermark: HIGH,
        send_low_watermark: 64 << 10,
        write_timeout: Duration::from_millis(800),
        ..config(backend)
    });
    let addr = engine.local_addr();
    let hog = connect(addr);
    hog.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = hog.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![1u8; 256 << 10];
        let mut sent = 0usize;
        while sent < 32 << 20 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    wait_stats(&engine, Duration::from_secs(10), "receiving paused", |s| {
        s.paused >= 1
    });
    // Others are served while the hog is paused.
    let mut polite = connect(addr);
    for _ in 0..100 {
        ping(&mut polite, b"hello");
    }
    let s = engine.stats();
    let held = s.bytes_in - s.bytes_out;
    println!("{backend}: paused {} time(s); bytes received but not yet sent to the hog: {held} (high watermark {HIGH})", s.paused);
    assert!(
        held <= (HIGH + (2 << 20)) as u64,
        "server memory for the hog stays near the watermark: {held}"
    );
    let s = wait_stats(&engine, Duration::from_secs(10), "the write timeout", |s| {
        s.write_timeouts >= 1
    });
    let sent = writer.join().expect("writer");
    println!(
        "{backend}: hog closed by write_timeout after sending {} KiB",
        sent >> 10
    );
    assert!(sent < 32 << 20, "the hog could not push everything");
    ping(&mut polite, b"still fine");
    assert_eq!(s.write_timeouts, 1);
    drop((hog, polite));
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// Idle and read timeouts on a line-echo server: an active client stays, an
/// idle one is closed, and a slowloris that trickles one byte every 100 ms
/// without finishing its line is closed by the read timeout (its trickle
/// keeps resetting the idle timer).
fn idle_and_read_timeouts(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    use ringnet::framing::Framing;
    use ringnet::message::Framed;
    let cfg = Config {
        idle_timeout: Some(Duration::from_millis(1500)),
        read_timeout: Some(Duration::from_millis(600)),
        ..config(backend)
    };
    let engine =
        ringnet::Engine::start(cfg, |_| Framed::new(Framing::line(), MessageEcho)).expect("engine");
    let addr = engine.local_addr();
    let mut active = connect(addr);
    let mut idle = connect(addr);
    ping(&mut idle, b"once\n");
    let slow = connect(addr);
    let mut sw = slow.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..30 {
            if sw.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // The active client talks every 100 ms until both timeouts have fired
    // (the slowloris after 600 ms, the idle client after 1.5 s).
    let start = std::time::Instant::now();
    let mut i = 0u32;
    let s = loop {
        ping(&mut active, format!("line {i}\n").as_bytes());
        i += 1;
        let s = engine.stats();
        if s.idle_timeouts >= 1 && s.read_timeouts >= 1 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for both timeouts: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{backend}: idle timeouts {}, read timeouts {}",
        s.idle_timeouts, s.read_timeouts
    );
    assert_eq!(
        (s.idle_timeouts, s.read_timeouts),
        (1, 1),
        "only the idle client and the slowloris: {s:?}"
    );
    let mut b = [0u8; 8];
    assert!(
        matches!(idle.read(&mut b), Ok(0) | Err(_)),
        "the idle client was closed"
    );
    let mut sr = slow;
    let mut rest = Vec::new();
    let _ = sr.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing echoed for the unfinished line");
    ping(&mut active, b"still here\n");
    let _ = trickle.join();
    drop((active, idle, sr));
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// A line stream whose reads never end on a line boundary: every write
/// completes the line held and starts the next. The read timeout counts from
/// the start of the line held now, so a line completing every 50 ms is never
/// timed out at 1.5 s, over 4 s of such lines (a clock that never restarted
/// would fire well within them).
fn streaming_lines_are_not_read_timed_out(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    use ringnet::framing::Framing;
    use ringnet::message::Framed;
    let cfg = Config {
        read_timeout: Some(Duration::from_millis(1500)),
        ..config(backend)
    };
    let engine =
        ringnet::Engine::start(cfg, |_| Framed::new(Framing::line(), MessageEcho)).expect("engine");
    let mut c = connect(engine.local_addr());
    c.write_all(b"x").expect("write");
    for _ in 0..80 {
        std::thread::sleep(Duration::from_millis(50));
        c.write_all(b"\nx").expect("write");
        let mut line = [0u8; 2];
        c.read_exact(&mut line)
            .expect("the completed line is echoed");
        assert_eq!(&line, b"x\n");
    }
    let s = engine.stats();
    println!(
        "{backend}: 80 lines over 4 s, read timeouts {}",
        s.read_timeouts
    );
    assert_eq!(s.read_timeouts, 0);
    drop(c);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// A client that sends without reading, then drains everything: with a low
/// watermark of 0 receiving resumes once the queue is empty, and the rest of
/// its input is echoed.
fn low_watermark_zero_resumes(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let engine = echo_engine(Config {
        send_high_watermark: 64 << 10,
        send_low_watermark: 0,
        ..config(backend)
    });
    let hog = connect(engine.local_addr());
    hog.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let total = 16usize << 20;
    let mut w = hog.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let data = pattern(7, total);
        w.write_all(&data).expect("all input written");
    });
    wait_stats(&engine, Duration::from_secs(10), "receiving paused", |s| {
        s.paused >= 1
    });
    let mut r = hog.try_clone().expect("clone");
    let mut back = vec![0u8; total];
    r.read_exact(&mut back)
        .expect("everything echoed: receiving resumed");
    assert!(back == pattern(7, total), "echo intact");
    writer.join().expect("writer");
    let mut hog = hog;
    ping(&mut hog, b"after");
    println!(
        "{backend}: paused {} time(s), 16 MiB echoed",
        engine.stats().paused
    );
    drop((hog, r));
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// A client that reads slowly but steadily is paused for longer than the
/// idle timeout; it is not idle (the server stopped reading
/// it), so it is not closed, and gets every byte back.
fn paused_reader_is_not_idle(backend: Backend) {
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let engine = echo_engine(Config {
        send_high_watermark: 256 << 10,
        send_low_watermark: 16 << 10,
        send_buffer_size: Some(8 << 10),
        idle_timeout: Some(Duration::from_millis(200)),
        ..config(backend)
    });
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(16 << 10).expect("rcvbuf");
    sock.connect(&engine.local_addr().into()).expect("connect");
    let c: std::net::TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let total = 1usize << 20;
    let mut w = c.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        // Fails if the server closes the connection.
        w.write_all(&pattern(9, total)).is_ok()
    });
    let expected = pattern(9, total);
    // At most 16 KiB every 25 ms: each pause (240 KiB to drain) outlasts
    // the idle timeout. The last 128 KiB are read at full speed and the
    // stats are taken as soon as the last byte is in, long before the idle
    // timeout of a connection that has legitimately gone quiet after its
    // output drained. An idle close during the transfer ends the stream
    // early and fails the loop.
    let mut r = c.try_clone().expect("clone");
    let mut back = Vec::with_capacity(total);
    let mut chunk = vec![0u8; 16 << 10];
    while back.len() < total {
        if back.len() < total - (128 << 10) {
            std::thread::sleep(Duration::from_millis(25));
        }
        let n = r.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "closed after {} bytes: {:?}",
            back.len(),
            engine.stats()
        );
        back.extend_from_slice(&chunk[..n]);
    }
    let s = engine.stats();
    assert!(writer.join().expect("writer"), "all input accepted");
    assert!(back == expected, "echo intact");
    println!(
        "{backend}: paused {} time(s), idle timeouts {}",
        s.paused, s.idle_timeouts
    );
    // Once is enough: each pause (240 KiB to drain at ~640 KiB/s) outlasts
    // the idle timeout; how many there are depends on how much input the
    // server finds at once.
    assert!(s.paused >= 1, "the reader was paused: {s:?}");
    assert_eq!(s.idle_timeouts, 0);
    drop((c, r));
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

#[test]
fn max_connections_refuses_then_recovers_uring() {
    max_connections_refuses_then_recovers(Backend::Uring);
}
#[test]
fn max_connections_refuses_then_recovers_epoll() {
    max_connections_refuses_then_recovers(Backend::Epoll);
}
#[test]
fn shutdown_with_a_deadline_uring() {
    shutdown_with_a_deadline(Backend::Uring);
}
#[test]
fn shutdown_with_a_deadline_epoll() {
    shutdown_with_a_deadline(Backend::Epoll);
}
#[test]
fn closed_connections_release_their_descriptors_uring() {
    closed_connections_release_their_descriptors(Backend::Uring);
}
#[test]
fn closed_connections_release_their_descriptors_epoll() {
    closed_connections_release_their_descriptors(Backend::Epoll);
}
#[test]
fn tiny_ring_and_cq_under_burst_uring() {
    tiny_ring_and_cq_under_burst(Backend::Uring);
}

/// `ringnet serve --stats SECS` prints the counters periodically and SIGTERM
/// ends it cleanly with a shutdown report.
#[test]
fn serve_prints_stats_and_a_shutdown_report() {
    use std::io::BufRead;
    // Its pipes are descriptors of this process: not while another test
    // counts them.
    let _t = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringnet"))
        .args([
            "serve",
            "echo",
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--stats",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ringnet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Joined once the child has exited, so the pipe is closed before the
    // next test counts descriptors.
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("start-up line");
    assert!(first.contains("serving echo on"), "{first}");
    let stats = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a stats line");
    assert!(stats.starts_with("stats w0: open 0 accepted 0"), "{stats}");
    // SAFETY: kill(2) has no memory-safety preconditions; the child is ours
    // and not yet reaped, so its pid cannot have been reused.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringnet did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The child is gone: its end of the pipe is closed and the reader sees
    // end of stream.
    reader.join().expect("stdout reader");
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("closed gracefully") && err.contains("forced"),
        "shutdown report: {err}"
    );
}

#[test]
fn slow_reader_is_paused_then_timed_out_uring() {
    slow_reader_is_paused_then_timed_out(Backend::Uring);
}

#[test]
fn slow_reader_is_paused_then_timed_out_epoll() {
    slow_reader_is_paused_then_timed_out(Backend::Epoll);
}

#[test]
fn idle_and_read_timeouts_uring() {
    idle_and_read_timeouts(Backend::Uring);
}

#[test]
fn idle_and_read_timeouts_epoll() {
    idle_and_read_timeouts(Backend::Epoll);
}

#[test]
fn streaming_lines_are_not_read_timed_out_uring() {
    streaming_lines_are_not_read_timed_out(Backend::Uring);
}

#[test]
fn streaming_lines_are_not_read_timed_out_epoll() {
    streaming_lines_are_not_read_timed_out(Backend::Epoll);
}

#[test]
fn low_watermark_zero_resumes_uring() {
    low_watermark_zero_resumes(Backend::Uring);
}

#[test]
fn low_watermark_zero_resumes_epoll() {
    low_watermark_zero_resumes(Backend::Epoll);
}

#[test]
fn paused_reader_is_not_idle_uring() {
    paused_reader_is_not_idle(Backend::Uring);
}

#[test]
fn paused_reader_is_not_idle_epoll() {
    paused_reader_is_not_idle(Backend::Epoll);
}
