//! Message framing: turning a byte stream into frames and back, sans-IO.
//!
//! This module owns the wire formats a message-level handler can put on top
//! of a connection's byte stream, and nothing else: no sockets, no buffers
//! of its own. Bytes go in, frames come out.
//!
//! * **Length-prefixed** ([`LengthCodec`]): a 4-byte unsigned big-endian
//!   length, then that many payload bytes (the length does not count
//!   itself). `[0, 0, 0, 5] b"hello"` is the frame `hello`; `[0, 0, 0, 0]` is
//!   a valid empty frame.
//! * **Line** ([`LineCodec`]): bytes up to a `\n`; one `\r` right before the
//!   `\n` is stripped, so both `\n` and `\r\n` endings work. An empty line is
//!   a valid empty frame.
//! * **Raw** ([`Framing::Raw`]): whatever bytes are there form one frame.
//!
//! # Decoding fits the handler contract
//!
//! [`Handler::on_data`](crate::Handler::on_data) lends the received bytes as
//! a slice and takes back how many were consumed; the rest is presented
//! again with the next bytes. The decoders match that: they are stateless
//! over a slice, and [`Decoder::decode`] returns the first complete frame,
//! borrowed from the slice (no copy), with the number of bytes it used, or
//! `Ok(None)` when the frame is not complete yet. [`Decoder::frames`]
//! iterates over every complete frame and reports the total consumed, which
//! is what `on_data` returns:
//!
//! ```
//! use ringnet::framing::{Decoder, Framing};
//!
//! let framing = Framing::length_prefixed();
//! let data = b"\0\0\0\x02hi\0\0\0\x05hel"; // one frame and a partial one
//! let mut frames = framing.frames(data);
//! let mut got = Vec::new();
//! for frame in &mut frames {
//!     match frame {
//!         Ok(frame) => got.push(frame.payload().to_vec()),
//!         Err(err) => panic!("close the connection: {err}"),
//!     }
//! }
//! assert_eq!(got, [b"hi".to_vec()]);
//! assert_eq!(frames.consumed(), 6); // `on_data` returns this
//! ```
//!
//! # Limits are checked before anything is allocated
//!
//! A length prefix over the limit is refused with
//! [`FrameError::FrameTooLarge`] as soon as its 4 header bytes are present;
//! a line is refused as soon as the bytes present prove it longer than the
//! limit. The decoders never allocate, and since they refuse such frames
//! before the payload arrives, the engine never buffers it either: the
//! handler reports the error and closes that connection only.
//!
//! # Encoding
//!
//! [`encode_length_prefixed`] and [`encode_line`] append one frame to a
//! `Vec<u8>` (ready for [`Conn::send`](crate::Conn::send)); the codecs'
//! `encode` methods also enforce their limit, so a peer with the same limit
//! accepts what they produce. On error nothing is appended.

mod length;
mod line;

pub use length::{encode_length_prefixed, LengthCodec, HEADER_LEN};
pub use line::{encode_line, LineCodec};

use std::iter::FusedIterator;

/// The default largest length-prefixed payload: 8 MiB.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// The default longest line (without its `\n` or `\r\n`): 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 << 10;

/// Why a stream could not be decoded or a payload could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame is larger than the limit. When decoding, the connection
    /// should be closed: the stream cannot be resynchronised.
    #[error("frame of {declared} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The size the length prefix declared, or for a line the length
        /// of the line (or, if it has no `\n` yet, the bytes seen so far);
        /// for an encoder, the payload's length.
        declared: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A payload to encode as a line contains a `\n`.
    #[error("line payload contains a newline at byte {at}")]
    PayloadContainsNewline {
        /// The offset of the first `\n` in the payload.
        at: usize,
    },
    /// A payload to encode as a line ends with `\r`, which the decoder would
    /// strip as part of a `\r\n` ending.
    #[error("line payload ends with a carriage return")]
    PayloadEndsWithCarriageReturn,
}

