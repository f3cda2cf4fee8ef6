//! The arguments of `ringnet serve` and the value parsers every command's
//! flags share: durations in seconds, sizes in bytes, the backlog,
//! endpoints and the backend. A bad value is refused by clap with a message
//! naming the flag; nothing falls back to a default.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::ValueEnum;
use ringnet::framing::{Framing, DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE};
use ringnet::listener::ListenerSpec;
use ringnet::{Address, BackendChoice, BufferMode, Config, ListenerMode};

/// The longest duration a flag takes: one year.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    /// Echo every byte back.
    Echo,
    /// Minimal HTTP/1.1: 200 OK, "Hello, World!", keep-alive, pipelining.
    Http,
    /// Echo length-prefixed frames (4-byte big-endian length; --max-frame).
    FramedEcho,
    /// Echo lines (`\n`, a trailing `\r` stripped; --max-line).
    LineEcho,
    /// Line chat: every line goes to every other client (and to --peer).
    Chat,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
            Mode::FramedEcho => "framed-echo",
            Mode::LineEcho => "line-echo",
            Mode::Chat => "chat",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Listener {
    /// One SO_REUSEPORT listener per worker.
    Reuseport,
    /// One listener for all workers.
    Shared,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Buffers {
    /// One buffer ring per worker.
    Shared,
    /// A buffer ring per connection.
    PerConn,
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// What to serve.
    #[arg(value_enum)]
    pub(crate) mode: Mode,
    /// Address to listen on: HOST:PORT, [V6ADDR]:PORT, NAME:PORT (port 0
    /// picks a free port; the bound address is printed), unix:PATH (a Unix
    /// socket file, removed at exit) or unix:@NAME (an abstract Unix
    /// socket). Repeat it to listen on several at once [default:
    /// 127.0.0.1:7000, unless a service manager passed listening sockets
    /// with LISTEN_FDS].
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub(crate) addr: Vec<Address>,
    /// Serve TLS with this certificate chain (PEM; with --tls-key) on every
    /// listener.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: ECDSA, RSA or Ed25519).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// Require client certificates that chain to these CAs (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Seconds a TLS handshake may take [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, allow_negative_numbers = true, requires = "tls_cert")]
    tls_handshake_timeout: Option<Duration>,
    /// ALPN protocols to offer, in order of preference (comma-separated,
    /// e.g. h2,http/1.1); a client that offers none of them is refused.
    #[arg(long, value_delimiter = ',', requires = "tls_cert")]
    alpn: Vec<String>,
    /// With unix:PATH addresses: the socket file's mode, in octal (e.g.
    /// 660) [default: as the umask leaves it].
    #[arg(long, value_name = "OCTAL", value_parser = parse_unix_mode)]
    unix_mode: Option<u32>,
    /// With `echo`: serve UDP echo instead of TCP.
    #[arg(long)]
    pub(crate) udp: bool,
    /// Print the counters every SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, allow_negative_numbers = true)]
    pub(crate) stats: Option<Duration>,
    /// At most this many connections at once (0: no limit); more are
    /// accepted and closed at once.
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for connections to drain
    /// [default: 5].
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    shutdown_timeout: Option<Duration>,
    /// With `chat`: another chat node to join (kept connected): HOST:PORT,
    /// unix:PATH or unix:@NAME.
    #[arg(long, value_parser = parse_address)]
    pub(crate) peer: Option<Address>,
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
    /// `listen(2)` backlog (the kernel caps it at net.core.somaxconn, and
    /// says so once) [default: 1024].
    #[arg(long, value_parser = parse_backlog, allow_negative_numbers = true)]
    backlog: Option<i32>,
    /// Close a connection with no traffic for SECS seconds (default: never).
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, allow_negative_numbers = true)]
    idle_timeout: Option<Duration>,
    /// Close a connection whose partial message is not complete SECS
    /// seconds after its first byte (default: never).
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, allow_negative_numbers = true)]
    read_timeout: Option<Duration>,
    /// Close a connection whose queued output makes no progress for SECS
    /// seconds [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs, allow_negative_numbers = true)]
    write_timeout: Option<Duration>,
    /// SO_RCVBUF in bytes (K, M, G suffixes: KiB, MiB, GiB) for the
    /// listener and accepted sockets (default: the kernel's, autotuned).
    #[arg(long, value_name = "BYTES", value_parser = parse_buffer_size, allow_negative_numbers = true)]
    rcvbuf: Option<usize>,
    /// SO_SNDBUF in bytes (K, M, G suffixes) (default: the kernel's).
    #[arg(long, value_name = "BYTES", value_parser = parse_buffer_size, allow_negative_numbers = true)]
    sndbuf: Option<usize>,
    /// Leave TCP_NODELAY off on accepted sockets (Nagle's algorithm on).
    #[arg(long)]
    no_nodelay: bool,
    /// With an IPv6 address: IPv6 only (by default `[::]` also takes IPv4).
    #[arg(long)]
    v6only: bool,
    /// With `framed-echo`: the largest frame payload in bytes (K, M, G
    /// suffixes; at most 4 GiB - 1) [default: 8M].
    #[arg(long, value_name = "BYTES", value_parser = parse_frame_size, allow_negative_numbers = true)]
    max_frame: Option<usize>,
    /// With `line-echo` and `chat`: the longest line in bytes (K, M, G
    /// suffixes) [default: 64K].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_negative_numbers = true)]
    max_line: Option<usize>,
    /// Stop receiving from a connection with more than BYTES of output
    /// queued (K, M, G suffixes) [default: 1M].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_negative_numbers = true)]
    high_watermark: Option<usize>,
    /// Resume receiving once its queued output falls below BYTES; must be
    /// below --high-watermark [default: 256K, or a quarter of
    /// --high-watermark if that is less].
    #[arg(long, value_name = "BYTES", value_parser = parse_size, allow_negative_numbers = true)]
    low_watermark: Option<usize>,
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
    /// Accept straight into the registered-descriptor table (io_uring;
    /// needs --fixed-files): accepted connections get no plain descriptor.
    #[arg(long)]
    accept_direct: bool,
    /// Seconds a graceful close waits for the peer after shutting down the
    /// write side [default: 2].
    #[arg(long, value_name = "SECS", value_parser = parse_secs, allow_negative_numbers = true)]
    linger: Option<Duration>,
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
    /// SQPOLL (io_uring): a kernel thread polls each ring's submissions,
    /// sleeping after MS milliseconds without work (default: off).
    #[arg(long, value_name = "MS")]
    sqpoll_idle_ms: Option<u64>,
    /// With --sqpoll-idle-ms: pin the SQPOLL threads to this CPU.
    #[arg(long, value_name = "CPU", requires = "sqpoll_idle_ms")]
    sqpoll_cpu: Option<usize>,
    /// Register each ring's own descriptor (io_uring, Linux 5.18): waits
    /// name it by index.
    #[arg(long)]
    register_ring: bool,
    /// Incremental buffer consumption (io_uring, Linux 6.12): a receive
    /// takes only what it needs of a buffer; pair it with a large
    /// --buf-size.
    #[arg(long, conflicts_with = "recv_bundle")]
    buf_inc: bool,
    /// Register the shared buffer ring as a fixed buffer (io_uring): replies
    /// of the bytes received go with SEND_ZC from it.
    #[arg(long)]
    fixed_send_buffers: bool,
    /// Map the shared buffer ring on huge pages (hugetlbfs if reserved,
    /// else transparent huge pages).
    #[arg(long)]
    buf_hugepages: bool,
}

