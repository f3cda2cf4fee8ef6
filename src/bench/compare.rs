//! `ringnet bench --compare`: the same load against ringnet on io_uring, on
//! epoll, and a tokio echo server, each started here as a child process with
//! one worker pinned to the server CPU, while the load runs pinned to
//! another. Contenders take turns, `runs` times, and the table shows the
//! median of each figure and the ratios io_uring/epoll and io_uring/tokio.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{fmt_duration, run, BenchError, Mode, Options, RunResult};

/// A server taking part in a comparison.
#[derive(Debug, Clone)]
pub struct Contender {
    /// Its column name.
    pub name: String,
    launch: Launch,
}

/// How a contender is started.
#[derive(Debug, Clone)]
enum Launch {
    /// This binary with these arguments; it prints the address it serves.
    Ringnet(Vec<String>),
    /// Any server: a shell command with `{port}` and `{addr}` filled in.
    Command(String),
}

impl Contender {
    /// `NAME=COMMAND` (`--against`): any server, started with `sh -c 'exec
    /// COMMAND'` (so its pid is the server's, for CPU and memory), with
    /// `{port}` and `{addr}` replaced by a free loopback port and
    /// `127.0.0.1:PORT`. The name must be new and the command name a port.
    pub fn against(spec: &str) -> Result<Contender, BenchError> {
        let (name, command) = spec.split_once('=').ok_or_else(|| {
            BenchError::Usage(format!("--against takes NAME=COMMAND, got {spec:?}"))
        })?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(BenchError::Usage(format!(
                "--against: {name:?} is not a name (one word)"
            )));
        }
        if !command.contains("{port}") && !command.contains("{addr}") {
            return Err(BenchError::Usage(format!(
                "--against {name}: the command must say where to listen with {{port}} or {{addr}}"
            )));
        }
        Ok(Contender {
            name: name.to_string(),
            launch: Launch::Command(command.to_string()),
        })
    }
}

/// The command line of ringnet serving `mode`'s server (echo, or http for
/// http) on `backend` with one worker pinned to `server_cpu`, then
/// `extra`; with `tls`, the certificate and key every contender serves.
fn ringnet_args(
    mode: Mode,
    server_cpu: usize,
    backend: &str,
    extra: &[String],
    tls: Option<&(PathBuf, PathBuf)>,
) -> Vec<String> {
    let serve_mode = if mode == Mode::Http { "http" } else { "echo" };
    let cpu = server_cpu.to_string();
    let mut args: Vec<String> = [
        "serve",
        serve_mode,
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--cpus",
        &cpu,
        "--backend",
        backend,
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().cloned());
    args.extend(tls_args(tls));
    args
}

/// `--tls-cert CERT --tls-key KEY`, when serving TLS.
fn tls_args(tls: Option<&(PathBuf, PathBuf)>) -> Vec<String> {
    tls.map_or_else(Vec::new, |(cert, key)| {
        vec![
            "--tls-cert".to_string(),
            cert.display().to_string(),
            "--tls-key".to_string(),
            key.display().to_string(),
        ]
    })
}

impl Contender {
    /// Ringnet on io_uring for `mode` (see [`contenders`]) with the extra
    /// serve `flags`, named `name`.
    pub(crate) fn uring(
        name: &str,
        mode: Mode,
        server_cpu: usize,
        flags: &[String],
        tls: Option<&(PathBuf, PathBuf)>,
    ) -> Contender {
        Contender {
            name: name.to_string(),
            launch: Launch::Ringnet(ringnet_args(mode, server_cpu, "uring", flags, tls)),
        }
    }
}

/// The contenders for `mode`: ringnet on io_uring and on epoll, and (except
/// for http) the tokio reference echo server. `uring_args` are added to the
/// io_uring contender's command line (to compare its tuning settings).
pub fn contenders(
    mode: Mode,
    server_cpu: usize,
    uring_args: &[String],
    tls: Option<&(PathBuf, PathBuf)>,
) -> Vec<Contender> {
    let mut all = vec![
        Contender::uring("io_uring", mode, server_cpu, uring_args, tls),
        Contender {
            name: "epoll".into(),
            launch: Launch::Ringnet(ringnet_args(mode, server_cpu, "epoll", &[], tls)),
        },
    ];
    if mode != Mode::Http {
        // Every contender serves TLS with the same certificate.
        let mut args: Vec<String> = ["serve-tokio", "--addr", "127.0.0.1:0", "--cpu"]
            .map(String::from)
            .to_vec();
        args.push(server_cpu.to_string());
        args.extend(tls_args(tls));
        all.push(Contender {
            name: "tokio".into(),
            launch: Launch::Ringnet(args),
        });
    }
    all
}

