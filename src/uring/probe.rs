//! Runtime capability probe: what io_uring can actually do on this machine.
//!
//! This module owns `ringnet probe` and the start-up capability check. It answers
//! two questions:
//!
//! 1. Can an io_uring instance be created at all? If not, [`explain_setup_error`]
//!    turns the `io_uring_setup(2)` errno into something an operator can act on
//!    (missing kernel support, seccomp, the `kernel.io_uring_disabled` sysctl,
//!    `RLIMIT_MEMLOCK`).
//! 2. Which of the features the engine relies on work here? Every feature is found
//!    by a real probe (running the operation, registering the resource, or building
//!    a ring with the setup flag), never by comparing kernel versions: distribution
//!    kernels backport features and sandboxes (seccomp, gVisor, ...) remove them.
//!    The `since` column only records the upstream kernel that introduced a feature:
//!
//! | feature               | since | how it is probed                                       |
//! |-----------------------|-------|--------------------------------------------------------|
//! | multishot accept      | 5.19  | `AcceptMulti` on a loopback listener posts `F_MORE`     |
//! | multishot recv        | 6.0   | `RecvMulti` on a socket pair posts `F_MORE` + a buffer  |
//! | provided buffer rings | 5.19  | registering a buffer ring succeeds                      |
//! | SEND_ZC               | 6.0   | the opcode probe lists `IORING_OP_SEND_ZC`              |
//! | SINGLE_ISSUER         | 6.0   | a ring builds with `IORING_SETUP_SINGLE_ISSUER`         |
//! | DEFER_TASKRUN         | 6.1   | a ring builds with `SINGLE_ISSUER` + `DEFER_TASKRUN`    |
//! | COOP_TASKRUN          | 5.19  | a ring builds with `IORING_SETUP_COOP_TASKRUN`          |
//! | SQPOLL                | 5.1   | a ring builds with `IORING_SETUP_SQPOLL`                |
//! | registered files      | 5.1   | a sparse file table registers (sparse form: 5.19)       |
//! | recv bundles          | 6.10  | `IORING_FEAT_RECVSEND_BUNDLE` is reported               |
//! | NODROP                | 5.5   | `IORING_FEAT_NODROP` is reported                        |
//!
//! Every wait is bounded (about one second), every descriptor and mapping the probe
//! creates is released, and a failing step marks the feature unsupported with the
//! error in its `detail` instead of panicking.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, Builder, IoUring, Probe};

/// Entries of every ring the probe creates.
const RING_ENTRIES: u32 = 8;
/// Upper bound for each individual wait on a completion.
const WAIT_BUDGET: Duration = Duration::from_secs(1);

/// `user_data` of the multishot request under test.
const MULTISHOT_UD: u64 = 1;
/// `user_data` of the `AsyncCancel` that tears the multishot request down.
const CANCEL_UD: u64 = 2;
/// `user_data` of the fallback `Timeout` used to bound waits without `EXT_ARG`.
const TIMEOUT_UD: u64 = u64::MAX;

const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

const MULTISHOT_ACCEPT: &str = "multishot accept";
const MULTISHOT_RECV: &str = "multishot recv";
const PROVIDED_BUFFER_RINGS: &str = "provided buffer rings";
const SEND_ZC: &str = "SEND_ZC";
const SINGLE_ISSUER: &str = "SINGLE_ISSUER";
const DEFER_TASKRUN: &str = "DEFER_TASKRUN";
const COOP_TASKRUN: &str = "COOP_TASKRUN";
const SQPOLL: &str = "SQPOLL";
const REGISTERED_FILES: &str = "registered files";
const RECV_BUNDLES: &str = "recv bundles";
const NODROP: &str = "NODROP";
const MIN_WAIT: &str = "min-wait";

/// Everything [`probe`] found out about io_uring on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Kernel release from `/proc/sys/kernel/osrelease` (trimmed), or `"unknown"`.
    pub kernel: String,
    /// Whether a plain ring of 8 entries could be set up here.
    pub uring: Result<(), SetupError>,
    /// One entry per probed feature, in a fixed order; empty when `uring` is `Err`.
    pub features: Vec<Feature>,
}

/// The outcome of probing one io_uring feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// Stable feature name, e.g. `"multishot accept"`.
    pub name: &'static str,
    /// Whether the probe showed the feature working.
    pub supported: bool,
    /// Short human explanation: what was observed, or the error that stopped the probe.
    pub detail: String,
    /// Upstream kernel version that introduced the feature (informational only).
    pub since: &'static str,
}

/// Why `io_uring_setup(2)` failed, explained for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// The raw OS error number (0 when the error carried none).
    pub errno: i32,
    /// Human explanation of the likely cause.
    pub reason: String,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring unavailable: {} (errno {})",
            self.reason, self.errno
        )
    }
}

impl std::error::Error for SetupError {}