impl ServeArgs {
    /// The engine configuration these flags ask for. Flags that only make
    /// sense together are checked here, with messages naming the flags.
    ///
    /// `inherited`: listening sockets a service manager passed (systemd
    /// socket activation). They are served first, with the options they
    /// were made with; `--addr` then adds listeners, and the default
    /// address is used only when there is neither.
    pub(crate) fn config(&self, inherited: Vec<std::os::fd::OwnedFd>) -> anyhow::Result<Config> {
        let d = Config::default();
        let high = self.high_watermark.unwrap_or(d.send_high_watermark);
        let low = match self.low_watermark {
            Some(low) => low,
            None => d.send_low_watermark.min(high / 4),
        };
        if low >= high {
            bail!("--low-watermark ({low}) must be below --high-watermark ({high})");
        }
        if self.accept_direct && self.fixed_files == 0 {
            bail!("--accept-direct needs a registered-descriptor table: give --fixed-files N");
        }
        // A partial frame or line waits unconsumed until it is complete, so
        // the input limit must hold the largest one with its header.
        let longest_message = match self.mode {
            Mode::FramedEcho => self.max_frame().saturating_add(4),
            Mode::LineEcho | Mode::Chat => self.max_line().saturating_add(2),
            Mode::Echo | Mode::Http => 0,
        };
        if self.unix_mode.is_some() && !self.addr.iter().any(|a| a.unix_path().is_some()) {
            bail!("--unix-mode goes with an --addr unix:PATH");
        }
        let mut listeners: Vec<ListenerSpec> =
            inherited.into_iter().map(ListenerSpec::adopt).collect();
        let asked: Vec<Address> = if self.addr.is_empty() && listeners.is_empty() {
            vec![Address::Inet(DEFAULT_ADDR.parse()?)]
        } else {
            self.addr.clone()
        };
        let mut cfg = Config {
            listeners: Vec::new(),
            backend: self.backend,
            cpus: self.cpus.clone(),
            workers: self.workers,
            listener: match self.listener {
                Listener::Reuseport => ListenerMode::ReusePort,
                Listener::Shared => ListenerMode::Shared,
            },
            backlog: self.backlog.unwrap_or(d.backlog),
            buffers: match self.buffers {
                Buffers::Shared => BufferMode::Shared,
                Buffers::PerConn => BufferMode::PerConnection,
            },
            buf_count: self.buf_count,
            buf_size: self.buf_size,
            conn_buf_count: self.conn_buf_count,
            sq_entries: self.sq_entries,
            cq_entries: self.cq_entries,
            defer_taskrun: !self.no_defer_taskrun,
            max_connections: self.max_connections,
            fixed_files: self.fixed_files,
            accept_direct: self.accept_direct,
            recv_bundle: self.recv_bundle,
            send_zc_threshold: self.send_zc_threshold,
            batch_wait: Duration::from_micros(self.batch_wait_us),
            sqpoll_idle: self.sqpoll_idle_ms.map(Duration::from_millis),
            sqpoll_cpu: self.sqpoll_cpu,
            register_ring: self.register_ring,
            buf_huge_pages: self.buf_hugepages,
            buf_incremental: self.buf_inc,
            fixed_send_buffers: self.fixed_send_buffers,
            wait_batch: self.wait_batch,
            linger: self.linger.unwrap_or(d.linger),
            tls_handshake_timeout: self
                .tls_handshake_timeout
                .unwrap_or(d.tls_handshake_timeout),
            shutdown_timeout: self.shutdown_timeout(),
            idle_timeout: self.idle_timeout,
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout.unwrap_or(d.write_timeout),
            recv_buffer_size: self.rcvbuf,
            send_buffer_size: self.sndbuf,
            nodelay: !self.no_nodelay,
            only_v6: self.v6only,
            send_high_watermark: high,
            send_low_watermark: low,
            // The per-connection output limit is at least the high watermark.
            max_queued_output: d.max_queued_output.max(high),
            max_unconsumed: d.max_unconsumed.max(longest_message),
            ..d
        };
        // A Unix path listener takes the engine-wide options the flags set,
        // with the socket file's mode.
        let unix = ringnet::ListenOptions {
            unix_mode: self.unix_mode,
            ..cfg.listen_options()
        };
        for addr in asked {
            let spec = ListenerSpec::bind(addr.clone());
            listeners.push(if addr.unix_path().is_some() {
                spec.with_options(unix)
            } else {
                spec
            });
        }
        if let Some(acceptor) = self.tls()? {
            for spec in &mut listeners {
                spec.tls = Some(acceptor.clone());
            }
        }
        cfg.listeners = listeners;
        Ok(cfg)
    }

