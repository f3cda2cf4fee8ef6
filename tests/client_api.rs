//! The buffered client calls on both transports: `peek`, `unget`,
//! `recv_line_after`, `send_line_after` on a TCP `Stream`, and the whole
//! buffered API (`recv_exact`, `recv_until`, `recv_line`, `send_line`,
//! `send_after` and the four above) on an accepted UDP peer, whose byte
//! stream is its datagrams one after the other, the first one included.
//!
//! Each test runs under an overall time limit, so a bug fails the test
//! instead of hanging it. Where a test needs bytes to have arrived before
//! it checks a timeout, it waits for them with a call that must succeed
//! (`peek`), never with a sleep.

use std::io;
use std::net::UdpSocket;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use ringnet::blocking::{Server, Stream, DEFAULT_RECV_LIMIT};
use ringnet::udp::{UdpConn, UdpOptions, UdpServer};
use ringnet::ListenOptions;

mod util;

const T: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(100));

fn kind<R: std::fmt::Debug>(r: io::Result<R>) -> io::ErrorKind {
    r.expect_err("expected an error").kind()
}

/// A connected TCP pair on loopback: (client, server side).
fn tcp_pair() -> (Stream, Stream) {
    let server = Server::bind("127.0.0.1:0", ListenOptions::default()).expect("bind");
    let client = Stream::connect(server.local_addr(), T).expect("connect");
    let conn = server.accept(T).expect("accept");
    (client, conn)
}

fn udp_server() -> UdpServer {
    let addr = "127.0.0.1:0".parse().expect("addr");
    UdpServer::bind(addr, UdpOptions::default()).expect("bind")
}

/// A client socket connected to `server` that has sent `first`, and the
/// connection `accept` made for it. Later datagrams from the client reach
/// the connection's own socket, in order.
fn udp_peer(server: &UdpServer, first: &[u8]) -> (UdpSocket, UdpConn) {
    let client = UdpSocket::bind("127.0.0.1:0").expect("client bind");
    client.connect(server.local_addr()).expect("connect");
    client.set_read_timeout(T).expect("timeout");
    client.send(first).expect("send first");
    let conn = server.accept(T).expect("accept");
    assert_eq!(conn.peer_addr(), client.local_addr().expect("addr"));
    (client, conn)
}

/// The next datagram the client receives.
fn datagram(client: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = client.recv(&mut buf).expect("a datagram from the server");
    buf[..n].to_vec()
}

/// Run `call` on `conn` in a new thread, and return once that thread is
/// blocked waiting for a datagram inside it, with a receiver for its result.
fn blocked<R: Send + 'static>(
    conn: &Arc<UdpConn>,
    call: impl FnOnce(&UdpConn) -> io::Result<R> + Send + 'static,
) -> (mpsc::Receiver<io::Result<R>>, thread::JoinHandle<()>) {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let conn = Arc::clone(conn);
    let handle = thread::spawn(move || {
        tid_tx.send(util::thread_id()).expect("send tid");
        let _ = tx.send(call(&conn));
    });
    let tid = tid_rx.recv_timeout(Duration::from_secs(10)).expect("tid");
    util::wait_until(
        Duration::from_secs(10),
        "the receiving thread to wait for a datagram",
        || util::asleep_in(tid, Some(libc::SYS_recvfrom)),
    );
    (rx, handle)
}

// ---------------------------------------------------------------- TCP

#[test]
fn tcp_peek_waits_for_n_bytes_and_consumes_nothing() {
    util::within(20, || {
        let (mut client, mut conn) = tcp_pair();
        client.send(b"hel", T).expect("send");
        assert_eq!(conn.peek(3, T).expect("peek"), b"hel");
        // Three bytes buffered, five asked: a timeout that keeps them.
        assert_eq!(kind(conn.peek(5, SHORT)), io::ErrorKind::TimedOut);
        assert_eq!(conn.buffered(), b"hel");
        client.send(b"lo world\n", T).expect("send");
        assert_eq!(conn.peek(5, T).expect("peek"), b"hello");
        assert_eq!(conn.peek(2, T).expect("peek again"), b"he");
        assert_eq!(conn.recv_line(T).expect("line"), "hello world");
        assert_eq!(conn.peek(0, T).expect("peek nothing"), b"");
    });
}

#[test]
fn tcp_unget_puts_bytes_back_in_front() {
    util::within(20, || {
        let (mut client, mut conn) = tcp_pair();
        // Before anything arrived: the ungot bytes are all there is.
        conn.unget(b"early ");
        assert_eq!(conn.recv(100, T).expect("recv"), b"early ");
        client.send(b"HEAD /x\nbody", T).expect("send");
        let head = conn.recv_exact(5, T).expect("method");
        assert_eq!(head, b"HEAD ");
        // Read too far: put it back, in two pieces, last piece first.
        conn.unget(b"AD ");
        conn.unget(b"HE");
        assert_eq!(conn.recv_line(T).expect("line"), "HEAD /x");
        conn.unget(b"the ");
        assert_eq!(conn.recv_exact(8, T).expect("exact"), b"the body");
        assert!(conn.buffered().is_empty());
    });
}

