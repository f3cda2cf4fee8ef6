//! Fuzz the line decoder: arbitrary bytes, delivered as two reads the way
//! the engine presents them (unconsumed bytes kept in front of the next
//! read), must never panic, and must give the same lines as one read.
//!
//! Input: byte 0 picks the split point, byte 1 the limit, the rest is the
//! stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringnet::framing::{Decoder, FrameError, LineCodec};

/// What a handler saw on one connection, and the bytes it consumed.
struct Seen {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
    consumed: usize,
}

fn feed(codec: &LineCodec, reads: &[&[u8]]) -> Seen {
    let mut seen = Seen {
        frames: Vec::new(),
        error: None,
        consumed: 0,
    };
    let mut held = Vec::new();
    for read in reads {
        held.extend_from_slice(read);
        let mut frames = codec.frames(&held);
        for frame in &mut frames {
            match frame {
                Ok(frame) => {
                    assert!(frame.len() <= codec.max(), "line over the limit");
                    assert!(!frame.payload().contains(&b'\n'), "newline in a line");
                    seen.frames.push(frame.payload().to_vec());
                }
                Err(err) => {
                    seen.error = Some(err);
                    return seen;
                }
            }
        }
        let used = frames.consumed();
        assert!(used <= held.len(), "consumed more than the input");
        held.drain(..used);
        seen.consumed += used;
    }
    // What is left is the start of one line that may yet fit.
    assert!(!held.contains(&b'\n'), "a complete line was left");
    assert!(held.len() <= codec.max() + 1, "an over-long line was kept");
    seen
}

fuzz_target!(|data: &[u8]| {
    let [split, limit, stream @ ..] = data else {
        return;
    };
    let codec = LineCodec::new(usize::from(*limit));
    let at = usize::from(*split).min(stream.len());
    let (a, b) = stream.split_at(at);

    let two = feed(&codec, &[a, b]);
    let one = feed(&codec, &[stream]);
    assert_eq!(two.frames, one.frames, "split changed the lines");
    // A line refused before its `\n` arrived reports the bytes seen, which
    // depends on the split; whether it is refused does not.
    assert_eq!(
        two.error.is_some(),
        one.error.is_some(),
        "split changed the outcome"
    );

    if let Some(FrameError::FrameTooLarge { declared, limit }) = one.error {
        assert!(declared > limit as u64);
        assert_eq!(limit, codec.max());
    }
    if one.error.is_none() {
        // Each line took its payload, maybe a `\r`, and its `\n`.
        let consumed = &stream[..one.consumed];
        assert_eq!(
            consumed.iter().filter(|&&b| b == b'\n').count(),
            one.frames.len()
        );
        let min: usize = one.frames.iter().map(|f| f.len() + 1).sum();
        assert!(one.consumed >= min && one.consumed <= min + one.frames.len());
    }
});
