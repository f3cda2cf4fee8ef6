//! The load generator's client: one thread, one epoll set, non-blocking
//! sockets, one state machine per connection.
//!
//! * echo: each connection sends its own `size`-byte payload (different per
//!   connection, so crossed replies are caught), reads while it writes, and
//!   compares every byte that comes back; one round trip = one operation.
//! * accept: connect, send 16 bytes, read them back, close with SO_LINGER 0
//!   (a reset, so no client port waits in TIME_WAIT), again.
//! * http: keep-alive GETs; the status must be 200 and the body the
//!   expected one.
//!
//! Echo and http keep `pipeline` requests in flight per connection (one by
//! default): each connection holds the start times of its requests in
//! flight, oldest first, and answers are matched to them in order. Several
//! queued requests go out in one vectored write.
//!
//! A connection that fails (refused, reset, closed early, wrong bytes) counts
//! an error and is replaced by a new one, so the run goes on.

use crate::address::Address;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use socket2::{Socket, Type};

use super::wire::Wire;
use super::{Mode, Options};
use crate::sys::epoll::{self, Epoll, Event};
use crate::tls::TlsTarget;

/// Bytes each accept/hold check sends.
pub(crate) const SMALL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Connecting,
    Active,
}

pub(crate) struct Client {
    /// The socket, and its TLS session with `--tls`.
    pub(crate) wire: Wire,
    pub(crate) phase: Phase,
    /// When the connect began (an accept cycle and a hold check are timed
    /// from it; a connect that takes too long is a failure).
    pub(super) started: Instant,
    /// The start times of the requests in flight, oldest first: each one
    /// sent, being sent or queued to be sent. In open loop a start time is
    /// the request's intended send time.
    pub(super) inflight: VecDeque<Instant>,
    /// How many requests at the back of `inflight` are not fully written.
    unsent: usize,
    /// Bytes of the first unsent request already written.
    sent: usize,
    /// Bytes of the oldest request's answer received (echo, accept, hold).
    pub(super) got: usize,
    /// Response bytes (http).
    rbuf: Vec<u8>,
    pub(super) interest: u32,
    /// Open loop: the intended send time of the next request not yet in
    /// flight.
    pub(super) next_due: Option<Instant>,
}

impl Client {
    /// Since when the connection has waited for the server: its connect,
    /// or its oldest request in flight (`None`: it waits for nothing, an
    /// open-loop connection between requests).
    pub(super) fn waiting_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting => Some(self.started),
            Phase::Active => self.inflight.front().copied(),
        }
    }

    /// How many bytes of the oldest request in flight (`len` bytes long)
    /// are written: its answer cannot be ahead of them.
    fn written_of_oldest(&self, len: usize) -> usize {
        if self.inflight.len() > self.unsent {
            len
        } else if self.inflight.is_empty() {
            0
        } else {
            self.sent
        }
    }

    /// Put a request started at `at` in flight (written at the next
    /// [`Driver::write`]).
    fn queue(&mut self, at: Instant) {
        self.inflight.push_back(at);
        self.unsent += 1;
    }
}

/// Start a non-blocking connect to `addr`, registered under `token`.
pub(crate) fn connect(
    ep: &Epoll,
    addr: &Address,
    tls: Option<&TlsTarget>,
    token: usize,
) -> io::Result<Client> {
    let (domain, protocol) = addr.stream_domain();
    let sock = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), protocol)?;
    if !addr.is_unix() {
        sock.set_tcp_nodelay(true)?;
    }
    match sock.connect(&addr.to_sock_addr()?) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let interest = epoll::OUT;
    ep.add(sock.as_raw_fd(), interest, token as u64)?;
    Ok(Client {
        wire: Wire::new(sock, tls)?,
        phase: Phase::Connecting,
        started: Instant::now(),
        inflight: VecDeque::new(),
        unsent: 0,
        sent: 0,
        got: 0,
        rbuf: Vec::new(),
        interest,
        next_due: None,
    })
}

/// Counters of one run, reset after warm-up.
pub(crate) struct Tally {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) mismatches: u64,
    pub(crate) bytes_verified: u64,
    pub(crate) latency: Histogram<u64>,
    /// The latencies since the last [`Tally::take_interval`].
    interval: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            ops: 0,
            errors: 0,
            mismatches: 0,
            bytes_verified: 0,
            latency: histogram(),
            interval: histogram(),
        }
    }

    /// The latencies recorded since the last call (an interval of the
    /// HdrHistogram log), and start a new interval.
    pub(crate) fn take_interval(&mut self) -> Histogram<u64> {
        std::mem::replace(&mut self.interval, histogram())
    }

    pub(super) fn op(&mut self, started: Instant, verified: usize) {
        self.ops += 1;
        self.bytes_verified += verified as u64;
        let ns = started.elapsed().as_nanos().clamp(1, 100_000_000_000) as u64;
        let _ = self.latency.record(ns);
        let _ = self.interval.record(ns);
    }
}

