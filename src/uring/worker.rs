//! One io_uring worker: a ring, a slab of connections, buffer groups, and the
//! loop that turns completions into handler calls.
//!
//! # Life of a connection
//! 1. The worker's multishot accept posts a completion carrying the new fd.
//!    The worker sets TCP_NODELAY, takes a slab slot stamped with a fresh
//!    generation, picks the connection's buffer group, calls `on_open` and
//!    arms one multishot recv.
//! 2. Each recv completion names a provided buffer; the bytes are lent to
//!    `on_data` and the buffer goes straight back to its ring. Output the
//!    handler queued is sent after the batch, one send in flight at a time.
//! 3. A close starts from end of stream, an error, or the handler. Graceful
//!    closes flush queued output first. Teardown calls `on_close`, cancels
//!    whatever is still in flight on the fd, and, once the recv and any send
//!    have posted their last completion, closes the fd, frees the slot and
//!    returns the buffer group.
//!
//! # Life of a completion
//! `submit_and_wait` submits everything queued in the SQ and waits for at
//! least one completion; the whole CQ is then copied out and dispatched by
//! the [`Token`] in its `user_data`. A completion for a slot whose
//! generation has moved on is stale and dropped. After the batch, recvs that
//! ended with ENOBUFS (or for any other reason while the connection stays
//! open) are re-armed — every buffer has been returned by then — and queued
//! output is handed to the kernel.
//!
//! # Invariants
//! * Exactly one live recv per open connection that is not closing.
//! * At most one send in flight per connection; its buffer (the
//!   connection's current send in `ConnCore`) is not touched until its
//!   completion arrives.
//! * A slot is freed only when none of its operations is in flight, so the
//!   kernel never writes into a freed buffer group or reads a freed send
//!   buffer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::Socket;

use super::groups::{Groups, SHARED};
use crate::bus::{Command, CommandTarget};
use crate::config::{Backend, BufferMode};
use crate::connect::{socket_for, ConnectError, ConnectRequest};
use crate::engine::WorkerCtx;
use crate::handler::Env;
use crate::handler::{CloseReason, ConnCore, Handler};
use crate::linger::{
    expire_timeouts, write_check, write_check_interval, Deadlines, Lingering, WriteCheck,
};
use crate::token::{ConnId, OpKind, Token, GENERATION_MASK};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// A multishot recv is in flight.
    Armed,
    /// Not in flight; re-arm after the batch unless the connection closes.
    Idle,
    /// Ended for good (end of stream, error or cancel).
    Done,
}

struct Slot {
    core: ConnCore,
    generation: u32,
    bgid: u16,
    recv: Recv,
    /// A send is in flight; the kernel owns the current send's bytes.
    send_busy: bool,
    /// A `shutdown(SHUT_WR)` is in flight on the fd.
    shut_busy: bool,
    /// In its lingering close: write side shut down, input discarded until
    /// the peer closes or the linger time is up (see `crate::linger`).
    linger: bool,
    /// `on_close` was called.
    notified: bool,
    /// Registered in the ring's file table at index `key`: operations name
    /// it as `Fixed(key)`, sparing the kernel a file lookup per operation.
    fixed: bool,
    /// The `FILES_UPDATE` installing it is in flight.
    update_busy: bool,
    /// A SEND_ZC's result, held until its notification says the kernel is
    /// done with the buffer.
    zc_result: Option<i32>,
    /// Listed in `Worker::write_watch` (output waiting to be sent).
    watched: bool,
    /// Teardown has started: cancels submitted, the slot is freed once
    /// nothing is in flight.
    torn: bool,
}

