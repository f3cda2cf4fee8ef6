//! A connection's life after it opened: receiving, sending, backpressure,
//! the lingering close and teardown. Each function decides from the
//! connection's phase and its operations in flight, and asks the driver.

use std::time::Instant;

use super::deadlines::Due;
use super::timeouts::{write_check, write_check_interval, Watch, WriteCheck};
use super::{op, Lent, Slot, Worker};
use crate::conn::{ConnCore, Flow, Phase, Pressure};
use crate::driver::{Received, RecvEvent, SendStart, SentBuf};
use crate::handler::{deliver, CloseReason, Conn, Env, Handler};
use crate::reply::LentReply;

impl<H: Handler> Worker<H> {
    /// Arm connection `key`'s receive.
    pub(super) fn arm_recv(&mut self, key: usize) {
        let slot = &mut self.conns[key];
        let fd = slot.core.raw_fd();
        match self
            .driver
            .arm_recv(key, slot.generation(), &mut slot.drv, fd)
        {
            Ok(()) => slot.ops |= op::RECV,
            Err(e) => self.teardown(key, CloseReason::from_io(&e)),
        }
    }

    /// Input (or its end) for connection `key`.
    pub(super) fn on_recv(&mut self, key: usize, ev: RecvEvent) {
        let limit = self.ctx.cfg.max_unconsumed;
        let Lent {
            driver,
            conns,
            handler,
            env,
            plain,
        } = self.lend();
        let slot = &mut conns[key];
        let (generation, fd) = (slot.generation(), slot.core.raw_fd());
        let Slot { core, state, .. } = slot;
        let mut intake = Intake {
            core,
            state,
            handler,
            env,
            plain,
            limit,
            // io_uring with room: a reply of the bytes lent goes straight
            // from their buffer (`Conn::send`).
            zero_copy: driver.reply_room(),
            lent: LentReply::default(),
            claim: None,
            failed: None,
            partial: false,
            tls: TlsEvents::default(),
        };
        let got = driver.receive(slot.drv, fd, ev, |bytes| intake.take(bytes));
        let Intake {
            claim,
            mut failed,
            partial,
            tls,
            ..
        } = intake;
        if let Some(buf) = driver.kept() {
            // The handler replied with bytes of this buffer: send them from
            // it, unless the connection is over.
            let sent = claim.is_some_and(|c| {
                !slot.core.is_closed()
                    && failed.is_none()
                    && driver.send_provided(key, generation, (slot.drv, fd), buf, c)
            });
            if sent {
                slot.ops |= op::SEND;
            } else {
                if claim.is_some() && !slot.core.is_closed() && failed.is_none() {
                    // Not sent: the buffer was given back, its bytes lost.
                    failed = Some(CloseReason::Error(libc::EIO));
                }
                driver.give_back(buf.0, buf.1);
                slot.core.drop_reply();
            }
        }
        match got {
            Received::Armed => {}
            Received::Ended | Received::NoBuffers | Received::Cancelled => {
                slot.ops &= !op::RECV;
            }
            // A completion that still says "more" leaves the recv live in
            // the kernel: the teardown cancels it.
            Received::Eof | Received::Failed(_) if ev.more() => slot.ops |= op::RECV_DONE,
            Received::Eof | Received::Failed(_) => slot.ops = slot.ops & !op::RECV | op::RECV_DONE,
        }
        if slot.core.is_closed() {
            self.finish_if_idle(key);
            return;
        }
        // Known from the input itself: a plain connection costs no lookup.
        let handshake = tls.any() || tls.handshaking;
        if tls.any() {
            self.tls_events(key, tls);
        }
        if let Some(reason) = failed {
            self.teardown(key, reason);
            return;
        }
        if partial {
            if let Some(read) = self.ctx.cfg.read_timeout {
                let conn = self.conns[key].core.id;
                self.deadlines.arm(Instant::now(), read, Due::Read(conn));
            }
        }
        match got {
            Received::Armed => {}
            // Ended, or the ring ran dry (not end of stream): armed again
            // after the batch, when every buffer has been returned.
            Received::Ended | Received::NoBuffers => self.rearm.push((key, generation)),
            // Only a pause cancels the recv of a live connection: armed
            // again once it is no longer paused (even if it resumed before
            // this arrived).
            Received::Cancelled => {
                if !self.conns[key].core.is_paused() {
                    self.rearm.push((key, generation));
                }
            }
            Received::Eof => {
                let core = &mut self.conns[key].core;
                if matches!(core.phase, Phase::Lingering) {
                    // The peer closed its side too: the lingering close is
                    // over.
                    let reason = core.close_reason();
                    self.teardown(key, reason);
                    return;
                }
                // End of stream: flush what is queued, then close.
                core.close(CloseReason::PeerClosed);
            }
            Received::Failed(errno) => {
                self.teardown(key, CloseReason::Error(errno));
                return;
            }
        }
        if handshake {
            // A handshake step: its answer goes out now, not after the
            // rest of the batch (other handshakes cost ~100 µs each).
            self.flush(key);
            self.driver.submit_now();
            return;
        }
        if got != Received::Armed || self.flush_needed(key) {
            self.mark_dirty(key);
        }
    }

