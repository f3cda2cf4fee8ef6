//! The `ringnet` command: `serve` runs a server, `probe` reports what this
//! kernel's io_uring supports.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ringnet::framing::Framing;
use ringnet::message::Framed;
use ringnet::uring::probe::ProbeReport;
use ringnet::{app, BackendChoice, BufferMode, Config, Engine, ListenerMode};

#[derive(Parser)]
#[command(name = "ringnet", version, about = "TCP server engine on io_uring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on an address until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Load generator: drive a server and measure it (see `ringnet bench --help`).
    Bench(BenchArgs),
    /// The tokio echo server used as the reference in `bench --compare`.
    #[command(hide = true)]
    ServeTokio {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7000")]
        addr: SocketAddr,
        /// Pin the runtime thread to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Report the kernel version and which io_uring features work here.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Echo every byte back.
    Echo,
    /// Minimal HTTP/1.1: 200 OK, "Hello, World!", keep-alive, pipelining.
    Http,
    /// Echo length-prefixed frames (4-byte big-endian length; 8 MiB limit).
    FramedEcho,
    /// Echo lines (`\n`, a trailing `\r` stripped; 64 KiB limit).
    LineEcho,
    /// Line chat: every line goes to every other client (and to --peer).
    Chat,
}

#[derive(Clone, Copy, ValueEnum)]
enum Listener {
    /// One SO_REUSEPORT listener per worker.
    Reuseport,
    /// One listener for all workers.
    Shared,
}

#[derive(Clone, Copy, ValueEnum)]
enum Buffers {
    /// One buffer ring per worker.
    Shared,
    /// A buffer ring per connection.
    PerConn,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// What to serve.
    #[arg(value_enum)]
    mode: Mode,
    /// Address to listen on: HOST:PORT, [V6ADDR]:PORT or NAME:PORT (port 0
    /// picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_endpoint)]
    addr: SocketAddr,
    /// With `echo`: serve UDP echo instead of TCP.
    #[arg(long)]
    udp: bool,
    /// Print the counters every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,
    /// At most this many connections at once (0: no limit); more are
    /// accepted and closed at once.
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for connections to drain.
    #[arg(long, default_value_t = Config::default().shutdown_timeout.as_secs_f64())]
    shutdown_timeout: f64,
    /// With `chat`: another chat node to join (kept connected).
    #[arg(long, value_parser = parse_endpoint)]
    peer: Option<SocketAddr>,
    /// Backend: auto (io_uring if it works here, else epoll), uring, epoll.
    /// The environment variable RINGNET_BACKEND overrides it.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// Worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Pin workers to these CPUs (comma-separated; worker i gets the i-th,
    /// cycling).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// How workers share the port: `reuseport` (one SO_REUSEPORT listener
    /// per worker, balanced by the kernel) or `shared` (one listener).
    #[arg(long, value_enum, default_value = "reuseport")]
    listener: Listener,
    /// Where recv buffers come from.
    #[arg(long, value_enum, default_value = "shared")]
    buffers: Buffers,
    /// Buffers in each worker's shared ring (power of two).
    #[arg(long, default_value_t = Config::default().buf_count)]
    buf_count: u16,
    /// Size of each buffer in bytes.
    #[arg(long, default_value_t = Config::default().buf_size)]
    buf_size: u32,
    /// Buffers in each connection's ring with --buffers per-conn.
    #[arg(long, default_value_t = Config::default().conn_buf_count)]
    conn_buf_count: u16,
    /// Submission queue entries per ring.
    #[arg(long, default_value_t = Config::default().sq_entries)]
    sq_entries: u32,
    /// Registered-descriptor table size per ring (0: plain descriptors).
    #[arg(long, default_value_t = Config::default().fixed_files)]
    fixed_files: u32,
    /// Seconds a graceful close waits for the peer after shutting down the
    /// write side.
    #[arg(long, default_value_t = Config::default().linger.as_secs_f64())]
    linger: f64,
    /// Receive with bundles (several buffers per completion; Linux 6.10).
    #[arg(long)]
    recv_bundle: bool,
    /// Use SEND_ZC for sends of at least this many bytes (0: never).
    #[arg(long, default_value_t = Config::default().send_zc_threshold)]
    send_zc_threshold: usize,
    /// Do not use SINGLE_ISSUER + DEFER_TASKRUN (start from COOP_TASKRUN).
    #[arg(long)]
    no_defer_taskrun: bool,
    /// Batched waiting (io_uring, Linux 6.12): an idle worker waits up to
    /// this many microseconds for --wait-batch completions before it runs
    /// (0: wake on the first completion).
    #[arg(long, default_value_t = 0)]
    batch_wait_us: u64,
    /// Completions that end a batched wait early.
    #[arg(long, default_value_t = Config::default().wait_batch)]
    wait_batch: u32,
    /// Completion queue entries per ring.
    #[arg(long, default_value_t = Config::default().cq_entries)]
    cq_entries: u32,
}