impl crate::linger::Generation for Slot {
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// An outbound connect in flight: IORING_OP_CONNECT linked to a
/// LINK_TIMEOUT. The address and timespec are boxed so they stay put while
/// the kernel may read them.
struct Pending {
    sock: Socket,
    addr: Box<socket2::SockAddr>,
    timeout: Box<types::Timespec>,
    req: ConnectRequest,
    generation: u32,
}

/// The value a FILES_UPDATE reads to empty a table entry; a static, so it
/// outlives any operation.
static CLEAR_FIXED: RawFd = -1;

pub(crate) struct Worker<H: Handler> {
    // Field order matters: the ring is dropped before the buffer groups it
    // has registered.
    ring: IoUring,
    groups: Groups,
    handler: H,
    conns: Slab<Slot>,
    ctx: WorkerCtx,
    next_generation: u32,
    accept_armed: bool,
    backoff_pending: bool,
    backoff: types::Timespec,
    deadline: types::Timespec,
    stopping: bool,
    /// Close operations submitted and not yet completed; the worker does not
    /// exit before they are, or their descriptors would leak.
    closes_in_flight: usize,
    /// Connections in their lingering close, by deadline.
    lingering: Lingering,
    /// Idle-timeout and read-timeout entries.
    idle: Deadlines,
    reads: Deadlines,
    /// Deadlines of the worker timers in flight (one fires per tick).
    timers_pending: Vec<Instant>,
    /// The timespecs of worker timers not yet known to be submitted: the
    /// kernel reads a timeout's timespec at submission, so each lives (boxed,
    /// it does not move) until the SQ has been drained.
    // Boxed on purpose: a Vec moves its elements when it grows, and an SQE
    // points at its timespec until submitted.
    #[allow(clippy::vec_box)]
    timer_specs: Vec<Box<types::Timespec>>,
    /// Registered-file table, one entry per slab key below its length (empty
    /// when `Config::fixed_files` is 0 or the kernel refused the table).
    /// Its cells are the source of FILES_UPDATE operations: allocated once,
    /// never moved.
    fixed_fds: Vec<RawFd>,
    /// Recv with bundles (configured and supported by the kernel).
    bundle: bool,
    /// The buffers of one recv completion (reused).
    recv_bufs: Vec<(u16, usize)>,
    /// Outbound connections asked for by handler callbacks or the engine,
    /// started after the batch.
    requests: Vec<Command>,
    /// Persistent outbound connections waiting out their backoff.
    delayed: Vec<(Instant, ConnectRequest)>,
    /// Connections with output in flight, checked against `write_timeout`.
    write_watch: Vec<(usize, u32)>,
    /// When `write_watch` is next checked.
    write_check_at: Option<Instant>,
    /// Outbound attempts in flight (kept apart from `conns`: a connection
    /// joins the slab only once it is connected).
    pending: Slab<Pending>,
    /// A submit error that is not transient; `run` returns it.
    fatal: Option<io::Error>,
    /// Connections whose output or close waits for the end of the batch.
    dirty: Vec<usize>,
    /// Connections whose recv must be re-armed after the batch.
    rearm: Vec<(usize, u32)>,
    cqes: Vec<(u64, i32, u32)>,
    /// Batched waiting: (completions to wait for, min-wait in µs), when
    /// configured and the kernel has min-wait (6.12).
    batch: Option<(usize, u32)>,
    /// The general timeout of a batched wait: after the min-wait has passed
    /// with nothing to do, the worker sleeps until a completion or this.
    batch_ts: types::Timespec,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(ctx: WorkerCtx, handler: H) -> Result<Worker<H>, crate::Error> {
        let cfg = &ctx.cfg;
        let ring = super::build_ring(cfg)?;
        let groups = Groups::new(
            &ring,
            cfg.buf_count,
            cfg.conn_buf_count,
            cfg.buf_size,
            cfg.group_pool_max,
        )
        .map_err(|source| crate::Error::Worker {
            worker: ctx.index,
            source,
        })?;
        // A sparse table of direct descriptors (Linux 5.19). If the kernel
        // refuses it, connections just use plain descriptors.
        let fixed_fds = if cfg.fixed_files > 0
            && ring
                .submitter()
                .register_files_sparse(cfg.fixed_files)
                .is_ok()
        {
            vec![-1; cfg.fixed_files as usize]
        } else {
            Vec::new()
        };
        let bundle = cfg.recv_bundle && ring.params().is_feature_recvsend_bundle();
        let backoff = types::Timespec::from(cfg.accept_backoff);
        let deadline = types::Timespec::from(cfg.shutdown_timeout);
        let cq = cfg.cq_entries as usize;
        let batch_us = u32::try_from(cfg.batch_wait.as_micros()).unwrap_or(u32::MAX);
        let batch = (batch_us > 0 && ring.params().is_feature_min_timeout())
            .then_some((cfg.wait_batch.min(cfg.cq_entries) as usize, batch_us));
        Ok(Worker {
            batch,
            batch_ts: types::Timespec::new().sec(1),
            ring,
            groups,
            handler,
            conns: Slab::new(),
            ctx,
            next_generation: 0,
            accept_armed: false,
            backoff_pending: false,
            backoff,
            deadline,
            stopping: false,
            closes_in_flight: 0,
            lingering: Lingering::default(),
            idle: Deadlines::default(),
            reads: Deadlines::default(),
            timers_pending: Vec::new(),
            timer_specs: Vec::new(),
            fixed_fds,
            bundle,
            recv_bufs: Vec::new(),
            requests: Vec::new(),
            delayed: Vec::new(),
            write_watch: Vec::new(),
            write_check_at: None,
            pending: Slab::new(),
            fatal: None,
            dirty: Vec::new(),
            rearm: Vec::new(),
            cqes: Vec::with_capacity(cq),
        })
    }

