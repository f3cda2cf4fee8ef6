//! Integration tests for the load generator (`ringnet::bench`): it must
//! verify every byte against a correct server, catch servers that corrupt,
//! lose or refuse, and never hang.
//!
//! Every run goes through [`bounded`], a thread with a generous outer time
//! limit, so a generator that hangs fails the test instead of the test run.
//! Nothing asserts a rate: only counts that hold on any machine.

#[macro_use]
mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringnet::app::http::Http;
use ringnet::bench::compare::{compare, contenders, ServerProcess};
use ringnet::bench::{run, Mode, Options, RunResult};
use ringnet::{Backend, Config, Conn, Engine, Handler};

/// Outer limit on anything that could hang.
const BOUND: Duration = Duration::from_secs(20);

/// Run `f` on its own thread; panic if it takes longer than `limit`, and
/// pass on its panic if it panics.
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}: the load generator hangs")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{what}: worker thread ended without a result"),
        },
    }
}

/// Options for a short, quiet run without warm-up (a warm-up would reset
/// the counters and could hide a corruption that happens early).
fn options(
    mode: Mode,
    addr: impl Into<ringnet::Address>,
    conns: usize,
    size: usize,
    duration: Duration,
) -> Options {
    Options {
        conns,
        size,
        duration,
        warmup: Duration::ZERO,
        progress: false,
        ..Options::new(mode, addr)
    }
}

/// Run `opts` under [`bounded`], print its table and return it.
fn run_bounded(what: &str, opts: Options) -> RunResult {
    let name = what.to_string();
    let started = Instant::now();
    let r = bounded(what, BOUND, move || run(&opts))
        .unwrap_or_else(|e| panic!("{name}: load generator failed: {e}"));
    println!(
        "{what}: ops {} errors {} mismatches {} bytes_verified {} ({:.0} ops/s, run took {:?})\n{}",
        r.ops,
        r.errors,
        r.mismatches,
        r.bytes_verified,
        r.ops_per_sec(),
        started.elapsed(),
        r.to_table()
    );
    r
}

/// Start `factory`'s handler on one worker of `backend`.
fn engine<H, F>(backend: Backend, factory: F) -> Engine
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let cfg: Config = util::config(backend);
    let engine = Engine::start(cfg, factory).expect("engine starts");
    assert_eq!(
        engine.backend(),
        backend,
        "engine runs on the backend asked for"
    );
    engine
}

/// Echoes everything, except that one bit of the byte at `at` (counted
/// over every byte this worker ever echoes) is flipped, once. Counts the
/// connections it saw opened.
struct FlipOnce {
    seen: u64,
    at: u64,
    opened: Arc<AtomicUsize>,
}

impl Handler for FlipOnce {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let start = self.seen;
        self.seen += data.len() as u64;
        if (start..self.seen).contains(&self.at) {
            let mut bad = data.to_vec();
            bad[(self.at - start) as usize] ^= 0x01;
            conn.send(&bad);
        } else {
            conn.send(data);
        }
        data.len()
    }
}

/// Which byte [`DropOnce`] loses.
#[derive(Clone, Copy, Debug)]
enum Lose {
    /// The byte at this worker-wide offset (a byte inside a message).
    At(u64),
    /// The last byte of the first call that reaches this offset (with one
    /// message in flight per connection: the last byte of a message).
    LastOfCallAt(u64),
}

/// Echoes everything, except that once it consumes `n` bytes and echoes
/// only `n - 1`.
struct DropOnce {
    seen: u64,
    lose: Lose,
    done: bool,
}

impl Handler for DropOnce {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let start = self.seen;
        self.seen += data.len() as u64;
        let skip = match self.lose {
            Lose::At(at) if !self.done && (start..self.seen).contains(&at) => {
                Some((at - start) as usize)
            }
            Lose::LastOfCallAt(at) if !self.done && self.seen > at => Some(data.len() - 1),
            _ => None,
        };
        match skip {
            Some(k) => {
                self.done = true;
                conn.send(&data[..k]);
                conn.send(&data[k + 1..]);
            }
            None => conn.send(data),
        }
        data.len()
    }
}

/// Answers every complete request (up to the blank line) with `response`.
struct Canned(&'static [u8]);

impl Handler for Canned {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let mut used = 0;
        while let Some(end) = data[used..].windows(4).position(|w| w == b"\r\n\r\n") {
            conn.send(self.0);
            used += end + 4;
        }
        used
    }
}

// 1 ---------------------------------------------------------------------

fn echo_against_a_correct_server_verifies_every_byte(backend: Backend) {
    let engine = util::echo_engine(util::config(backend));
    let opts = options(
        Mode::Echo,
        engine.local_addr(),
        8,
        1000,
        Duration::from_millis(500),
    );
    let r = run_bounded(&format!("echo 8x1000 B on {backend}"), opts);
    assert!(r.ops > 0, "no round trip completed");
    assert_eq!(r.errors, 0, "errors against a correct server");
    assert_eq!(r.mismatches, 0, "mismatches against a correct server");
    assert_eq!(
        r.bytes_verified,
        r.ops * 1000,
        "every byte of every round trip verified"
    );
    assert_eq!(r.latency.len(), r.ops, "one latency sample per round trip");
    engine.shutdown().expect("shutdown");
}

