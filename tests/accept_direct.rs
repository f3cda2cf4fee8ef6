//! Accepting straight into io_uring's registered-descriptor table
//! (`Config::accept_direct`). On io_uring the connections get no plain
//! descriptor (none of the process's descriptors is their server side),
//! are served like any other, and say so when asked for what only a plain
//! descriptor can tell; a full table costs the one connection the kernel
//! could not place, after which the worker accepts with plain descriptors
//! and goes back to the table once entries are free. The epoll backend
//! ignores the option and serves as usual.

#[macro_use]
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use ringnet::{Backend, Config, Conn, Engine, Handler};

fn direct(backend: Backend, table: u32) -> Config {
    Config {
        fixed_files: table,
        accept_direct: true,
        ..util::config(backend)
    }
}

/// How many of this process's descriptors are the server's side of a
/// connection on `port` (sockets in /proc/net/tcp with that local port,
/// not listening, whose inode a descriptor of ours names); other tests'
/// sockets in the same process do not count.
fn server_side_fds(port: u16) -> usize {
    let ours = util::own_socket_inodes();
    util::tcp4_sockets()
        .iter()
        .filter(|s| {
            s.local.port() == port && s.state != util::TCP_LISTEN && ours.contains(&s.inode)
        })
        .count()
}

/// Says what `Conn::peer_addr` gave in its first line, then echoes.
struct Peer;

