//! Measures the two recv buffer modes, [`BufferMode::Shared`] and
//! [`BufferMode::PerConnection`], on a loopback echo server with one worker,
//! to choose the default from figures:
//!
//! 1. Memory: in a fresh child process per mode (this program re-executed
//!    with `--child-memory <mode>`), the server process's RSS (from
//!    `/proc/self/smaps_rollup`) when idle, after N client connections are
//!    open and idle, and after each of them made one 64-byte echo round trip.
//!    The clients live in the same process, but their sockets are kernel
//!    memory, not RSS.
//! 2. Isolation: 10 clients doing 64-byte ping-pong for S seconds, once
//!    alone ("quiet") and once while one more client floods the server with
//!    256 KiB writes ("flood"), reading the echo back on a second thread.
//!    Reports the 10 clients' round trips/s and p50/p99/max latency, and the
//!    flood's echoed MiB/s.
//!
//! Run: `cargo run --release --example buffer_modes -- [--conns N] [--secs S]`
//! (defaults N = 4000, S = 5). N idle connections need about 2 N + 100 open
//! files.

use std::error::Error;
use std::io::ErrorKind::{TimedOut, WouldBlock};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringnet::{Backend, BufferMode, Config, Conn, Engine, Handler, Stats};

/// The server: every byte received is sent back.
struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

type Res<T> = Result<T, Box<dyn Error>>;

const MODES: [(&str, BufferMode); 2] = [
    ("shared", BufferMode::Shared),
    ("per-conn", BufferMode::PerConnection),
];
const PINGERS: usize = 10;
const MSG: usize = 64;
const CHUNK: usize = 256 * 1024;

fn main() -> Res<()> {
    let (mut conns, mut secs, mut child) = (4000usize, 5u64, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--conns" => conns = value()?.parse()?,
            "--secs" => secs = value()?.parse()?,
            "--child-memory" => child = Some(value()?),
            _ => return Err(format!("unknown {a:?}; usage: [--conns N] [--secs S]").into()),
        }
    }
    if let Some(name) = child {
        let mode = MODES.iter().find(|m| m.0 == name).ok_or("unknown mode")?.1;
        return child_memory(mode, conns);
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let d = Config::default();
    let (k, bs, bc, cbc) = (kernel.trim(), d.buf_size, d.buf_count, d.conn_buf_count);
    println!("ringnet buffer modes: io_uring backend, kernel {k}, {cpus} CPUs, workers=1");
    println!("buf_size={bs}, buf_count={bc} (shared ring), conn_buf_count={cbc}");
    println!("\nmemory: server RSS, {conns} conns, fresh process per mode");
    println!("(B/... columns: RSS growth over the idle server, divided by {conns})");
    println!(
        "{:<9}{:>13}{:>13}{:>14}{:>13}{:>14}",
        "mode", "idle RSS KiB", "open/groups", "+N idle KiB", "B/idle conn", "B/conn 1msg"
    );
    for (name, _) in MODES {
        let [idle, open, msg, c, g] = run_child(name, conns)?[..] else {
            return Err("bad MEM line".into());
        };
        let n = conns.max(1) as u64;
        let (grown, grown_msg) = (open.saturating_sub(idle), msg.saturating_sub(idle));
        let og = format!("{c}/{g}");
        println!(
            "{name:<9}{:>13}{og:>13}{:>14}{:>13}{:>14}",
            idle / 1024,
            grown / 1024,
            grown / n,
            grown_msg / n
        );
    }
    println!("\n{PINGERS} clients of {MSG}-byte ping-pong for {secs} s, workers=1");
    println!(
        "{:<9}{:<6}{:>9}{:>9}{:>9}{:>10}{:>12}{:>9}{:>7}",
        "mode", "load", "rt/s", "p50 us", "p99 us", "max us", "flood MiB/s", "enobufs", "errors"
    );
    for (name, mode) in MODES {
        for flood in [false, true] {
            println!("{name:<9}{}", isolation(mode, secs, flood)?);
        }
    }
    Ok(())
}

/// An echo engine on a free loopback port with one worker; the buffer modes
/// exist only on io_uring, so any other backend is an error.
fn start(mode: BufferMode) -> Res<Engine> {
    let cfg = Config {
        listeners: vec![ringnet::listener::ListenerSpec::bind(
            "127.0.0.1:0".parse::<std::net::SocketAddr>()?,
        )],
        workers: 1,
        buffers: mode,
        ..Config::default()
    };
    let engine = Engine::start(cfg, |_| Echo)?;
    match engine.backend() {
        Backend::Uring => Ok(engine),
        other => Err(format!("engine runs on {other}, not io_uring").into()),
    }
}

fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Resident set of this process in bytes (smaps_rollup walks the page tables,
/// so it is exact, unlike the batched counters behind statm).
fn rss_bytes() -> Res<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup")?;
    let line = s.lines().find_map(|l| l.strip_prefix("Rss:"));
    let kib = line.ok_or("no Rss line")?.trim().trim_end_matches(" kB");
    Ok(kib.parse::<u64>()? * 1024)
}

