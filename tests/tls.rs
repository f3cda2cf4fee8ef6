//! TLS on the engine, checked with clients nobody here wrote: Python's
//! `ssl` (OpenSSL), `openssl s_client` and `curl`, on both backends. Large
//! random payloads echoed, HTTP keep-alive and pipelining, ALPN, TLS 1.2
//! and 1.3, mutual TLS accepted and refused, certificates reloaded, and the
//! bad peers (garbage, an old protocol version, an unknown client
//! certificate, a stalled handshake) closed with their reason while a good
//! client keeps being served.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringnet::listener::ListenerSpec;
use ringnet::tls::{TlsAcceptor, TlsServerOptions};
use ringnet::{Backend, Config, Conn, Engine, Handler};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls")
}

/// TLS options for the fixture certificate `name` (`server`, `server-rsa`,
/// `server-ed25519`).
fn options(name: &str) -> TlsServerOptions {
    TlsServerOptions::new(
        data().join(format!("{name}.crt")),
        data().join(format!("{name}.key")),
    )
}

/// An engine on 127.0.0.1:0 serving TLS with `opts`, with `handler`.
fn tls_engine<H, F>(
    backend: Backend,
    opts: &TlsServerOptions,
    extra: Config,
    f: F,
) -> (Engine, TlsAcceptor)
where
    H: Handler + 'static,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let acceptor = TlsAcceptor::new(opts).expect("acceptor");
    let spec = ListenerSpec::bind("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .with_tls(acceptor.clone());
    let cfg = Config {
        listeners: vec![spec],
        workers: 1,
        backend: backend.into(),
        ..extra
    };
    (Engine::start(cfg, f).expect("engine starts"), acceptor)
}

