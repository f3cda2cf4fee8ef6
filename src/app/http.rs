//! `http`: a minimal HTTP/1.1 responder, enough for `wrk` and similar load
//! generators to drive the engine.
//!
//! # What it does
//!
//! * Answers every complete request, whatever its method or target, with
//!   `200 OK` and the body `Hello, World!` (`Content-Length: 13`,
//!   `Content-Type: text/plain`). The responses are precomputed constants.
//! * Keeps HTTP/1.1 connections alive by default; HTTP/1.0 connections close
//!   unless the request says `Connection: keep-alive`. A `Connection` header
//!   whose token list contains `close` (any case) is honoured: the response
//!   carries `Connection: close`, the connection closes once it is sent and
//!   any bytes pipelined after that request are ignored.
//! * Answers pipelined requests in order, all in one [`Handler::on_data`]
//!   call; a request split across reads is left unconsumed until it is whole.
//! * Skips request bodies declared with `Content-Length` (up to 1 MiB) as
//!   they arrive, answering once the whole body is in. A body is never held
//!   back: the connection's state ([`HttpConn`]) counts what is left of it,
//!   so a connection sending a large body costs no more memory than one
//!   sending none.
//!
//! # What it does not do
//!
//! * No routing, no request data reaches the response, no `Date` or `Server`
//!   headers, no `Expect: 100-continue`, no upgrades, no HTTP/2.
//! * No `Transfer-Encoding` (chunked bodies): such a request gets
//!   `501 Not Implemented` and the connection closes.
//! * Malformed input is not tolerated: an unparsable request or
//!   `Content-Length` gets `400 Bad Request`, a header section over 8 KiB or
//!   with more than 64 headers gets `431 Request Header Fields Too Large`, a
//!   `Content-Length` over 1 MiB gets `413 Payload Too Large`; each of these
//!   closes the connection.
//! * No timeouts: an idle or slow client is kept as long as the engine keeps it.

use crate::handler::{Conn, Handler};

/// The answer to a request on a connection that stays open.
const OK_KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Length: 13\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hello, World!";

/// The answer to a request after which the connection closes.
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Length: 13\r\n\
Content-Type: text/plain\r\n\
Connection: close\r\n\
\r\n\
Hello, World!";

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Length: 12\r\n\
Content-Type: text/plain\r\n\
Connection: close\r\n\
\r\n\
Bad Request\n";

const PAYLOAD_TOO_LARGE: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\n\
Content-Length: 18\r\n\
Content-Type: text/plain\r\n\
Connection: close\r\n\
\r\n\
Payload Too Large\n";

const HEADERS_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Length: 32\r\n\
Content-Type: text/plain\r\n\
Connection: close\r\n\
\r\n\
Request Header Fields Too Large\n";

const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 Not Implemented\r\n\
Content-Length: 16\r\n\
Content-Type: text/plain\r\n\
Connection: close\r\n\
\r\n\
Not Implemented\n";

/// Largest accepted header section (request line and headers, with the
/// blank line that ends them), in bytes.
const MAX_HEAD: usize = 8 << 10;
/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;
/// Largest accepted `Content-Length`, in bytes.
const MAX_BODY: u64 = 1 << 20;

/// Answers every request with `200 OK` and `Hello, World!`. See the module
/// docs for what is and is not supported.
#[derive(Debug, Default, Clone, Copy)]
pub struct Http {
    // Stateless; the private field keeps the type open to future state
    // (and makes `Http::default()` the way to build it).
    _private: (),
}

/// What [`Http`] keeps per connection: the body of the current request
/// still to be skipped, and how to answer once it has been.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpConn {
    /// Body bytes of the current request not yet received.
    skip: u64,
    /// The connection closes after the answer to the current request.
    close: bool,
}

impl Handler for Http {
    type State = HttpConn;

    fn on_open(&mut self, _conn: &mut Conn<'_>) -> HttpConn {
        HttpConn::default()
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, state: &mut HttpConn, data: &[u8]) -> usize {
        let (consumed, close) = answer_all(data, state, |response| conn.send(response));
        if close {
            conn.close();
        }
        consumed
    }
}

/// Why a request is refused; each refusal closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// 400: httparse rejected the request, or its `Content-Length` is bad.
    BadRequest,
    /// 413: `Content-Length` over [`MAX_BODY`].
    PayloadTooLarge,
    /// 431: header section over [`MAX_HEAD`] or more than [`MAX_HEADERS`].
    HeadersTooLarge,
    /// 501: a `Transfer-Encoding` header.
    NotImplemented,
}

