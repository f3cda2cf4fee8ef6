//! Every per-connection deadline the core keeps — lingering close, idle and
//! read timeouts, write stalls — and the verdicts on them. The verdicts take
//! the connection's state and `now` and return what to do, so they are
//! unit-tested without sockets or sleeps.
//!
//! Lingering close:
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

use crate::conn::ConnCore;

/// `now + d`, saturating far in the future instead of overflowing (a
/// configured duration can be as large as `Duration::MAX`).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Connections waiting out one kind of deadline, earliest first (a
/// min-heap: idle re-checks are pushed at `last input + timeout`, which can
/// be earlier than entries already queued). Push and expiry are O(log n) and
/// no tick scans every connection. Entries are checked when they expire (the
/// connection may have closed, or been active since; the caller decides).
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    queue: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

impl Deadlines {
    /// An entry due at `at`.
    pub(crate) fn push_at(&mut self, key: usize, generation: u32, at: Instant) {
        self.queue.push(Reverse((at, key, generation)));
    }

    /// Like `push_at`, keeping the queue bounded by the connections alive in
    /// `slab` rather than by traffic: entries of closed connections stay
    /// until they expire, so when the queue holds more than twice the open
    /// connections (plus some slack) it drops every entry whose slot no
    /// longer holds its generation. Amortised O(1) per push.
    pub(crate) fn push_live<S: Generation>(
        &mut self,
        key: usize,
        generation: u32,
        at: Instant,
        slab: &slab::Slab<S>,
    ) {
        self.push_at(key, generation, at);
        if self.queue.len() > 2 * slab.len() + 1024 {
            self.queue
                .retain(|Reverse((_, k, g))| slab.get(*k).is_some_and(|s| s.generation() == *g));
        }
    }

    /// Entries queued (live or not).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
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

/// A worker's connection slot, stamped with the generation of the
/// connection it holds.
pub(crate) trait Generation {
    fn generation(&self) -> u32;
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

/// An idle-timeout entry expired: close if no input came and no output was
/// written for `idle`. A connection with output still queued is not idle (its peer is reading it,
/// and `write_timeout` closes it if that stalls), nor is one whose receiving
/// is paused (by the server's doing): look again later.
pub(crate) fn idle_verdict(core: &ConnCore, now: Instant, idle: Duration) -> Verdict {
    if core.is_closing() {
        return Verdict::Drop;
    }
    if core.is_paused() || core.queued() > 0 {
        return Verdict::Recheck(after(now, idle));
    }
    let Some(clock) = core.clock.as_deref() else {
        return Verdict::Drop;
    };
    let due = after(clock.last_active, idle);
    if due <= now {
        Verdict::Close(crate::CloseReason::IdleTimeout)
    } else {
        Verdict::Recheck(due)
    }
}

/// A read-timeout entry expired: close if the partial message now held has
/// been incomplete for `read`. A connection has at most one entry: when the
/// message it was queued for completed and a younger one is held, the entry
/// is re-queued for the younger one; with nothing held it is dropped. While
/// receiving is paused the rest of the message sits unread in the socket by
/// the server's choice, so the entry is re-queued.
pub(crate) fn read_verdict(core: &mut ConnCore, now: Instant, read: Duration) -> Verdict {
    let (closing, paused) = (core.is_closing(), core.is_paused());
    let Some(clock) = core.clock.as_deref_mut() else {
        return Verdict::Drop;
    };
    let verdict = match clock.partial_since {
        Some(_) if closing => Verdict::Drop,
        Some(_) if paused => Verdict::Recheck(after(now, read)),
        Some(t) if after(t, read) <= now => Verdict::Close(crate::CloseReason::ReadTimeout),
        Some(t) => Verdict::Recheck(after(t, read)),
        None => Verdict::Drop,
    };
    if verdict == Verdict::Drop {
        clock.read_queued = false;
    }
    verdict
}

/// What a write-timeout check found for a watched connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteCheck {
    /// Nothing left to send: stop watching it.
    Drained,
    /// No progress for `write_timeout`: close it (ETIMEDOUT).
    Stalled,
    /// Still sending: keep watching.
    Sending,
}

/// A connection whose output is watched against the write timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    pub(crate) key: usize,
    pub(crate) generation: u32,
    /// Bytes the connection had written at the last check, and when a check
    /// first found no progress since.
    mark: u32,
    stalled_since: Option<Instant>,
}

impl Watch {
    /// Start watching `core` (slot `key`, `generation`).
    pub(crate) fn new(key: usize, generation: u32, core: &ConnCore) -> Watch {
        Watch {
            key,
            generation,
            mark: core.written,
            stalled_since: None,
        }
    }
}