/// One decoded frame: its payload, borrowed from the bytes it was decoded
/// from (header and line ending excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame<'a> {
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A frame with this payload.
    pub const fn new(payload: &'a [u8]) -> Frame<'a> {
        Frame { payload }
    }

    /// The payload bytes.
    pub const fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload length in bytes.
    pub const fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the payload is empty (a zero-length frame or an empty line).
    pub const fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

impl AsRef<[u8]> for Frame<'_> {
    fn as_ref(&self) -> &[u8] {
        self.payload
    }
}

/// A sans-IO frame decoder, stateless over the bytes it is given.
pub trait Decoder {
    /// Decode the first frame at the start of `buf`.
    ///
    /// Returns `Ok(Some((frame, consumed)))` for a complete frame, where
    /// `consumed` (at least 1, at most `buf.len()`) counts its header or line
    /// ending too; `Ok(None)` if more bytes are needed; an error if the
    /// bytes present already prove the frame invalid.
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError>;

    /// Iterate over every complete frame in `buf`; see [`Frames`].
    fn frames<'a>(&self, buf: &'a [u8]) -> Frames<'a, Self>
    where
        Self: Sized + Clone,
    {
        Frames::new(self.clone(), buf)
    }
}

/// The complete frames at the start of a buffer, in order.
///
/// Yields `Ok(frame)` for each complete frame and stops at the first
/// incomplete one; an error is yielded once and ends the iteration.
/// [`Frames::consumed`] then says how many bytes the yielded frames took,
/// which is what [`Handler::on_data`](crate::Handler::on_data) returns.
#[derive(Debug, Clone)]
pub struct Frames<'a, D> {
    decoder: D,
    buf: &'a [u8],
    consumed: usize,
    done: bool,
}

impl<'a, D: Decoder> Frames<'a, D> {
    /// Iterate over the frames `decoder` finds in `buf`.
    pub fn new(decoder: D, buf: &'a [u8]) -> Frames<'a, D> {
        Frames {
            decoder,
            buf,
            consumed: 0,
            done: false,
        }
    }

    /// The bytes taken by the frames yielded so far.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The bytes after the frames yielded so far.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.consumed..).unwrap_or_default()
    }
}

impl<'a, D: Decoder> Iterator for Frames<'a, D> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.remaining();
        match self.decoder.decode(rest) {
            Ok(Some((frame, used))) => {
                // Clamp so a faulty decoder cannot push us past the buffer,
                // and stop after a frame that used nothing rather than loop.
                let used = used.min(rest.len());
                self.consumed += used;
                self.done = used == 0;
                Some(Ok(frame))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

impl<D: Decoder> FusedIterator for Frames<'_, D> {}

/// Which framing a connection uses, so a message-level handler can be
/// generic over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// No framing: the bytes present form one frame.
    Raw,
    /// 4-byte big-endian length prefixes; see [`LengthCodec`].
    LengthPrefixed {
        /// The largest payload accepted (capped at `u32::MAX`).
        max: usize,
    },
    /// `\n`-terminated lines, `\r\n` accepted; see [`LineCodec`].
    Line {
        /// The longest line accepted, without its line ending.
        max: usize,
    },
}

impl Framing {
    /// Length-prefixed frames up to [`DEFAULT_MAX_FRAME`].
    pub const fn length_prefixed() -> Framing {
        Framing::LengthPrefixed {
            max: DEFAULT_MAX_FRAME,
        }
    }

    /// Lines up to [`DEFAULT_MAX_LINE`].
    pub const fn line() -> Framing {
        Framing::Line {
            max: DEFAULT_MAX_LINE,
        }
    }

    /// Decode the first frame in `buf`; see [`Decoder::decode`]. A raw
    /// frame is all of `buf` (`Ok(None)` if it is empty).
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        match *self {
            Framing::Raw if buf.is_empty() => Ok(None),
            Framing::Raw => Ok(Some((Frame::new(buf), buf.len()))),
            Framing::LengthPrefixed { max } => LengthCodec::new(max).decode(buf),
            Framing::Line { max } => LineCodec::new(max).decode(buf),
        }
    }

    /// [`Framing::decode`], knowing that the first `scanned` bytes of `buf`
    /// were seen before and hold no line end (what a caller that kept an
    /// incomplete frame knows): a line's `\n` is looked for only after
    /// them, so a long line arriving in small pieces costs a scan of each
    /// piece, not of the whole line each time. Other framings ignore it.
    pub fn decode_from<'a>(
        &self,
        buf: &'a [u8],
        scanned: usize,
    ) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        match *self {
            Framing::Line { max } => LineCodec::new(max).decode_from(buf, scanned),
            _ => self.decode(buf),
        }
    }

    /// Append `payload` to `out` as one frame, checking this framing's
    /// limit; on error `out` is unchanged. A raw frame is the payload.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        match *self {
            Framing::Raw => {
                out.extend_from_slice(payload);
                Ok(())
            }
            Framing::LengthPrefixed { max } => LengthCodec::new(max).encode(payload, out),
            Framing::Line { max } => LineCodec::new(max).encode(payload, out),
        }
    }
}

