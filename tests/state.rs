//! Per-connection handler state (`Handler::State`), on both backends: made
//! by `on_open`, lent to every `on_data` and `on_timer` of its connection
//! and to no other, handed to `on_close` with what the callbacks left in it,
//! and dropped right after, once per connection, however the connection
//! ends. Also: a timer set on a closing connection never fires, and the
//! message layer keeps its handler's state the same way.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use ringnet::framing::Framing;
use ringnet::message::{Framed, MessageHandler, MsgConn};
use ringnet::{Backend, CloseReason, Config, Conn, ConnId, Engine, Handler};
use util::*;

/// What the test hears from the handler and from the states' drops.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Closed {
        id: ConnId,
        name: String,
        bytes: usize,
        timers: u32,
    },
    Dropped(String),
}

/// A connection's state: its name (the first line it sends), the bytes it
/// sent, the timers it heard. Reports its own drop.
struct Session {
    id: ConnId,
    name: Option<String>,
    bytes: usize,
    timers: u32,
    events: mpsc::Sender<Event>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let name = self.name.clone().unwrap_or_default();
        let _ = self.events.send(Event::Dropped(name));
    }
}

/// `name\n` first; then `tick\n` sets a 10 ms timer that answers with the
/// state's counts, `close\n` closes after a timer set while closing, and
/// any other line is answered with `name:bytes`.
struct Sessions {
    events: mpsc::Sender<Event>,
}

impl Handler for Sessions {
    type State = Session;

    fn on_open(&mut self, conn: &mut Conn<'_>) -> Session {
        Session {
            id: conn.id(),
            name: None,
            bytes: 0,
            timers: 0,
            events: self.events.clone(),
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, s: &mut Session, data: &[u8]) -> usize {
        assert_eq!(s.id, conn.id(), "another connection's state");
        let mut used = 0;
        while let Some(nl) = data[used..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&data[used..used + nl]).into_owned();
            used += nl + 1;
            s.bytes += nl + 1;
            if s.name.is_none() {
                s.name = Some(line);
                conn.send(b"hello\n");
                continue;
            }
            match line.as_str() {
                "tick" => {
                    conn.set_timer(Duration::from_millis(10), 1);
                }
                "close" => {
                    // More than the socket buffers hold: the connection
                    // stays closing until the peer reads it all.
                    conn.send(&vec![b'.'; 8 << 20]);
                    conn.close();
                    // Closing: this timer must never fire.
                    conn.set_timer(Duration::from_millis(1), 99);
                }
                _ => {
                    let name = s.name.as_deref().unwrap_or("?");
                    conn.send(format!("{name}:{}\n", s.bytes).as_bytes());
                }
            }
        }
        used
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, s: &mut Session, id: u64) {
        assert_eq!(s.id, conn.id(), "another connection's state");
        assert_ne!(id, 99, "a timer set while closing fired");
        s.timers += 1;
        let name = s.name.as_deref().unwrap_or("?");
        conn.send(format!("{name} timers {}\n", s.timers).as_bytes());
    }

    fn on_close(&mut self, id: ConnId, s: Session, _reason: &CloseReason) {
        assert_eq!(s.id, id, "another connection's state");
        let _ = self.events.send(Event::Closed {
            id,
            name: s.name.clone().unwrap_or_default(),
            bytes: s.bytes,
            timers: s.timers,
        });
        // `s` is dropped here, after the Closed event.
    }
}

fn line(r: &mut BufReader<std::net::TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("a line");
    l.trim_end().to_string()
}

/// Two interleaved connections each see only their own state; on_close
/// gets the final state; the drop follows on_close once per connection.
fn each_connection_has_its_own_state(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(config(backend), move |_| Sessions { events: tx.clone() })
        .expect("engine starts");
    let addr = engine.local_addr();
    let mut a = connect(addr);
    let mut b = connect(addr);
    let mut ra = BufReader::new(a.try_clone().expect("clone"));
    let mut rb = BufReader::new(b.try_clone().expect("clone"));
    a.write_all(b"alice\n").expect("write");
    b.write_all(b"bob\n").expect("write");
    assert_eq!(line(&mut ra), "hello");
    assert_eq!(line(&mut rb), "hello");
    for i in 0..5 {
        a.write_all(b"x\n").expect("write");
        assert_eq!(line(&mut ra), format!("alice:{}", 6 + 2 * (i + 1)));
        b.write_all(b"yy\n").expect("write");
        assert_eq!(line(&mut rb), format!("bob:{}", 4 + 3 * (i + 1)));
    }
    a.write_all(b"tick\n").expect("write");
    assert_eq!(line(&mut ra), "alice timers 1");
    a.write_all(b"tick\n").expect("write");
    assert_eq!(line(&mut ra), "alice timers 2");
    b.write_all(b"tick\n").expect("write");
    assert_eq!(line(&mut rb), "bob timers 1");
    drop((a, ra));
    let closed = rx.recv_timeout(Duration::from_secs(10)).expect("on_close");
    assert!(
        matches!(&closed, Event::Closed { name, bytes: 26, timers: 2, .. } if name == "alice"),
        "{closed:?}"
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).expect("drop"),
        Event::Dropped("alice".into()),
        "the state is dropped right after on_close"
    );
    drop((b, rb));
    let closed = rx.recv_timeout(Duration::from_secs(10)).expect("on_close");
    assert!(
        matches!(&closed, Event::Closed { name, bytes: 24, timers: 1, .. } if name == "bob"),
        "{closed:?}"
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).expect("drop"),
        Event::Dropped("bob".into())
    );
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
    assert!(rx.try_recv().is_err(), "nothing dropped twice");
}

