//! The `ringnet` command: `serve` runs a server, `probe` reports what this
//! kernel's io_uring supports.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
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
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Backend: auto (io_uring if it works here, else epoll), uring, epoll.
    /// The environment variable RINGNET_BACKEND overrides it.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// Worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// One SO_REUSEPORT listener per worker instead of one shared listener.
    #[arg(long)]
    reuseport: bool,
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
    /// Do not use SINGLE_ISSUER + DEFER_TASKRUN (start from COOP_TASKRUN).
    #[arg(long)]
    no_defer_taskrun: bool,
    /// Completion queue entries per ring.
    #[arg(long, default_value_t = Config::default().cq_entries)]
    cq_entries: u32,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse().map_err(|e: ringnet::Error| e.to_string())
}

fn serve(a: ServeArgs) -> Result<(), ringnet::Error> {
    let cfg = Config {
        addr: a.addr,
        backend: a.backend,
        workers: a.workers,
        listener: if a.reuseport {
            ListenerMode::ReusePort
        } else {
            ListenerMode::Shared
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
        ..Config::default()
    };
    // Workers inherit the blocked mask, so the signals reach only sigwait.
    ringnet::block_stop_signals()?;
    let engine = match a.mode {
        Mode::Echo => Engine::start(cfg, |_| app::echo::Echo)?,
        Mode::Http => Engine::start(cfg, |_| app::http::Http::default())?,
    };
    println!(
        "ringnet: serving {} on {} ({} backend, {} workers)",
        match a.mode {
            Mode::Echo => "echo",
            Mode::Http => "http",
        },
        engine.local_addr(),
        engine.backend(),
        engine.workers()
    );
    let sig = ringnet::wait_for_stop_signal()?;
    eprintln!("ringnet: signal {sig}, shutting down");
    let stats = engine.stats();
    engine.shutdown()?;
    eprintln!(
        "ringnet: stopped; accepted {} connections, {} bytes in, {} bytes out",
        stats.accepted, stats.bytes_in, stats.bytes_out
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Probe { json } => {
            let report = ringnet::uring::probe::probe();
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringnet: {e}");
            ExitCode::FAILURE
        }
    }
}