    /// Run until shutdown is requested and every connection has closed.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let env = Env {
            requests: &mut self.requests,
            bus: &self.ctx.bus,
            worker: self.ctx.index,
        };
        self.handler.on_start(&mut crate::handler::Ctx { env });
        self.arm_wake();
        self.arm_accept();
        self.run_requests();
        loop {
            if self.stopping
                && self.conns.is_empty()
                && self.pending.is_empty()
                && !self.accept_armed
                && self.closes_in_flight == 0
            {
                return Ok(());
            }
            // Completions set aside by `push` are dispatched without waiting.
            let want = usize::from(self.cqes.is_empty());
            let res = match self.batch {
                // Wait for a batch, at most the min-wait, then for anything
                // (bounded by `batch_ts`, so an idle ring is not woken by
                // the min-wait timer over and over).
                Some((nr, us)) if want == 1 => {
                    let args = types::SubmitArgs::new()
                        .min_wait_usec(us)
                        .timespec(&self.batch_ts);
                    self.ring.submitter().submit_with_args(nr, &args)
                }
                _ => self.ring.submit_and_wait(want),
            };
            if want > 0 {
                self.ctx.stats.add(&self.ctx.stats.waits, 1);
            }
            match res {
                Ok(_) => {
                    if !self.timer_specs.is_empty() && self.ring.submission().is_empty() {
                        self.timer_specs.clear();
                    }
                }
                // EINTR: a signal; EBUSY: completions are backed up in the
                // overflow list and must be reaped first; ETIME: a batched
                // wait's general timeout passed with nothing to do.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME)
                    ) => {}
                Err(e) => return Err(e),
            }
            let mut cqes = std::mem::take(&mut self.cqes);
            self.cqes = Vec::with_capacity(0);
            {
                let cq = self.ring.completion();
                let dropped = cq.overflow();
                cqes.extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
                self.ctx
                    .stats
                    .set(&self.ctx.stats.cq_dropped, u64::from(dropped));
            }
            if self.ring.submission().cq_overflow() {
                self.ctx.stats.add(&self.ctx.stats.cq_overflows, 1);
            }
            for &(ud, res, flags) in &cqes {
                self.dispatch(ud, res, flags);
            }
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            cqes.clear();
            // Keep whatever `push` set aside during this batch.
            cqes.append(&mut self.cqes);
            self.cqes = cqes;
            self.after_batch();
        }
    }

    /// Queue one SQE, submitting first if the SQ is full.
    fn push(&mut self, sqe: squeue::Entry) {
        if self.fatal.is_some() {
            return;
        }
        loop {
            // SAFETY: every SQE the worker builds points only at memory that
            // outlives the operation: send buffers live in their slot, which
            // is not freed while the send is in flight; the backoff timespec
            // lives in the worker, timer timespecs in `timer_specs` until the
            // SQ is drained; buffer groups stay registered and mapped
            // until the ring is gone.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            if !self.make_room() {
                return;
            }
        }
    }

    /// Submit what is queued to free SQ entries. `false` on an error that
    /// is not transient (then in `fatal`).
    fn make_room(&mut self) -> bool {
        match self.ring.submit() {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // The CQ is backed up: move completions aside (they are
                // dispatched at the start of the next batch) so the kernel
                // can flush its overflow list.
                let cq = self.ring.completion();
                self.cqes
                    .extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => true,
            Err(e) => {
                // Not transient: stop; `run` returns the error and the drop
                // cancels whatever is in flight.
                self.fatal = Some(e);
                false
            }
        }
    }

    fn arm_wake(&mut self) {
        let fd = types::Fd(self.ctx.wake.as_raw_fd());
        let sqe = opcode::PollAdd::new(fd, libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Token::worker(OpKind::Wake).to_user_data());
        self.push(sqe);
    }

    fn arm_accept(&mut self) {
        if self.accept_armed || self.backoff_pending || self.stopping {
            return;
        }
        let fd = types::Fd(self.ctx.listener.as_raw_fd());
        let sqe = opcode::AcceptMulti::new(fd)
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Token::worker(OpKind::Accept).to_user_data());
        self.push(sqe);
        self.accept_armed = true;
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(tok) = Token::from_user_data(ud) else {
            return;
        };
        match tok.kind() {
            OpKind::Accept => self.on_accept(res, flags),
            OpKind::AcceptBackoff => {
                self.backoff_pending = false;
                self.arm_accept();
            }
            OpKind::Wake => self.on_wake(flags),
            OpKind::Connect => self.on_connect(tok, res),
            // The connect's own completion says whether the timeout fired.
            OpKind::ConnectTimeout => {}
            OpKind::LingerTick => {
                // Timers fire in deadline order: this was the earliest.
                if let Some(i) =
                    (0..self.timers_pending.len()).min_by_key(|&i| self.timers_pending[i])
                {
                    self.timers_pending.swap_remove(i);
                }
                self.start_delayed();
                self.timeouts_expired();
                if self.write_check_at.is_some_and(|t| t <= Instant::now()) {
                    self.check_writes();
                }
                self.linger_expired();
            }
            OpKind::FilesUpdate => {
                // Only an install on a live slot matters; a clear's
                // completion finds its slot gone or reused (stale).
                let current = self
                    .conns
                    .get(tok.key())
                    .is_some_and(|s| tok.is_current(s.generation) && s.update_busy);
                if current {
                    self.on_files_update(tok.key(), res);
                }
            }
            OpKind::ShutdownWrite => {
                if let Some(slot) = self.conns.get_mut(tok.key()) {
                    if tok.is_current(slot.generation) {
                        slot.shut_busy = false;
                        self.finish_if_idle(tok.key());
                    }
                }
            }
            OpKind::ShutdownDeadline => self.force_close_all(),
            OpKind::Recv | OpKind::Send => {
                let current = self
                    .conns
                    .get(tok.key())
                    .is_some_and(|s| tok.is_current(s.generation));
                if !current {
                    self.ctx.stats.add(&self.ctx.stats.stale, 1);
                    return;
                }
                if tok.kind() == OpKind::Recv {
                    self.on_recv(tok.key(), res, flags);
                } else {
                    self.on_send(tok.key(), res, flags);
                }
            }
            // A failed close of a socket still releases the descriptor.
            OpKind::Close => self.closes_in_flight -= 1,
            // Acknowledgements: the operations they target post their own
            // completions.
            OpKind::Cancel | OpKind::AcceptCancel => {}
        }
    }

    fn on_wake(&mut self, flags: u32) {
        self.ctx.wake.drain();
        if !cqueue::more(flags) {
            self.arm_wake();
        }
        while let Ok(cmd) = self.ctx.commands.try_recv() {
            self.requests.push(cmd);
        }
        // Acquire pairs with the Release store in `Engine::shutdown`.
        if self.ctx.stop.load(Ordering::Acquire) && !self.stopping {
            self.begin_shutdown();
        }
    }

    fn begin_shutdown(&mut self) {
        self.stopping = true;
        if self.accept_armed {
            let target = Token::worker(OpKind::Accept).to_user_data();
            let sqe = opcode::AsyncCancel::new(target)
                .build()
                .user_data(Token::worker(OpKind::AcceptCancel).to_user_data());
            self.push(sqe);
        }
        // Relaxed: stored before the Release store of `stop`, which this
        // worker has read with Acquire.
        let ms = self.ctx.shutdown_ms.load(Ordering::Relaxed);
        self.deadline = types::Timespec::from(std::time::Duration::from_millis(ms));
        // Connections still open when the deadline fires are torn down,
        // dropping output their peers did not read.
        let sqe = opcode::Timeout::new(&self.deadline)
            .build()
            .user_data(Token::worker(OpKind::ShutdownDeadline).to_user_data());
        self.push(sqe);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let slot = &mut self.conns[key];
            if slot.core.closing.is_none() {
                slot.core.closing = Some(CloseReason::Shutdown);
            }
            self.mark_dirty(key);
        }
        let cancels: Vec<squeue::Entry> = self
            .pending
            .iter()
            .map(|(key, p)| {
                opcode::AsyncCancel2::new(
                    types::CancelBuilder::fd(types::Fd(p.sock.as_raw_fd())).all(),
                )
                .build()
                .user_data(Token::new(OpKind::Cancel, key as u32, p.generation).to_user_data())
            })
            .collect();
        for sqe in cancels {
            self.push(sqe);
        }
    }

    /// Carry out what handlers and other threads asked for (after a batch,
    /// when no handler call is running): connects, broadcasts, sends.
    fn run_requests(&mut self) {
        let cmds = std::mem::take(&mut self.requests);
        self.run_commands(cmds);
    }

    /// Run `req` again after `wait` (persistent connections).
    fn schedule(&mut self, (wait, req): (std::time::Duration, ConnectRequest)) {
        if self.stopping {
            return;
        }
        self.delayed.push((Instant::now() + wait, req));
        // A timer already armed for a later deadline is not moved; it fires,
        // finds nothing due, and re-arms for the nearest deadline.
        self.arm_linger_timer();
    }

    /// Start the persistent connections whose backoff is over.
    fn start_delayed(&mut self) {
        let now = Instant::now();
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = wait;
        for (_, req) in due {
            self.start_connect(req);
        }
    }

    /// One attempt of `req` at its current address; on a failure to even
    /// start, the next address, and so on.
    fn start_connect(&mut self, mut req: ConnectRequest) {
        loop {
            if self.stopping {
                return self.connect_failed(&req, ConnectError::Shutdown);
            }
            let Some(addr) = req.addr() else {
                return self.connect_failed(&req, ConnectError::Os(libc::EDESTADDRREQ));
            };
            let sock = match socket_for(addr, &self.ctx.cfg, false) {
                Ok(s) => s,
                Err(e) => {
                    let err = ConnectError::from_io(&e);
                    if req.advance() {
                        continue;
                    }
                    return self.connect_failed(&req, err);
                }
            };
            let generation = self.next_generation;
            self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
            let timeout = Box::new(types::Timespec::from(req.timeout));
            let addr = Box::new(socket2::SockAddr::from(addr));
            let entry = self.pending.vacant_entry();
            let key = entry.key() as u32;
            let connect = opcode::Connect::new(
                types::Fd(sock.as_raw_fd()),
                addr.as_ptr().cast(),
                addr.len(),
            )
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(Token::new(OpKind::Connect, key, generation).to_user_data());
            let limit = opcode::LinkTimeout::new(&*timeout)
                .build()
                .user_data(Token::new(OpKind::ConnectTimeout, key, generation).to_user_data());
            entry.insert(Pending {
                sock,
                addr,
                timeout,
                req,
                generation,
            });
            // The two SQEs must be adjacent in the SQ for the link to hold.
            self.push_linked(connect, limit);
            return;
        }
    }

    /// Queue two linked SQEs next to each other: the link is only kept if
    /// both reach the kernel in one submission, so room for both is made
    /// first.
    fn push_linked(&mut self, first: squeue::Entry, second: squeue::Entry) {
        loop {
            if self.fatal.is_some() {
                return;
            }
            let free = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if free >= 2 {
                break;
            }
            self.make_room();
        }
        self.push(first);
        self.push(second);
    }

    fn on_connect(&mut self, tok: Token, res: i32) {
        let current = self
            .pending
            .get(tok.key())
            .is_some_and(|p| tok.is_current(p.generation));
        if !current {
            return;
        }
        let Pending {
            sock,
            addr,
            timeout,
            mut req,
            ..
        } = self.pending.remove(tok.key());
        // The kernel is done with both once the connect has completed.
        drop((addr, timeout));
        if res == 0 && !self.stopping {
            self.ctx.stats.add(&self.ctx.stats.connected, 1);
            self.ctx.bus.admit();
            // The backoff starts over only once the connection has stayed
            // up (`ConnectRequest::after_close`).
            self.open(sock, Some(req));
            return;
        }
        drop(sock);
        let err = match -res {
            // Connected after the shutdown began: reported as a shutdown,
            // as the epoll backend does, and the socket closed.
            0 => ConnectError::Shutdown,
            // The linked timeout cancelled it, or shutdown did.
            libc::ECANCELED if self.stopping => ConnectError::Shutdown,
            libc::ECANCELED => ConnectError::TimedOut,
            errno => ConnectError::from_errno(errno),
        };
        if err != ConnectError::Shutdown && req.advance() {
            return self.start_connect(req);
        }
        self.connect_failed(&req, err);
    }

    fn connect_failed(&mut self, req: &ConnectRequest, err: ConnectError) {
        self.ctx.stats.add(&self.ctx.stats.connect_failures, 1);
        self.handler.on_connect_failed(req.tag, &err);
        if req.persistent && err != ConnectError::Shutdown {
            self.schedule(req.retry());
        }
    }

    fn force_close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if !self.conns[key].torn {
                self.ctx.stats.add(&self.ctx.stats.shutdown_forced, 1);
            }
            self.teardown(key, CloseReason::Shutdown);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            self.accept_armed = false;
        }
        if res >= 0 {
            // SAFETY: a non-negative accept result is a new descriptor that
            // the kernel has just installed for us and nobody else owns.
            let sock = unsafe { Socket::from_raw_fd(res) };
            if self.stopping {
                return; // dropped: closed at once
            }
            if !self.ctx.bus.try_admit() {
                // At max_connections: accepted and closed at once.
                self.ctx.stats.add(&self.ctx.stats.refused, 1);
                drop(sock);
            } else {
                self.ctx.stats.add(&self.ctx.stats.accepted, 1);
                self.open(sock, None);
            }
            if !more {
                self.ctx.stats.add(&self.ctx.stats.accept_rearms, 1);
                self.arm_accept();
            }
            return;
        }
        let errno = -res;
        if more || self.stopping || errno == libc::ECANCELED {
            return;
        }
        match errno {
            // The peer gave up before we took it, or a signal: try again now.
            libc::ECONNABORTED | libc::EINTR | libc::EAGAIN => {
                self.ctx.stats.add(&self.ctx.stats.accept_rearms, 1);
                self.arm_accept();
            }
            // Out of descriptors or memory (the connection stays queued), or
            // anything unexpected: back off so the loop never spins.
            _ => {
                self.ctx.stats.add(&self.ctx.stats.accept_backoffs, 1);
                self.backoff_pending = true;
                let sqe = opcode::Timeout::new(&self.backoff)
                    .build()
                    .user_data(Token::worker(OpKind::AcceptBackoff).to_user_data());
                self.push(sqe);
            }
        }
    }

    /// A new connection (accepted, or connected out with `tag`) joins the
    /// slab. Accepted streams get TCP_NODELAY from the listener (see
    /// `listener::ListenOptions`); outbound ones from `socket_for`.
    fn open(&mut self, sock: Socket, origin: Option<ConnectRequest>) {
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let id = ConnId::new(self.ctx.index, key, generation);
        let bgid = match self.ctx.cfg.buffers {
            BufferMode::Shared => SHARED,
            BufferMode::PerConnection => match self.groups.acquire(&self.ring) {
                Some(id) => id,
                None => {
                    self.ctx.stats.add(&self.ctx.stats.group_fallbacks, 1);
                    SHARED
                }
            },
        };
        entry.insert(Slot {
            core: ConnCore::new(id, sock, Backend::Uring, self.ctx.cfg.input_timeouts()),
            generation,
            bgid,
            recv: Recv::Idle,
            send_busy: false,
            shut_busy: false,
            linger: false,
            notified: false,
            fixed: false,
            update_busy: false,
            zc_result: None,
            watched: false,
            torn: false,
        });
        let st = &self.ctx.stats;
        st.add(&st.open, 1);
        self.sync_group_stats();
        if let Some(idle) = self.ctx.cfg.idle_timeout {
            self.idle
                .push_live(key, generation, Instant::now() + idle, &self.conns);
            self.arm_linger_timer();
        }
        let Worker {
            conns,
            handler,
            requests,
            ctx,
            ..
        } = self;
        let slot = &mut conns[key];
        slot.core.set_origin(origin);
        ctx.bus.opened(slot.core.id);
        let env = Env {
            requests,
            bus: &ctx.bus,
            worker: ctx.index,
        };
        handler.on_open(&mut crate::handler::Conn {
            core: &mut slot.core,
            env,
        });
        if key < self.fixed_fds.len() {
            // Install the socket at table index `key`; the recv is armed
            // when that completes (see `on_files_update`).
            self.fixed_fds[key] = slot.core.sock.as_raw_fd();
            slot.update_busy = true;
            let sqe = opcode::FilesUpdate::new(&self.fixed_fds[key], 1)
                .offset(key as i32)
                .build()
                .user_data(Token::new(OpKind::FilesUpdate, key as u32, generation).to_user_data());
            self.push(sqe);
        } else if slot.core.closing.is_none() {
            self.arm_recv(key);
        }
        self.mark_dirty(key);
    }

    /// The socket's registration completed (or failed: then it keeps using
    /// its plain descriptor). Arm the first recv.
    fn on_files_update(&mut self, key: usize, res: i32) {
        let slot = &mut self.conns[key];
        slot.update_busy = false;
        slot.fixed = res == 1;
        if slot.fixed {
            self.ctx.stats.add(&self.ctx.stats.fixed_installs, 1);
        }
        if slot.torn {
            self.finish_if_idle(key);
        } else if slot.recv == Recv::Idle
            && !slot.core.paused
            && (slot.core.closing.is_none() || slot.linger)
        {
            self.arm_recv(key);
        }
    }

    fn arm_recv(&mut self, key: usize) {
        let slot = &mut self.conns[key];
        let fd = slot.core.sock.as_raw_fd();
        let sqe = match (slot.fixed, self.bundle) {
            (true, false) => opcode::RecvMulti::new(types::Fixed(key as u32), slot.bgid).build(),
            (false, false) => opcode::RecvMulti::new(types::Fd(fd), slot.bgid).build(),
            (true, true) => {
                opcode::RecvMultiBundle::new(types::Fixed(key as u32), slot.bgid).build()
            }
            (false, true) => opcode::RecvMultiBundle::new(types::Fd(fd), slot.bgid).build(),
        };
        let sqe =
            sqe.user_data(Token::new(OpKind::Recv, key as u32, slot.generation).to_user_data());
        slot.recv = Recv::Armed;
        self.push(sqe);
    }

    fn on_recv(&mut self, key: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let st = Arc::clone(&self.ctx.stats);
        if !more {
            self.conns[key].recv = Recv::Idle;
        }
        if res <= 0 {
            // Some kernels consume a buffer even for an error or end of
            // stream; give back any buffer a completion names.
            if let Some(bid) = cqueue::buffer_select(flags) {
                let bgid = self.conns[key].bgid;
                if let Some(ring) = self.groups.get_mut(bgid) {
                    ring.recycle(bid);
                }
            }
        }
        if res > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                // The kernel always names a buffer for a selected recv.
                self.teardown(key, CloseReason::Error(libc::EIO));
                return;
            };
            st.add(&st.bytes_in, res as u64);
            st.add(&st.buffers_in_use, 1);
            let limit = self.ctx.cfg.max_unconsumed;
            let Worker {
                conns,
                groups,
                handler,
                requests,
                recv_bufs,
                bundle,
                ctx,
                ..
            } = self;
            let slot = &mut conns[key];
            let outcome = match groups.get_mut(slot.bgid) {
                Some(ring) => {
                    // One buffer, or with bundles the consecutive ring
                    // entries starting at `bid`.
                    if *bundle {
                        ring.bundle_into(bid, res as usize, recv_bufs);
                        if recv_bufs.len() > 1 {
                            st.add(&st.bundled_buffers, recv_bufs.len() as u64);
                        }
                    } else {
                        recv_bufs.clear();
                        recv_bufs.push((bid, res as usize));
                    }
                    let mut result = Ok(());
                    for &(b, n) in recv_bufs.iter() {
                        if result.is_ok() && !slot.torn {
                            result = slot.core.deliver(
                                handler,
                                ring.filled(b, n),
                                limit,
                                Env {
                                    requests,
                                    bus: &ctx.bus,
                                    worker: ctx.index,
                                },
                            );
                        }
                        ring.recycle(b);
                    }
                    result
                }
                None => Err(CloseReason::Error(libc::EIO)),
            };
            st.sub(&st.buffers_in_use, 1);
            match outcome {
                Ok(()) if self.conns[key].torn => self.finish_if_idle(key),
                Ok(()) => {
                    let slot = &mut self.conns[key];
                    let g = slot.generation;
                    if slot
                        .core
                        .clock
                        .as_deref_mut()
                        .is_some_and(|c| std::mem::take(&mut c.partial_started))
                    {
                        if let Some(read) = self.ctx.cfg.read_timeout {
                            self.reads
                                .push_live(key, g, Instant::now() + read, &self.conns);
                            self.arm_linger_timer();
                        }
                    }
                    if !more {
                        self.rearm.push((key, g));
                    }
                    self.mark_dirty(key);
                }
                Err(reason) => self.teardown(key, reason),
            }
            return;
        }
        match -res {
            0 => {
                // End of stream: flush what is queued, then close.
                let slot = &mut self.conns[key];
                slot.recv = Recv::Done;
                if slot.core.closing.is_none() {
                    slot.core.closing = Some(CloseReason::PeerClosed);
                }
                if slot.torn {
                    self.finish_if_idle(key);
                } else if slot.linger {
                    // The peer closed its side too: the lingering close is over.
                    let reason = slot.core.closing.clone().unwrap_or(CloseReason::Local);
                    self.teardown(key, reason);
                } else {
                    self.mark_dirty(key);
                }
            }
            libc::ENOBUFS => {
                // The ring ran dry; not end of stream. Re-armed after the
                // batch, when every buffer has been returned.
                st.add(&st.enobufs, 1);
                let slot = &self.conns[key];
                if slot.torn {
                    self.finish_if_idle(key);
                } else {
                    self.rearm.push((key, slot.generation));
                }
            }
            libc::ECANCELED => {
                let slot = &mut self.conns[key];
                if slot.torn {
                    slot.recv = Recv::Done;
                    self.finish_if_idle(key);
                } else {
                    // Only backpressure cancels the recv of a live
                    // connection (the ring is ours): re-arm once it is no
                    // longer paused, even if it resumed before this arrived.
                    slot.recv = Recv::Idle;
                    if !slot.core.paused {
                        let g = slot.generation;
                        self.rearm.push((key, g));
                    }
                }
            }
            errno => {
                self.conns[key].recv = Recv::Done;
                self.teardown(key, CloseReason::Error(errno));
            }
        }
    }

    fn submit_send(&mut self, key: usize) {
        let slot = &mut self.conns[key];
        let rest = slot.core.unsent();
        let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
        let fd = slot.core.sock.as_raw_fd();
        let zc = self.ctx.cfg.send_zc_threshold > 0 && rest.len() >= self.ctx.cfg.send_zc_threshold;
        if zc {
            self.ctx.stats.add(&self.ctx.stats.zc_sends, 1);
        }
        let flags = libc::MSG_NOSIGNAL;
        let sqe = match (slot.fixed, zc) {
            (true, false) => opcode::Send::new(types::Fixed(key as u32), ptr, len)
                .flags(flags)
                .build(),
            (false, false) => opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(flags)
                .build(),
            (true, true) => opcode::SendZc::new(types::Fixed(key as u32), ptr, len)
                .flags(flags)
                .build(),
            (false, true) => opcode::SendZc::new(types::Fd(fd), ptr, len)
                .flags(flags)
                .build(),
        };
        let sqe =
            sqe.user_data(Token::new(OpKind::Send, key as u32, slot.generation).to_user_data());
        slot.send_busy = true;
        if !slot.watched {
            slot.watched = true;
            slot.core.watch_writes();
            self.write_watch.push((key, slot.generation));
        }
        self.push(sqe);
        self.schedule_write_check();
    }

    fn on_send(&mut self, key: usize, res: i32, flags: u32) {
        let slot = &mut self.conns[key];
        // SEND_ZC posts its result, then (F_MORE) a notification once the
        // kernel no longer needs the buffer; only then is the send over.
        let res = if cqueue::notif(flags) {
            slot.zc_result.take().unwrap_or(res)
        } else if cqueue::more(flags) {
            slot.zc_result = Some(res);
            return;
        } else {
            res
        };
        slot.send_busy = false;
        if slot.torn {
            self.finish_if_idle(key);
            return;
        }
        if res <= 0 {
            // 0 bytes for a non-empty send would repeat forever: treat as a
            // broken pipe.
            let errno = if res == 0 { libc::EPIPE } else { -res };
            self.teardown(key, CloseReason::Error(errno));
            return;
        }
        self.ctx.stats.add(&self.ctx.stats.bytes_out, res as u64);
        if !slot.core.advance(res as usize) {
            // Short send: the remainder goes next, before anything newer.
            // Output is draining: receiving may resume below the low
            // watermark without waiting for the whole chunk.
            if slot.core.paused {
                self.backpressure(key);
            }
            self.submit_send(key);
            return;
        }
        self.mark_dirty(key);
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(slot) = self.conns.get_mut(key) {
            slot.core.mark_dirty(key, &mut self.dirty);
        }
    }

    /// Start a send of queued output, or a graceful close once all is sent.
    fn flush(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        slot.core.clear_dirty();
        if slot.torn {
            return;
        }
        self.backpressure(key);
        let slot = &mut self.conns[key];
        if slot.send_busy {
            return;
        }
        if slot.core.next_send() {
            self.submit_send(key);
            return;
        }
        if slot.linger {
            return;
        }
        if let Some(reason) = slot.core.closing.clone() {
            if !reason.flushes() {
                // A handler's close_with(Error or InputLimit): its output is
                // handed over; close without lingering.
                self.teardown(key, reason);
            } else if slot.recv == Recv::Done {
                // End of stream was read: nothing unread can make the close
                // a reset.
                self.teardown(key, reason);
            } else {
                self.start_linger(key, reason);
            }
        }
    }

    /// Pause receiving above the high watermark of queued output (cancel the
    /// multishot recv; it is not re-armed), resume below the low one.
    fn backpressure(&mut self, key: usize) {
        let (high, low) = (
            self.ctx.cfg.send_high_watermark,
            self.ctx.cfg.send_low_watermark,
        );
        let slot = &mut self.conns[key];
        let queued = slot.core.queued();
        if !slot.core.paused && queued > high && slot.core.closing.is_none() {
            slot.core.paused = true;
            self.ctx.stats.add(&self.ctx.stats.paused, 1);
            if slot.recv == Recv::Armed {
                let target = Token::new(OpKind::Recv, key as u32, slot.generation).to_user_data();
                let sqe = opcode::AsyncCancel::new(target).build().user_data(
                    Token::new(OpKind::Cancel, key as u32, slot.generation).to_user_data(),
                );
                self.push(sqe);
            }
        } else if slot.core.paused && queued <= low {
            slot.core.resume();
            if slot.recv == Recv::Idle && slot.core.closing.is_none() && !slot.update_busy {
                self.arm_recv(key);
            }
        }
    }

    /// Close connections whose output made no progress for `write_timeout`
    /// (their peers do not read); forget those with nothing left to send.
    fn check_writes(&mut self) {
        let now = Instant::now();
        let timeout = self.ctx.cfg.write_timeout;
        let mut keep = Vec::with_capacity(self.write_watch.len());
        for (key, generation) in std::mem::take(&mut self.write_watch) {
            let Some(slot) = self.conns.get_mut(key) else {
                continue;
            };
            if slot.generation != generation || slot.torn {
                continue;
            }
            match write_check(&mut slot.core, slot.send_busy, now, timeout) {
                WriteCheck::Drained => slot.watched = false,
                WriteCheck::Stalled => {
                    slot.watched = false;
                    self.ctx.stats.add(&self.ctx.stats.write_timeouts, 1);
                    self.teardown(key, CloseReason::Error(libc::ETIMEDOUT));
                }
                WriteCheck::Sending => keep.push((key, generation)),
            }
        }
        self.write_watch = keep;
        self.write_check_at = None;
        self.schedule_write_check();
    }

    fn schedule_write_check(&mut self) {
        if self.write_check_at.is_none() && !self.write_watch.is_empty() {
            self.write_check_at =
                Some(Instant::now() + write_check_interval(self.ctx.cfg.write_timeout));
            self.arm_linger_timer();
        }
    }

    /// All output is handed over: shut down the write side and keep reading
    /// (discarding) until the peer closes or the linger time is up.
    fn start_linger(&mut self, key: usize, reason: CloseReason) {
        self.notify_closed(key, &reason);
        let slot = &mut self.conns[key];
        slot.linger = true;
        // Lingering reads (and discards) whatever comes, paused or not.
        slot.core.paused = false;
        let fd = types::Fd(slot.core.sock.as_raw_fd());
        let generation = slot.generation;
        let sqe = opcode::Shutdown::new(fd, libc::SHUT_WR)
            .build()
            .user_data(Token::new(OpKind::ShutdownWrite, key as u32, generation).to_user_data());
        slot.shut_busy = true;
        if slot.recv == Recv::Idle {
            // A recv that ended (ENOBUFS, full CQ) while the close was
            // pending: it drains the input now.
            self.rearm.push((key, generation));
        }
        self.push(sqe);
        self.lingering.push_live(
            key,
            generation,
            Instant::now() + self.ctx.cfg.linger,
            &self.conns,
        );
        self.arm_linger_timer();
    }

    /// Make sure a worker timer fires by the nearest deadline of any kind
    /// (linger, persistent reconnects, write checks, idle and read
    /// timeouts).
    fn arm_linger_timer(&mut self) {
        let next_delayed = self.delayed.iter().map(|(t, _)| *t).min();
        let Some(deadline) = [
            self.lingering.next_deadline(),
            next_delayed,
            self.write_check_at,
            self.idle.next_deadline(),
            self.reads.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min() else {
            return;
        };
        if self.timers_pending.iter().any(|&t| t <= deadline) {
            return;
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1));
        let spec = Box::new(types::Timespec::from(wait));
        let sqe = opcode::Timeout::new(&*spec)
            .build()
            .user_data(Token::worker(OpKind::LingerTick).to_user_data());
        self.push(sqe);
        // Kept until the loop's next submit has drained the SQ (no extra
        // io_uring_enter per timer).
        self.timer_specs.push(spec);
        self.timers_pending.push(deadline);
    }

    /// Close connections idle for `idle_timeout`, or whose partial message
    /// is older than `read_timeout`; re-check those active since.
    fn timeouts_expired(&mut self) {
        let conns = &self.conns;
        let due = expire_timeouts(
            &mut self.idle,
            &mut self.reads,
            &self.ctx.cfg,
            &self.ctx.stats,
            Instant::now(),
            |key, g| {
                conns
                    .get(key)
                    .filter(|s| s.generation == g && !s.torn)
                    .map(|s| &s.core)
            },
        );
        for (key, reason) in due {
            self.conns[key].core.closing = Some(reason);
            self.mark_dirty(key);
        }
    }

    /// Close the connections whose linger time is up.
    fn linger_expired(&mut self) {
        for (key, generation) in self.lingering.expired(Instant::now()) {
            let due = self
                .conns
                .get(key)
                .is_some_and(|s| s.generation == generation && s.linger && !s.torn);
            if due {
                let reason = self.conns[key]
                    .core
                    .closing
                    .clone()
                    .unwrap_or(CloseReason::Local);
                self.teardown(key, reason);
            }
        }
        self.arm_linger_timer();
    }

    /// Begin closing: tell the handler, cancel what is in flight, and free
    /// the slot once nothing is.
    /// Tell the handler (once) that the connection is closed; it leaves the
    /// bus, and a persistent outbound connection is scheduled again.
    fn notify_closed(&mut self, key: usize, reason: &CloseReason) {
        let slot = &mut self.conns[key];
        if slot.notified {
            return;
        }
        slot.notified = true;
        let id = slot.core.id;
        let origin = slot.core.take_origin();
        self.ctx.bus.closed(id);
        self.handler.on_close(id, reason);
        if let Some(next) = origin {
            self.schedule(next);
        }
    }

    fn teardown(&mut self, key: usize, reason: CloseReason) {
        if self.conns[key].torn {
            return;
        }
        self.notify_closed(key, &reason);
        let slot = &mut self.conns[key];
        slot.torn = true;
        if slot.core.closing.is_none() {
            slot.core.closing = Some(reason.clone());
        }
        if slot.recv == Recv::Armed || slot.send_busy || slot.shut_busy {
            let fd = types::Fd(slot.core.sock.as_raw_fd());
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(fd).all())
                .build()
                .user_data(Token::new(OpKind::Cancel, key as u32, slot.generation).to_user_data());
            self.push(sqe);
        }
        self.finish_if_idle(key);
    }

    /// Free a torn-down slot once no operation on it is in flight.
    fn finish_if_idle(&mut self, key: usize) {
        let Some(slot) = self.conns.get(key) else {
            return;
        };
        if !slot.torn
            || slot.recv == Recv::Armed
            || slot.send_busy
            || slot.shut_busy
            || slot.update_busy
        {
            return;
        }
        let slot = self.conns.remove(key);
        if slot.fixed {
            // Drop the table's reference too, or the socket would stay open
            // until the index is reused. Both updates run in submission
            // order, so a new connection on this key installs after this.
            self.fixed_fds[key] = -1;
            let sqe = opcode::FilesUpdate::new(&CLEAR_FIXED, 1)
                .offset(key as i32)
                .build()
                .user_data(
                    Token::new(OpKind::FilesUpdate, key as u32, slot.generation).to_user_data(),
                );
            self.push(sqe);
        }
        let fd = slot.core.sock.into_raw_fd();
        let sqe = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(Token::new(OpKind::Close, key as u32, slot.generation).to_user_data());
        self.push(sqe);
        self.closes_in_flight += 1;
        self.ctx.bus.release();
        self.groups.release(&self.ring, slot.bgid);
        let st = &self.ctx.stats;
        st.add(&st.closed, 1);
        st.sub(&st.open, 1);
        self.sync_group_stats();
    }

    fn sync_group_stats(&self) {
        let st = &self.ctx.stats;
        st.set(&st.groups_in_use, self.groups.in_use as u64);
        st.set(&st.groups_idle, self.groups.idle() as u64);
    }

    fn after_batch(&mut self) {
        self.run_requests();
        let rearm = std::mem::take(&mut self.rearm);
        for &(key, generation) in &rearm {
            let ok = self.conns.get(key).is_some_and(|s| {
                s.generation == generation
                    && !s.torn
                    && s.recv == Recv::Idle
                    && !s.core.paused
                    && (s.core.closing.is_none() || s.linger)
            });
            if ok {
                self.ctx.stats.add(&self.ctx.stats.recv_rearms, 1);
                self.arm_recv(key);
            }
        }
        self.rearm = rearm;
        self.rearm.clear();
        // In the order the connections became dirty: the reply to the
        // earliest input of the batch goes out first.
        // A flush may dirty more (appended, and flushed in this pass).
        let mut next = 0;
        while let Some(&key) = self.dirty.get(next) {
            next += 1;
            self.flush(key);
        }
        self.dirty.clear();
    }
}

