//! How connections join a worker (accepted, or connected out), and the
//! commands handlers and other threads send it: connect, broadcast,
//! send-to.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::deadlines::Due;
use super::{op, Accept, Pending, Slot, Worker};
use crate::bus::Command;
use crate::conn::{ConnCore, Delivery};
use crate::connect::{socket_for, ConnectError, ConnectRequest};
use crate::driver::{Driver, DriverConn, NewConn};
use crate::handler::{CloseReason, Handler};
use crate::tls::session::TlsConn;
use crate::token::ConnId;

/// Where a new connection comes from.
pub(super) enum Origin {
    /// Accepted through the listener with this index.
    Listener(u16),
    /// Connected out for this request.
    Connect(ConnectRequest),
}

impl<H: Handler> Worker<H> {
    /// Start accepting on every listener.
    pub(super) fn arm_accepts(&mut self) {
        for index in 0..self.accepts.len() {
            self.arm_accept(index as u16);
        }
    }

    /// Start accepting on listener `index` (unless shutting down, armed, or
    /// backing off).
    pub(super) fn arm_accept(&mut self, index: u16) {
        let slot = usize::from(index);
        if self.stopping || self.accepts[slot] != Accept::Idle {
            return;
        }
        let l = &self.ctx.listeners[slot];
        match self
            .driver
            .arm_accept(index, l.sock.as_raw_fd(), l.exclusive)
        {
            Ok(()) => self.accepts[slot] = Accept::Armed,
            Err(e) => self.fatal = Some(e),
        }
    }

    /// A connection came through listener `listener`.
    pub(super) fn on_accepted(&mut self, listener: u16, conn: NewConn) {
        if !self.ctx.bus.try_admit() {
            // At max_connections: accepted and closed at once.
            self.ctx.stats.add(&self.ctx.stats.refused, 1);
            self.driver.discard(conn);
            return;
        }
        self.ctx.stats.add(&self.ctx.stats.accepted, 1);
        self.open(conn, Origin::Listener(listener));
    }

    /// The accept on `listener` stopped: re-arm now, or after
    /// `accept_backoff` when the process is out of descriptors or memory
    /// (the connection stays queued), so the loop never spins.
    pub(super) fn on_accept_ended(&mut self, listener: u16, errno: i32) {
        self.accepts[usize::from(listener)] = Accept::Idle;
        if self.stopping || errno == libc::ECANCELED {
            return;
        }
        match errno {
            // Ended by itself, the peer gave up before we took it, or a
            // signal: again now.
            0 | libc::ECONNABORTED | libc::EINTR | libc::EAGAIN => {
                self.ctx.stats.add(&self.ctx.stats.accept_rearms, 1);
                self.arm_accept(listener);
            }
            _ => {
                self.ctx.stats.add(&self.ctx.stats.accept_backoffs, 1);
                self.accepts[usize::from(listener)] = Accept::Backoff;
                let wait = self.ctx.cfg.accept_backoff;
                self.deadlines
                    .arm(Instant::now(), wait, Due::AcceptBackoff(listener));
            }
        }
    }

