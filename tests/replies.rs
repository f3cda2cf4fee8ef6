//! Replies sent straight from the receive buffer: on io_uring, bytes a
//! handler sends out of the buffer `on_data` was lent, with nothing else
//! queued or in flight, go from that provided buffer (no copy), and the
//! buffer returns to its ring when the send completes. On both backends the
//! peer must see exactly the bytes the handler sent, in order; every buffer
//! must come back, whatever the peer does.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use ringnet::{Backend, Config, Conn, Engine, Handler};

/// Replies to each chunk with a fixed mix of the lent bytes and others.
#[derive(Clone, Copy)]
enum Shape {
    /// The bytes, then `|`.
    ThenMore,
    /// `<`, then the bytes (the reply waits behind queued output: copied).
    AfterMore,
    /// The bytes but the first, then the first.
    Rotated,
    /// The bytes twice.
    Twice,
}

struct Replier(Shape);

impl Handler for Replier {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        match self.0 {
            Shape::ThenMore => {
                conn.send(data);
                conn.send(b"|");
            }
            Shape::AfterMore => {
                conn.send(b"<");
                conn.send(data);
            }
            Shape::Rotated => {
                conn.send(&data[1..]);
                conn.send(&data[..1]);
            }
            Shape::Twice => {
                conn.send(data);
                conn.send(data);
            }
        }
        data.len()
    }
}

fn start<H: Handler + 'static>(
    cfg: Config,
    backend: Backend,
    h: impl Fn(usize) -> H + Send + Sync + 'static,
) -> Engine {
    let engine = Engine::start(cfg, h).expect("engine starts");
    assert_eq!(engine.backend(), backend);
    engine
}

/// Echo round trips: on io_uring the replies go from the receive buffers
/// (counted), on epoll they are copied; the bytes are the same, and every
/// buffer is back once the client leaves.
fn echo_replies_go_from_the_receive_buffer(backend: Backend) {
    let engine = util::echo_engine(util::config(backend));
    let mut s = util::connect(engine.local_addr());
    for i in 0..200u64 {
        util::ping(&mut s, &util::pattern(i, 1 + (i as usize * 37) % 3000));
    }
    let replies = engine.stats().buffer_replies;
    match backend {
        Backend::Uring => assert!(replies >= 100, "{replies} replies from buffers"),
        Backend::Epoll => assert_eq!(replies, 0),
    }
    drop(s);
    util::wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// Whatever the handler sends around the lent bytes, the peer gets it in
/// the order it was sent: a reply from the buffer first and output queued
/// behind it, output queued first and the lent bytes copied after it, two
/// slices of the buffer, the same bytes twice.
fn replies_keep_their_order_around_other_output(backend: Backend) {
    /// What the peer must get back for the bytes it sent.
    type Expect = fn(&[u8]) -> Vec<u8>;
    let cases: [(Shape, Expect); 4] = [
        (Shape::ThenMore, |d| [d, b"|"].concat()),
        (Shape::AfterMore, |d| [b"<", d].concat()),
        (Shape::Rotated, |d| [&d[1..], &d[..1]].concat()),
        (Shape::Twice, |d| [d, d].concat()),
    ];
    for (shape, want) in cases {
        let engine = start(util::config(backend), backend, move |_| Replier(shape));
        let mut s = util::connect(engine.local_addr());
        for i in 0..50u64 {
            let msg = util::pattern(i, 2 + i as usize * 11);
            s.write_all(&msg).expect("write");
            let want = want(&msg);
            let mut got = vec![0; want.len()];
            s.read_exact(&mut got).expect("read");
            assert_eq!(got, want, "round {i}");
        }
        drop(s);
        util::wait_baseline(&engine);
        engine.shutdown().expect("shutdown");
    }
}

/// Large buffers and a small socket send buffer with a peer that reads
/// late: a reply can be more than the socket takes at once, so it goes in
/// parts from its buffer. 4 MiB go through intact and every buffer is back.
fn a_reply_larger_than_the_socket_takes_goes_in_parts(backend: Backend) {
    bulk_through_a_small_socket(Config {
        buf_size: 64 << 10,
        buf_count: 64,
        send_buffer_size: Some(4096),
        ..util::config(backend)
    });
}

/// The same with the buffers registered as a fixed buffer: replies go with
/// SEND_ZC, each buffer back only after its notification; and peers that
/// reset mid-reply lose nothing for others.
fn fixed_send_buffers_carry_every_byte(backend: Backend) {
    bulk_through_a_small_socket(Config {
        buf_size: 64 << 10,
        buf_count: 64,
        send_buffer_size: Some(4096),
        fixed_send_buffers: true,
        ..util::config(backend)
    });
    resets_mid_reply(Config {
        fixed_send_buffers: true,
        ..util::config(backend)
    });
}

fn bulk_through_a_small_socket(cfg: Config) {
    let engine = util::echo_engine(cfg);
    let s = util::connect(engine.local_addr());
    let payload = util::pattern(7, 4 << 20);
    let mut w = s.try_clone().expect("clone");
    let sent = payload.clone();
    let writer = std::thread::spawn(move || {
        for chunk in sent.chunks(200_000) {
            w.write_all(chunk).expect("write");
        }
        w.shutdown(Shutdown::Write).expect("shutdown");
    });
    // Read late and slowly: the server's sends find the socket full.
    std::thread::sleep(Duration::from_millis(200));
    let mut got = Vec::with_capacity(payload.len());
    let mut r = s;
    let mut buf = vec![0; 8192];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() % (256 << 10) < 8192 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    writer.join().expect("writer");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the echo differs");
    util::wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// A ring of 8 buffers (replies may hold 2 of them) and 24 clients
/// streaming at once: replies beyond that room are copied, receiving never
/// starves, every stream comes back intact, every buffer is back.
fn replies_hold_at_most_a_quarter_of_the_ring(backend: Backend) {
    let cfg = Config {
        buf_count: 8,
        buf_size: 1024,
        ..util::config(backend)
    };
    let engine = util::echo_engine(cfg);
    let addr = engine.local_addr();
    let clients: Vec<_> = (0..24u64)
        .map(|i| std::thread::spawn(move || util::echo_roundtrip(addr, util::pattern(i, 300_000))))
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let s = util::wait_baseline(&engine);
    if backend == Backend::Uring {
        assert!(s.buffer_replies > 0, "{s:?}");
    }
    engine.shutdown().expect("shutdown");
}

/// Peers that send and reset at once, while their replies are in flight:
/// each is closed, its buffers come back, and a well-behaved client is
/// served all along.
fn peers_that_reset_mid_reply_lose_nothing_for_others(backend: Backend) {
    resets_mid_reply(util::config(backend));
}

fn resets_mid_reply(cfg: Config) {
    let engine = util::echo_engine(cfg);
    let addr = engine.local_addr();
    let mut good = util::connect(addr);
    for i in 0..60u64 {
        let s = socket2::Socket::from(std::net::TcpStream::connect(addr).expect("connect"));
        let _ = s.set_linger(Some(Duration::ZERO));
        let mut t = std::net::TcpStream::from(s);
        let _ = t.write_all(&util::pattern(i, 100_000));
        drop(t);
        util::ping(&mut good, &util::pattern(1000 + i, 500));
    }
    drop(good);
    util::wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

both!(
    echo_replies_go_from_the_receive_buffer,
    replies_keep_their_order_around_other_output,
    a_reply_larger_than_the_socket_takes_goes_in_parts,
    replies_hold_at_most_a_quarter_of_the_ring,
    peers_that_reset_mid_reply_lose_nothing_for_others,
    fixed_send_buffers_carry_every_byte
);
