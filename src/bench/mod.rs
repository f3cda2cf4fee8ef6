//! `ringnet bench`: the project's load generator.
//!
//! One client thread (optionally pinned to a CPU) drives `conns` connections
//! through one epoll set — the same instrument for every server it is
//! pointed at. Every byte that comes back is checked; a mismatch is counted
//! and shown, never hidden in a rate. Latency goes into an hdrhistogram; when
//! the server's pid is known, its CPU time (from /proc/PID/stat) gives the
//! server CPU per operation, and its RSS the memory per connection.
//!
//! [`compare`] starts the servers itself — ringnet on io_uring, on epoll, and
//! a tokio echo server as the reference users know — one pinned worker each,
//! and runs them alternately.

mod client;
mod hold;
pub mod html;
mod traffic;
mod wire;
pub use wire::tls_target;
pub mod compare;
pub mod procstat;
pub mod report;
pub mod sweep;

use crate::address::Address;
use std::io::{self, IsTerminal};
use std::time::Duration;

pub use client::pattern;
pub use report::{fmt_duration, RunResult};

/// What the load generator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Round trips of `size` bytes on `conns` connections, every byte checked.
    Echo,
    /// `conns` concurrent loops of connect, 16-byte exchange, reset.
    Accept,
    /// Open `conns` idle connections, hold them, then check each still echoes.
    Hold,
    /// Keep-alive `GET /` requests, status and body checked.
    Http,
}

impl Mode {
    /// What one operation is called.
    pub fn op(self) -> &'static str {
        match self {
            Mode::Echo => "round trip",
            Mode::Accept => "connection",
            Mode::Hold => "held conn",
            Mode::Http => "request",
        }
    }

    /// What the operation count is called.
    pub fn unit(self) -> &'static str {
        match self {
            Mode::Echo => "round trips",
            Mode::Accept => "connections",
            Mode::Hold => "held conns echoing",
            Mode::Http => "requests",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Echo => "echo",
            Mode::Accept => "accept",
            Mode::Hold => "hold",
            Mode::Http => "http",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "echo" => Ok(Mode::Echo),
            "accept" => Ok(Mode::Accept),
            "hold" => Ok(Mode::Hold),
            "http" => Ok(Mode::Http),
            other => Err(format!(
                "mode must be echo, accept, hold or http, got {other:?}"
            )),
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// The server: an IP address or a Unix socket.
    pub addr: Address,
    /// Concurrent connections.
    pub conns: usize,
    /// Echo message size in bytes.
    pub size: usize,
    /// Measured period (hold: how long to hold).
    pub duration: Duration,
    /// Unmeasured period before it (errors and mismatches in it still count).
    pub warmup: Duration,
    /// An operation (or connect) waiting longer than this is counted as an
    /// error and its connection replaced, so a server that loses a byte
    /// cannot hide in a lower rate.
    pub op_timeout: Duration,
    /// The server's pid, for its CPU time and RSS.
    pub server_pid: Option<u32>,
    /// Pin the load threads to these CPUs: thread `t` to `cpus[t %
    /// cpus.len()]`. Empty: no pinning.
    pub cpus: Vec<usize>,
    /// Load threads (echo, accept, http), each with its own share of the
    /// connections (and of an open-loop rate) and its own event loop, so
    /// the generator is not the bottleneck on a larger machine.
    pub threads: usize,
    /// Print a progress line every second (on a terminal).
    pub progress: bool,
    /// The body every http response must have (`None`: any body).
    pub http_body: Option<Vec<u8>>,
    /// Speak TLS to the server (`--tls`).
    pub tls: Option<crate::tls::TlsTarget>,
    /// Write the HdrHistogram interval log here (`--hdr-log`): one
    /// histogram of latencies (in nanoseconds) per second of the measured
    /// period, per load thread.
    pub hdr_log: Option<std::path::PathBuf>,
    /// Open loop (`--rate`, echo and http): this many requests per second
    /// over all connections, each on its own fixed schedule; a latency
    /// counts from the request's intended send time, so a stall shows in
    /// the percentiles as the users saw it. `None`: closed loop (each
    /// connection sends as soon as its last answer came).
    pub rate: Option<f64>,
    /// Requests in flight per connection (`--pipeline`, echo and http):
    /// each answer is matched to its request in order, and each latency
    /// counts from its own request's start. 1: one at a time.
    pub pipeline: usize,
}

