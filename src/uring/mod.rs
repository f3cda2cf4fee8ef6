//! The io_uring backend: ring setup, provided buffer rings and the worker
//! event loop. Every io_uring call of the crate lives below this module.
//!
//! * `bufring` maps and registers provided buffer rings (5.19), in an
//!   anonymous mapping (`mmap`, shared with the probe's test ring).
//! * `groups` keeps the worker's buffer groups: the shared one, and the
//!   pool of per-connection rings recycled as connections come and go.
//! * `ring` is the one submission path: every SQE is built there, the
//!   memory in-flight operations point at is held there until their last
//!   completion, and completions are typed once. The engine's io_uring
//!   driver and the UDP worker use it.
//! * [`probe`] finds out what this kernel supports.

pub(crate) mod bufring;
pub(crate) mod groups;
pub(crate) mod mmap;
pub mod probe;
pub(crate) mod ring;
mod store;
pub(crate) mod udp;

use io_uring::IoUring;

use crate::config::Config;
use crate::error::Error;

/// Build a worker's ring: SINGLE_ISSUER + DEFER_TASKRUN (6.1) where the
/// kernel has them (and `cfg.defer_taskrun` asks for them), else
/// COOP_TASKRUN + TASKRUN_FLAG (5.19), else plain; the
/// CQ sized by `cq_entries`. Refuses a kernel without IORING_FEAT_NODROP
/// (5.5), on which a full CQ would silently lose completions.
///
/// Must be called on the thread that will submit: SINGLE_ISSUER binds the
/// ring to it.
pub(crate) fn build_ring(cfg: &Config) -> Result<IoUring, Error> {
    if let Some(idle) = cfg.sqpoll_idle {
        return build_sqpoll_ring(cfg, idle);
    }
    let mut last = None;
    let first = if cfg.defer_taskrun { 0 } else { 1 };
    for level in first..3 {
        let mut b = IoUring::builder();
        b.setup_cqsize(cfg.cq_entries);
        match level {
            0 => b.setup_single_issuer().setup_defer_taskrun(),
            1 => b.setup_coop_taskrun().setup_taskrun_flag(),
            _ => &mut b,
        };
        match b.build(cfg.sq_entries) {
            Ok(ring) => {
                if !ring.params().is_feature_nodrop() {
                    return Err(Error::Unsupported {
                        feature: "IORING_FEAT_NODROP",
                        detail:
                            "the kernel may drop completions when the CQ is full (needs Linux 5.5)"
                                .into(),
                    });
                }
                return Ok(ring);
            }
            // EINVAL: this kernel does not know one of the flags; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => {
                return Err(Error::UringUnavailable(
                    probe::explain_setup_error(&e).reason_with_errno(),
                ))
            }
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL));
    Err(Error::UringUnavailable(
        probe::explain_setup_error(&e).reason_with_errno(),
    ))
}

/// A ring with SQPOLL (`cfg.sqpoll_idle`): with SINGLE_ISSUER where the
/// kernel takes it, else alone. Asked for explicitly, so a kernel or a
/// policy that refuses it is an error that says why, not a quiet fallback.
fn build_sqpoll_ring(cfg: &Config, idle: std::time::Duration) -> Result<IoUring, Error> {
    let idle_ms = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX).max(1);
    let mut last = None;
    for single_issuer in [true, false] {
        let mut b = IoUring::builder();
        b.setup_cqsize(cfg.cq_entries).setup_sqpoll(idle_ms);
        if let Some(cpu) = cfg.sqpoll_cpu {
            b.setup_sqpoll_cpu(u32::try_from(cpu).unwrap_or(u32::MAX));
        }
        if single_issuer {
            b.setup_single_issuer();
        }
        match b.build(cfg.sq_entries) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && single_issuer => last = Some(e),
            Err(e) => last = Some(e),
        }
        if !single_issuer {
            break;
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL));
    Err(Error::Unsupported {
        feature: "SQPOLL",
        detail: format!("the kernel refused a ring with SQPOLL: {e}"),
    })
}

/// Cancel every request on `ring` and wait (up to a second) until the
/// kernel is done with them (IORING_REGISTER_SYNC_CANCEL, Linux 6.0): after
/// an error exit, before the memory in-flight requests point at is freed.
pub(crate) fn cancel_all_sync(ring: &IoUring) {
    let timeout = io_uring::types::Timespec::from(std::time::Duration::from_secs(1));
    let _ = ring
        .submitter()
        .register_sync_cancel(Some(timeout), io_uring::types::CancelBuilder::any());
}
