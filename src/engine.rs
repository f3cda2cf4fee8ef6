//! Starting and stopping the engine: listeners, worker threads, shutdown.
//!
//! [`Engine::start`] binds the listener(s) on the calling thread, so that a
//! bad address or a taken port is reported before anything runs, then starts
//! one worker thread per ring and waits until every worker has set up its
//! ring and buffer groups. The returned [`Engine`] reports the bound address,
//! reads counters, and shuts the workers down (also on drop).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use socket2::Socket;

use crate::address::Address;
use crate::bus::{Bus, Command, Peer, SendError};
use crate::config::{Backend, BackendChoice, Config};
use crate::connect::ConnectRequest;
use crate::error::Error;
use crate::handler::Handler;
use crate::listener::{self, Opened, SocketFile};
use crate::stats::{Stats, WorkerStats};
use crate::sys::EventFd;
use crate::worker::{Worker, WorkerCtx, WorkerListener};

struct WorkerHandle {
    join: Option<JoinHandle<std::io::Result<()>>>,
    wake: Arc<EventFd>,
    stats: Arc<WorkerStats>,
}

/// A running engine.
pub struct Engine {
    /// Each listener's address, in `Config::listeners` order.
    local_addrs: Vec<Address>,
    /// Socket files of Unix listeners, removed when the engine is dropped
    /// (after its workers have stopped).
    _files: Vec<SocketFile>,
    backend: Backend,
    fallback: Option<String>,
    workers: Vec<WorkerHandle>,
    stop: Arc<AtomicBool>,
    bus: Arc<Bus>,
    shutdown_ms: Arc<std::sync::atomic::AtomicU64>,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections open when the shutdown began.
    pub open_at_start: u64,
    /// Of those, the ones that closed by themselves: output flushed, peer
    /// gone, or lingering close finished.
    pub closed_gracefully: u64,
    /// The ones still open at the deadline, closed regardless.
    pub forced: u64,
    /// How long the shutdown took.
    pub elapsed: std::time::Duration,
}

