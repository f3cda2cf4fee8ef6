//! Hold mode: many idle connections open at once, the server's memory
//! read with all of them open, then every one checked to still echo.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::client::{connect, pattern, Client, Phase, Tally, SMALL};
use super::Options;
use crate::sys::epoll::{self, Epoll, Event};

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