impl Reject {
    /// The status code, for tests and diagnostics.
    #[cfg(test)]
    fn code(self) -> u16 {
        match self {
            Reject::BadRequest => 400,
            Reject::PayloadTooLarge => 413,
            Reject::HeadersTooLarge => 431,
            Reject::NotImplemented => 501,
        }
    }

    /// The complete response, `Connection: close` included.
    fn response(self) -> &'static [u8] {
        match self {
            Reject::BadRequest => BAD_REQUEST,
            Reject::PayloadTooLarge => PAYLOAD_TOO_LARGE,
            Reject::HeadersTooLarge => HEADERS_TOO_LARGE,
            Reject::NotImplemented => NOT_IMPLEMENTED,
        }
    }
}

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    /// Not a whole request yet (header section or body still incomplete).
    Partial,
    /// A request whose header section (`head` bytes) is complete, with a
    /// body of `body` bytes after it (present or not); `close` says whether
    /// the connection closes after answering it.
    Request { head: usize, body: u64, close: bool },
    /// The request is refused; answer with the status and close.
    Reject(Reject),
}

/// Parse the request at the front of `buf`. Sans-IO: it only looks at bytes.
fn parse_one(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Parsed::Reject(Reject::HeadersTooLarge)
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            // The header section is not finished within MAX_HEAD bytes, so
            // it is longer than that.
            return Parsed::Reject(Reject::HeadersTooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(Reject::HeadersTooLarge),
        Err(_) => return Parsed::Reject(Reject::BadRequest),
    };

    // httparse only accepts HTTP/1.0 and HTTP/1.1.
    let http10 = req.version == Some(0);
    let mut saw_close = false;
    let mut saw_keep_alive = false;
    let mut content_length: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    saw_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    saw_keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Reject(Reject::NotImplemented);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return Parsed::Reject(Reject::BadRequest);
            };
            // Repeated Content-Length headers must agree (RFC 9112 §6.3).
            if content_length.is_some_and(|m| m != n) {
                return Parsed::Reject(Reject::BadRequest);
            }
            content_length = Some(n);
        }
    }

    let body = content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parsed::Reject(Reject::PayloadTooLarge);
    }
    let close = saw_close || (http10 && !saw_keep_alive);
    Parsed::Request {
        head: head_len,
        body,
        close,
    }
}

