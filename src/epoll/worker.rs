//! One epoll worker: an epoll instance, a slab of connections, one read
//! buffer, and the loop that turns readiness into handler calls.
//!
//! It keeps the io_uring worker's contract with the handler (see
//! [`crate::handler`]) with readiness instead of completions:
//!
//! * **Accept.** The listener is level-triggered (with `EPOLLEXCLUSIVE` when
//!   every worker shares it, so one connection wakes one worker). Each wake-up
//!   accepts up to [`ACCEPT_BATCH`] connections with `accept4(SOCK_NONBLOCK)`.
//!   On EMFILE/ENFILE/ENOMEM/ENOBUFS the listener is taken out of the epoll
//!   set for `accept_backoff`, so the loop never spins on a queue it cannot
//!   drain.
//! * **Receive.** Connections are level-triggered for `EPOLLIN|EPOLLRDHUP`.
//!   A readable connection is read into the worker's one buffer up to
//!   [`READS_PER_EVENT`] times (the same bound multishot recv applies), so a
//!   flooding client cannot starve the others; the bytes are lent to
//!   `on_data` and the buffer is free again when it returns.
//! * **Send.** Output queued by the handler is written after the batch of
//!   events, in order, until EAGAIN; the rest waits for `EPOLLOUT`, which is
//!   only in the interest set while output is pending.
//! * **Close.** As on io_uring: graceful closes flush first, errors do not;
//!   `on_close` is called once, the socket is closed (which removes it from
//!   the epoll set) and the slot freed. Nothing is in flight in the kernel,
//!   so a slot can be freed at once.
//!
//! Event data is a [`Token`] like io_uring's `user_data`: a readiness event
//! for a slot reused within the same batch is recognised as stale.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use slab::Slab;
use socket2::Socket;

use crate::bus::{Command, CommandTarget};
use crate::config::{Backend, ListenerMode};
use crate::connect::{socket_for, ConnectError, ConnectRequest};
use crate::engine::WorkerCtx;
use crate::handler::Env;
use crate::handler::{CloseReason, ConnCore, Handler};
use crate::linger::{
    expire_timeouts, write_check, write_check_interval, Deadlines, Lingering, WriteCheck,
};
use crate::sys::epoll::{self, Epoll, Event};
use crate::token::{ConnId, OpKind, Token, GENERATION_MASK};

/// Connections accepted per listener wake-up.
pub(crate) const ACCEPT_BATCH: usize = 64;
/// Reads per readiness event on one connection.
pub(crate) const READS_PER_EVENT: usize = 32;
/// Events taken per `epoll_wait`.
const MAX_EVENTS: usize = 1024;

/// An outbound connect in flight: a non-blocking connect waiting for
/// EPOLLOUT, with its deadline in `Worker::connect_deadlines`.
struct Pending {
    sock: Socket,
    req: ConnectRequest,
    generation: u32,
}

struct Slot {
    core: ConnCore,
    generation: u32,
    /// The epoll interest currently registered.
    interest: u32,
    /// In its lingering close: write side shut down, input discarded until
    /// the peer closes or the linger time is up (see `crate::linger`).
    linger: bool,
    /// `on_close` was called.
    notified: bool,
    /// Listed in `Worker::write_watch`.
    watched: bool,
}

impl crate::linger::Generation for Slot {
    fn generation(&self) -> u32 {
        self.generation
    }
}

