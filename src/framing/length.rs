//! Length-prefixed frames: a 4-byte unsigned big-endian payload length, then
//! the payload. The length does not count its own 4 bytes.

use super::{Decoder, Frame, FrameError, DEFAULT_MAX_FRAME};

/// The size of the length prefix in bytes.
pub const HEADER_LEN: usize = 4;

/// The largest payload the format can carry: `u32::MAX`, or less where
/// `usize` could not hold the header and payload together.
const FORMAT_MAX: usize = {
    let cap = usize::MAX - HEADER_LEN;
    if (u32::MAX as u64) < cap as u64 {
        u32::MAX as usize
    } else {
        cap
    }
};

/// Decoder and encoder for length-prefixed frames with a size limit.
///
/// ```
/// use ringnet::framing::{FrameError, LengthCodec};
///
/// let codec = LengthCodec::new(5);
/// let (frame, used) = codec.decode(b"\0\0\0\x05hello").unwrap().unwrap();
/// assert_eq!((frame.payload(), used), (&b"hello"[..], 9));
/// // Refused from the header alone, before any payload arrives.
/// assert_eq!(
///     codec.decode(b"\0\0\0\x06"),
///     Err(FrameError::FrameTooLarge { declared: 6, limit: 5 }),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LengthCodec {
    max: usize,
}

impl LengthCodec {
    /// A codec accepting payloads up to `max` bytes. Any `max` is valid; it
    /// is capped at the format's own bound, `u32::MAX`.
    pub const fn new(max: usize) -> LengthCodec {
        let max = if max < FORMAT_MAX { max } else { FORMAT_MAX };
        LengthCodec { max }
    }

    /// The largest payload accepted.
    pub const fn max(&self) -> usize {
        self.max
    }

    /// Decode the frame at the start of `buf`; see [`Decoder::decode`].
    ///
    /// A length over the limit is an error as soon as the 4 header bytes are
    /// present, whatever follows.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes(*header);
        let len = match usize::try_from(declared) {
            Ok(len) if len <= self.max => len,
            _ => {
                return Err(FrameError::FrameTooLarge {
                    declared: u64::from(declared),
                    limit: self.max,
                })
            }
        };
        // `len <= self.max <= usize::MAX - HEADER_LEN`: no overflow.
        let end = HEADER_LEN + len;
        Ok(buf
            .get(HEADER_LEN..end)
            .map(|payload| (Frame::new(payload), end)))
    }

    /// Append `payload` to `out` as one frame. A payload over the limit is
    /// [`FrameError::FrameTooLarge`], and `out` is left unchanged.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let len = match u32::try_from(payload.len()) {
            Ok(len) if payload.len() <= self.max => len,
            _ => {
                return Err(FrameError::FrameTooLarge {
                    declared: payload.len() as u64,
                    limit: self.max,
                })
            }
        };
        out.reserve(HEADER_LEN + payload.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }
}

impl Default for LengthCodec {
    /// Payloads up to [`DEFAULT_MAX_FRAME`].
    fn default() -> LengthCodec {
        LengthCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for LengthCodec {
    fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        LengthCodec::decode(self, buf)
    }
}

/// Append `payload` to `out` as one length-prefixed frame. Only the format's
/// bound applies: a payload over `u32::MAX` bytes is
/// [`FrameError::FrameTooLarge`], and `out` is left unchanged. Use
/// [`LengthCodec::encode`] to enforce a smaller limit.
pub fn encode_length_prefixed(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    LengthCodec::new(FORMAT_MAX).encode(payload, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_large(declared: u64, limit: usize) -> FrameError {
        FrameError::FrameTooLarge { declared, limit }
    }

    #[test]
    fn exact_encoding() {
        let mut out = Vec::new();
        encode_length_prefixed(b"hello", &mut out).unwrap();
        assert_eq!(out, b"\0\0\0\x05hello");
        encode_length_prefixed(&[7; 0x0102], &mut out).unwrap();
        assert_eq!(&out[9..13], [0, 0, 1, 2]);
        assert_eq!(out.len(), 13 + 0x0102);
    }

    #[test]
    fn decodes_exact_frame_and_leaves_the_rest() {
        let codec = LengthCodec::default();
        let buf = b"\0\0\0\x05helloXYZ";
        assert_eq!(codec.decode(buf), Ok(Some((Frame::new(b"hello"), 9))));
    }

    #[test]
    fn incomplete_header_or_payload_needs_more() {
        let codec = LengthCodec::default();
        let buf = b"\0\0\0\x05hello";
        for n in 0..buf.len() {
            assert_eq!(codec.decode(&buf[..n]), Ok(None), "prefix of {n}");
        }
    }

    #[test]
    fn zero_length_frame() {
        let mut out = Vec::new();
        encode_length_prefixed(b"", &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0]);
        let codec = LengthCodec::new(0);
        assert_eq!(codec.decode(&out), Ok(Some((Frame::new(b""), 4))));
        assert_eq!(codec.decode(b"\0\0\0\x01x"), Err(too_large(1, 0)));
    }

    #[test]
    fn max_size_frame_accepted() {
        let max = 1000;
        let codec = LengthCodec::new(max);
        let mut out = Vec::new();
        codec.encode(&vec![0xAB; max], &mut out).unwrap();
        let (frame, used) = codec.decode(&out).unwrap().unwrap();
        assert_eq!((frame.len(), used), (max, max + HEADER_LEN));
    }

    #[test]
    fn over_max_refused_from_header_alone() {
        let codec = LengthCodec::default();
        let max = DEFAULT_MAX_FRAME;
        let header = u32::try_from(max + 1).unwrap().to_be_bytes();
        assert_eq!(codec.decode(&header), Err(too_large(max as u64 + 1, max)));
        assert_eq!(codec.decode(&header[..3]), Ok(None));
        let header = u32::MAX.to_be_bytes();
        assert_eq!(
            codec.decode(&header),
            Err(too_large(u64::from(u32::MAX), max))
        );
    }

    #[test]
    fn limit_is_capped_at_format_bound() {
        assert_eq!(LengthCodec::new(usize::MAX).max(), u32::MAX as usize);
        let codec = LengthCodec::new(usize::MAX);
        assert_eq!(codec.decode(&u32::MAX.to_be_bytes()), Ok(None));
    }

    #[test]
    fn encoder_refuses_over_limit_and_leaves_out_alone() {
        let codec = LengthCodec::new(3);
        let mut out = b"keep".to_vec();
        assert_eq!(codec.encode(b"abcd", &mut out), Err(too_large(4, 3)));
        assert_eq!(out, b"keep");
        codec.encode(b"abc", &mut out).unwrap();
        assert_eq!(out, b"keep\0\0\0\x03abc");
    }
}
