//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringnet::message::{MessageHandler, MsgConn};
use ringnet::{Backend, CloseReason, Config, Conn, Engine, Handler, Stats};

/// One test per backend for each scenario `fn name(backend: Backend)`
/// named: `uring::name` and `epoll::name` (with `#[macro_use] mod util;`).
#[allow(unused_macros)]
macro_rules! both {
    ($($name:ident),*) => {
        mod uring {
            $(#[test] fn $name() { super::$name(ringnet::Backend::Uring) })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name(ringnet::Backend::Epoll) })*
        }
    };
}

/// Echoes every byte (the tests' own, so they need no demo handlers).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_open(&mut self, _conn: &mut Conn<'_>) {}

    fn on_data(&mut self, conn: &mut Conn<'_>, _: &mut (), data: &[u8]) -> usize {
        conn.send(data);
        data.len()
    }
}

/// Echoes every whole message in the connection's framing.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageEcho;

impl MessageHandler for MessageEcho {
    type State = ();

    fn on_open(&mut self, _conn: &mut MsgConn<'_, '_>) {}

    fn on_message(&mut self, conn: &mut MsgConn<'_, '_>, _: &mut (), msg: &[u8]) {
        if let Err(e) = conn.send_msg(msg) {
            conn.conn().close_with(CloseReason::BadFrame(e.to_string()));
        }
    }
}

/// A config for tests: loopback, port 0, one worker, the given backend.
pub fn config(backend: Backend) -> Config {
    Config {
        listeners: vec![ringnet::listener::ListenerSpec::bind(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"),
        )],
        workers: 1,
        backend: backend.into(),
        ..Config::default()
    }
}

/// Start an echo engine and check it runs on the backend asked for.
pub fn echo_engine(cfg: Config) -> Engine {
    let asked = cfg.backend;
    let engine = Engine::start(cfg, |_| Echo).expect("engine starts");
    assert_eq!(
        ringnet::BackendChoice::from(engine.backend()),
        asked,
        "engine runs on the backend asked for"
    );
    engine
}

/// Connect with read/write timeouts so a broken server fails the test
/// instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be
/// replayed from its seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A small deterministic number in `0..n`.
pub fn rand_below(seed: u64, n: u64) -> u64 {
    let b = pattern(seed ^ 0xabcdef, 8);
    u64::from_le_bytes(b.try_into().expect("8 bytes")) % n
}

/// Send `payload` from one thread while reading the echo on this one, then
/// half-close and check that exactly the payload comes back followed by end
/// of stream.
pub fn echo_roundtrip(addr: SocketAddr, payload: Vec<u8>) {
    let s = connect(addr);
    let mut w = s.try_clone().expect("clone");
    let len = payload.len();
    let writer = std::thread::spawn(move || {
        for chunk in payload.chunks(64 * 1024) {
            w.write_all(chunk).expect("write");
        }
        w.shutdown(std::net::Shutdown::Write)
            .expect("shutdown write");
        payload
    });
    let mut got = Vec::with_capacity(len);
    let mut r = s;
    r.read_to_end(&mut got).expect("read echo");
    let payload = writer.join().expect("writer");
    assert_eq!(got.len(), payload.len(), "echoed length");
    if got != payload {
        let at = got
            .iter()
            .zip(&payload)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!("echo differs at byte {at} of {len}");
    }
}