impl<H: Handler> CommandTarget for Worker<H> {
    fn start_connect(&mut self, req: ConnectRequest) {
        Worker::start_connect(self, req);
    }
    fn conn_keys(&self) -> Vec<usize> {
        self.conns.iter().map(|(k, _)| k).collect()
    }
    fn core_mut(&mut self, key: usize) -> Option<&mut ConnCore> {
        self.conns
            .get_mut(key)
            .filter(|s| !s.torn)
            .map(|s| &mut s.core)
    }
    fn flush_later(&mut self, key: usize) {
        self.mark_dirty(key);
    }
    fn close_now(&mut self, key: usize, reason: CloseReason) {
        self.teardown(key, reason);
    }
    fn ctx(&self) -> &WorkerCtx {
        &self.ctx
    }
}

impl<H: Handler> Drop for Worker<H> {
    /// On a normal exit nothing is in flight. After an error or a panic,
    /// recvs and sends may be: cancel every request synchronously
    /// (IORING_REGISTER_SYNC_CANCEL, Linux 6.0) before the slab, and with it
    /// the send buffers, is freed.
    fn drop(&mut self) {
        if self.conns.is_empty() && self.pending.is_empty() && !self.accept_armed {
            return;
        }
        super::cancel_all_sync(&self.ring);
    }
}
