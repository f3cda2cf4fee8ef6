//! The message layer on the engine: length-prefixed and line framing over
//! real sockets, on both backends. Frames split at every byte boundary,
//! zero-length frames, the largest frame accepted and one byte more refused
//! (reported as `FrameTooLarge`, nothing of that size allocated), other
//! connections untouched.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use ringnet::framing::Framing;
use ringnet::message::{Framed, MessageHandler, MsgConn};
use ringnet::{Backend, CloseReason, ConnId, Engine};
use util::*;

/// Counts allocations of 1 MiB or more, anywhere in this test process.
struct CountLarge;

static LARGE: AtomicUsize = AtomicUsize::new(0);
const LARGE_BYTES: usize = 1 << 20;

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counter is a relaxed tally only.
unsafe impl GlobalAlloc for CountLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE_BYTES {
            LARGE.fetch_add(1, Relaxed);
        }
        // SAFETY: same layout as the caller's, per GlobalAlloc::alloc.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE_BYTES {
            LARGE.fetch_add(1, Relaxed);
        }
        // SAFETY: `ptr`/`layout` came from this allocator (System underneath).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountLarge = CountLarge;

/// Echoes messages and reports every close reason.
struct Echo {
    closed: Sender<CloseReason>,
}

impl MessageHandler for Echo {
    type State = ();

    fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) {}

    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), msg: &[u8]) {
        conn.send_msg(msg)
            .expect("a received message fits its framing");
    }
    fn on_close(&mut self, _id: ConnId, _: (), reason: &CloseReason) {
        let _ = self.closed.send(reason.clone());
    }
}

