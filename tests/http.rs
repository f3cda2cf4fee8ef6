//! Integration tests for the `http` app over real sockets on `127.0.0.1`.
//!
//! Clients are blocking `std::net::TcpStream`s with read timeouts, so a server
//! that fails to answer makes a test fail instead of hang. Where `io_uring`
//! cannot be set up at all the tests print the reason and skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use ringnet::app::http::Http;
use ringnet::{Backend, Config, Engine, Error};

const TIMEOUT: Duration = Duration::from_secs(5);
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A running engine serving [`Http`] on `backend`, or `None` (after saying
/// why) when that backend is io_uring and io_uring is unavailable here.
fn start(test: &str, backend: Backend) -> Option<Engine> {
    let cfg = Config {
        listeners: vec![ringnet::listener::ListenerSpec::bind(
            "127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .expect("address"),
        )],
        workers: 1,
        backend: backend.into(),
        ..Default::default()
    };
    match Engine::start(cfg, |_| Http::default()) {
        Ok(engine) => Some(engine),
        Err(err @ (Error::UringUnavailable(_) | Error::Unsupported { .. })) => {
            eprintln!("skipping {test}: {err}");
            None
        }
        Err(err) => panic!("engine failed to start: {err}"),
    }
}

/// A client connection with a read timeout, reading through a buffer.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Read one response: status line, headers, then exactly Content-Length
    /// body bytes.
    fn response(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read status line");
        assert!(line.ends_with("\r\n"), "truncated status line {line:?}");
        let mut parts = line.trim_end().splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read header");
            assert!(line.ends_with("\r\n"), "truncated header {line:?}");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header {line:?}"));
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("Content-Length");
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("read body");
        Response {
            status,
            headers,
            body,
        }
    }

    /// Assert that the server has closed the connection and sent nothing more.
    fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("expected end of stream, got {:?}", &buf[..n]),
            Err(e) => panic!("expected end of stream, got {e}"),
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn assert_hello(&self) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.body, b"Hello, World!");
        assert_eq!(self.header("content-type"), Some("text/plain"));
    }
}

fn pipelined_requests_are_answered_in_order_and_the_connection_stays_open(backend: Backend) {
    let Some(engine) = start("pipelined_requests", backend) else {
        return;
    };
    let mut c = Client::connect(engine.local_addr());
    let pipelined = [
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n".as_slice(),
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    .concat();
    c.send(&pipelined);
    for _ in 0..3 {
        let r = c.response();
        r.assert_hello();
        assert!(!r.closes(), "{r:?}");
    }
    c.send(GET);
    let r = c.response();
    r.assert_hello();
    assert!(!r.closes());
    engine.shutdown().expect("shutdown");
}

fn connection_close_is_answered_then_closed(backend: Backend) {
    let Some(engine) = start("connection_close", backend) else {
        return;
    };
    let mut c = Client::connect(engine.local_addr());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = c.response();
    r.assert_hello();
    assert!(r.closes(), "{r:?}");
    c.expect_eof();
    engine.shutdown().expect("shutdown");
}

fn request_written_byte_by_byte_is_answered_once(backend: Backend) {
    let Some(engine) = start("byte_by_byte", backend) else {
        return;
    };
    let mut c = Client::connect(engine.local_addr());
    for b in GET {
        c.send(std::slice::from_ref(b));
        thread::sleep(Duration::from_millis(2));
    }
    let r = c.response();
    r.assert_hello();
    assert!(!r.closes());
    // Exactly one answer: the next response read belongs to the next request.
    c.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.response();
    r.assert_hello();
    assert!(r.closes(), "a second answer to the split request? {r:?}");
    c.expect_eof();
    engine.shutdown().expect("shutdown");
}

fn malformed_request_gets_400_and_the_server_keeps_serving(backend: Backend) {
    let Some(engine) = start("malformed_request", backend) else {
        return;
    };
    let addr = engine.local_addr();
    let mut keep = Client::connect(addr);
    keep.send(GET);
    keep.response().assert_hello();

    let mut bad = Client::connect(addr);
    bad.send(b"\x01\x02 not http at all\r\n\r\n");
    let r = bad.response();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.closes(), "{r:?}");
    bad.expect_eof();

    keep.send(GET);
    let r = keep.response();
    r.assert_hello();
    assert!(!r.closes());
    let mut fresh = Client::connect(addr);
    fresh.send(GET);
    fresh.response().assert_hello();
    engine.shutdown().expect("shutdown");
}

fn concurrent_keep_alive_clients_all_get_200(backend: Backend) {
    let Some(engine) = start("concurrent_clients", backend) else {
        return;
    };
    let addr = engine.local_addr();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..50 {
                    c.send(GET);
                    let r = c.response();
                    r.assert_hello();
                    assert!(!r.closes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    engine.shutdown().expect("shutdown");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_the_connection_stays_open_uring() {
    pipelined_requests_are_answered_in_order_and_the_connection_stays_open(Backend::Uring);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_the_connection_stays_open_epoll() {
    pipelined_requests_are_answered_in_order_and_the_connection_stays_open(Backend::Epoll);
}

#[test]
fn connection_close_is_answered_then_closed_uring() {
    connection_close_is_answered_then_closed(Backend::Uring);
}

#[test]
fn connection_close_is_answered_then_closed_epoll() {
    connection_close_is_answered_then_closed(Backend::Epoll);
}

#[test]
fn request_written_byte_by_byte_is_answered_once_uring() {
    request_written_byte_by_byte_is_answered_once(Backend::Uring);
}

#[test]
fn request_written_byte_by_byte_is_answered_once_epoll() {
    request_written_byte_by_byte_is_answered_once(Backend::Epoll);
}

#[test]
fn malformed_request_gets_400_and_the_server_keeps_serving_uring() {
    malformed_request_gets_400_and_the_server_keeps_serving(Backend::Uring);
}

#[test]
fn malformed_request_gets_400_and_the_server_keeps_serving_epoll() {
    malformed_request_gets_400_and_the_server_keeps_serving(Backend::Epoll);
}

#[test]
fn concurrent_keep_alive_clients_all_get_200_uring() {
    concurrent_keep_alive_clients_all_get_200(Backend::Uring);
}

#[test]
fn concurrent_keep_alive_clients_all_get_200_epoll() {
    concurrent_keep_alive_clients_all_get_200(Backend::Epoll);
}