impl SetupError {
    /// The reason followed by the errno, e.g. `blocked by seccomp ... (errno 1)`.
    pub fn reason_with_errno(&self) -> String {
        format!("{} (errno {})", self.reason, self.errno)
    }
}

/// Run `f` on a short-lived thread of its own (or, if no thread can be
/// spawned, on this one).
///
/// When a ring is torn down the kernel sends every thread that submitted to
/// it a task-work notification (TWA_SIGNAL). That notification ends a
/// blocking call with a timeout (SO_RCVTIMEO, SO_SNDTIMEO) with EINTR, so a
/// probe run on the caller's thread would make the caller's next timed
/// socket read fail spuriously. On a thread that has exited, the
/// notification has no one to disturb.
fn on_own_thread<T: Send + 'static>(f: fn() -> T) -> T {
    match std::thread::Builder::new()
        .name("ringnet-probe".into())
        .spawn(f)
    {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        Err(_) => f(),
    }
}

/// Probe io_uring on this machine: can a ring be set up, and which features work.
///
/// Runs on a short-lived thread of its own (so the rings it tears down do not
/// interrupt the caller's blocking calls), takes at most a few seconds even on
/// a misbehaving kernel (every wait is bounded), and leaves no descriptors or
/// mappings behind.
#[must_use]
pub fn probe() -> ProbeReport {
    on_own_thread(probe_here)
}

fn probe_here() -> ProbeReport {
    let kernel = fs::read_to_string(OSRELEASE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());

    let ring = match IoUring::new(RING_ENTRIES) {
        Ok(ring) => ring,
        Err(err) => {
            return ProbeReport {
                kernel,
                uring: Err(explain_setup_error(&err)),
                features: Vec::new(),
            }
        }
    };
    let send_zc = probe_send_zc(&ring);
    let registered_files = probe_registered_files(&ring);
    let bundles = if ring.params().is_feature_recvsend_bundle() {
        Outcome::yes("IORING_FEAT_RECVSEND_BUNDLE reported")
    } else {
        Outcome::no("IORING_FEAT_RECVSEND_BUNDLE not reported")
    };
    let min_wait = if ring.params().is_feature_min_timeout() {
        Outcome::yes("IORING_FEAT_MIN_TIMEOUT reported (batched waiting)")
    } else {
        Outcome::no("IORING_FEAT_MIN_TIMEOUT not reported; batch_wait is ignored")
    };
    let nodrop = if ring.params().is_feature_nodrop() {
        Outcome::yes("IORING_FEAT_NODROP reported; the engine refuses to run without it")
    } else {
        Outcome::no("IORING_FEAT_NODROP missing; the engine refuses to run without it")
    };
    drop(ring);

    let accept = probe_multishot_accept();
    let (buf_rings, recv) = probe_buf_ring_and_multishot_recv();
    let single_issuer = probe_setup_flag("SINGLE_ISSUER", |b| {
        b.setup_single_issuer();
    });
    let defer_taskrun = probe_setup_flag("SINGLE_ISSUER|DEFER_TASKRUN", |b| {
        b.setup_single_issuer().setup_defer_taskrun();
    });
    let coop_taskrun = probe_setup_flag("COOP_TASKRUN", |b| {
        b.setup_coop_taskrun();
    });
    let sqpoll = probe_setup_flag("SQPOLL", |b| {
        b.setup_sqpoll(10);
    });

    let features = vec![
        accept.into_feature(MULTISHOT_ACCEPT, "5.19"),
        recv.into_feature(MULTISHOT_RECV, "6.0"),
        buf_rings.into_feature(PROVIDED_BUFFER_RINGS, "5.19"),
        send_zc.into_feature(SEND_ZC, "6.0"),
        single_issuer.into_feature(SINGLE_ISSUER, "6.0"),
        defer_taskrun.into_feature(DEFER_TASKRUN, "6.1"),
        coop_taskrun.into_feature(COOP_TASKRUN, "5.19"),
        sqpoll.into_feature(SQPOLL, "5.1"),
        registered_files.into_feature(REGISTERED_FILES, "5.1"),
        bundles.into_feature(RECV_BUNDLES, "6.10"),
        nodrop.into_feature(NODROP, "5.5"),
        min_wait.into_feature(MIN_WAIT, "6.12"),
    ];
    ProbeReport {
        kernel,
        uring: Ok(()),
        features,
    }
}

/// Check only what the engine's io_uring backend cannot run without: a ring
/// can be set up, IORING_FEAT_NODROP, multishot accept, provided buffer rings
/// and multishot recv (each tried for real). `Err` carries a one-line reason
/// (the errno and likely cause, or the missing feature and its kernel).
///
/// Like [`probe`], it runs on a thread of its own, spawned from the calling
/// thread, so it sees the caller's seccomp filter (which the engine's
/// workers inherit too). It is not cached: a thread that filters io_uring
/// out after an earlier check passed still falls back to epoll.
pub fn engine_requirements() -> Result<(), String> {
    on_own_thread(engine_requirements_here)
}