    /// What a TLS connection's input did: count it, and a handshake just
    /// over makes the connection open to others (broadcasts, `send_to`).
    fn tls_events(&mut self, key: usize, tls: TlsEvents) {
        let st = &self.ctx.stats;
        let core = &mut self.conns[key].core;
        if tls.failed {
            st.add(&st.tls_failures, 1);
            let peer = core
                .socket()
                .ok()
                .and_then(|s| s.peer_addr().ok()?.as_socket());
            log::info!(
                "TLS with {} closed: {}",
                peer.map_or_else(|| "a peer".to_string(), |a| a.to_string()),
                core.close_reason()
            );
        }
        if tls.opened {
            st.add(&st.tls_handshakes, 1);
            self.ctx.bus.opened(core.id);
            if self.stopping {
                core.close(CloseReason::Shutdown);
            }
        }
        if tls.peer_closed {
            // close_notify: as good as the end of the stream.
            core.close(CloseReason::PeerClosed);
        }
    }

    /// A send finished: its bytes are back; `res` written or `-errno`.
    pub(super) fn on_sent(&mut self, key: usize, res: i32, buf: SentBuf) {
        let buf = match buf {
            SentBuf::Bytes(buf) => buf,
            SentBuf::Provided {
                bgid,
                bid,
                off,
                len,
            } => return self.on_reply_sent(key, res, (bgid, bid), (off, len)),
        };
        let slot = &mut self.conns[key];
        slot.ops &= !op::SEND;
        if slot.core.is_closed() {
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
        slot.core.returned(buf, res as usize, Instant::now);
        // The remainder of a short send goes next, before anything newer.
        self.flush_after_send(key);
    }

    /// A send completed: the connection is flushed after the batch, unless
    /// a flush would find nothing to do.
    fn flush_after_send(&mut self, key: usize) {
        if self.flush_needed(key) {
            self.mark_dirty(key);
        }
    }

    /// Whether a flush of connection `key` would do anything: only an open
    /// connection (not paused, closing or closed) with nothing queued to
    /// send, no output over the high watermark and no send in flight
    /// outside the write-timeout watch can skip it. A reply sent straight
    /// from its buffer leaves nothing queued, so most replies skip it.
    fn flush_needed(&self, key: usize) -> bool {
        let slot = &self.conns[key];
        let core = &slot.core;
        core.phase != Phase::Open
            || core.has_output()
            || core.queued() > self.ctx.cfg.send_high_watermark
            || slot.ops & (op::SEND | op::WATCHED) == op::SEND
    }

    /// A reply sent straight from a receive buffer finished: the rest of
    /// a short send goes from the same buffer, else the buffer goes back
    /// to its ring and queued output follows.
    fn on_reply_sent(&mut self, key: usize, res: i32, buf: (u16, u16), (off, len): (u32, u32)) {
        let slot = &mut self.conns[key];
        slot.ops &= !op::SEND;
        let written = u32::try_from(res).unwrap_or(0).min(len);
        if res > 0 && !slot.core.is_closed() {
            self.ctx
                .stats
                .add(&self.ctx.stats.bytes_out, u64::from(written));
            slot.core.reply_sent(written, len, Instant::now);
            if written < len {
                let generation = slot.generation();
                let fd = slot.core.raw_fd();
                let rest = (off + written, len - written);
                if self
                    .driver
                    .send_provided(key, generation, (slot.drv, fd), buf, rest)
                {
                    slot.ops |= op::SEND;
                    return;
                }
                slot.core.drop_reply();
                self.teardown(key, CloseReason::Error(libc::EIO));
                return;
            }
            self.driver.give_back(buf.0, buf.1);
            self.flush_after_send(key);
            return;
        }
        self.driver.give_back(buf.0, buf.1);
        slot.core.drop_reply();
        if slot.core.is_closed() {
            self.finish_if_idle(key);
            return;
        }
        // 0 bytes for a non-empty send would repeat forever: a broken pipe.
        let errno = if res == 0 { libc::EPIPE } else { -res };
        self.teardown(key, CloseReason::Error(errno));
    }

    /// Hand queued output to the driver, apply backpressure, and finish a
    /// graceful close once everything is handed over.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        slot.ops &= !op::DIRTY;
        if slot.core.is_closed() {
            return;
        }
        let generation = slot.generation();
        while !slot.has(op::SEND) && slot.core.has_output() {
            match self.driver.send(key, generation, slot.drv, &mut slot.core) {
                SendStart::InFlight => slot.ops |= op::SEND,
                SendStart::Wrote(n) => {
                    self.ctx.stats.add(&self.ctx.stats.bytes_out, n as u64);
                    slot.core.wrote(n, Instant::now);
                }
                SendStart::WouldBlock => break,
                SendStart::Failed(errno) => {
                    self.teardown(key, CloseReason::Error(errno));
                    return;
                }
            }
        }
        let in_flight = slot.has(op::SEND);
        // Output the socket did not take now.
        let blocked = !in_flight && slot.core.has_output();
        if (in_flight || blocked) && !slot.has(op::WATCHED) {
            slot.ops |= op::WATCHED;
            self.write_watch
                .push(Watch::new(key, generation, &slot.core));
            self.schedule_write_check(Instant::now);
        }
        self.backpressure(key);
        let Some(slot) = self.conns.get(key) else {
            return;
        };
        if slot.core.is_closed() {
            return;
        }
        if let (false, false, Phase::Closing) = (in_flight, blocked, slot.core.phase) {
            let reason = slot.core.close_reason();
            if !reason.flushes() || slot.has(op::RECV_DONE) {
                // A handler's close_with(Error or InputLimit): its output is
                // handed over; close without lingering. Or end of stream was
                // read: nothing unread can make the close a reset.
                self.teardown(key, reason);
                return;
            }
            self.start_linger(key, reason);
        }
        // The connection stays: bring epoll's interest up to date in one
        // call (read while a receive is armed, write while output is
        // blocked); io_uring has nothing to do.
        let slot = &mut self.conns[key];
        let (read, fd) = (slot.has(op::RECV), slot.core.raw_fd());
        if let Err(e) = self
            .driver
            .sync_interest(key, generation, &mut slot.drv, fd, read, blocked)
        {
            self.teardown(key, CloseReason::from_io(&e));
        }
    }

