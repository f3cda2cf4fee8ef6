//! Outbound connections on the engine: a node that both listens and
//! connects, refused and timed-out attempts reported as distinct errors,
//! addresses tried in order, shutdown while connecting. Both backends.

mod util;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use ringnet::{Backend, CloseReason, Config, Conn, ConnId, ConnectError, Ctx, Engine, Handler};
use util::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Opened(Option<u64>),
    Reply(u64, Vec<u8>),
    Failed(u64, ConnectError),
}

/// Worker 0 connects out at start (if asked); outbound connections send a
/// greeting and report what comes back; accepted ones are echoed.
struct Node {
    events: Sender<Event>,
    connect: Option<(Vec<SocketAddr>, Duration, u64)>,
}

impl Handler for Node {
    type State = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        if let (0, Some((addrs, timeout, tag))) = (ctx.worker(), self.connect.take()) {
            ctx.connect(&addrs, timeout, tag);
        }
    }
    fn on_connect_failed(&mut self, tag: u64, err: &ConnectError) {
        let _ = self.events.send(Event::Failed(tag, err.clone()));
    }
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = self.events.send(Event::Opened(conn.tag()));
        if conn.tag().is_some() {
            conn.send(b"hello from the outbound side\n");
        }
    }
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        match conn.tag() {
            Some(tag) => {
                let _ = self.events.send(Event::Reply(tag, data.to_vec()));
            }
            None => conn.send(data),
        }
        data.len()
    }
}

fn node(
    backend: Backend,
    connect: Option<(Vec<SocketAddr>, Duration, u64)>,
) -> (Engine, Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let cfg = Config {
        workers: 2,
        ..config(backend)
    };
    let engine = Engine::start(cfg, move |_| Node {
        events: tx.clone(),
        connect: connect.clone(),
    })
    .expect("node starts");
    (engine, rx)
}

fn next(rx: &Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("an event within 10 s")
}

/// A listener whose accept queue is full and never drained: further SYNs
/// are dropped, so a connect to it never completes.
fn black_hole() -> (socket2::Socket, Vec<socket2::Socket>, SocketAddr) {
    let l =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    l.listen(0).expect("listen");
    let addr = l.local_addr().expect("addr").as_socket().expect("inet");
    // Fill the queue (backlog 0 holds one); later handshakes cannot finish.
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM.nonblocking(),
            None,
        )
        .expect("socket");
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    // The queue is full once a handshake has completed into it (the
    // listener's Recv-Q, as `ss -l` shows it).
    wait_until(
        Duration::from_secs(10),
        "the black hole's accept queue to fill",
        || {
            tcp4_sockets()
                .iter()
                .any(|s| s.state == TCP_LISTEN && s.local == addr && s.rx_queue >= 1)
        },
    );
    (l, fillers, addr)
}