impl Options {
    /// Defaults for `mode` against `addr`: 32 connections, 64 bytes, 5 s
    /// after 1 s of warm-up; progress when stderr is a terminal.
    pub fn new(mode: Mode, addr: impl Into<Address>) -> Options {
        Options {
            mode,
            addr: addr.into(),
            conns: 32,
            size: 64,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            op_timeout: Duration::from_secs(2),
            server_pid: None,
            cpus: Vec::new(),
            threads: 1,
            progress: std::io::stderr().is_terminal(),
            http_body: Some(b"Hello, World!".to_vec()),
            tls: None,
            rate: None,
            hdr_log: None,
            pipeline: 1,
        }
    }
}

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket or epoll call failed outside any one connection.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The options cannot work.
    #[error("{0}")]
    Usage(String),
    /// A server started for a comparison did not come up.
    #[error("server {name}: {detail}")]
    Server {
        /// The contender.
        name: String,
        /// What went wrong.
        detail: String,
    },
}

/// Run the load described by `opts` and measure it.
pub fn run(opts: &Options) -> Result<RunResult, BenchError> {
    if opts.conns == 0 {
        return Err(BenchError::Usage("--conns must be at least 1".into()));
    }
    if opts.mode == Mode::Echo && opts.size == 0 {
        return Err(BenchError::Usage("--size must be at least 1".into()));
    }
    if let Some(rate) = opts.rate {
        if !matches!(opts.mode, Mode::Echo | Mode::Http) {
            return Err(BenchError::Usage("--rate goes with echo and http".into()));
        }
        if !(rate.is_finite() && rate > 0.0) {
            return Err(BenchError::Usage(format!(
                "--rate must be a positive number of requests per second, got {rate}"
            )));
        }
    }
    if opts.pipeline == 0 {
        return Err(BenchError::Usage("--pipeline must be at least 1".into()));
    }
    if opts.pipeline > 1 && !matches!(opts.mode, Mode::Echo | Mode::Http) {
        return Err(BenchError::Usage(
            "--pipeline goes with echo and http".into(),
        ));
    }
    let threads = opts.threads.max(1);
    if threads > opts.conns {
        return Err(BenchError::Usage(format!(
            "--threads ({threads}) must not exceed --conns ({})",
            opts.conns
        )));
    }
    if threads > 1 && opts.mode == Mode::Hold {
        return Err(BenchError::Usage(
            "--threads goes with echo, accept and http".into(),
        ));
    }
    let pin = |t: usize| (!opts.cpus.is_empty()).then(|| opts.cpus[t % opts.cpus.len()]);
    if threads > 1 {
        return run_threads(opts, threads, &pin);
    }
    if let Some(cpu) = pin(0) {
        crate::sys::pin_current_thread(cpu)?;
    }
    let sample = || opts.server_pid.and_then(|p| procstat::sample(p).ok());
    if opts.mode == Mode::Hold {
        let start = sample();
        let out = hold::run_hold(opts)?;
        let end = sample();
        return Ok(RunResult {
            mode: opts.mode,
            conns: opts.conns,
            size: client::SMALL,
            elapsed: opts.duration,
            ops: out.tally.ops,
            errors: out.tally.errors,
            mismatches: out.tally.mismatches,
            bytes_verified: out.tally.bytes_verified,
            latency: out.tally.latency,
            server_cpu: start.zip(end).map(|(a, b)| b.cpu.saturating_sub(a.cpu)),
            server_user_cpu: start.zip(end).map(|(a, b)| b.user.saturating_sub(a.user)),
            server_rss_before: out.rss.map(|r| r.0),
            server_rss_after: out.rss.map(|r| r.1),
            target_rate: None,
            pipeline: 1,
            throughput: Vec::new(),
        });
    }
    // Server CPU is read when the measured period starts and when it ends.
    let mut at_start = None;
    let progress = opts.progress;
    let mut intervals = Intervals::default();
    let mut on_tick = |t: &mut client::Tally, measured: Duration| {
        intervals.tick(t, measured);
        if progress {
            let secs = measured.as_secs_f64();
            let rate = if secs > 0.0 { t.ops as f64 / secs } else { 0.0 };
            eprint!(
                "\r  {secs:>5.1} s  {rate:>10.0} {}/s  errors {}   ",
                opts.mode.unit(),
                t.errors + t.mismatches
            );
        }
    };
    let (tally, elapsed) = traffic::run_traffic(opts, &mut || at_start = sample(), &mut on_tick)?;
    if progress {
        eprintln!();
    }
    let end = sample();
    let logs = [(None, intervals.done)];
    finish(opts, tally, elapsed, (at_start, end), &logs)
}