fn engine(backend: Backend, framing: Framing) -> (Engine, mpsc::Receiver<CloseReason>) {
    let (tx, rx) = mpsc::channel();
    let e = Engine::start(config(backend), move |_| {
        Framed::new(framing, Echo { closed: tx.clone() })
    })
    .expect("engine starts");
    (e, rx)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn length_frames_split_at_every_byte(backend: Backend) {
    let (engine, _closed) = engine(backend, Framing::length_prefixed());
    let stream: Vec<u8> = [
        frame(b"first"),
        frame(b""),
        frame(&pattern(3, 300)),
        frame(b"last one"),
    ]
    .concat();
    for split in 1..stream.len() {
        let mut s = connect(engine.local_addr());
        s.write_all(&stream[..split]).expect("first part");
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(&stream[split..]).expect("second part");
        let mut back = vec![0; stream.len()];
        s.read_exact(&mut back).expect("the same frames back");
        assert_eq!(back, stream, "split at {split}");
    }
    // Byte by byte as well.
    let mut s = connect(engine.local_addr());
    for b in &stream {
        s.write_all(std::slice::from_ref(b)).expect("one byte");
    }
    let mut back = vec![0; stream.len()];
    s.read_exact(&mut back).expect("frames back");
    assert_eq!(back, stream);
    drop(s);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// The allocation counter is process-wide: the two backends' runs of the
/// largest-frame test take turns so neither counts the other's buffers.
static LARGE_FRAME_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn largest_frame_accepted_one_more_refused(backend: Backend) {
    let _turn = LARGE_FRAME_TURN.lock().unwrap_or_else(|p| p.into_inner());
    const MAX: usize = 2 << 20;
    let (engine, closed) = engine(backend, Framing::LengthPrefixed { max: MAX });
    let addr = engine.local_addr();
    let mut bystander = connect(addr);
    // Exactly the limit: echoed whole.
    let big = frame(&pattern(9, MAX));
    let mut s = connect(addr);
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || w.write_all(&big).map(|_| big));
    let mut back = vec![0; MAX + 4];
    s.read_exact(&mut back).expect("the largest frame echoed");
    let big = writer.join().expect("writer").expect("write");
    assert!(back == big, "largest frame intact");
    drop(s);
    assert_eq!(
        closed.recv_timeout(Duration::from_secs(10)).expect("close"),
        CloseReason::PeerClosed
    );
    // One byte more: refused on the 4-byte header, nothing that size made.
    let large_before = LARGE.load(Relaxed);
    let mut s = connect(addr);
    s.write_all(&((MAX + 1) as u32).to_be_bytes())
        .expect("header");
    s.write_all(b"some of the body").expect("body start");
    let reason = closed
        .recv_timeout(Duration::from_secs(10))
        .expect("close reason");
    assert_eq!(
        reason,
        CloseReason::FrameTooLarge {
            declared: (MAX + 1) as u64,
            limit: MAX
        }
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing echoed for the refused frame");
    let large = LARGE.load(Relaxed) - large_before;
    println!("{backend}: refused {reason}; allocations >= 1 MiB meanwhile: {large}");
    assert_eq!(large, 0, "no buffer of the declared size");
    // The other connection is untouched.
    bystander.write_all(&frame(b"still here")).expect("write");
    let mut b = vec![0; 14];
    bystander.read_exact(&mut b).expect("bystander served");
    assert_eq!(&b[4..], b"still here");
    drop(bystander);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

fn lines_and_a_line_too_long(backend: Backend) {
    let (engine, closed) = engine(backend, Framing::Line { max: 1024 });
    let mut s = connect(engine.local_addr());
    s.write_all(b"hello\r\nworld\n\n").expect("lines");
    let mut back = [0u8; 13];
    s.read_exact(&mut back).expect("lines echoed");
    assert_eq!(
        &back, b"hello\nworld\n\n",
        "\\r\\n comes back as \\n, the empty line too"
    );
    let mut long = connect(engine.local_addr());
    long.write_all(&[b'x'; 2000])
        .expect("a line past the limit");
    let reason = closed
        .recv_timeout(Duration::from_secs(10))
        .expect("close reason");
    assert!(
        matches!(reason, CloseReason::FrameTooLarge { limit: 1024, .. }),
        "{reason:?}"
    );
    ping(&mut s, b"after\n");
    drop(s);
    wait_baseline(&engine);
    engine.shutdown().expect("shutdown");
}

/// A peer that resets in the middle of a frame: the partial frame is
/// dropped with the connection, `on_close` says so, the slot and buffers go
/// back to baseline, and another connection is untouched.
fn reset_mid_frame(backend: Backend) {
    let (engine, closed) = engine(backend, Framing::length_prefixed());
    let addr = engine.local_addr();
    let mut bystander = connect(addr);
    for round in 0..10 {
        let s = connect(addr);
        (&s).write_all(&(1000u32).to_be_bytes()).expect("header");
        (&s).write_all(&pattern(round, 300))
            .expect("part of the body");
        std::thread::sleep(Duration::from_millis(10));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger 0");
        drop(s);
        let reason = closed
            .recv_timeout(Duration::from_secs(10))
            .expect("close reason");
        assert!(
            matches!(reason, CloseReason::Error(_) | CloseReason::PeerClosed),
            "round {round}: {reason:?}"
        );
        let f = frame(b"bystander");
        bystander.write_all(&f).expect("write");
        let mut back = vec![0; f.len()];
        bystander.read_exact(&mut back).expect("bystander served");
        assert_eq!(back, f);
    }
    drop(bystander);
    let s = wait_baseline(&engine);
    println!(
        "{backend}: 10 resets mid-frame, back to baseline: open {}, buffers in use {}",
        s.open, s.buffers_in_use
    );
    engine.shutdown().expect("shutdown");
}

#[test]
fn length_frames_split_at_every_byte_uring() {
    length_frames_split_at_every_byte(Backend::Uring);
}
#[test]
fn length_frames_split_at_every_byte_epoll() {
    length_frames_split_at_every_byte(Backend::Epoll);
}
#[test]
fn largest_frame_accepted_one_more_refused_uring() {
    largest_frame_accepted_one_more_refused(Backend::Uring);
}
#[test]
fn largest_frame_accepted_one_more_refused_epoll() {
    largest_frame_accepted_one_more_refused(Backend::Epoll);
}
#[test]
fn lines_and_a_line_too_long_uring() {
    lines_and_a_line_too_long(Backend::Uring);
}
#[test]
fn lines_and_a_line_too_long_epoll() {
    lines_and_a_line_too_long(Backend::Epoll);
}

#[test]
fn reset_mid_frame_uring() {
    reset_mid_frame(Backend::Uring);
}

#[test]
fn reset_mid_frame_epoll() {
    reset_mid_frame(Backend::Epoll);
}
