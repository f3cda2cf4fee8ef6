//! Handler timers: per-connection timers (`Conn::set_timer`) and worker
//! timers (`Ctx::set_timer`, `Ctx::set_periodic`), on both backends. No test
//! here asserts how long anything took: each waits for events, and uses a
//! later timer as the barrier that proves an earlier one will never come
//! (timers fire in deadline order).

mod util;

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::Duration;

use ringnet::timer::TimerKey;
use ringnet::{Backend, Config, Conn, ConnId, Ctx, Engine, Handler};
use util::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sets three timers out of order and one it cancels at once; each timer
/// that fires writes `t<id>` to the connection.
struct Ordered;

impl Handler for Ordered {
    type State = ();

    fn on_open(&mut self, conn: &mut Conn<'_>) {
        conn.set_timer(ms(60), 3);
        conn.set_timer(ms(20), 1);
        conn.set_timer(ms(40), 2);
        let never = conn.set_timer(ms(10), 9);
        assert!(conn.cancel_timer(never), "pending, so cancelled");
        assert!(!conn.cancel_timer(never), "cancelled once");
        // A timer too far away to matter, and one that can never overflow.
        conn.set_timer(Duration::MAX, 8);
    }
    fn on_data(&mut self, _conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        data.len()
    }
    fn on_timer(&mut self, conn: &mut Conn<'_>, _: &mut (), id: u64) {
        conn.send(format!("t{id}\n").as_bytes());
        if id == 3 {
            conn.close();
        }
    }
}

fn connection_timers_fire_in_deadline_order(backend: Backend) {
    let engine = Engine::start(config(backend), |_| Ordered).expect("engine starts");
    let s = connect(engine.local_addr());
    let lines: Vec<String> = BufReader::new(s)
        .lines()
        .map(|l| l.expect("line"))
        .collect();
    assert_eq!(
        lines,
        ["t1", "t2", "t3"],
        "by deadline; the cancelled one never"
    );
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// Every connection sets a timer; the one that says `sentinel` first sets a
/// later one. Fired timers are reported on a channel.
struct Watch {
    fired: mpsc::Sender<(ConnId, u64)>,
}

impl Handler for Watch {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        match data {
            b"early" => {
                conn.set_timer(ms(100), 1);
            }
            b"sentinel" => {
                conn.set_timer(ms(300), 2);
            }
            _ => {}
        }
        conn.send(b"ok");
        data.len()
    }
    fn on_timer(&mut self, conn: &mut Conn<'_>, _: &mut (), id: u64) {
        let _ = self.fired.send((conn.id(), id));
    }
}

/// A connection that closes before its timer is due never hears it: the
/// sentinel, set later and due later, fires, and the early one did not.
fn a_closed_connections_timer_never_fires(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(
        Config {
            workers: 1,
            ..config(backend)
        },
        move |_| Watch { fired: tx.clone() },
    )
    .expect("engine starts");
    let ask = |what: &[u8]| {
        let mut s = connect(engine.local_addr());
        s.write_all(what).expect("write");
        let mut ok = [0u8; 2];
        std::io::Read::read_exact(&mut s, &mut ok).expect("acknowledged");
        s
    };
    let early = ask(b"early");
    drop(early);
    wait_stats(&engine, ms(10_000), "the early connection closed", |s| {
        s.closed == 1
    });
    let sentinel = ask(b"sentinel");
    let (_, id) = rx.recv_timeout(ms(10_000)).expect("the sentinel fires");
    assert_eq!(id, 2, "the closed connection's earlier timer never fired");
    drop(sentinel);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
    assert!(rx.try_recv().is_err(), "nothing else fired");
}

/// Worker timers: a periodic one cancelled from its own callback after
/// three ticks, a one-shot, and a barrier timer set at the cancel.
struct Ticker {
    events: mpsc::Sender<u64>,
    ticks: u32,
    periodic: Option<TimerKey>,
}

impl Handler for Ticker {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        self.periodic = Some(ctx.set_periodic(ms(15), 1));
        ctx.set_timer(ms(25), 2);
        // A zero period is clamped (no spinning); cancelled at once.
        let fast = ctx.set_periodic(Duration::ZERO, 7);
        assert!(ctx.cancel_timer(fast));
    }
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
    fn on_worker_timer(&mut self, ctx: &mut Ctx<'_>, id: u64) {
        let _ = self.events.send(id);
        if id == 1 {
            self.ticks += 1;
            if self.ticks == 3 {
                let key = self.periodic.take().expect("armed");
                assert!(ctx.cancel_timer(key), "a periodic timer keeps its key");
                ctx.set_timer(ms(100), 3);
            }
        }
    }
}

fn worker_timers_once_and_periodic(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(
        Config {
            workers: 1,
            ..config(backend)
        },
        move |_| Ticker {
            events: tx.clone(),
            ticks: 0,
            periodic: None,
        },
    )
    .expect("engine starts");
    let mut got = Vec::new();
    while got.last() != Some(&3) {
        got.push(rx.recv_timeout(ms(10_000)).expect("a timer fires"));
    }
    assert_eq!(got.iter().filter(|&&i| i == 1).count(), 3, "{got:?}");
    assert_eq!(got.iter().filter(|&&i| i == 2).count(), 1, "{got:?}");
    assert!(!got.contains(&7), "the cancelled one never fired");
    // Still serving while timers come and go.
    let mut s = connect(engine.local_addr());
    ping(&mut s, b"still here");
    drop(s);
    engine.shutdown().expect("shutdown");
    assert!(rx.try_recv().is_err(), "nothing after the barrier: {got:?}");
}

/// A million timers armed on one worker, far in the future: the worker
/// keeps serving, and shuts down without firing any.
struct Hoarder {
    fired: mpsc::Sender<u64>,
}

impl Handler for Hoarder {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        for i in 0..1_000_000u64 {
            ctx.set_timer(Duration::from_secs(3600) + Duration::from_micros(i), i);
        }
    }
    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
    fn on_worker_timer(&mut self, _ctx: &mut Ctx<'_>, id: u64) {
        let _ = self.fired.send(id);
    }
}

fn a_million_timers_armed(backend: Backend) {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(
        Config {
            workers: 1,
            ..config(backend)
        },
        move |_| Hoarder { fired: tx.clone() },
    )
    .expect("engine starts");
    let mut s = connect(engine.local_addr());
    ping(&mut s, b"serving with a million timers armed");
    drop(s);
    engine.shutdown().expect("shutdown");
    assert!(rx.try_recv().is_err(), "none was due");
}

#[test]
fn connection_timers_fire_in_deadline_order_uring() {
    connection_timers_fire_in_deadline_order(Backend::Uring);
}
#[test]
fn connection_timers_fire_in_deadline_order_epoll() {
    connection_timers_fire_in_deadline_order(Backend::Epoll);
}
#[test]
fn a_closed_connections_timer_never_fires_uring() {
    a_closed_connections_timer_never_fires(Backend::Uring);
}
#[test]
fn a_closed_connections_timer_never_fires_epoll() {
    a_closed_connections_timer_never_fires(Backend::Epoll);
}
#[test]
fn worker_timers_once_and_periodic_uring() {
    worker_timers_once_and_periodic(Backend::Uring);
}
#[test]
fn worker_timers_once_and_periodic_epoll() {
    worker_timers_once_and_periodic(Backend::Epoll);
}
#[test]
fn a_million_timers_armed_uring() {
    a_million_timers_armed(Backend::Uring);
}
#[test]
fn a_million_timers_armed_epoll() {
    a_million_timers_armed(Backend::Epoll);
}
