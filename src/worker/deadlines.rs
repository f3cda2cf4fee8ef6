//! Every deadline of a worker, on one mechanism: two [`TimerQueue`]s (the
//! engine's own deadlines, and the handler's timers) under the worker's one
//! kernel timer. The engine's are typed ([`Due`]): lingering closes, idle
//! and read timeouts, write checks, connect timeouts, reconnect and accept
//! backoff, the shutdown deadline. Each names its connection by `ConnId`
//! (or pending slot and generation), so one left behind by a connection
//! that closed does nothing when it comes up; such leftovers are swept out
//! once they are as many again as the timers left at the last sweep.

use std::time::{Duration, Instant};

use super::timeouts::{idle_verdict, read_verdict, Verdict};
use super::{Accept, Worker};
use crate::conn::Phase;
use crate::connect::{ConnectError, ConnectRequest};
use crate::handler::{CloseReason, Handler, TimerOwner};
use crate::timer::{after, TimerQueue};
use crate::token::ConnId;

/// What one of the engine's own deadlines is for.
#[derive(Debug)]
pub(super) enum Due {
    /// A lingering close has waited `Config::linger`.
    Linger(ConnId),
    /// Look at a connection's idle time.
    Idle(ConnId),
    /// Look at a connection's partial message (read timeout).
    Read(ConnId),
    /// A TLS connection's handshake must be over by now.
    Handshake(ConnId),
    /// Check the connections with output waiting against `write_timeout`.
    WriteCheck,
    /// An outbound attempt's timeout (its pending slot and generation).
    Connect { key: u32, generation: u32 },
    /// A persistent connection's next round (boxed: the queue's entries
    /// stay small).
    Reconnect(Box<ConnectRequest>),
    /// Accepting on a listener (by index) may start again.
    AcceptBackoff(u16),
    /// Connections still open at the end of a shutdown are closed.
    Shutdown,
}

impl Due {
    /// The connection this deadline belongs to, if any.
    fn conn(&self) -> Option<ConnId> {
        match self {
            Due::Linger(c) | Due::Idle(c) | Due::Read(c) | Due::Handshake(c) => Some(*c),
            _ => None,
        }
    }
}

/// Both queues of a worker.
pub(super) struct Deadlines {
    pub(super) engine: TimerQueue<Due>,
    pub(super) handler: TimerQueue<TimerOwner>,
    /// Timers left at the last sweep of both queues.
    swept: usize,
}

impl Deadlines {
    /// The queues of worker `index` (its handler's timer keys carry it).
    pub(super) fn new(now: Instant, index: usize) -> Deadlines {
        Deadlines {
            engine: TimerQueue::new(now),
            handler: TimerQueue::with_id(now, index as u32),
            swept: 0,
        }
    }

    /// Arm an engine deadline `d` after `now`.
    pub(super) fn arm(&mut self, now: Instant, d: Duration, due: Due) {
        self.engine.arm(after(now, d), due);
    }

