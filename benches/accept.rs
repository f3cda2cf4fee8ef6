//! Accept throughput: connections per second through a one-worker server.
//!
//! One iteration is a batch of 32 whole connections, driven by a blocking
//! client on the bench thread (pinned to CPU 1): connect 32 sockets to the
//! server's loopback address, write 16 bytes on each, read each 16-byte echo
//! back (and check it), then close them all with `SO_LINGER` 0 so the close
//! is a reset and no client port is left in `TIME_WAIT`. Keeping 32
//! connections in flight means one cross-CPU wake-up of the server serves
//! many accepts, as under real load; with one connection at a time the
//! figure is dominated by the wake-up itself (about 70 µs on the 2-vCPU VM
//! these were first run on). The server runs on one thread pinned to CPU 0.
//! Contenders, in the one criterion group `accept`:
//!
//! * `io_uring`: a ringnet engine on the io_uring backend, 1 worker, the
//!   echo handler (`common::Echo`);
//! * `io_uring-coop-taskrun`: the same with `defer_taskrun: false`
//!   (COOP_TASKRUN instead of SINGLE_ISSUER + DEFER_TASKRUN);
//! * `io_uring-batch-wait-20us`: the same with `batch_wait` 20 µs (Linux
//!   6.12 min-wait: the worker waits up to 20 µs for 32 completions instead
//!   of being woken by each);
//! * `epoll`: the same engine on the epoll backend;
//! * `tokio-uring`: a tokio-uring accept loop that spawns one task per
//!   connection, which reads the 16 bytes and writes them back.
//!
//! `RINGNET_BACKEND` is removed from the environment first, and each engine
//! must report the backend that was asked for, so both ringnet contenders
//! really run on their own backend.
//!
//! Run with `cargo bench --bench accept` (add `-- epoll` or any other regex to
//! run only the matching contenders). Throughput is reported in elements per
//! second, one element being one connection (32 per iteration); the HTML report, comparing the
//! contenders, lands in `target/criterion/report/index.html`.

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{bench_config, start_engine_with, CLIENT_CPU, SERVER_CPU};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnet::{Backend, Config, Engine};

/// Bytes each connection sends and reads back.
const MSG_LEN: usize = 16;
/// What every benchmarked connection sends.
const MSG: [u8; MSG_LEN] = *b"ringnet accept!\n";
/// Makes the tokio-uring accept loop stop after its next accept.
const STOP: [u8; MSG_LEN] = *b"STOP STOP STOP!\n";

/// Connections per iteration.
const BATCH: usize = 32;

/// One benchmarked batch: connect `BATCH` sockets, 16 bytes there and back
/// on each, reset them all.
fn batch(addr: SocketAddr) {
    let mut streams: Vec<TcpStream> = (0..BATCH)
        .map(|_| TcpStream::connect(addr).expect("connect to the server"))
        .collect();
    for stream in &mut streams {
        stream.write_all(&MSG).expect("write the message");
    }
    for stream in &mut streams {
        let mut echo = [0u8; MSG_LEN];
        stream.read_exact(&mut echo).expect("read the echo");
        assert_eq!(echo, MSG, "the server echoed something else");
        socket2::SockRef::from(&*stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
    }
}

/// A tokio-uring echo server (16 bytes per connection) on its own thread.
/// Dropping it stops the accept loop and joins the thread.
struct TokioUringServer {
    addr: SocketAddr,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TokioUringServer {
    fn start() -> TokioUringServer {
        let (addr_tx, addr_rx) = mpsc::channel::<io::Result<SocketAddr>>();
        let thread = std::thread::Builder::new()
            .name("tokio-uring".into())
            .spawn(move || {
                if let Err(e) = ringnet::pin_current_thread(SERVER_CPU) {
                    let _ = addr_tx.send(Err(e));
                    return Ok(());
                }
                tokio_uring::start(accept_loop(addr_tx))
            })
            .expect("spawn the tokio-uring thread");
        match addr_rx.recv() {
            Ok(Ok(addr)) => TokioUringServer {
                addr,
                thread: Some(thread),
            },
            Ok(Err(e)) => {
                let _ = thread.join();
                panic!("starting the tokio-uring server failed: {e}");
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => panic!("the tokio-uring server failed: {e}"),
                _ => panic!("the tokio-uring server thread ended during setup"),
            },
        }
    }

    /// Send the STOP marker (its task raises the flag before echoing it),
    /// then connect once more so the accept loop wakes up, sees the flag and
    /// returns; join the thread.
    fn stop(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let mut stream = TcpStream::connect(self.addr)?;
        stream.write_all(&STOP)?;
        let mut echo = [0u8; MSG_LEN];
        stream.read_exact(&mut echo)?;
        let wake = TcpStream::connect(self.addr)?;
        let res = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the tokio-uring thread panicked")));
        drop((stream, wake));
        res
    }
}

impl Drop for TokioUringServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            // Not a panic: this also runs while unwinding from one.
            eprintln!("stopping the tokio-uring server: {e}");
        }
    }
}

