//! Accept when the process is out of descriptors (EMFILE): the accept path
//! backs off instead of spinning, and every waiting client is served once
//! descriptors are available again.
//!
//! This file is its own test process, so lowering `RLIMIT_NOFILE` here
//! touches no other test; the tests in it take turns through a mutex.

mod util;

use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use ringnet::{Backend, Config};
use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (r.rlim_cur, r.rlim_max)
}

fn set_nofile_soft(soft: u64) {
    let (_, hard) = nofile();
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit read by the kernel during the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// CPU time (user + system) used by this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: rusage is plain data; zeroed is a valid value to be overwritten.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Restores the soft limit it was made with when dropped, even on panic.
struct LimitGuard(u64);

impl Drop for LimitGuard {
    fn drop(&mut self) {
        set_nofile_soft(self.0);
    }
}

/// The soft limit that leaves exactly `free` descriptor numbers unused below
/// it. The limit caps descriptor *numbers*, so holes below it count as room.
fn limit_leaving(free: u64) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut unused = 0;
    let mut limit = 0;
    while unused < free {
        if !open.contains(&limit) {
            unused += 1;
        }
        limit += 1;
    }
    limit
}

/// Descriptor numbers below the soft limit that are not in use.
fn free_slots() -> u64 {
    let limit = nofile().0;
    let used = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd < limit)
        .count() as u64;
    // The directory handle itself was one of them while it was read.
    limit - used + 1
}

fn accept_backs_off_on_emfile(backend: Backend) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The client sockets exist before the limit drops (connect needs no new
    // descriptor), so only the server's accepts run out.
    let sockets: Vec<socket2::Socket> = (0..20)
        .map(|_| {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket")
        })
        .collect();
    let guard = LimitGuard(nofile().0);
    // The kernel reads RLIMIT_NOFILE when an accept is submitted, so the
    // limit drops before the engine arms its accept (with room for its setup).
    set_nofile_soft(limit_leaving(40));
    let engine = echo_engine(Config {
        accept_backoff: Duration::from_millis(50),
        ..config(backend)
    });
    let addr = engine.local_addr();
    // Fill the holes so that exactly 10 descriptors are left for accepts.
    let mut placeholders = Vec::new();
    while free_slots() > 10 {
        placeholders.push(std::fs::File::open("/dev/null").expect("placeholder"));
    }
    let mut clients: Vec<TcpStream> = sockets
        .into_iter()
        .map(|s| {
            s.connect(&addr.into()).expect("connect");
            let s = TcpStream::from(s);
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s
        })
        .collect();
    let s = wait_stats(&engine, Duration::from_secs(10), "an accept backoff", |s| {
        s.accept_backoffs > 0
    });
    let stuck_at = s.accepted;
    assert!(stuck_at < 20, "the limit must stop some accepts: {s:?}");

    // While out of descriptors, the worker must sleep between attempts.
    let cpu0 = process_cpu();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = process_cpu() - cpu0;
    let s = engine.stats();
    println!(
        "{backend}: out of descriptors with {stuck_at} of 20 accepted; {} backoffs and {cpu:?} of CPU in 1 s",
        s.accept_backoffs
    );
    assert!(
        cpu < Duration::from_millis(300),
        "accept path spins while out of descriptors: {cpu:?} CPU in 1 s"
    );
    assert_eq!(
        s.accepted, stuck_at,
        "nothing can be accepted while out of descriptors: {s:?}"
    );

    // Descriptors are freed: the backoff ends and every client is served.
    drop(placeholders);
    for c in clients.iter_mut() {
        ping(c, b"served after EMFILE");
    }
    let s = wait_stats(&engine, Duration::from_secs(10), "all 20 accepted", |s| {
        s.accepted == 20
    });
    println!(
        "{backend}: recovered, {} accepted after {} backoffs",
        s.accepted, s.accept_backoffs
    );
    drop(clients);
    wait_baseline(&engine);
    engine.shutdown().expect("clean shutdown");
    drop(guard);
}

#[test]
fn accept_backs_off_on_emfile_uring() {
    accept_backs_off_on_emfile(Backend::Uring);
}

#[test]
fn accept_backs_off_on_emfile_epoll() {
    accept_backs_off_on_emfile(Backend::Epoll);
}