/// An endpoint string, validated (missing port, bad port, empty host,
/// brackets) and resolved; the first address is used.
fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let ep = ringnet::Endpoint::parse(s).map_err(|e| e.to_string())?;
    let addrs = ep
        .resolve()
        .map_err(|e| format!("cannot resolve {s}: {e}"))?;
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse().map_err(|e: ringnet::Error| e.to_string())
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = Config {
        addr: a.addr,
        backend: a.backend,
        cpus: a.cpus,
        workers: a.workers,
        listener: match a.listener {
            Listener::Reuseport => ListenerMode::ReusePort,
            Listener::Shared => ListenerMode::Shared,
        },
        buffers: match a.buffers {
            Buffers::Shared => BufferMode::Shared,
            Buffers::PerConn => BufferMode::PerConnection,
        },
        buf_count: a.buf_count,
        buf_size: a.buf_size,
        conn_buf_count: a.conn_buf_count,
        sq_entries: a.sq_entries,
        cq_entries: a.cq_entries,
        defer_taskrun: !a.no_defer_taskrun,
        max_connections: a.max_connections,
        fixed_files: a.fixed_files,
        recv_bundle: a.recv_bundle,
        send_zc_threshold: a.send_zc_threshold,
        batch_wait: Duration::from_micros(a.batch_wait_us),
        wait_batch: a.wait_batch,
        linger: Duration::try_from_secs_f64(a.linger).map_err(|_| {
            anyhow!(
                "--linger must be a non-negative number of seconds, got {}",
                a.linger
            )
        })?,
        ..Config::default()
    };
    // Workers inherit the blocked mask, so the signals reach only sigwait.
    ringnet::block_stop_signals()?;
    if a.udp {
        if !matches!(a.mode, Mode::Echo) {
            bail!("--udp goes with `serve echo`");
        }
        let engine =
            ringnet::udp::engine::UdpEngine::start(cfg, |_| ringnet::udp::engine::UdpEcho)?;
        println!(
            "ringnet: serving udp-echo on {} ({} backend)",
            engine.local_addr(),
            engine.backend()
        );
        let sig = ringnet::wait_for_stop_signal()?;
        let s = engine.stats();
        eprintln!(
            "ringnet: signal {sig}, shutting down; {} datagrams in, {} out",
            s.datagrams_in, s.datagrams_out
        );
        engine.shutdown()?;
        return Ok(());
    }
    let engine = match a.mode {
        Mode::Echo => Engine::start(cfg, |_| app::echo::Echo)?,
        Mode::Http => Engine::start(cfg, |_| app::http::Http::default())?,
        Mode::FramedEcho => Engine::start(cfg, |_| {
            Framed::new(Framing::length_prefixed(), app::framed::MessageEcho)
        })?,
        Mode::LineEcho => Engine::start(cfg, |_| {
            Framed::new(Framing::line(), app::framed::MessageEcho)
        })?,
        Mode::Chat => {
            let chat = app::chat::Chat {
                peer: a.peer.map(|p| vec![p]),
            };
            Engine::start(cfg, move |_| Framed::new(Framing::line(), chat.clone()))?
        }
    };
    println!(
        "ringnet: serving {} on {} ({} backend, {} workers)",
        match a.mode {
            Mode::Echo => "echo",
            Mode::Http => "http",
            Mode::FramedEcho => "framed-echo",
            Mode::LineEcho => "line-echo",
            Mode::Chat => "chat",
        },
        engine.local_addr(),
        engine.backend(),
        engine.workers()
    );
    let every = match a.stats {
        Some(secs) => Some(
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow!("--stats must be a positive number of seconds, got {secs}")
                })?,
        ),
        None => None,
    };
    let sig = loop {
        match every {
            None => break ringnet::wait_for_stop_signal()?,
            Some(d) => match ringnet::wait_for_stop_signal_timeout(d)? {
                Some(sig) => break sig,
                None => print_stats(&engine),
            },
        }
    };
    let deadline = Duration::try_from_secs_f64(a.shutdown_timeout)
        .unwrap_or(Config::default().shutdown_timeout);
    eprintln!("ringnet: signal {sig}, shutting down (deadline {deadline:?})");
    let stats = engine.stats();
    let report = engine.shutdown_within(deadline)?;
    eprintln!(
        "ringnet: stopped in {:?}; {} connections open at the signal: {} closed gracefully, {} forced; accepted {}, refused {}, bytes in {}, out {}",
        report.elapsed,
        report.open_at_start,
        report.closed_gracefully,
        report.forced,
        stats.accepted,
        stats.refused,
        stats.bytes_in,
        stats.bytes_out
    );
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// echo, accept, hold or http.
    mode: ringnet::bench::Mode,
    /// Start the servers here (ringnet on io_uring and on epoll, and a tokio
    /// echo server) and compare them side by side.
    #[arg(long)]
    compare: bool,
    /// The server to drive (not with --compare): HOST:PORT or NAME:PORT.
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_endpoint)]
    addr: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds (hold: seconds to hold).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds an operation may wait before it counts as an error.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// The server's pid, for its CPU time per operation and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Pin the load to this CPU (with --compare: default 1).
    #[arg(long)]
    cpu: Option<usize>,
    /// With --compare: the CPU the servers are pinned to.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// With --compare: alternating runs per contender.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// With --compare: an extra argument for the io_uring server (repeat
    /// for several), e.g. --uring-arg=--fixed-files=16384.
    #[arg(long, allow_hyphen_values = true)]
    uring_arg: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let secs = |v: f64, what: &str| {
        Duration::try_from_secs_f64(v)
            .map_err(|_| anyhow!("--{what} must be a non-negative number of seconds"))
    };
    let mut opts = ringnet::bench::Options::new(a.mode, a.addr);
    opts.conns = a.conns;
    opts.size = a.size;
    opts.duration = secs(a.duration, "duration")?;
    opts.warmup = secs(a.warmup, "warmup")?;
    opts.op_timeout = secs(a.timeout, "timeout")?;
    opts.server_pid = a.pid;
    opts.cpu = a.cpu;
    if a.compare {
        let exe =
            std::env::current_exe().map_err(|e| anyhow!("cannot find the ringnet binary: {e}"))?;
        let load_cpu = a.cpu.unwrap_or(1);
        eprintln!(
            "ringnet bench --compare {}: servers pinned to CPU {}, load to CPU {load_cpu}, {} runs each",
            a.mode, a.server_cpu, a.runs
        );
        let cmp = ringnet::bench::compare::compare(
            &exe,
            &opts,
            a.runs,
            (a.server_cpu, load_cpu),
            &a.uring_arg,
        )?;
        if a.json {
            println!("{}", cmp.to_json());
        } else {
            print!("{}", cmp.to_table());
        }
        return Ok(());
    }
    let r = ringnet::bench::run(&opts)?;
    if a.json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.to_table());
    }
    if r.errors + r.mismatches > 0 {
        bail!("{} errors, {} mismatches", r.errors, r.mismatches);
    }
    Ok(())
}

