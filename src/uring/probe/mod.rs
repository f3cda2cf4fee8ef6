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
//!
//! The report also carries the socket limits (`limits`: the sysctls that cap
//! backlogs, buffers and ephemeral ports, `RLIMIT_NOFILE`, the connect
//! timeout SYN retries imply), read from `/proc/sys` and getrlimit(2).
//!
//! The module's parts: `report` holds the public report types and the table
//! `ringnet probe` prints; `limits` reads the socket limits; `setup` explains why a ring cannot be set up;
//! `features` runs the individual feature probes; `run` drives a ring for
//! them (submitting, bounded waits, cancelling a multishot request).

mod features;
mod limits;
mod newer;
mod report;
mod run;
mod setup;

use std::fs;
use std::io;
use std::time::Duration;

use io_uring::IoUring;

pub use limits::{socket_limits, syn_connect_timeout, FileLimit, SocketLimits};
pub use report::{Feature, ProbeReport, SetupError};
pub use setup::explain_setup_error;

use features::{
    probe_buf_ring_and_multishot_recv, probe_multishot_accept, probe_registered_files,
    probe_send_zc, probe_setup_flag, Outcome,
};

/// Entries of every ring the probe creates.
const RING_ENTRIES: u32 = 8;
/// Upper bound for each individual wait on a completion.
const WAIT_BUDGET: Duration = Duration::from_secs(1);

const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

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
const REGISTERED_RING: &str = "registered ring fd";
const HUGE_PAGES: &str = "huge-page buffer rings";
const INCREMENTAL_BUFFERS: &str = "incremental buffers";
const ACCEPT_DIRECT: &str = "accept into fixed table";
const FIXED_BUFFERS: &str = "fixed buffers";
const NAPI: &str = "NAPI busy poll";
const ZCRX: &str = "zero-copy receive";
const CQE_SKIP_SUCCESS: &str = "CQE_SKIP_SUCCESS";

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
                socket_limits: socket_limits(),
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
        newer::probe_silent_closes().into_feature(CQE_SKIP_SUCCESS, "5.17"),
        newer::probe_registered_ring().into_feature(REGISTERED_RING, "5.18"),
        newer::probe_huge_pages().into_feature(HUGE_PAGES, "2.6.38"),
        newer::probe_incremental_buffers().into_feature(INCREMENTAL_BUFFERS, "6.12"),
        newer::probe_accept_direct().into_feature(ACCEPT_DIRECT, "5.19"),
        newer::probe_fixed_buffers().into_feature(FIXED_BUFFERS, "5.1"),
        newer::probe_napi().into_feature(NAPI, "6.9"),
        newer::probe_zcrx().into_feature(ZCRX, "6.15"),
    ];
    ProbeReport {
        kernel,
        uring: Ok(()),
        features,
        socket_limits: socket_limits(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
                MIN_WAIT,
                CQE_SKIP_SUCCESS,
                REGISTERED_RING,
                HUGE_PAGES,
                INCREMENTAL_BUFFERS,
                ACCEPT_DIRECT,
                FIXED_BUFFERS,
                NAPI,
                ZCRX
            ]
        );
        assert!(report.features.iter().all(|f| !f.detail.is_empty()));
        // The features the engine offers work wherever the kernel is new
        // enough for them (zero-copy receive needs a NIC: never here).
        let version =
            |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
        let kernel: Vec<u32> = version(
            report
                .kernel
                .split(|c: char| !c.is_ascii_digit() && c != '.')
                .next()
                .unwrap_or(""),
        );
        for f in &report.features {
            if [
                REGISTERED_RING,
                INCREMENTAL_BUFFERS,
                ACCEPT_DIRECT,
                FIXED_BUFFERS,
                NAPI,
            ]
            .contains(&f.name)
                && kernel >= version(f.since)
            {
                assert!(f.supported, "{} on {}: {}", f.name, report.kernel, f.detail);
            }
            if f.name == ZCRX {
                assert!(!f.supported, "{}", f.detail);
            }
        }
    }
}