fn node_connects_out_and_serves_both_sides(backend: Backend) {
    let target = echo_engine(config(backend));
    let (engine, rx) = node(
        backend,
        Some((vec![target.local_addr()], Duration::from_secs(5), 7)),
    );
    assert_eq!(next(&rx), Event::Opened(Some(7)));
    let mut got = Vec::new();
    while got.len() < 29 {
        match next(&rx) {
            Event::Reply(7, bytes) => got.extend(bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, b"hello from the outbound side\n");
    // The same node accepts and serves a client with the same handler.
    let mut c = connect(engine.local_addr());
    assert_eq!(next(&rx), Event::Opened(None));
    ping(&mut c, b"accepted side");
    // And the engine can be asked from outside.
    engine
        .connect(1, &[target.local_addr()], Duration::from_secs(5), 9)
        .expect("request");
    assert_eq!(next(&rx), Event::Opened(Some(9)));
    let s = engine.stats();
    assert_eq!((s.connected, s.accepted), (2, 1), "{s:?}");
    drop(c);
    engine.shutdown().expect("node shutdown");
    wait_baseline(&target);
    target.shutdown().expect("target shutdown");
}

/// Endpoint strings work for listening and connecting; a bad one is
/// refused before anything happens.
fn endpoint_strings(backend: Backend) {
    let target = echo_engine(config(backend).listen_on("localhost:0").expect("listen_on"));
    let (engine, rx) = node(backend, None);
    let ep = format!("localhost:{}", target.local_addr().port());
    engine
        .connect_to(0, ep.as_str(), Duration::from_secs(5), 11)
        .expect("connect_to");
    assert_eq!(next(&rx), Event::Opened(Some(11)));
    match engine.connect_to(0, "localhost", Duration::from_secs(1), 12) {
        Err(ringnet::Error::Endpoint(e)) => println!("bad endpoint refused: {e}"),
        other => panic!("expected an endpoint error, got {other:?}"),
    }
    assert!(
        config(backend).listen_on("[::1:80").is_err(),
        "unbalanced brackets refused"
    );
    engine.shutdown().expect("shutdown");
    target.shutdown().expect("shutdown");
}

fn refused_is_reported(backend: Backend) {
    let (_holder, refused) = refused_addr();
    let (engine, rx) = node(backend, Some((vec![refused], Duration::from_secs(5), 3)));
    assert_eq!(next(&rx), Event::Failed(3, ConnectError::Refused));
    assert_eq!(engine.stats().connect_failures, 1);
    // The node is still serving.
    let mut c = connect(engine.local_addr());
    assert_eq!(next(&rx), Event::Opened(None));
    ping(&mut c, b"still serving");
    engine.shutdown().expect("shutdown");
}

fn timeout_is_reported(backend: Backend) {
    let (_l, _fillers, addr) = black_hole();
    let (engine, rx) = node(backend, Some((vec![addr], Duration::from_millis(300), 4)));
    assert_eq!(next(&rx), Event::Failed(4, ConnectError::TimedOut));
    engine.shutdown().expect("shutdown");
}

fn addresses_are_tried_in_order(backend: Backend) {
    let target = echo_engine(config(backend));
    let (_holder, refused) = refused_addr();
    let addrs = vec![refused, target.local_addr()];
    let (engine, rx) = node(backend, Some((addrs, Duration::from_secs(5), 5)));
    assert_eq!(
        next(&rx),
        Event::Opened(Some(5)),
        "the second address is tried after the first refuses"
    );
    engine.shutdown().expect("shutdown");
    target.shutdown().expect("shutdown");
}

fn shutdown_while_connecting(backend: Backend) {
    let (_l, filler_socks, addr) = black_hole();
    let fillers: HashSet<SocketAddr> = filler_socks
        .iter()
        .map(|s| s.local_addr().expect("addr").as_socket().expect("inet"))
        .collect();
    let (engine, rx) = node(backend, Some((vec![addr], Duration::from_secs(30), 6)));
    // Shut down only once the node's connect is in flight: a socket other
    // than the fillers' has sent its SYN to the black hole (and, the SYN
    // being dropped, waits for an answer).
    wait_until(
        Duration::from_secs(10),
        "the node's connect to the black hole to be in flight",
        || {
            tcp4_sockets()
                .iter()
                .any(|s| s.state == TCP_SYN_SENT && s.remote == addr && !fillers.contains(&s.local))
        },
    );
    assert!(
        rx.try_recv().is_err(),
        "nothing to report before the shutdown"
    );
    engine
        .shutdown()
        .expect("shutdown returns while a connect is pending");
    assert_eq!(next(&rx), Event::Failed(6, ConnectError::Shutdown));
}

/// What a [`Keeper`] saw of its link, and when.
enum Link {
    Up(Instant),
    Down(Instant),
}

/// Keeps one connection to `addr` up from worker 0 and reports each time
/// it comes up and goes down.
struct Keeper {
    addr: SocketAddr,
    timeout: Duration,
    links: Sender<Link>,
}

impl Handler for Keeper {
    type State = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        if ctx.worker() == 0 {
            ctx.connect_persistent(&[self.addr], self.timeout, 7);
        }
    }
    fn on_open(&mut self, _conn: &mut Conn<'_>) {
        let _ = self.links.send(Link::Up(Instant::now()));
    }
    fn on_data(&mut self, _conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
    fn on_close(&mut self, _id: ConnId, _: (), _reason: &CloseReason) {
        let _ = self.links.send(Link::Down(Instant::now()));
    }
}

/// The engine's backoff policy: the first wait, its cap, and how long a
/// link must stay up for the backoff to start over.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// A peer that accepts and closes at once: the persistent connection is
/// made again with growing waits (100, 200, 400, 800 ms ...), not every
/// 100 ms; a connection that closes at once does not reset the backoff. An
/// absurd timeout (`Duration::MAX`) is clamped, not an overflow.
///
/// Each wait (from a link going down to the next coming up, as the handler
/// sees them) is at least the backoff, however slow the machine: delays
/// only make waits longer. Four waits in a row are checked (at least 100,
/// 200, 400 and 800 ms). Only a link that stayed up for
/// `STABLE_AFTER` may start the backoff over, which happens only if the
/// test is held up that long; such a link starts the count again.
fn persistent_connection_backs_off(backend: Backend) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(config(backend), move |_| Keeper {
        addr,
        timeout: Duration::MAX,
        links: tx.clone(),
    })
    .expect("engine");
    let end = Instant::now() + Duration::from_secs(20);
    // The wait expected next (while the link is down): when the link went
    // down, and the least the engine waits before it comes up again.
    let mut down: Option<(Instant, Duration)> = None;
    let mut up: Option<Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut waits: Vec<(Duration, Duration)> = Vec::new();
    while waits.len() < 4 {
        assert!(
            Instant::now() < end,
            "{backend}: only {} waits in 20 s (wait, least expected): {waits:?}",
            waits.len()
        );
        if let Ok((s, _)) = listener.accept() {
            drop(s);
            continue;
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(Link::Up(at)) => {
                assert!(up.is_none(), "{backend}: two links up at once");
                if let Some((went_down, least)) = down.take() {
                    let wait = at - went_down;
                    waits.push((wait, least));
                    // Timers never fire early; a little slack for where
                    // the handler's clock readings fall.
                    assert!(
                        wait >= least.mul_f64(0.9),
                        "{backend}: the link came back after {wait:?}, the backoff \
                         was {least:?} (wait, least expected): {waits:?}"
                    );
                }
                up = Some(at);
            }
            Ok(Link::Down(at)) => {
                let lived = at - up.take().expect("a link goes down after it came up");
                // Near `STABLE_AFTER` the engine may or may not start over;
                // the first backoff is a lower bound either way.
                let least = if lived >= STABLE_AFTER.mul_f64(0.8) {
                    println!("{backend}: a link stayed up {lived:?}: counting again");
                    waits.clear();
                    FIRST_BACKOFF
                } else {
                    backoff
                };
                backoff = (least * 2).min(MAX_BACKOFF);
                down = Some((at, least));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the engine stopped"),
        }
    }
    println!("{backend}: waits before reconnecting (wait, least expected): {waits:?}");
    engine.shutdown().expect("shutdown");
}

#[test]
fn persistent_connection_backs_off_uring() {
    persistent_connection_backs_off(Backend::Uring);
}

#[test]
fn persistent_connection_backs_off_epoll() {
    persistent_connection_backs_off(Backend::Epoll);
}

#[test]
fn node_connects_out_and_serves_both_sides_uring() {
    node_connects_out_and_serves_both_sides(Backend::Uring);
}
#[test]
fn node_connects_out_and_serves_both_sides_epoll() {
    node_connects_out_and_serves_both_sides(Backend::Epoll);
}
#[test]
fn refused_is_reported_uring() {
    refused_is_reported(Backend::Uring);
}
#[test]
fn refused_is_reported_epoll() {
    refused_is_reported(Backend::Epoll);
}
#[test]
fn timeout_is_reported_uring() {
    timeout_is_reported(Backend::Uring);
}
#[test]
fn timeout_is_reported_epoll() {
    timeout_is_reported(Backend::Epoll);
}
#[test]
fn addresses_are_tried_in_order_uring() {
    addresses_are_tried_in_order(Backend::Uring);
}
#[test]
fn addresses_are_tried_in_order_epoll() {
    addresses_are_tried_in_order(Backend::Epoll);
}
#[test]
fn shutdown_while_connecting_uring() {
    shutdown_while_connecting(Backend::Uring);
}
#[test]
fn shutdown_while_connecting_epoll() {
    shutdown_while_connecting(Backend::Epoll);
}

#[test]
fn endpoint_strings_uring() {
    endpoint_strings(Backend::Uring);
}

#[test]
fn endpoint_strings_epoll() {
    endpoint_strings(Backend::Epoll);
}