/// `ringnet probe --json`: compact, keys in this order:
/// `{"kernel":"...","io_uring":{"ok":true,"errno":null,"reason":null},"features":[{"name":"...","supported":true,"since":"...","detail":"..."}]}`.
fn probe_json(report: &ProbeReport) -> serde_json::Value {
    let (ok, errno, reason) = match &report.uring {
        Ok(()) => (true, None, None),
        Err(e) => (false, Some(e.errno), Some(e.reason.as_str())),
    };
    let features: Vec<serde_json::Value> = report
        .features
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "supported": f.supported,
                "since": f.since,
                "detail": f.detail,
            })
        })
        .collect();
    serde_json::json!({
        "kernel": report.kernel,
        "io_uring": { "ok": ok, "errno": errno, "reason": reason },
        "features": features,
    })
}

/// One line of counters, per worker.
fn print_stats(engine: &Engine) {
    for (i, s) in engine.worker_stats().iter().enumerate() {
        println!(
            "stats w{i}: open {} accepted {} closed {} refused {} in {} out {} enobufs {} rearms {} backoffs {} cq-overflow {} stale {}",
            s.open, s.accepted, s.closed, s.refused, s.bytes_in, s.bytes_out, s.enobufs, s.recv_rearms, s.accept_backoffs, s.cq_overflows, s.stale
        );
    }
}

