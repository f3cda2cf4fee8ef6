//! Framing through a simulated engine: streams split at every byte boundary
//! and at random points, limits refused without allocating, and decoding
//! arbitrary bytes without panicking.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use ringnet::framing::{
    encode_length_prefixed, encode_line, Decoder, FrameError, Framing, LengthCodec, LineCodec,
    DEFAULT_MAX_FRAME, DEFAULT_MAX_LINE,
};

/// Allocations at least this big are counted process-wide; nothing in this
/// test binary makes one except the allocation test's own control.
const LARGE: usize = 1 << 20;

/// Counts allocations on the current thread, and large ones everywhere.
struct CountingAlloc;

static LARGE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without a destructor: using it never allocates, so the
    // allocator can touch it.
    static THREAD_ALLOCS: Cell<usize> = const { Cell::new(0) };
}

impl CountingAlloc {
    fn count(size: usize) {
        if size >= LARGE {
            // Relaxed: a plain event counter, read after the measured call on
            // the same thread; no other memory is published through it.
            LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // `try_with`: the slot may already be gone while a thread exits.
        let _ = THREAD_ALLOCS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counting touches only an
// atomic and a const thread-local `Cell`, neither of which allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for
        // `layout`, which is exactly `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: `ptr` came from `System` with `layout` and `new_size` is
        // valid, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn thread_allocs() -> usize {
    THREAD_ALLOCS.with(Cell::get)
}

fn large_allocs() -> usize {
    // Relaxed: see `CountingAlloc::count`.
    LARGE_ALLOCS.load(Ordering::Relaxed)
}

/// What one connection's handler saw.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    frames: Vec<Vec<u8>>,
    /// The error the connection was closed with, if any.
    error: Option<FrameError>,
}

/// One connection as the engine drives it: unconsumed bytes are kept and
/// presented again in front of the next read; the handler decodes every
/// complete frame and returns what it consumed, closing on an error.
#[derive(Default)]
struct SimConn {
    held: Vec<u8>,
    seen: Seen,
}

impl SimConn {
    /// Deliver one read; returns false once the connection is closed.
    fn read(&mut self, framing: &Framing, data: &[u8]) -> bool {
        if self.seen.error.is_some() {
            return false;
        }
        self.held.extend_from_slice(data);
        let mut frames = framing.frames(&self.held);
        for frame in &mut frames {
            match frame {
                Ok(frame) => self.seen.frames.push(frame.payload().to_vec()),
                Err(err) => {
                    self.seen.error = Some(err);
                    return false;
                }
            }
        }
        let consumed = frames.consumed();
        assert!(consumed <= self.held.len());
        self.held.drain(..consumed);
        true
    }
}

/// Feed `stream` cut at `cuts` (sorted offsets) through one connection.
fn feed(framing: &Framing, stream: &[u8], cuts: &[usize]) -> Seen {
    let mut conn = SimConn::default();
    let mut start = 0;
    for &end in cuts.iter().chain([&stream.len()]) {
        let end = end.clamp(start, stream.len());
        if !conn.read(framing, &stream[start..end]) {
            break;
        }
        start = end;
    }
    conn.seen
}

fn whole(frames: &[&[u8]]) -> Seen {
    Seen {
        frames: frames.iter().map(|f| f.to_vec()).collect(),
        error: None,
    }
}

/// Every single split position, every pair of split positions, and byte by
/// byte must give `expected`.
fn check_every_split(framing: &Framing, stream: &[u8], expected: &Seen) {
    let n = stream.len();
    assert_eq!(&feed(framing, stream, &[]), expected, "in one read");
    for i in 0..=n {
        assert_eq!(&feed(framing, stream, &[i]), expected, "split at {i}");
        for j in i..=n {
            assert_eq!(
                &feed(framing, stream, &[i, j]),
                expected,
                "split at {i},{j}"
            );
        }
    }
    let bytes: Vec<usize> = (1..n).collect();
    assert_eq!(&feed(framing, stream, &bytes), expected, "byte by byte");
}

#[test]
fn length_frames_split_at_every_byte_boundary() {
    let payloads: [&[u8]; 5] = [b"hello", b"", b"x", b"\0\0\0\x01", b"world!"];
    let mut stream = Vec::new();
    for p in payloads {
        encode_length_prefixed(p, &mut stream).unwrap();
    }
    check_every_split(&Framing::length_prefixed(), &stream, &whole(&payloads));
}

#[test]
fn line_frames_split_at_every_byte_boundary() {
    let stream = b"hello\r\n\nx\r\r\n\r\nworld\n";
    let payloads: [&[u8]; 5] = [b"hello", b"", b"x\r", b"", b"world"];
    check_every_split(&Framing::line(), stream, &whole(&payloads));
}

#[test]
fn over_limit_frame_split_anywhere_is_refused_after_earlier_frames() {
    let mut stream = Vec::new();
    encode_length_prefixed(b"ok", &mut stream).unwrap();
    encode_length_prefixed(b"too long", &mut stream).unwrap();
    let mut expected = whole(&[b"ok"]);
    expected.error = Some(FrameError::FrameTooLarge {
        declared: 8,
        limit: 4,
    });
    check_every_split(&Framing::LengthPrefixed { max: 4 }, &stream, &expected);
}

#[test]
fn one_connection_refused_others_untouched() {
    let framing = Framing::Line { max: 8 };
    let mut good = SimConn::default();
    let mut bad = SimConn::default();
    for _ in 0..3 {
        assert!(good.read(&framing, b"fine\n"));
        bad.read(&framing, b"0123456789");
    }
    assert_eq!(good.seen, whole(&[b"fine", b"fine", b"fine"]));
    assert!(good.held.is_empty());
    assert_eq!(
        bad.seen.error,
        Some(FrameError::FrameTooLarge {
            declared: 10,
            limit: 8
        })
    );
}

#[test]
fn over_limit_is_refused_without_allocating() {
    let length = LengthCodec::default();
    let line = LineCodec::default();
    let huge = u32::MAX.to_be_bytes();
    let just_over = u32::try_from(DEFAULT_MAX_FRAME + 1).unwrap().to_be_bytes();
    let long_line = vec![b'a'; DEFAULT_MAX_LINE + 1];

    // Control: the counters do see allocations.
    let (t, l) = (thread_allocs(), large_allocs());
    std::hint::black_box(vec![1u8; 2 * LARGE]);
    assert_eq!((thread_allocs() - t, large_allocs() - l), (1, 1));

    let (t, l) = (thread_allocs(), large_allocs());
    let results = [
        length.decode(&huge),
        length.decode(&just_over),
        Framing::length_prefixed().decode(&huge),
        line.decode(&long_line),
        Framing::line().decode(&long_line),
    ];
    let (thread, large) = (thread_allocs() - t, large_allocs() - l);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(FrameError::FrameTooLarge { .. }))));
    assert_eq!(thread, 0, "decoding allocated on this thread");
    assert_eq!(large, 0, "a large allocation was made");

    // Through the engine simulation, which keeps a small buffer of its own:
    // still nothing proportional to the declared size.
    let l = large_allocs();
    let seen = feed(&Framing::length_prefixed(), &huge, &[1, 2, 3]);
    assert_eq!(
        seen.error,
        Some(FrameError::FrameTooLarge {
            declared: u64::from(u32::MAX),
            limit: DEFAULT_MAX_FRAME
        })
    );
    assert_eq!(large_allocs() - l, 0);
}

