//! Line frames: bytes up to a `\n`, with one `\r` before the `\n` stripped.
//!
//! The limit counts the line without its ending, so with a limit of 3 both
//! `abc\n` and `abc\r\n` are accepted and `abcd\n` is not.

use super::{Decoder, Frame, FrameError, DEFAULT_MAX_LINE};

/// Decoder and encoder for `\n`-terminated lines with a length limit.
///
/// ```
/// use ringnet::framing::{FrameError, LineCodec};
///
/// let codec = LineCodec::new(5);
/// let (frame, used) = codec.decode(b"hello\r\nnext").unwrap().unwrap();
/// assert_eq!((frame.payload(), used), (&b"hello"[..], 7));
/// // Refused once more than the limit is present without a `\n`.
/// assert_eq!(
///     codec.decode(b"hello!"),
///     Err(FrameError::FrameTooLarge { declared: 6, limit: 5 }),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineCodec {
    max: usize,
}

impl LineCodec {
    /// A codec accepting lines up to `max` bytes, not counting the line
    /// ending. Any `max` is valid.
    pub const fn new(max: usize) -> LineCodec {
        LineCodec { max }
    }

    /// The longest line accepted.
    pub const fn max(&self) -> usize {
        self.max
    }

    /// Decode the line at the start of `buf`; see [`Decoder::decode`].
    ///
    /// Looks no further than the limit allows: a line is an error as soon as
    /// the bytes present prove it longer than the limit (more than `max`
    /// bytes and no `\n`, unless the byte after the first `max` is a `\r`
    /// that a `\n` may yet follow). [`FrameError::FrameTooLarge`] then
    /// reports the line's length if its `\n` is present, else the bytes seen.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        self.decode_from(buf, 0)
    }

    /// [`LineCodec::decode`], given that the first `scanned` bytes of `buf`
    /// hold no `\n` (they were looked at before): the search starts after
    /// them. A `scanned` beyond `buf` counts as all of it.
    pub fn decode_from<'a>(
        &self,
        buf: &'a [u8],
        scanned: usize,
    ) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        // The furthest a `\n` can be for an acceptable line: after `max`
        // bytes and a `\r`.
        let window = self.max.saturating_add(2);
        let end = buf.len().min(window);
        let from = scanned.min(end);
        if let Some(nl) = memchr::memchr(b'\n', &buf[from..end]).map(|i| from + i) {
            // `nl < buf.len()`.
            let payload = strip_cr(&buf[..nl]);
            if payload.len() > self.max {
                return Err(self.too_large(payload.len()));
            }
            return Ok(Some((Frame::new(payload), nl + 1)));
        }
        let seen = buf.len();
        let proven_too_long =
            seen > self.max.saturating_add(1) || (seen > self.max && buf.last() != Some(&b'\r'));
        if !proven_too_long {
            return Ok(None);
        }
        // Report the whole line if its end is already here.
        let declared = match buf
            .get(window..)
            .and_then(|rest| memchr::memchr(b'\n', rest))
        {
            Some(off) => strip_cr(&buf[..window + off]).len(),
            None => seen,
        };
        Err(self.too_large(declared))
    }

    /// Append `payload` and a `\n` to `out`. On error `out` is unchanged:
    /// [`FrameError::FrameTooLarge`] for a payload over the limit,
    /// [`FrameError::PayloadContainsNewline`] for one containing `\n`, and
    /// [`FrameError::PayloadEndsWithCarriageReturn`] for one ending with
    /// `\r` (the decoder would strip it).
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if payload.len() > self.max {
            return Err(self.too_large(payload.len()));
        }
        if let Some(at) = payload.iter().position(|&b| b == b'\n') {
            return Err(FrameError::PayloadContainsNewline { at });
        }
        if payload.last() == Some(&b'\r') {
            return Err(FrameError::PayloadEndsWithCarriageReturn);
        }
        out.reserve(payload.len() + 1);
        out.extend_from_slice(payload);
        out.push(b'\n');
        Ok(())
    }

    fn too_large(&self, declared: usize) -> FrameError {
        FrameError::FrameTooLarge {
            declared: declared as u64,
            limit: self.max,
        }
    }
}

/// `line` without one trailing `\r`.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Default for LineCodec {
    /// Lines up to [`DEFAULT_MAX_LINE`].
    fn default() -> LineCodec {
        LineCodec::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for LineCodec {
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        LineCodec::decode(self, buf)
    }
}