/// [`run`] on `threads` load threads: each runs its share of the
/// connections (and of an open-loop rate) in its own event loop, pinned by
/// `pin`; their counters and latency histograms are merged. The server's
/// CPU is read when the first thread's measured period starts and after
/// every thread has finished.
fn run_threads(
    opts: &Options,
    threads: usize,
    pin: &dyn Fn(usize) -> Option<usize>,
) -> Result<RunResult, BenchError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};
    let sample = || opts.server_pid.and_then(|p| procstat::sample(p).ok());
    // Relaxed: a progress figure, read for display only.
    let done = Arc::new(AtomicU64::new(0));
    let (start_tx, start_rx) = mpsc::channel();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share = opts.conns / threads + usize::from(t < opts.conns % threads);
            let sub = Options {
                conns: share,
                rate: opts.rate.map(|r| r * share as f64 / opts.conns as f64),
                threads: 1,
                cpus: Vec::new(),
                ..opts.clone()
            };
            let cpu = pin(t);
            let done = Arc::clone(&done);
            let start_tx = start_tx.clone();
            let pid = opts.server_pid;
            std::thread::spawn(
                move || -> io::Result<(client::Tally, Duration, Vec<Interval>)> {
                    if let Some(cpu) = cpu {
                        crate::sys::pin_current_thread(cpu)?;
                    }
                    let mut last = 0;
                    let mut on_measure = || {
                        if t == 0 {
                            let _ = start_tx.send(pid.and_then(|p| procstat::sample(p).ok()));
                        }
                    };
                    let mut intervals = Intervals::default();
                    let mut on_tick = |tally: &mut client::Tally, measured: Duration| {
                        intervals.tick(tally, measured);
                        let total = done
                            .fetch_add(tally.ops.saturating_sub(last), Ordering::Relaxed)
                            + tally.ops.saturating_sub(last);
                        last = tally.ops;
                        if t == 0 && sub.progress {
                            let secs = measured.as_secs_f64();
                            let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
                            eprint!(
                                "\r  {secs:>5.1} s  {rate:>10.0} {}/s ({threads} threads)   ",
                                sub.mode.unit()
                            );
                        }
                    };
                    let (tally, elapsed) =
                        traffic::run_traffic(&sub, &mut on_measure, &mut on_tick)?;
                    Ok((tally, elapsed, intervals.done))
                },
            )
        })
        .collect();
    drop(start_tx);
    let mut merged = client::Tally::new();
    let mut elapsed = Duration::ZERO;
    let mut failure = None;
    let mut logs = Vec::new();
    for (thread, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok((t, e, intervals))) => {
                logs.push((Some(format!("thread{thread}")), intervals));
                merged.ops += t.ops;
                merged.errors += t.errors;
                merged.mismatches += t.mismatches;
                merged.bytes_verified += t.bytes_verified;
                let _ = merged.latency.add(&t.latency);
                elapsed = elapsed.max(e);
            }
            Ok(Err(e)) => failure = Some(BenchError::from(e)),
            Err(_) => failure = Some(BenchError::Usage("a load thread panicked".into())),
        }
    }
    if opts.progress {
        eprintln!();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let at_start = start_rx.recv().ok().flatten();
    let end = sample();
    finish(opts, merged, elapsed, (at_start, end), &logs)
}