pub(crate) struct Worker<H: Handler> {
    ep: Epoll,
    handler: H,
    conns: Slab<Slot>,
    ctx: WorkerCtx,
    buf: Vec<u8>,
    events: Vec<Event>,
    dirty: Vec<usize>,
    next_generation: u32,
    listening: bool,
    backoff_until: Option<Instant>,
    deadline: Option<Instant>,
    lingering: Lingering,
    /// Idle-timeout and read-timeout entries.
    idle: Deadlines,
    reads: Deadlines,
    /// What handler callbacks and other threads asked for.
    requests: Vec<Command>,
    /// Persistent outbound connections waiting out their backoff.
    delayed: Vec<(Instant, ConnectRequest)>,
    /// Connections with output waiting for the socket, checked against
    /// `write_timeout`, and when they are next checked.
    write_watch: Vec<(usize, u32)>,
    write_check_at: Option<Instant>,
    /// Outbound attempts in flight, and their deadlines (earliest first).
    pending: Slab<Pending>,
    connect_deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize, u32)>>,
    stopping: bool,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(ctx: WorkerCtx, handler: H) -> Result<Worker<H>, crate::Error> {
        let ep = Epoll::new(MAX_EVENTS).map_err(|source| crate::Error::Worker {
            worker: ctx.index,
            source,
        })?;
        let buf = vec![0u8; ctx.cfg.buf_size as usize];
        let mut w = Worker {
            ep,
            handler,
            conns: Slab::new(),
            ctx,
            buf,
            events: Vec::with_capacity(MAX_EVENTS),
            dirty: Vec::new(),
            next_generation: 0,
            listening: false,
            backoff_until: None,
            deadline: None,
            lingering: Lingering::default(),
            idle: Deadlines::default(),
            reads: Deadlines::default(),
            requests: Vec::new(),
            delayed: Vec::new(),
            write_watch: Vec::new(),
            write_check_at: None,
            pending: Slab::new(),
            connect_deadlines: std::collections::BinaryHeap::new(),
            stopping: false,
        };
        let wake = Token::worker(OpKind::Wake).to_user_data();
        w.ep.add(w.ctx.wake.as_raw_fd(), epoll::IN, wake)
            .and_then(|()| w.listen())
            .map_err(|source| crate::Error::Worker {
                worker: w.ctx.index,
                source,
            })?;
        Ok(w)
    }

    /// Put the listener in the epoll set.
    fn listen(&mut self) -> io::Result<()> {
        if self.listening {
            return Ok(());
        }
        let exclusive = if self.ctx.cfg.listener == ListenerMode::Shared {
            epoll::EXCLUSIVE
        } else {
            0
        };
        let data = Token::worker(OpKind::Accept).to_user_data();
        self.ep
            .add(self.ctx.listener.as_raw_fd(), epoll::IN | exclusive, data)?;
        self.listening = true;
        Ok(())
    }

    fn unlisten(&mut self) {
        if self.listening {
            let _ = self.ep.delete(self.ctx.listener.as_raw_fd());
            self.listening = false;
        }
    }

    /// Run until shutdown is requested and every connection has closed.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        let env = Env {
            requests: &mut self.requests,
            bus: &self.ctx.bus,
            worker: self.ctx.index,
        };
        self.handler.on_start(&mut crate::handler::Ctx { env });
        self.run_requests();
        loop {
            if self.stopping && self.conns.is_empty() && self.pending.is_empty() {
                return Ok(());
            }
            let waited = self.ep.wait(&mut events, self.timeout_ms());
            self.ctx.stats.add(&self.ctx.stats.waits, 1);
            match waited {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in &events {
                self.dispatch(*ev);
            }
            self.timers()?;
            // Requests first: their deliveries mark connections dirty, and
            // the flush below sends them in this same turn.
            self.run_requests();
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

    /// Milliseconds until the nearest timer, or -1.
    fn timeout_ms(&self) -> i32 {
        let next = [
            self.backoff_until,
            self.deadline,
            self.lingering.next_deadline(),
            self.idle.next_deadline(),
            self.reads.next_deadline(),
            self.connect_deadlines.peek().map(|r| r.0 .0),
            self.delayed.iter().map(|(t, _)| *t).min(),
            self.write_check_at,
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            None => -1,
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                // Round up so the timer has passed when we wake.
                (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            }
        }
    }

    fn timers(&mut self) -> io::Result<()> {
        let now = Instant::now();
        if self.write_check_at.is_some_and(|t| t <= now) {
            self.check_writes(now);
        }
        let conns = &self.conns;
        let due = expire_timeouts(
            &mut self.idle,
            &mut self.reads,
            &self.ctx.cfg,
            &self.ctx.stats,
            now,
            |key, g| {
                conns
                    .get(key)
                    .filter(|s| s.generation == g)
                    .map(|s| &s.core)
            },
        );
        for (key, reason) in due {
            self.conns[key].core.closing = Some(reason);
            self.mark_dirty(key);
        }
        // Persistent connections whose backoff is over.
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = wait;
        for (_, req) in due {
            self.start_connect(req);
        }
        if self.backoff_until.is_some_and(|t| t <= now) {
            self.backoff_until = None;
            if !self.stopping {
                self.listen()?;
            }
        }
        for (key, generation) in self.lingering.expired(now) {
            let due = self
                .conns
                .get(key)
                .is_some_and(|s| s.generation == generation && s.linger);
            if due {
                let reason = self.conns[key]
                    .core
                    .closing
                    .clone()
                    .unwrap_or(CloseReason::Local);
                self.teardown(key, reason);
            }
        }
        while let Some(&std::cmp::Reverse((t, key, generation))) = self.connect_deadlines.peek() {
            if t > now {
                break;
            }
            self.connect_deadlines.pop();
            if self
                .pending
                .get(key)
                .is_some_and(|p| p.generation == generation)
            {
                let p = self.pending.remove(key);
                self.attempt_failed(p.req, ConnectError::TimedOut);
            }
        }
        if self.deadline.is_some_and(|t| t <= now) {
            self.deadline = None;
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.ctx.stats.add(&self.ctx.stats.shutdown_forced, 1);
                self.teardown(key, CloseReason::Shutdown);
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: Event) {
        let Some(tok) = Token::from_user_data(ev.data) else {
            return;
        };
        match tok.kind() {
            OpKind::Accept => self.accept_batch(),
            OpKind::Wake => self.on_wake(),
            OpKind::Connect => self.on_connect_ready(tok),
            OpKind::Recv => {
                let current = self
                    .conns
                    .get(tok.key())
                    .is_some_and(|s| tok.is_current(s.generation));
                if !current {
                    self.ctx.stats.add(&self.ctx.stats.stale, 1);
                    return;
                }
                self.on_ready(tok.key(), ev.events);
            }
            _ => {}
        }
    }

    fn on_wake(&mut self) {
        self.ctx.wake.drain();
        while let Ok(cmd) = self.ctx.commands.try_recv() {
            self.requests.push(cmd);
        }
        // Acquire pairs with the Release store in `Engine::shutdown`.
        if self.ctx.stop.load(Ordering::Acquire) && !self.stopping {
            self.stopping = true;
            self.unlisten();
            self.backoff_until = None;
            // Relaxed: ordered before the Release store of `stop` we saw.
            let ms = self.ctx.shutdown_ms.load(Ordering::Relaxed);
            self.deadline = Some(Instant::now() + std::time::Duration::from_millis(ms));
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                let slot = &mut self.conns[key];
                if slot.core.closing.is_none() {
                    slot.core.closing = Some(CloseReason::Shutdown);
                }
                self.mark_dirty(key);
            }
            let keys: Vec<usize> = self.pending.iter().map(|(k, _)| k).collect();
            for key in keys {
                let p = self.pending.remove(key);
                self.attempt_failed(p.req, ConnectError::Shutdown);
            }
        }
    }

    /// Carry out what handlers and other threads asked for: connects,
    /// broadcasts, sends.
    fn run_requests(&mut self) {
        let cmds = std::mem::take(&mut self.requests);
        self.run_commands(cmds);
    }

    /// Close connections whose output made no progress for `write_timeout`
    /// (their peers do not read); forget those with nothing left to send.
    fn check_writes(&mut self, now: Instant) {
        let timeout = self.ctx.cfg.write_timeout;
        let mut keep = Vec::with_capacity(self.write_watch.len());
        for (key, generation) in std::mem::take(&mut self.write_watch) {
            let Some(slot) = self.conns.get_mut(key) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            match write_check(&mut slot.core, false, now, timeout) {
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
        self.schedule_write_check(now);
    }

    fn schedule_write_check(&mut self, now: Instant) {
        if self.write_check_at.is_none() && !self.write_watch.is_empty() {
            self.write_check_at = Some(now + write_check_interval(self.ctx.cfg.write_timeout));
        }
    }

    /// Run `req` again after `wait` (persistent connections).
    fn schedule(&mut self, (wait, req): (std::time::Duration, ConnectRequest)) {
        if !self.stopping {
            self.delayed.push((Instant::now() + wait, req));
        }
    }

    /// A non-blocking connect to `req`'s current address.
    fn start_connect(&mut self, req: ConnectRequest) {
        if self.stopping {
            return self.attempt_failed(req, ConnectError::Shutdown);
        }
        let Some(addr) = req.addr() else {
            return self.attempt_failed(req, ConnectError::Os(libc::EDESTADDRREQ));
        };
        let sock = match socket_for(addr, &self.ctx.cfg, true) {
            Ok(s) => s,
            Err(e) => return self.attempt_failed(req, ConnectError::from_io(&e)),
        };
        if let Err(e) = sock.connect(&addr.into()) {
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return self.attempt_failed(req, ConnectError::from_io(&e));
            }
        }
        // Connected at once or in progress: EPOLLOUT says which way it went.
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let entry = self.pending.vacant_entry();
        let key = entry.key();
        let data = Token::new(OpKind::Connect, key as u32, generation).to_user_data();
        if let Err(e) = self.ep.add(sock.as_raw_fd(), epoll::OUT, data) {
            return self.attempt_failed(req, ConnectError::from_io(&e));
        }
        let deadline = Instant::now() + req.timeout;
        entry.insert(Pending {
            sock,
            req,
            generation,
        });
        self.connect_deadlines
            .push(std::cmp::Reverse((deadline, key, generation)));
    }

    fn on_connect_ready(&mut self, tok: Token) {
        if !self
            .pending
            .get(tok.key())
            .is_some_and(|p| tok.is_current(p.generation))
        {
            return;
        }
        let Pending { sock, req, .. } = self.pending.remove(tok.key());
        match sock.take_error() {
            Ok(None) => {
                self.ctx.stats.add(&self.ctx.stats.connected, 1);
                self.ctx.bus.admit();
                // The backoff starts over only once the connection has
                // stayed up (`ConnectRequest::after_close`).
                self.open(sock, Some(req), true);
            }
            Ok(Some(e)) | Err(e) => {
                drop(sock); // leaves the epoll set
                self.attempt_failed(req, ConnectError::from_io(&e));
            }
        }
    }

    /// An attempt failed: try the next address, or report the failure.
    fn attempt_failed(&mut self, mut req: ConnectRequest, err: ConnectError) {
        if err != ConnectError::Shutdown && !self.stopping && req.advance() {
            return self.start_connect(req);
        }
        self.ctx.stats.add(&self.ctx.stats.connect_failures, 1);
        self.handler.on_connect_failed(req.tag, &err);
        if req.persistent && err != ConnectError::Shutdown {
            self.schedule(req.retry());
        }
    }

    fn accept_batch(&mut self) {
        if self.stopping || !self.listening {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            match epoll::accept_nonblocking(&self.ctx.listener) {
                Ok(sock) if !self.ctx.bus.try_admit() => {
                    // At max_connections: accepted and closed at once.
                    self.ctx.stats.add(&self.ctx.stats.refused, 1);
                    drop(sock);
                }
                Ok(sock) => {
                    self.ctx.stats.add(&self.ctx.stats.accepted, 1);
                    self.open(sock, None, false);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::ECONNABORTED) | Some(libc::EINTR) | Some(libc::EPROTO) => continue,
                    // Out of descriptors or memory (the connection stays
                    // queued) or anything unexpected: stop listening for a
                    // while so the loop never spins.
                    _ => {
                        self.ctx.stats.add(&self.ctx.stats.accept_backoffs, 1);
                        self.unlisten();
                        self.backoff_until = Some(Instant::now() + self.ctx.cfg.accept_backoff);
                        return;
                    }
                },
            }
        }
    }

    /// A new connection (accepted, or connected out with `tag`) joins the
    /// slab; `registered`: its fd is already in the epoll set (outbound).
    /// Accepted streams get TCP_NODELAY from the listener (see
    /// `listener::ListenOptions`); outbound ones from `socket_for`.
    fn open(&mut self, sock: Socket, origin: Option<ConnectRequest>, registered: bool) {
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let data = Token::new(OpKind::Recv, key as u32, generation).to_user_data();
        let interest = epoll::IN | epoll::RDHUP;
        let added = if registered {
            self.ep.modify(sock.as_raw_fd(), interest, data)
        } else {
            self.ep.add(sock.as_raw_fd(), interest, data)
        };
        if added.is_err() {
            // Dropped: closed at once, never seen by the handler.
            self.ctx.bus.release();
            if let Some(req) = origin {
                self.attempt_failed(req, ConnectError::Os(libc::EIO));
            }
            return;
        }
        entry.insert(Slot {
            core: ConnCore::new(
                ConnId::new(self.ctx.index, key, generation),
                sock,
                Backend::Epoll,
                self.ctx.cfg.input_timeouts(),
            ),
            generation,
            interest,
            linger: false,
            notified: false,
            watched: false,
        });
        let st = &self.ctx.stats;
        st.add(&st.open, 1);
        if let Some(idle) = self.ctx.cfg.idle_timeout {
            self.idle
                .push_live(key, generation, Instant::now() + idle, &self.conns);
        }
        let slot = &mut self.conns[key];
        slot.core.set_origin(origin);
        self.ctx.bus.opened(slot.core.id);
        let env = Env {
            requests: &mut self.requests,
            bus: &self.ctx.bus,
            worker: self.ctx.index,
        };
        self.handler.on_open(&mut crate::handler::Conn {
            core: &mut slot.core,
            env,
        });
        self.mark_dirty(key);
    }

    fn on_ready(&mut self, key: usize, events: u32) {
        if events & epoll::OUT != 0 {
            self.mark_dirty(key);
        }
        if events & (epoll::IN | epoll::RDHUP | epoll::HUP_ERR) != 0 {
            self.read(key);
        }
    }

    fn read(&mut self, key: usize) {
        let limit = self.ctx.cfg.max_unconsumed;
        let st = std::sync::Arc::clone(&self.ctx.stats);
        for _ in 0..READS_PER_EVENT {
            let Worker {
                conns,
                handler,
                buf,
                requests,
                ctx,
                ..
            } = self;
            let slot = &mut conns[key];
            if slot.linger {
                // Lingering close: discard input until the peer closes.
                match (&slot.core.sock).read(buf) {
                    Ok(0) => {
                        let reason = slot.core.closing.clone().unwrap_or(CloseReason::Local);
                        self.teardown(key, reason);
                        return;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.teardown(key, CloseReason::from_io(&e));
                        return;
                    }
                }
            }
            if slot.core.closing.is_some() || slot.core.paused {
                break;
            }
            match (&slot.core.sock).read(buf) {
                Ok(0) => {
                    slot.core.closing = Some(CloseReason::PeerClosed);
                    break;
                }
                Ok(n) => {
                    st.add(&st.bytes_in, n as u64);
                    st.add(&st.buffers_in_use, 1);
                    let env = Env {
                        requests,
                        bus: &ctx.bus,
                        worker: ctx.index,
                    };
                    let outcome = slot.core.deliver(handler, &buf[..n], limit, env);
                    st.sub(&st.buffers_in_use, 1);
                    if let Err(reason) = outcome {
                        self.teardown(key, reason);
                        return;
                    }
                    if slot
                        .core
                        .clock
                        .as_deref_mut()
                        .is_some_and(|c| std::mem::take(&mut c.partial_started))
                    {
                        if let Some(read) = ctx.cfg.read_timeout {
                            let generation = slot.generation;
                            self.reads.push_live(
                                key,
                                generation,
                                Instant::now() + read,
                                &self.conns,
                            );
                        }
                    }
                    if n < buf.len() {
                        break; // drained: the next read would say EAGAIN
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.teardown(key, CloseReason::from_io(&e));
                    return;
                }
            }
        }
        self.mark_dirty(key);
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(slot) = self.conns.get_mut(key) {
            slot.core.mark_dirty(key, &mut self.dirty);
        }
    }

    /// Write queued output until done or EAGAIN, finish a graceful close,
    /// and bring the epoll interest up to date.
    fn flush(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        slot.core.clear_dirty();
        while slot.core.next_send() {
            match slot
                .core
                .sock
                .send_with_flags(slot.core.unsent(), libc::MSG_NOSIGNAL)
            {
                Ok(n) => {
                    slot.core.advance(n);
                    self.ctx.stats.add(&self.ctx.stats.bytes_out, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.teardown(key, CloseReason::from_io(&e));
                    return;
                }
            }
        }
        let pending = slot.core.send_pending();
        if !pending && !slot.linger {
            if let Some(reason) = slot.core.closing.clone() {
                if !reason.flushes() {
                    // A handler's close_with(Error or InputLimit): its output
                    // is written; close without lingering.
                    self.teardown(key, reason);
                    return;
                }
                if reason == CloseReason::PeerClosed {
                    // End of stream was read: nothing unread can make the
                    // close a reset.
                    self.teardown(key, reason);
                    return;
                }
                if reason.flushes() {
                    // All output is written: shut down the write side and
                    // linger, reading and discarding, until the peer closes.
                    slot.linger = true;
                    // Lingering reads (and discards) whatever comes.
                    slot.core.paused = false;
                    let _ = slot.core.sock.shutdown(std::net::Shutdown::Write);
                    let generation = slot.generation;
                    self.lingering.push_live(
                        key,
                        generation,
                        Instant::now() + self.ctx.cfg.linger,
                        &self.conns,
                    );
                    self.notify_closed(key, &reason);
                }
            }
        }
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        // Backpressure: stop reading above the high watermark of queued
        // output, resume below the low one.
        let queued = slot.core.queued();
        if !slot.core.paused
            && queued > self.ctx.cfg.send_high_watermark
            && slot.core.closing.is_none()
        {
            slot.core.paused = true;
            self.ctx.stats.add(&self.ctx.stats.paused, 1);
        } else if slot.core.paused && queued <= self.ctx.cfg.send_low_watermark {
            slot.core.resume();
        }
        // Output waiting for the socket: watch it against write_timeout.
        if pending && !slot.watched {
            slot.watched = true;
            slot.core.watch_writes();
            self.write_watch.push((key, slot.generation));
            self.schedule_write_check(Instant::now());
        }
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        // Read while open (and not paused) or lingering, not while waiting
        // to close; wait for writability while output is pending.
        let mut want = if (slot.core.closing.is_none() && !slot.core.paused) || slot.linger {
            epoll::IN | epoll::RDHUP
        } else {
            0
        };
        if pending {
            want |= epoll::OUT;
        }
        if want != slot.interest {
            let data = Token::new(OpKind::Recv, key as u32, slot.generation).to_user_data();
            match self.ep.modify(slot.core.sock.as_raw_fd(), want, data) {
                Ok(()) => slot.interest = want,
                Err(e) => self.teardown(key, CloseReason::from_io(&e)),
            }
        }
    }

    /// Tell the handler (once) that the connection is closed; it leaves the
    /// bus, and a persistent outbound connection is scheduled again.
    fn notify_closed(&mut self, key: usize, reason: &CloseReason) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
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

    /// Close now: tell the handler, close the socket, free the slot.
    fn teardown(&mut self, key: usize, reason: CloseReason) {
        if !self.conns.contains(key) {
            return;
        }
        self.notify_closed(key, &reason);
        let slot = self.conns.remove(key);
        drop(slot);
        self.ctx.bus.release(); // closing the fd removes it from the epoll set
        let st = &self.ctx.stats;
        st.add(&st.closed, 1);
        st.sub(&st.open, 1);
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
        self.conns.get_mut(key).map(|s| &mut s.core)
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