    /// Pause receiving above the high watermark of queued output, resume at
    /// or below the low one.
    fn backpressure(&mut self, key: usize) {
        let (high, low) = (
            self.ctx.cfg.send_high_watermark,
            self.ctx.cfg.send_low_watermark,
        );
        let slot = &mut self.conns[key];
        match slot.core.pressure(high, low, Instant::now) {
            Pressure::Steady => {}
            Pressure::Pause => {
                self.ctx.stats.add(&self.ctx.stats.paused, 1);
                if slot.has(op::RECV) {
                    let fd = slot.core.raw_fd();
                    match self
                        .driver
                        .stop_recv(key, slot.generation(), &mut slot.drv, fd)
                    {
                        // The recv's last completion clears the bit.
                        Ok(true) => {}
                        Ok(false) => slot.ops &= !op::RECV,
                        Err(e) => self.teardown(key, CloseReason::from_io(&e)),
                    }
                }
            }
            Pressure::Resume => {
                if !slot.has(op::RECV | op::RECV_DONE | op::REG) {
                    self.arm_recv(key);
                }
            }
        }
    }

    /// Close connections whose output made no progress for `write_timeout`
    /// (their peers do not read); forget those with nothing left to send.
    pub(super) fn check_writes(&mut self, now: Instant) {
        let timeout = self.ctx.cfg.write_timeout;
        let mut watch = std::mem::take(&mut self.write_watch);
        let mut stalled = Vec::new();
        watch.retain_mut(|w| {
            let Some(slot) = self.conns.get_mut(w.key) else {
                return false;
            };
            if slot.generation() != w.generation || slot.core.is_closed() {
                return false;
            }
            match write_check(w, &slot.core, slot.has(op::SEND), now, timeout) {
                WriteCheck::Sending => true,
                WriteCheck::Drained => {
                    slot.ops &= !op::WATCHED;
                    false
                }
                WriteCheck::Stalled => {
                    slot.ops &= !op::WATCHED;
                    stalled.push(w.key);
                    false
                }
            }
        });
        self.write_watch = watch;
        for key in stalled {
            self.ctx.stats.add(&self.ctx.stats.write_timeouts, 1);
            self.teardown(key, CloseReason::Error(libc::ETIMEDOUT));
        }
        self.write_check_armed = false;
        self.schedule_write_check(|| now);
    }

