//! A traffic run of the load generator (echo, accept, http): the event
//! loop over one epoll set that keeps `conns` connections busy for the
//! warm-up and the measured period, replaces failed ones, and at the end
//! waits for the answers still owed.

use std::io;
use std::time::{Duration, Instant};

use super::client::{connect, Client, Driver, Phase, Tally};
use super::Options;
use crate::sys::epoll::{Epoll, Event};

/// Run `opts.mode` (echo, accept or http) for warm-up + duration. Calls
/// `on_measure` once, the moment the measured period starts (the counters
/// are reset then), and `on_tick` every second with the counters so far.
pub(crate) fn run_traffic(
    opts: &Options,
    on_measure: &mut dyn FnMut(),
    on_tick: &mut dyn FnMut(&mut Tally, Duration),
) -> io::Result<(Tally, Duration)> {
    let mut ep = Epoll::new(1024)?;
    let mut driver = Driver::new(opts);
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(opts.conns);
    let first = Instant::now();
    for i in 0..opts.conns {
        let mut c = connect(&ep, &opts.addr, opts.tls.as_ref(), i)?;
        // Open loop: the connections' schedules are spread over one
        // interval.
        c.next_due = driver
            .interval
            .map(|every| first + every.mul_f64(i as f64 / opts.conns as f64));
        clients.push(Some(c));
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
            on_tick(&mut tally, now.saturating_duration_since(measure_from));
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
        // Open loop: requests due now go out; the wait ends when the next
        // one is due, to the microsecond (its latency counts from then).
        let due = driver.send_due(&ep, &mut clients, now, &mut tally);
        let until = end.min(next_tick).min(due.unwrap_or(end));
        let wait = until
            .saturating_duration_since(now)
            .clamp(Duration::ZERO, Duration::from_millis(100));
        if !driver.wait_and_handle(&mut ep, &mut events, wait, &mut clients, &mut tally)? {
            continue;
        }
        for &i in &driver.replaced {
            match connect(&ep, &opts.addr, opts.tls.as_ref(), i) {
                Ok(mut c) => {
                    c.next_due = driver.interval.map(|_| Instant::now());
                    clients[i] = Some(c);
                }
                Err(_) => {
                    tally.errors += 1;
                    reconnect.push(i);
                }
            }
        }
    }
    // The last (partial) second.
    on_tick(&mut tally, end.saturating_duration_since(measure_from));
    drain(
        &mut driver,
        &mut ep,
        &mut clients,
        opts.op_timeout,
        &mut tally,
    )?;
    Ok((
        tally,
        end.saturating_duration_since(measure_from)
            .min(opts.duration),
    ))
}

/// The end of a run: every request in flight is still owed its answer.
/// Wait up to `timeout` for them, checking their bytes (a mismatch counts)
/// without counting them as operations (the measured period is over), and
/// send nothing new. A request whose answer never came counts as an error,
/// so a server that loses answers cannot hide them in the last moments of
/// a run, nor among pipelined requests (whose answers are matched in order).
fn drain(
    driver: &mut Driver,
    ep: &mut Epoll,
    clients: &mut [Option<Client>],
    timeout: Duration,
    tally: &mut Tally,
) -> io::Result<()> {
    driver.draining = true;
    let deadline = Instant::now() + timeout;
    // Connects still under way are not owed anything.
    for slot in clients.iter_mut() {
        if slot.as_ref().is_some_and(|c| c.phase == Phase::Connecting) {
            *slot = None;
        }
    }
    let mut after = Tally::new();
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    loop {
        let now = Instant::now();
        let owed = clients.iter().flatten().any(|c| !c.inflight.is_empty());
        if !owed || now >= deadline {
            break;
        }
        // A connection that failed or finished is not replaced now.
        driver.wait_and_handle(ep, &mut events, deadline - now, clients, &mut after)?;
    }
    tally.errors += after.errors;
    tally.mismatches += after.mismatches;
    for c in clients.iter().flatten() {
        tally.errors += c.inflight.len() as u64;
    }
    Ok(())
}

/// Count and drop every connection whose oldest request (or connect) has
/// waited longer than `timeout`, each of its requests in flight a failure;
/// they are reconnected later.
fn stalled(
    clients: &mut [Option<Client>],
    reconnect: &mut Vec<usize>,
    timeout: Duration,
    t: &mut Tally,
) {
    for (i, slot) in clients.iter_mut().enumerate() {
        let Some(c) = slot.as_ref() else { continue };
        if c.waiting_since()
            .is_some_and(|since| since.elapsed() > timeout)
        {
            t.errors += c.inflight.len().max(1) as u64;
            *slot = None;
            reconnect.push(i);
        }
    }
}