impl Handler for Peer {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let line = match (conn.peer_addr(), conn.socket()) {
            (Ok(addr), Ok(_)) => format!("peer {addr}\n"),
            (Err(e), Err(f))
                if e.kind() == std::io::ErrorKind::Unsupported
                    && f.kind() == std::io::ErrorKind::Unsupported =>
            {
                format!("unsupported {e}\n")
            }
            (a, b) => format!("mixed {a:?} {:?}\n", b.map(|_| ())),
        };
        conn.send(line.as_bytes());
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

/// Connections accepted into the table are served (every byte, many
/// clients, large transfers), hold no plain descriptor, and are told apart
/// by what `peer_addr` and `socket` answer.
fn connections_live_in_the_table(backend: Backend) {
    let uring = backend == Backend::Uring;
    let engine = Engine::start(direct(backend, 256), |_| Peer).expect("engine starts");
    let addr = engine.local_addr();
    let mut held: Vec<_> = (0..40).map(|_| util::connect(addr)).collect();
    let mut firsts = Vec::new();
    for s in &mut held {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut line = String::new();
        r.read_line(&mut line).expect("first line");
        firsts.push(line);
        util::ping(s, b"still there");
    }
    let server_fds = server_side_fds(addr.port());
    if uring {
        assert_eq!(server_fds, 0, "the server's side has no descriptors");
        for l in &firsts {
            assert!(l.starts_with("unsupported "), "{l}");
            assert!(l.contains("accept_direct"), "the error says why: {l}");
        }
    } else {
        assert_eq!(server_fds, 40, "a descriptor per connection");
        for l in &firsts {
            assert!(l.starts_with("peer 127.0.0.1:"), "{l}");
        }
    }
    // Large transfers both ways on connections in the table.
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = util::connect(addr);
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while b[0] != b'\n' {
                    s.read_exact(&mut b).expect("first line");
                    line.push(b[0]);
                }
                let msg = util::pattern(i, 300_000);
                s.write_all(&msg).expect("write");
                let mut back = vec![0; msg.len()];
                s.read_exact(&mut back).expect("echo");
                assert!(back == msg, "echo of client {i} differs");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    drop(held);
    let s = util::wait_baseline(&engine);
    assert_eq!(s.accepted, 44, "{s:?}");
    if uring {
        assert_eq!(s.direct_accepts, 44, "{s:?}");
        assert_eq!(s.fixed_installs, 0, "nothing registered by key: {s:?}");
    } else {
        assert_eq!(s.direct_accepts, 0, "{s:?}");
    }
    engine.shutdown().expect("shutdown");
}

/// A table of 8: the 9th connection finds it full, and the kernel closes
/// it (the one connection lost, counted); the worker goes on accepting
/// with plain descriptors, every later client is served, and once the
/// table has room again new connections go into it.
fn a_full_table_costs_one_connection_then_falls_back(backend: Backend) {
    let uring = backend == Backend::Uring;
    let engine = util::echo_engine(direct(backend, 8));
    let addr = engine.local_addr();
    let mut served = Vec::new();
    let mut lost = 0;
    for i in 0..20u64 {
        let mut s = util::connect(addr);
        let msg = util::pattern(i, 64);
        let mut back = vec![0; msg.len()];
        match s.write_all(&msg).and_then(|()| s.read_exact(&mut back)) {
            Ok(()) => {
                assert_eq!(back, msg, "client {i}");
                served.push(s);
            }
            Err(_) => lost += 1,
        }
    }
    let s = engine.stats();
    if uring {
        assert_eq!(lost, 1, "{s:?}");
        assert_eq!(s.direct_table_full, 1, "{s:?}");
        assert_eq!(s.direct_accepts, 8, "{s:?}");
        assert_eq!(s.accepted, 19, "{s:?}");
    } else {
        assert_eq!((lost, s.direct_table_full, s.direct_accepts), (0, 0, 0));
    }
    // Everyone still there is still served.
    for (i, c) in served.iter_mut().enumerate() {
        util::ping(c, &util::pattern(100 + i as u64, 100));
    }
    // Free the table: new connections go into it again.
    drop(served);
    let base = util::wait_baseline(&engine);
    for i in 0..3u64 {
        let mut c = util::connect(addr);
        util::ping(&mut c, &util::pattern(200 + i, 64));
    }
    let s = util::wait_baseline(&engine);
    if uring {
        assert_eq!(s.direct_accepts, base.direct_accepts + 3, "{s:?}");
        assert_eq!(s.direct_table_full, 1, "{s:?}");
    }
    engine.shutdown().expect("shutdown");
}

/// Over `max_connections`, a connection accepted into the table is
/// closed at once and its entry released: the table does not fill with
/// refused connections.
fn refused_connections_give_their_entries_back(backend: Backend) {
    let uring = backend == Backend::Uring;
    let cfg = Config {
        max_connections: 2,
        ..direct(backend, 4)
    };
    let engine = util::echo_engine(cfg);
    let addr = engine.local_addr();
    let mut two = [util::connect(addr), util::connect(addr)];
    for (i, c) in two.iter_mut().enumerate() {
        util::ping(c, &util::pattern(i as u64, 32));
    }
    // Ten refused in turn: with leaked entries a table of 4 would be full.
    for _ in 0..10 {
        let mut c = util::connect(addr);
        let mut b = [0u8; 1];
        let got = c.write_all(b"x").and_then(|()| c.read(&mut b));
        assert!(matches!(got, Ok(0) | Err(_)), "refused: {got:?}");
    }
    util::wait_stats(&engine, Duration::from_secs(10), "ten refused", |s| {
        s.refused == 10
    });
    drop(two);
    util::wait_baseline(&engine);
    let mut c = util::connect(addr);
    util::ping(&mut c, b"after the refusals");
    drop(c);
    let s = util::wait_baseline(&engine);
    if uring {
        assert_eq!(s.direct_table_full, 0, "{s:?}");
        assert_eq!(s.direct_accepts, 13, "{s:?}");
    }
    engine.shutdown().expect("shutdown");
}

/// A shutdown closes connections in the table gracefully: each peer reads
/// its last echo, then the end of the stream (a write-side shutdown named
/// by table entry), not a reset.
fn shutdown_ends_direct_connections_gracefully(backend: Backend) {
    // Lingering and the shutdown outlast the clients' 20 s read timeout:
    // only the write-side shutdown can end their streams in time.
    let engine = util::echo_engine(Config {
        linger: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(60),
        ..direct(backend, 16)
    });
    let addr = engine.local_addr();
    let mut conns: Vec<_> = (0..3).map(|_| util::connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        util::ping(c, &util::pattern(i as u64, 1000));
    }
    let stopping = std::thread::spawn(move || engine.shutdown());
    for c in &mut conns {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)
            .expect("end of stream, not a reset");
        assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    }
    drop(conns);
    stopping.join().expect("shutdown thread").expect("shutdown");
}

/// Without a table there is nothing to accept into: the engine does not
/// start, and says which setting is missing.
fn accept_direct_without_a_table_is_refused(backend: Backend) {
    let cfg = direct(backend, 0);
    match Engine::start(cfg, |_| util::Echo) {
        Err(ringnet::Error::Config(why)) => {
            assert!(
                why.contains("accept_direct") && why.contains("fixed_files"),
                "{why}"
            )
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accept_direct without fixed_files was accepted"),
    }
}

both!(
    connections_live_in_the_table,
    a_full_table_costs_one_connection_then_falls_back,
    refused_connections_give_their_entries_back,
    shutdown_ends_direct_connections_gracefully,
    accept_direct_without_a_table_is_refused
);