fn engine_requirements_here() -> Result<(), String> {
    let ring =
        IoUring::new(RING_ENTRIES).map_err(|e| explain_setup_error(&e).reason_with_errno())?;
    if !ring.params().is_feature_nodrop() {
        return Err("kernel lacks IORING_FEAT_NODROP (Linux 5.5)".into());
    }
    drop(ring);
    let accept = probe_multishot_accept();
    if !accept.supported {
        return Err(format!(
            "multishot accept does not work here (Linux 5.19): {}",
            accept.detail
        ));
    }
    let (buf_rings, recv) = probe_buf_ring_and_multishot_recv();
    if !buf_rings.supported {
        return Err(format!(
            "provided buffer rings do not work here (Linux 5.19): {}",
            buf_rings.detail
        ));
    }
    if !recv.supported {
        return Err(format!(
            "multishot recv does not work here (Linux 6.0): {}",
            recv.detail
        ));
    }
    Ok(())
}

impl ProbeReport {
    /// The probed feature called `name` (see the module docs for the names).
    #[must_use]
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Plain aligned text: a `kernel` and an `io_uring` line, then (when io_uring
    /// works) a column header and exactly one line per feature with the columns
    /// feature, supported (`yes`/`no`), since and detail.
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("kernel:   {}\n", one_line(&self.kernel)));
        match &self.uring {
            Ok(()) => out.push_str("io_uring: ok\n"),
            Err(err) => out.push_str(&format!(
                "io_uring: unavailable: {} (errno {})\n",
                one_line(&err.reason),
                err.errno
            )),
        }
        if self.features.is_empty() {
            return out;
        }

        const HEADERS: [&str; 4] = ["feature", "supported", "since", "detail"];
        let name_w = self
            .features
            .iter()
            .map(|f| f.name.chars().count())
            .chain([HEADERS[0].len()])
            .max()
            .unwrap_or(0);
        let supported_w = HEADERS[1].len();
        let since_w = self
            .features
            .iter()
            .map(|f| f.since.chars().count())
            .chain([HEADERS[2].len()])
            .max()
            .unwrap_or(0);
        let row = |name: &str, supported: &str, since: &str, detail: &str| {
            let line =
                format!("{name:<name_w$}  {supported:<supported_w$}  {since:<since_w$}  {detail}");
            format!("{}\n", line.trim_end())
        };
        out.push_str(&row(HEADERS[0], HEADERS[1], HEADERS[2], HEADERS[3]));
        for f in &self.features {
            let supported = if f.supported { "yes" } else { "no" };
            out.push_str(&row(f.name, supported, f.since, &one_line(&f.detail)));
        }
        out
    }

    /// Compact JSON, keys in this order:
    /// `{"kernel":"...","io_uring":{"ok":true,"errno":null,"reason":null},"features":[{"name":"...","supported":true,"since":"...","detail":"..."}]}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"kernel\":");
        push_json_str(&mut out, &self.kernel);
        out.push_str(",\"io_uring\":{");
        match &self.uring {
            Ok(()) => out.push_str("\"ok\":true,\"errno\":null,\"reason\":null"),
            Err(err) => {
                out.push_str(&format!("\"ok\":false,\"errno\":{},\"reason\":", err.errno));
                push_json_str(&mut out, &err.reason);
            }
        }
        out.push_str("},\"features\":[");
        for (i, f) in self.features.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            push_json_str(&mut out, f.name);
            out.push_str(",\"supported\":");
            out.push_str(if f.supported { "true" } else { "false" });
            out.push_str(",\"since\":");
            push_json_str(&mut out, f.since);
            out.push_str(",\"detail\":");
            push_json_str(&mut out, &f.detail);
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// Explain an `io_uring_setup(2)` failure.
///
/// - `ENOSYS`: the kernel was built without io_uring (`CONFIG_IO_URING=n`) or is
///   older than 5.1.
/// - `EPERM`: a seccomp filter (e.g. Docker's/containerd's default profile since
///   late 2023) or the `kernel.io_uring_disabled` sysctl; its value is read from
///   `/proc/sys/kernel/io_uring_disabled` and reported when the file exists
///   (1 = only `CAP_SYS_ADMIN` or members of `kernel.io_uring_group`,
///   2 = disabled for everyone).
/// - `ENOMEM`: `RLIMIT_MEMLOCK` too low (kernels before 5.12 charge rings to it).
/// - anything else: the OS error text.
#[must_use]
pub fn explain_setup_error(err: &io::Error) -> SetupError {
    let sysctl = if err.raw_os_error() == Some(libc::EPERM) {
        fs::read_to_string(IO_URING_DISABLED)
            .ok()
            .map(|s| s.trim().to_owned())
    } else {
        None
    };
    explain_with_sysctl(err, sysctl.as_deref())
}

