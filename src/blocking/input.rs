//! [`Input`]: the input buffer behind the buffered receive calls of
//! [`Stream`](super::Stream) and [`UdpConn`](crate::udp::UdpConn), written
//! once for both.
//!
//! It does no I/O itself. Each call that needs more input than is buffered
//! asks a *fill* function for more: a `Stream` reads its socket, a
//! `UdpConn` appends its peer's next datagram. The fill function gets the
//! call's [`Deadline`] and returns how many bytes it added, 0 meaning the
//! end of the stream. Everything else is here: the search for a delimiter
//! (one that straddles two reads included), the receive limit, the one
//! deadline per call, and the rule that a call which fails (time out, end
//! of stream, frame too long, not UTF-8) consumes nothing.

use std::io;

use super::{timed_out, Deadline};

/// The default receive limit ([`Stream::set_recv_limit`](super::Stream::set_recv_limit),
/// [`UdpConn::set_recv_limit`](crate::udp::UdpConn::set_recv_limit)): 64 KiB.
pub const DEFAULT_RECV_LIMIT: usize = 64 * 1024;

/// Buffered input: `buf[start..]` is received and not yet consumed.
#[derive(Debug)]
pub(crate) struct Input {
    buf: Vec<u8>,
    start: usize,
    /// The longest frame (delimiter included) a search accepts.
    limit: usize,
}

impl Default for Input {
    fn default() -> Input {
        Input {
            buf: Vec::new(),
            start: 0,
            limit: DEFAULT_RECV_LIMIT,
        }
    }
}