impl Decoder for Framing {
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        Framing::decode(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads<D: Decoder + Clone>(
        d: &D,
        buf: &[u8],
    ) -> (Vec<Vec<u8>>, usize, Option<FrameError>) {
        let mut frames = d.frames(buf);
        let mut out = Vec::new();
        let mut err = None;
        for frame in &mut frames {
            match frame {
                Ok(f) => out.push(f.payload().to_vec()),
                Err(e) => err = Some(e),
            }
        }
        (out, frames.consumed(), err)
    }

    #[test]
    fn raw_is_everything_present() {
        assert_eq!(Framing::Raw.decode(b""), Ok(None));
        let (frames, consumed, err) = payloads(&Framing::Raw, b"abc");
        assert_eq!(frames, [b"abc".to_vec()]);
        assert_eq!((consumed, err), (3, None));
    }

    #[test]
    fn frames_stop_at_partial_frame() {
        let mut buf = Vec::new();
        for p in [&b"one"[..], b"", b"three"] {
            encode_length_prefixed(p, &mut buf).unwrap();
        }
        let whole = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 9, b'x']);
        let (frames, consumed, err) = payloads(&Framing::length_prefixed(), &buf);
        assert_eq!(frames, [b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        assert_eq!((consumed, err), (whole, None));
    }

    #[test]
    fn frames_yield_error_once_after_good_frames() {
        let framing = Framing::LengthPrefixed { max: 4 };
        let buf = [0, 0, 0, 1, b'a', 0, 0, 0, 5, 1, 2, 3, 4, 5];
        let mut frames = framing.frames(&buf);
        assert_eq!(frames.next(), Some(Ok(Frame::new(b"a"))));
        let err = FrameError::FrameTooLarge {
            declared: 5,
            limit: 4,
        };
        assert_eq!(frames.next(), Some(Err(err)));
        assert_eq!(frames.next(), None);
        assert_eq!(frames.consumed(), 5);
        assert_eq!(frames.remaining(), &buf[5..]);
    }

    #[test]
    fn framing_encode_checks_limits() {
        let mut out = Vec::new();
        Framing::Raw.encode(b"a\nb", &mut out).unwrap();
        Framing::line().encode(b"cd", &mut out).unwrap();
        Framing::length_prefixed().encode(b"e", &mut out).unwrap();
        assert_eq!(out, b"a\nbcd\n\0\0\0\x01e");
        let err = Framing::Line { max: 1 }.encode(b"xy", &mut out);
        assert_eq!(
            err,
            Err(FrameError::FrameTooLarge {
                declared: 2,
                limit: 1
            })
        );
        assert_eq!(out.len(), 11);
    }

    #[test]
    fn errors_display_clearly() {
        let err = FrameError::FrameTooLarge {
            declared: 9,
            limit: 8,
        };
        assert_eq!(
            err.to_string(),
            "frame of 9 bytes exceeds the limit of 8 bytes"
        );
    }
}