/// [`explain_setup_error`] with the `kernel.io_uring_disabled` value passed in
/// (`None` when the sysctl does not exist), so it can be tested deterministically.
fn explain_with_sysctl(err: &io::Error, io_uring_disabled: Option<&str>) -> SetupError {
    let Some(errno) = err.raw_os_error() else {
        return SetupError {
            errno: 0,
            reason: err.to_string(),
        };
    };
    const SECCOMP: &str = "blocked by a seccomp filter (e.g. Docker's/containerd's default \
                           profile, which denies io_uring_setup since late 2023)";
    let reason = match errno {
        libc::ENOSYS => "the kernel has no io_uring: built without it (CONFIG_IO_URING=n) \
                         or older than 5.1"
            .to_owned(),
        libc::EPERM => match io_uring_disabled {
            Some("2") => "io_uring is disabled for everyone by the sysctl \
                          kernel.io_uring_disabled=2"
                .to_owned(),
            Some("1") => "io_uring is restricted by the sysctl kernel.io_uring_disabled=1 to \
                          processes with CAP_SYS_ADMIN or in the kernel.io_uring_group group \
                          (or it is blocked by a seccomp filter)"
                .to_owned(),
            Some(value) => {
                format!("{SECCOMP}; the sysctl kernel.io_uring_disabled={value} is not the cause")
            }
            None => format!("{SECCOMP}; this kernel has no kernel.io_uring_disabled sysctl"),
        },
        libc::ENOMEM => "RLIMIT_MEMLOCK is too low for the ring (kernels before 5.12 charge \
                         io_uring memory to locked memory); raise it, e.g. with ulimit -l"
            .to_owned(),
        _ => os_text(errno),
    };
    SetupError { errno, reason }
}

/// Result of one probe before it is named and dated.
struct Outcome {
    supported: bool,
    detail: String,
}

impl Outcome {
    fn yes(detail: impl Into<String>) -> Self {
        Outcome {
            supported: true,
            detail: detail.into(),
        }
    }

    fn no(detail: impl Into<String>) -> Self {
        Outcome {
            supported: false,
            detail: detail.into(),
        }
    }

    fn into_feature(self, name: &'static str, since: &'static str) -> Feature {
        Feature {
            name,
            supported: self.supported,
            detail: self.detail,
            since,
        }
    }
}

fn probe_send_zc(ring: &IoUring) -> Outcome {
    let mut probe = Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) if probe.is_supported(opcode::SendZc::CODE) => {
            Outcome::yes("opcode probe lists IORING_OP_SEND_ZC")
        }
        Ok(()) => Outcome::no("opcode probe does not list IORING_OP_SEND_ZC"),
        Err(err) => Outcome::no(format!("opcode probe failed: {}", io_text(&err))),
    }
}

fn probe_registered_files(ring: &IoUring) -> Outcome {
    match ring.submitter().register_files_sparse(4) {
        Ok(()) => {
            // Dropping the ring releases the table anyway; unregistering is tidiness.
            let _ = ring.submitter().unregister_files();
            Outcome::yes("registered a sparse table of 4 direct descriptors")
        }
        Err(err) => Outcome::no(format!("sparse file table: {}", io_text(&err))),
    }
}

/// Build (and immediately drop) a ring on this thread with the flags `configure` sets.
fn probe_setup_flag(flags: &str, configure: impl FnOnce(&mut Builder)) -> Outcome {
    let mut builder = IoUring::<squeue::Entry, cqueue::Entry>::builder();
    configure(&mut builder);
    match builder.build(RING_ENTRIES) {
        Ok(ring) => {
            drop(ring);
            Outcome::yes(format!("ring set up with {flags}"))
        }
        Err(err) => Outcome::no(format!("setup with {flags}: {}", io_text(&err))),
    }
}