/// The same against a server on a Unix socket (abstract name): every byte
/// of every round trip checked, no error.
fn echo_over_a_unix_socket_verifies_every_byte(backend: Backend) {
    let addr: ringnet::Address = format!("unix:@ringnet-loadgen-{}-{backend}", std::process::id())
        .parse()
        .expect("address");
    let engine = util::echo_engine(
        util::config(backend)
            .listen_on(addr.clone())
            .expect("config"),
    );
    let opts = options(Mode::Echo, addr, 8, 1000, Duration::from_millis(300));
    let r = run_bounded(&format!("echo 8x1000 B over unix on {backend}"), opts);
    assert!(r.ops > 0, "no round trip completed");
    assert_eq!((r.errors, r.mismatches), (0, 0));
    assert_eq!(r.bytes_verified, r.ops * 1000);
    engine.shutdown().expect("shutdown");
}

/// An engine serving TLS (the fixture certificate for localhost) with an
/// echo handler.
fn tls_echo_engine(backend: Backend) -> Engine {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let acceptor = ringnet::tls::TlsAcceptor::new(&ringnet::tls::TlsServerOptions::new(
        data.join("server.crt"),
        data.join("server.key"),
    ))
    .expect("acceptor");
    let spec =
        ringnet::listener::ListenerSpec::bind("127.0.0.1:0".parse::<SocketAddr>().expect("addr"))
            .with_tls(acceptor);
    util::echo_engine(Config {
        listeners: vec![spec],
        ..util::config(backend)
    })
}

fn tls_target() -> ringnet::tls::TlsTarget {
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.crt");
    ringnet::bench::tls_target(Some(ca), "localhost").expect("target")
}

/// `--tls`: echo, accept (a handshake per connection) and hold over TLS,
/// every byte checked, against the engine's TLS server.
fn the_load_generator_speaks_tls(backend: Backend) {
    let engine = tls_echo_engine(backend);
    let addr = engine.local_addr();
    for (mode, conns, size) in [(Mode::Echo, 8, 3000), (Mode::Accept, 4, 16)] {
        let opts = Options {
            tls: Some(tls_target()),
            ..options(mode, addr, conns, size, Duration::from_millis(300))
        };
        let r = run_bounded(&format!("{mode} over TLS on {backend}"), opts);
        assert!(r.ops > 0, "{mode}: no operation completed");
        assert_eq!((r.errors, r.mismatches), (0, 0), "{mode}");
        assert_eq!(r.bytes_verified, r.ops * size as u64, "{mode}");
    }
    let opts = Options {
        tls: Some(tls_target()),
        ..options(Mode::Hold, addr, 200, 16, Duration::from_millis(200))
    };
    let r = run_bounded(&format!("hold over TLS on {backend}"), opts);
    assert_eq!(
        (r.errors, r.mismatches, r.ops),
        (0, 0, 200),
        "every held TLS connection still echoes"
    );
    let s = engine.stats();
    assert!(s.tls_handshakes >= 200 + 8, "{s:?}");
    assert_eq!(s.tls_failures, 0, "{s:?}");
    // http over TLS: keep-alive requests, every body checked.
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let acceptor = ringnet::tls::TlsAcceptor::new(&ringnet::tls::TlsServerOptions::new(
        data.join("server.crt"),
        data.join("server.key"),
    ))
    .expect("acceptor");
    let http = Engine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(
                "127.0.0.1:0".parse::<SocketAddr>().expect("addr"),
            )
            .with_tls(acceptor)],
            ..util::config(backend)
        },
        |_| ringnet::app::http::Http::default(),
    )
    .expect("http over TLS");
    let opts = Options {
        tls: Some(tls_target()),
        ..options(
            Mode::Http,
            http.local_addr(),
            4,
            0,
            Duration::from_millis(300),
        )
    };
    let r = run_bounded(&format!("http over TLS on {backend}"), opts);
    assert!(r.ops > 0, "no response");
    assert_eq!((r.errors, r.mismatches), (0, 0));
    http.shutdown().expect("shutdown");
    // A wrong CA: every connection fails verification, none passes.
    let other =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/other-ca.crt");
    let opts = Options {
        tls: Some(ringnet::bench::tls_target(Some(other), "localhost").expect("target")),
        ..options(Mode::Echo, addr, 2, 100, Duration::from_millis(200))
    };
    let r = run_bounded(&format!("echo with the wrong CA on {backend}"), opts);
    assert_eq!(r.ops, 0, "a server the client cannot verify was used");
    assert!(r.errors > 0);
    engine.shutdown().expect("shutdown");
}