/// Poll the engine's counters until `f` holds, for at most 30 s.
fn wait_for(engine: &Engine, f: impl Fn(&Stats) -> bool) -> Res<Stats> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = engine.stats();
        if f(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!("engine never reached the expected state: {s:?}").into());
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The child's side of part 1; prints `MEM idle open msg conns groups`
/// (RSS bytes idle, with N idle connections, after one message each; then
/// the engine's open connection and per-connection ring counts).
fn child_memory(mode: BufferMode, n: usize) -> Res<()> {
    let engine = start(mode)?;
    let addr = engine.local_addr();
    let settle = || thread::sleep(Duration::from_millis(200));
    settle();
    let idle = rss_bytes()?;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        if i % 256 == 0 {
            // Keep the accept backlog short, so no SYN is dropped and retried.
            wait_for(&engine, |s| s.accepted as usize + 512 >= i)?;
        }
        clients.push(connect(addr)?);
    }
    let st = wait_for(&engine, |s| s.open as usize == n)?;
    settle();
    let open = rss_bytes()?;
    let mut buf = [0u8; MSG];
    for c in &mut clients {
        c.write_all(&[7u8; MSG])?;
        c.read_exact(&mut buf)?;
    }
    settle();
    let msg = rss_bytes()?;
    println!("MEM {idle} {open} {msg} {} {}", st.open, st.groups_in_use);
    drop(clients);
    engine.shutdown()?;
    Ok(())
}

/// Run this program again for part 1 and return the numbers of its `MEM` line.
fn run_child(name: &str, n: usize) -> Res<Vec<u64>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child-memory", name, "--conns", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            return Err(format!("memory child for {name} timed out").into());
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (mut out, stdout) = (String::new(), child.stdout.take());
    stdout.ok_or("no stdout")?.read_to_string(&mut out)?;
    if !status.success() {
        return Err(format!("memory child for {name} failed: {status}").into());
    }
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("MEM "))
        .ok_or("no MEM line")?;
    Ok(line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}

/// Nearest-rank percentile of a sorted slice.
fn pct(v: &[u64], p: f64) -> u64 {
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1)).copied().unwrap_or(0)
}

/// Run `op` on a new thread until `stop` is set or it fails other than by
/// timing out; `op` returns a byte count to add to `total`.
fn spawn_loop<F>(stop: Arc<AtomicBool>, total: Arc<AtomicU64>, mut op: F) -> JoinHandle<()>
where
    F: FnMut() -> io::Result<usize> + Send + 'static,
{
    thread::spawn(move || {
        while !stop.load(Relaxed) {
            match op() {
                Ok(0) => break,
                Ok(n) => drop(total.fetch_add(n as u64, Relaxed)),
                Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => {}
                Err(_) => break,
            }
        }
    })
}

/// Part 2 for one mode: the pingers for `secs`, with or without the flood.
/// Returns the table row after the mode name.
fn isolation(mode: BufferMode, secs: u64, flood: bool) -> Res<String> {
    let engine = start(mode)?;
    let addr = engine.local_addr();
    let mut pingers = Vec::new();
    for _ in 0..PINGERS {
        let mut s = connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(&[1u8; MSG])?;
        s.read_exact(&mut [0u8; MSG])?;
        pingers.push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    if flood {
        let (mut w, chunk) = (connect(addr)?, vec![0x5au8; CHUNK]);
        let (mut r, mut buf) = (w.try_clone()?, vec![0u8; CHUNK]);
        w.set_write_timeout(Some(Duration::from_millis(200)))?;
        r.set_read_timeout(Some(Duration::from_millis(200)))?;
        let (s, e) = (stop.clone(), echoed.clone());
        flooders.push(spawn_loop(s, Arc::default(), move || w.write(&chunk)));
        flooders.push(spawn_loop(stop.clone(), e, move || r.read(&mut buf)));
        thread::sleep(Duration::from_millis(300)); // let the flood ramp up
    }
    let (before, bytes0, t0) = (engine.stats(), echoed.load(Relaxed), Instant::now());
    let deadline = t0 + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for mut s in pingers {
        handles.push(thread::spawn(move || {
            let (msg, mut buf, mut lat) = ([3u8; MSG], [0u8; MSG], Vec::new());
            while Instant::now() < deadline {
                let t = Instant::now();
                let rt = s.write_all(&msg).and_then(|()| s.read_exact(&mut buf));
                if rt.is_err() {
                    return (lat, true); // error or 2 s without an answer
                }
                lat.push(t.elapsed().as_nanos() as u64);
            }
            (lat, false)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for h in handles {
        let (l, failed) = h.join().map_err(|_| "pinger panicked")?;
        lat.extend(l);
        errors += usize::from(failed);
    }
    let secs = t0.elapsed().as_secs_f64();
    let (after, flood_bytes) = (engine.stats(), echoed.load(Relaxed) - bytes0);
    stop.store(true, Relaxed);
    for h in flooders {
        h.join().map_err(|_| "flood thread panicked")?;
    }
    engine.shutdown()?;
    lat.sort_unstable();
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    let mibs = match flood {
        true => format!("{:.1}", flood_bytes as f64 / secs / 1048576.0),
        false => "-".into(),
    };
    Ok(format!(
        "{:<6}{:>9.0}{:>9}{:>9}{:>10}{:>12}{:>9}{:>7}",
        if flood { "flood" } else { "quiet" },
        lat.len() as f64 / secs,
        us(pct(&lat, 50.0)),
        us(pct(&lat, 99.0)),
        us(lat.last().copied().unwrap_or(0)),
        mibs,
        after.enobufs - before.enobufs,
        errors
    ))
}