/// A `Content-Length` value: ASCII digits only (surrounding blanks allowed).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Only digits, so this is valid UTF-8; overflow gives None (a 400).
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Answer every whole request at the front of `data`, in order, passing each
/// response to `send`; a body still arriving is consumed as it comes and
/// counted down in `state`. Returns the bytes consumed and whether the
/// connection must close (after which the rest of `data` counts as
/// consumed: it is ignored).
fn answer_all(
    data: &[u8],
    state: &mut HttpConn,
    mut send: impl FnMut(&'static [u8]),
) -> (usize, bool) {
    let mut off = 0;
    loop {
        if state.skip > 0 {
            // The rest of a body: take what is here.
            let here = u64::try_from(data.len() - off).unwrap_or(u64::MAX);
            let take = state.skip.min(here);
            off += take as usize;
            state.skip -= take;
            if state.skip > 0 {
                return (off, false);
            }
            // The body is in: answer its request.
            if state.close {
                send(OK_CLOSE);
                return (data.len(), true);
            }
            send(OK_KEEP_ALIVE);
        }
        if off >= data.len() {
            return (off, false);
        }
        match parse_one(&data[off..]) {
            Parsed::Partial => return (off, false),
            Parsed::Request { head, body, close } => {
                // The answer goes out once the body is in (just above).
                off += head;
                *state = HttpConn { skip: body, close };
                if body == 0 {
                    if close {
                        send(OK_CLOSE);
                        return (data.len(), true);
                    }
                    send(OK_KEEP_ALIVE);
                }
            }
            Parsed::Reject(reject) => {
                send(reject.response());
                return (data.len(), true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    fn request(buf: &[u8]) -> (usize, bool) {
        match parse_one(buf) {
            Parsed::Request { head, body, close } if buf.len() >= head + body as usize => {
                (head + body as usize, close)
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn reject(buf: &[u8]) -> u16 {
        match parse_one(buf) {
            Parsed::Reject(r) => r.code(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// A stand-in for the engine: holds back unconsumed bytes, presents them
    /// again in front of the next chunk, and stops delivering once closed.
    #[derive(Default)]
    struct Fake {
        state: HttpConn,
        held: Vec<u8>,
        out: Vec<u8>,
        closed: bool,
        calls: usize,
    }

    impl Fake {
        fn feed(&mut self, chunk: &[u8]) {
            if self.closed {
                return;
            }
            self.held.extend_from_slice(chunk);
            self.calls += 1;
            let out = &mut self.out;
            let (n, close) = answer_all(&self.held, &mut self.state, |r| out.extend_from_slice(r));
            self.held.drain(..n.min(self.held.len()));
            self.closed = close;
        }
    }

    fn run(chunks: &[&[u8]]) -> Fake {
        let mut fake = Fake::default();
        for c in chunks {
            fake.feed(c);
        }
        fake
    }

    #[test]
    fn responses_declare_their_body_length() {
        for r in [
            OK_KEEP_ALIVE,
            OK_CLOSE,
            BAD_REQUEST,
            PAYLOAD_TOO_LARGE,
            HEADERS_TOO_LARGE,
            NOT_IMPLEMENTED,
        ] {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut resp = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = resp.parse(r) else {
                panic!("unparsable response {:?}", String::from_utf8_lossy(r));
            };
            let cl = resp
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .and_then(|h| parse_content_length(h.value))
                .expect("Content-Length");
            assert_eq!(
                usize::try_from(cl).expect("small"),
                r.len() - head,
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
    }

    #[test]
    fn get_keeps_alive() {
        assert_eq!(request(GET), (GET.len(), false));
        let f = run(&[GET]);
        assert_eq!(f.out, OK_KEEP_ALIVE);
        assert!(!f.closed);
        assert!(f.held.is_empty());
    }

    #[test]
    fn http10_closes_by_default() {
        let r = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(request(r), (r.len(), true));
        let r = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(request(r), (r.len(), false));
    }

    #[test]
    fn connection_close_is_honoured() {
        let r = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert_eq!(request(r), (r.len(), true));
        let r = b"GET / HTTP/1.1\r\nconnection: CLOSE\r\n\r\n";
        assert_eq!(request(r), (r.len(), true));
        // Later pipelined bytes are ignored once the connection closes.
        let mut stream = r.to_vec();
        stream.extend_from_slice(GET);
        let f = run(&[&stream]);
        assert_eq!(f.out, OK_CLOSE);
        assert!(f.closed);
    }

    #[test]
    fn connection_token_list_with_close() {
        let r = b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n";
        assert_eq!(request(r), (r.len(), true));
        let r = b"GET / HTTP/1.0\r\nConnection: Upgrade,Keep-Alive\r\n\r\n";
        assert_eq!(request(r), (r.len(), false));
        let r = b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n";
        assert_eq!(request(r), (r.len(), false), "only the whole token counts");
    }

    #[test]
    fn three_pipelined_requests_are_answered_in_one_call() {
        let last = b"GET /3 HTTP/1.1\r\nConnection: close\r\n\r\n";
        let stream = [GET, GET, &last[..]].concat();
        let f = run(&[&stream]);
        assert_eq!(f.calls, 1);
        assert_eq!(f.out, [OK_KEEP_ALIVE, OK_KEEP_ALIVE, OK_CLOSE].concat());
        assert!(f.closed);

        let stream = [GET, GET, GET].concat();
        let mut out = Vec::new();
        let (n, close) = answer_all(&stream, &mut HttpConn::default(), |r| {
            out.extend_from_slice(r)
        });
        assert_eq!((n, close), (stream.len(), false));
        assert_eq!(out, OK_KEEP_ALIVE.repeat(3));
    }

    #[test]
    fn split_at_every_boundary_gives_the_same_responses() {
        let second = b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let stream = [GET, &second[..]].concat();
        let whole = run(&[&stream]);
        assert_eq!(whole.out, OK_KEEP_ALIVE.repeat(2));
        assert!(whole.held.is_empty());
        for i in 0..=stream.len() {
            let f = run(&[&stream[..i], &stream[i..]]);
            assert_eq!(f.out, whole.out, "split at {i}");
            assert!(f.held.is_empty(), "split at {i}");
            assert!(!f.closed);
        }
        for j in 1..stream.len() {
            for i in 0..j {
                let f = run(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(f.out, whole.out, "split at {i} and {j}");
                assert!(f.held.is_empty(), "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let f = run(&bytes);
        assert_eq!(f.out, whole.out, "byte by byte");
    }

    #[test]
    fn content_length_body_is_skipped() {
        let r = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(request(r), (r.len(), false));
        let stream = [&r[..], GET].concat();
        let f = run(&[&stream]);
        assert_eq!(f.out, OK_KEEP_ALIVE.repeat(2));
        assert!(f.held.is_empty());
        let r = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(request(r), (r.len(), false));
    }

    #[test]
    fn a_partial_body_is_consumed_as_it_comes_and_answered_once_in() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
        let mut r = head.to_vec();
        r.extend_from_slice(b"abc");
        assert!(matches!(
            parse_one(&r),
            Parsed::Request { head: h, body: 10, close: false } if h == head.len()
        ));
        let mut f = run(&[GET, &r]);
        assert_eq!(f.out, OK_KEEP_ALIVE, "only the first request is answered");
        assert!(f.held.is_empty(), "the body so far is consumed, not held");
        assert_eq!(f.state.skip, 7);
        f.feed(b"defg");
        assert_eq!(f.out, OK_KEEP_ALIVE, "3 body bytes still to come");
        f.feed(b"hij");
        f.feed(GET);
        assert_eq!(
            f.out,
            OK_KEEP_ALIVE.repeat(3),
            "answered once the body is in"
        );
        assert!(f.held.is_empty());
        assert_eq!(parse_one(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse_one(b""), Parsed::Partial);
    }

    #[test]
    fn a_body_split_anywhere_gives_the_same_answers() {
        let one = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n";
        for cut in 0..one.len() {
            let f = run(&[&one[..cut], &one[cut..]]);
            let mut want = OK_KEEP_ALIVE.to_vec();
            want.extend_from_slice(OK_CLOSE);
            assert_eq!(f.out, want, "cut at {cut}");
            assert!(f.closed, "cut at {cut}");
        }
    }

    #[test]
    fn chunked_is_not_implemented() {
        let r = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(reject(r), 501);
        let f = run(&[r]);
        assert_eq!(f.out, NOT_IMPLEMENTED);
        assert!(f.closed);
    }

    #[test]
    fn garbage_is_a_bad_request() {
        assert_eq!(reject(b"\x00\x01\x02 garbage\r\n\r\n"), 400);
        assert_eq!(reject(b"GET / HTTP/9.9\r\n\r\n"), 400);
        assert_eq!(reject(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), 400);
        let f = run(&[GET, b"\x7fnope\r\n\r\n", GET]);
        assert_eq!(f.out, [OK_KEEP_ALIVE, BAD_REQUEST].concat());
        assert!(f.closed);
    }

    #[test]
    fn bad_content_length_is_a_bad_request() {
        for cl in ["abc", "-1", "1 2", "+5", "", "99999999999999999999999"] {
            let r = format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(reject(r.as_bytes()), 400, "{cl:?}");
        }
        let r = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(reject(r), 400);
        let r = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(request(r), (r.len(), false));
    }

    #[test]
    fn endless_headers_are_too_large() {
        let mut r = b"GET / HTTP/1.1\r\n".to_vec();
        while r.len() < 9 << 10 {
            r.extend_from_slice(format!("X-Pad: {}\r\n", "a".repeat(500)).as_bytes());
        }
        assert_eq!(reject(&r), 431);
        let f = run(&[&r]);
        assert_eq!(f.out, HEADERS_TOO_LARGE);
        assert!(f.closed);
        // Complete but over the limit is refused too.
        r.extend_from_slice(b"\r\n");
        assert_eq!(reject(&r), 431);
    }

    #[test]
    fn too_many_headers_are_too_large() {
        let mut r = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        assert_eq!(reject(&r), 431);
        let mut r = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        assert_eq!(request(&r), (r.len(), false), "exactly 64 is fine");
    }

    #[test]
    fn huge_content_length_is_too_large() {
        let r = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 2 << 20);
        assert_eq!(reject(r.as_bytes()), 413);
        let f = run(&[r.as_bytes()]);
        assert_eq!(f.out, PAYLOAD_TOO_LARGE);
        assert!(f.closed);
        let r = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 1 << 20);
        assert!(
            matches!(parse_one(r.as_bytes()), Parsed::Request { body, .. } if body == 1 << 20),
            "1 MiB is allowed"
        );
    }
}