impl Input {
    /// The bytes received but not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Set the receive limit (at least 1).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// Consume the first `n` buffered bytes (`n <= buffered().len()`) and
    /// return them.
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buffered()[..n].to_vec();
        self.consume(n);
        out
    }

    /// Consume everything buffered and return it.
    pub(crate) fn take_all(&mut self) -> Vec<u8> {
        let out = if self.start == 0 {
            std::mem::take(&mut self.buf)
        } else {
            self.buffered().to_vec()
        };
        self.buf.clear();
        self.start = 0;
        out
    }

    /// Drop the first `n` buffered bytes (`n <= buffered().len()`).
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Put `bytes` back in front of what is buffered: the next read
    /// returns them first.
    pub(crate) fn unget(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // The consumed prefix is replaced by `bytes`, reusing its room.
        self.buf.splice(..self.start, bytes.iter().copied());
        self.start = 0;
    }

    /// Append `bytes` (a datagram) after what is buffered.
    pub(crate) fn append(&mut self, bytes: Vec<u8>) {
        if self.buffered().is_empty() {
            self.buf = bytes;
            self.start = 0;
        } else {
            self.compact();
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// Let `read` write up to `max` bytes after what is buffered; keeps as
    /// many as it reports.
    pub(crate) fn read_with(
        &mut self,
        max: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.compact();
        let old = self.buf.len();
        self.buf.resize(old + max, 0);
        let res = read(&mut self.buf[old..]);
        let got = res.as_ref().map_or(0, |&n| n.min(max));
        self.buf.truncate(old + got);
        res
    }

    /// Move the unconsumed bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// One more fill for a call, which times out without filling once its
    /// deadline has passed, unless this is its first fill (a zero timeout
    /// still makes one attempt). The end of the stream is an
    /// [`io::ErrorKind::UnexpectedEof`] error.
    fn more<F: Fill + ?Sized>(
        &mut self,
        deadline: &Deadline,
        first: &mut bool,
        what: &str,
        fill: &mut F,
    ) -> io::Result<()> {
        if !*first && deadline.expired() {
            return Err(timed_out(what));
        }
        *first = false;
        if fill(self, deadline, what)? == 0 {
            return Err(eof(self.buffered().len(), what));
        }
        Ok(())
    }

    /// Fill until at least `n` bytes are buffered.
    fn fill_to<F: Fill + ?Sized>(
        &mut self,
        n: usize,
        deadline: &Deadline,
        what: &str,
        fill: &mut F,
    ) -> io::Result<()> {
        let mut first = true;
        while self.buffered().len() < n {
            self.more(deadline, &mut first, what, fill)?;
        }
        Ok(())
    }

    /// Fill until `buffered()[at..]` starts with a frame ending in `delim`,
    /// and return the frame's length. The frame, delimiter included, must
    /// fit in the receive limit.
    fn frame<F: Fill + ?Sized>(
        &mut self,
        at: usize,
        delim: &[u8],
        deadline: &Deadline,
        what: &str,
        fill: &mut F,
    ) -> io::Result<usize> {
        if delim.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty delimiter",
            ));
        }
        let mut from = 0;
        let mut first = true;
        loop {
            let have = &self.buffered()[at..];
            if let Some(pos) = find(&have[from..], delim) {
                let len = from + pos + delim.len();
                return if len > self.limit {
                    Err(too_long(self.limit, what))
                } else {
                    Ok(len)
                };
            }
            if have.len() >= self.limit {
                return Err(too_long(self.limit, what));
            }
            // A delimiter may straddle the old end and the next fill.
            from = have.len().saturating_sub(delim.len() - 1);
            self.more(deadline, &mut first, what, fill)?;
        }
    }

    /// Up to `n` bytes: what is buffered if anything is, else what one fill
    /// brings. Empty at the end of the stream (or for `n == 0`).
    pub(crate) fn recv<F: Fill + ?Sized>(
        &mut self,
        n: usize,
        deadline: &Deadline,
        fill: &mut F,
    ) -> io::Result<Vec<u8>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.buffered().is_empty() {
            fill(self, deadline, "recv")?;
        }
        let n = n.min(self.buffered().len());
        Ok(self.take(n))
    }

    /// Exactly `n` bytes, consumed.
    pub(crate) fn recv_exact<F: Fill + ?Sized>(
        &mut self,
        n: usize,
        deadline: &Deadline,
        fill: &mut F,
    ) -> io::Result<Vec<u8>> {
        self.fill_to(n, deadline, "recv_exact", fill)?;
        Ok(self.take(n))
    }

    /// Exactly `n` bytes, left buffered.
    pub(crate) fn peek<F: Fill + ?Sized>(
        &mut self,
        n: usize,
        deadline: &Deadline,
        fill: &mut F,
    ) -> io::Result<Vec<u8>> {
        self.fill_to(n, deadline, "peek", fill)?;
        Ok(self.buffered()[..n].to_vec())
    }

    /// The bytes up to and including the first `delim`, consumed.
    pub(crate) fn recv_until<F: Fill + ?Sized>(
        &mut self,
        delim: &[u8],
        deadline: &Deadline,
        what: &str,
        fill: &mut F,
    ) -> io::Result<Vec<u8>> {
        let len = self.frame(0, delim, deadline, what, fill)?;
        Ok(self.take(len))
    }

    /// One line (see [`line`]), consumed.
    pub(crate) fn recv_line<F: Fill + ?Sized>(
        &mut self,
        deadline: &Deadline,
        fill: &mut F,
    ) -> io::Result<String> {
        let len = self.frame(0, b"\n", deadline, "recv_line", fill)?;
        let text = line(&self.buffered()[..len])?;
        self.consume(len);
        Ok(text)
    }

    /// The line that follows the first `prompt`: the prompt, what precedes
    /// it and the line are consumed together, or not at all. The prompt
    /// (with what precedes it) and the line are each bounded by the limit.
    pub(crate) fn recv_line_after<F: Fill + ?Sized>(
        &mut self,
        prompt: &[u8],
        deadline: &Deadline,
        fill: &mut F,
    ) -> io::Result<String> {
        const WHAT: &str = "recv_line_after";
        let at = self.frame(0, prompt, deadline, WHAT, fill)?;
        let len = self.frame(at, b"\n", deadline, WHAT, fill)?;
        let text = line(&self.buffered()[at..at + len])?;
        self.consume(at + len);
        Ok(text)
    }
}

/// Adds input to an [`Input`] for one call: waits at most until the
/// deadline, returns how many bytes it added (0: the end of the stream),
/// and reports running out of time as [`timed_out`]`(what)`.
pub(crate) trait Fill: FnMut(&mut Input, &Deadline, &str) -> io::Result<usize> {}

impl<F: FnMut(&mut Input, &Deadline, &str) -> io::Result<usize> + ?Sized> Fill for F {}

/// A frame ending in `\n` as text, without the `\n` and a `\r` before it;
/// not UTF-8 is an [`io::ErrorKind::InvalidData`] error.
fn line(frame: &[u8]) -> io::Result<String> {
    let text = frame.strip_suffix(b"\n").unwrap_or(frame);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    match std::str::from_utf8(text) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => memchr::memchr(*b, hay),
        _ => memchr::memmem::find(hay, needle),
    }
}

