//! `ringnet serve` on listeners it is given: the systemd socket-activation
//! protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), a restart onto a
//! listening socket the parent holds (clients running through it, none
//! refused), and several `--addr` listeners at once (TCP v4, v6, Unix).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `ringnet serve`, stopped with SIGTERM when dropped.
struct Serve {
    child: Child,
    /// The addresses of its start-up line.
    addrs: Vec<String>,
}

impl Serve {
    /// `ringnet serve echo ARGS` with `inherit` (if any) as descriptor 3 and
    /// `env`; `LISTEN_PID` is set to the server's own pid when `pid_is_own`
    /// (a shell sets it to its pid, then becomes the server with exec).
    fn start(
        args: &[&str],
        inherit: Option<RawFd>,
        env: &[(&str, &str)],
        pid_is_own: bool,
    ) -> Serve {
        let exe = env!("CARGO_BIN_EXE_ringnet");
        let mut cmd = if pid_is_own {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", exe]);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(["serve", "echo", "--workers", "1"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(fd) = inherit {
            pass_fd(&mut cmd, fd, 3);
        }
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringnet");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the start-up line");
        // "ringnet: serving echo on A, B (BACKEND backend, N workers)"
        let addrs = line
            .split_once(" on ")
            .and_then(|(_, rest)| rest.rsplit_once(" ("))
            .map(|(list, _)| list.split(", ").map(str::to_string).collect())
            .unwrap_or_else(|| panic!("no addresses in the start-up line {line:?}"));
        Serve { child, addrs }
    }

    /// SIGTERM, then wait for the process to exit (its graceful shutdown).
    fn stop(mut self) {
        self.terminate();
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "serve exited with {status}");
    }

    fn terminate(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) has no memory-safety preconditions; the child is
        // not reaped yet, so the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Connections opened.
    connects: AtomicU64,
    /// Connects that failed (refused, reset): must stay 0.
    refused: AtomicU64,
    /// Requests answered with their exact echo.
    answered: AtomicU64,
    /// Connections closed before their echo came (the old server's
    /// shutdown took them): the request is made again.
    cut: AtomicU64,
    /// Clients now waiting for an echo.
    waiting: AtomicU64,
}

/// One client: connect, send a request, read its echo, close; again until
/// `stop`. A request whose connection is closed before the echo is made
/// again on a new connection, so every request is answered once.
fn client(addr: SocketAddr, id: u64, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let msg = format!("client {id} request {n}\n");
        let mut s = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connect failed: {e}");
                tally.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        tally.connects.fetch_add(1, Ordering::Relaxed);
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        if s.write_all(msg.as_bytes()).is_err() {
            tally.cut.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut back = vec![0u8; msg.len()];
        tally.waiting.fetch_add(1, Ordering::Relaxed);
        let got = s.read_exact(&mut back);
        tally.waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(()) => {
                assert_eq!(back, msg.as_bytes(), "an echo of another request");
                tally.answered.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("client {id}: {e}"),
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < limit,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn a_restart_onto_the_held_listener_refuses_nothing(backend: &str) {
    // The parent holds the listener for the whole test, as a supervisor
    // would; each server generation inherits it as descriptor 3.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fd = listener.as_raw_fd();
    let env = [("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "web")];
    let args = ["--backend", backend];
    let old = Serve::start(&args, Some(fd), &env, true);
    assert_eq!(
        old.addrs,
        [addr.to_string()],
        "serves the inherited socket only"
    );

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (t, s) = (Arc::clone(&tally), Arc::clone(&stop));
            thread::spawn(move || client(addr, id, t, s))
        })
        .collect();
    wait_for("answers from the first server", || {
        tally.answered.load(Ordering::Relaxed) >= 200
    });
    old.stop();
    // No server runs now. Every client ends up waiting for an echo: on a
    // connection the old server had not accepted, or on a new one (a
    // connection the old server closed is made again), queued in the
    // listener's backlog either way.
    wait_for("every client waiting on a queued connection", || {
        tally.waiting.load(Ordering::Relaxed) == 4
    });
    let before = tally.answered.load(Ordering::Relaxed);
    let new = Serve::start(&args, Some(fd), &env, true);
    wait_for("answers from the second server", || {
        tally.answered.load(Ordering::Relaxed) >= before + 200
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    new.stop();
    let refused = tally.refused.load(Ordering::Relaxed);
    eprintln!(
        "{backend}: {} answered, {} connections, {} cut by the old server's shutdown and made again, {refused} refused",
        tally.answered.load(Ordering::Relaxed),
        tally.connects.load(Ordering::Relaxed),
        tally.cut.load(Ordering::Relaxed),
    );
    assert_eq!(refused, 0, "a connection was refused during the restart");
    // The listener is still the parent's and still listening.
    let _queued = TcpStream::connect(addr).expect("the listener outlived both servers");
}

#[test]
fn a_restart_onto_the_held_listener_refuses_nothing_uring() {
    a_restart_onto_the_held_listener_refuses_nothing("uring");
}

#[test]
fn a_restart_onto_the_held_listener_refuses_nothing_epoll() {
    a_restart_onto_the_held_listener_refuses_nothing("epoll");
}

#[test]
fn listen_fds_meant_for_another_process_are_left_alone() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let theirs = listener.local_addr().expect("addr");
    // LISTEN_PID names pid 1: descriptor 3 is not ours.
    let env = [("LISTEN_PID", "1"), ("LISTEN_FDS", "1")];
    let server = Serve::start(
        &["--addr", "127.0.0.1:0"],
        Some(listener.as_raw_fd()),
        &env,
        false,
    );
    assert_eq!(server.addrs.len(), 1, "{:?}", server.addrs);
    let own: SocketAddr = server.addrs[0].parse().expect("addr");
    assert_ne!(own, theirs, "served the other process's socket");
    let mut s = TcpStream::connect(own).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(b"mine").expect("send");
    let mut back = [0u8; 4];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"mine");
    server.stop();
    // Untouched: still listening, and still blocking as it was made (a
    // server that adopted it would have changed its mode).
    listener.set_nonblocking(false).expect("still a socket");
    let _c = TcpStream::connect(theirs).expect("still listening");
    let (_conn, _) = listener.accept().expect("accept");
}

#[test]
fn bad_listen_fds_are_refused_with_the_reason() {
    // LISTEN_FDS for this process, but descriptor 3 is a pipe, not a
    // listening socket: serve refuses to start and says why.
    let (r, _w) = std::io::pipe().expect("pipe");
    let out = Command::new("/bin/sh")
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve echo --workers 1 3<&4",
            env!("CARGO_BIN_EXE_ringnet"),
        ])
        .stdin(Stdio::null())
        .output_with_fd4(r.as_raw_fd());
    assert!(
        !out.status.success(),
        "started on a pipe: {:?} {} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LISTEN_FDS"), "{err}");
    assert!(
        err.contains("not a listening stream socket") || err.contains("not a socket"),
        "{err}"
    );
}

