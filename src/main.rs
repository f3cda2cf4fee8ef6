//! The `ringnet` command: `serve` runs a server, `probe` reports what this
//! kernel's io_uring supports.

mod cli;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand};
use cli::{parse_address, parse_secs, Mode, ServeArgs};
use ringnet::message::Framed;
use ringnet::uring::probe::{ProbeReport, SocketLimits};
use ringnet::{app, Engine};

#[derive(Parser)]
#[command(name = "ringnet", version, about = "TCP server engine on io_uring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve on an address until Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Load generator: drive a server and measure it (see `ringnet bench --help`).
    Bench(Box<BenchArgs>),
    /// The tokio echo server used as the reference in `bench --compare`.
    #[command(hide = true)]
    ServeTokio {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7000")]
        addr: SocketAddr,
        /// Pin the runtime thread to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
        /// Serve TLS (tokio-rustls) with this certificate chain.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
    /// Report the kernel version and which io_uring features work here.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // Listening sockets a service manager passed (LISTEN_FDS, when
    // LISTEN_PID is this process; otherwise they are not ours to touch).
    let inherited = ringnet::listener::systemd_listeners()?;
    for (i, (name, _)) in inherited.iter().enumerate() {
        log::info!(
            "listening socket {} from the service manager{}",
            i + 3,
            name.as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    let cfg = a.config(inherited.into_iter().map(|(_, fd)| fd).collect())?;
    let tls = cfg.listeners.iter().find_map(|l| l.tls.clone());
    // Workers inherit the blocked mask, so the signals reach only sigwait.
    ringnet::block_stop_signals()?;
    if a.udp {
        if !matches!(a.mode, Mode::Echo) {
            bail!("--udp goes with `serve echo`");
        }
        if cfg.listeners.iter().any(|l| l.tls.is_some()) {
            bail!("--tls-cert: TLS is for TCP listeners, not --udp");
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
        Mode::FramedEcho => {
            let frames = a.frames();
            Engine::start(cfg, move |_| Framed::new(frames, app::framed::MessageEcho))?
        }
        Mode::LineEcho => {
            let lines = a.lines();
            Engine::start(cfg, move |_| Framed::new(lines, app::framed::MessageEcho))?
        }
        Mode::Chat => {
            let chat = app::chat::Chat {
                peer: a.peer.clone().map(|p| vec![p]),
            };
            let lines = a.lines();
            Engine::start(cfg, move |_| Framed::new(lines, chat.clone()))?
        }
    };
    let addrs: Vec<String> = engine.local_addrs().iter().map(|a| a.to_string()).collect();
    println!(
        "ringnet: serving {} on {} ({} backend, {} workers)",
        a.mode.name(),
        addrs.join(", "),
        engine.backend(),
        engine.workers()
    );
    let every = a.stats;
    let sig = loop {
        let sig = match every {
            None => ringnet::wait_for_stop_signal()?,
            Some(d) => match ringnet::wait_for_stop_signal_timeout(d)? {
                Some(sig) => sig,
                None => {
                    print_stats(&engine);
                    continue;
                }
            },
        };
        if sig != libc::SIGHUP {
            break sig;
        }
        // SIGHUP: read the certificate and key again; new handshakes use
        // them, and a bad file keeps the old ones.
        match (&tls, &a.tls_cert, &a.tls_key) {
            (Some(acceptor), Some(cert), Some(key)) => match acceptor.reload(cert, key) {
                Ok(()) => eprintln!(
                    "ringnet: SIGHUP: TLS certificate reloaded from {}",
                    cert.display()
                ),
                Err(e) => eprintln!(
                    "ringnet: SIGHUP: TLS certificate not reloaded, the old one stays: {e}"
                ),
            },
            _ => eprintln!("ringnet: SIGHUP: nothing to reload (no TLS)"),
        }
    };
    let deadline = a.shutdown_timeout();
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
    /// Start ringnet on io_uring with its defaults and with each io_uring
    /// option on alone, in alternating rounds, and give each option's
    /// figures as ratios to the defaults (server CPU per operation; RSS per
    /// connection for hold).
    #[arg(long, conflicts_with = "compare")]
    sweep: bool,
    /// With --sweep: only these options (comma-separated: sqpoll,
    /// register-ring, huge-pages, buf-inc, fixed-send-buffers, fixed-files,
    /// accept-direct, recv-bundle, send-zc, batch-wait, coop-taskrun,
    /// per-conn-buffers).
    #[arg(long, value_delimiter = ',', requires = "sweep")]
    sweep_options: Vec<String>,
    /// The server to drive (not with --compare): HOST:PORT, NAME:PORT,
    /// unix:PATH or unix:@NAME.
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_address)]
    addr: ringnet::Address,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds (hold: seconds to hold).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Duration,
    /// Unmeasured seconds first.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs, allow_negative_numbers = true)]
    warmup: Duration,
    /// Seconds an operation may wait before it counts as an error.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs, allow_negative_numbers = true)]
    timeout: Duration,
    /// The server's pid, for its CPU time per operation and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Pin the load to this CPU, or with --threads to these CPUs
    /// (comma-separated: thread i to the i-th, cycling) (with --compare:
    /// default 1).
    #[arg(long, value_delimiter = ',')]
    cpu: Vec<usize>,
    /// Load threads, each with its own connections and event loop (echo,
    /// accept, http).
    #[arg(long, default_value_t = 1)]
    threads: usize,
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
    /// Open loop (echo, http): R requests per second over all connections,
    /// each connection on a fixed schedule; latency counts from each
    /// request's intended send time (no coordinated omission). Default:
    /// closed loop.
    #[arg(
        long,
        value_name = "R",
        allow_negative_numbers = true,
        conflicts_with = "rates"
    )]
    rate: Option<f64>,
    /// Open loop at each of these rates in turn (comma-separated), a row
    /// per rate: latency against load in one command.
    #[arg(
        long,
        value_name = "R1,R2,...",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    rates: Vec<f64>,
    /// Requests in flight per connection (echo, http): the next goes
    /// without waiting for the answers before it.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pipeline: usize,
    /// Speak TLS to the server (echo, accept, hold, http), verifying its
    /// certificate.
    #[arg(long)]
    tls: bool,
    /// With --tls: trust the CAs in this PEM file (default: the system's
    /// store).
    #[arg(long, value_name = "PEM", requires = "tls")]
    tls_ca: Option<std::path::PathBuf>,
    /// With --compare --tls: the certificate chain the servers it starts
    /// present.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// With --compare --tls: the key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// With --tls: the server name to verify and send as SNI.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "localhost",
        requires = "tls"
    )]
    tls_name: String,
    /// With --compare: another server to compare, NAME=COMMAND (repeat for
    /// several). The command is run with `sh -c 'exec COMMAND'`; `{port}`
    /// and `{addr}` in it become a free loopback port and 127.0.0.1:PORT.
    #[arg(long, value_name = "NAME=COMMAND")]
    against: Vec<String>,
    /// With --compare: run only these contenders (comma-separated names:
    /// io_uring, epoll, tokio, and the --against names).
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<String>,
    /// Write a self-contained HTML report here: the latency percentile
    /// distribution and the throughput over time, one line per run (the
    /// contenders with --compare, the rates with --rates).
    #[arg(long, value_name = "FILE.html")]
    report: Option<std::path::PathBuf>,
    /// Write the HdrHistogram interval log of the run here (a histogram of
    /// latencies per second, per load thread; HdrHistogram's tools read it).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let mut opts = ringnet::bench::Options::new(a.mode, a.addr);
    opts.conns = a.conns;
    opts.size = a.size;
    opts.duration = a.duration;
    opts.warmup = a.warmup;
    opts.op_timeout = a.timeout;
    opts.server_pid = a.pid;
    opts.cpus = a.cpu.clone();
    opts.threads = a.threads;
    opts.rate = a.rate;
    opts.pipeline = a.pipeline;
    opts.hdr_log = a.hdr_log.clone();
    if a.tls {
        opts.tls = Some(ringnet::bench::tls_target(a.tls_ca.clone(), &a.tls_name)?);
    }
    let server_tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => None,
    };
    // --compare and --sweep start the servers themselves: this binary, on
    // `--server-cpu`, the load on the first `--cpu` (default 1).
    let started_here = if a.compare || a.sweep {
        let how = if a.sweep { "--sweep" } else { "--compare" };
        if a.tls != server_tls.is_some() {
            bail!("{how} --tls needs --tls-cert and --tls-key for the servers it starts (and --tls-ca to trust them)");
        }
        let exe =
            std::env::current_exe().map_err(|e| anyhow!("cannot find the ringnet binary: {e}"))?;
        let load_cpu = a.cpu.first().copied().unwrap_or(1);
        eprintln!(
            "ringnet bench {how} {}: servers pinned to CPU {}, load to CPU {load_cpu}, {} rounds",
            a.mode, a.server_cpu, a.runs
        );
        Some((exe, load_cpu))
    } else {
        None
    };
    if let (true, Some((exe, load_cpu))) = (a.sweep, &started_here) {
        let (exe, load_cpu) = (exe.as_path(), *load_cpu);
        let only = (!a.sweep_options.is_empty()).then_some(a.sweep_options.as_slice());
        let sweep = ringnet::bench::sweep::sweep(
            exe,
            &opts,
            a.runs,
            (a.server_cpu, load_cpu),
            only,
            server_tls.as_ref(),
        )?;
        if a.json {
            println!("{}", sweep.to_json());
        } else {
            print!("{}", sweep.to_table());
        }
        return Ok(());
    }
    let extra = ringnet::bench::compare::Extra {
        against: a
            .against
            .iter()
            .map(|s| ringnet::bench::compare::Contender::against(s))
            .collect::<Result<_, _>>()?,
        only: (!a.contenders.is_empty()).then(|| a.contenders.clone()),
    };
    if !a.compare && (!extra.against.is_empty() || extra.only.is_some()) {
        bail!("--against and --contenders go with --compare");
    }
    if let Some((exe, load_cpu)) = &started_here {
        let (exe, load_cpu) = (exe.as_path(), *load_cpu);
        let cmp = ringnet::bench::compare::compare(
            exe,
            &opts,
            a.runs,
            (a.server_cpu, load_cpu),
            &a.uring_arg,
            server_tls.as_ref(),
            &extra,
        )?;
        if a.json {
            println!("{}", cmp.to_json());
        } else {
            print!("{}", cmp.to_table());
        }
        if let Some(path) = &a.report {
            // Each contender's median run by rate.
            let named: Vec<(String, &ringnet::bench::RunResult)> = cmp
                .results
                .iter()
                .filter_map(|(name, runs)| {
                    let mut sorted: Vec<&ringnet::bench::RunResult> = runs.iter().collect();
                    sorted.sort_by(|x, y| x.ops_per_sec().total_cmp(&y.ops_per_sec()));
                    sorted.get(sorted.len() / 2).map(|r| (name.clone(), *r))
                })
                .collect();
            let title = format!("ringnet bench --compare {}", a.mode);
            std::fs::write(path, ringnet::bench::html::report(&title, &named))?;
        }
        return Ok(());
    }
    if !a.rates.is_empty() {
        if a.compare {
            bail!("--rates goes with a server given by --addr (not with --compare)");
        }
        let mut rows = Vec::with_capacity(a.rates.len());
        for &rate in &a.rates {
            let r = ringnet::bench::run(&ringnet::bench::Options {
                rate: Some(rate),
                ..opts.clone()
            })?;
            rows.push(r);
        }
        if a.json {
            println!("{}", ringnet::bench::report::rates_json(&rows));
        } else {
            print!("{}", ringnet::bench::report::rates_table(&rows));
        }
        if let Some(path) = &a.report {
            let named: Vec<(String, &ringnet::bench::RunResult)> = rows
                .iter()
                .map(|r| (format!("{:.0}/s", r.target_rate.unwrap_or(0.0)), r))
                .collect();
            let title = format!("ringnet bench {} --rates", a.mode);
            std::fs::write(path, ringnet::bench::html::report(&title, &named))?;
        }
        let failed: u64 = rows.iter().map(|r| r.errors + r.mismatches).sum();
        if failed > 0 {
            bail!("{failed} errors and mismatches");
        }
        return Ok(());
    }
    let r = ringnet::bench::run(&opts)?;
    if a.json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.to_table());
    }
    if let Some(path) = &a.report {
        let title = format!("ringnet bench {} against {}", a.mode, opts.addr);
        std::fs::write(
            path,
            ringnet::bench::html::report(&title, &[(a.mode.to_string(), &r)]),
        )?;
    }
    if r.errors + r.mismatches > 0 {
        bail!("{} errors, {} mismatches", r.errors, r.mismatches);
    }
    Ok(())
}

