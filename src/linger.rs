//! Lingering close and the other per-connection deadlines (idle and read
//! timeouts), shared by both backends.
//!
//! Closing a socket that still has unread input makes Linux send a reset and
//! throw away output not yet transmitted, so a peer could lose the last
//! response it was sent. A graceful close therefore shuts down the write side
//! once all output is handed to the kernel (the peer sees end of stream after
//! the last byte), keeps reading and discarding until the peer closes too,
//! and gives up after `Config::linger`. This keeps the connections waiting
//! out their linger time in deadline order; because every connection lingers
//! for the same time, a FIFO is already sorted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Connections waiting out one kind of deadline, earliest first (a
/// min-heap: idle re-checks are pushed at `last input + timeout`, which can
/// be earlier than entries already queued). Push and expiry are O(log n) and
/// no tick scans every connection. Entries are checked when they expire (the
/// connection may have closed, or been active since; the caller decides).
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    queue: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

/// The lingering-close queue.
pub(crate) type Lingering = Deadlines;

impl Deadlines {
    /// An entry due at `at`.
    pub(crate) fn push_at(&mut self, key: usize, generation: u32, at: Instant) {
        self.queue.push(Reverse((at, key, generation)));
    }

    /// Connection `key` (generation `generation`) lingers until `now + linger`.
    pub(crate) fn push(&mut self, key: usize, generation: u32, now: Instant, linger: Duration) {
        self.push_at(key, generation, now + linger);
    }

    /// The nearest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|e| e.0 .0)
    }

    /// Remove and return the `(key, generation)` of every entry due by
    /// `now`. Entries of connections that closed meanwhile come back too; the
    /// caller checks the generation.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(usize, u32)> {
        let mut due = Vec::new();
        while let Some(&Reverse((t, key, generation))) = self.queue.peek() {
            if t > now {
                break;
            }
            self.queue.pop();
            due.push((key, generation));
        }
        due
    }
}

/// What an expired idle or read-timeout entry means for its connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Close it, for this reason.
    Close(crate::CloseReason),
    /// Active since: look again at this time.
    Recheck(Instant),
    /// Nothing to do (closing already, or no partial message any more).
    Drop,
}

/// An idle-timeout entry expired: close if no input came for `idle`.
pub(crate) fn idle_verdict(
    core: &crate::handler::ConnCore,
    now: Instant,
    idle: Duration,
) -> Verdict {
    if core.closing.is_some() {
        return Verdict::Drop;
    }
    let due = core.last_input + idle;
    if due <= now {
        Verdict::Close(crate::CloseReason::IdleTimeout)
    } else {
        Verdict::Recheck(due)
    }
}

/// A read-timeout entry expired: close if the partial message now held has
/// been incomplete for `read` (an entry from an earlier partial message
/// finds the current one younger, and its own entry fires later).
pub(crate) fn read_verdict(
    core: &crate::handler::ConnCore,
    now: Instant,
    read: Duration,
) -> Verdict {
    match core.partial_since {
        Some(t) if core.closing.is_none() && t + read <= now => {
            Verdict::Close(crate::CloseReason::ReadTimeout)
        }
        _ => Verdict::Drop,
    }
}

/// Which timeout closed a connection (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    Idle,
    Read,
}

/// Expire both timeout queues at `now`. `core(key, generation)` gives the
/// connection's state if that slot still holds that connection (and it is
/// not being torn down). Idle entries of connections active since are
/// pushed back; the connections to close are returned with their reason.
pub(crate) fn expire_timeouts<'c>(
    idle_q: &mut Deadlines,
    reads_q: &mut Deadlines,
    cfg: &crate::Config,
    now: Instant,
    mut core: impl FnMut(usize, u32) -> Option<&'c crate::handler::ConnCore>,
) -> Vec<(usize, Timeout, crate::CloseReason)> {
    let mut close = Vec::new();
    if let Some(idle) = cfg.idle_timeout {
        for (key, generation) in idle_q.expired(now) {
            let Some(c) = core(key, generation) else {
                continue;
            };
            match idle_verdict(c, now, idle) {
                Verdict::Close(reason) => close.push((key, Timeout::Idle, reason)),
                Verdict::Recheck(at) => idle_q.push_at(key, generation, at),
                Verdict::Drop => {}
            }
        }
    }
    if let Some(read) = cfg.read_timeout {
        for (key, generation) in reads_q.expired(now) {
            let Some(c) = core(key, generation) else {
                continue;
            };
            if let Verdict::Close(reason) = read_verdict(c, now, read) {
                close.push((key, Timeout::Read, reason));
            }
        }
    }
    close
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_deadline_pushed_later_still_expires_first() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.push_at(1, 1, t0 + Duration::from_millis(900));
        d.push_at(2, 2, t0 + Duration::from_millis(100));
        assert_eq!(d.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(d.expired(t0 + Duration::from_millis(500)), vec![(2, 2)]);
    }

    #[test]
    fn expires_in_order() {
        let t0 = Instant::now();
        let mut l = Lingering::default();
        l.push(1, 10, t0, Duration::from_secs(1));
        l.push(
            2,
            20,
            t0 + Duration::from_millis(500),
            Duration::from_secs(1),
        );
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(l.expired(t0).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_secs(1)), vec![(1, 10)]);
        assert_eq!(l.expired(t0 + Duration::from_secs(2)), vec![(2, 20)]);
        assert_eq!(l.next_deadline(), None);
    }
}
