//! The load generator's client: one thread, one epoll set, non-blocking
//! sockets, one state machine per connection.
//!
//! * echo: each connection sends its own `size`-byte payload (different per
//!   connection, so crossed replies are caught), reads while it writes, and
//!   compares every byte that comes back; one round trip = one operation.
//! * accept: connect, send 16 bytes, read them back, close with SO_LINGER 0
//!   (a reset, so no client port waits in TIME_WAIT), again.
//! * http: keep-alive GETs, one in flight per connection; the status must be
//!   200 and the body the expected one.
//!
//! A connection that fails (refused, reset, closed early, wrong bytes) counts
//! an error and is replaced by a new one, so the run goes on.

use crate::address::Address;
use std::io;
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
    started: Instant,
    sent: usize,
    got: usize,
    /// Response bytes (http).
    rbuf: Vec<u8>,
    interest: u32,
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
        sent: 0,
        got: 0,
        rbuf: Vec::new(),
        interest,
    })
}

/// Counters of one run, reset after warm-up.
pub(crate) struct Tally {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) mismatches: u64,
    pub(crate) bytes_verified: u64,
    pub(crate) latency: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            ops: 0,
            errors: 0,
            mismatches: 0,
            bytes_verified: 0,
            // 1 ns .. 100 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }

    fn op(&mut self, started: Instant, verified: usize) {
        self.ops += 1;
        self.bytes_verified += verified as u64;
        let ns = started.elapsed().as_nanos().clamp(1, 100_000_000_000) as u64;
        let _ = self.latency.record(ns);
    }
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
    mode: Mode,
    /// Per-connection payload (echo) or message (accept, hold).
    payloads: Vec<Vec<u8>>,
    request: Vec<u8>,
    body: Option<Vec<u8>>,
    scratch: Vec<u8>,
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
        }
    }

    fn outgoing(&self, i: usize) -> &[u8] {
        if self.mode == Mode::Http {
            &self.request
        } else {
            &self.payloads[i]
        }
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
            // first byte sent.
            if self.mode != Mode::Accept {
                c.started = Instant::now();
            }
            c.sent = 0;
            c.got = 0;
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
        let want = if c.sent < self.outgoing(i).len() || c.wire.wants_write() {
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

    fn write(&self, i: usize, c: &mut Client) -> Result<(), ()> {
        let out = self.outgoing(i);
        if c.wire.flush().is_err() {
            return Err(());
        }
        while c.sent < out.len() {
            match c.wire.send(&out[c.sent..]) {
                Ok(n) => c.sent += n,
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
                continue;
            }
            let expected = &self.payloads[i];
            let end = c.got + n;
            if end > expected.len() || self.scratch[..n] != expected[c.got..end] {
                return Err(Fail::Mismatch);
            }
            c.got = end;
            if c.got == expected.len() {
                t.op(c.started, expected.len());
                if self.mode == Mode::Accept {
                    return Ok(Some(Next::Replace));
                }
                c.started = Instant::now();
                c.sent = 0;
                c.got = 0;
                if self.write(i, c).is_err() {
                    return Err(Fail::Io);
                }
            }
        }
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
            t.op(c.started, head + len);
            c.rbuf.drain(..head + len);
            c.started = Instant::now();
            c.sent = 0;
            if c.rbuf.is_empty() {
                return Ok(());
            }
        }
    }
}

fn fail(t: &mut Tally) -> Next {
    t.errors += 1;
    Next::Replace
}