/// Sorted cut points into a stream of `len` bytes, from random raw values.
fn cuts(raw: &[usize], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Line payloads: no `\n`, and no trailing `\r` (the decoder strips it).
fn line_payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'a'), any::<u8>()]
            .prop_filter("no newline", |b| *b != b'\n'),
        0..40,
    )
    .prop_map(|mut p| {
        while p.last() == Some(&b'\r') {
            p.pop();
        }
        p
    })
}

proptest! {
    #[test]
    fn length_frames_survive_any_split(
        payloads in prop::collection::vec(
            prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 0..300)],
            0..20,
        ),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            encode_length_prefixed(p, &mut stream).unwrap();
        }
        let seen = feed(&Framing::length_prefixed(), &stream, &cuts(&raw_cuts, stream.len()));
        prop_assert_eq!(seen, Seen { frames: payloads, error: None });
    }

    #[test]
    fn lines_survive_any_split(
        lines in prop::collection::vec((line_payload(), any::<bool>()), 0..20),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        // Mix `\n` (from the encoder) and `\r\n` endings.
        let mut stream = Vec::new();
        for (p, crlf) in &lines {
            if *crlf {
                stream.extend_from_slice(p);
                stream.extend_from_slice(b"\r\n");
            } else {
                encode_line(p, &mut stream).unwrap();
            }
        }
        let seen = feed(&Framing::Line { max: 40 }, &stream, &cuts(&raw_cuts, stream.len()));
        let payloads = lines.into_iter().map(|(p, _)| p).collect();
        prop_assert_eq!(seen, Seen { frames: payloads, error: None });
    }

    #[test]
    fn raw_delivers_the_stream_in_order(
        stream in prop::collection::vec(any::<u8>(), 0..500),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let seen = feed(&Framing::Raw, &stream, &cuts(&raw_cuts, stream.len()));
        prop_assert_eq!(seen.error, None);
        prop_assert_eq!(seen.frames.concat(), stream);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_does_not_matter(
        stream in prop::collection::vec(
            prop_oneof![Just(0u8), Just(b'\n'), Just(b'\r'), any::<u8>()],
            0..400,
        ),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..10),
        max in 0usize..64,
    ) {
        for framing in [Framing::LengthPrefixed { max }, Framing::Line { max }, Framing::Raw] {
            let one = feed(&framing, &stream, &[]);
            let split = feed(&framing, &stream, &cuts(&raw_cuts, stream.len()));
            if framing != Framing::Raw {
                prop_assert!(one.frames.iter().all(|f| f.len() <= max));
                prop_assert_eq!(&split.frames, &one.frames);
            }
            // A line's reported size depends on how much had arrived, so
            // compare only that both were refused.
            prop_assert_eq!(split.error.is_some(), one.error.is_some());
            if matches!(framing, Framing::LengthPrefixed { .. }) {
                prop_assert_eq!(split.error, one.error);
            }
        }
    }
}