    /// Arm the write check if connections are watched and it is not armed
    /// (the clock is read only then: a watch is added on every send).
    fn schedule_write_check(&mut self, now: impl FnOnce() -> Instant) {
        if !self.write_check_armed && !self.write_watch.is_empty() {
            self.write_check_armed = true;
            let every = write_check_interval(self.ctx.cfg.write_timeout);
            self.deadlines.arm(now(), every, Due::WriteCheck);
        }
    }

    /// All output is handed over: tell the handler, shut down the write side
    /// and keep reading (discarding) until the peer closes or the linger
    /// time is up.
    fn start_linger(&mut self, key: usize, reason: CloseReason) {
        self.notify_closed(key, &reason);
        let slot = &mut self.conns[key];
        slot.core.linger();
        let generation = slot.generation();
        if self
            .driver
            .shutdown_write(key, generation, slot.drv, slot.core.sock.as_ref())
        {
            slot.ops |= op::SHUT;
        }
        let conn = self.conns[key].core.id;
        self.deadlines
            .arm(Instant::now(), self.ctx.cfg.linger, Due::Linger(conn));
        if !self.conns[key].has(op::RECV | op::RECV_DONE | op::REG) {
            // Never armed (closed in `on_open`), or ended (paused, ENOBUFS,
            // a full CQ) while the close was pending: read the input now.
            // Every buffer is back (flushes run after the batch).
            self.arm_recv(key);
        }
    }

    /// Tell the handler (once) that the connection is closed; it leaves the
    /// bus, and a persistent outbound connection is scheduled again.
    fn notify_closed(&mut self, key: usize, reason: &CloseReason) {
        let slot = &mut self.conns[key];
        if matches!(slot.core.phase, Phase::Lingering | Phase::Closed) {
            return;
        }
        let id = slot.core.id;
        let origin = slot.core.take_origin();
        let state = slot.state.take();
        let tag = slot.core.tag();
        self.ctx.bus.closed(id);
        match (state, tag) {
            (Some(state), _) => self.handler.on_close(id, state, reason),
            // An outbound TLS connection whose handshake never finished:
            // for the handler it never connected.
            (None, Some(tag)) => {
                let why = match reason {
                    CloseReason::Tls(why) => why.clone(),
                    other => other.to_string(),
                };
                self.handler
                    .on_connect_failed(tag, &crate::ConnectError::Tls(why));
            }
            (None, None) => {}
        }
        if let Some(next) = origin {
            self.schedule(next);
        }
    }

    /// Close now: tell the handler, cancel what is in flight, and free the
    /// slot once nothing is.
    pub(super) fn teardown(&mut self, key: usize, reason: CloseReason) {
        if !self.conns.get(key).is_some_and(|s| !s.core.is_closed()) {
            return;
        }
        self.notify_closed(key, &reason);
        let slot = &mut self.conns[key];
        slot.core.phase = Phase::Closed;
        if slot.has(op::RECV | op::SEND | op::SHUT) {
            let fd = slot.core.raw_fd();
            if !self.driver.cancel(key, slot.generation(), slot.drv, fd) {
                // Nothing was with the kernel (epoll): done now.
                slot.ops &= !(op::RECV | op::SEND | op::SHUT);
            }
        }
        self.finish_if_idle(key);
    }