fn probe_multishot_accept() -> Outcome {
    let listener = match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))) {
        Ok(l) => l,
        Err(err) => return Outcome::no(format!("loopback listener: {}", io_text(&err))),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(err) => return Outcome::no(format!("loopback listener: {}", io_text(&err))),
    };
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(err) => return Outcome::no(format!("ring setup: {}", io_text(&err))),
    };

    let sqe = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(MULTISHOT_UD);
    // SAFETY: AcceptMulti carries no pointers (no sockaddr out-parameter), only the
    // listener's fd; `listener` outlives the request, which `drive_multishot`
    // cancels and reaps before returning (and the ring is dropped before the
    // listener in any case, as it is declared later).
    let pushed = unsafe { push(&mut ring, &sqe) };
    let run = match pushed {
        Ok(()) => drive_multishot(&mut ring, || TcpStream::connect_timeout(&addr, WAIT_BUDGET)),
        Err(err) => return Outcome::no(format!("queueing AcceptMulti: {}", io_text(&err))),
    };

    // Every non-negative accept result is a connection the kernel installed for us.
    for c in run
        .completions
        .iter()
        .filter(|c| c.user_data == MULTISHOT_UD)
    {
        if c.result >= 0 {
            // SAFETY: a non-negative result of an accept CQE is a brand-new descriptor
            // that the kernel installed in our table for this request; nothing else
            // knows about it, and each CQE is visited once, so it is closed once.
            drop(unsafe { OwnedFd::from_raw_fd(c.result) });
        }
    }

    match run.first {
        Err(detail) => Outcome::no(detail),
        Ok(c) if c.result < 0 => Outcome::no(format!("AcceptMulti: {}", errno_text(-c.result))),
        Ok(c) if cqueue::more(c.flags) => Outcome::yes("AcceptMulti posted a CQE with F_MORE"),
        Ok(_) => Outcome::no("accept completed without F_MORE (not multishot)"),
    }
}

/// Probes "provided buffer rings" and, on top of one, "multishot recv".
fn probe_buf_ring_and_multishot_recv() -> (Outcome, Outcome) {
    const BGID: u16 = 0x7262;
    const ENTRIES: u16 = 4;
    const BUF_LEN: u32 = 64;
    let ring_bytes = usize::from(ENTRIES) * std::mem::size_of::<types::BufRingEntry>();
    let map_len = ring_bytes + usize::from(ENTRIES) * BUF_LEN as usize;

    let needs = |what: &str| Outcome::no(format!("needs provided buffer rings ({what})"));
    // Declared before the ring so it is unmapped only after the ring is gone.
    let mapping = match Mapping::anonymous(map_len) {
        Ok(m) => m,
        Err(err) => {
            let why = format!("mmap: {}", io_text(&err));
            return (Outcome::no(why.clone()), needs(&why));
        }
    };
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(err) => {
            let why = format!("ring setup: {}", io_text(&err));
            return (Outcome::no(why.clone()), needs(&why));
        }
    };

    let base = mapping.ptr.as_ptr().cast::<types::BufRingEntry>();
    let buffers = mapping.ptr.as_ptr() as u64 + ring_bytes as u64;
    for i in 0..ENTRIES {
        // SAFETY: the mapping is page-aligned, zero-filled and `map_len` bytes long;
        // entry `i < ENTRIES` lies inside its first `ring_bytes` bytes, BufRingEntry
        // is a plain repr(C) struct valid for any bit pattern, and the kernel does not
        // know this memory yet, so this is the only reference to it.
        let entry = unsafe { &mut *base.add(usize::from(i)) };
        entry.set_addr(buffers + u64::from(i) * u64::from(BUF_LEN));
        entry.set_len(BUF_LEN);
        entry.set_bid(i);
    }
    // SAFETY: `base` is the page-aligned address of the ring's first entry, as
    // `BufRingEntry::tail` requires; the tail is the u16 at offset 14 of that entry,
    // so it is 2-byte aligned and can be viewed as an AtomicU16 (same size and
    // alignment), and the mapping outlives this reference.
    let tail = unsafe { &*types::BufRingEntry::tail(base).cast::<AtomicU16>() };
    // Release: the entries written above must be visible before the tail that
    // publishes them.
    tail.store(ENTRIES, Ordering::Release);

    // SAFETY: the ring memory and the buffers it points to stay mapped until the
    // group is unregistered or the ring is dropped: `mapping` is declared before
    // `ring` (so it is dropped after it), and it is leaked instead of unmapped if a
    // request using the group might still be in flight (see below).
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(base as u64, ENTRIES, BGID, 0)
    };
    if let Err(err) = registered {
        let why = format!("registering a buffer ring: {}", io_text(&err));
        return (Outcome::no(why), needs("registration failed"));
    }
    let buf_rings = Outcome::yes(format!(
        "registered a ring of {ENTRIES} buffers as group {BGID}"
    ));

    let (mut tx, rx) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(err) => {
            let _ = ring.submitter().unregister_buf_ring(BGID);
            return (
                buf_rings,
                Outcome::no(format!("socketpair: {}", io_text(&err))),
            );
        }
    };
    let sqe = opcode::RecvMulti::new(types::Fd(rx.as_raw_fd()), BGID)
        .build()
        .user_data(MULTISHOT_UD);
    // SAFETY: RecvMulti names no memory of its own: it receives into buffers picked
    // from group BGID, whose memory stays valid while the request can run (the
    // mapping is leaked below unless the request is known to have terminated); `rx`
    // outlives the request, which `drive_multishot` cancels and reaps.
    let pushed = unsafe { push(&mut ring, &sqe) };
    let run = match pushed {
        Ok(()) => drive_multishot(&mut ring, || tx.write_all(b"ringnet probe")),
        Err(err) => {
            let _ = ring.submitter().unregister_buf_ring(BGID);
            return (
                buf_rings,
                Outcome::no(format!("queueing RecvMulti: {}", io_text(&err))),
            );
        }
    };
    let quiesced = run.quiesced;
    let recv = match run.first {
        Err(detail) => Outcome::no(detail),
        Ok(c) if c.result < 0 => Outcome::no(format!("RecvMulti: {}", errno_text(-c.result))),
        Ok(c) => match (
            c.result > 0,
            cqueue::more(c.flags),
            cqueue::buffer_select(c.flags),
        ) {
            (true, true, Some(bid)) => Outcome::yes(format!(
                "RecvMulti put {} bytes in buffer {bid} and posted F_MORE",
                c.result
            )),
            (false, _, _) => Outcome::no("RecvMulti completed with 0 bytes"),
            (true, false, _) => Outcome::no("recv completed without F_MORE (not multishot)"),
            (true, true, None) => Outcome::no("RecvMulti posted no selected buffer"),
        },
    };

    let _ = ring.submitter().unregister_buf_ring(BGID);
    drop(ring);
    if !quiesced {
        // The recv might still be armed and write into the buffers later: never
        // hand that memory back to the allocator (one page leaked, once).
        mapping.leak();
    }
    (buf_rings, recv)
}