/// A running server child; terminated and reaped on drop.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Start `exe` with the contender's arguments and wait (up to 10 s) for
    /// its `... on ADDR ...` start-up line.
    pub fn start(exe: &Path, c: &Contender) -> Result<ServerProcess, BenchError> {
        let err = |detail: String| BenchError::Server {
            name: c.name.to_string(),
            detail,
        };
        let args = match &c.launch {
            Launch::Ringnet(args) => args,
            Launch::Command(command) => return ServerProcess::start_command(c, command),
        };
        let mut child = Command::new(exe)
            .args(args)
            .env_remove("RINGNET_BACKEND")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot start {}: {e}", exe.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
        let stderr = child.stderr.take().ok_or_else(|| err("no stderr".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The server's stderr is kept for the error message if it fails.
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            let _ = etx.send(text);
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if !line.is_empty() => line,
            _ => {
                drop(server);
                let said = erx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                return Err(err(format!("no start-up line; it said: {}", said.trim())));
            }
        };
        server.addr =
            parse_addr(&line).ok_or_else(|| err(format!("unexpected start-up line {line:?}")))?;
        Ok(server)
    }

    /// Start `--against`'s command on a free loopback port and wait (up to
    /// 10 s) until it accepts a connection there.
    fn start_command(c: &Contender, command: &str) -> Result<ServerProcess, BenchError> {
        let err = |detail: String| BenchError::Server {
            name: c.name.to_string(),
            detail,
        };
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| err(format!("no free port: {e}")))?;
            probe.local_addr().map_err(|e| err(e.to_string()))?
        };
        let command = command
            .replace("{port}", &addr.port().to_string())
            .replace("{addr}", &addr.to_string());
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run {command:?}: {e}")))?;
        let mut server = ServerProcess { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut said = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut said);
                }
                return Err(err(format!(
                    "{command:?} exited ({status}): {}",
                    said.trim()
                )));
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "{command:?} did not listen on {addr} within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            crate::sys::terminate(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in `ringnet: serving MODE on ADDR (...)`.
fn parse_addr(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)?
        .parse()
        .ok()
}

/// Contenders beyond the built-in ones, and which to run.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Servers given with `--against NAME=COMMAND`.
    pub against: Vec<Contender>,
    /// Run only these contenders (`--contenders`); `None`: all.
    pub only: Option<Vec<String>>,
}

/// Every run of every contender.
#[derive(Debug)]
pub struct Comparison {
    /// The mode compared.
    pub mode: Mode,
    /// Per contender, its runs in order.
    pub results: Vec<(String, Vec<RunResult>)>,
}

/// Run `template` (its address, pid and CPU are replaced) against every
/// contender, `runs` times in turn; servers on `server_cpu`, load on
/// `load_cpu`. `exe` is the ringnet binary; `uring_args` go to the io_uring
/// contender.
pub fn compare(
    exe: &Path,
    template: &Options,
    runs: usize,
    (server_cpu, load_cpu): (usize, usize),
    uring_args: &[String],
    tls: Option<&(PathBuf, PathBuf)>,
    extra: &Extra,
) -> Result<Comparison, BenchError> {
    let mut contenders = contenders(template.mode, server_cpu, uring_args, tls);
    for c in &extra.against {
        if contenders.iter().any(|o| o.name == c.name) {
            return Err(BenchError::Usage(format!(
                "--against: the name {} is taken",
                c.name
            )));
        }
        contenders.push(c.clone());
    }
    if let Some(only) = &extra.only {
        if let Some(unknown) = only
            .iter()
            .find(|n| !contenders.iter().any(|c| &c.name == *n))
        {
            let known: Vec<&str> = contenders.iter().map(|c| c.name.as_str()).collect();
            return Err(BenchError::Usage(format!(
                "--contenders: no contender {unknown:?} (there are {})",
                known.join(", ")
            )));
        }
        contenders.retain(|c| only.contains(&c.name));
    }
    let results = run_rounds(exe, &contenders, template, runs, load_cpu)?;
    Ok(Comparison {
        mode: template.mode,
        results,
    })
}