impl Engine {
    /// Open `cfg.listeners` and start the workers; `factory(i)` builds
    /// worker `i`'s handler on that worker's thread.
    pub fn start<H, F>(cfg: Config, factory: F) -> Result<Engine, Error>
    where
        H: Handler + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        cfg.validate()?;
        let (backend, fallback) = select_backend(cfg.backend)?;
        if let Some(reason) = &fallback {
            log::warn!("io_uring unavailable ({reason}); falling back to epoll");
        }
        let n = cfg.worker_count();
        let opened = open_listeners(&cfg, n, backend)?;
        let local_addrs = opened.iter().map(|o| o.addr.clone()).collect();
        let mut files = Vec::new();
        let mut listeners = Vec::with_capacity(opened.len());
        for (o, spec) in opened.into_iter().zip(&cfg.listeners) {
            files.extend(o.file);
            let shared = o.socks.len() == 1;
            let socks: Vec<Arc<Socket>> = o.socks.into_iter().map(Arc::new).collect();
            listeners.push((socks, shared, spec.tls.clone()));
        }
        let factory = Arc::new(factory);
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown_ms = Arc::new(std::sync::atomic::AtomicU64::new(
            cfg.shutdown_timeout.as_millis() as u64,
        ));
        // One setup report channel per worker: a worker that hangs up
        // without reporting panicked, and it is known which.
        let mut readies = Vec::with_capacity(n);
        // The bus first: every worker must be reachable before any runs.
        let mut bus = Bus::default();
        bus.max_connections = cfg.max_connections;
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let (commands, inbox) = mpsc::channel();
            bus.workers.push(Peer {
                commands,
                wake: Arc::new(EventFd::new()?),
                live: Default::default(),
            });
            inboxes.push(inbox);
        }
        let bus = Arc::new(bus);
        let mut engine = Engine {
            local_addrs,
            _files: files,
            backend,
            fallback,
            workers: Vec::with_capacity(n),
            stop: Arc::clone(&stop),
            bus: Arc::clone(&bus),
            shutdown_ms: Arc::clone(&shutdown_ms),
        };
        for (index, commands) in inboxes.into_iter().enumerate() {
            let wake = Arc::clone(&bus.workers[index].wake);
            let stats = Arc::new(WorkerStats::default());
            let ctx = WorkerCtx {
                index,
                cfg: cfg.clone(),
                listeners: listeners
                    .iter()
                    .map(|(socks, shared, tls)| WorkerListener {
                        sock: Arc::clone(&socks[index % socks.len()]),
                        exclusive: *shared,
                        tls: tls.clone(),
                    })
                    .collect(),
                stats: Arc::clone(&stats),
                stop: Arc::clone(&stop),
                wake: Arc::clone(&wake),
                commands,
                bus: Arc::clone(&bus),
                shutdown_ms: Arc::clone(&shutdown_ms),
            };
            let factory = Arc::clone(&factory);
            let (ready, report) = mpsc::channel();
            readies.push(report);
            let join = std::thread::Builder::new()
                .name(format!("ringnet-w{index}"))
                .spawn(move || run_worker(backend, ctx, &*factory, ready))?;
            engine.workers.push(WorkerHandle {
                join: Some(join),
                wake,
                stats,
            });
        }
        for (worker, report) in readies.into_iter().enumerate() {
            match report.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e), // drop stops the others
                Err(_) => return Err(Error::WorkerPanicked { worker }),
            }
        }
        Ok(engine)
    }

    /// The address of the engine's first IP listener (the real port when 0
    /// was asked). See [`Engine::local_addrs`] for every listener.
    ///
    /// # Panics
    ///
    /// When the engine has no IP listener (no listener at all, or Unix
    /// ones only).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs
            .iter()
            .find_map(Address::as_inet)
            .expect("Engine::local_addr: the engine has no IP listener (see local_addrs)")
    }

    /// Every listener's address, in the order of `Config::listeners` (the
    /// index a connection's [`crate::Conn::listener`] gives): IP addresses
    /// with their real port, Unix paths and abstract names.
    pub fn local_addrs(&self) -> &[Address] {
        &self.local_addrs
    }

    /// The backend the workers run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why `auto` fell back to epoll, when it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Connect out from worker `worker` (modulo the worker count) to `addrs`,
    /// tried in order, each attempt for at most `timeout`; the connection is
    /// served by that worker's handler like an accepted one (`on_open` with
    /// [`crate::Conn::tag`] `== Some(tag)`), or `on_connect_failed(tag, ..)`
    /// says why not. Resolve endpoints before calling (e.g. with
    /// `Endpoint::resolve`); this never blocks on DNS.
    /// [`Error::WorkerStopped`] when that worker has stopped.
    pub fn connect(
        &self,
        worker: usize,
        addrs: &[impl Into<Address> + Clone],
        timeout: std::time::Duration,
        tag: u64,
    ) -> Result<(), Error> {
        let index = worker % self.workers.len();
        let req = ConnectRequest::new(crate::handler::addresses(addrs), timeout, tag, false);
        if !self.bus.post(index, Command::Connect(req)) {
            return Err(Error::WorkerStopped { worker: index });
        }
        Ok(())
    }

    /// [`Engine::connect`] with TLS to `tls`'s server: the handler hears
    /// `on_open` once the handshake is over (the server's certificate is
    /// verified), or `on_connect_failed` with
    /// [`ConnectError::Tls`](crate::ConnectError::Tls).
    pub fn connect_tls(
        &self,
        worker: usize,
        addrs: &[impl Into<Address> + Clone],
        timeout: std::time::Duration,
        tag: u64,
        tls: &crate::tls::TlsTarget,
    ) -> Result<(), Error> {
        let index = worker % self.workers.len();
        let mut req = ConnectRequest::new(crate::handler::addresses(addrs), timeout, tag, false);
        req.tls = Some(tls.clone());
        if !self.bus.post(index, Command::Connect(req)) {
            return Err(Error::WorkerStopped { worker: index });
        }
        Ok(())
    }

    /// [`Engine::connect`] to an endpoint (an address, a list, or a string
    /// such as `"localhost:7000"`), resolved here, on the caller's thread;
    /// every resolved address is tried in order.
    pub fn connect_to(
        &self,
        worker: usize,
        endpoint: impl crate::endpoint::ToEndpoint,
        timeout: std::time::Duration,
        tag: u64,
    ) -> Result<(), Error> {
        let addrs = endpoint.to_addresses().map_err(Error::from_resolve)?;
        self.connect(worker, &addrs, timeout, tag)
    }

    /// Queue `bytes` on every open connection of every worker.
    pub fn broadcast(&self, bytes: &[u8]) {
        let bytes: Arc<[u8]> = Arc::from(bytes);
        for index in 0..self.bus.workers.len() {
            self.bus.post(
                index,
                Command::Broadcast {
                    except: None,
                    bytes: Arc::clone(&bytes),
                },
            );
        }
    }

    /// Queue `bytes` on connection `to`; an id that is not open is an error.
    pub fn send_to(&self, to: crate::ConnId, bytes: &[u8]) -> Result<(), SendError> {
        if !self.bus.is_live(to) {
            return Err(SendError::UnknownConn(to));
        }
        if self.bus.post(
            to.worker(),
            Command::SendTo {
                to,
                bytes: Arc::from(bytes),
            },
        ) {
            Ok(())
        } else {
            Err(SendError::WorkerStopped(to))
        }
    }

    /// Counters summed over all workers.
    pub fn stats(&self) -> Stats {
        self.worker_stats()
            .into_iter()
            .fold(Stats::default(), |a, b| a + b)
    }

    /// Counters of each worker.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.workers.iter().map(|w| w.stats.snapshot()).collect()
    }

    /// Stop accepting, flush and close every connection (forcing those still
    /// open after `Config::shutdown_timeout`), and wait for the workers.
    /// Returns the first worker error, if any.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_workers()
    }

    /// Stop accepting, let queued output drain and connections close, close
    /// whatever is still open when `deadline` has passed, wait for the
    /// workers, and say what happened. No descriptor or buffer is left.
    pub fn shutdown_within(
        mut self,
        deadline: std::time::Duration,
    ) -> Result<ShutdownReport, Error> {
        let started = std::time::Instant::now();
        // Relaxed: published to the workers by the Release store of `stop`.
        self.shutdown_ms
            .store(deadline.as_millis() as u64, Ordering::Relaxed);
        let before = self.stats();
        self.stop_workers()?;
        let after = self.stats();
        let forced = after.shutdown_forced - before.shutdown_forced;
        Ok(ShutdownReport {
            open_at_start: before.open,
            closed_gracefully: before.open.saturating_sub(forced),
            forced,
            elapsed: started.elapsed(),
        })
    }

    fn stop_workers(&mut self) -> Result<(), Error> {
        // Release pairs with the workers' Acquire load after their wake-up.
        self.stop.store(true, Ordering::Release);
        for w in &self.workers {
            let _ = w.wake.notify();
        }
        let mut first = Ok(());
        for (index, w) in self.workers.iter_mut().enumerate() {
            let Some(join) = w.join.take() else { continue };
            let res = match join.join() {
                Ok(r) => r.map_err(|source| Error::Worker {
                    worker: index,
                    source,
                }),
                Err(_) => Err(Error::WorkerPanicked { worker: index }),
            };
            if first.is_ok() {
                first = res;
            }
        }
        first
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop_workers();
    }
}