/// Run the Python client; its JSON answer.
fn python(action: &str, port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(data().join("client.py"))
        .arg(action)
        .arg(port.to_string())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client said {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Greets with the ALPN protocol and the client certificate count, then
/// echoes; closes after a line `bye`.
struct Greeter;

impl Handler for Greeter {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let tls = conn.tls().expect("a TLS connection");
        let alpn = tls.alpn().map(|a| String::from_utf8_lossy(a).into_owned());
        let certs = tls.peer_certificates().map_or(0, <[_]>::len);
        let line = format!(
            "hello {} alpn={} certs={certs} sni={}\n",
            tls.version().unwrap_or("?"),
            alpn.as_deref().unwrap_or("-"),
            tls.server_name().unwrap_or("-"),
        );
        conn.send(line.as_bytes());
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        if data.starts_with(b"bye") {
            conn.send(b"see you\n");
            conn.close();
        } else {
            conn.send(data);
        }
        data.len()
    }
}

fn echo_of_large_random_payloads(backend: Backend) {
    for cert in ["server", "server-rsa", "server-ed25519"] {
        let (engine, _) = tls_engine(backend, &options(cert), Config::default(), |_| util::Echo);
        let port = engine.local_addr().port();
        for version in ["1.3", "1.2"] {
            let r = python("echo", port, &["--version", version, "--size", "3000000"]);
            assert_eq!(r["error"], serde_json::Value::Null, "{cert} {version}: {r}");
            assert_eq!(r["echo_ok"], true, "{cert} {version}: {r}");
            assert_eq!(r["version"], format!("TLSv{version}"), "{r}");
            let served = std::fs::read_to_string(data().join(format!("{cert}.crt"))).expect("pem");
            assert_eq!(
                r["server_cert"].as_str().map(|s| s.replace('\n', "")),
                Some(served.replace('\n', "")),
                "{cert}: the server showed its certificate"
            );
        }
        let s = engine.stats();
        assert_eq!((s.tls_handshakes, s.tls_failures), (2, 0), "{s:?}");
        // Every session is gone with its connection.
        util::wait_stats(
            &engine,
            Duration::from_secs(10),
            "TLS sessions freed",
            |s| s.tls_sessions == 0 && s.open == 0,
        );
        engine.shutdown().expect("shutdown");
    }
}

fn alpn_versions_and_a_clean_close(backend: Backend) {
    let opts = TlsServerOptions {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..options("server")
    };
    let (engine, _) = tls_engine(backend, &opts, Config::default(), |_| Greeter);
    let port = engine.local_addr().port();
    let r = python(
        "greeting",
        port,
        &["--alpn", "http/1.1,h2", "--version", "1.3"],
    );
    assert_eq!(
        r["greeting"], "hello TLSv1.3 alpn=h2 certs=0 sni=localhost\n",
        "{r}"
    );
    // The server's close after "see you" is a close_notify: the client's
    // read ends cleanly (OpenSSL reports a bare end of stream as an error).
    assert_eq!(r["rest"], "see you\n", "{r}");
    assert_eq!(r["clean_close"], true, "{r}");
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(port, &[flag, "-alpn", "http/1.1"]);
        assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
        assert!(out.contains(&format!(", {version}, Cipher is")), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    // No protocol in common: refused with no_application_protocol.
    let out = s_client(port, &["-alpn", "spdy/1"]);
    assert!(out.contains("no application protocol"), "{out}");
    wait_failures(&engine, 1);
    engine.shutdown().expect("shutdown");
}

/// `openssl s_client` against `port` (stdin closed at once); what it said.
fn s_client(port: u16, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(data().join("ca.crt"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_failures(engine: &Engine, n: u64) {
    util::wait_stats(
        engine,
        Duration::from_secs(10),
        "TLS failures counted",
        |s| s.tls_failures >= n,
    );
}

fn https_keep_alive_and_pipelining(backend: Backend) {
    let (engine, _) = tls_engine(backend, &options("server"), Config::default(), |_| {
        ringnet::app::http::Http::default()
    });
    let port = engine.local_addr().port();
    let r = python("http", port, &["--requests", "5"]);
    assert_eq!(r["responses"], 5, "{r}");
    // curl: two requests on one connection.
    let url = format!("https://localhost:{port}/");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "--cacert",
        ])
        .arg(data().join("ca.crt"))
        .args([url.as_str(), url.as_str(), "-w", "%{num_connects}\n"])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("Hello, World!").count(), 2, "{text}");
    assert!(
        text.contains("Hello, World!0\n"),
        "the second request reused the connection: {text}"
    );
    engine.shutdown().expect("shutdown");
}

/// The greeting says the handler saw a client certificate chain.
fn has_client_cert(r: &serde_json::Value) -> bool {
    r["greeting"].as_str().is_some_and(|g| {
        g.split_whitespace()
            .find_map(|w| w.strip_prefix("certs="))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= 1)
    })
}

/// wrk over https against `Http` on TLS: many keep-alive requests on
/// several connections, no error, every response a 200.
fn wrk_over_https(backend: Backend) {
    let (engine, _) = tls_engine(backend, &options("server"), Config::default(), |_| {
        ringnet::app::http::Http::default()
    });
    let port = engine.local_addr().port();
    let out = Command::new("wrk")
        .args(["-t1", "-c8", "-d1s"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in {text}"));
    assert!(requests > 100, "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let s = engine.stats();
    assert!(s.tls_handshakes >= 8 && s.tls_failures == 0, "{s:?}");
    engine.shutdown().expect("shutdown");
}

fn mutual_tls(backend: Backend) {
    let opts = TlsServerOptions {
        client_ca: Some(data().join("ca.crt")),
        ..options("server")
    };
    let (engine, _) = tls_engine(backend, &opts, Config::default(), |_| Greeter);
    let port = engine.local_addr().port();
    let r = python("greeting", port, &["--cert", "client"]);
    assert!(has_client_cert(&r), "{r}");
    // No certificate, or one from another CA: refused.
    for cert in [None, Some("rogue-client")] {
        let mut args = vec![];
        if let Some(c) = cert {
            args = vec!["--cert", c];
        }
        let r = python("greeting", port, &args);
        assert!(r["error"].as_str().is_some(), "{cert:?} was let in: {r}");
        assert_eq!(r["greeting"], serde_json::Value::Null, "{r}");
    }
    wait_failures(&engine, 2);
    let r = python("greeting", port, &["--cert", "client"]);
    assert!(has_client_cert(&r), "still served: {r}");
    engine.shutdown().expect("shutdown");
}

/// The messages the engine logs, for their close reasons.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<&'static Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(c);
        log::set_max_level(log::LevelFilter::Info);
        c
    })
}

fn logged(what: &str) -> bool {
    logs()
        .0
        .lock()
        .map(|v| v.iter().any(|m| m.contains(what)))
        .unwrap_or(false)
}

fn bad_peers_are_closed_and_others_served(backend: Backend) {
    logs();
    let extra = Config {
        tls_handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (engine, _) = tls_engine(backend, &options("server"), extra, |_| util::Echo);
    let port = engine.local_addr().port();
    // A good client, kept open throughout.
    let good = Arc::new(Mutex::new(()));
    let keep = good.lock().expect("lock");
    let good_client = std::thread::spawn(move || python("echo", port, &["--size", "100000"]));
    // Plain HTTP to the TLS port: an alert, then the end.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert_eq!(
        answer.first(),
        Some(&21),
        "a TLS alert record came back: {answer:?}"
    );
    // TLS 1.1 is not spoken.
    let r = python("greeting", port, &["--version", "1.1"]);
    assert!(r["error"].as_str().is_some(), "TLS 1.1 was let in: {r}");
    // A stalled handshake: connected, silent, closed at the time limit.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert_eq!(stalled.read(&mut buf).expect("closed, not timed out"), 0);
    drop(keep);
    let r = good_client.join().expect("good client");
    assert_eq!(
        r["echo_ok"], true,
        "the good client was served throughout: {r}"
    );
    wait_failures(&engine, 3);
    for reason in [
        "InvalidContentType",
        "peer is incompatible",
        "TLS handshake of",
    ] {
        let all = || logs().0.lock().map(|v| v.join("\n")).unwrap_or_default();
        util::wait_until(
            Duration::from_secs(5),
            &format!("{reason} in {}", all()),
            || logged(reason),
        );
    }
    let r = python("echo", port, &["--size", "1000"]);
    assert_eq!(r["echo_ok"], true, "still serving: {r}");
    // The failed sessions were freed with their connections.
    util::wait_stats(
        &engine,
        Duration::from_secs(10),
        "TLS sessions freed",
        |s| s.tls_sessions == 0 && s.open == 0,
    );
    engine.shutdown().expect("shutdown");
}

fn certificates_reload_for_new_handshakes(backend: Backend) {
    let (engine, acceptor) = tls_engine(backend, &options("server"), Config::default(), |_| {
        util::Echo
    });
    let port = engine.local_addr().port();
    let first = python("echo", port, &["--size", "1000"]);
    assert!(first["server_cert"].as_str().is_some(), "{first}");
    acceptor
        .reload(
            &data().join("server-rsa.crt"),
            &data().join("server-rsa.key"),
        )
        .expect("reload");
    let second = python("echo", port, &["--size", "1000"]);
    let rsa = std::fs::read_to_string(data().join("server-rsa.crt")).expect("pem");
    assert_eq!(
        second["server_cert"].as_str().map(|s| s.replace('\n', "")),
        Some(rsa.replace('\n', "")),
        "new handshakes use the new certificate"
    );
    // A bad reload keeps the old ones.
    assert!(acceptor
        .reload(&data().join("server.crt"), &data().join("server-rsa.key"))
        .is_err());
    let third = python("echo", port, &["--size", "1000"]);
    assert_eq!(third["server_cert"], second["server_cert"]);
    engine.shutdown().expect("shutdown");
}

#[test]
fn bad_files_are_refused_with_the_file_named() {
    let missing = TlsAcceptor::new(&TlsServerOptions::new(
        "/nonexistent.crt",
        data().join("server.key"),
    ))
    .expect_err("missing file");
    assert!(
        missing.to_string().contains("/nonexistent.crt"),
        "{missing}"
    );
    let swapped = TlsAcceptor::new(&TlsServerOptions::new(
        data().join("server.key"),
        data().join("server.crt"),
    ))
    .expect_err("swapped");
    assert!(swapped.to_string().contains("server.key"), "{swapped}");
    let mismatched = TlsAcceptor::new(&TlsServerOptions::new(
        data().join("server.crt"),
        data().join("server-rsa.key"),
    ))
    .expect_err("key of another certificate");
    assert!(!mismatched.to_string().is_empty());
}

both!(
    echo_of_large_random_payloads,
    alpn_versions_and_a_clean_close,
    https_keep_alive_and_pipelining,
    wrk_over_https,
    mutual_tls,
    bad_peers_are_closed_and_others_served,
    certificates_reload_for_new_handshakes
);
