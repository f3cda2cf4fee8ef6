//! The engine core: one worker loop and one connection state machine for
//! both backends. It decides what to arm, send, shut down and close, when
//! to pause, time out, linger, drain on shutdown and deliver broadcasts; a
//! [`Driver`] carries the operations out and reports typed completions.
//!
//! * `mod.rs` (this file): the worker's state and its loop.
//! * `io.rs`: a connection's receiving, sending, backpressure, lingering
//!   close and teardown.
//! * `open.rs`: accepting, outbound connects, and the commands handlers
//!   and other threads send (connect, broadcast, send-to).
//! * `deadlines.rs`: every deadline (the engine's own and the handler's
//!   timers) under the one kernel timer.
//! * `timeouts.rs`: the verdicts on idle, read and write timeouts.
//!
//! # Life of a connection
//! Accepted (or connected out), it takes a slab slot stamped with a fresh
//! generation, is registered with the driver, told to the handler
//! (`on_open`) and armed for input. Its phase ([`Phase`]) then moves from
//! `Open` (and `Paused` under backpressure) to `Closing` (no more input;
//! output flushed), `Lingering` (write side shut down, input discarded
//! until the peer closes) and `Closed`; the handler hears `on_close` once,
//! when it enters `Lingering` or `Closed`. The slot is freed when no
//! operation on it is in flight.
//!
//! # Life of a completion
//! `Driver::wait` waits for a batch of completions, which `Driver::next`
//! hands over one at a time, typed, each naming its connection by key and
//! generation (a stale one is dropped). Each is dispatched as it comes;
//! then the deadlines due are handled, queued requests run,
//! receives that ended are armed again (every buffer is back by then), and
//! dirty connections are flushed in the order they became dirty.

mod deadlines;
mod io;
mod open;
pub(crate) mod timeouts;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use slab::Slab;
use socket2::Socket;

use self::deadlines::{Deadlines, Due};
use self::timeouts::Watch;
use crate::bus::{Bus, Command};
use crate::config::{Backend, Config};
use crate::conn::ConnCore;
use crate::connect::{ConnectError, ConnectRequest};
use crate::driver::{Completion, Driver, DriverConn};
use crate::handler::{CloseReason, Conn, Ctx, Env, Handler};
use crate::stats::WorkerStats;
use crate::sys::EventFd;
use crate::token::GENERATION_MASK;

/// What a worker is given by the engine.
pub(crate) struct WorkerCtx {
    pub(crate) index: usize,
    pub(crate) cfg: Config,
    /// This worker's socket of each listener, by index.
    pub(crate) listeners: Vec<WorkerListener>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) wake: Arc<EventFd>,
    /// Requests from other threads; the sender writes `wake` after each.
    pub(crate) commands: mpsc::Receiver<Command>,
    /// Every worker, for sends and broadcasts across workers.
    pub(crate) bus: Arc<Bus>,
    /// How long a shutdown may take, in milliseconds; read when the stop
    /// flag is seen (set by `Engine::shutdown_within`).
    pub(crate) shutdown_ms: Arc<AtomicU64>,
}

/// A worker's socket of one listener.
pub(crate) struct WorkerListener {
    pub(crate) sock: Arc<Socket>,
    /// Every worker accepts on this same socket (epoll then wakes one of
    /// them per connection).
    pub(crate) exclusive: bool,
    /// Its connections speak TLS.
    pub(crate) tls: Option<crate::tls::TlsAcceptor>,
}

/// Operations of a connection in flight, and list memberships (bits of
/// `Slot::ops`).
mod op {
    /// A receive is armed (io_uring: a multishot recv in flight; epoll: read
    /// interest).
    pub(super) const RECV: u8 = 1;
    /// Input ended for good (end of stream or an error): never re-armed.
    pub(super) const RECV_DONE: u8 = 2;
    /// A send is in flight.
    pub(super) const SEND: u8 = 4;
    /// A `shutdown(SHUT_WR)` is in flight.
    pub(super) const SHUT: u8 = 8;
    /// A registration is in flight (nothing may be armed before it).
    pub(super) const REG: u8 = 16;
    /// Listed in `Worker::dirty`.
    pub(super) const DIRTY: u8 = 32;
    /// Listed in `Worker::write_watch`.
    pub(super) const WATCHED: u8 = 64;
    /// Any operation in flight on the connection's descriptor.
    pub(super) const IN_FLIGHT: u8 = RECV | SEND | SHUT | REG;
}

