//! Fuzz the length-prefixed decoder: arbitrary bytes, delivered as two reads
//! the way the engine presents them (unconsumed bytes kept in front of the
//! next read), must never panic, and must give the same frames as one read.
//!
//! Input: byte 0 picks the split point, byte 1 the limit, the rest is the
//! stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringnet::framing::{encode_length_prefixed, Decoder, FrameError, LengthCodec, HEADER_LEN};

/// What a handler saw on one connection, and the bytes it consumed.
struct Seen {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
    consumed: usize,
}

fn feed(codec: &LengthCodec, reads: &[&[u8]]) -> Seen {
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
                    assert!(frame.len() <= codec.max(), "frame over the limit");
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
    // What is left is not a complete frame.
    assert_eq!(codec.decode(&held), Ok(None));
    seen
}

fuzz_target!(|data: &[u8]| {
    let [split, limit, stream @ ..] = data else {
        return;
    };
    let codec = LengthCodec::new(usize::from(*limit));
    let at = usize::from(*split).min(stream.len());
    let (a, b) = stream.split_at(at);

    let two = feed(&codec, &[a, b]);
    let one = feed(&codec, &[stream]);
    assert_eq!(two.frames, one.frames, "split changed the frames");
    assert_eq!(two.error, one.error, "split changed the error");

    if let Some(FrameError::FrameTooLarge { declared, limit }) = one.error {
        assert!(declared > limit as u64);
        assert_eq!(limit, codec.max());
    }
    if one.error.is_none() {
        // Re-encoding the frames gives back exactly the bytes consumed.
        let mut again = Vec::new();
        for frame in &one.frames {
            encode_length_prefixed(frame, &mut again).expect("encodable");
        }
        assert_eq!(again.len(), one.consumed);
        assert_eq!(again, stream[..one.consumed]);
        assert_eq!(
            one.consumed,
            one.frames
                .iter()
                .map(|f| f.len() + HEADER_LEN)
                .sum::<usize>()
        );
    }
});