/// `ringnet probe --json`: compact, keys in this order:
/// `{"kernel":"...","io_uring":{"ok":true,"errno":null,"reason":null},"features":[{"name":"...","supported":true,"since":"...","detail":"..."}],"socket_limits":{...}}`
/// (see [`socket_limits_json`]).
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
        "socket_limits": socket_limits_json(&report.socket_limits),
    })
}

/// `"socket_limits"` in `ringnet probe --json`, keys in this order:
/// `{"somaxconn":4096,"tcp_max_syn_backlog":512,"rmem_max":212992,"wmem_max":212992,"tcp_rmem":[4096,131072,6291456],"tcp_wmem":[4096,16384,4194304],"ip_local_port_range":[32768,60999],"nofile":{"soft":1024,"hard":524288},"tcp_syn_retries":6,"syn_connect_timeout_secs":127,"kernel_tls":{"available":false,"errno":2}}`.
/// A value that could not be read is `null`; so is an unlimited `nofile`
/// soft or hard limit.
fn socket_limits_json(l: &SocketLimits) -> serde_json::Value {
    serde_json::json!({
        "somaxconn": l.somaxconn,
        "tcp_max_syn_backlog": l.tcp_max_syn_backlog,
        "rmem_max": l.rmem_max,
        "wmem_max": l.wmem_max,
        "tcp_rmem": l.tcp_rmem,
        "tcp_wmem": l.tcp_wmem,
        "ip_local_port_range": l.ip_local_port_range,
        "nofile": l.nofile.map(|n| serde_json::json!({ "soft": n.soft, "hard": n.hard })),
        "tcp_syn_retries": l.tcp_syn_retries,
        "syn_connect_timeout_secs": l.syn_connect_timeout().map(|d| d.as_secs()),
        "kernel_tls": l.kernel_tls.map(|r| serde_json::json!({
            "available": r.is_ok(),
            "errno": r.err(),
        })),
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
        Cmd::Serve(a) => serve(*a),
        Cmd::Bench(a) => bench(*a),
        Cmd::ServeTokio {
            addr,
            cpu,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert.as_deref().zip(tls_key.as_deref());
            ringnet::reference::tokio_echo(addr, cpu, tls, |bound| {
                println!("ringnet: serving tokio-echo on {bound} (tokio current-thread reference)");
            })
            .map_err(anyhow::Error::from)
        }
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
    use ringnet::uring::probe::{Feature, FileLimit, SetupError};

    fn sample(uring: Result<(), SetupError>, features: Vec<Feature>) -> ProbeReport {
        ProbeReport {
            kernel: "6.18.0-test".to_owned(),
            uring,
            features,
            socket_limits: SocketLimits::default(),
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
                r#"{"name":"NODROP","supported":false,"since":"5.19","detail":"no"}],"#,
                r#""socket_limits":{"somaxconn":null,"tcp_max_syn_backlog":null,"rmem_max":null,"#,
                r#""wmem_max":null,"tcp_rmem":null,"tcp_wmem":null,"ip_local_port_range":null,"#,
                r#""nofile":null,"tcp_syn_retries":null,"syn_connect_timeout_secs":null,"kernel_tls":null}}"#
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
        let json = probe_json(&report).to_string();
        assert!(
            json.starts_with(
                r#"{"kernel":"6.18.0-test","io_uring":{"ok":false,"errno":1,"reason":"blocked \"here\""},"features":[],"socket_limits":{"#
            ),
            "{json}"
        );
    }

    #[test]
    fn socket_limits_json_has_the_exact_layout() {
        let limits = SocketLimits {
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(512),
            rmem_max: Some(212992),
            wmem_max: Some(212992),
            tcp_rmem: Some([4096, 131072, 6291456]),
            tcp_wmem: Some([4096, 16384, 4194304]),
            ip_local_port_range: Some([32768, 60999]),
            nofile: Some(FileLimit {
                soft: Some(1024),
                hard: None,
            }),
            tcp_syn_retries: Some(6),
            kernel_tls: Some(Err(libc::ENOENT)),
        };
        assert_eq!(
            socket_limits_json(&limits).to_string(),
            concat!(
                r#"{"somaxconn":4096,"tcp_max_syn_backlog":512,"rmem_max":212992,"wmem_max":212992,"#,
                r#""tcp_rmem":[4096,131072,6291456],"tcp_wmem":[4096,16384,4194304],"#,
                r#""ip_local_port_range":[32768,60999],"nofile":{"soft":1024,"hard":null},"#,
                r#""tcp_syn_retries":6,"syn_connect_timeout_secs":127,"kernel_tls":{"available":false,"errno":2}}"#
            )
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