    /// The nearest deadline of either queue (asked before each wait).
    #[inline(always)]
    pub(super) fn next(&mut self) -> Option<Instant> {
        [self.engine.next_deadline(), self.handler.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

impl<H: Handler> Worker<H> {
    /// The open connection `conn` names (not torn down), if any.
    fn live(&mut self, conn: ConnId) -> Option<&mut super::Slot<H::State>> {
        self.conns
            .get_mut(conn.key())
            .filter(|s| s.core.id == conn && !s.core.is_closed())
    }

    /// Handle the deadlines due by `now`: the handler's timers, then the
    /// engine's, each in deadline order. A pass takes at most as many as
    /// were armed when it began, so one re-armed for `now` (a zero
    /// timeout) waits for the next pass instead of spinning this one.
    pub(super) fn run_timers(&mut self, now: Instant) {
        self.fire_handler_timers(now);
        let mut budget = self.deadlines.engine.len();
        while budget > 0 {
            budget -= 1;
            let Some((_, due)) = self.deadlines.engine.pop_due(now) else {
                break;
            };
            match due {
                Due::Linger(conn) => {
                    if let Some(s) = self.live(conn) {
                        if matches!(s.core.phase, Phase::Lingering) {
                            let reason = s.core.close_reason();
                            self.teardown(conn.key(), reason);
                        }
                    }
                }
                Due::Idle(conn) => self.input_timeout_due(conn, now, false),
                Due::Read(conn) => self.input_timeout_due(conn, now, true),
                Due::Handshake(conn) => {
                    if self.live(conn).is_some_and(|s| s.core.tls_handshaking()) {
                        self.ctx.stats.add(&self.ctx.stats.tls_failures, 1);
                        log::info!("TLS handshake of {conn} timed out");
                        self.teardown(conn.key(), CloseReason::TlsHandshakeTimeout);
                    }
                }
                Due::WriteCheck => self.check_writes(now),
                Due::Connect { key, generation } => {
                    let key = key as usize;
                    if self
                        .pending
                        .get(key)
                        .is_some_and(|p| p.generation == generation)
                    {
                        self.abort_connect(key, ConnectError::TimedOut);
                    }
                }
                Due::Reconnect(req) => self.start_connect(*req),
                Due::AcceptBackoff(listener) => {
                    let index = usize::from(listener);
                    if self.accepts[index] == Accept::Backoff {
                        self.accepts[index] = Accept::Idle;
                        self.arm_accept(listener);
                    }
                }
                Due::Shutdown => {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        if !self.conns[key].core.is_closed() {
                            self.ctx.stats.add(&self.ctx.stats.shutdown_forced, 1);
                        }
                        self.teardown(key, CloseReason::Shutdown);
                    }
                }
            }
        }
    }

    /// An idle-timeout (`read`: read-timeout) entry is due: close a
    /// connection with no traffic for `idle_timeout` (whose partial message
    /// is older than `read_timeout`), look again later at one active since
    /// (follow a younger message).
    fn input_timeout_due(&mut self, conn: ConnId, now: Instant, read: bool) {
        let cfg = &self.ctx.cfg;
        let Some(limit) = (if read {
            cfg.read_timeout
        } else {
            cfg.idle_timeout
        }) else {
            return;
        };
        let Some(s) = self.live(conn) else {
            return;
        };
        let verdict = if read {
            read_verdict(&mut s.core, now, limit)
        } else {
            idle_verdict(&s.core, now, limit)
        };
        match verdict {
            Verdict::Close(reason) => {
                s.core.close(reason);
                let st = &self.ctx.stats;
                st.add(
                    if read {
                        &st.read_timeouts
                    } else {
                        &st.idle_timeouts
                    },
                    1,
                );
                self.mark_dirty(conn.key());
            }
            Verdict::Recheck(at) => {
                let due = if read {
                    Due::Read(conn)
                } else {
                    Due::Idle(conn)
                };
                self.deadlines.engine.arm(at, due);
            }
            Verdict::Drop => {}
        }
    }

    /// Fire the handler's timers due by `now`, in deadline order.
    fn fire_handler_timers(&mut self, now: Instant) {
        let mut budget = self.deadlines.handler.len();
        while budget > 0 {
            budget -= 1;
            let Some((key, owner)) = self.deadlines.handler.next_due(now).map(|(k, o)| (k, *o))
            else {
                break;
            };
            match owner {
                TimerOwner::Conn { conn, id } => {
                    self.deadlines.handler.cancel(key);
                    // Only while the connection is open: not once it is
                    // closing (the handler closed it, an error, the peer's
                    // end), whether or not on_close has come yet.
                    let open = self
                        .conns
                        .get(conn.key())
                        .is_some_and(|s| s.core.id == conn && !s.core.is_closing());
                    if open {
                        self.with_conn(conn.key(), |h, c, state| h.on_timer(c, state, id));
                        self.mark_dirty(conn.key());
                    }
                }
                TimerOwner::Worker { id, every_ns } => {
                    if every_ns == 0 {
                        self.deadlines.handler.cancel(key);
                    } else {
                        // Every `every` from the first deadline, skipping
                        // ticks missed while the worker was busy.
                        let every = Duration::from_nanos(every_ns);
                        let due = self.deadlines.handler.deadline(key).unwrap_or(now);
                        let mut at = after(due, every);
                        if at <= now {
                            at = after(now, every);
                        }
                        self.deadlines.handler.reschedule(key, at);
                    }
                    self.with_ctx(|h, ctx| h.on_worker_timer(ctx, id));
                }
            }
        }
    }

    /// Drop the deadlines and timers of connections that have closed once
    /// both queues hold as many again as at the last sweep (amortised O(1)
    /// per timer armed; until then they are skipped when due).
    pub(super) fn sweep_deadlines(&mut self, force: bool) {
        let d = &mut self.deadlines;
        let armed = d.engine.len() + d.handler.len();
        if !force && armed <= 2 * d.swept + 1024 {
            return;
        }
        let conns = &self.conns;
        let alive = |c: ConnId| {
            conns
                .get(c.key())
                .is_some_and(|s| s.core.id == c && !s.core.is_closed())
        };
        d.engine.retain(|due| due.conn().map_or(true, alive));
        d.handler.retain(|o| match *o {
            TimerOwner::Conn { conn, .. } => alive(conn),
            TimerOwner::Worker { .. } => true,
        });
        d.swept = d.engine.len() + d.handler.len();
    }
}