/// One connection in a worker's slab: the core's state, the operations in
/// flight, the driver's bits, and the handler's state for it (`None` only
/// before `on_open` returns and after `on_close`).
struct Slot<S> {
    core: ConnCore,
    ops: u8,
    drv: DriverConn,
    state: Option<S>,
}

impl<S> Slot<S> {
    /// The generation the slot was stamped with (part of the connection's
    /// id).
    fn generation(&self) -> u32 {
        self.core.id.generation()
    }

    fn has(&self, bits: u8) -> bool {
        self.ops & bits != 0
    }
}

/// An outbound attempt in flight (kept apart from the connections: a
/// connection joins the slab only once it is connected).
struct Pending {
    sock: Socket,
    req: ConnectRequest,
    generation: u32,
    /// Given up (timeout or shutdown); the driver's completion is awaited.
    aborted: Option<ConnectError>,
}

/// The worker's accept on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Idle,
    Armed,
    /// Backing off after EMFILE/ENFILE/ENOMEM (until `Due::AcceptBackoff`).
    Backoff,
}

pub(crate) struct Worker<H: Handler> {
    driver: Driver,
    handler: H,
    conns: Slab<Slot<H::State>>,
    ctx: WorkerCtx,
    next_generation: u32,
    /// The accept on each listener, by index.
    accepts: Vec<Accept>,
    stopping: bool,
    /// Every deadline: the engine's own and the handler's timers.
    deadlines: Deadlines,
    /// Connections with output waiting, checked against `write_timeout`,
    /// and whether a check is armed.
    write_watch: Vec<Watch>,
    write_check_armed: bool,
    /// What handler callbacks and other threads asked for, run after the
    /// batch.
    requests: Vec<Command>,
    pending: Slab<Pending>,
    /// Connections whose output or close waits for the end of the batch.
    dirty: Vec<usize>,
    /// Connections whose receive is armed again after the batch.
    rearm: Vec<(usize, u32)>,
    /// Plaintext decrypted from a TLS connection's input (reused).
    plain: Vec<u8>,
    /// An error that ends the loop.
    fatal: Option<std::io::Error>,
}

/// The worker split for a handler callback: the driver and the slab stay
/// usable beside the handler and what it can reach (`env`).
struct Lent<'a, H: Handler> {
    driver: &'a mut Driver,
    conns: &'a mut Slab<Slot<H::State>>,
    handler: &'a mut H,
    env: Env<'a>,
    /// Plaintext out of TLS sessions, on its way to the handler.
    plain: &'a mut Vec<u8>,
}

impl<H: Handler> Worker<H> {
    /// Build the worker's driver for `backend` (on the worker's thread) and
    /// start accepting.
    pub(crate) fn new(ctx: WorkerCtx, handler: H, backend: Backend) -> Result<Self, crate::Error> {
        let index = ctx.index;
        let worker_err = move |source| crate::Error::Worker {
            worker: index,
            source,
        };
        let stats = Arc::clone(&ctx.stats);
        let driver = match backend {
            Backend::Uring => Driver::Uring(
                crate::driver::uring::UringDriver::new(&ctx.cfg, &*ctx.wake, stats).map_err(
                    |e| match e {
                        crate::Error::Io(source) => worker_err(source),
                        other => other,
                    },
                )?,
            ),
            Backend::Epoll => Driver::Epoll(
                crate::driver::epoll::EpollDriver::new(
                    ctx.cfg.buf_size as usize,
                    &*ctx.wake,
                    stats,
                )
                .map_err(worker_err)?,
            ),
        };
        let ctx_index = ctx.index;
        let ctx_listeners = ctx.listeners.len();
        let mut w = Worker {
            driver,
            handler,
            conns: Slab::new(),
            ctx,
            next_generation: 0,
            accepts: vec![Accept::Idle; ctx_listeners],
            stopping: false,
            deadlines: Deadlines::new(Instant::now(), ctx_index),
            write_watch: Vec::new(),
            write_check_armed: false,
            requests: Vec::new(),
            pending: Slab::new(),
            dirty: Vec::new(),
            rearm: Vec::new(),
            plain: Vec::new(),
            fatal: None,
        };
        w.arm_accepts();
        match w.fatal.take() {
            Some(source) => Err(worker_err(source)),
            None => Ok(w),
        }
    }