/// Run `opts.mode` (echo, accept or http) for warm-up + duration. Calls
/// `on_measure` once, the moment the measured period starts (the counters
/// are reset then), and `on_tick` every second with the counters so far.
pub(crate) fn run_traffic(
    opts: &Options,
    on_measure: &mut dyn FnMut(),
    on_tick: &mut dyn FnMut(&Tally, Duration),
) -> io::Result<(Tally, Duration)> {
    let mut ep = Epoll::new(1024)?;
    let mut driver = Driver::new(opts);
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        clients.push(Some(connect(&ep, &opts.addr, opts.tls.as_ref(), i)?));
    }
    let mut tally = Tally::new();
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let mut measuring = false;
    let mut next_tick = start + Duration::from_secs(1);
    // Connections whose replacement could not even be started; retried.
    let mut reconnect: Vec<usize> = Vec::new();
    let mut retry_at = start;
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            // Rates and latencies cover the measured period only; errors and
            // mismatches are never forgotten.
            let (errors, mismatches) = (tally.errors, tally.mismatches);
            tally = Tally::new();
            tally.errors = errors;
            tally.mismatches = mismatches;
            on_measure();
        }
        if now >= end {
            break;
        }
        if now >= next_tick {
            stalled(&mut clients, &mut reconnect, opts.op_timeout, &mut tally);
            on_tick(&tally, now.saturating_duration_since(measure_from));
            next_tick += Duration::from_secs(1);
        }
        if !reconnect.is_empty() && now >= retry_at {
            for i in std::mem::take(&mut reconnect) {
                match connect(&ep, &opts.addr, opts.tls.as_ref(), i) {
                    Ok(c) => clients[i] = Some(c),
                    Err(_) => {
                        tally.errors += 1;
                        reconnect.push(i);
                    }
                }
            }
            // A connect that fails at once (no ports, no descriptors) is not
            // retried in a tight loop.
            retry_at = now + Duration::from_millis(10);
        }
        let wait = end
            .min(next_tick)
            .saturating_duration_since(now)
            .as_millis()
            .clamp(1, 100) as i32;
        match ep.wait(&mut events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            let i = ev.data as usize;
            let Some(c) = clients.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if let Next::Replace = driver.on_event(&ep, i, c, ev.events, &mut tally) {
                if driver.mode == Mode::Accept {
                    let _ = c.wire.sock.set_linger(Some(Duration::ZERO));
                }
                // Dropping the socket closes it and leaves the epoll set.
                clients[i] = None;
                match connect(&ep, &opts.addr, opts.tls.as_ref(), i) {
                    Ok(c) => clients[i] = Some(c),
                    Err(_) => {
                        tally.errors += 1;
                        reconnect.push(i);
                    }
                }
            }
        }
    }
    // An operation still waiting at the end for longer than the timeout is
    // a failure too (a server that lost the last byte of a reply).
    stalled(&mut clients, &mut reconnect, opts.op_timeout, &mut tally);
    Ok((
        tally,
        end.saturating_duration_since(measure_from)
            .min(opts.duration),
    ))
}

/// Count and drop every connection whose current operation (or connect) has
/// waited longer than `timeout`; they are reconnected later.
fn stalled(
    clients: &mut [Option<Client>],
    reconnect: &mut Vec<usize>,
    timeout: Duration,
    t: &mut Tally,
) {
    for (i, slot) in clients.iter_mut().enumerate() {
        if slot.as_ref().is_some_and(|c| c.started.elapsed() > timeout) {
            t.errors += 1;
            *slot = None;
            reconnect.push(i);
        }
    }
}

/// What `run_hold` saw, beyond the tally of check round trips.
pub(crate) struct HoldOutcome {
    pub(crate) tally: Tally,
    /// Server RSS before any connection and with all of them open.
    pub(crate) rss: Option<(u64, u64)>,
}

/// Connections being set up at once in hold mode (the listen backlog is
/// finite; thousands of SYNs at once would be retried after a second).
const HOLD_CONNECTING: usize = 256;