/// A latency histogram: 1 ns .. 100 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Why a connection failed: an I/O problem (refused, reset, closed early)
/// or bytes that differ from what was expected. Each failure is counted
/// once, as one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Io,
    Mismatch,
}

/// What a connection should do after an event.
enum Next {
    Keep,
    /// Close it and open a new one (after a completed accept cycle, or a
    /// failure that was counted).
    Replace,
}

/// The traffic of one mode for all connections of a run.
pub(crate) struct Driver {
    pub(super) mode: Mode,
    /// Per-connection payload (echo) or message (accept, hold).
    payloads: Vec<Vec<u8>>,
    request: Vec<u8>,
    body: Option<Vec<u8>>,
    scratch: Vec<u8>,
    /// Open loop: the time between one connection's requests
    /// (connections x 1 / rate).
    pub(super) interval: Option<Duration>,
    /// Requests in flight per connection, at most.
    pipeline: usize,
    /// The run is over: answers still owed are awaited, no new request
    /// goes out.
    pub(super) draining: bool,
    /// The connections the last [`Driver::wait_and_handle`] closed (a
    /// failure counted, or an accept cycle over).
    pub(super) replaced: Vec<usize>,
}

impl Driver {
    pub(crate) fn new(opts: &Options) -> Driver {
        let size = if opts.mode == Mode::Echo {
            opts.size.max(1)
        } else {
            SMALL
        };
        let payloads = (0..opts.conns)
            .map(|i| pattern(i as u64 + 1, size))
            .collect();
        let host = match &opts.addr {
            Address::Inet(a) => a.to_string(),
            Address::Unix(_) => "localhost".to_string(),
        };
        Driver {
            mode: opts.mode,
            payloads,
            request: format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            body: opts.http_body.clone(),
            scratch: vec![0; 64 * 1024],
            interval: opts
                .rate
                .map(|r| Duration::from_secs_f64(opts.conns as f64 / r)),
            pipeline: opts.pipeline.max(1),
            draining: false,
            replaced: Vec::new(),
        }
    }

    fn outgoing(&self, i: usize) -> &[u8] {
        if self.mode == Mode::Http {
            &self.request
        } else {
            &self.payloads[i]
        }
    }

    /// Wait up to `wait` for readiness and handle it; the connections that
    /// are done are closed (an accept cycle with a reset, so no port waits
    /// in TIME_WAIT) and listed in `replaced`. `false`: interrupted.
    pub(super) fn wait_and_handle(
        &mut self,
        ep: &mut Epoll,
        events: &mut Vec<Event>,
        wait: Duration,
        clients: &mut [Option<Client>],
        t: &mut Tally,
    ) -> io::Result<bool> {
        self.replaced.clear();
        match ep.wait_timeout(events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.data as usize;
            let Some(c) = clients.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if let Next::Replace = self.on_event(ep, i, c, ev.events, t) {
                if self.mode == Mode::Accept {
                    let _ = c.wire.sock.set_linger(Some(Duration::ZERO));
                }
                // Dropping the socket closes it and leaves the epoll set.
                clients[i] = None;
                self.replaced.push(i);
            }
        }
        Ok(true)
    }

    /// Handle readiness `ev` on connection `i`.
    fn on_event(&mut self, ep: &Epoll, i: usize, c: &mut Client, ev: u32, t: &mut Tally) -> Next {
        if c.phase == Phase::Connecting {
            if ev & (epoll::OUT | epoll::HUP_ERR) == 0 {
                return Next::Keep;
            }
            match c.wire.sock.take_error() {
                Ok(None) => {}
                _ => return fail(t),
            }
            // A TLS client's ClientHello goes out now.
            if c.wire.flush().is_err() {
                return fail(t);
            }
            c.phase = Phase::Active;
            // An accept cycle is timed from the connect; the others from the
            // first byte sent, or in open loop from their intended times.
            if self.mode == Mode::Accept {
                c.queue(c.started);
            } else {
                self.refill(c, Instant::now());
            }
        }
        if ev & (epoll::IN | epoll::HUP_ERR) != 0 {
            match self.read(i, c, t) {
                Ok(Some(next)) => return next,
                Ok(None) => {}
                Err(Fail::Io) => return fail(t),
                Err(Fail::Mismatch) => {
                    t.mismatches += 1;
                    return Next::Replace;
                }
            }
        }
        if self.write(i, c).is_err() {
            return fail(t);
        }
        let want = if c.unsent > 0 || c.wire.wants_write() {
            epoll::IN | epoll::OUT
        } else {
            epoll::IN
        };
        if want != c.interest {
            if ep.modify(c.wire.sock.as_raw_fd(), want, i as u64).is_err() {
                return fail(t);
            }
            c.interest = want;
        }
        Next::Keep
    }