/// What happened to one multishot request driven by [`drive_multishot`].
struct MultishotRun {
    /// The first completion of the request, or why none was obtained.
    first: Result<Completion, String>,
    /// Every completion reaped from the ring (the request's and the cancel's).
    completions: Vec<Completion>,
    /// The request is known to be finished (a completion without `F_MORE` was seen).
    quiesced: bool,
}

/// Submit the already queued multishot request (`MULTISHOT_UD`), run `trigger` to
/// make it complete, wait (bounded) for its first completion, then cancel it and
/// reap until it has terminated (also bounded).
fn drive_multishot<T>(ring: &mut IoUring, trigger: impl FnOnce() -> io::Result<T>) -> MultishotRun {
    let mut reaper = Reaper::default();
    let is_ours = |c: &Completion| c.user_data == MULTISHOT_UD;
    let terminal = |c: &Completion| is_ours(c) && !cqueue::more(c.flags);

    let first = match ring.submit() {
        Err(err) => Err(format!("submit: {}", io_text(&err))),
        Ok(_) => match trigger() {
            Err(err) => Err(format!("triggering the request: {}", io_text(&err))),
            Ok(keep_alive) => {
                let deadline = Instant::now() + WAIT_BUDGET;
                let waited = reaper.wait_for(ring, deadline, |seen| seen.iter().any(is_ours));
                drop(keep_alive);
                match waited {
                    Ok(()) => reaper
                        .seen
                        .iter()
                        .copied()
                        .find(is_ours)
                        .ok_or_else(|| "no completion".to_owned()),
                    Err(err) => Err(err.to_string()),
                }
            }
        },
    };

    let mut quiesced = reaper.seen.iter().any(terminal);
    if !quiesced {
        let cancel = opcode::AsyncCancel::new(MULTISHOT_UD)
            .build()
            .user_data(CANCEL_UD);
        // SAFETY: AsyncCancel only carries the user_data to match; it names no memory
        // or descriptor.
        if unsafe { push(ring, &cancel) }.is_ok() {
            let deadline = Instant::now() + WAIT_BUDGET;
            let _ = reaper.wait_for(ring, deadline, |seen| {
                seen.iter().any(terminal) && seen.iter().any(|c| c.user_data == CANCEL_UD)
            });
        }
        quiesced = reaper.seen.iter().any(terminal);
    }
    MultishotRun {
        first,
        completions: reaper.seen,
        quiesced,
    }
}

/// The parts of a CQE the probes look at.
#[derive(Debug, Clone, Copy)]
struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

enum WaitError {
    TimedOut,
    Io(io::Error),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut => f.write_str("timed out"),
            WaitError::Io(err) => write!(f, "waiting for completions: {}", io_text(err)),
        }
    }
}

/// Collects completions and waits for them with a deadline.
#[derive(Default)]
struct Reaper {
    seen: Vec<Completion>,
    /// A fallback `Timeout` request is in flight (only without `EXT_ARG`).
    timeout_armed: bool,
    /// The fallback `Timeout` failed with this errno (e.g. unsupported opcode).
    timeout_failed: Option<i32>,
}