/// The result of a traffic run: write its HdrHistogram log (if asked) and
/// put its counters, latencies, server figures (`samples`: when the
/// measured period began and ended) and throughput together.
fn finish(
    opts: &Options,
    tally: client::Tally,
    elapsed: Duration,
    (at_start, end): (Option<procstat::ProcSample>, Option<procstat::ProcSample>),
    logs: &[(Option<String>, Vec<Interval>)],
) -> Result<RunResult, BenchError> {
    if let Some(path) = &opts.hdr_log {
        write_hdr_log(path, opts, logs)?;
    }
    Ok(RunResult {
        mode: opts.mode,
        conns: opts.conns,
        size: if opts.mode == Mode::Echo {
            opts.size
        } else {
            client::SMALL
        },
        elapsed,
        ops: tally.ops,
        errors: tally.errors,
        mismatches: tally.mismatches,
        bytes_verified: tally.bytes_verified,
        latency: tally.latency,
        server_cpu: at_start.zip(end).map(|(a, b)| b.cpu.saturating_sub(a.cpu)),
        server_user_cpu: at_start
            .zip(end)
            .map(|(a, b)| b.user.saturating_sub(a.user)),
        server_rss_before: at_start.map(|s| s.rss),
        server_rss_after: end.map(|s| s.rss),
        target_rate: opts.rate,
        pipeline: opts.pipeline,
        throughput: throughput(logs),
    })
}

/// Operations per second, second by second, over every load thread's
/// intervals.
fn throughput(logs: &[(Option<String>, Vec<Interval>)]) -> Vec<f64> {
    let mut per_second: Vec<f64> = Vec::new();
    for (_, intervals) in logs {
        for (i, (_, len, h)) in intervals.iter().enumerate() {
            if per_second.len() <= i {
                per_second.resize(i + 1, 0.0);
            }
            let secs = len.as_secs_f64();
            if secs > 0.0 {
                per_second[i] += h.len() as f64 / secs;
            }
        }
    }
    per_second
}

/// One second (or the last part of one) of a run's latencies.
type Interval = (Duration, Duration, hdrhistogram::Histogram<u64>);

/// The intervals of a run, as its ticks come.
#[derive(Default)]
struct Intervals {
    /// Where the current interval began, in the measured period.
    from: Duration,
    done: Vec<Interval>,
}

impl Intervals {
    /// A tick at `measured` into the measured period: the latencies since
    /// the last one make an interval (none during warm-up).
    fn tick(&mut self, t: &mut client::Tally, measured: Duration) {
        let h = t.take_interval();
        if measured > self.from {
            self.done.push((self.from, measured - self.from, h));
            self.from = measured;
        }
    }
}

/// Write the HdrHistogram interval log (`--hdr-log`): a header, then each
/// run's intervals (tagged with their load thread when there are several),
/// in the V2 compressed format HdrHistogram's tools read.
fn write_hdr_log(
    path: &std::path::Path,
    opts: &Options,
    logs: &[(Option<String>, Vec<Interval>)],
) -> io::Result<()> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let now = std::time::SystemTime::now();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(&format!(
            "ringnet bench {} against {}, {} connections; latencies in nanoseconds",
            opts.mode, opts.addr, opts.conns
        ))
        .with_start_time(now)
        .with_base_time(now)
        .with_max_value_divisor(1e6);
    let mut log = builder
        .begin_log_with(&mut file, &mut serializer)
        .map_err(io::Error::other)?;
    for (tag, intervals) in logs {
        for (from, len, h) in intervals {
            let tag = tag.as_deref().and_then(Tag::new);
            log.write_histogram(h, *from, *len, tag)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
    drop(log);
    std::io::Write::flush(&mut file)
}