/// `Command::output` with `fd` as the child's descriptor 4.
trait OutputWithFd4 {
    fn output_with_fd4(&mut self, fd: RawFd) -> std::process::Output;
}

impl OutputWithFd4 for Command {
    fn output_with_fd4(&mut self, fd: RawFd) -> std::process::Output {
        pass_fd(self, fd, 4);
        self.output().expect("run ringnet")
    }
}

/// Make `fd` the child's descriptor `target`, open across exec.
fn pass_fd(cmd: &mut Command, fd: RawFd, target: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only dup2 and fcntl, which are async-signal-safe; `fd` stays
    // open in the parent for the whole spawn.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
            let res = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if res < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A fresh directory for socket files, removed with its guard.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn several_addrs_at_once_and_a_unix_socket_with_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir(std::env::temp_dir().join(format!("ringnet-serve-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    let path = dir.0.join("s.sock");
    let unix = format!("unix:{}", path.display());
    let abs = format!("unix:@ringnet-serve-{}", std::process::id());
    let server = Serve::start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--addr",
            "[::1]:0",
            "--addr",
            &unix,
            "--addr",
            &abs,
            "--unix-mode",
            "600",
        ],
        None,
        &[],
        false,
    );
    assert_eq!(server.addrs.len(), 4, "{:?}", server.addrs);
    assert_eq!(server.addrs[2], unix);
    assert_eq!(server.addrs[3], abs);
    for a in &server.addrs[..2] {
        let mut s = TcpStream::connect(a.parse::<SocketAddr>().expect("addr")).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.write_all(b"tcp").expect("send");
        let mut back = [0u8; 3];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(&back, b"tcp");
    }
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut u = std::os::unix::net::UnixStream::connect(&path).expect("connect unix");
    u.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    u.write_all(b"unix").expect("send");
    let mut back = [0u8; 4];
    u.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"unix");
    drop(u);
    server.stop();
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn bad_unix_flags_are_refused_naming_the_flag() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ringnet"))
            .args(["serve", "echo"])
            .args(args)
            .output()
            .expect("run")
    };
    for (args, needle) in [
        (vec!["--addr", "unix:"], "--addr"),
        (vec!["--addr", "unix:@"], "--addr"),
        (
            vec!["--unix-mode", "999", "--addr", "unix:/tmp/x.sock"],
            "--unix-mode",
        ),
        (
            vec!["--unix-mode", "rw", "--addr", "unix:/tmp/x.sock"],
            "--unix-mode",
        ),
        (
            vec!["--unix-mode", "600", "--addr", "127.0.0.1:0"],
            "--unix-mode",
        ),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let long = format!("unix:/{}", "d".repeat(200));
    let out = run(&["--addr", &long]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too long"));
    let dir = Dir(std::env::temp_dir().join(format!("ringnet-serve-bad-{}", std::process::id())));
    let missing = format!("unix:{}", dir.0.join("no/such/s.sock").display());
    let out = run(&["--addr", &missing, "--workers", "1"]);
    assert!(!out.status.success(), "listened in a missing directory");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("s.sock"),
        "{err}"
    );
}
