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

use crate::config::{Backend, Config, ListenerMode};
use crate::error::Error;
use crate::handler::Handler;
use crate::listener::{self, ListenOpts};
use crate::stats::{Stats, WorkerStats};
use crate::sys::EventFd;
use crate::uring::worker::{Worker, WorkerCtx};

struct WorkerHandle {
    join: Option<JoinHandle<std::io::Result<()>>>,
    wake: Arc<EventFd>,
    stats: Arc<WorkerStats>,
}

/// A running engine.
pub struct Engine {
    local_addr: SocketAddr,
    backend: Backend,
    workers: Vec<WorkerHandle>,
    stop: Arc<AtomicBool>,
}

impl Engine {
    /// Bind `cfg.addr` and start the workers; `factory(i)` builds worker
    /// `i`'s handler on that worker's thread.
    pub fn start<H, F>(cfg: Config, factory: F) -> Result<Engine, Error>
    where
        H: Handler + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        cfg.validate()?;
        let n = cfg.worker_count();
        let listeners = bind_listeners(&cfg, n)?;
        let local_addr = listener::local_addr(&listeners[0])?;
        let factory = Arc::new(factory);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Error>>();
        let mut engine = Engine {
            local_addr,
            backend: Backend::Uring,
            workers: Vec::with_capacity(n),
            stop: Arc::clone(&stop),
        };
        for index in 0..n {
            let wake = Arc::new(EventFd::new()?);
            let stats = Arc::new(WorkerStats::default());
            let ctx = WorkerCtx {
                index,
                cfg: cfg.clone(),
                listener: Arc::clone(&listeners[index % listeners.len()]),
                stats: Arc::clone(&stats),
                stop: Arc::clone(&stop),
                wake: Arc::clone(&wake),
            };
            let factory = Arc::clone(&factory);
            let ready = ready_tx.clone();
            let join = std::thread::Builder::new()
                .name(format!("ringnet-w{index}"))
                .spawn(move || {
                    let worker = match Worker::new(ctx, factory(index)) {
                        Ok(w) => w,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready.send(Ok(()));
                    worker.run()
                })?;
            engine.workers.push(WorkerHandle {
                join: Some(join),
                wake,
                stats,
            });
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e), // drop stops the others
                Err(_) => return Err(Error::Config("a worker exited during setup".into())),
            }
        }
        Ok(engine)
    }

    /// The address the engine listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The backend the workers run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
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
                Err(_) => Err(Error::Worker {
                    worker: index,
                    source: std::io::Error::other("worker thread panicked"),
                }),
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

/// One shared listener, or one `SO_REUSEPORT` listener per worker (the first
/// one decides the port when 0 was asked).
fn bind_listeners(cfg: &Config, n: usize) -> Result<Vec<Arc<Socket>>, Error> {
    let reuseport = cfg.listener == ListenerMode::ReusePort;
    let opts = ListenOpts {
        reuseport,
        backlog: cfg.backlog,
    };
    let first = listener::listen(cfg.addr, opts)?;
    let addr = listener::local_addr(&first)?;
    let mut all = vec![Arc::new(first)];
    if reuseport {
        for _ in 1..n {
            all.push(Arc::new(listener::listen(addr, opts)?));
        }
    }
    Ok(all)
}