#[test]
fn tcp_recv_line_after_skips_to_the_prompt_and_keeps_everything_on_timeout() {
    util::within(20, || {
        let (mut client, mut conn) = tcp_pair();
        client.send(b"banner\nlogin: ", T).expect("send");
        assert_eq!(conn.peek(14, T).expect("all arrived").len(), 14);
        // The prompt is there, the line after it is not: nothing consumed.
        assert_eq!(
            kind(conn.recv_line_after(b"login: ", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(conn.buffered(), b"banner\nlogin: ");
        client.send(b"ali", T).expect("send");
        assert_eq!(conn.peek(17, T).expect("arrived").len(), 17);
        assert_eq!(
            kind(conn.recv_line_after(b"login: ", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(conn.buffered(), b"banner\nlogin: ali");
        client.send(b"ce\r\nnext\n", T).expect("send");
        assert_eq!(conn.recv_line_after(b"login: ", T).expect("line"), "alice");
        assert_eq!(conn.recv_line(T).expect("rest"), "next");
        // A prompt that never comes: a timeout, and the bytes stay.
        client.send(b"no prompt here\n", T).expect("send");
        assert_eq!(conn.peek(15, T).expect("arrived").len(), 15);
        assert_eq!(
            kind(conn.recv_line_after(b"$ ", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(conn.recv_line(T).expect("kept"), "no prompt here");
        assert_eq!(
            kind(conn.recv_line_after(b"", T)),
            io::ErrorKind::InvalidInput
        );
    });
}

#[test]
fn tcp_send_line_after_sends_nothing_until_the_prompt() {
    util::within(20, || {
        let (mut client, mut conn) = tcp_pair();
        conn.send(b"Passw", T).expect("send");
        assert_eq!(client.peek(5, T).expect("arrived"), b"Passw");
        assert_eq!(
            kind(client.send_line_after(b"word: ", "secret", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(client.buffered(), b"Passw");
        conn.send(b"ord: ", T).expect("send");
        let got = client
            .send_line_after(b"word: ", "secret", T)
            .expect("send_line_after");
        assert_eq!(got, b"Password: ");
        // The first bytes the server gets are the answer: the timed-out
        // call sent nothing.
        assert_eq!(conn.recv_exact(7, T).expect("answer"), b"secret\n");
        assert_eq!(kind(conn.recv(1, SHORT)), io::ErrorKind::TimedOut);
    });
}

#[test]
fn tcp_frames_over_the_limit_are_refused_by_the_new_calls() {
    util::within(20, || {
        let (mut client, mut conn) = tcp_pair();
        assert_eq!(conn.recv_limit(), DEFAULT_RECV_LIMIT);
        conn.set_recv_limit(8);
        client.send(b"0123456789> ok\n", T).expect("send");
        assert_eq!(conn.peek(15, T).expect("arrived").len(), 15);
        // The prompt ends past the limit.
        assert_eq!(
            kind(conn.recv_line_after(b"> ", T)),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(conn.send_line_after(b"> ", "answer", T)),
            io::ErrorKind::InvalidData
        );
        assert_eq!(conn.buffered(), b"0123456789> ok\n");
        // Within the limit, prompt and line are bounded apart.
        conn.set_recv_limit(12);
        assert_eq!(conn.recv_line_after(b"> ", T).expect("line"), "ok");
        // The line after the prompt over the limit.
        conn.set_recv_limit(4);
        client.send(b"> 0123456789\n", T).expect("send");
        assert_eq!(conn.peek(13, T).expect("arrived").len(), 13);
        assert_eq!(
            kind(conn.recv_line_after(b"> ", T)),
            io::ErrorKind::InvalidData
        );
        assert_eq!(conn.buffered(), b"> 0123456789\n");
        // Nothing was sent by the refused send_line_after.
        assert_eq!(kind(client.recv(1, SHORT)), io::ErrorKind::TimedOut);
    });
}

#[test]
fn tcp_end_of_stream_mid_frame_keeps_the_bytes() {
    util::within(20, || {
        let (mut client, mut conn) = tcp_pair();
        client.send(b"user> bo", T).expect("send");
        client.shutdown_write().expect("shutdown");
        assert_eq!(kind(conn.peek(20, T)), io::ErrorKind::UnexpectedEof);
        assert_eq!(conn.buffered(), b"user> bo");
        assert_eq!(
            kind(conn.recv_line_after(b"user> ", T)),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            kind(conn.send_line_after(b"pass> ", "x", T)),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(conn.buffered(), b"user> bo");
        assert_eq!(conn.recv_exact(8, T).expect("all of it"), b"user> bo");
        assert!(conn.recv(1, T).expect("end of stream").is_empty());
        // Nothing was sent by the send_line_after that met the end.
        conn.shutdown_write().expect("shutdown");
        assert!(client.recv(1, T).expect("end of stream").is_empty());
    });
}

// ---------------------------------------------------------------- UDP

#[test]
fn udp_first_datagram_is_buffered_for_recv_line() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"HELO a\nQUIT\nwor");
        assert_eq!(conn.recv_line(T).expect("line"), "HELO a");
        assert_eq!(conn.recv_line(T).expect("line"), "QUIT");
        // A line spanning two datagrams.
        client.send(b"ld\r\n").expect("send");
        assert_eq!(conn.recv_line(T).expect("line"), "world");
        conn.send_line("250 ok").expect("send_line");
        assert_eq!(datagram(&client), b"250 ok\n");
    });
}

#[test]
fn udp_recv_exact_spans_datagrams_and_recv_returns_the_rest_first() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"abc");
        for d in [&b"de"[..], b"", b"fgh", b"ijk"] {
            client.send(d).expect("send");
        }
        // Four datagrams, one of them empty (it adds nothing).
        assert_eq!(conn.recv_exact(9, T).expect("exact"), b"abcdefghi");
        // The rest of the last datagram read comes before the next one.
        assert_eq!(conn.recv(T).expect("rest"), b"jk");
        client.send(b"whole").expect("send");
        assert_eq!(conn.recv(T).expect("next datagram"), b"whole");
        client.send(b"x:1").expect("send");
        client.send(b"x:2").expect("send");
        assert_eq!(conn.recv_until(b":", T).expect("until"), b"x:");
        assert_eq!(conn.recv(T).expect("rest"), b"1");
        assert_eq!(conn.recv(T).expect("datagram"), b"x:2");
    });
}

#[test]
fn udp_timeout_keeps_the_bytes() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"0123");
        assert_eq!(kind(conn.recv_exact(10, SHORT)), io::ErrorKind::TimedOut);
        assert_eq!(kind(conn.recv_line(SHORT)), io::ErrorKind::TimedOut);
        assert_eq!(
            kind(conn.recv_until(b"\r\n\r\n", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(kind(conn.peek(5, SHORT)), io::ErrorKind::TimedOut);
        client.send(b"4567").expect("send");
        assert_eq!(conn.peek(8, T).expect("peek"), b"01234567");
        assert_eq!(kind(conn.recv_exact(10, SHORT)), io::ErrorKind::TimedOut);
        client.send(b"89\n").expect("send");
        assert_eq!(conn.recv_exact(10, T).expect("exact"), b"0123456789");
        assert_eq!(conn.recv_line(T).expect("line"), "");
        // Nothing buffered, nothing coming: recv times out as before.
        assert_eq!(kind(conn.recv(SHORT)), io::ErrorKind::TimedOut);
    });
}

#[test]
fn udp_peek_does_not_consume_and_unget_comes_back_first() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"GET /a\n");
        assert_eq!(conn.peek(4, T).expect("peek"), b"GET ");
        assert_eq!(conn.peek(4, T).expect("peek again"), b"GET ");
        assert_eq!(conn.recv_exact(4, T).expect("method"), b"GET ");
        conn.unget(b"GET ");
        assert_eq!(conn.recv_line(T).expect("line"), "GET /a");
        // Put back with nothing buffered: `recv` returns those bytes, not
        // the next datagram.
        client.send(b"next").expect("send");
        conn.unget(b"back");
        assert_eq!(conn.recv(T).expect("ungot"), b"back");
        assert_eq!(conn.recv(T).expect("datagram"), b"next");
        // Put back in front of buffered bytes.
        client.send(b"tail\n").expect("send");
        assert_eq!(conn.peek(2, T).expect("peek"), b"ta");
        conn.unget(b"de");
        assert_eq!(conn.recv_line(T).expect("line"), "detail");
    });
}