/// Check a watched connection's output against `timeout`; `in_flight`: a
/// send is still with the kernel (io_uring), so it is not drained even
/// with nothing queued. Progress is counted in bytes between checks, so the
/// send path reads no clock; a stall is timed from the first check that saw
/// none (so it is reported within one check interval after `timeout`).
pub(crate) fn write_check(
    w: &mut Watch,
    core: &ConnCore,
    in_flight: bool,
    now: Instant,
    timeout: Duration,
) -> WriteCheck {
    if !in_flight && core.queued() == 0 {
        return WriteCheck::Drained;
    }
    if core.written != w.mark {
        w.mark = core.written;
        w.stalled_since = None;
        return WriteCheck::Sending;
    }
    let since = *w.stalled_since.get_or_insert(now);
    if now.duration_since(since) >= timeout {
        WriteCheck::Stalled
    } else {
        WriteCheck::Sending
    }
}

/// How often watched connections are checked: a quarter of
/// `write_timeout`, between 10 ms and 1 s, so a stall is reported within a
/// quarter of the timeout after it.
pub(crate) fn write_check_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The open connections of a worker, by slab key and generation.
pub(crate) trait Slots {
    /// Slot `key`'s connection if it still holds `generation` and is not
    /// torn down.
    fn live_mut(&mut self, key: usize, generation: u32) -> Option<&mut ConnCore>;
}