fn eof(have: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{what}: end of stream ({have} bytes left buffered)"),
    )
}

fn too_long(limit: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what}: no delimiter within the {limit}-byte receive limit"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    /// A fill that hands out `chunks` one at a time, then reports the end
    /// of the stream (or times out, if `then_timeout`).
    fn chunks(
        chunks: &[&[u8]],
        then_timeout: bool,
    ) -> impl FnMut(&mut Input, &Deadline, &str) -> io::Result<usize> {
        let mut left: VecDeque<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        move |input, _, what| match left.pop_front() {
            Some(c) => {
                let n = c.len();
                input.append(c);
                Ok(n)
            }
            None if then_timeout => Err(timed_out(what)),
            None => Ok(0),
        }
    }

    fn forever() -> Deadline {
        Deadline::after(None)
    }

    #[test]
    fn a_delimiter_split_over_fills_is_found() {
        let mut input = Input::default();
        let mut fill = chunks(&[b"a\r\n\r", b"\nb"], false);
        let got = input.recv_until(b"\r\n\r\n", &forever(), "t", &mut fill);
        assert_eq!(got.expect("frame"), b"a\r\n\r\n");
        assert_eq!(input.buffered(), b"b");
    }

    #[test]
    fn a_failed_call_consumes_nothing() {
        let mut input = Input::default();
        let mut fill = chunks(&[b"abc"], true);
        let e = input.recv_exact(5, &forever(), &mut fill).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(input.buffered(), b"abc");
        let e = input.recv_line(&forever(), &mut fill).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let mut eof = chunks(&[b"\xff\n"], false);
        let e = input.recv_line(&forever(), &mut eof).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(input.buffered(), b"abc\xff\n");
        let e = input.recv_exact(9, &forever(), &mut eof).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(input.buffered(), b"abc\xff\n");
    }

    #[test]
    fn recv_line_after_takes_all_or_nothing() {
        let mut input = Input::default();
        let mut fill = chunks(&[b"junk> ", b"4"], true);
        let e = input
            .recv_line_after(b"> ", &forever(), &mut fill)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(input.buffered(), b"junk> 4");
        let mut fill = chunks(&[b"2\r\nnext"], true);
        let got = input.recv_line_after(b"> ", &forever(), &mut fill);
        assert_eq!(got.expect("line"), "42");
        assert_eq!(input.buffered(), b"next");
    }

    #[test]
    fn the_limit_bounds_the_prompt_and_the_line_apart() {
        let mut input = Input::default();
        input.set_limit(4);
        let mut fill = chunks(&[b"ab> 123\n"], false);
        let got = input.recv_line_after(b"> ", &forever(), &mut fill);
        assert_eq!(got.expect("line"), "123");
        let mut fill = chunks(&[b"abcde\n"], false);
        let e = input.recv_line(&forever(), &mut fill).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(input.buffered(), b"abcde\n");
        input.set_limit(0);
        assert_eq!(input.limit(), 1);
    }

    #[test]
    fn unget_goes_in_front_and_peek_consumes_nothing() {
        let mut input = Input::default();
        let mut fill = chunks(&[b"hello world"], false);
        assert_eq!(
            input.recv_exact(6, &forever(), &mut fill).expect("6"),
            b"hello "
        );
        input.unget(b"o ");
        input.unget(b"hell");
        assert_eq!(input.buffered(), b"hello world");
        assert_eq!(
            input.peek(5, &forever(), &mut fill).expect("peek"),
            b"hello"
        );
        assert_eq!(input.take_all(), b"hello world");
        assert!(input.buffered().is_empty());
        input.unget(b"x");
        assert_eq!(input.take_all(), b"x");
    }

    #[test]
    fn after_the_first_fill_an_expired_deadline_times_out() {
        let mut input = Input::default();
        let mut fills = 0;
        let mut fill = |input: &mut Input, _: &Deadline, _: &str| {
            fills += 1;
            input.append(b"x".to_vec());
            Ok(1)
        };
        let passed = Deadline::after(Some(Duration::ZERO));
        let e = input.recv_exact(3, &passed, &mut fill).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(fills, 1);
        assert_eq!(input.buffered(), b"x");
    }
}