#[test]
fn udp_recv_line_after_and_send_after() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"motd\nresult: 4");
        client.send(b"2\nlogin: ").expect("send");
        assert_eq!(conn.recv_line_after(b"result: ", T).expect("line"), "42");
        let got = conn.send_line_after(b": ", "alice", T).expect("login");
        assert_eq!(got, b"login: ");
        assert_eq!(datagram(&client), b"alice\n");
        client.send(b"OK> ").expect("send");
        let got = conn.send_after(b"> ", b"raw bytes", T).expect("send_after");
        assert_eq!(got, b"OK> ");
        assert_eq!(datagram(&client), b"raw bytes");
    });
}

#[test]
fn udp_a_prompt_that_never_comes_times_out_and_loses_nothing() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"banner\nPassw");
        assert_eq!(
            kind(conn.send_line_after(b"word: ", "secret", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            kind(conn.send_after(b"word: ", b"secret\n", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            kind(conn.recv_line_after(b"word: ", SHORT)),
            io::ErrorKind::TimedOut
        );
        assert_eq!(conn.recv_line(T).expect("kept"), "banner");
        client.send(b"ord: ").expect("send");
        let got = conn
            .send_line_after(b"word: ", "secret", T)
            .expect("send_line_after");
        assert_eq!(got, b"Password: ");
        // The first datagram the client gets is the answer: the calls that
        // timed out sent nothing.
        assert_eq!(datagram(&client), b"secret\n");
    });
}

#[test]
fn udp_a_line_over_the_limit_is_refused() {
    util::within(20, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, &[b'x'; 40]);
        assert_eq!(conn.recv_limit(), DEFAULT_RECV_LIMIT);
        conn.set_recv_limit(16);
        assert_eq!(conn.recv_limit(), 16);
        assert_eq!(kind(conn.recv_line(T)), io::ErrorKind::InvalidData);
        assert_eq!(
            kind(conn.recv_line_after(b"> ", T)),
            io::ErrorKind::InvalidData
        );
        assert_eq!(kind(conn.recv_until(b"", T)), io::ErrorKind::InvalidInput);
        // The refused bytes are still there, whole.
        assert_eq!(conn.recv(T).expect("kept"), vec![b'x'; 40]);
        // A prompt within the limit, the line after it over it.
        client.send(b"> 0123456789abcdefghij\n").expect("send");
        assert_eq!(
            kind(conn.recv_line_after(b"> ", T)),
            io::ErrorKind::InvalidData
        );
        conn.set_recv_limit(64);
        assert_eq!(
            conn.recv_line_after(b"> ", T).expect("line"),
            "0123456789abcdefghij"
        );
        // Not UTF-8: refused, and kept for recv_until.
        client.send(b"\xff\n").expect("send");
        assert_eq!(kind(conn.recv_line(T)), io::ErrorKind::InvalidData);
        assert_eq!(conn.recv_until(b"\n", T).expect("raw"), b"\xff\n");
    });
}

