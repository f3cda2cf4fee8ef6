//! The verdicts on a connection's timeouts — idle, read (a partial message
//! too old), write stalls — taking the connection's state and `now` and
//! returning what to do, so they are unit-tested without sockets or sleeps.
//! The deadlines themselves are in the worker's queue (`deadlines.rs`).

use std::time::{Duration, Instant};

use crate::conn::ConnCore;
use crate::timer::after;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CloseReason, ConnId};

    fn core() -> ConnCore {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        ConnCore::new(
            ConnId::new(0, 1, 1),
            Some(sock),
            Some(0),
            Some(Instant::now()),
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
        // Closing (idle and read due together close once).
        c.close(CloseReason::IdleTimeout);
        assert_eq!(read_verdict(&mut c, t0 + ms(900), ms(300)), Verdict::Drop);
        assert_eq!(idle_verdict(&c, t0 + ms(900), ms(300)), Verdict::Drop);
        c.phase = crate::conn::Phase::Open;
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
}
