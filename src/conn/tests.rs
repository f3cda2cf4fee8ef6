//! The sans-IO decisions of `ConnCore`, without sockets doing I/O.
use super::*;

fn core() -> ConnCore {
    let sock = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    ConnCore::new(
        ConnId::new(0, 1, 1),
        Some(sock),
        Some(0),
        Some(Instant::now()),
    )
}

#[test]
fn phases_move_only_forward_on_close() {
    let mut c = core();
    assert!(c.wants_input() && !c.is_closing());
    c.close(CloseReason::Local);
    assert_eq!(c.phase, Phase::Closing);
    assert_eq!(c.close_reason(), CloseReason::Local);
    c.close(CloseReason::Shutdown);
    assert_eq!(
        c.close_reason(),
        CloseReason::Local,
        "the first reason stays"
    );
    assert!(!c.wants_input());
    assert_eq!(
        c.flow(),
        Flow::More,
        "input while closing is read and dropped"
    );
}

#[test]
fn pressure_pauses_above_high_and_resumes_at_low() {
    let mut c = core();
    let t0 = Instant::now();
    c.out.extend_from_slice(&[0; 100]);
    assert_eq!(c.pressure(64, 16, || t0), Pressure::Pause);
    assert!(c.is_paused() && !c.wants_input());
    assert_eq!(c.flow(), Flow::Enough);
    assert_eq!(c.pressure(64, 16, || t0), Pressure::Steady);
    c.wrote(90, Instant::now);
    assert_eq!(c.queued(), 10);
    let later = t0 + std::time::Duration::from_secs(1);
    assert_eq!(c.pressure(64, 16, || later), Pressure::Resume);
    assert_eq!(c.clock.as_deref().expect("timed").last_active, later);
    // A closing connection is never paused.
    c.out.extend_from_slice(&[0; 100]);
    c.close(CloseReason::Local);
    assert_eq!(c.pressure(64, 16, || later), Pressure::Steady);
}

#[test]
fn a_lent_send_still_counts_as_queued() {
    let mut c = core();
    c.out.extend_from_slice(b"hello");
    assert!(c.has_output());
    let buf = c.lend();
    assert_eq!((&buf[..], c.queued()), (&b"hello"[..], 5));
    assert!(!c.has_output(), "one send in flight at a time");
    c.out.extend_from_slice(b"!");
    assert_eq!(c.queued(), 6);
    assert!(!c.has_output(), "newer output waits for the lent bytes");
    c.returned(buf, 2, Instant::now);
    assert_eq!(c.unsent(), b"llo!", "the rest goes before newer output");
    assert_eq!((c.queued(), c.written), (4, 2));
    let buf = c.lend();
    let cap = buf.capacity();
    c.returned(buf, 4, Instant::now);
    assert_eq!(c.queued(), 0);
    assert_eq!(c.out.capacity(), cap, "a drained buffer is kept for reuse");
}

#[test]
fn writes_in_place_and_drains() {
    let mut c = core();
    let t0 = Instant::now() - std::time::Duration::from_secs(5);
    c.clock.as_deref_mut().expect("timed").last_active = t0;
    c.out.extend_from_slice(b"0123456789");
    c.wrote(4, || unreachable!("not drained: no clock read"));
    assert_eq!(c.unsent(), b"456789");
    let now = Instant::now();
    c.wrote(100, || now);
    assert_eq!((c.queued(), c.out.len(), c.written), (0, 0, 10));
    assert_eq!(c.clock.as_deref().expect("timed").last_active, now);
}

#[test]
fn large_output_is_lent_in_bounded_sends() {
    let mut c = core();
    c.out.resize(MAX_SEND + 3, 7);
    let buf = c.lend();
    assert_eq!((buf.len(), c.queued()), (MAX_SEND, MAX_SEND + 3));
    c.returned(buf, MAX_SEND, Instant::now);
    assert_eq!(c.unsent(), &[7, 7, 7]);
}

#[test]
fn the_slot_state_stays_small() {
    // Every open connection carries a `ConnCore` in its worker's slab;
    // the target is at most 100 bytes of server memory per idle
    // connection (`ringnet bench hold`), of which the slot takes 80
    // and the bus 4.
    let size = std::mem::size_of::<ConnCore>();
    assert!(size <= 72, "ConnCore grew to {size} bytes");
    assert_eq!(std::mem::size_of::<Phase>(), 1);
}

#[test]
fn messages_over_the_output_limit_close() {
    let mut c = core();
    let other = ConnId::new(0, 2, 1);
    assert_eq!(
        c.take_message(None, Some(other), b"x", 8),
        Delivery::Skipped
    );
    assert_eq!(c.take_message(Some(c.id), None, b"x", 8), Delivery::Skipped);
    assert_eq!(c.take_message(None, None, b"1234", 8), Delivery::Queued);
    assert_eq!(c.take_message(None, None, b"12345", 8), Delivery::OverLimit);
    assert_eq!(c.phase, Phase::Closing);
    assert_eq!(c.close_reason(), CloseReason::OutputLimit { limit: 8 });
    assert_eq!(c.take_message(None, None, b"1", 8), Delivery::Skipped);
}