/// Open loop: the asked rate is held within 5% against a fast server,
/// with every byte checked.
fn open_loop_holds_its_rate(backend: Backend) {
    let engine = util::echo_engine(util::config(backend));
    let opts = Options {
        rate: Some(2000.0),
        ..options(
            Mode::Echo,
            engine.local_addr(),
            8,
            64,
            Duration::from_secs(1),
        )
    };
    let r = run_bounded(&format!("open loop 2000/s on {backend}"), opts);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    let rate = r.ops_per_sec();
    assert!(
        (1900.0..=2100.0).contains(&rate),
        "{rate:.0}/s for 2000/s asked"
    );
    assert!(
        r.rate_shortfall().is_some_and(|s| s <= 0.05),
        "{:?}",
        r.rate_shortfall()
    );
    assert_eq!(r.bytes_verified, r.ops * 64);
    engine.shutdown().expect("shutdown");
}

/// Echoes, but stalls its worker for 300 ms once, at the `at`-th message.
struct StallOnce {
    seen: u64,
    at: u64,
}

impl Handler for StallOnce {
    type State = ();
    fn on_open(&mut self, _conn: &mut ringnet::Conn<'_>) {}
    fn on_data(&mut self, conn: &mut ringnet::Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        self.seen += 1;
        if self.seen == self.at {
            std::thread::sleep(Duration::from_millis(300));
        }
        conn.send(data);
        data.len()
    }
}

/// A server that stalls for 300 ms once: open loop shows it in the p99
/// (the requests due during the stall waited for it), closed loop does not
/// (only the few in flight did, and nothing was sent meanwhile).
fn open_loop_shows_a_stall_closed_loop_hides(backend: Backend) {
    let run_against_stall = |rate: Option<f64>| {
        let engine = engine(backend, |_| StallOnce { seen: 0, at: 500 });
        let opts = Options {
            rate,
            ..options(
                Mode::Echo,
                engine.local_addr(),
                8,
                64,
                Duration::from_secs(2),
            )
        };
        let what = format!(
            "{} against a 300 ms stall on {backend}",
            if rate.is_some() {
                "open loop"
            } else {
                "closed loop"
            }
        );
        let r = run_bounded(&what, opts);
        engine.shutdown().expect("shutdown");
        assert_eq!((r.errors, r.mismatches), (0, 0), "{what}");
        assert!(
            r.latency.max() >= 250_000_000,
            "{what}: the stall is the maximum"
        );
        r
    };
    let open = run_against_stall(Some(2000.0));
    let closed = run_against_stall(None);
    let p99 = |r: &RunResult| r.latency_at(0.99);
    assert!(
        p99(&open) >= Duration::from_millis(100),
        "open loop p99 {:?}",
        p99(&open)
    );
    assert!(
        p99(&closed) < Duration::from_millis(20),
        "closed loop p99 {:?}",
        p99(&closed)
    );
}

/// `threads`: the connections are shared out over load threads (7 over 3:
/// 3, 2, 2); every byte is still checked, the counters and latencies are
/// merged, an open-loop rate is shared out too and held; more threads than
/// connections, or threads in hold mode, are refused.
fn load_threads_share_the_connections(backend: Backend) {
    let engine = util::echo_engine(util::config(backend));
    let addr = engine.local_addr();
    let opts = Options {
        threads: 3,
        ..options(Mode::Echo, addr, 7, 500, Duration::from_millis(400))
    };
    let r = run_bounded(&format!("echo on 3 threads on {backend}"), opts);
    assert!(r.ops > 0);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    assert_eq!(
        r.bytes_verified,
        r.ops * 500,
        "every byte of every thread checked"
    );
    assert_eq!(r.latency.len(), r.ops, "one latency per round trip, merged");
    let opts = Options {
        threads: 2,
        rate: Some(1500.0),
        ..options(Mode::Echo, addr, 6, 64, Duration::from_secs(1))
    };
    let r = run_bounded(&format!("open loop on 2 threads on {backend}"), opts);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    assert!(
        r.rate_shortfall().is_some_and(|s| s <= 0.05),
        "{:.0}/s",
        r.ops_per_sec()
    );
    assert!(r.ops_per_sec() <= 1500.0 * 1.05, "{:.0}/s", r.ops_per_sec());
    let opts = Options {
        threads: 2,
        ..options(Mode::Accept, addr, 4, 16, Duration::from_millis(300))
    };
    let r = run_bounded(&format!("accept on 2 threads on {backend}"), opts);
    assert!(r.ops > 0);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    for (mode, threads, conns) in [(Mode::Echo, 5, 4), (Mode::Hold, 2, 4)] {
        let opts = Options {
            threads,
            ..options(mode, addr, conns, 16, Duration::from_millis(100))
        };
        assert!(matches!(
            ringnet::bench::run(&opts),
            Err(ringnet::bench::BenchError::Usage(_))
        ));
    }
    engine.shutdown().expect("shutdown");
}

// 2 ---------------------------------------------------------------------

/// The 5000th byte the worker echoes (a byte in the middle of a 64-byte
/// message: 4999 = 78 * 64 + 7).
const FLIP_AT: u64 = 4999;

/// Run echo (8 conns, 64 B, 500 ms) against a [`FlipOnce`] server; returns
/// the result and how many connections the server saw.
fn run_against_flip_once(backend: Backend, what: &str) -> (RunResult, usize) {
    let opened = Arc::new(AtomicUsize::new(0));
    let seen = opened.clone();
    let engine = engine(backend, move |_| FlipOnce {
        seen: 0,
        at: FLIP_AT,
        opened: seen.clone(),
    });
    let opts = options(
        Mode::Echo,
        engine.local_addr(),
        8,
        64,
        Duration::from_millis(500),
    );
    let r = run_bounded(&format!("{what} on {backend}"), opts);
    engine.shutdown().expect("shutdown");
    let opened = opened.load(Ordering::Relaxed);
    println!("{what} on {backend}: server saw {opened} connections");
    (r, opened)
}

fn a_server_that_corrupts_one_byte_is_caught(backend: Backend) {
    let (r, opened) = run_against_flip_once(backend, "one flipped bit");
    assert!(r.mismatches >= 1, "a flipped bit went unnoticed");
    assert!(r.ops > 0, "the run did not go on");
    assert!(
        r.ops * 64 > FLIP_AT,
        "traffic continued past the corruption ({} round trips)",
        r.ops
    );
    assert_eq!(
        r.bytes_verified,
        r.ops * 64,
        "only good round trips count as verified"
    );
    assert!(
        opened > 8,
        "the failed connection was replaced ({opened} opened)"
    );
}

/// One corrupted round trip is one failed operation: it shows as one
/// mismatch, not also as an error (the table, the progress line and the
/// comparison's "errors (all runs)" add errors and mismatches together, and
/// hold mode already counts a bad echo as a mismatch only).
///
/// Fails at the time of writing: `Driver::read` (src/bench/client.rs)
/// counts the mismatch and returns `Err(())`, which `Driver::on_event` turns
/// into `fail(t)`, counting an error as well; `http_response` does the same
/// for a bad status or body.
fn one_corrupted_byte_counts_as_one_failure(backend: Backend) {
    let (r, _) = run_against_flip_once(backend, "one flipped bit, counted once");
    assert_eq!(r.mismatches, 1, "exactly one round trip was corrupted");
    assert_eq!(
        r.errors,
        0,
        "the mismatch was counted a second time as an error (errors + mismatches = {})",
        r.errors + r.mismatches
    );
}

fn run_against_drop_once(backend: Backend, lose: Lose) -> RunResult {
    let engine = engine(backend, move |_| DropOnce {
        seen: 0,
        lose,
        done: false,
    });
    // The generator looks for stalled operations once a second and at the
    // end, so a round trip that never completes is reported if it started
    // more than `op_timeout` before the end: 2 s leaves the server well over
    // a second to reach the lost byte, even in a slow debug build.
    let duration = Duration::from_secs(2);
    let mut opts = options(Mode::Echo, engine.local_addr(), 8, 64, duration);
    // Much shorter than the run, so a reply that never completes is
    // reported.
    opts.op_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let r = run_bounded(&format!("server loses {lose:?} on {backend}"), opts);
    let took = started.elapsed();
    engine.shutdown().expect("shutdown");
    println!(
        "server loses {lose:?} on {backend}: {}; run took {took:?}",
        if r.errors + r.mismatches > 0 {
            "caught as an error/mismatch"
        } else {
            "not reported"
        }
    );
    r
}

fn a_server_that_drops_one_byte_does_not_hang_the_generator(backend: Backend) {
    // A byte lost inside a message shifts the rest of it: a mismatch.
    let r = run_against_drop_once(backend, Lose::At(FLIP_AT));
    assert!(
        r.errors + r.mismatches >= 1,
        "a byte lost in the middle of a message went unnoticed"
    );
    assert!(r.ops > 0, "the run did not go on");

    // The last byte of a message lost: that reply never completes. The
    // operation timeout reports it as an error, the run ends on time and the
    // other connections go on.
    let r = run_against_drop_once(backend, Lose::LastOfCallAt(FLIP_AT));
    assert!(
        r.errors >= 1,
        "a reply missing its last byte went unreported: {r:?}"
    );
    assert!(r.ops > 0, "the run did not go on");
}

// 3 ---------------------------------------------------------------------

fn accept_mode_counts_whole_connections(backend: Backend) {
    let engine = util::echo_engine(util::config(backend));
    let opts = options(
        Mode::Accept,
        engine.local_addr(),
        4,
        64,
        Duration::from_millis(500),
    );
    let r = run_bounded(&format!("accept x4 on {backend}"), opts);
    assert!(r.ops > 0, "no connection completed");
    assert_eq!(r.errors, 0, "errors against a correct server");
    assert_eq!(r.mismatches, 0, "mismatches against a correct server");
    assert_eq!(
        r.bytes_verified,
        r.ops * 16,
        "16 bytes checked per connection"
    );
    engine.shutdown().expect("shutdown");
}

// 4 ---------------------------------------------------------------------

/// 13 bytes of body, but not `Hello, World!`.
const WRONG_BODY: &[u8] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, Wörld".as_bytes();
const SERVER_ERROR: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";

fn http_mode_checks_status_and_body(backend: Backend) {
    let good = engine(backend, |_| Http::default());
    let opts = options(
        Mode::Http,
        good.local_addr(),
        8,
        64,
        Duration::from_millis(500),
    );
    let r = run_bounded(&format!("http against Http on {backend}"), opts);
    assert!(r.ops > 0, "no request completed");
    assert_eq!(r.errors, 0, "errors against a correct server");
    assert_eq!(r.mismatches, 0, "mismatches against a correct server");
    good.shutdown().expect("shutdown");

    let head = WRONG_BODY
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    assert_eq!(
        WRONG_BODY.len() - head,
        13,
        "the wrong body is 13 bytes, like the right one"
    );
    for (name, response) in [("wrong body", WRONG_BODY), ("status 500", SERVER_ERROR)] {
        let bad = engine(backend, move |_| Canned(response));
        let opts = options(
            Mode::Http,
            bad.local_addr(),
            4,
            64,
            Duration::from_millis(300),
        );
        let r = run_bounded(&format!("http against {name} on {backend}"), opts);
        assert!(r.mismatches >= 1, "{name} went unnoticed");
        assert_eq!(r.ops, 0, "a {name} response counted as a good request");
        bad.shutdown().expect("shutdown");
    }
}

// 5 ---------------------------------------------------------------------

/// Hold runs open hundreds of sockets each; one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ringnet"))
}

