//! Engine configuration: addresses, workers, ring and buffer sizes.

use std::net::SocketAddr;
use std::time::Duration;

use crate::address::Address;
use crate::listener::{ListenOptions, ListenSource, ListenerSpec};

/// The most listeners one engine takes (a connection records its
/// listener's index in 16 bits).
pub const MAX_LISTENERS: usize = 4096;

/// Which kernel interface a worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: multishot accept and recv over provided buffer rings.
    Uring,
    /// epoll: readiness events, non-blocking accept/recv/send.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// The backend asked for. The environment variable `RINGNET_BACKEND`
/// (`auto`, `uring` or `epoll`) overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when a ring with every feature the engine needs can be set
    /// up here, else epoll (with one line on stderr saying why).
    #[default]
    Auto,
    /// io_uring or fail with the reason.
    Uring,
    /// epoll.
    Epoll,
}

impl std::str::FromStr for BackendChoice {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(BackendChoice::Uring),
            "epoll" => Ok(BackendChoice::Epoll),
            other => Err(crate::Error::Config(format!(
                "backend must be auto, uring or epoll, got {other:?}"
            ))),
        }
    }
}

impl From<Backend> for BackendChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Uring => BackendChoice::Uring,
            Backend::Epoll => BackendChoice::Epoll,
        }
    }
}

/// How the workers share the listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// One listening socket; every worker arms its own multishot accept on
    /// it and the kernel wakes one waiter per connection.
    Shared,
    /// One listening socket per worker, all bound with `SO_REUSEPORT`; the
    /// kernel spreads connections over them by hashing the 4-tuple.
    ReusePort,
}

/// Where a connection's multishot recv takes its buffers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferMode {
    /// One provided-buffer ring per worker, shared by all its connections.
    /// An idle connection owns no buffer memory at all.
    Shared,
    /// Each connection gets its own small buffer ring (from a pool of
    /// registered rings that is recycled as connections close), so a client
    /// that floods cannot take the buffers others need. Costs a ring of
    /// `conn_buf_count` buffers per open connection.
    PerConnection,
}