    /// Run until shutdown is requested and every connection has closed.
    pub(crate) fn run(mut self) -> std::io::Result<()> {
        self.with_ctx(|h, ctx| h.on_start(ctx));
        self.after_batch();
        loop {
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            if self.stopping
                && self.conns.is_empty()
                && self.pending.is_empty()
                && self.accepts.iter().all(|a| *a == Accept::Idle)
                && !self.driver.busy()
            {
                return Ok(());
            }
            let deadline = self.deadlines.next();
            self.driver.wait(deadline)?;
            let mut timer = false;
            while let Some(c) = self.driver.next() {
                timer |= self.dispatch(c);
            }
            if timer {
                if let Some(t) = self.deadlines.next() {
                    let now = Instant::now();
                    if t <= now {
                        self.run_timers(now);
                    }
                }
            }
            self.after_batch();
        }
    }

    /// Act on one completion; `true` for the worker timer's (deadlines may
    /// be due: checked once, after the batch).
    #[inline(always)]
    fn dispatch(&mut self, c: Completion) -> bool {
        match c {
            Completion::Accepted { listener, conn } => self.on_accepted(listener, conn),
            Completion::AcceptEnded { listener, errno } => self.on_accept_ended(listener, errno),
            Completion::Recv {
                key,
                generation,
                ev,
            } => {
                if self.current(key, generation) {
                    self.on_recv(key, ev);
                }
            }
            Completion::Writable { key, generation } => {
                if self.current(key, generation) {
                    self.mark_dirty(key);
                }
            }
            Completion::Sent {
                key,
                generation,
                res,
                buf,
            } => {
                if self.current(key, generation) {
                    self.on_sent(key, res, buf);
                }
            }
            Completion::ShutDown { key, generation } => {
                if self.current(key, generation) {
                    self.conns[key].ops &= !op::SHUT;
                    self.finish_if_idle(key);
                }
            }
            Completion::Registered {
                key,
                generation,
                ok,
            } => {
                if self.current(key, generation) {
                    self.on_registered(key, ok);
                }
            }
            Completion::Connected {
                key,
                generation,
                res,
            } => self.on_connected(key, generation, res),
            Completion::Wake => self.on_wake(),
            Completion::Timer => return true,
        }
        false
    }

    /// Whether slot `key` still holds the connection of `generation`; a
    /// completion for an earlier occupant is stale (counted, dropped).
    fn current(&self, key: usize, generation: u32) -> bool {
        let current = self
            .conns
            .get(key)
            .is_some_and(|s| s.generation() == generation);
        if !current {
            self.ctx.stats.add(&self.ctx.stats.stale, 1);
        }
        current
    }

    fn next_generation(&mut self) -> u32 {
        let g = self.next_generation;
        self.next_generation = (g + 1) & GENERATION_MASK;
        if self.next_generation == 0 {
            // Ids are about to repeat: a deadline or timer left by a closed
            // connection must not outlive its id's first use.
            self.sweep_deadlines(true);
        }
        g
    }

    fn on_wake(&mut self) {
        self.ctx.wake.drain();
        while let Ok(cmd) = self.ctx.commands.try_recv() {
            self.requests.push(cmd);
        }
        // Acquire pairs with the Release store in `Engine::shutdown`.
        if self.ctx.stop.load(Ordering::Acquire) && !self.stopping {
            self.begin_shutdown();
        }
    }