/// Run `template` (its address, pid and CPU are replaced) against every
/// contender in turn, `runs` rounds, load on `load_cpu`; each contender's
/// runs in order. Contenders run back to back within a round, so a round's
/// runs can be compared with each other on a machine whose speed drifts.
pub(crate) fn run_rounds(
    exe: &Path,
    contenders: &[Contender],
    template: &Options,
    runs: usize,
    load_cpu: usize,
) -> Result<Vec<(String, Vec<RunResult>)>, BenchError> {
    let mut results: Vec<(String, Vec<RunResult>)> = contenders
        .iter()
        .map(|c| (c.name.clone(), Vec::new()))
        .collect();
    for round in 1..=runs.max(1) {
        for (i, c) in contenders.iter().enumerate() {
            let server = ServerProcess::start(exe, c)?;
            let opts = Options {
                addr: server.addr.into(),
                server_pid: Some(server.pid()),
                cpus: vec![load_cpu],
                progress: false,
                ..template.clone()
            };
            let r = run(&opts)?;
            // The server's CPU per operation of each run, so the rounds
            // behind the medians (and the machine's speed flips) show; to
            // 10 ns, finer than a table's figure, as rounds differ by less.
            let cpu = r
                .cpu_per_op()
                .map(|c| format!("  server CPU/op {:.2} µs", c.as_secs_f64() * 1e6))
                .unwrap_or_default();
            eprintln!(
                "  run {round}/{runs} {:<9} {:>10.0} {}/s  p99 {}  errors {}{cpu}",
                c.name,
                r.ops_per_sec(),
                template.mode.unit(),
                fmt_duration(r.latency_at(0.99)),
                r.errors + r.mismatches
            );
            results[i].1.push(r);
            drop(server);
        }
    }
    Ok(results)
}

