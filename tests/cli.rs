//! The flags of `ringnet serve` and the socket limits of `ringnet probe`, run
//! through the binary: every flag is accepted and, where it is cheap to see,
//! has its effect; a bad value is refused with a message naming the flag.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Read timeout of the client sockets: generous, so a slow machine does not
/// fail a test (nothing here asserts how long anything took).
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `ringnet serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// `ringnet serve MODE --addr 127.0.0.1:0 --workers 1 ARGS...`, once it
    /// has printed the address it serves on.
    fn start(mode: &str, args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", mode, args)
    }

    fn start_on(addr: &str, mode: &str, args: &[&str]) -> Server {
        Server::spawn(addr, mode, args, Stdio::inherit())
    }

    /// Like [`Server::start`] with `--workers 2`, its stderr kept for
    /// [`Server::stop`].
    fn start_capturing(mode: &str, args: &[&str]) -> Server {
        let mut all = vec!["--workers", "2"];
        all.extend_from_slice(args);
        Server::spawn("127.0.0.1:0", mode, &all, Stdio::piped())
    }

    fn spawn(addr: &str, mode: &str, args: &[&str], stderr: Stdio) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringnet"));
        cmd.args(["serve", mode, "--addr", addr]);
        if !args.contains(&"--workers") {
            cmd.args(["--workers", "1"]);
        }
        let mut child = cmd
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn ringnet");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout pipe"))
            .read_line(&mut line)
            .expect("read the start-up line");
        // "ringnet: serving MODE on ADDR (BACKEND backend, N workers)"
        let addr = line
            .split_whitespace()
            .nth(4)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in the start-up line {line:?} ({args:?})"));
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s
    }
}

impl Server {
    fn terminate(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions; the child is
        // not reaped yet, so the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// Stop the server and return what it wrote to stderr (when captured).
    fn stop(mut self) -> String {
        self.terminate();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut text).expect("read stderr");
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// Whether the peer closed `s` (EOF or a reset) before sending anything
/// more than `echo` back.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("send");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringnet"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringnet")
}

#[test]
fn every_new_flag_is_accepted() {
    let server = Server::start(
        "echo",
        &[
            "--backlog",
            "64",
            "--idle-timeout",
            "30",
            "--read-timeout",
            "30.5",
            "--write-timeout",
            "10",
            "--rcvbuf",
            "256K",
            "--sndbuf",
            "131072",
            "--no-nodelay",
            "--v6only",
            "--max-frame",
            "1M",
            "--max-line",
            "1024",
            "--high-watermark",
            "2M",
            "--low-watermark",
            "512K",
            "--shutdown-timeout",
            "1.5",
            "--linger",
            "0",
        ],
    );
    let mut s = server.connect();
    echo_roundtrip(&mut s, b"every knob");
}

#[test]
fn idle_timeout_closes_an_idle_connection() {
    let server = Server::start("echo", &["--idle-timeout", "0.2"]);
    let mut s = server.connect();
    echo_roundtrip(&mut s, b"then silence");
    assert!(closed_by_peer(&mut s), "the idle connection stayed open");
}

/// `--read-timeout`: a client trickling one byte a second and never
/// finishing its line is closed, while a client sending whole lines at the
/// same time is served throughout and after.
#[test]
fn read_timeout_stops_a_trickling_client_while_others_are_served() {
    let server = Server::start("line-echo", &["--read-timeout", "1.5"]);
    let mut slow = server.connect();
    let mut busy = server.connect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = std::sync::Arc::clone(&stop);
        let mut slow = slow.try_clone().expect("clone");
        std::thread::spawn(move || {
            // One byte a second, no line end, until closed (or told).
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if slow.write_all(b"x").is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            sent
        })
    };
    // The other client is served the whole time the trickler lasts.
    let mut served = 0;
    let closed = loop {
        echo_roundtrip(&mut busy, b"whole line\n");
        served += 1;
        slow.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 16];
        let state = slow.read(&mut buf);
        slow.set_nonblocking(false).expect("blocking");
        match state {
            Ok(0) => break true,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the trickler got {other:?}"),
        }
        if served > 2000 {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = trickler.join().expect("trickler");
    assert!(
        closed,
        "the trickling client was never closed ({sent} bytes sent)"
    );
    assert!(sent >= 1, "the trickler sent nothing");
    assert!(served >= 2, "the other client was served {served} times");
    // Still served afterwards.
    echo_roundtrip(&mut busy, b"after\n");
}

#[test]
fn max_line_closes_a_connection_with_a_longer_line() {
    let server = Server::start("line-echo", &["--max-line", "8"]);
    let mut s = server.connect();
    echo_roundtrip(&mut s, b"short\n");
    s.write_all(b"a line longer than eight bytes\n")
        .expect("send");
    assert!(closed_by_peer(&mut s), "a line over --max-line was served");
}

#[test]
fn max_frame_closes_a_connection_with_a_larger_frame() {
    let server = Server::start("framed-echo", &["--max-frame", "16"]);
    let mut s = server.connect();
    let mut frame = 4u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"ping");
    echo_roundtrip(&mut s, &frame);
    s.write_all(&17u32.to_be_bytes()).expect("send");
    assert!(
        closed_by_peer(&mut s),
        "a frame over --max-frame was served"
    );
}

#[test]
fn v6only_refuses_ipv4_clients() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipping: no IPv6 here");
        return;
    }
    let server = Server::start_on("[::]:0", "echo", &["--v6only"]);
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, server.addr.port()));
    let mut s = TcpStream::connect(v6).expect("connect over IPv6");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    echo_roundtrip(&mut s, b"v6");
    let v4 = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    assert!(
        TcpStream::connect(v4).is_err(),
        "an IPv4 client reached a --v6only server"
    );
}

#[test]
fn bad_values_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--backlog", "-1"),
        ("--backlog", "0"),
        ("--idle-timeout", "abc"),
        ("--idle-timeout", "0"),
        ("--read-timeout", "NaN"),
        ("--write-timeout", "-1"),
        ("--shutdown-timeout", "-5"),
        ("--linger", "inf"),
        ("--stats", "0"),
        ("--rcvbuf", "0x"),
        ("--sndbuf", "0"),
        ("--rcvbuf", "4G"),
        ("--max-frame", "5G"),
        ("--max-line", "-3"),
        ("--high-watermark", "1.5M"),
        ("--low-watermark", "lots"),
    ] {
        let out = run(&["serve", "echo", "--addr", "127.0.0.1:0", flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            stderr.contains(flag),
            "the error for {flag} {value} does not name it: {stderr}"
        );
    }
}

#[test]
fn watermarks_out_of_order_are_refused() {
    let out = run(&[
        "serve",
        "echo",
        "--addr",
        "127.0.0.1:0",
        "--high-watermark",
        "64K",
        "--low-watermark",
        "64K",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--low-watermark") && stderr.contains("--high-watermark"),
        "{stderr}"
    );
}

/// Accepting into the registered table without a table is refused,
/// naming both flags.
#[test]
fn accept_direct_without_fixed_files_is_refused() {
    let out = run(&["serve", "echo", "--addr", "127.0.0.1:0", "--accept-direct"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--accept-direct") && stderr.contains("--fixed-files"),
        "{stderr}"
    );
}

#[test]
fn kernel_caps_are_logged_once_with_the_value_that_applies() {
    let server = Server::start_capturing(
        "echo",
        &[
            "--rcvbuf",
            "1G",
            "--sndbuf",
            "1G",
            "--backlog",
            "2147483647",
        ],
    );
    let mut s = server.connect();
    echo_roundtrip(&mut s, b"capped");
    let stderr = server.stop();
    // Two workers, two listeners: each cap is still logged once.
    for (what, sysctl) in [
        ("SO_RCVBUF", "net.core.rmem_max"),
        ("SO_SNDBUF", "net.core.wmem_max"),
        ("listen backlog", "net.core.somaxconn"),
    ] {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(what)).collect();
        assert_eq!(lines.len(), 1, "{what}:\n{stderr}");
        assert!(
            lines[0].contains(sysctl) && lines[0].contains("applies"),
            "{}",
            lines[0]
        );
    }
}
#[test]
fn probe_json_reports_socket_limits() {
    let out = run(&["probe", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for key in ["kernel", "io_uring", "features"] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
    let limits = &json["socket_limits"];
    for key in [
        "somaxconn",
        "tcp_max_syn_backlog",
        "rmem_max",
        "wmem_max",
        "tcp_rmem",
        "tcp_wmem",
        "ip_local_port_range",
        "nofile",
        "tcp_syn_retries",
        "syn_connect_timeout_secs",
        "kernel_tls",
    ] {
        assert!(limits.get(key).is_some(), "{key} missing: {limits}");
    }
    // Kernel TLS is reported as available exactly when setsockopt took it;
    // a kernel that took it has the tls ULP registered afterwards.
    let ktls = &limits["kernel_tls"];
    let available = ktls["available"].as_bool().expect("kernel_tls.available");
    let registered = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|t| t.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false);
    assert_eq!(available, registered, "{ktls}");
    assert_eq!(ktls["errno"].is_null(), available, "{ktls}");
    let somaxconn = limits["somaxconn"].as_u64().expect("somaxconn");
    assert!(somaxconn > 0);
    let soft = limits["nofile"]["soft"].as_u64().unwrap_or(u64::MAX);
    let hard = limits["nofile"]["hard"].as_u64().unwrap_or(u64::MAX);
    assert!(soft <= hard, "nofile soft {soft} above hard {hard}");
    let range = limits["ip_local_port_range"]
        .as_array()
        .expect("port range");
    assert_eq!(range.len(), 2);
    if let Some(retries) = limits["tcp_syn_retries"].as_u64() {
        let secs = limits["syn_connect_timeout_secs"]
            .as_u64()
            .expect("timeout");
        assert_eq!(secs, (1u64 << (retries + 1)) - 1);
    }
}

#[test]
fn probe_table_mentions_socket_limits() {
    let out = run(&["probe"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for name in [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "net.ipv4.ip_local_port_range",
        "RLIMIT_NOFILE",
        "net.ipv4.tcp_syn_retries",
        "kernel TLS",
    ] {
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
}

/// `--tls-cert`, `--tls-key`, `--alpn`: `serve echo` over TLS, checked with
/// Python's ssl; bad TLS flags are refused naming what is wrong.
#[test]
fn tls_flags_serve_tls_and_bad_ones_are_refused() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let cert = data.join("server.crt").display().to_string();
    let key = data.join("server.key").display().to_string();
    let server = Server::start(
        "echo",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--alpn",
            "h2,http/1.1",
            "--tls-handshake-timeout",
            "5",
        ],
    );
    let out = Command::new("python3")
        .arg(data.join("client.py"))
        .args([
            "echo",
            &server.addr.port().to_string(),
            "--alpn",
            "http/1.1",
        ])
        .args(["--size", "200000"])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"echo_ok\": true"), "{text}");
    assert!(text.contains("\"alpn\": \"http/1.1\""), "{text}");
    drop(server);
    for (args, needle) in [
        (vec!["--alpn", "h2"], "--tls-cert"),
        (vec!["--tls-cert", &cert], "--tls-key"),
        (
            vec!["--tls-cert", "/nonexistent.pem", "--tls-key", &key],
            "/nonexistent.pem",
        ),
        (vec!["--tls-cert", &key, "--tls-key", &cert], "server.key"),
    ] {
        let out = run(&[&["serve", "echo", "--addr", "127.0.0.1:0"], &args[..]].concat());
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `ringnet bench --tls --tls-ca`: the load generator over TLS against
/// `serve --tls-cert`, every byte checked; a CA that did not sign the
/// server's certificate fails the run.
#[test]
fn bench_tls_drives_a_tls_server() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let file = |n: &str| data.join(n).display().to_string();
    let server = Server::start(
        "echo",
        &[
            "--tls-cert",
            &file("server.crt"),
            "--tls-key",
            &file("server.key"),
        ],
    );
    let addr = server.addr.to_string();
    let bench = |ca: &str| {
        run(&[
            "bench",
            "echo",
            "--addr",
            &addr,
            "--tls",
            "--tls-ca",
            ca,
            "--conns",
            "4",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--json",
        ])
    };
    let out = bench(&file("ca.crt"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (json["errors"].as_u64(), json["mismatches"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(json["ops"].as_u64().is_some_and(|n| n > 0), "{json}");
    let out = bench(&file("other-ca.crt"));
    assert!(
        !out.status.success(),
        "an unverifiable server was benchmarked"
    );
}

#[test]
fn tls_with_udp_is_refused() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let cert = data.join("server.crt").display().to_string();
    let key = data.join("server.key").display().to_string();
    let out = run(&[
        "serve",
        "echo",
        "--udp",
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--udp"));
}

/// SIGHUP makes `serve` read its TLS certificate and key again: a client
/// that connects afterwards is shown the new certificate, the server keeps
/// running, and a bad file keeps the old one.
#[test]
fn sighup_reloads_the_tls_certificate() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let dir = std::env::temp_dir().join(format!("ringnet-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(data.join("server.crt"), &cert).expect("copy");
    std::fs::copy(data.join("server.key"), &key).expect("copy");
    let mut server = Server::start(
        "echo",
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    let port = server.addr.port().to_string();
    let shown = || {
        let out = Command::new("python3")
            .arg(data.join("client.py"))
            .args(["echo", &port, "--size", "100"])
            .output()
            .expect("python3");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["echo_ok"], true, "{v}");
        v["server_cert"].as_str().expect("cert").replace('\n', "")
    };
    let pem = |name: &str| {
        std::fs::read_to_string(data.join(name))
            .expect("pem")
            .replace('\n', "")
    };
    assert_eq!(shown(), pem("server.crt"));
    std::fs::copy(data.join("server-rsa.crt"), &cert).expect("copy");
    std::fs::copy(data.join("server-rsa.key"), &key).expect("copy");
    hup(&server);
    // The reload happens in the server's own time: wait for it.
    let start = std::time::Instant::now();
    while shown() != pem("server-rsa.crt") {
        assert!(start.elapsed() < Duration::from_secs(10), "not reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A key that does not match: the RSA certificate stays.
    std::fs::copy(data.join("server.key"), &key).expect("copy");
    hup(&server);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(shown(), pem("server-rsa.crt"));
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "serve exited"
    );
    server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

fn hup(server: &Server) {
    let pid = libc::pid_t::try_from(server.child.id()).expect("pid");
    // SAFETY: kill(2) has no memory-safety preconditions; the child is not
    // reaped yet, so the pid is still ours.
    unsafe { libc::kill(pid, libc::SIGHUP) };
}

/// `bench --rate`: open loop against `serve echo`, the rate held and
/// reported; a bad rate or a mode without requests is refused.
#[test]
fn bench_rate_runs_open_loop() {
    let server = Server::start("echo", &[]);
    let addr = server.addr.to_string();
    let out = run(&[
        "bench",
        "echo",
        "--addr",
        &addr,
        "--rate",
        "1000",
        "--conns",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["target_rate"].as_f64(), Some(1000.0), "{json}");
    let short = json["rate_shortfall"].as_f64().expect("shortfall");
    assert!(short <= 0.05, "{json}");
    assert!(json["latency_us"]["p99_99"].as_f64().is_some(), "{json}");
    for (args, needle) in [
        (vec!["echo", "--rate", "0"], "--rate"),
        (vec!["echo", "--rate", "-5"], "--rate"),
        (vec!["accept", "--rate", "100"], "--rate"),
    ] {
        let out = run(&[
            &["bench"],
            &args[..],
            &["--addr", &addr, "--duration", "0.2"],
        ]
        .concat());
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}"
        );
    }
}

/// `bench --pipeline`: echo and http with several requests in flight per
/// connection against `serve`, every byte checked and the depth reported;
/// a depth of 0 or pipelining accept connections is refused.
#[test]
fn bench_pipeline_keeps_requests_in_flight() {
    for mode in ["echo", "http"] {
        let server = Server::start(mode, &[]);
        let addr = server.addr.to_string();
        let out = run(&[
            "bench",
            mode,
            "--addr",
            &addr,
            "--pipeline",
            "8",
            "--conns",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(json["pipeline"].as_u64(), Some(8), "{json}");
        assert!(json["ops"].as_u64().is_some_and(|n| n > 0), "{json}");
        assert_eq!(json["errors"].as_u64(), Some(0), "{json}");
        assert_eq!(json["mismatches"].as_u64(), Some(0), "{json}");
        for args in [
            vec![mode, "--pipeline", "0"],
            vec!["accept", "--pipeline", "4"],
        ] {
            let out = run(&[
                &["bench"],
                &args[..],
                &["--addr", &addr, "--duration", "0.2"],
            ]
            .concat());
            assert!(!out.status.success(), "{args:?} was accepted");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("--pipeline"),
                "{args:?}"
            );
        }
    }
}

/// `bench --sweep`: ringnet on io_uring with its defaults and with each
/// chosen option alone, every run checked, each option's ratio to the
/// defaults given; an unknown option is refused, naming the known ones.
#[test]
fn bench_sweep_compares_options_with_the_defaults() {
    let out = run(&[
        "bench",
        "--sweep",
        "echo",
        "--sweep-options",
        "huge-pages,accept-direct",
        "--runs",
        "1",
        "--conns",
        "4",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let options = json["options"].as_array().expect("options");
    let names: Vec<&str> = options
        .iter()
        .filter_map(|o| o["option"].as_str())
        .collect();
    assert_eq!(names, ["defaults", "huge-pages", "accept-direct"]);
    // Each round's run shows the server's CPU per operation as it goes.
    let progress = String::from_utf8_lossy(&out.stderr);
    let run_lines: Vec<&str> = progress
        .lines()
        .filter(|l| l.trim_start().starts_with("run "))
        .collect();
    assert_eq!(run_lines.len(), 3, "{progress}");
    // In µs to two decimals: rounds differ by less than a table's figure.
    for line in &run_lines {
        let figure = line
            .split("server CPU/op ")
            .nth(1)
            .unwrap_or_else(|| panic!("no CPU/op in {line:?}"));
        let (us, unit) = figure.split_once(' ').expect("a figure and its unit");
        assert_eq!(unit.trim(), "µs", "{line}");
        assert_eq!(us.split_once('.').map(|(_, d)| d.len()), Some(2), "{line}");
        assert!(us.parse::<f64>().is_ok_and(|v| v > 0.0), "{line}");
    }
    for o in options {
        assert!(o["ratio_to_defaults"].as_f64().is_some(), "{o}");
        for r in o["runs"].as_array().expect("runs") {
            assert!(r["ops"].as_u64().is_some_and(|n| n > 0), "{r}");
            assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
            assert_eq!(r["mismatches"].as_u64(), Some(0), "{r}");
        }
    }
    let out = run(&["bench", "--sweep", "echo", "--sweep-options", "turbo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("turbo") && err.contains("sqpoll"), "{err}");
}

/// `bench --rates`: a row per rate, each held against `serve echo`, every
/// latency percentile there; JSON gives one run per rate.
#[test]
fn bench_rates_gives_a_row_per_rate() {
    let server = Server::start("echo", &[]);
    let addr = server.addr.to_string();
    let args = |json: bool| {
        let mut a = vec![
            "bench",
            "echo",
            "--addr",
            &addr,
            "--rates",
            "500,1500",
            "--conns",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ];
        if json {
            a.push("--json");
        }
        run(&a)
    };
    let out = args(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in ["asked/s", "p99.99", "max"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.trim_start().starts_with("500 ") || l.trim_start().starts_with("1500 "))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows.iter().all(|r| r.contains(" yes ")), "{table}");
    let out = args(true);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let runs = json.as_array().expect("an array");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["target_rate"].as_f64(), Some(1500.0));
}

/// `bench --report FILE.html`: one self-contained file (nothing fetched)
/// with the percentile plot and the throughput plot, a line per rate with
/// `--rates`, and the figures table.
#[test]
fn bench_report_is_a_self_contained_html_plot() {
    let server = Server::start("echo", &[]);
    let addr = server.addr.to_string();
    let dir = std::env::temp_dir().join(format!("ringnet-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("rates.html");
    let out = run(&[
        "bench",
        "echo",
        "--addr",
        &addr,
        "--rates",
        "500,1000",
        "--conns",
        "4",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--report",
        &path.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&path).expect("the report");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(html.starts_with("<!DOCTYPE html>"));
    for needle in [
        "Latency by percentile",
        "Throughput over time",
        "99.999%",
        "500/s",
        "1000/s",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert_eq!(html.matches("<svg").count(), 2, "two plots");
    assert_eq!(
        html.matches("<polyline").count(),
        4,
        "a line per rate in each plot"
    );
    for outside in ["<script", "<link", "src=", "url("] {
        assert!(
            !html.contains(outside),
            "the report fetches something: {outside}"
        );
    }
}