    /// The TLS acceptor the --tls-* flags ask for, if any.
    fn tls(&self) -> anyhow::Result<Option<ringnet::tls::TlsAcceptor>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            bail!("--alpn: each protocol name must be 1 to 255 bytes");
        }
        let opts = ringnet::tls::TlsServerOptions {
            client_ca: self.tls_client_ca.clone(),
            alpn: self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
            ..ringnet::tls::TlsServerOptions::new(cert, key)
        };
        Ok(Some(ringnet::tls::TlsAcceptor::new(&opts)?))
    }

    /// How long a shutdown waits for connections to drain.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
            .unwrap_or(Config::default().shutdown_timeout)
    }

    /// The framing of `framed-echo`.
    pub(crate) fn frames(&self) -> Framing {
        Framing::LengthPrefixed {
            max: self.max_frame(),
        }
    }

    /// The framing of `line-echo` and `chat`.
    pub(crate) fn lines(&self) -> Framing {
        Framing::Line {
            max: self.max_line(),
        }
    }

    fn max_frame(&self) -> usize {
        self.max_frame.unwrap_or(DEFAULT_MAX_FRAME)
    }

    fn max_line(&self) -> usize {
        self.max_line.unwrap_or(DEFAULT_MAX_LINE)
    }
}

/// The address `serve` listens on when given none.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:7000";