/// Send the library's log records to stderr: warnings and errors (such as
/// the epoll fallback) by default, `RUST_LOG` to change that (`off`,
/// `info`, `ringnet=debug`, ...). Warnings and errors read like the
/// command's own messages.
fn init_logger() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|out, record| match record.level() {
            log::Level::Error | log::Level::Warn => writeln!(out, "ringnet: {}", record.args()),
            level => writeln!(
                out,
                "ringnet: [{level} {}] {}",
                record.target(),
                record.args()
            ),
        })
        .init();
}

fn main() -> ExitCode {
    init_logger();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Bench(a) => bench(a),
        Cmd::ServeTokio { addr, cpu } => ringnet::reference::tokio_echo(addr, cpu, |bound| {
            println!("ringnet: serving tokio-echo on {bound} (tokio current-thread reference)");
        })
        .map_err(anyhow::Error::from),
        Cmd::Probe { json } => {
            let report = ringnet::uring::probe::probe();
            if json {
                println!("{}", probe_json(&report));
            } else {
                print!("{}", report.to_table());
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library's errors name their cause in their message.
            eprintln!("ringnet: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringnet::uring::probe::{Feature, SetupError};

    fn sample(uring: Result<(), SetupError>, features: Vec<Feature>) -> ProbeReport {
        ProbeReport {
            kernel: "6.18.0-test".to_owned(),
            uring,
            features,
        }
    }

    fn feature(name: &'static str, supported: bool, detail: &str) -> Feature {
        Feature {
            name,
            supported,
            detail: detail.to_owned(),
            since: "5.19",
        }
    }

    #[test]
    fn probe_json_has_the_exact_layout() {
        let report = sample(
            Ok(()),
            vec![
                feature("multishot accept", true, "ok"),
                feature("NODROP", false, "no"),
            ],
        );
        assert_eq!(
            probe_json(&report).to_string(),
            concat!(
                r#"{"kernel":"6.18.0-test","io_uring":{"ok":true,"errno":null,"reason":null},"#,
                r#""features":[{"name":"multishot accept","supported":true,"since":"5.19","detail":"ok"},"#,
                r#"{"name":"NODROP","supported":false,"since":"5.19","detail":"no"}]}"#
            )
        );
    }

    #[test]
    fn probe_json_reports_setup_errors() {
        let report = sample(
            Err(SetupError {
                errno: 1,
                reason: "blocked \"here\"".to_owned(),
            }),
            Vec::new(),
        );
        assert_eq!(
            probe_json(&report).to_string(),
            r#"{"kernel":"6.18.0-test","io_uring":{"ok":false,"errno":1,"reason":"blocked \"here\""},"features":[]}"#
        );
    }

    #[test]
    fn probe_json_escapes_strings() {
        let report = sample(
            Ok(()),
            vec![feature(
                "SQPOLL",
                false,
                "say \"hi\"\\ path\nnext\ttab\u{1}",
            )],
        );
        let json = probe_json(&report).to_string();
        assert!(
            json.contains(r#""detail":"say \"hi\"\\ path\nnext\ttab\u0001""#),
            "{json}"
        );
        assert!(!json.contains('\n'), "{json}");
    }
}