fn hold_mode_reports_rss_per_connection(backend: Backend) {
    let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let name = match backend {
        Backend::Uring => "io_uring",
        Backend::Epoll => "epoll",
    };
    let contender = contenders(Mode::Hold, 0, &[], None)
        .into_iter()
        .find(|c| c.name == name)
        .expect("contender");
    let server = ServerProcess::start(exe(), &contender).expect("server starts");
    let opts = Options {
        server_pid: Some(server.pid()),
        ..options(Mode::Hold, server.addr, 500, 64, Duration::from_millis(200))
    };
    let r = run_bounded(&format!("hold 500 on {name}"), opts);
    drop(server);
    assert_eq!(r.ops, 500, "every held connection still echoes");
    assert_eq!(r.errors, 0, "errors while holding");
    assert_eq!(r.mismatches, 0, "mismatches while holding");
    assert_eq!(r.bytes_verified, 500 * 16);
    let per_conn = r.rss_per_conn().expect("RSS per connection is known");
    println!(
        "hold 500 on {name}: server RSS {:?} -> {:?} B, {per_conn:.0} B per connection",
        r.server_rss_before, r.server_rss_after
    );
}

// 6 ---------------------------------------------------------------------

#[test]
fn refused_connections_are_errors_not_a_hang() {
    let (_holder, addr) = util::refused_addr();
    let duration = Duration::from_millis(300);
    let opts = options(Mode::Echo, addr, 4, 64, duration);
    let started = Instant::now();
    let r = run_bounded("echo against a closed port", opts);
    println!("closed port: run took {:?}", started.elapsed());
    assert!(r.errors > 0, "refused connections were not counted");
    assert_eq!(r.ops, 0, "round trips against nothing");
    assert_eq!(r.mismatches, 0);
}

