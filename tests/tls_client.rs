//! Outbound TLS: the engine's connections made with `connect_tls` and the
//! blocking `Stream::connect_tls`, against the engine's TLS server, on both
//! backends. The server's certificate is verified (a wrong name, an
//! unknown CA and a server that does not speak TLS are refused and
//! reported), SNI and ALPN reach the server, and a client certificate
//! passes mutual TLS.

#[macro_use]
mod util;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ringnet::blocking::Stream;
use ringnet::listener::ListenerSpec;
use ringnet::tls::{TlsAcceptor, TlsClientOptions, TlsConnector, TlsServerOptions, TlsTarget};
use ringnet::{Backend, Config, Conn, ConnectError, Engine, Handler};

const T: Option<Duration> = Some(Duration::from_secs(10));

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls")
}

/// A TLS echo server that first says what it saw of the client.
struct Hello;

impl Handler for Hello {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let tls = conn.tls().expect("TLS");
        let line = format!(
            "sni={} alpn={} client-certs={}\n",
            tls.server_name().unwrap_or("-"),
            tls.alpn()
                .map_or("-".into(), |a| String::from_utf8_lossy(a).into_owned()),
            tls.peer_certificates().map_or(0, <[_]>::len),
        );
        conn.send(line.as_bytes());
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

fn server(backend: Backend, client_ca: bool) -> Engine {
    let opts = TlsServerOptions {
        alpn: vec![b"ringnet/1".to_vec()],
        client_ca: client_ca.then(|| data().join("ca.crt")),
        ..TlsServerOptions::new(data().join("server.crt"), data().join("server.key"))
    };
    let spec = ListenerSpec::bind("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .with_tls(TlsAcceptor::new(&opts).expect("acceptor"));
    Engine::start(
        Config {
            listeners: vec![spec],
            ..util::config(backend)
        },
        |_| Hello,
    )
    .expect("server")
}

fn connector(ca: &str, client_cert: bool) -> TlsConnector {
    TlsConnector::new(&TlsClientOptions {
        ca: Some(data().join(ca)),
        alpn: vec![b"ringnet/1".to_vec()],
        client_cert: client_cert.then(|| (data().join("client.crt"), data().join("client.key"))),
        ..TlsClientOptions::default()
    })
    .expect("connector")
}

/// What the outbound side's handler saw.
#[derive(Debug)]
enum Seen {
    Open { tag: u64, alpn: Option<Vec<u8>> },
    Line(u64, String),
    Failed(u64, ConnectError),
    Closed(ringnet::CloseReason),
}

/// Sends `ping\n` once open, reports the lines that come back.
struct Caller {
    events: mpsc::Sender<Seen>,
}

impl Handler for Caller {
    type State = Vec<u8>;

    fn on_close(&mut self, _id: ringnet::ConnId, _: Vec<u8>, reason: &ringnet::CloseReason) {
        let _ = self.events.send(Seen::Closed(reason.clone()));
    }

    fn on_open(&mut self, conn: &mut Conn<'_>) -> Vec<u8> {
        let alpn = conn.tls().and_then(|t| t.alpn().map(<[u8]>::to_vec));
        let _ = self.events.send(Seen::Open {
            tag: conn.tag().expect("outbound"),
            alpn,
        });
        conn.send(b"ping\n");
        Vec::new()
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, got: &mut Vec<u8>, data: &[u8]) -> usize {
        got.extend_from_slice(data);
        while let Some(nl) = got.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = got.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let _ = self
                .events
                .send(Seen::Line(conn.tag().expect("outbound"), text));
        }
        data.len()
    }

    fn on_connect_failed(&mut self, tag: u64, err: &ConnectError) {
        let _ = self.events.send(Seen::Failed(tag, err.clone()));
    }
}

#[track_caller]
fn next(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(15)).expect("an event")
}