    /// Write the queued requests, as many as the socket takes, several
    /// in one vectored write.
    fn write(&self, i: usize, c: &mut Client) -> Result<(), ()> {
        let out = self.outgoing(i);
        if c.wire.flush().is_err() {
            return Err(());
        }
        while c.unsent > 0 {
            let mut iov = [IoSlice::new(out); 16];
            iov[0] = IoSlice::new(&out[c.sent..]);
            let count = c.unsent.min(iov.len());
            match c.wire.send_vectored(&iov[..count]) {
                Ok(n) => {
                    let done = c.sent + n;
                    c.unsent -= done / out.len();
                    c.sent = done % out.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// Read what is there. `Ok(Some(_))` when an operation finished and the
    /// connection should be replaced, `Err` on failure.
    fn read(&mut self, i: usize, c: &mut Client, t: &mut Tally) -> Result<Option<Next>, Fail> {
        loop {
            let n = match c.wire.recv(&mut self.scratch) {
                Ok(0) => return Err(Fail::Io),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Fail::Io),
            };
            if self.mode == Mode::Http {
                c.rbuf.extend_from_slice(&self.scratch[..n]);
                self.http_response(c, t)?;
            } else if self.echoed(i, c, n, t)? {
                return Ok(Some(Next::Replace));
            }
            if self.write(i, c).is_err() {
                return Err(Fail::Io);
            }
        }
    }

    /// Check `n` echoed bytes in `scratch` against the answers in flight,
    /// completing each answer they finish. `Ok(true)`: an accept cycle is
    /// over.
    fn echoed(&self, i: usize, c: &mut Client, n: usize, t: &mut Tally) -> Result<bool, Fail> {
        let expected = &self.payloads[i];
        let mut data = &self.scratch[..n];
        while !data.is_empty() {
            let take = data.len().min(expected.len() - c.got);
            // An echo of bytes not yet written was never asked for.
            if c.got + take > c.written_of_oldest(expected.len())
                || data[..take] != expected[c.got..c.got + take]
            {
                return Err(Fail::Mismatch);
            }
            data = &data[take..];
            c.got += take;
            if c.got == expected.len() {
                c.got = 0;
                self.answered(c, expected.len(), t);
                if self.mode == Mode::Accept {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Consume every complete response in `c.rbuf`, sending the next request
    /// after each.
    fn http_response(&self, c: &mut Client, t: &mut Tally) -> Result<(), Fail> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let head = match resp.parse(&c.rbuf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(()),
                Err(_) => return Err(Fail::Mismatch),
            };
            if resp.code != Some(200) {
                return Err(Fail::Mismatch);
            }
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or(Fail::Mismatch)?;
            if c.rbuf.len() < head + len {
                return Ok(());
            }
            let body = &c.rbuf[head..head + len];
            if self.body.as_deref().is_some_and(|want| want != body) {
                return Err(Fail::Mismatch);
            }
            // An answer to a request not yet written was never asked for.
            if c.written_of_oldest(self.request.len()) < self.request.len() {
                return Err(Fail::Mismatch);
            }
            self.answered(c, head + len, t);
            c.rbuf.drain(..head + len);
            if c.rbuf.is_empty() {
                return Ok(());
            }
        }
    }
}

impl Driver {
    /// The answer to the oldest request in flight came (`verified` bytes
    /// of it checked): count it, and fill its place.
    fn answered(&self, c: &mut Client, verified: usize, t: &mut Tally) {
        if let Some(started) = c.inflight.pop_front() {
            t.op(started, verified);
        }
        if self.mode != Mode::Accept {
            self.refill(c, Instant::now());
        }
    }

    /// Put requests in flight up to the pipeline depth: in closed loop at
    /// once, in open loop those whose intended time has come (a request
    /// that waited for a free place counts that wait in its latency).
    fn refill(&self, c: &mut Client, now: Instant) {
        if self.draining {
            return;
        }
        match self.interval {
            None => {
                while c.inflight.len() < self.pipeline {
                    c.queue(now);
                }
            }
            Some(every) => {
                let mut due = c.next_due.unwrap_or(now);
                while due <= now && c.inflight.len() < self.pipeline {
                    c.queue(due);
                    due += every;
                }
                c.next_due = Some(due);
            }
        }
    }

    /// Open loop: send the requests that are due on idle connections;
    /// returns the earliest instant one is due next.
    pub(super) fn send_due(
        &self,
        ep: &Epoll,
        clients: &mut [Option<Client>],
        now: Instant,
        t: &mut Tally,
    ) -> Option<Instant> {
        self.interval?;
        let mut earliest: Option<Instant> = None;
        for (i, slot) in clients.iter_mut().enumerate() {
            let Some(c) = slot.as_mut() else { continue };
            // A connection with every place taken sends its next request
            // when an answer frees one.
            let (Phase::Active, Some(due), true) =
                (c.phase, c.next_due, c.inflight.len() < self.pipeline)
            else {
                continue;
            };
            if due > now {
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
                continue;
            }
            self.refill(c, now);
            let want = epoll::IN | epoll::OUT;
            let ok = self.write(i, c).is_ok()
                && (c.interest == want
                    || ep.modify(c.wire.sock.as_raw_fd(), want, i as u64).is_ok());
            if ok {
                c.interest = want;
            } else {
                t.errors += 1;
                *slot = None;
            }
        }
        earliest
    }
}

fn fail(t: &mut Tally) -> Next {
    t.errors += 1;
    Next::Replace
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}