// 7 ---------------------------------------------------------------------

#[test]
fn compare_prints_a_table() {
    let template = Options {
        conns: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        progress: false,
        ..Options::new(Mode::Echo, SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let cmp = bounded("compare", Duration::from_secs(60), move || {
        let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
        compare(exe(), &template, 1, (0, 1), &[], None, &Default::default())
    })
    .expect("compare runs");
    let table = cmp.to_table();
    println!("{table}");
    for needle in [
        "io_uring",
        "epoll",
        "tokio",
        "io_uring/epoll",
        "io_uring/tokio",
    ] {
        assert!(table.contains(needle), "{needle:?} missing in\n{table}");
    }
    assert_eq!(cmp.results.len(), 3, "three contenders");
    for (name, runs) in &cmp.results {
        assert_eq!(runs.len(), 1, "{name}: one run");
        for r in runs {
            assert!(r.ops > 0, "{name}: no round trips");
            assert_eq!(r.errors, 0, "{name}: errors");
            assert_eq!(r.mismatches, 0, "{name}: mismatches");
        }
    }
}

/// `--compare --tls`: every contender (ringnet on io_uring and on epoll,
/// and the tokio + rustls reference) serves TLS with the same certificate,
/// and the load generator verifies it and every byte.
#[test]
fn compare_over_tls() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let template = Options {
        conns: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        progress: false,
        tls: Some(tls_target()),
        ..Options::new(Mode::Echo, SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let certs = (data.join("server.crt"), data.join("server.key"));
    let cmp = bounded("compare over TLS", Duration::from_secs(60), move || {
        let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
        compare(
            exe(),
            &template,
            1,
            (0, 1),
            &[],
            Some(&certs),
            &Default::default(),
        )
    })
    .expect("compare runs");
    println!("{}", cmp.to_table());
    assert_eq!(cmp.results.len(), 3, "three contenders");
    for (name, runs) in &cmp.results {
        for r in runs {
            assert!(r.ops > 0, "{name}: no round trips over TLS");
            assert_eq!((r.errors, r.mismatches), (0, 0), "{name}");
        }
    }
}

/// `--against NAME=COMMAND` and `--contenders`: any server started from a
/// command line with its port filled in (here Python's asyncio echo
/// server) is compared beside the chosen built-in ones, every byte
/// checked; an unknown contender name is refused.
#[test]
fn compare_against_any_server() {
    use ringnet::bench::compare::{Contender, Extra};
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/echo_server.py");
    let template = Options {
        conns: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        progress: false,
        ..Options::new(Mode::Echo, SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let extra = Extra {
        against: vec![Contender::against(&format!(
            "asyncio=python3 {} {{port}}",
            script.display()
        ))
        .expect("contender")],
        only: Some(vec!["io_uring".into(), "asyncio".into()]),
    };
    let t = template.clone();
    let cmp = bounded(
        "compare against asyncio",
        Duration::from_secs(60),
        move || {
            let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
            compare(exe(), &t, 1, (0, 1), &[], None, &extra)
        },
    )
    .expect("compare runs");
    let table = cmp.to_table();
    println!("{table}");
    let names: Vec<&str> = cmp.results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["io_uring", "asyncio"]);
    assert!(table.contains("io_uring/asyncio"), "{table}");
    for (name, runs) in &cmp.results {
        for r in runs {
            assert!(r.ops > 0, "{name}: no round trips");
            assert_eq!((r.errors, r.mismatches), (0, 0), "{name}");
        }
    }
    let bad = Extra {
        only: Some(vec!["nginx".into()]),
        ..Extra::default()
    };
    assert!(matches!(
        compare(exe(), &template, 1, (0, 1), &[], None, &bad),
        Err(ringnet::bench::BenchError::Usage(_))
    ));
}

/// `--hdr-log`: the interval log holds one histogram per second of the
/// measured period (per load thread, tagged), readable by HdrHistogram's
/// own parser, and together they count every operation of the run.
#[test]
fn the_hdr_log_holds_every_latency_by_interval() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let engine = util::echo_engine(util::config(Backend::Epoll));
    let dir = std::env::temp_dir().join(format!("ringnet-hdrlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for threads in [1, 2] {
        let path = dir.join(format!("run{threads}.hlog"));
        let opts = Options {
            threads,
            hdr_log: Some(path.clone()),
            rate: Some(1000.0),
            ..options(
                Mode::Echo,
                engine.local_addr(),
                4,
                64,
                Duration::from_millis(2500),
            )
        };
        let r = run_bounded(
            &format!("echo with an HdrHistogram log, {threads} threads"),
            opts,
        );
        let text = std::fs::read(&path).expect("the log");
        let mut total = 0;
        let mut intervals = 0;
        let mut tags = std::collections::BTreeSet::new();
        for entry in IntervalLogIterator::new(&text) {
            if let Ok(LogEntry::Interval(h)) = entry {
                intervals += 1;
                assert!(
                    h.duration() <= Duration::from_millis(1100),
                    "{:?}",
                    h.duration()
                );
                if let Some(tag) = h.tag() {
                    tags.insert(tag.as_str().to_string());
                }
                let bytes = base64_decode(h.encoded_histogram());
                let hist: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut &bytes[..])
                    .expect("a histogram");
                total += hist.len();
            }
        }
        assert_eq!(
            total, r.ops,
            "{threads} threads: every operation is in the log"
        );
        assert!(
            intervals >= 3 * threads,
            "{threads} threads: {intervals} intervals"
        );
        assert_eq!(
            tags.len(),
            if threads > 1 { threads } else { 0 },
            "{tags:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    engine.shutdown().expect("shutdown");
}

/// Standard base64, as the log writes histograms.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n =
            chunk.iter().fold(0u32, |acc, &v| (acc << 6) | u32::from(v)) << (6 * (4 - chunk.len()));
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

// 7 pipelining -----------------------------------------------------------

/// Echoes only whole batches: it answers nothing until `batch` bytes
/// have arrived on a connection, then echoes them at once. A client with
/// fewer bytes in flight than a batch waits forever.
struct Batches {
    batch: usize,
}

impl Handler for Batches {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        let whole = data.len() / self.batch * self.batch;
        conn.send(&data[..whole]);
        whole
    }
}

/// `pipeline` N keeps N requests in flight per connection: a server that
/// answers only batches of 4 requests serves a pipeline of 4 (every byte
/// checked, one latency per round trip, on one thread and on two) and
/// starves a pipeline of 1 (the stalled round trips are counted as
/// errors, the generator does not hang).
fn pipelining_keeps_n_requests_in_flight(backend: Backend) {
    const SIZE: usize = 300;
    let engine = engine(backend, |_| Batches { batch: 4 * SIZE });
    let addr = engine.local_addr();
    for threads in [1, 2] {
        let opts = Options {
            pipeline: 4,
            threads,
            ..options(Mode::Echo, addr, 6, SIZE, Duration::from_millis(400))
        };
        let what = format!("pipeline 4 against batches of 4 on {threads} threads on {backend}");
        let r = run_bounded(&what, opts);
        assert!(r.ops > 100, "{what}: {} round trips", r.ops);
        assert_eq!((r.errors, r.mismatches), (0, 0), "{what}");
        assert_eq!(r.bytes_verified, r.ops * SIZE as u64, "{what}");
        assert_eq!(r.latency.len(), r.ops, "{what}");
        assert_eq!(r.pipeline, 4);
        assert!(r.to_table().contains("pipeline 4"), "{}", r.to_table());
    }
    let opts = Options {
        op_timeout: Duration::from_millis(150),
        ..options(Mode::Echo, addr, 2, SIZE, Duration::from_millis(400))
    };
    let r = run_bounded(
        &format!("pipeline 1 against batches of 4 on {backend}"),
        opts,
    );
    assert_eq!(r.ops, 0, "a batch completed with one request in flight");
    assert!(r.errors >= 2, "the starved round trips were not counted");
    engine.shutdown().expect("shutdown");
}

/// Pipelined echo of large messages (many reads per answer, answers
/// spanning reads) against a correct server, and one flipped bit among
/// them: exactly one mismatch, nothing else lost.
fn pipelining_checks_every_byte(backend: Backend) {
    let good = util::echo_engine(util::config(backend));
    let opts = Options {
        pipeline: 5,
        ..options(
            Mode::Echo,
            good.local_addr(),
            3,
            20_000,
            Duration::from_millis(400),
        )
    };
    let r = run_bounded(&format!("pipeline 5 x 20000 B on {backend}"), opts);
    assert!(r.ops > 0);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    assert_eq!(r.bytes_verified, r.ops * 20_000);
    good.shutdown().expect("shutdown");

    let opened = Arc::new(AtomicUsize::new(0));
    let flips = {
        let opened = opened.clone();
        engine(backend, move |_| FlipOnce {
            seen: 0,
            at: FLIP_AT,
            opened: opened.clone(),
        })
    };
    let opts = Options {
        pipeline: 8,
        ..options(
            Mode::Echo,
            flips.local_addr(),
            8,
            64,
            Duration::from_millis(400),
        )
    };
    let r = run_bounded(
        &format!("pipeline 8 against one flipped bit on {backend}"),
        opts,
    );
    assert_eq!(r.mismatches, 1, "the flipped bit is one mismatch");
    assert_eq!(r.errors, 0);
    assert!(r.ops > 0, "the run went on after the mismatch");
    assert_eq!(r.bytes_verified, r.ops * 64);
    assert_eq!(
        opened.load(Ordering::Relaxed),
        9,
        "the failed connection was replaced once"
    );
    flips.shutdown().expect("shutdown");
}

/// Echoes every byte, and the first chunk of each connection twice.
struct EchoFirstTwice;

impl Handler for EchoFirstTwice {
    type State = bool;

    fn on_open(&mut self, _conn: &mut Conn<'_>) -> bool {
        false
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, twice: &mut bool, data: &[u8]) -> usize {
        conn.send(data);
        if !*twice {
            *twice = true;
            conn.send(data);
        }
        data.len()
    }
}

/// An answer to a request that was never written (an echo repeated, an
/// HTTP response too many) is a mismatch, at any pipeline depth, even
/// though its bytes look like the next answer's.
fn answers_nobody_asked_for_are_mismatches(backend: Backend) {
    for pipeline in [1, 4] {
        let engine = engine(backend, |_| EchoFirstTwice);
        let opts = Options {
            pipeline,
            ..options(
                Mode::Echo,
                engine.local_addr(),
                2,
                64,
                Duration::from_millis(300),
            )
        };
        let what = format!("pipeline {pipeline} against repeated echoes on {backend}");
        let r = run_bounded(&what, opts);
        assert!(r.mismatches >= 1, "{what}: the repeat went unnoticed");
        engine.shutdown().expect("shutdown");
    }
    const TWICE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!\
        HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
    let engine = engine(backend, |_| Canned(TWICE));
    let opts = Options {
        pipeline: 3,
        ..options(
            Mode::Http,
            engine.local_addr(),
            2,
            64,
            Duration::from_millis(300),
        )
    };
    let r = run_bounded(
        &format!("http pipeline 3 against two answers each on {backend}"),
        opts,
    );
    assert!(r.mismatches >= 1, "the extra responses went unnoticed");
    engine.shutdown().expect("shutdown");
}

/// Answers only the first request of each read and drops the rest, like
/// a server that does not support pipelining.
struct FirstOfEachRead(&'static [u8]);

impl Handler for FirstOfEachRead {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if data.windows(4).any(|w| w == b"\r\n\r\n") {
            conn.send(self.0);
            data.len()
        } else {
            0
        }
    }
}

/// HTTP pipelining against ringnet's HTTP handler: every status and body
/// checked, in closed loop and in open loop (rate held); against a server
/// that drops pipelined requests, the lost requests are errors and the
/// run ends on time.
fn http_pipelining(backend: Backend) {
    let good = engine(backend, |_| Http::default());
    let opts = Options {
        pipeline: 16,
        ..options(
            Mode::Http,
            good.local_addr(),
            4,
            64,
            Duration::from_millis(400),
        )
    };
    let r = run_bounded(&format!("http pipeline 16 on {backend}"), opts);
    assert!(r.ops > 0);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    let opts = Options {
        pipeline: 4,
        rate: Some(3000.0),
        ..options(Mode::Http, good.local_addr(), 4, 64, Duration::from_secs(1))
    };
    let r = run_bounded(&format!("http pipeline 4 at 3000/s on {backend}"), opts);
    assert_eq!((r.errors, r.mismatches), (0, 0));
    assert!(
        r.rate_shortfall().is_some_and(|s| s <= 0.05),
        "{:.0}/s for 3000/s",
        r.ops_per_sec()
    );
    assert!(r.ops_per_sec() <= 3000.0 * 1.05, "{:.0}/s", r.ops_per_sec());
    good.shutdown().expect("shutdown");

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
    let bad = engine(backend, |_| FirstOfEachRead(OK));
    let opts = Options {
        pipeline: 8,
        op_timeout: Duration::from_millis(100),
        ..options(
            Mode::Http,
            bad.local_addr(),
            2,
            64,
            Duration::from_millis(500),
        )
    };
    let r = run_bounded(
        &format!("http pipeline 8 against a non-pipelining server on {backend}"),
        opts,
    );
    assert!(r.errors >= 2, "the dropped requests were not counted");
    assert_eq!(r.mismatches, 0);
    bad.shutdown().expect("shutdown");
}

/// A depth of 0, and pipelining in modes without requests, are refused.
#[test]
fn pipeline_options_are_checked() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    for (mode, pipeline) in [
        (Mode::Echo, 0),
        (Mode::Accept, 2),
        (Mode::Hold, 2),
        (Mode::Http, 0),
    ] {
        let opts = Options {
            pipeline,
            ..options(mode, addr, 2, 16, Duration::from_millis(100))
        };
        match run(&opts) {
            Err(ringnet::bench::BenchError::Usage(why)) => {
                assert!(why.contains("--pipeline"), "{why}")
            }
            other => panic!("{mode} pipeline {pipeline}: {other:?}"),
        }
    }
}

both!(
    echo_over_a_unix_socket_verifies_every_byte,
    the_load_generator_speaks_tls,
    load_threads_share_the_connections,
    open_loop_holds_its_rate,
    open_loop_shows_a_stall_closed_loop_hides,
    echo_against_a_correct_server_verifies_every_byte,
    a_server_that_corrupts_one_byte_is_caught,
    one_corrupted_byte_counts_as_one_failure,
    a_server_that_drops_one_byte_does_not_hang_the_generator,
    accept_mode_counts_whole_connections,
    http_mode_checks_status_and_body,
    hold_mode_reports_rss_per_connection,
    pipelining_keeps_n_requests_in_flight,
    pipelining_checks_every_byte,
    answers_nobody_asked_for_are_mismatches,
    http_pipelining
);

// 8 the floor ------------------------------------------------------------

/// The minimal io_uring echo loop of `examples/uring_floor.rs`, built by
/// `cargo test` beside the binary.
fn floor_exe() -> std::path::PathBuf {
    let exe = exe();
    exe.parent()
        .expect("target dir")
        .join("examples")
        .join("uring_floor")
}

/// The floor that ringnet's io_uring path is measured against serves
/// echo (also pipelined) and accept cycles with every byte checked, beside
/// ringnet in one `--compare`, and refuses flags it does not know.
#[test]
fn the_floor_serves_the_benchmarks_beside_ringnet() {
    use ringnet::bench::compare::{Contender, Extra};
    let floor = floor_exe();
    assert!(
        floor.exists(),
        "{} missing: `cargo test` builds the examples (or: cargo build --example uring_floor)",
        floor.display()
    );
    for (mode, pipeline) in [(Mode::Echo, 1), (Mode::Echo, 4), (Mode::Accept, 1)] {
        let template = Options {
            conns: 4,
            pipeline,
            duration: Duration::from_millis(300),
            warmup: Duration::ZERO,
            progress: false,
            ..Options::new(mode, SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let extra = Extra {
            against: vec![Contender::against(&format!(
                "floor={} --addr {{addr}} --cpu 0",
                floor.display()
            ))
            .expect("contender")],
            only: Some(vec!["io_uring".into(), "floor".into()]),
        };
        let cmp = bounded(
            "compare against the floor",
            Duration::from_secs(60),
            move || {
                let _one_at_a_time = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
                compare(exe(), &template, 1, (0, 1), &[], None, &extra)
            },
        )
        .expect("compare runs");
        let table = cmp.to_table();
        println!("{table}");
        assert!(table.contains("io_uring/floor"), "{table}");
        for (name, runs) in &cmp.results {
            for r in runs {
                assert!(r.ops > 0, "{name} {mode} pipeline {pipeline}: nothing done");
                assert_eq!(
                    (r.errors, r.mismatches),
                    (0, 0),
                    "{name} {mode} pipeline {pipeline}"
                );
            }
        }
    }
    let out = std::process::Command::new(&floor)
        .args(["--buffers", "300"])
        .output()
        .expect("floor runs");
    assert_eq!(out.status.code(), Some(2), "a bad buffer count was taken");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--buffers"));
}