/// Expire both timeout queues at `now` over the connections in `slots`. Idle entries of connections active since are
/// pushed back; the connections to close are counted in `stats`
/// (`idle_timeouts`, `read_timeouts`) and returned with their reason.
pub(crate) fn expire_timeouts(
    idle_q: &mut Deadlines,
    reads_q: &mut Deadlines,
    cfg: &crate::Config,
    stats: &crate::stats::WorkerStats,
    now: Instant,
    slots: &mut impl Slots,
) -> Vec<(usize, crate::CloseReason)> {
    let mut close = Vec::new();
    if let Some(idle) = cfg.idle_timeout {
        for (key, generation) in idle_q.expired(now) {
            let Some(c) = slots.live_mut(key, generation) else {
                continue;
            };
            match idle_verdict(c, now, idle) {
                Verdict::Close(reason) => close.push((key, reason)),
                Verdict::Recheck(at) => idle_q.push_at(key, generation, at),
                Verdict::Drop => {}
            }
        }
    }
    let idle_closes = close.len() as u64;
    stats.add(&stats.idle_timeouts, idle_closes);
    if let Some(read) = cfg.read_timeout {
        // A connection the idle pass closes is counted once, as idle.
        let idle_closed: std::collections::HashSet<usize> = close.iter().map(|c| c.0).collect();
        for (key, generation) in reads_q.expired(now) {
            let Some(c) = slots.live_mut(key, generation) else {
                continue;
            };
            if idle_closed.contains(&key) {
                continue;
            }
            match read_verdict(c, now, read) {
                Verdict::Close(reason) => close.push((key, reason)),
                Verdict::Recheck(at) => reads_q.push_at(key, generation, at),
                Verdict::Drop => {}
            }
        }
    }
    stats.add(&stats.read_timeouts, close.len() as u64 - idle_closes);
    close
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CloseReason, Config, ConnId};

    fn core() -> ConnCore {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        ConnCore::new(ConnId::new(0, 1, 1), sock, Some(Instant::now()))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One connection, in every slot.
    struct One(ConnCore);

    impl Slots for One {
        fn live_mut(&mut self, _key: usize, _generation: u32) -> Option<&mut ConnCore> {
            Some(&mut self.0)
        }
    }

    /// A test slot: just its generation.
    impl Generation for u32 {
        fn generation(&self) -> u32 {
            *self
        }
    }

    /// Entries of closed connections are dropped once they outnumber the
    /// live ones: the queue follows open connections, not traffic.
    #[test]
    fn queue_stays_bounded_by_live_connections() {
        // 100 000 connections open and close, 10 at a time; slots (keys)
        // are reused, generations are not.
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let mut slab = slab::Slab::new();
        let mut open = std::collections::VecDeque::new();
        for generation in 0..100_000u32 {
            let key = slab.insert(generation);
            open.push_back((key, generation));
            d.push_live(key, generation, t0 + Duration::from_secs(30), &slab);
            if open.len() > 10 {
                let (old, _) = open.pop_front().expect("open");
                slab.remove(old);
            }
        }
        assert!(d.len() <= 2 * 11 + 1024 + 1, "{} entries", d.len());
        // The live ones are all still there.
        let due = d.expired(t0 + Duration::from_secs(31));
        assert!(open.iter().all(|e| due.contains(e)), "{open:?}");
    }

    /// A read entry follows the message held now: re-queued for a younger
    /// message, dropped (and may be queued again) when nothing is held,
    /// re-queued while receiving is paused.
    #[test]
    fn read_entry_follows_the_current_message() {
        let t0 = Instant::now();
        let mut c = core();
        let clock = c.clock.as_deref_mut().expect("timed");
        clock.read_queued = true;
        clock.partial_since = Some(t0 + ms(250));
        assert_eq!(
            read_verdict(&mut c, t0 + ms(300), ms(300)),
            Verdict::Recheck(t0 + ms(550))
        );
        assert_eq!(
            read_verdict(&mut c, t0 + ms(550), ms(300)),
            Verdict::Close(CloseReason::ReadTimeout)
        );
        c.phase = crate::conn::Phase::Paused;
        assert_eq!(
            read_verdict(&mut c, t0 + ms(600), ms(300)),
            Verdict::Recheck(t0 + ms(900))
        );
        assert_eq!(
            idle_verdict(&c, t0 + ms(600), ms(300)),
            Verdict::Recheck(t0 + ms(900))
        );
        c.phase = crate::conn::Phase::Open;
        c.out.extend_from_slice(b"output the peer is still reading");
        assert_eq!(
            idle_verdict(&c, t0 + ms(600), ms(300)),
            Verdict::Recheck(t0 + ms(900))
        );
        c.clock.as_deref_mut().expect("timed").partial_since = None;
        assert_eq!(read_verdict(&mut c, t0 + ms(900), ms(300)), Verdict::Drop);
        let clock = c.clock.as_deref().expect("timed");
        assert!(!clock.read_queued, "a later message queues a new entry");
    }

    /// Idle and read entries of one connection expiring together close it
    /// once, counted as idle.
    /// Output that just drained is activity: the idle clock counts from
    /// when the last queued byte was written, not from the last input.
    #[test]
    fn draining_output_restarts_the_idle_clock() {
        let mut c = core();
        let long_ago = Instant::now() - ms(1000);
        c.clock.as_deref_mut().expect("timed").last_active = long_ago;
        let now = Instant::now();
        assert_eq!(
            idle_verdict(&c, now, ms(300)),
            Verdict::Close(CloseReason::IdleTimeout),
            "no traffic for a second"
        );
        c.wrote(0, Instant::now);
        assert_eq!(
            idle_verdict(&c, now, ms(300)),
            Verdict::Close(CloseReason::IdleTimeout),
            "writing nothing is no traffic"
        );
        c.out.extend_from_slice(b"more output queued");
        c.wrote(4, Instant::now);
        assert_eq!(
            c.clock.as_deref().expect("timed").last_active,
            long_ago,
            "the clock restarts when the output drains, not per write"
        );
        c.wrote(4096, Instant::now);
        let written_at = c.clock.as_deref().expect("timed").last_active;
        assert!(written_at >= now);
        assert_eq!(
            idle_verdict(&c, now, ms(300)),
            Verdict::Recheck(written_at + ms(300))
        );
    }

    #[test]
    fn write_check_drains_stalls_and_keeps_watching() {
        let mut c = core();
        let mut w = Watch::new(1, 1, &c);
        let t0 = Instant::now();
        assert_eq!(
            write_check(&mut w, &c, false, t0, ms(300)),
            WriteCheck::Drained
        );
        // A send still with the kernel is not drained, even with nothing queued.
        assert_eq!(
            write_check(&mut w, &c, true, t0, ms(300)),
            WriteCheck::Sending
        );
        // That check saw no progress: the stall clock runs from t0.
        c.out.extend_from_slice(b"unread by the peer");
        assert_eq!(
            write_check(&mut w, &c, false, t0 + ms(250), ms(300)),
            WriteCheck::Sending
        );
        assert_eq!(
            write_check(&mut w, &c, false, t0 + ms(300), ms(300)),
            WriteCheck::Stalled
        );
        c.wrote(5, Instant::now);
        assert_eq!(
            write_check(&mut w, &c, false, t0 + ms(500), ms(300)),
            WriteCheck::Sending,
            "progress starts the stall clock over"
        );
        assert_eq!(
            write_check_interval(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(write_check_interval(ms(8)), ms(10));
    }

    #[test]
    fn idle_and_read_expiring_together_close_once() {
        let t0 = Instant::now();
        let mut c = core();
        let clock = c.clock.as_deref_mut().expect("timed");
        clock.last_active = t0;
        clock.partial_since = Some(t0);
        let cfg = Config {
            idle_timeout: Some(ms(100)),
            read_timeout: Some(ms(100)),
            ..Config::default()
        };
        let (mut idle, mut reads) = (Deadlines::default(), Deadlines::default());
        idle.push_at(0, 1, t0 + ms(100));
        reads.push_at(0, 1, t0 + ms(100));
        let stats = crate::stats::WorkerStats::default();
        let closes = expire_timeouts(
            &mut idle,
            &mut reads,
            &cfg,
            &stats,
            t0 + ms(200),
            &mut One(c),
        );
        assert_eq!(closes, vec![(0, CloseReason::IdleTimeout)]);
        let counted = stats.snapshot();
        assert_eq!((counted.idle_timeouts, counted.read_timeouts), (1, 0));
    }

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
        let mut l = Deadlines::default();
        l.push_at(1, 10, t0 + Duration::from_secs(1));
        l.push_at(2, 20, t0 + Duration::from_millis(1500));
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(l.expired(t0).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_secs(1)), vec![(1, 10)]);
        assert_eq!(l.expired(t0 + Duration::from_secs(2)), vec![(2, 20)]);
        assert_eq!(l.next_deadline(), None);
    }
}