    /// A new connection (accepted, or connected out) joins the slab.
    /// Accepted streams get TCP_NODELAY from the listener (see
    /// `listener::ListenOptions`); outbound ones from `socket_for`. One
    /// accepted while the worker shuts down (its accept had taken it before
    /// the cancel) is opened and closed gracefully at once, like the
    /// others: its peer sees the end of the stream, not a reset.
    pub(super) fn open(&mut self, conn: NewConn, from: Origin) {
        let generation = self.next_generation();
        let key = self.conns.vacant_entry().key();
        let (listener, origin) = match from {
            Origin::Listener(i) => (Some(i), None),
            Origin::Connect(req) => (None, Some(req)),
        };
        let outbound = origin.is_some();
        // A TLS listener's connection gets its session first.
        let acceptor = listener.and_then(|i| self.ctx.listeners[usize::from(i)].tls.as_ref());
        let session = match (acceptor, &origin) {
            (Some(a), _) => Some(a.session().map(rustls::Connection::from)),
            (None, Some(ConnectRequest { tls: Some(t), .. })) => {
                Some(t.connector.session(&t.name).map(rustls::Connection::from))
            }
            _ => None,
        };
        let session = match session {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                log::warn!("cannot start a TLS session: {e}");
                self.ctx.stats.add(&self.ctx.stats.tls_failures, 1);
                self.ctx.bus.release();
                self.driver.discard(conn);
                if let Some(req) = origin {
                    self.connect_failed(&req, ConnectError::Tls(e.to_string()));
                }
                return;
            }
        };
        let mut drv = DriverConn::default();
        let registering = match self
            .driver
            .open_conn(key, generation, &mut drv, &conn, outbound)
        {
            Ok(r) => r,
            Err(_) => {
                // Closed at once, never seen by the handler.
                self.driver.discard(conn);
                self.ctx.bus.release();
                if let Some(req) = origin {
                    self.attempt_failed(req, ConnectError::Os(libc::EIO));
                }
                return;
            }
        };
        let cfg = &self.ctx.cfg;
        let now = (cfg.input_timeouts() || outbound).then(Instant::now);
        let id = ConnId::new(self.ctx.index, key, generation);
        let sock = match conn {
            NewConn::Plain(sock) => Some(sock),
            NewConn::Direct(_) => None,
        };
        let mut core = ConnCore::new(id, sock, listener, now.filter(|_| cfg.input_timeouts()));
        if let Some(now) = now {
            core.set_origin(origin, now);
        }
        let handshaking = session.is_some();
        if let Some(session) = session {
            // A client's ClientHello goes out with the first flush.
            let tls = TlsConn::new(session, &mut core.out);
            core.set_tls(tls);
            self.ctx.stats.add(&self.ctx.stats.tls_sessions, 1);
        }
        self.conns.insert(Slot {
            core,
            ops: if registering { op::REG } else { 0 },
            drv,
            state: None,
        });
        let st = &self.ctx.stats;
        st.add(&st.open, 1);
        if let (Some(idle), Some(now)) = (self.ctx.cfg.idle_timeout, now) {
            self.deadlines.arm(now, idle, Due::Idle(id));
        }
        if handshaking {
            // The handler hears of it once the handshake is over.
            let limit = self.ctx.cfg.tls_handshake_timeout;
            self.deadlines
                .arm(Instant::now(), limit, Due::Handshake(id));
        } else {
            self.ctx.bus.opened(id);
            self.open_with_handler(key);
        }
        if self.stopping {
            self.conns[key].core.close(CloseReason::Shutdown);
        }
        if !registering && self.conns[key].core.wants_input() {
            self.arm_recv(key);
        }
        // A flush only if `on_open` (or a TLS client's hello) queued output
        // or closed: a fresh connection has nothing else to flush.
        if let Some(core) = self.conns.get(key).map(|s| &s.core) {
            if core.has_output() || core.is_closing() {
                self.mark_dirty(key);
            }
        }
    }

    /// A registration finished: arm the first receive.
    pub(super) fn on_registered(&mut self, key: usize, ok: bool) {
        let slot = &mut self.conns[key];
        slot.ops &= !op::REG;
        self.driver.registered(&mut slot.drv, ok);
        if slot.core.is_closed() {
            self.finish_if_idle(key);
        } else if !slot.has(op::RECV | op::RECV_DONE) && slot.core.wants_input() {
            self.arm_recv(key);
        }
    }

    /// One attempt of `req` at its current address; on a failure to even
    /// start, the next address, and so on.
    pub(super) fn start_connect(&mut self, req: ConnectRequest) {
        if self.stopping {
            return self.connect_failed(&req, ConnectError::Shutdown);
        }
        let Some(addr) = req.addr() else {
            return self.connect_failed(&req, ConnectError::Os(libc::EDESTADDRREQ));
        };
        let started = addr.to_sock_addr().and_then(|sa| {
            socket_for(addr, &self.ctx.cfg, self.driver.nonblocking()).map(|s| (s, sa))
        });
        let (sock, sa) = match started {
            Ok(s) => s,
            Err(e) => return self.attempt_failed(req, ConnectError::from_io(&e)),
        };
        let generation = self.next_generation();
        let key = self.pending.vacant_entry().key();
        if let Err(e) = self.driver.connect(key, generation, &sock, sa) {
            return self.attempt_failed(req, ConnectError::from_io(&e));
        }
        let timeout = req.timeout;
        self.pending.insert(Pending {
            sock,
            req,
            generation,
            aborted: None,
        });
        let due = Due::Connect {
            key: key as u32,
            generation,
        };
        self.deadlines.arm(Instant::now(), timeout, due);
    }

    /// Give up pending attempt `key` for `why` (timeout, shutdown).
    pub(super) fn abort_connect(&mut self, key: usize, why: ConnectError) {
        let p = &mut self.pending[key];
        if p.aborted.is_some() {
            return;
        }
        p.aborted = Some(why.clone());
        if !self
            .driver
            .abort_connect(key, p.generation, p.sock.as_raw_fd())
        {
            let p = self.pending.remove(key);
            self.attempt_failed(p.req, why);
        }
    }

    pub(super) fn on_connected(&mut self, key: usize, generation: u32, res: Option<i32>) {
        if !self
            .pending
            .get(key)
            .is_some_and(|p| p.generation == generation)
        {
            return;
        }
        let Pending {
            sock, req, aborted, ..
        } = self.pending.remove(key);
        let outcome = Driver::connect_result(res, &sock);
        let err = match (outcome, aborted) {
            (Ok(()), None) if !self.stopping => {
                self.ctx.stats.add(&self.ctx.stats.connected, 1);
                self.ctx.bus.admit();
                // The backoff starts over only once the connection has
                // stayed up (`ConnectRequest::after_close`).
                return self.open(NewConn::Plain(sock), Origin::Connect(req));
            }
            // Given up meanwhile (it may still have connected): reported
            // as what gave it up, and the socket closed.
            (_, Some(why)) => why,
            (Ok(()), None) => ConnectError::Shutdown,
            (Err(_), None) if self.stopping => ConnectError::Shutdown,
            (Err(e), None) => ConnectError::from_io(&e),
        };
        drop(sock);
        self.attempt_failed(req, err);
    }

    /// An attempt failed: try the next address, or report the failure.
    fn attempt_failed(&mut self, mut req: ConnectRequest, err: ConnectError) {
        if err != ConnectError::Shutdown && !self.stopping && req.advance() {
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

    /// Run `req` again after `wait` (persistent connections).
    pub(super) fn schedule(&mut self, (wait, req): (Duration, ConnectRequest)) {
        if !self.stopping {
            self.deadlines
                .arm(Instant::now(), wait, Due::Reconnect(Box::new(req)));
        }
    }

    /// Carry out `cmds` in order (after a batch, outside any handler call):
    /// connects start, broadcasts and sends are offered to connections.
    pub(super) fn run_commands(&mut self, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::Connect(req) => self.start_connect(req),
                Command::Broadcast { except, bytes } => {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.offer(key, except, None, &bytes);
                    }
                }
                Command::SendTo { to, bytes } => self.offer(to.key(), None, Some(to), &bytes),
            }
        }
    }

    /// Hand a broadcast or directed message to connection `key`; one whose
    /// output queue is full is closed at once (a slow consumer).
    fn offer(&mut self, key: usize, except: Option<ConnId>, to: Option<ConnId>, bytes: &Arc<[u8]>) {
        let limit = self.ctx.cfg.max_queued_output;
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        match slot.core.take_message(except, to, bytes, limit) {
            Delivery::Queued => self.mark_dirty(key),
            Delivery::Skipped => {}
            Delivery::OverLimit => {
                let st = &self.ctx.stats;
                st.add(&st.output_limit_closes, 1);
                self.teardown(key, CloseReason::OutputLimit { limit });
            }
        }
    }
}