    /// Stop accepting, close every connection gracefully (forced at the
    /// shutdown deadline), and give up pending connects.
    fn begin_shutdown(&mut self) {
        self.stopping = true;
        for index in 0..self.accepts.len() {
            let listener = index as u16;
            match self.accepts[index] {
                Accept::Armed if self.driver.stop_accept(listener) => {}
                _ => self.accepts[index] = Accept::Idle,
            }
        }
        // Relaxed: stored before the Release store of `stop`, which this
        // worker has read with Acquire.
        let ms = self.ctx.shutdown_ms.load(Ordering::Relaxed);
        self.deadlines.arm(
            Instant::now(),
            std::time::Duration::from_millis(ms),
            Due::Shutdown,
        );
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns[key].core.close(CloseReason::Shutdown);
            self.mark_dirty(key);
        }
        let keys: Vec<usize> = self.pending.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.abort_connect(key, ConnectError::Shutdown);
        }
    }

    /// After the batch: run requests, re-arm receives that ended, flush
    /// dirty connections in the order they became dirty (a flush may dirty
    /// more; they are flushed in this pass too).
    fn after_batch(&mut self) {
        self.sweep_deadlines(false);
        // Most batches bring no request and no ended receive: nothing to
        // take out of the worker for them.
        if !self.requests.is_empty() {
            let cmds = std::mem::take(&mut self.requests);
            self.run_commands(cmds);
        }
        if !self.rearm.is_empty() {
            let rearm = std::mem::take(&mut self.rearm);
            for &(key, generation) in &rearm {
                let ok = self.conns.get(key).is_some_and(|s| {
                    s.generation() == generation
                        && !s.has(op::RECV | op::RECV_DONE | op::REG)
                        && s.core.wants_input()
                });
                if ok {
                    self.ctx.stats.add(&self.ctx.stats.recv_rearms, 1);
                    self.arm_recv(key);
                }
            }
            self.rearm = rearm;
            self.rearm.clear();
        }
        let mut next = 0;
        while let Some(&key) = self.dirty.get(next) {
            next += 1;
            self.flush(key);
        }
        self.dirty.clear();
    }

    /// Split the worker for a handler callback.
    fn lend(&mut self) -> Lent<'_, H> {
        let backend = self.driver.backend();
        let Worker {
            driver,
            conns,
            handler,
            requests,
            deadlines,
            ctx,
            plain,
            ..
        } = self;
        Lent {
            driver,
            conns,
            handler,
            plain,
            env: Env {
                requests,
                timers: &mut deadlines.handler,
                bus: &ctx.bus,
                worker: ctx.index,
                backend,
                lent: None,
            },
        }
    }

    /// Lend connection `key` and its state to the handler for one
    /// callback, `f` (nothing when the handler has no state for it: before
    /// `on_open` returned, or after `on_close`).
    fn with_conn(&mut self, key: usize, f: impl FnOnce(&mut H, &mut Conn<'_>, &mut H::State)) {
        let Lent {
            conns,
            handler,
            env,
            ..
        } = self.lend();
        let Slot { core, state, .. } = &mut conns[key];
        if let Some(state) = state {
            f(handler, &mut Conn { core, env }, state);
        }
    }

    /// Lend new connection `key` to the handler's `on_open` and keep the
    /// state it makes.
    fn open_with_handler(&mut self, key: usize) {
        let Lent {
            conns,
            handler,
            env,
            ..
        } = self.lend();
        let slot = &mut conns[key];
        let state = handler.on_open(&mut Conn {
            core: &mut slot.core,
            env,
        });
        slot.state = Some(state);
    }

    /// Lend the worker to the handler for one callback, `f`.
    fn with_ctx(&mut self, f: impl FnOnce(&mut H, &mut Ctx<'_>)) {
        let Lent { handler, env, .. } = self.lend();
        f(handler, &mut Ctx { env });
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(slot) = self.conns.get_mut(key) {
            if !slot.has(op::DIRTY) {
                slot.ops |= op::DIRTY;
                self.dirty.push(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A slot is what an idle connection costs the worker (the slab keeps
    /// its own tag in a niche of the slot); the target is at most 100
    /// bytes of server memory per idle connection with 9000 held
    /// (`ringnet bench hold`).
    #[test]
    fn a_slot_stays_small() {
        let size = std::mem::size_of::<super::Slot<()>>();
        assert!(size <= 80, "Slot grew to {size} bytes");
        assert_eq!(std::mem::size_of::<super::DriverConn>(), 6);
    }
}