/// Hold mode: open `opts.conns` idle connections, note the server's RSS,
/// hold them for `opts.duration`, then check every one still echoes 16 bytes.
pub(crate) fn run_hold(opts: &Options) -> io::Result<HoldOutcome> {
    let mut ep = Epoll::new(1024)?;
    let payloads: Vec<Vec<u8>> = (0..opts.conns)
        .map(|i| pattern(i as u64 + 1, SMALL))
        .collect();
    let rss = |pid: Option<u32>| {
        pid.and_then(|p| super::procstat::sample(p).ok())
            .map(|s| s.rss)
    };
    let rss_before = rss(opts.server_pid);
    let mut tally = Tally::new();
    let mut clients: Vec<Option<Client>> = (0..opts.conns).map(|_| None).collect();
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let (mut opened, mut connecting, mut next) = (0usize, 0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Open, a bounded number at a time.
    while opened + (tally.errors as usize) < opts.conns && Instant::now() < deadline {
        while connecting < HOLD_CONNECTING && next < opts.conns {
            match connect(&ep, &opts.addr, opts.tls.as_ref(), next) {
                Ok(c) => {
                    clients[next] = Some(c);
                    connecting += 1;
                }
                Err(_) => tally.errors += 1,
            }
            next += 1;
        }
        ep.wait(&mut events, 100)?;
        for ev in &events {
            let i = ev.data as usize;
            let Some(c) = clients[i].as_mut() else {
                continue;
            };
            if c.phase == Phase::Connecting {
                let ok = matches!(c.wire.sock.take_error(), Ok(None))
                    && c.wire.flush().is_ok()
                    && ep
                        .modify(c.wire.sock.as_raw_fd(), epoll::IN, i as u64)
                        .is_ok();
                if !ok {
                    connecting -= 1;
                    tally.errors += 1;
                    clients[i] = None;
                    continue;
                }
                c.phase = Phase::Active;
                c.interest = epoll::IN;
                if c.wire.handshaking() {
                    // Held only once its TLS handshake is over.
                    continue;
                }
                connecting -= 1;
                opened += 1;
            } else if c.wire.handshaking() {
                // The server's flight: answered; open once the handshake
                // is over.
                if !only_records(c) {
                    connecting -= 1;
                    tally.errors += 1;
                    clients[i] = None;
                } else if !c.wire.handshaking() {
                    connecting -= 1;
                    opened += 1;
                }
            } else if !only_records(c) {
                // An idle connection that becomes readable was closed or
                // written to by the server: either is an error here (TLS
                // records without data, such as session tickets, are not).
                tally.errors += 1;
                opened -= 1;
                clients[i] = None;
            }
        }
    }
    // Let the server settle, then read its memory with everything open.
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss(opts.server_pid);
    // Hold.
    let hold_end = Instant::now() + opts.duration;
    while Instant::now() < hold_end {
        let left = hold_end
            .saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 100) as i32;
        ep.wait(&mut events, left)?;
        for ev in &events {
            let i = ev.data as usize;
            if clients[i].as_mut().is_some_and(|c| !only_records(c)) {
                clients[i] = None;
                tally.errors += 1;
            }
        }
    }
    // Check: every held connection echoes its 16 bytes.
    let mut pending = 0usize;
    for (i, slot) in clients.iter_mut().enumerate() {
        let Some(c) = slot.as_mut() else { continue };
        c.started = Instant::now();
        if c.wire.send(&payloads[i]).ok() != Some(SMALL) {
            tally.errors += 1;
            *slot = None;
        } else {
            pending += 1;
        }
    }
    let check_deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; SMALL];
    while pending > 0 && Instant::now() < check_deadline {
        ep.wait(&mut events, 100)?;
        for ev in &events {
            let i = ev.data as usize;
            let Some(c) = clients[i].as_mut() else {
                continue;
            };
            match c.wire.recv(&mut buf[..SMALL - c.got]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => {
                    tally.errors += 1;
                    pending -= 1;
                    clients[i] = None;
                }
                Ok(n) => {
                    if buf[..n] != payloads[i][c.got..c.got + n] {
                        tally.mismatches += 1;
                        pending -= 1;
                        clients[i] = None;
                        continue;
                    }
                    c.got += n;
                    if c.got == SMALL {
                        tally.op(c.started, SMALL);
                        pending -= 1;
                        let _ = ep.delete(c.wire.sock.as_raw_fd());
                    }
                }
            }
        }
    }
    tally.errors += pending as u64;
    Ok(HoldOutcome {
        tally,
        rss: rss_before.zip(rss_after),
    })
}

/// Whether a readable held connection brought only TLS records (handshake
/// messages, session tickets) and no data or end of stream.
fn only_records(c: &mut Client) -> bool {
    let mut scratch = [0u8; 64];
    matches!(c.wire.recv(&mut scratch), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        && c.wire.flush().is_ok()
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