/// The body of a worker thread: pin, build the handler and the backend's
/// worker, report readiness, run.
fn run_worker<H: Handler, F: Fn(usize) -> H>(
    backend: Backend,
    ctx: WorkerCtx,
    factory: &F,
    ready: mpsc::Sender<Result<(), Error>>,
) -> std::io::Result<()> {
    let index = ctx.index;
    if let Err(e) = pin_worker(&ctx.cfg.cpus, index) {
        let _ = ready.send(Err(e));
        return Ok(());
    }
    let handler = factory(index);
    report_then_run(Worker::new(ctx, handler, backend), ready, |w| w.run())
}

/// Pin worker `index`'s thread to `cpus[index % cpus.len()]` (nothing when
/// `cpus` is empty); shared by the TCP and UDP engines.
pub(crate) fn pin_worker(cpus: &[usize], index: usize) -> Result<(), Error> {
    if cpus.is_empty() {
        return Ok(());
    }
    crate::sys::pin_current_thread(cpus[index % cpus.len()]).map_err(|source| Error::Worker {
        worker: index,
        source,
    })
}

/// Tell `Engine::start` how the worker's setup went, then run it.
fn report_then_run<W>(
    built: Result<W, Error>,
    ready: mpsc::Sender<Result<(), Error>>,
    run: impl FnOnce(W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match built {
        Ok(worker) => {
            let _ = ready.send(Ok(()));
            // Nothing more to report: hang up at once.
            drop(ready);
            run(worker)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            Ok(())
        }
    }
}

/// Resolve the backend: `RINGNET_BACKEND` overrides the configuration;
/// `auto` takes io_uring when the engine's requirements hold here (tried for
/// real), else epoll with the reason.
pub(crate) fn select_backend(
    configured: BackendChoice,
) -> Result<(Backend, Option<String>), Error> {
    let choice = match std::env::var("RINGNET_BACKEND") {
        Ok(v) if !v.trim().is_empty() => v.parse()?,
        _ => configured,
    };
    match choice {
        BackendChoice::Epoll => Ok((Backend::Epoll, None)),
        BackendChoice::Uring => match crate::uring::probe::engine_requirements() {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(reason) => Err(Error::UringUnavailable(reason)),
        },
        BackendChoice::Auto => match crate::uring::probe::engine_requirements() {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(reason) => Ok((Backend::Epoll, Some(reason))),
        },
    }
}

/// Open every listener: one socket that every worker shares, or one
/// `SO_REUSEPORT` socket per worker. Non-blocking for epoll, whose accept
/// loop runs until EAGAIN; blocking for io_uring, which then never hands an
/// accept back with EAGAIN. (An adopted socket's blocking mode belongs to
/// its open file, which any other process holding it shares.)
fn open_listeners(cfg: &Config, n: usize, backend: Backend) -> Result<Vec<Opened>, Error> {
    let defaults = cfg.listen_options();
    let mut all = Vec::with_capacity(cfg.listeners.len());
    for (i, spec) in cfg.listeners.iter().enumerate() {
        let adopted = matches!(spec.source, listener::ListenSource::Adopt(_));
        let opened = listener::open(spec, defaults, n).map_err(|e| match e {
            // Bind errors name their address; an adopted socket has only
            // its place in the list.
            Error::Io(e) if adopted => Error::Io(std::io::Error::new(
                e.kind(),
                format!("listeners[{i}] (adopted socket): {e}"),
            )),
            other => other,
        })?;
        for sock in &opened.socks {
            sock.set_nonblocking(backend == Backend::Epoll)?;
        }
        all.push(opened);
    }
    Ok(all)
}
