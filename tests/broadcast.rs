//! Sending to many: broadcast to every connection across workers, send_to
//! one (unknown or closed ids are errors), and two chat nodes relaying each
//! other's clients over a link that reconnects. Both backends.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringnet::app::chat::Chat;
use ringnet::framing::Framing;
use ringnet::message::{Framed, MessageHandler, MsgConn};
use ringnet::{Backend, Config, ConnId, Engine};
use util::*;

/// Every line a client sends goes to every connection, the sender included.
struct Shout;

impl MessageHandler for Shout {
    type State = ();

    fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) {}

    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), line: &[u8]) {
        conn.broadcast(line).expect("a line fits");
    }
}

/// Greets each connection with its id; `to ID TEXT` sends TEXT to ID and an
/// error comes back as `error: ...`.
struct Directory;

impl MessageHandler for Directory {
    type State = ();

    fn on_open(&mut self, conn: &mut MsgConn<'_, '_>) {
        let id = conn.id().as_u64();
        conn.send_msg(format!("id {id}").as_bytes()).expect("fits");
    }
    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.splitn(3, ' ');
        if let (Some("to"), Some(id), Some(msg)) = (parts.next(), parts.next(), parts.next()) {
            let to = ConnId::from_u64(id.parse().unwrap_or(u64::MAX));
            if let Err(e) = conn.send_to(to, msg.as_bytes()) {
                conn.send_msg(format!("error: {e}").as_bytes())
                    .expect("fits");
            }
        }
    }
}