    /// Free a torn-down slot once no operation on it is in flight.
    pub(super) fn finish_if_idle(&mut self, key: usize) {
        let Some(slot) = self.conns.get(key) else {
            return;
        };
        if !slot.core.is_closed() || slot.has(op::IN_FLIGHT) {
            return;
        }
        let slot = self.conns.remove(key);
        let st = &self.ctx.stats;
        if slot.core.tls().is_some() {
            st.sub(&st.tls_sessions, 1);
        }
        self.driver
            .close(key, slot.generation(), slot.drv, slot.core.sock);
        self.ctx.bus.release();
        st.add(&st.closed, 1);
        st.sub(&st.open, 1);
    }
}

/// One receive's input on its way to the handler: what each chunk is
/// handed with, and what came of the chunks (the handler's reply claim, a
/// failure, a partial message, TLS events).
struct Intake<'a, H: Handler> {
    core: &'a mut ConnCore,
    state: &'a mut Option<H::State>,
    handler: &'a mut H,
    env: Env<'a>,
    /// Plaintext out of a TLS session.
    plain: &'a mut Vec<u8>,
    /// `max_unconsumed`.
    limit: usize,
    /// A reply may claim the buffer lent.
    zero_copy: bool,
    lent: LentReply,
    /// The bytes of the buffer a reply claimed (offset, length).
    claim: Option<(u32, u32)>,
    failed: Option<CloseReason>,
    /// A message began and is not complete (for `read_timeout`).
    partial: bool,
    tls: TlsEvents,
}

impl<H: Handler> Intake<'_, H> {
    /// Hand one chunk of input to the handler (through TLS first, if the
    /// connection speaks it): whether to go on, and whether the chunk's
    /// buffer is kept for a reply sent straight from it.
    #[inline(always)]
    fn take(&mut self, bytes: &[u8]) -> (Flow, bool) {
        let core = &mut *self.core;
        if core.is_closed() {
            return (Flow::Stop, false);
        }
        if core.is_closing() {
            // Input after the close is read and discarded.
            return (core.flow(), false);
        }
        let data: &[u8] = match core.feed_tls(bytes, self.plain) {
            None => bytes,
            Some(Err(why)) => {
                // Its alert goes out, then the connection closes.
                self.tls.failed = true;
                core.close(CloseReason::Tls(why));
                return (core.flow(), false);
            }
            Some(Ok(fed)) => {
                if fed.opened {
                    self.tls.opened = true;
                    *self.state = Some(self.handler.on_open(&mut Conn {
                        core,
                        env: self.env.reborrow(),
                    }));
                }
                self.tls.peer_closed |= fed.peer_closed;
                self.tls.handshaking |= core.tls_handshaking();
                self.plain
            }
        };
        // No state: the handshake is not over (nor the handler told).
        let Some(state) = self.state.as_mut() else {
            return (core.flow(), false);
        };
        if data.is_empty() {
            return (core.flow(), false);
        }
        let mut reach = self.env.reborrow();
        if self.zero_copy && self.claim.is_none() && std::ptr::eq(data, bytes) {
            self.lent.lend(bytes);
            reach.lent = Some(&mut self.lent);
        }
        let res = deliver(core, self.handler, state, data, self.limit, reach);
        self.plain.clear();
        let keep = match self.lent.take_claim() {
            Some(c) => {
                self.claim = Some(c);
                true
            }
            None => false,
        };
        match res {
            Ok(began) => {
                self.partial |= began;
                (core.flow(), keep)
            }
            Err(reason) => {
                self.failed = Some(reason);
                (Flow::Stop, keep)
            }
        }
    }
}

/// What the TLS sessions of one receive said.
#[derive(Debug, Default, Clone, Copy)]
struct TlsEvents {
    /// The handshake completed (`on_open` was called).
    opened: bool,
    /// The session failed: the connection is closing.
    failed: bool,
    /// The peer sent `close_notify`.
    peer_closed: bool,
    /// The handshake is still going on after this input.
    handshaking: bool,
}

impl TlsEvents {
    fn any(self) -> bool {
        self.opened || self.failed || self.peer_closed
    }
}