fn outbound_connections_speak_tls(backend: Backend) {
    let srv = server(backend, false);
    let addr = srv.local_addr();
    let plain = util::echo_engine(util::config(backend));
    let (tx, rx) = mpsc::channel();
    let client = Engine::start(
        Config {
            listeners: vec![],
            ..util::config(backend)
        },
        move |_| Caller { events: tx.clone() },
    )
    .expect("client engine");
    let good = connector("ca.crt", false);
    let t = Duration::from_secs(5);
    client
        .connect_tls(0, &[addr], t, 1, &good.target("localhost").expect("name"))
        .expect("connect");
    match next(&rx) {
        Seen::Open { tag: 1, alpn } => assert_eq!(alpn.as_deref(), Some(&b"ringnet/1"[..])),
        other => panic!("expected open, got {other:?}"),
    }
    let lines: Vec<String> = (0..2)
        .map(|_| match next(&rx) {
            Seen::Line(1, l) => l,
            other => panic!("expected a line, got {other:?}"),
        })
        .collect();
    assert_eq!(
        lines,
        ["sni=localhost alpn=ringnet/1 client-certs=0", "ping"]
    );
    // Refused: a name the certificate does not carry, a CA that did not
    // sign it, a server that does not speak TLS.
    let cases: [(u64, TlsTarget, std::net::SocketAddr, &str); 3] = [
        (
            2,
            good.target("wrong.example").expect("name"),
            addr,
            "not valid for name",
        ),
        (
            3,
            connector("other-ca.crt", false)
                .target("localhost")
                .expect("name"),
            addr,
            "UnknownIssuer",
        ),
        (
            4,
            good.target("localhost").expect("name"),
            plain.local_addr(),
            "",
        ),
    ];
    for (tag, target, to, why) in &cases {
        client
            .connect_tls(0, &[*to], t, *tag, target)
            .expect("connect");
        match next(&rx) {
            Seen::Failed(got, ConnectError::Tls(text)) => {
                assert_eq!(got, *tag);
                assert!(text.contains(why), "{tag}: {text}");
            }
            other => panic!("{tag}: expected a TLS failure, got {other:?}"),
        }
    }
    assert!(ringnet::tls::TlsConnector::target(&good, "not a name!").is_err());
    // The client fails as soon as it has judged the certificate; the
    // server counts the refusal when the client's alert reaches it.
    util::wait_stats(
        &srv,
        Duration::from_secs(10),
        "the server to count both refusals",
        |s| s.tls_failures >= 2,
    );
    client.shutdown().expect("client");
    plain.shutdown().expect("plain");
    srv.shutdown().expect("server");
}