struct LineClient {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl LineClient {
    fn new(addr: std::net::SocketAddr) -> LineClient {
        let s = connect(addr);
        LineClient {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }
    fn say(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }
    fn hear(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("a line");
        l.trim_end().to_string()
    }
}

fn open_count(engine: &Engine, n: u64) {
    wait_stats(engine, Duration::from_secs(10), "connections open", |s| {
        s.open == n
    });
}

fn broadcast_reaches_everyone_once_in_order(backend: Backend) {
    // SO_REUSEPORT spreads connections over both workers by hash, so the
    // broadcast has to cross workers.
    let cfg = Config {
        workers: 2,
        listener: ringnet::ListenerMode::ReusePort,
        ..config(backend)
    };
    let engine = Engine::start(cfg, |_| Framed::new(Framing::line(), Shout)).expect("engine");
    let mut clients: Vec<LineClient> = (0..100)
        .map(|_| LineClient::new(engine.local_addr()))
        .collect();
    open_count(&engine, 100);
    let spread: Vec<u64> = engine.worker_stats().iter().map(|w| w.open).collect();
    assert!(
        spread.iter().all(|&n| n > 0),
        "clients on every worker: {spread:?}"
    );
    for i in 0..50 {
        clients[7].say(&format!("message {i}"));
    }
    for (n, c) in clients.iter_mut().enumerate() {
        for i in 0..50 {
            assert_eq!(c.hear(), format!("message {i}"), "client {n}, message {i}");
        }
    }
    // Order holds per sender; the engine's own broadcast is another sender,
    // so it goes out once the client's lines are all through.
    engine.broadcast(b"from the engine\n");
    for (n, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.hear(), "from the engine", "client {n}");
    }
    println!(
        "{backend}: 100 clients (per worker {spread:?}) each got 50 + 1 broadcasts once, in order"
    );
    drop(clients);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

fn send_to_one_and_unknown_ids(backend: Backend) {
    let cfg = Config {
        workers: 2,
        ..config(backend)
    };
    let engine = Engine::start(cfg, |_| Framed::new(Framing::line(), Directory)).expect("engine");
    let mut a = LineClient::new(engine.local_addr());
    let mut b = LineClient::new(engine.local_addr());
    let a_id: u64 = a.hear().trim_start_matches("id ").parse().expect("id");
    let _b_id = b.hear();
    b.say(&format!("to {a_id} hello a"));
    assert_eq!(a.hear(), "hello a");
    b.say("to 12345 nobody");
    let err = b.hear();
    assert!(err.starts_with("error: no open connection"), "{err}");
    engine
        .send_to(ConnId::from_u64(a_id), b"from the engine\n")
        .expect("send_to from outside");
    assert_eq!(a.hear(), "from the engine");
    drop(a);
    wait_stats(&engine, Duration::from_secs(10), "a closed", |s| {
        s.open == 1
    });
    b.say(&format!("to {a_id} too late"));
    let err = b.hear();
    assert!(
        err.starts_with("error: no open connection"),
        "a closed id is an error: {err}"
    );
    assert!(engine.send_to(ConnId::from_u64(a_id), b"x").is_err());
    drop(b);
    engine.shutdown().expect("shutdown");
}

fn two_chat_nodes_relay(backend: Backend) {
    let node_a = Engine::start(config(backend), |_| {
        Framed::new(Framing::line(), Chat::default())
    })
    .expect("node a");
    let a_addr = node_a.local_addr();
    let peer = Chat {
        peer: Some(vec![a_addr.into()]),
    };
    let node_b = Engine::start(config(backend), move |_| {
        Framed::new(Framing::line(), peer.clone())
    })
    .expect("node b");
    open_count(&node_a, 1); // the link
    let mut a1 = LineClient::new(a_addr);
    let mut b1 = LineClient::new(node_b.local_addr());
    open_count(&node_a, 2);
    open_count(&node_b, 2);
    a1.say("hello from a");
    assert_eq!(b1.hear(), "hello from a");
    b1.say("hi from b");
    assert_eq!(
        a1.hear(),
        "hi from b",
        "and no echo of a's own line came first"
    );
    // Node A goes away and comes back on the same port: B reconnects.
    drop(a1);
    node_a.shutdown().expect("node a down");
    let node_a = Engine::start(
        Config {
            listeners: vec![ringnet::listener::ListenerSpec::bind(a_addr)],
            ..config(backend)
        },
        |_| Framed::new(Framing::line(), Chat::default()),
    )
    .expect("node a again");
    open_count(&node_a, 1);
    // A counts the link as soon as it accepts it; B counts it once its own
    // worker has seen the connect complete.
    let s = wait_stats(
        &node_b,
        Duration::from_secs(10),
        "B to count the link re-made",
        |s| s.connected >= 2,
    );
    println!(
        "{backend}: link re-made after node A restarted; B connected {} times, {} failed rounds",
        s.connected, s.connect_failures
    );
    assert!(s.connected >= 2, "{s:?}");
    let mut a2 = LineClient::new(a_addr);
    open_count(&node_a, 2);
    b1.say("welcome back");
    assert_eq!(a2.hear(), "welcome back");
    drop((a2, b1));
    node_b.shutdown().expect("node b");
    node_a.shutdown().expect("node a");
}

/// Node B joins node A through A's Unix socket (an abstract name), while
/// clients use TCP: lines cross the Unix link both ways.
fn chat_nodes_link_over_a_unix_socket(backend: Backend) {
    let link: ringnet::Address = format!("unix:@ringnet-chat-{}-{backend}", std::process::id())
        .parse()
        .expect("address");
    let node_a = Engine::start(
        Config::default()
            .listen_on("127.0.0.1:0")
            .and_then(|c| c.also_listen_on(link.clone()))
            .map(|c| Config {
                workers: 1,
                backend: backend.into(),
                ..c
            })
            .expect("config"),
        |_| Framed::new(Framing::line(), Chat::default()),
    )
    .expect("node a");
    assert_eq!(node_a.local_addrs()[1], link);
    let peer = Chat {
        peer: Some(vec![link]),
    };
    let node_b = Engine::start(config(backend), move |_| {
        Framed::new(Framing::line(), peer.clone())
    })
    .expect("node b");
    open_count(&node_a, 1); // the link, over the Unix socket
    let mut a1 = LineClient::new(node_a.local_addr());
    let mut b1 = LineClient::new(node_b.local_addr());
    open_count(&node_a, 2);
    open_count(&node_b, 2);
    a1.say("over unix from a");
    assert_eq!(b1.hear(), "over unix from a");
    b1.say("over unix from b");
    assert_eq!(a1.hear(), "over unix from b");
    drop((a1, b1));
    node_b.shutdown().expect("node b");
    node_a.shutdown().expect("node a");
}

/// A client that never reads while another floods broadcasts: its queued
/// output passes `max_queued_output` and it is closed at once (a slow
/// consumer), while the talker gets every one of its own lines back.
fn slow_consumer_is_closed(backend: Backend) {
    let cfg = Config {
        send_high_watermark: 256 << 10,
        send_low_watermark: 64 << 10,
        max_queued_output: 4 << 20,
        ..config(backend)
    };
    let engine = Engine::start(cfg, |_| Framed::new(Framing::line(), Shout)).expect("engine");
    let addr = engine.local_addr();
    let sleeper =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sleeper.set_recv_buffer_size(4096).expect("rcvbuf");
    sleeper.connect(&addr.into()).expect("connect");
    let talker = LineClient::new(addr);
    open_count(&engine, 2);
    let LineClient { r, mut w } = talker;
    let line = "x".repeat(4095);
    let n = 4000; // 16 MiB in all
    let reader = std::thread::spawn(move || {
        let mut r = r;
        let mut got = 0;
        let mut l = String::new();
        while got < n {
            l.clear();
            if r.read_line(&mut l).expect("read") == 0 {
                break;
            }
            got += 1;
        }
        got
    });
    for _ in 0..n {
        w.write_all(format!("{line}\n").as_bytes()).expect("write");
    }
    assert_eq!(
        reader.join().expect("reader"),
        n,
        "the talker heard all its lines"
    );
    let s = wait_stats(
        &engine,
        Duration::from_secs(10),
        "the slow consumer closed",
        |s| s.output_limit_closes == 1 && s.open == 1,
    );
    println!("{backend}: slow consumer closed after 4 MiB queued; talker got {n} lines: {s:?}");
    drop((sleeper, w));
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

#[test]
fn slow_consumer_is_closed_uring() {
    slow_consumer_is_closed(Backend::Uring);
}

#[test]
fn slow_consumer_is_closed_epoll() {
    slow_consumer_is_closed(Backend::Epoll);
}

#[test]
fn broadcast_reaches_everyone_once_in_order_uring() {
    broadcast_reaches_everyone_once_in_order(Backend::Uring);
}
#[test]
fn broadcast_reaches_everyone_once_in_order_epoll() {
    broadcast_reaches_everyone_once_in_order(Backend::Epoll);
}
#[test]
fn send_to_one_and_unknown_ids_uring() {
    send_to_one_and_unknown_ids(Backend::Uring);
}
#[test]
fn send_to_one_and_unknown_ids_epoll() {
    send_to_one_and_unknown_ids(Backend::Epoll);
}
#[test]
fn two_chat_nodes_relay_uring() {
    two_chat_nodes_relay(Backend::Uring);
}
#[test]
fn two_chat_nodes_relay_epoll() {
    two_chat_nodes_relay(Backend::Epoll);
}
#[test]
fn chat_nodes_link_over_a_unix_socket_uring() {
    chat_nodes_link_over_a_unix_socket(Backend::Uring);
}
#[test]
fn chat_nodes_link_over_a_unix_socket_epoll() {
    chat_nodes_link_over_a_unix_socket(Backend::Epoll);
}