impl Reaper {
    fn drain(&mut self, ring: &mut IoUring) {
        for cqe in ring.completion() {
            if cqe.user_data() == TIMEOUT_UD {
                self.timeout_armed = false;
                if cqe.result() != -libc::ETIME {
                    self.timeout_failed = Some(-cqe.result());
                }
                continue;
            }
            self.seen.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    /// Submit pending SQEs and wait until `done(&self.seen)` holds or `deadline` passes.
    fn wait_for(
        &mut self,
        ring: &mut IoUring,
        deadline: Instant,
        mut done: impl FnMut(&[Completion]) -> bool,
    ) -> Result<(), WaitError> {
        loop {
            self.drain(ring);
            if done(&self.seen) {
                return Ok(());
            }
            if let Some(errno) = self.timeout_failed {
                let err = io::Error::from_raw_os_error(errno);
                return Err(WaitError::Io(err));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::TimedOut);
            }
            let left = deadline - now;
            let ts = types::Timespec::new()
                .sec(left.as_secs())
                .nsec(left.subsec_nanos());
            let waited = if ring.params().is_feature_ext_arg() {
                let args = types::SubmitArgs::new().timespec(&ts);
                ring.submitter().submit_with_args(1, &args)
            } else {
                // Kernels before 5.11 cannot take a timeout in io_uring_enter: bound
                // the wait with a Timeout request instead.
                if !self.timeout_armed {
                    let timeout = opcode::Timeout::new(&ts).build().user_data(TIMEOUT_UD);
                    // SAFETY: the kernel copies the timespec while preparing the SQE,
                    // which happens inside the submit_and_wait call below (these rings
                    // never use SQPOLL), while `ts` is still alive.
                    unsafe { push(ring, &timeout) }.map_err(WaitError::Io)?;
                    self.timeout_armed = true;
                }
                ring.submit_and_wait(1)
            };
            match waited {
                Ok(_) => {}
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(err) => return Err(WaitError::Io(err)),
            }
        }
    }
}

/// Queue `entry` on `ring`'s submission queue.
///
/// # Safety
///
/// Every buffer, pointer and descriptor `entry` names must stay valid until the
/// request has completed (its last CQE was reaped) or the ring has been dropped.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    // SAFETY: the validity of what `entry` references is this function's own
    // contract, forwarded to the caller.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| io::Error::other("submission queue is full"))
}

/// An anonymous private memory mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint only creates new
        // memory; it cannot alias or replace anything that already exists.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(addr)
            .map(|ptr| Mapping { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))
    }

    /// Give up the mapping without unmapping it.
    fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `anonymous`, and the
        // only user besides us (a buffer ring registration) was unregistered or its
        // ring dropped with no request left that could use it; otherwise the mapping
        // is leaked and this never runs.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), self.len);
        }
    }
}

/// The OS description of `errno` without the " (os error N)" suffix std appends.
fn os_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.strip_suffix(&format!(" (os error {errno})")) {
        Some(stripped) => stripped.to_owned(),
        None => text,
    }
}

/// `"Invalid argument (errno 22)"`.
fn errno_text(errno: i32) -> String {
    format!("{} (errno {errno})", os_text(errno))
}

fn io_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => errno_text(errno),
        None => err.to_string(),
    }
}