/// The median over rounds of `f(a's run) / f(b's run)` in the same round
/// (`None` when either has no such figure).
pub(crate) fn ratio_by_round(
    results: &[(String, Vec<RunResult>)],
    a: &str,
    b: &str,
    f: impl Fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    let runs = |n: &str| results.iter().find(|(name, _)| name == n).map(|(_, r)| r);
    let (x, y) = (runs(a)?, runs(b)?);
    median(
        x.iter()
            .zip(y)
            .filter_map(|(p, q)| {
                let (p, q) = (f(p)?, f(q)?);
                (q != 0.0).then(|| p / q)
            })
            .collect(),
    )
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// One row of the table: a figure's median per contender.
struct Row {
    name: String,
    values: Vec<Option<f64>>,
    fmt: fn(f64) -> String,
}

impl Comparison {
    fn rows(&self) -> Vec<Row> {
        let pick = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<Option<f64>> {
            self.results
                .iter()
                .map(|(_, runs)| median(runs.iter().filter_map(f).collect()))
                .collect()
        };
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let fmt_us = |v: f64| fmt_duration(Duration::from_nanos((v * 1e3) as u64));
        let first = if self.mode == Mode::Hold {
            // Hold counts connections that still echoed, not a rate.
            Row {
                name: self.mode.unit().to_string(),
                values: pick(&|r| Some(r.ops as f64)),
                fmt: |v| format!("{v:.0}"),
            }
        } else {
            Row {
                name: format!("{}/s", self.mode.unit()),
                values: pick(&|r| Some(r.ops_per_sec())),
                fmt: |v| format!("{v:.0}"),
            }
        };
        let mut rows = vec![
            first,
            Row {
                name: "p50".into(),
                values: pick(&|r| Some(us(r.latency_at(0.5)))),
                fmt: fmt_us,
            },
            Row {
                name: "p99".into(),
                values: pick(&|r| Some(us(r.latency_at(0.99)))),
                fmt: fmt_us,
            },
            Row {
                name: "p99.9".into(),
                values: pick(&|r| Some(us(r.latency_at(0.999)))),
                fmt: fmt_us,
            },
            Row {
                name: format!("server CPU / {}", self.mode.op()),
                values: pick(&|r| r.cpu_per_op().map(us)),
                fmt: fmt_us,
            },
            Row {
                name: "  of which user space".into(),
                values: pick(&|r| r.user_cpu_per_op().map(us)),
                fmt: fmt_us,
            },
            Row {
                name: "errors (all runs)".into(),
                values: self
                    .results
                    .iter()
                    .map(|(_, runs)| {
                        Some(runs.iter().map(|r| (r.errors + r.mismatches) as f64).sum())
                    })
                    .collect(),
                fmt: |v| format!("{v:.0}"),
            },
        ];
        if self.mode == Mode::Hold {
            rows.push(Row {
                name: "server RSS / conn (B)".into(),
                values: pick(&|r| r.rss_per_conn()),
                fmt: |v| format!("{v:.0}"),
            });
            rows.push(Row {
                name: "server RSS idle (KiB)".into(),
                values: pick(&|r| r.server_rss_before.map(|b| b as f64 / 1024.0)),
                fmt: |v| format!("{v:.0}"),
            });
        }
        rows
    }

    fn ratio(&self, row: &Row, other: &str) -> Option<f64> {
        let idx = |n: &str| self.results.iter().position(|(name, _)| *name == n);
        let a = row.values.get(idx("io_uring")?).copied().flatten()?;
        let b = row.values.get(idx(other)?).copied().flatten()?;
        (b != 0.0).then(|| a / b)
    }

    /// The contenders io_uring is compared with (its ratio columns): every
    /// other one, when io_uring ran.
    fn others(&self) -> Vec<&str> {
        let names: Vec<&str> = self.results.iter().map(|(n, _)| n.as_str()).collect();
        if !names.contains(&"io_uring") {
            return Vec::new();
        }
        names.into_iter().filter(|n| *n != "io_uring").collect()
    }

    /// Side-by-side medians with the ratios io_uring/X for every other
    /// contender X (value over value: above 1 is better for rates, below 1
    /// for latency and CPU).
    pub fn to_table(&self) -> String {
        let runs = self.results.first().map_or(0, |(_, r)| r.len());
        let depth = match self.results.first().and_then(|(_, r)| r.first()) {
            Some(r) if r.pipeline > 1 => format!(", pipeline {}", r.pipeline),
            _ => String::new(),
        };
        let mut out = format!(
            "{}{depth} — median of {runs} alternating runs per contender\n",
            self.mode
        );
        out.push_str(&format!("{:<26}", "figure"));
        for (n, _) in &self.results {
            out.push_str(&format!("{n:>14}"));
        }
        let others = self.others();
        for o in &others {
            out.push_str(&format!("{:>16}", format!("io_uring/{o}")));
        }
        out.push('\n');
        for row in self.rows() {
            out.push_str(&format!("{:<26}", row.name));
            for v in &row.values {
                out.push_str(&format!("{:>14}", v.map_or("-".into(), row.fmt)));
            }
            for o in &others {
                let r = self
                    .ratio(&row, o)
                    .map_or("-".into(), |x| format!("{x:.2}"));
                out.push_str(&format!("{r:>16}"));
            }
            out.push('\n');
        }
        let paired: Vec<String> = others
            .iter()
            .filter_map(|o| Some(format!("{:.3} io_uring/{o}", self.cpu_ratio_by_round(o)?)))
            .collect();
        if !paired.is_empty() {
            out.push_str(&format!(
                "server CPU / {}, median of each round's ratio: {}\n",
                self.mode.op(),
                paired.join(", ")
            ));
        }
        out
    }

    /// The median over rounds of io_uring's server CPU per operation over
    /// `other`'s in the same round. Contenders run back to back within a
    /// round, so on a machine whose speed flips between runs (a VM) this
    /// ratio is steadier than the ratio of the medians.
    pub fn cpu_ratio_by_round(&self, other: &str) -> Option<f64> {
        ratio_by_round(&self.results, "io_uring", other, |r| {
            r.cpu_per_op().map(|d| d.as_secs_f64())
        })
    }

    /// Every run of every contender, and the medians.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows()
            .iter()
            .map(|row| {
                serde_json::json!({
                    "figure": row.name,
                    "medians": self.results.iter().zip(&row.values).map(|((n, _), v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                    "io_uring_over": self.others().into_iter().map(|o| (o.to_string(), serde_json::json!(self.ratio(row, o)))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        serde_json::json!({
            "mode": self.mode.to_string(),
            "medians": rows,
            "cpu_ratio_by_round": self.others().into_iter().map(|o| (o.to_string(), serde_json::json!(self.cpu_ratio_by_round(o)))).collect::<serde_json::Map<_, _>>(),
            "runs": self.results.iter().map(|(n, runs)| (n.to_string(), serde_json::json!(runs.iter().map(RunResult::to_json).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests;
