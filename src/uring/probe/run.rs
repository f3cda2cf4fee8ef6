//! Driving a probe's ring: submitting, waiting for completions with a
//! deadline (with or without `EXT_ARG`), and cancelling a multishot request
//! until its last completion has been reaped.

use std::fmt;
use std::io;
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{io_text, WAIT_BUDGET};

/// `user_data` of the multishot request under test.
pub(super) const MULTISHOT_UD: u64 = 1;
/// `user_data` of the `AsyncCancel` that tears the multishot request down.
const CANCEL_UD: u64 = 2;
/// `user_data` of the fallback `Timeout` used to bound waits without `EXT_ARG`.
const TIMEOUT_UD: u64 = u64::MAX;

/// What happened to one multishot request driven by [`drive_multishot`].
pub(super) struct MultishotRun {
    /// The first completion of the request, or why none was obtained.
    pub(super) first: Result<Completion, String>,
    /// Every completion reaped from the ring (the request's and the cancel's).
    pub(super) completions: Vec<Completion>,
    /// The request is known to be finished (a completion without `F_MORE` was seen).
    pub(super) quiesced: bool,
}

/// Submit the already queued multishot request (`MULTISHOT_UD`), run `trigger` to
/// make it complete, wait (bounded) for its first completion, then cancel it and
/// reap until it has terminated (also bounded).
pub(super) fn drive_multishot<T>(
    ring: &mut IoUring,
    trigger: impl FnOnce() -> io::Result<T>,
) -> MultishotRun {
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
pub(super) struct Completion {
    pub(super) user_data: u64,
    pub(super) result: i32,
    pub(super) flags: u32,
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
pub(super) unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    // SAFETY: the validity of what `entry` references is this function's own
    // contract, forwarded to the caller.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| io::Error::other("submission queue is full"))
}