/// Everything the engine can be told. Build with [`Config::default`] and
/// struct update syntax.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen: each listener's address or adopted socket, and its
    /// own options ([`ListenerSpec`]); a connection's handler learns which
    /// one it came through ([`crate::Conn::listener`], the index here).
    /// Empty: an engine with no listener, for outbound connections only
    /// (a proxy's or a load tool's client side). The default is one
    /// listener on 127.0.0.1:7000. The UDP engine takes exactly one IP
    /// address here.
    pub listeners: Vec<ListenerSpec>,
    /// Which backend to run on (`RINGNET_BACKEND` overrides it).
    pub backend: BackendChoice,
    /// CPUs to pin workers to: worker `i` runs on `cpus[i % cpus.len()]`.
    /// Empty: no pinning.
    pub cpus: Vec<usize>,
    /// Worker threads, one ring each. 0 means the number of available CPUs.
    pub workers: usize,
    /// How workers share a listening address, for listeners without their
    /// own options. The default, `ReusePort`,
    /// lets the kernel spread connections over the workers; with one
    /// `Shared` socket, io_uring workers were measured to get very uneven
    /// shares (see ARCHITECTURE.md). A port another server already listens
    /// on is reported as `AddressInUse` in both modes.
    pub listener: ListenerMode,
    /// `listen(2)` backlog (the kernel caps it at `net.core.somaxconn`), for
    /// listeners without their own options.
    pub backlog: i32,
    /// Submission queue entries per ring (a power of two is used).
    pub sq_entries: u32,
    /// Set rings up with SINGLE_ISSUER + DEFER_TASKRUN (Linux 6.1) when the
    /// kernel has them; `false` starts from COOP_TASKRUN. DEFER_TASKRUN runs
    /// completion work only when the worker asks for completions, so the
    /// worker is not interrupted mid-batch. Kept switchable so the two can be
    /// compared (the accept bench runs both).
    pub defer_taskrun: bool,
    /// Size of each ring's table of registered (direct) descriptors (Linux
    /// 5.19). A connection whose slab key is below it is installed in the
    /// table and its recvs and sends name it by index, sparing the kernel a
    /// file lookup and reference count per operation. 0 turns it off.
    pub fixed_files: u32,
    /// Accept straight into the registered-file table (io_uring,
    /// IORING_FILE_INDEX_ALLOC, Linux 5.19; needs `fixed_files`): the
    /// kernel puts each accepted connection in a free entry of the table
    /// and never gives it a plain descriptor, which spares the process's
    /// descriptor table and the registration of each connection.
    ///
    /// Such a connection has no plain descriptor, so [`crate::Conn::peer_addr`],
    /// [`crate::Conn::local_addr`], [`crate::Conn::peer_credentials`] and
    /// [`crate::Conn::socket`] return an `Unsupported` error for it. Outbound
    /// connections keep plain descriptors (the kernel allocates the whole
    /// table). When the table is full the kernel closes the connection it
    /// could not place (counted as `direct_table_full`), and the worker
    /// accepts with plain descriptors until a quarter of the table is free
    /// again. The epoll driver ignores it.
    pub accept_direct: bool,
    /// Receive with bundles (IORING_RECVSEND_BUNDLE, Linux 6.10) where the
    /// kernel has them: one completion may carry several consecutive
    /// buffers, fewer completions for bulk input.
    pub recv_bundle: bool,
    /// Send with SEND_ZC (zero copy, Linux 6.0) when at least this many bytes
    /// go in one send; 0 turns it off. The send buffer stays busy until the
    /// kernel's notification, and over loopback the kernel copies anyway.
    pub send_zc_threshold: usize,
    /// Batched waiting (io_uring, Linux 6.12 min-wait): when the worker has
    /// nothing to do, it waits up to this long for `wait_batch` completions,
    /// then returns with whatever has arrived. While it waits, peers' packets
    /// do not wake it one by one (a cross-CPU wake-up each); its own CPU's
    /// timer does. Adds up to this much latency per wake-up. Zero: wake on
    /// the first completion. Ignored where the kernel lacks min-wait.
    pub batch_wait: Duration,
    /// Completions that end a batched wait early (with `batch_wait`; at most
    /// `cq_entries` are waited for).
    pub wait_batch: u32,
    /// SQPOLL (io_uring): a kernel thread per ring polls the submission
    /// queue, so submitting needs no system call while it is awake; it
    /// sleeps after this long without work (and a submit wakes it). Its
    /// CPU time is the server's too. Rings then use COOP_TASKRUN (the kernel
    /// refuses DEFER_TASKRUN with SQPOLL). `None`: off.
    pub sqpoll_idle: Option<Duration>,
    /// With `sqpoll_idle`: pin each ring's SQPOLL thread to this CPU.
    pub sqpoll_cpu: Option<usize>,
    /// Register each ring's own descriptor (IORING_REGISTER_RING_FDS, Linux
    /// 5.18), so every `io_uring_enter` names it by index and the kernel
    /// skips a file lookup per call.
    pub register_ring: bool,
    /// Map buffer rings on huge pages: hugetlbfs pages (`MAP_HUGETLB`, 2
    /// MiB) when the system has some reserved, else transparent huge pages
    /// (`MADV_HUGEPAGE`); fewer TLB misses over large buffer areas.
    /// `Stats::huge_page_rings` and `Stats::thp_rings` say which was had.
    pub buf_huge_pages: bool,
    /// Registered (fixed) send buffers: the shared ring's buffers are
    /// registered with the ring (IORING_REGISTER_BUFFERS), and replies sent
    /// straight from them go with SEND_ZC from that registered memory (the
    /// kernel pinned its pages once, not on every send). Other output is
    /// sent as usual. No effect with `buf_incremental` (no replies from
    /// buffers then).
    pub fixed_send_buffers: bool,
    /// Incremental buffer consumption (IOU_PBUF_RING_INC, Linux 6.12) for
    /// the shared ring: a receive takes only the bytes it needs of a
    /// buffer and the next receive continues in it, so large buffers serve
    /// bulk transfers while small messages share them. Replies are then
    /// always copied (a buffer is shared by many receives). Not with
    /// `recv_bundle`.
    pub buf_incremental: bool,
    /// Completion queue entries per ring; must exceed `sq_entries`. A full CQ
    /// ends multishot operations, so keep it generous.
    pub cq_entries: u32,
    /// Where recv buffers come from (io_uring; the epoll backend reads into
    /// one buffer of `buf_size` per worker).
    pub buffers: BufferMode,
    /// Buffers in the worker's shared ring (power of two, at most 32768).
    pub buf_count: u16,
    /// Size of every provided buffer, in bytes.
    pub buf_size: u32,
    /// Buffers in each connection's own ring in [`BufferMode::PerConnection`]
    /// (power of two).
    pub conn_buf_count: u16,
    /// Idle per-connection rings kept registered for reuse; beyond this a
    /// ring freed by a closing connection is unregistered and unmapped.
    pub group_pool_max: usize,
    /// Set `TCP_NODELAY` on accepted streams (of listeners without their
    /// own options) and on outbound ones.
    pub nodelay: bool,
    /// For an IPv6 address: IPv6 only. Off by default, so `[::]` is
    /// dual-stack and IPv4 clients arrive as v4-mapped addresses.
    pub only_v6: bool,
    /// SO_RCVBUF for listeners (without their own options), the streams
    /// they accept, and outbound streams (`None`: kernel default and
    /// autotuning).
    pub recv_buffer_size: Option<usize>,
    /// SO_SNDBUF for the same sockets.
    pub send_buffer_size: Option<usize>,
    /// Backpressure: when a connection has more than this many bytes queued
    /// for sending (its peer reads slower than it sends), the engine stops
    /// receiving from it, so a client that never reads cannot make the
    /// server's memory grow past about this much per connection.
    pub send_high_watermark: usize,
    /// Receiving resumes once the queued bytes fall below this.
    pub send_low_watermark: usize,
    /// A connection whose queued output makes no progress for this long
    /// (the peer does not read) is closed with ETIMEDOUT.
    pub write_timeout: Duration,
    /// Close a connection with no traffic for this long: it sent nothing,
    /// nothing was written to it, and it has no output queued
    /// ([`crate::CloseReason::IdleTimeout`]). `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose partial message (bytes the handler left
    /// unconsumed) is not complete this long after its first byte
    /// ([`crate::CloseReason::ReadTimeout`]; stops slowloris peers). `None`:
    /// never.
    pub read_timeout: Option<Duration>,
    /// At most this many connections open at once over all workers; a
    /// connection accepted beyond it is closed at once (counted as
    /// `refused`), and accepting resumes as slots free up. Outbound
    /// connections count toward it but are never refused. 0: no limit.
    pub max_connections: usize,
    /// Bytes a handler may leave unconsumed on one connection before the
    /// engine closes it with [`crate::CloseReason::InputLimit`].
    pub max_unconsumed: usize,
    /// Bytes of output one connection may have queued when a broadcast or
    /// `send_to` adds more: past it the connection is closed at once with
    /// [`crate::CloseReason::OutputLimit`] and its queue dropped (a slow
    /// consumer; counted as `output_limit_closes`). Its own replies are
    /// bounded by backpressure instead (see `send_high_watermark`).
    pub max_queued_output: usize,
    /// How long a TLS connection's handshake may take before it is closed
    /// ([`crate::CloseReason::TlsHandshakeTimeout`]; the handler never saw
    /// it).
    pub tls_handshake_timeout: Duration,
    /// Pause before re-arming accept after EMFILE, ENFILE or ENOMEM.
    pub accept_backoff: Duration,
    /// How long a graceful close waits, after shutting down the write side,
    /// for the peer to close its side (reading and discarding what it still
    /// sends) before closing regardless.
    pub linger: Duration,
    /// How long a shutdown waits for queued output to drain before it
    /// closes the remaining connections regardless.
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerSpec::bind(SocketAddr::from(([127, 0, 0, 1], 7000)))],
            backend: BackendChoice::Auto,
            cpus: Vec::new(),
            workers: 0,
            listener: ListenerMode::ReusePort,
            backlog: 1024,
            sq_entries: 256,
            cq_entries: 4096,
            defer_taskrun: true,
            fixed_files: 0,
            accept_direct: false,
            recv_bundle: false,
            send_zc_threshold: 0,
            sqpoll_idle: None,
            sqpoll_cpu: None,
            register_ring: false,
            buf_huge_pages: false,
            buf_incremental: false,
            fixed_send_buffers: false,
            batch_wait: Duration::ZERO,
            wait_batch: 32,
            buffers: BufferMode::Shared,
            buf_count: 512,
            buf_size: 4096,
            conn_buf_count: 8,
            group_pool_max: 256,
            nodelay: true,
            only_v6: false,
            recv_buffer_size: None,
            send_buffer_size: None,
            idle_timeout: None,
            read_timeout: None,
            send_high_watermark: 1 << 20,
            send_low_watermark: 256 << 10,
            write_timeout: Duration::from_secs(30),
            max_connections: 0,
            max_unconsumed: 16 << 20,
            max_queued_output: 16 << 20,
            tls_handshake_timeout: Duration::from_secs(10),
            accept_backoff: Duration::from_millis(100),
            linger: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Listen on `endpoint` alone (a `SocketAddr`, an [`Address`], an
    /// address list, or a string such as `"localhost:0"`, `"[::]:7000"` or
    /// `"unix:/run/app.sock"`, validated before anything is resolved),
    /// with the engine-wide options; the first resolved address is used
    /// ([`crate::Error::NoAddress`] when there is none).
    pub fn listen_on(
        mut self,
        endpoint: impl crate::endpoint::ToEndpoint,
    ) -> Result<Config, crate::Error> {
        self.listeners.clear();
        self.also_listen_on(endpoint)
    }

    /// Add a listener on `endpoint`, as [`Config::listen_on`] does.
    pub fn also_listen_on(
        mut self,
        endpoint: impl crate::endpoint::ToEndpoint,
    ) -> Result<Config, crate::Error> {
        let addrs = endpoint
            .to_addresses()
            .map_err(crate::Error::from_resolve)?;
        let first = addrs.into_iter().next().ok_or(crate::Error::NoAddress)?;
        self.listeners.push(ListenerSpec::bind(first));
        Ok(self)
    }

    /// The engine-wide listener options (for listeners without their own).
    pub fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            reuseport: self.listener == ListenerMode::ReusePort,
            backlog: self.backlog,
            nodelay: self.nodelay,
            only_v6: self.only_v6,
            recv_buffer_size: self.recv_buffer_size,
            send_buffer_size: self.send_buffer_size,
            unix_mode: None,
        }
    }

    /// The one IP address the UDP engine binds.
    pub(crate) fn udp_addr(&self) -> Result<SocketAddr, crate::Error> {
        match self.listeners.as_slice() {
            [ListenerSpec {
                source: ListenSource::Bind(Address::Inet(a)),
                ..
            }] => Ok(*a),
            _ => Err(crate::Error::Config(
                "listeners: the UDP engine serves exactly one IP address".into(),
            )),
        }
    }

    /// Whether idle or read timeouts are on (deliveries then note the time).
    pub(crate) fn input_timeouts(&self) -> bool {
        self.idle_timeout.is_some() || self.read_timeout.is_some()
    }

    /// The worker count with 0 resolved to the available parallelism.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.workers
        }
    }

    /// Check the values that the kernel would otherwise reject later, with a
    /// message naming the field.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |msg: String| Err(crate::Error::Config(msg));
        if self.sqpoll_cpu.is_some() && self.sqpoll_idle.is_none() {
            return bad("sqpoll_cpu needs sqpoll_idle (SQPOLL on)".into());
        }
        if self
            .sqpoll_idle
            .is_some_and(|d| d.is_zero() || d > Duration::from_secs(60))
        {
            return bad(format!(
                "sqpoll_idle must be 1 ms ..= 60 s, got {:?}",
                self.sqpoll_idle.unwrap_or_default()
            ));
        }
        if self.buf_incremental && self.recv_bundle {
            return bad(
                "buf_incremental and recv_bundle together: kernels from 6.13.11 delivered bundles of incremental buffers out of order".into(),
            );
        }
        let workers = self.worker_count();
        if workers == 0 || workers > 256 {
            return bad(format!("workers must be 1..=256, got {workers}"));
        }
        for (name, n) in [
            ("buf_count", self.buf_count),
            ("conn_buf_count", self.conn_buf_count),
        ] {
            if n == 0 || !n.is_power_of_two() || n > 32768 {
                return bad(format!(
                    "{name} must be a power of two in 1..=32768, got {n}"
                ));
            }
        }
        if self.buf_size == 0 || self.buf_size > (1 << 20) {
            return bad(format!(
                "buf_size must be 1..=1048576, got {}",
                self.buf_size
            ));
        }
        if self.sq_entries == 0 || self.sq_entries > 32768 {
            return bad(format!(
                "sq_entries must be 1..=32768, got {}",
                self.sq_entries
            ));
        }
        if self.cq_entries <= self.sq_entries || self.cq_entries > 65536 {
            return bad(format!(
                "cq_entries must exceed sq_entries ({}) and be at most 65536, got {}",
                self.sq_entries, self.cq_entries
            ));
        }
        if self.backlog <= 0 {
            return bad(format!("backlog must be positive, got {}", self.backlog));
        }
        for (name, t) in [
            ("idle_timeout", self.idle_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if t == Some(Duration::ZERO) {
                return bad(format!("{name} must be positive (None turns it off)"));
            }
        }
        if self.tls_handshake_timeout.is_zero() {
            return bad("tls_handshake_timeout must be positive".into());
        }
        if self.fixed_files > (1 << 20) {
            return bad(format!(
                "fixed_files must be at most 1048576, got {}",
                self.fixed_files
            ));
        }
        if self.accept_direct && self.fixed_files == 0 {
            return bad(
                "accept_direct needs a registered-file table: set fixed_files above 0".into(),
            );
        }
        if self.send_low_watermark >= self.send_high_watermark {
            return bad(format!(
                "send_low_watermark ({}) must be below send_high_watermark ({})",
                self.send_low_watermark, self.send_high_watermark
            ));
        }
        if self.max_unconsumed == 0 {
            return bad("max_unconsumed must be positive".into());
        }
        if self.max_queued_output < self.send_high_watermark {
            return bad(format!(
                "max_queued_output ({}) must be at least send_high_watermark ({})",
                self.max_queued_output, self.send_high_watermark
            ));
        }
        if self.batch_wait > Duration::from_secs(1) {
            return bad(format!(
                "batch_wait must be at most 1 s, got {:?}",
                self.batch_wait
            ));
        }
        if self.wait_batch == 0 {
            return bad("wait_batch must be at least 1".into());
        }
        if self.listeners.len() > MAX_LISTENERS {
            return bad(format!(
                "listeners: at most {MAX_LISTENERS}, got {}",
                self.listeners.len()
            ));
        }
        for (i, spec) in self.listeners.iter().enumerate() {
            let backlog = spec.options.map_or(self.backlog, |o| o.backlog);
            if backlog <= 0 {
                return bad(format!(
                    "listeners[{i}]: backlog must be positive, got {backlog}"
                ));
            }
            if let Some(mode) = spec.options.and_then(|o| o.unix_mode) {
                if mode > 0o7777 {
                    return bad(format!(
                        "listeners[{i}]: unix_mode must be at most 0o7777, got {mode:#o}"
                    ));
                }
                match &spec.source {
                    ListenSource::Bind(a) if a.unix_path().is_none() => {
                        return bad(format!(
                            "listeners[{i}]: unix_mode is for a Unix socket path, not {a}"
                        ));
                    }
                    ListenSource::Adopt(_) => {
                        return bad(format!(
                            "listeners[{i}]: unix_mode is for a Unix socket path the engine binds; an adopted socket keeps its file's mode"
                        ));
                    }
                    ListenSource::Bind(_) => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default()
            .validate()
            .expect("default config is valid");
    }

    #[test]
    fn an_endpoint_without_addresses_is_no_address() {
        // Breaks the `ToEndpoint` contract: no address, and no error.
        struct Nowhere;
        impl crate::endpoint::ToEndpoint for Nowhere {
            fn to_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
                Ok(Vec::new())
            }
        }
        assert!(matches!(
            Config::default().listen_on(Nowhere),
            Err(crate::Error::NoAddress)
        ));
        let one: SocketAddr = "127.0.0.1:7001".parse().expect("addr");
        let cfg = Config::default().listen_on(one).expect("listen_on");
        assert!(matches!(
            cfg.listeners.as_slice(),
            [ListenerSpec { source: ListenSource::Bind(a), .. }] if *a == one
        ));
        let two = cfg.also_listen_on("unix:@x").expect("also");
        assert_eq!(two.listeners.len(), 2);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                Config {
                    buf_count: 3,
                    ..Config::default()
                },
                "buf_count",
            ),
            (
                Config {
                    conn_buf_count: 0,
                    ..Config::default()
                },
                "conn_buf_count",
            ),
            (
                Config {
                    buf_size: 0,
                    ..Config::default()
                },
                "buf_size",
            ),
            (
                Config {
                    cq_entries: 128,
                    ..Config::default()
                },
                "cq_entries",
            ),
            (
                Config {
                    idle_timeout: Some(Duration::ZERO),
                    ..Config::default()
                },
                "idle_timeout",
            ),
            (
                Config {
                    read_timeout: Some(Duration::ZERO),
                    ..Config::default()
                },
                "read_timeout",
            ),
            (
                Config {
                    workers: 300,
                    ..Config::default()
                },
                "workers",
            ),
            (
                Config {
                    backlog: 0,
                    ..Config::default()
                },
                "backlog",
            ),
            (
                Config {
                    batch_wait: Duration::from_secs(2),
                    ..Config::default()
                },
                "batch_wait",
            ),
            (
                Config {
                    wait_batch: 0,
                    ..Config::default()
                },
                "wait_batch",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