fn a_client_certificate_passes_mutual_tls(backend: Backend) {
    let srv = server(backend, true);
    let addr = srv.local_addr();
    let (tx, rx) = mpsc::channel();
    let client = Engine::start(
        Config {
            listeners: vec![],
            ..util::config(backend)
        },
        move |_| Caller { events: tx.clone() },
    )
    .expect("client engine");
    let t = Duration::from_secs(5);
    let with = connector("ca.crt", true).target("localhost").expect("name");
    client
        .connect_tls(0, &[addr], t, 7, &with)
        .expect("connect");
    assert!(matches!(next(&rx), Seen::Open { tag: 7, .. }));
    match next(&rx) {
        Seen::Line(7, l) => assert!(
            l.ends_with("client-certs=2") || l.ends_with("client-certs=1"),
            "{l}"
        ),
        other => panic!("{other:?}"),
    }
    // Without one: the server refuses. Under TLS 1.3 the client's side
    // of the handshake is over before the server has checked (so it
    // opens), and it hears the refusal as the server's alert.
    let without = connector("ca.crt", false)
        .target("localhost")
        .expect("name");
    client
        .connect_tls(0, &[addr], t, 8, &without)
        .expect("connect");
    loop {
        match next(&rx) {
            Seen::Failed(8, ConnectError::Tls(why))
            | Seen::Closed(ringnet::CloseReason::Tls(why)) => {
                assert!(why.contains("CertificateRequired"), "{why}");
                break;
            }
            Seen::Open { tag: 8, .. } | Seen::Line(7, _) => {}
            Seen::Line(8, l) => panic!("served without a certificate: {l}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(srv.stats().tls_failures >= 1);
    client.shutdown().expect("client");
    srv.shutdown().expect("server");
}

fn blocking_stream_over_tls(backend: Backend) {
    let srv = server(backend, false);
    let addr = srv.local_addr();
    let target = connector("ca.crt", false)
        .target("localhost")
        .expect("name");
    let mut s = Stream::connect_tls(addr, &target, T).expect("TLS connect");
    assert_eq!(s.tls_alpn(), Some(&b"ringnet/1"[..]));
    assert_eq!(s.tls_version(), Some("TLSv1.3"));
    assert_eq!(
        s.recv_line(T).expect("greeting"),
        "sni=localhost alpn=ringnet/1 client-certs=0"
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.send(&big, T).expect("send");
    assert_eq!(s.recv_exact(big.len(), T).expect("echo"), big);
    s.send_line("over tls", T).expect("line");
    assert_eq!(s.recv_line(T).expect("line"), "over tls");
    s.shutdown_write().expect("close_notify");
    // Refused: wrong name, unknown CA.
    for target in [
        connector("ca.crt", false)
            .target("other.example")
            .expect("name"),
        connector("other-ca.crt", false)
            .target("localhost")
            .expect("name"),
    ] {
        let e = Stream::connect_tls(addr, &target, T).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    }
    // The system's trust store does not know the test CA.
    let system = TlsConnector::new(&TlsClientOptions::default()).expect("system roots");
    let e = Stream::connect_tls(addr, &system.target("localhost").expect("name"), T)
        .expect_err("unknown issuer");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    srv.shutdown().expect("server");
}

/// A TLS echo server with `cfg`'s limits and `handler`.
fn limited<H, F>(cfg: Config, f: F) -> Engine
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let opts = TlsServerOptions::new(data().join("server.crt"), data().join("server.key"));
    let spec = ListenerSpec::bind("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .with_tls(TlsAcceptor::new(&opts).expect("acceptor"));
    Engine::start(
        Config {
            listeners: vec![spec],
            ..cfg
        },
        f,
    )
    .expect("server")
}

/// Backpressure and the write timeout count TLS output as they count plain
/// output: a TLS client that sends and never reads is paused, then closed
/// when its output stalls, while another TLS client is served.
fn a_tls_client_that_never_reads_is_paused_then_timed_out(backend: Backend) {
    let cfg = Config {
        send_high_watermark: 64 << 10,
        send_low_watermark: 16 << 10,
        write_timeout: Duration::from_millis(800),
        ..util::config(backend)
    };
    let srv = limited(cfg, |_| util::Echo);
    let addr = srv.local_addr();
    let target = connector("ca.crt", false)
        .target("localhost")
        .expect("name");
    let hog = {
        let target = target.clone();
        std::thread::spawn(move || {
            let mut s = Stream::connect_tls(addr, &target, T).expect("connect");
            let chunk = vec![7u8; 64 << 10];
            // Until the server gives up on it.
            for _ in 0..256 {
                if s.send(&chunk, T).is_err() {
                    return true;
                }
            }
            false
        })
    };
    util::wait_stats(&srv, Duration::from_secs(10), "the hog paused", |s| {
        s.paused >= 1
    });
    let mut other = Stream::connect_tls(addr, &target, T).expect("connect");
    other.send_line("still served", T).expect("send");
    assert_eq!(other.recv_line(T).expect("echo"), "still served");
    util::wait_stats(&srv, Duration::from_secs(10), "the hog timed out", |s| {
        s.write_timeouts >= 1
    });
    assert!(hog.join().expect("hog"), "the hog's sends were cut off");
    other.send_line("after", T).expect("send");
    assert_eq!(other.recv_line(T).expect("echo"), "after");
    srv.shutdown().expect("server");
}

/// Never consumes; reports close reasons.
struct Hoarder {
    closed: mpsc::Sender<ringnet::CloseReason>,
}

impl Handler for Hoarder {
    type State = ();
    fn on_open(&mut self, _conn: &mut Conn<'_>) {}
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if data.starts_with(b"echo ") && data.ends_with(b"\n") {
            conn.send(data);
            return data.len();
        }
        0
    }
    fn on_close(&mut self, _id: ringnet::ConnId, _: (), reason: &ringnet::CloseReason) {
        let _ = self.closed.send(reason.clone());
    }
}

/// The input limit counts the plaintext a handler leaves unconsumed on a
/// TLS connection: over it, that connection is closed with `InputLimit`
/// and another is served.
fn the_input_limit_applies_to_tls_plaintext(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let cfg = Config {
        max_unconsumed: 4096,
        ..util::config(backend)
    };
    let srv = limited(cfg, move |_| Hoarder { closed: tx.clone() });
    let addr = srv.local_addr();
    let target = connector("ca.crt", false)
        .target("localhost")
        .expect("name");
    let mut big = Stream::connect_tls(addr, &target, T).expect("connect");
    big.send(&[b'x'; 10_000], T).expect("send");
    let reason = rx.recv_timeout(Duration::from_secs(10)).expect("closed");
    assert_eq!(reason, ringnet::CloseReason::InputLimit { limit: 4096 });
    let mut ok = Stream::connect_tls(addr, &target, T).expect("connect");
    ok.send(b"echo hi\n", T).expect("send");
    assert_eq!(ok.recv_line(T).expect("echo"), "echo hi");
    srv.shutdown().expect("server");
}

both!(
    a_tls_client_that_never_reads_is_paused_then_timed_out,
    the_input_limit_applies_to_tls_plaintext,
    outbound_connections_speak_tls,
    a_client_certificate_passes_mutual_tls,
    blocking_stream_over_tls
);