/// However a connection ends (it closes itself with a timer set while
/// closing, the engine closes it over its input limit, the peer resets it,
/// the engine shuts down with it open), its state reaches on_close and is
/// dropped once; the timer set while closing never fires.
fn every_ending_drops_the_state_once(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(
        Config {
            max_unconsumed: 64,
            linger: Duration::from_millis(100),
            ..config(backend)
        },
        move |_| Sessions { events: tx.clone() },
    )
    .expect("engine starts");
    let addr = engine.local_addr();
    let greet = |name: &str| {
        let mut s = connect(addr);
        s.write_all(format!("{name}\n").as_bytes()).expect("write");
        let mut hello = [0u8; 6];
        s.read_exact(&mut hello).expect("hello");
        s
    };
    // Closes itself with 8 MiB queued and a 1 ms timer set while closing,
    // and stays closing while this end does not read.
    let mut closer = greet("closer");
    closer.write_all(b"close\n").expect("write");
    // A 10 ms timer set later on another connection fires: the 1 ms one
    // was due before it (timers fire in deadline order), on a connection
    // still closing, and did not fire (it would have panicked the worker).
    let mut last = greet("last");
    last.write_all(b"tick\n").expect("write");
    let mut r = BufReader::new(last.try_clone().expect("clone"));
    assert_eq!(line(&mut r), "last timers 1");
    let mut rest = Vec::new();
    closer.read_to_end(&mut rest).expect("closed by the server");
    assert_eq!(rest.len(), 8 << 20, "the queued output was flushed first");
    // Over the input limit: 100 bytes without a line end.
    let mut flooder = greet("flooder");
    flooder.write_all(&[b'z'; 100]).expect("write");
    let _ = flooder.read_to_end(&mut rest);
    // Reset by the peer.
    let resetter = greet("resetter");
    socket2::SockRef::from(&resetter)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(resetter);
    // `last` is still open at shutdown, with the timer that ran.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(rx.recv_timeout(Duration::from_secs(10)).expect("an event"));
    }
    engine.shutdown().expect("shutdown");
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(e);
    }
    for name in ["closer", "flooder", "resetter", "last"] {
        let closed = seen
            .iter()
            .position(|e| matches!(e, Event::Closed { name: n, .. } if n == name))
            .unwrap_or_else(|| panic!("{name}: no on_close in {seen:?}"));
        let drops: Vec<usize> = seen
            .iter()
            .enumerate()
            .filter(|(_, e)| **e == Event::Dropped(name.into()))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(drops.len(), 1, "{name}: dropped once: {seen:?}");
        assert!(
            drops[0] > closed,
            "{name}: dropped after on_close: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Closed { name, timers: 1, .. } if name == "last")),
        "the open connection's state kept its timer count: {seen:?}"
    );
}

/// The message layer: each connection's `MessageHandler::State` counts its
/// own messages, and a line drip-fed one byte per read is decoded whole.
struct Counting;

impl MessageHandler for Counting {
    type State = u32;

    fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) -> u32 {
        0
    }

    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, n: &mut u32, msg: &[u8]) {
        *n += 1;
        let reply = format!("{n} {}", String::from_utf8_lossy(msg));
        conn.send_msg(reply.as_bytes()).expect("fits");
    }
}

fn message_handlers_keep_state_per_connection(backend: Backend) {
    let framing = Framing::Line { max: 4096 };
    let engine = Engine::start(config(backend), move |_| Framed::new(framing, Counting))
        .expect("engine starts");
    let addr = engine.local_addr();
    let mut a = connect(addr);
    let mut b = connect(addr);
    a.set_nodelay(true).expect("nodelay");
    let mut ra = BufReader::new(a.try_clone().expect("clone"));
    let mut rb = BufReader::new(b.try_clone().expect("clone"));
    a.write_all(b"one\ntwo\n").expect("write");
    b.write_all(b"uno\n").expect("write");
    assert_eq!(line(&mut ra), "1 one");
    assert_eq!(line(&mut ra), "2 two");
    assert_eq!(line(&mut rb), "1 uno");
    // A long line, one byte per write: every read resumes the scan.
    let long: Vec<u8> = (0..2000).map(|i| b'a' + (i % 26) as u8).collect();
    for (i, byte) in long.iter().enumerate() {
        a.write_all(&[*byte]).expect("write");
        if i % 256 == 0 {
            // Let the server see the line in pieces.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    a.write_all(b"\n").expect("write");
    assert_eq!(
        line(&mut ra),
        format!("3 {}", String::from_utf8_lossy(&long))
    );
    b.write_all(b"dos\n").expect("write");
    assert_eq!(line(&mut rb), "2 dos");
    engine.shutdown().expect("shutdown");
}

#[test]
fn each_connection_has_its_own_state_uring() {
    each_connection_has_its_own_state(Backend::Uring);
}
#[test]
fn each_connection_has_its_own_state_epoll() {
    each_connection_has_its_own_state(Backend::Epoll);
}
#[test]
fn every_ending_drops_the_state_once_uring() {
    every_ending_drops_the_state_once(Backend::Uring);
}
#[test]
fn every_ending_drops_the_state_once_epoll() {
    every_ending_drops_the_state_once(Backend::Epoll);
}
#[test]
fn message_handlers_keep_state_per_connection_uring() {
    message_handlers_keep_state_per_connection(Backend::Uring);
}
#[test]
fn message_handlers_keep_state_per_connection_epoll() {
    message_handlers_keep_state_per_connection(Backend::Epoll);
}