async fn accept_loop(addr_tx: mpsc::Sender<io::Result<SocketAddr>>) -> io::Result<()> {
    let bound = tokio_uring::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|l| Ok((l.local_addr()?, l)));
    let listener = match bound {
        Ok((addr, listener)) => {
            let _ = addr_tx.send(Ok(addr));
            listener
        }
        Err(e) => {
            let _ = addr_tx.send(Err(e));
            return Ok(());
        }
    };
    let stop = Rc::new(Cell::new(false));
    loop {
        let (stream, _peer) = listener.accept().await?;
        if stop.get() {
            return Ok(());
        }
        let stop = Rc::clone(&stop);
        tokio_uring::spawn(async move {
            // A client that resets early is not an error of the server.
            let _ = echo16(stream, &stop).await;
        });
    }
}

/// Read 16 bytes, raise `stop` if they are the STOP marker, write them back,
/// close (by dropping the stream).
async fn echo16(stream: tokio_uring::net::TcpStream, stop: &Cell<bool>) -> io::Result<()> {
    use tokio_uring::buf::BoundedBuf;

    let mut buf = Vec::with_capacity(MSG_LEN);
    while buf.len() < MSG_LEN {
        let filled = buf.len();
        let (res, slice) = stream.read(buf.slice(filled..)).await;
        buf = slice.into_inner();
        if res? == 0 {
            return Ok(()); // the peer left before sending 16 bytes
        }
    }
    if buf[..] == STOP {
        stop.set(true);
    }
    let (res, _buf) = stream.write_all(buf).await;
    res
}

fn accept(c: &mut Criterion) {
    ringnet::pin_current_thread(CLIENT_CPU).expect("pin the client thread");

    let mut group = c.benchmark_group("accept");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    // Servers start on the first call of the routine, so a contender that
    // the filter leaves out is never started.
    let uring = bench_config(Backend::Uring);
    let contenders = [
        ("io_uring", Backend::Uring, uring.clone()),
        (
            "io_uring-coop-taskrun",
            Backend::Uring,
            Config {
                defer_taskrun: false,
                ..uring.clone()
            },
        ),
        (
            "io_uring-batch-wait-20us",
            Backend::Uring,
            Config {
                batch_wait: Duration::from_micros(20),
                ..uring
            },
        ),
        ("epoll", Backend::Epoll, bench_config(Backend::Epoll)),
    ];
    for (name, backend, cfg) in contenders {
        let mut engine: Option<Engine> = None;
        group.bench_function(name, |b| {
            let addr = engine
                .get_or_insert_with(|| start_engine_with(backend, cfg.clone()))
                .local_addr();
            b.iter(|| batch(addr));
        });
        if let Some(engine) = engine {
            engine
                .shutdown()
                .unwrap_or_else(|e| panic!("shutting the {backend} engine down: {e}"));
        }
    }

    let mut server: Option<TokioUringServer> = None;
    group.bench_function("tokio-uring", |b| {
        let addr = server.get_or_insert_with(TokioUringServer::start).addr;
        b.iter(|| batch(addr));
    });
    if let Some(mut server) = server {
        server.stop().expect("stopping the tokio-uring server");
    }

    group.finish();
}

criterion_group!(benches, accept);
criterion_main!(benches);