/// Poll `f` every few milliseconds until it holds, or panic after `limit`
/// saying what was awaited. For conditions that come true by themselves
/// (soon, on an idle machine): the limit is generous and only there so a
/// broken feature fails the test instead of hanging it.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() <= limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until `f(stats)` holds, or panic after `limit` with the last stats.
pub fn wait_stats(
    engine: &Engine,
    limit: Duration,
    what: &str,
    f: impl Fn(&Stats) -> bool,
) -> Stats {
    let start = Instant::now();
    loop {
        let s = engine.stats();
        if f(&s) {
            return s;
        }
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until every connection the engine accepted has been closed and
/// every buffer and per-connection ring given back.
pub fn wait_baseline(engine: &Engine) -> Stats {
    wait_stats(
        engine,
        Duration::from_secs(10),
        "connections and buffers back to baseline",
        |s| {
            s.open == 0
                && s.closed == s.accepted + s.connected
                && s.buffers_in_use == 0
                && s.groups_in_use == 0
        },
    )
}

/// Send `msg` and read exactly its echo.
pub fn ping(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut buf = vec![0; msg.len()];
    s.read_exact(&mut buf).expect("read echo");
    assert_eq!(buf, msg);
}

/// A port on 127.0.0.1 that refuses connections for as long as the
/// returned socket lives: it is bound there but does not listen, so nothing
/// else can listen on the port meanwhile.
pub fn refused_addr() -> (socket2::Socket, SocketAddr) {
    let holder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    holder
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    let addr = holder
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    (holder, addr)
}

/// Run `f` on a thread and fail if it has not finished within `secs` (so a
/// bug that blocks fails the test instead of hanging it).
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sent nothing but did not panic"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("test still running after {secs}s")
        }
    }
}

/// The kernel id of the calling thread, from `/proc/thread-self`.
pub fn thread_id() -> u64 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .expect("tid")
        .to_string_lossy()
        .parse()
        .expect("numeric tid")
}

/// Whether thread `tid` of this process is asleep, in system call
/// `syscall` when given (where the kernel does not say which system call a
/// thread is in, asleep at all counts). Panics if the thread has ended.
pub fn asleep_in(tid: u64, syscall: Option<libc::c_long>) -> bool {
    let task = format!("/proc/self/task/{tid}");
    let stat = std::fs::read_to_string(format!("{task}/stat"))
        .unwrap_or_else(|e| panic!("thread {tid} still running: {e}"));
    // "tid (comm) S ...": the state follows the last parenthesis.
    let state = stat[stat.rfind(')').expect("comm") + 1..].trim_start();
    if !state.starts_with('S') {
        return false;
    }
    let Some(want) = syscall else {
        return true;
    };
    match std::fs::read_to_string(format!("{task}/syscall")) {
        Ok(now) => now.split_whitespace().next() == Some(want.to_string().as_str()),
        Err(_) => true,
    }
}

/// One IPv4 TCP socket of this network namespace, as `/proc/net/tcp`
/// lists it.
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// For a listening socket: connections waiting in its accept queue.
    pub rx_queue: u32,
    /// The socket's inode (what `/proc/self/fd/N` names as `socket:[N]`).
    pub inode: String,
}

/// `st` in `/proc/net/tcp` (the kernel's TCP_* states).
pub const TCP_SYN_SENT: u8 = 0x02;
pub const TCP_LISTEN: u8 = 0x0a;

pub fn tcp4_sockets() -> Vec<TcpEntry> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (_, rx_queue) = f[4].split_once(':').expect("tx_queue:rx_queue");
            TcpEntry {
                local: proc_net_addr(f[1]),
                remote: proc_net_addr(f[2]),
                state: u8::from_str_radix(f[3], 16).expect("state"),
                rx_queue: u32::from_str_radix(rx_queue, 16).expect("rx_queue"),
                inode: f[9].to_string(),
            }
        })
        .collect()
}

/// `0100007F:1F90`: the address as the kernel prints its 32-bit value
/// (network order bytes read as a host number), then the port.
fn proc_net_addr(field: &str) -> SocketAddr {
    let (ip, port) = field.split_once(':').expect("address:port");
    let ip = u32::from_str_radix(ip, 16).expect("address");
    let port = u16::from_str_radix(port, 16).expect("port");
    SocketAddr::new(std::net::Ipv4Addr::from(ip.to_ne_bytes()).into(), port)
}

/// The inodes of this process's sockets (`/proc/self/fd` links named
/// `socket:[N]`).
pub fn own_socket_inodes() -> std::collections::HashSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect()
}