/// An address to listen on or connect to: `unix:PATH`, `unix:@NAME`, or an
/// endpoint as [`parse_endpoint`] takes it.
pub(crate) fn parse_address(s: &str) -> Result<Address, String> {
    if s.starts_with(ringnet::address::UNIX_PREFIX) {
        return s
            .parse()
            .map_err(|e: ringnet::endpoint::EndpointError| e.to_string());
    }
    parse_endpoint(s).map(Address::Inet)
}

/// A file mode in octal (`660`, `0660`, `0o660`), at most `7777`.
fn parse_unix_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal file mode (like 660)"))?;
    if mode > 0o7777 {
        return Err(format!("file mode {s} is above 7777"));
    }
    Ok(mode)
}

/// An endpoint string, validated (missing port, bad port, empty host,
/// brackets) and resolved; the first address is used.
pub(crate) fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
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

/// Seconds, fractional allowed: a finite number from 0 to a year.
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "seconds must be a non-negative finite number, got {s}"
        ));
    }
    if secs > MAX_SECS {
        return Err(format!(
            "seconds must be at most {MAX_SECS} (a year), got {s}"
        ));
    }
    // Finite and in 0..=MAX_SECS: the conversion cannot fail.
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

/// Like [`parse_secs`], but zero is refused too.
pub(crate) fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err(format!("seconds must be positive, got {s}"));
    }
    Ok(d)
}

/// A positive number of bytes: decimal digits, optionally followed by K, M
/// or G (KiB, MiB, GiB; case-insensitive, an optional `iB`/`B` after it).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("{s:?} is not a size in bytes"));
    }
    let shift = match suffix {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size in bytes (digits, then optionally K, M or G)"
            ))
        }
    };
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is too large"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err("the size must be positive, got 0".into());
    }
    Ok(bytes)
}

/// A socket buffer size: a positive size the kernel's `int` holds.
pub(crate) fn parse_buffer_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n > i32::MAX as usize {
        return Err(format!("the size must be at most {}, got {s}", i32::MAX));
    }
    Ok(n)
}

/// A length-prefixed frame limit: the 4-byte header holds at most 4 GiB - 1.
pub(crate) fn parse_frame_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n as u64 > u64::from(u32::MAX) {
        return Err(format!(
            "a frame is at most {} bytes (a 4-byte length), got {s}",
            u32::MAX
        ));
    }
    Ok(n)
}

/// A `listen(2)` backlog: 1 to `i32::MAX`.
pub(crate) fn parse_backlog(s: &str) -> Result<i32, String> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if n < 1 || n > i64::from(i32::MAX) {
        return Err(format!("the backlog must be 1..={}, got {s}", i32::MAX));
    }
    Ok(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_secs(" 3 "), Ok(Duration::from_secs(3)));
        for bad in ["-5", "-0.1", "abc", "", "NaN", "nan", "inf", "1e300", "1s"] {
            assert!(parse_secs(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_positive_secs("0").is_err());
        assert!(parse_positive_secs("0.0").is_err());
        assert_eq!(parse_positive_secs("0.2"), Ok(Duration::from_millis(200)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in [
            "0",
            "0K",
            "0x",
            "0x10",
            "-1",
            "",
            "K",
            "1.5M",
            "12T",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_buffer_size("1M"), Ok(1 << 20));
        assert!(parse_buffer_size("2G").is_err());
        assert_eq!(parse_frame_size("4194303K"), Ok(4_294_966_272));
        assert!(parse_frame_size("4G").is_err());
    }

    #[test]
    fn backlogs() {
        assert_eq!(parse_backlog("1"), Ok(1));
        assert_eq!(parse_backlog("4096"), Ok(4096));
        assert_eq!(parse_backlog("2147483647"), Ok(i32::MAX));
        for bad in ["0", "-1", "2147483648", "abc", "1.5", ""] {
            assert!(parse_backlog(bad).is_err(), "{bad:?} accepted");
        }
    }
}