/// Append `payload` and a `\n` to `out`, with no length limit; see
/// [`LineCodec::encode`] for the errors (`out` is unchanged on error).
pub fn encode_line(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    LineCodec::new(usize::MAX).encode(payload, out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn resuming_a_scan_finds_what_a_full_scan_finds() {
        let codec = LineCodec::new(16);
        let inputs: [&[u8]; 6] = [
            b"hello\nworld",
            b"0123456789abcdef\r\n",
            b"0123456789abcdefg\n",
            b"0123456789abcdef\r",
            b"no line end yet",
            b"\n",
        ];
        for buf in inputs {
            let first_nl = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            // Any prefix without the `\n` may have been scanned before.
            for scanned in 0..=first_nl {
                assert_eq!(
                    codec.decode_from(buf, scanned),
                    codec.decode(buf),
                    "{buf:?} scanned {scanned}"
                );
            }
        }
        // A hint past the end counts as all of it.
        assert_eq!(codec.decode_from(b"abc", 10), Ok(None));
    }

    use super::*;

    fn too_large(declared: u64, limit: usize) -> FrameError {
        FrameError::FrameTooLarge { declared, limit }
    }

    fn line(payload: &[u8], used: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
        Ok(Some((Frame::new(payload), used)))
    }

    #[test]
    fn exact_encoding() {
        let mut out = Vec::new();
        encode_line(b"hello", &mut out).unwrap();
        encode_line(b"", &mut out).unwrap();
        encode_line(b"a\rb", &mut out).unwrap();
        assert_eq!(out, b"hello\n\na\rb\n");
    }

    #[test]
    fn strips_one_trailing_cr_only() {
        let codec = LineCodec::default();
        assert_eq!(codec.decode(b"hi\nx"), line(b"hi", 3));
        assert_eq!(codec.decode(b"hi\r\nx"), line(b"hi", 4));
        assert_eq!(codec.decode(b"hi\r\r\n"), line(b"hi\r", 5));
        assert_eq!(codec.decode(b"a\rb\n"), line(b"a\rb", 4));
        assert_eq!(codec.decode(b"\r\n"), line(b"", 2));
    }

    #[test]
    fn empty_line_is_an_empty_frame() {
        let codec = LineCodec::new(0);
        assert_eq!(codec.decode(b"\n\n"), line(b"", 1));
        assert_eq!(codec.decode(b""), Ok(None));
        assert_eq!(codec.decode(b"\r"), Ok(None));
        assert_eq!(codec.decode(b"x"), Err(too_large(1, 0)));
    }

    #[test]
    fn incomplete_line_needs_more() {
        let codec = LineCodec::default();
        assert_eq!(codec.decode(b"partial"), Ok(None));
        assert_eq!(codec.decode(b"partial\r"), Ok(None));
    }

    #[test]
    fn line_of_exactly_max_accepted() {
        let max = 10;
        let codec = LineCodec::new(max);
        let mut buf = vec![b'a'; max];
        assert_eq!(codec.decode(&buf), Ok(None));
        buf.push(b'\r');
        assert_eq!(codec.decode(&buf), Ok(None));
        buf.push(b'\n');
        assert_eq!(codec.decode(&buf), line(&[b'a'; 10], max + 2));
        buf.truncate(max);
        buf.push(b'\n');
        assert_eq!(codec.decode(&buf), line(&[b'a'; 10], max + 1));
    }

    #[test]
    fn over_max_refused_before_newline() {
        let max = DEFAULT_MAX_LINE;
        let codec = LineCodec::default();
        let mut buf = vec![b'a'; max + 1];
        assert_eq!(codec.decode(&buf), Err(too_large(max as u64 + 1, max)));
        // Once a `\r` after `max` bytes is followed by anything but `\n`.
        buf[max] = b'\r';
        assert_eq!(codec.decode(&buf), Ok(None));
        buf.push(b'b');
        assert_eq!(codec.decode(&buf), Err(too_large(max as u64 + 2, max)));
        // With the newline present the line's length is reported.
        buf.extend_from_slice(b"cd\r\nmore");
        assert_eq!(codec.decode(&buf), Err(too_large(max as u64 + 4, max)));
    }

    #[test]
    fn over_max_with_newline_refused() {
        let codec = LineCodec::new(3);
        assert_eq!(codec.decode(b"abcd\n"), Err(too_large(4, 3)));
        assert_eq!(codec.decode(b"abcd\r\n"), Err(too_large(4, 3)));
        assert_eq!(codec.decode(b"abc\r\r\n"), Err(too_large(4, 3)));
    }

    #[test]
    fn encoder_errors_leave_out_alone() {
        let mut out = b"keep".to_vec();
        let newline = FrameError::PayloadContainsNewline { at: 2 };
        assert_eq!(encode_line(b"ab\ncd\n", &mut out), Err(newline));
        assert_eq!(
            encode_line(b"ab\r", &mut out),
            Err(FrameError::PayloadEndsWithCarriageReturn)
        );
        assert_eq!(
            LineCodec::new(2).encode(b"abc", &mut out),
            Err(too_large(3, 2))
        );
        assert_eq!(out, b"keep");
    }
}
