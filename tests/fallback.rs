//! Backend selection of the `ringnet` binary: the epoll fallback when io_uring is
//! blocked, the error when io_uring is forced but blocked, and the
//! `RINGNET_BACKEND` override.
//!
//! io_uring is blocked the way Docker's default seccomp profile blocks it: a
//! seccomp filter, installed in the child between `fork` and `exec`, makes
//! `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `EPERM`.
//! The syscall numbers in the filter are x86_64's, so the file is x86_64-only.
#![cfg(target_arch = "x86_64")]

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to print its start-up line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit (on SIGTERM, or on its own on error).
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of the client sockets.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

// Classic BPF and seccomp constants (linux/filter.h, linux/seccomp.h,
// linux/audit.h), defined here so the test does not depend on which of them
// the `libc` version in use exports.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_MODE_FILTER: libc::c_ulong = 2;
const PR_SET_NO_NEW_PRIVS: libc::c_int = 38;
const PR_SET_SECCOMP: libc::c_int = 22;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// x86_64 syscall numbers.
const SYS_IO_URING_SETUP: u32 = 425;
const SYS_IO_URING_ENTER: u32 = 426;
const SYS_IO_URING_REGISTER: u32 = 427;

/// Number of instructions in [`deny_io_uring_filter`].
const FILTER_LEN: usize = 8;

fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A seccomp program that makes the three io_uring syscalls fail with `EPERM`
/// and allows everything else (and every syscall of a foreign architecture).
/// Jump offsets count from the next instruction.
fn deny_io_uring_filter() -> [libc::sock_filter; FILTER_LEN] {
    let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    [
        /* 0 */ bpf(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        /* 1 */ bpf(BPF_JMP_JEQ_K, 0, 4, AUDIT_ARCH_X86_64), // else -> 6
        /* 2 */ bpf(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        /* 3 */ bpf(BPF_JMP_JEQ_K, 3, 0, SYS_IO_URING_SETUP), // -> 7
        /* 4 */ bpf(BPF_JMP_JEQ_K, 2, 0, SYS_IO_URING_ENTER), // -> 7
        /* 5 */ bpf(BPF_JMP_JEQ_K, 1, 0, SYS_IO_URING_REGISTER), // -> 7
        /* 6 */ bpf(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        /* 7 */ bpf(BPF_RET_K, 0, 0, deny),
    ]
}

/// Make the command's child install [`deny_io_uring_filter`] before `exec`.
fn block_io_uring(cmd: &mut Command) {
    // Built here, in the parent: the closure below runs after `fork` in a
    // possibly multi-threaded process, where it must not allocate.
    let mut filter = deny_io_uring_filter();
    let hook = move || -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: FILTER_LEN as libc::c_ushort,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: prctl is async-signal-safe and PR_SET_NO_NEW_PRIVS takes only
        // integer arguments; no memory is passed to the kernel.
        if unsafe {
            libc::prctl(
                PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: prctl is async-signal-safe; `prog` points at `filter`, an
        // array of exactly `len` valid instructions owned by this closure, and
        // both outlive the call (the kernel copies the program before returning).
        let rc = unsafe {
            libc::prctl(
                PR_SET_SECCOMP,
                SECCOMP_MODE_FILTER,
                std::ptr::addr_of!(prog),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only calls
    // prctl (async-signal-safe) and reads errno; it takes no locks and does not
    // allocate (`io::Error::last_os_error` stores the raw errno inline).
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// How the child sees `RINGNET_BACKEND`.
enum BackendEnv<'a> {
    Removed,
    Set(&'a str),
}

/// Forward each line of `pipe` over a channel; the channel disconnects at EOF.
fn line_reader(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// A running `ringnet` child. Dropping it SIGKILLs and reaps the child if it is
/// still running, so a failing test never leaves a server behind.
struct Server {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stderr_lines: Vec<String>,
}

impl Server {
    fn spawn(backend_flag: &str, env: BackendEnv<'_>, seccomp: bool) -> Server {
        Server::spawn_logging(backend_flag, env, seccomp, None)
    }

    /// [`Server::spawn`] with `RUST_LOG` set to `rust_log` (`None`: unset,
    /// the command's default level).
    fn spawn_logging(
        backend_flag: &str,
        env: BackendEnv<'_>,
        seccomp: bool,
        rust_log: Option<&str>,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringnet"));
        cmd.args([
            "serve",
            "echo",
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--backend",
            backend_flag,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        match env {
            BackendEnv::Removed => {
                cmd.env_remove("RINGNET_BACKEND");
            }
            BackendEnv::Set(v) => {
                cmd.env("RINGNET_BACKEND", v);
            }
        }
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        if seccomp {
            block_io_uring(&mut cmd);
        }
        let mut child = cmd.spawn().expect("spawn ringnet");
        let stdout = line_reader(child.stdout.take().expect("stdout pipe"));
        let stderr = line_reader(child.stderr.take().expect("stderr pipe"));
        Server {
            child,
            stdout,
            stderr,
            stderr_lines: Vec::new(),
        }
    }

    /// Move the stderr lines available now (or, with a deadline, until EOF or
    /// the deadline) into `stderr_lines`.
    fn collect_stderr(&mut self, deadline: Option<Instant>) {
        loop {
            let next = match deadline {
                None => self.stderr.try_recv().map_err(|_| ()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.stderr.recv_timeout(left).map_err(|_| ())
                }
            };
            match next {
                Ok(line) => self.stderr_lines.push(line),
                Err(()) => break,
            }
        }
    }

    /// The first stderr line (already collected or arriving before `timeout`)
    /// for which `pred` holds.
    fn wait_stderr_line(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            if let Some(line) = self.stderr_lines[seen..].iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            seen = self.stderr_lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.stderr_lines.push(line),
                Err(_) => return None,
            }
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_lines.join("\n")
    }

    /// The start-up line, parsed into the address it names.
    fn startup_line(&mut self) -> (String, SocketAddr) {
        let line = match self.stdout.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let why = match e {
                    RecvTimeoutError::Timeout => "timed out waiting for",
                    RecvTimeoutError::Disconnected => "stdout closed before",
                };
                // Give a dying child a moment to finish its stderr.
                self.collect_stderr(Some(Instant::now() + Duration::from_secs(2)));
                panic!(
                    "{why} the start-up line; exit: {:?}; stderr:\n{}",
                    self.child.try_wait(),
                    self.stderr_text()
                );
            }
        };
        let addr = line
            .strip_prefix("ringnet: serving echo on ")
            .and_then(|rest| rest.split(" (").next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
        assert_ne!(addr.port(), 0, "start-up line {line:?} names port 0");
        (line, addr)
    }

    /// Wait until the child exits by itself, SIGKILLing it and failing on timeout.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipe closes with the child: collect the rest of stderr.
                self.collect_stderr(Some(Instant::now() + Duration::from_secs(2)));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.collect_stderr(Some(Instant::now() + Duration::from_secs(2)));
                panic!(
                    "ringnet did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM the child and wait for it to exit.
    /// SIGTERM, then require a clean exit (status 0).
    fn stop_cleanly(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "exit status {status}; stderr:\n{}",
            self.stderr_text()
        );
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own
        // child, which has not been reaped yet (we hold `Child` and only reap it
        // through it), so the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", io::Error::last_os_error());
        self.wait_exit(EXIT_TIMEOUT)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Send several messages (the last one 100 KB) on one connection and check
/// each comes back exactly. A writer thread sends while this one reads, so a
/// large message cannot deadlock on full socket buffers.
fn check_echo(addr: SocketAddr) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    let messages: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b"ringnet echo over epoll\n".to_vec(),
        vec![0u8; 1],
        util::pattern(7, 4096),
        util::pattern(42, 100 * 1024),
    ];
    let mut r = s.try_clone().expect("clone");
    for msg in &messages {
        let mut w = s.try_clone().expect("clone");
        let out = msg.clone();
        let writer = thread::spawn(move || w.write_all(&out));
        let mut got = vec![0u8; msg.len()];
        r.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("reading the echo of {} bytes: {e}", msg.len()));
        writer.join().expect("writer thread").expect("write");
        assert!(got == *msg, "echo of {} bytes differs", msg.len());
    }
    s.shutdown(Shutdown::Write).expect("shutdown write");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("read to end of stream");
    assert!(
        rest.is_empty(),
        "{} unexpected bytes after the echoes",
        rest.len()
    );
}

#[test]
fn auto_falls_back_to_epoll_under_seccomp() {
    let mut server = Server::spawn("auto", BackendEnv::Removed, true);
    let (line, addr) = server.startup_line();
    assert!(
        line.contains("(epoll backend"),
        "expected the epoll backend: {line:?}"
    );
    // The fallback line is printed before the start-up line.
    let fallback = server
        .wait_stderr_line(|l| l.contains("falling back to epoll"), IO_TIMEOUT)
        .unwrap_or_else(|| panic!("no fallback line on stderr:\n{}", server.stderr_text()));
    assert!(
        fallback.starts_with("ringnet: io_uring unavailable ("),
        "fallback line: {fallback:?}"
    );
    assert!(fallback.contains("errno 1"), "fallback line: {fallback:?}");
    assert!(
        fallback.contains("seccomp") || fallback.contains("io_uring_disabled"),
        "fallback line should name the likely cause: {fallback:?}"
    );

    check_echo(addr);

    server.stop_cleanly();
    println!("stdout: {line}");
    println!("stderr: {fallback}");
}

/// The fallback line is a log record: `RUST_LOG=off` silences it, while the
/// command's own messages stay.
#[test]
fn rust_log_off_silences_the_fallback_warning() {
    let mut server = Server::spawn_logging("auto", BackendEnv::Removed, true, Some("off"));
    let (line, addr) = server.startup_line();
    assert!(
        line.contains("(epoll backend"),
        "expected the epoll backend: {line:?}"
    );
    check_echo(addr);
    // Stopping collects stderr up to its end.
    server.stop_cleanly();
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("shutting down"),
        "the command's own lines stay:\n{stderr}"
    );
    assert!(
        !stderr.contains("falling back"),
        "RUST_LOG=off should silence the fallback warning:\n{stderr}"
    );
}

#[test]
fn forced_uring_fails_with_the_reason_under_seccomp() {
    let mut server = Server::spawn("uring", BackendEnv::Removed, true);
    let status = server.wait_exit(EXIT_TIMEOUT);
    let stderr = server.stderr_text();
    assert!(
        !status.success(),
        "--backend uring under seccomp should fail, got {status}; stderr:\n{stderr}"
    );
    let reason = server
        .stderr_lines
        .iter()
        .find(|l| l.starts_with("ringnet: ") && l.contains("io_uring unavailable"))
        .unwrap_or_else(|| panic!("no io_uring error on stderr:\n{stderr}"));
    assert!(reason.contains("errno 1"), "error line: {reason:?}");
    // Nothing must have been served.
    assert!(
        server.stdout.try_recv().is_err(),
        "a start-up line was printed despite the failure"
    );
    println!("{status}; stderr: {reason}");
}

#[test]
fn env_var_overrides_flag() {
    let mut server = Server::spawn("uring", BackendEnv::Set("epoll"), false);
    let (line, addr) = server.startup_line();
    assert!(
        line.contains("(epoll backend"),
        "RINGNET_BACKEND=epoll should override --backend uring: {line:?}"
    );
    check_echo(addr);
    server.stop_cleanly();
    println!("stdout: {line}");
}

#[test]
fn no_filter_auto_picks_io_uring() {
    let report = ringnet::uring::probe::probe();
    if let Err(err) = &report.uring {
        eprintln!(
            "skipping no_filter_auto_picks_io_uring: io_uring unavailable here: {err} (kernel {})",
            report.kernel
        );
        return;
    }
    let mut server = Server::spawn("auto", BackendEnv::Removed, false);
    let (line, addr) = server.startup_line();
    assert!(
        line.contains("(io_uring backend"),
        "auto should pick io_uring where it works: {line:?}"
    );
    server.collect_stderr(None);
    assert!(
        !server.stderr_text().contains("falling back"),
        "unexpected fallback:\n{}",
        server.stderr_text()
    );
    check_echo(addr);
    server.stop_cleanly();
    println!("stdout: {line}");
}