/// While one peer's connection waits in `recv_line` for the rest of a
/// line, other peers are accepted and served, and the waiting call still
/// returns its own peer's line.
#[test]
fn udp_other_peers_are_served_while_one_blocks() {
    util::within(30, || {
        let server = udp_server();
        let (a_client, a_conn) = udp_peer(&server, b"half a ");
        let a_conn = Arc::new(a_conn);
        let (a_line, a_thread) = blocked(&a_conn, |c| c.recv_line(None));
        for i in 0..3 {
            let (b_client, b_conn) = udp_peer(&server, format!("ping {i}\n").as_bytes());
            let line = b_conn.recv_line(T).expect("other peer's line");
            assert_eq!(line, format!("ping {i}"));
            b_conn
                .send_line(line.replace("ping", "pong"))
                .expect("send");
            assert_eq!(datagram(&b_client), format!("pong {i}\n").as_bytes());
        }
        assert!(
            matches!(a_line.try_recv(), Err(mpsc::TryRecvError::Empty)),
            "the first peer's call returned without its line"
        );
        a_client.send(b"line\n").expect("send");
        let got = a_line
            .recv_timeout(Duration::from_secs(10))
            .expect("result");
        assert_eq!(got.expect("line"), "half a line");
        a_thread.join().expect("receiving thread");
        assert_eq!(server.stats().accepted, 4);
    });
}

/// While one thread waits in a receiving call: another thread sends on the
/// same connection at once, a second receiving call times out on its own
/// deadline (it waits its turn, not for ever), and `unget` does not wait:
/// its bytes come after what the first call takes.
#[test]
fn udp_a_blocked_receive_holds_up_no_send_and_no_other_deadline() {
    util::within(30, || {
        let server = udp_server();
        let (client, conn) = udp_peer(&server, b"who");
        let conn = Arc::new(conn);
        let (first, first_thread) = blocked(&conn, |c| c.recv_exact(6, None));
        conn.send_line("sent while receiving").expect("send");
        assert_eq!(datagram(&client), b"sent while receiving\n");
        let start = Instant::now();
        assert_eq!(kind(conn.recv(SHORT)), io::ErrorKind::TimedOut);
        assert_eq!(kind(conn.recv_line(SHORT)), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the second call waited {:?}",
            start.elapsed()
        );
        conn.unget(b"ungot ");
        client.send(b" is it?").expect("send");
        let got = first.recv_timeout(Duration::from_secs(10)).expect("result");
        assert_eq!(got.expect("exact"), b"who is");
        first_thread.join().expect("receiving thread");
        assert_eq!(conn.recv(T).expect("ungot first"), b"ungot  it?");
    });
}