/// `s` with control characters (newlines, tabs, ...) replaced by spaces, so a table
/// row stays on one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Append `s` to `out` as a JSON string literal (quotes included).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn enosys_means_no_kernel_support() {
        let e = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(e.errno, libc::ENOSYS);
        assert!(e.reason.contains("CONFIG_IO_URING=n"), "{}", e.reason);
        assert!(e.reason.contains("5.1"), "{}", e.reason);
    }

    #[test]
    fn eperm_blames_seccomp_or_the_sysctl() {
        let err = io::Error::from_raw_os_error(libc::EPERM);
        // Whatever the sysctl says on this machine, the public function names a cause.
        let live = explain_setup_error(&err);
        assert_eq!(live.errno, libc::EPERM);
        assert!(
            live.reason.contains("seccomp") || live.reason.contains("io_uring_disabled"),
            "{}",
            live.reason
        );

        let missing = explain_with_sysctl(&err, None);
        assert!(missing.reason.contains("seccomp"), "{}", missing.reason);
        assert!(missing.reason.contains("Docker"), "{}", missing.reason);

        let zero = explain_with_sysctl(&err, Some("0"));
        assert!(zero.reason.contains("seccomp"), "{}", zero.reason);
        assert!(
            zero.reason.contains("io_uring_disabled=0"),
            "{}",
            zero.reason
        );

        let one = explain_with_sysctl(&err, Some("1"));
        assert!(one.reason.contains("io_uring_disabled=1"), "{}", one.reason);
        assert!(one.reason.contains("CAP_SYS_ADMIN"), "{}", one.reason);
        assert!(one.reason.contains("io_uring_group"), "{}", one.reason);

        let two = explain_with_sysctl(&err, Some("2"));
        assert!(two.reason.contains("io_uring_disabled=2"), "{}", two.reason);
        assert!(two.reason.contains("everyone"), "{}", two.reason);
    }

    #[test]
    fn enomem_means_memlock() {
        let e = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOMEM));
        assert_eq!(e.errno, libc::ENOMEM);
        assert!(e.reason.contains("RLIMIT_MEMLOCK"), "{}", e.reason);
        assert!(e.reason.contains("5.12"), "{}", e.reason);
    }

    #[test]
    fn other_errors_use_the_os_text() {
        let e = explain_setup_error(&io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(e.errno, libc::EINVAL);
        assert_eq!(e.reason, "Invalid argument");
        assert_eq!(
            e.to_string(),
            "io_uring unavailable: Invalid argument (errno 22)"
        );

        let no_errno = explain_setup_error(&io::Error::other("weird"));
        assert_eq!(no_errno.errno, 0);
        assert_eq!(no_errno.reason, "weird");
    }

    #[test]
    fn json_has_the_exact_layout() {
        let report = sample(
            Ok(()),
            vec![
                feature("multishot accept", true, "ok"),
                feature("NODROP", false, "no"),
            ],
        );
        assert_eq!(
            report.to_json(),
            concat!(
                r#"{"kernel":"6.18.0-test","io_uring":{"ok":true,"errno":null,"reason":null},"#,
                r#""features":[{"name":"multishot accept","supported":true,"since":"5.19","detail":"ok"},"#,
                r#"{"name":"NODROP","supported":false,"since":"5.19","detail":"no"}]}"#
            )
        );
    }

    #[test]
    fn json_reports_setup_errors() {
        let report = sample(
            Err(SetupError {
                errno: 1,
                reason: "blocked \"here\"".to_owned(),
            }),
            Vec::new(),
        );
        assert_eq!(
            report.to_json(),
            r#"{"kernel":"6.18.0-test","io_uring":{"ok":false,"errno":1,"reason":"blocked \"here\""},"features":[]}"#
        );
    }

    #[test]
    fn json_escapes_strings() {
        let report = sample(
            Ok(()),
            vec![feature(
                "SQPOLL",
                false,
                "say \"hi\"\\ path\nnext\ttab\u{1}",
            )],
        );
        let json = report.to_json();
        assert!(
            json.contains(r#""detail":"say \"hi\"\\ path\nnext\ttab\u0001""#),
            "{json}"
        );
        assert!(!json.contains('\n'), "{json}");
    }

    #[test]
    fn table_has_one_line_per_feature() {
        let features = vec![
            feature(
                "multishot accept",
                true,
                "AcceptMulti posted a CQE with F_MORE",
            ),
            feature("multishot recv", false, "line one\nline two"),
            feature("NODROP", true, "fine"),
        ];
        let report = sample(Ok(()), features.clone());
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        // kernel, io_uring, column header, then the features.
        assert_eq!(lines.len(), 3 + features.len(), "{table}");
        assert!(lines[0].contains("6.18.0-test"), "{table}");
        assert!(lines[1].contains("ok"), "{table}");
        for (f, line) in features.iter().zip(&lines[3..]) {
            assert!(line.starts_with(f.name), "{line}");
            let expected = if f.supported { "yes" } else { "no" };
            assert_eq!(
                line.split_whitespace().nth(f.name.split(' ').count()),
                Some(expected)
            );
        }
        // Columns line up: "supported" starts at the same offset in every row.
        let col = lines[2].find("supported").unwrap_or(0);
        for line in &lines[3..] {
            assert!(
                line[col..].starts_with("yes") || line[col..].starts_with("no"),
                "{table}"
            );
        }
        assert!(lines.iter().all(|l| l == &l.trim_end()), "{table}");
    }

    #[test]
    fn table_without_uring_explains_why() {
        let report = sample(
            Err(SetupError {
                errno: 38,
                reason: "no io_uring".to_owned(),
            }),
            Vec::new(),
        );
        let table = report.to_table();
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(
            table.contains("io_uring: unavailable: no io_uring (errno 38)"),
            "{table}"
        );
    }

    #[test]
    fn feature_lookup_by_name() {
        let report = sample(Ok(()), vec![feature("NODROP", true, "")]);
        assert!(report.feature("NODROP").is_some_and(|f| f.supported));
        assert!(report.feature("SQPOLL").is_none());
    }

    #[test]
    fn live_probe_is_well_formed() {
        let report = probe();
        if let Err(err) = &report.uring {
            eprintln!("skipping: {err}");
            assert!(report.features.is_empty());
            return;
        }
        let names: Vec<&str> = report.features.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                MULTISHOT_ACCEPT,
                MULTISHOT_RECV,
                PROVIDED_BUFFER_RINGS,
                SEND_ZC,
                SINGLE_ISSUER,
                DEFER_TASKRUN,
                COOP_TASKRUN,
                SQPOLL,
                REGISTERED_FILES,
                RECV_BUNDLES,
                NODROP,
                MIN_WAIT
            ]
        );
        assert!(report.features.iter().all(|f| !f.detail.is_empty()));
    }
}
