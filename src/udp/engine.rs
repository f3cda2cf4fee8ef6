//! UDP on the engine: a [`DatagramHandler`] gets every datagram with its
//! source address and answers through [`Replies`].
//!
//! * io_uring: one SO_REUSEPORT socket per worker with one multishot recvmsg
//!   over the worker's provided buffer ring; peers are told apart in user
//!   space by source address (one socket for all peers). See
//!   `uring::udp`.
//! * epoll: the portable server ([`crate::udp::UdpServer`]): each new peer
//!   gets its own connected socket, served by its own thread with its own
//!   handler (from the factory); replies can only go to that peer.
//!
//! [`UdpEngine::start`] picks the backend like [`crate::Engine::start`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Backend, Config};
use crate::engine::pin_worker;
use crate::error::Error;

use super::datagram::UdpCounters;
pub use super::datagram::{max_datagram, DatagramHandler, Replies, UdpEcho, UdpStats};

/// The threads of a UDP engine, each with the worker it serves for.
type Threads = Arc<Mutex<Vec<(usize, JoinHandle<std::io::Result<()>>)>>>;

/// A running UDP engine.
pub struct UdpEngine {
    local_addr: SocketAddr,
    backend: Backend,
    stop: Arc<AtomicBool>,
    wakes: Vec<Arc<crate::sys::EventFd>>,
    threads: Threads,
    portable: Option<Arc<crate::udp::UdpServer>>,
    counters: Arc<UdpCounters>,
}

impl UdpEngine {
    /// Bind `cfg.addr` (UDP) and serve it with `factory`'s handlers.
    pub fn start<H, F>(cfg: Config, factory: F) -> Result<UdpEngine, Error>
    where
        H: DatagramHandler + 'static,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        cfg.validate()?;
        let (backend, fallback) = crate::engine::select_backend(cfg.backend)?;
        // Both backends bind with SO_REUSEPORT: take a port nobody holds
        // (port 0), or see that nobody holds the one asked for.
        let asked = cfg.udp_addr()?;
        let addr = crate::listener::exclusive_port(asked, socket2::Type::DGRAM)
            .map_err(|e| Error::bind(asked, e))?;
        crate::listener::probe_free(addr, socket2::Type::DGRAM)?;
        if let Some(reason) = &fallback {
            log::warn!("io_uring unavailable ({reason}); falling back to epoll");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(UdpCounters::default());
        let threads = Arc::new(Mutex::new(Vec::new()));
        let factory = Arc::new(factory);
        match backend {
            Backend::Uring => {
                let n = cfg.worker_count();
                let first = udp_socket(addr, &cfg)?;
                let local_addr = crate::listener::local_addr(&first)?;
                let mut sockets = vec![first];
                for _ in 1..n {
                    sockets.push(udp_socket(local_addr, &cfg)?);
                }
                // One setup report channel per worker (see `Engine::start`).
                let mut readies = Vec::with_capacity(n);
                let mut wakes = Vec::new();
                for (index, socket) in sockets.into_iter().enumerate() {
                    let wake = Arc::new(crate::sys::EventFd::new()?);
                    wakes.push(Arc::clone(&wake));
                    let ctx = crate::uring::udp::UdpCtx {
                        cfg: cfg.clone(),
                        socket,
                        wake,
                        stop: Arc::clone(&stop),
                        counters: Arc::clone(&counters),
                    };
                    let factory = Arc::clone(&factory);
                    let (ready, report) = mpsc::channel();
                    readies.push(report);
                    let cpus = cfg.cpus.clone();
                    let join = std::thread::Builder::new()
                        .name(format!("ringnet-udp{index}"))
                        .spawn(move || {
                            if let Err(e) = pin_worker(&cpus, index) {
                                let _ = ready.send(Err(e));
                                return Ok(());
                            }
                            match crate::uring::udp::UdpWorker::new(ctx, factory(index)) {
                                Ok(w) => {
                                    let _ = ready.send(Ok(()));
                                    drop(ready);
                                    w.run()
                                }
                                Err(e) => {
                                    let _ = ready.send(Err(e));
                                    Ok(())
                                }
                            }
                        })?;
                    // A Vec of handles stays whole if a holder panicked.
                    threads
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((index, join));
                }
                let engine = UdpEngine {
                    local_addr,
                    backend,
                    stop,
                    wakes,
                    threads,
                    portable: None,
                    counters,
                };
                for (worker, report) in readies.into_iter().enumerate() {
                    match report.recv() {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(Error::WorkerPanicked { worker }),
                    }
                }
                Ok(engine)
            }
            Backend::Epoll => {
                let opts = crate::udp::UdpOptions {
                    only_v6: cfg.only_v6,
                    recv_buffer_size: cfg.recv_buffer_size,
                    ..crate::udp::UdpOptions::default()
                };
                let server = Arc::new(
                    crate::udp::UdpServer::bind(addr, opts).map_err(|e| Error::bind(addr, e))?,
                );
                let local_addr = server.local_addr();
                let limits = PeerLimits {
                    max_peers: if cfg.max_connections == 0 {
                        DEFAULT_MAX_PEERS
                    } else {
                        cfg.max_connections
                    },
                    idle: cfg.idle_timeout.unwrap_or(DEFAULT_PEER_IDLE),
                    max_datagram: max_datagram(&cfg),
                };
                for index in 0..cfg.worker_count() {
                    let server = Arc::clone(&server);
                    let stop = Arc::clone(&stop);
                    let factory = Arc::clone(&factory);
                    let counters = Arc::clone(&counters);
                    let peers = Arc::clone(&threads);
                    let cpus = cfg.cpus.clone();
                    let join = std::thread::Builder::new()
                        .name(format!("ringnet-udp-accept{index}"))
                        .spawn(move || {
                            portable_acceptor(
                                index, &cpus, &server, &stop, &factory, &counters, &peers, limits,
                            )
                        })?;
                    // A Vec of handles stays whole if a holder panicked.
                    threads
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((index, join));
                }
                Ok(UdpEngine {
                    local_addr,
                    backend,
                    stop,
                    wakes: Vec::new(),
                    threads,
                    portable: Some(server),
                    counters,
                })
            }
        }
    }

    /// The bound address (the real port after port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The backend serving.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The counters so far.
    pub fn stats(&self) -> UdpStats {
        let c = &self.counters;
        UdpStats {
            datagrams_in: c.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: c.datagrams_out.load(Ordering::Relaxed),
            truncated: c.truncated.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            peers_open: c.peers_open.load(Ordering::Relaxed),
            peers_refused: c.peers_refused.load(Ordering::Relaxed),
            peers_expired: c.peers_expired.load(Ordering::Relaxed),
        }
    }

    /// Stop and wait for every thread.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), Error> {
        // Release pairs with the workers' Acquire loads.
        self.stop.store(true, Ordering::Release);
        for w in &self.wakes {
            let _ = w.notify();
        }
        if let Some(server) = &self.portable {
            server.close();
        }
        let mut first = Ok(());
        loop {
            let next = self
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some((worker, join)) = next else { break };
            let res = match join.join() {
                Ok(r) => r.map_err(Error::from),
                Err(_) => Err(Error::WorkerPanicked { worker }),
            };
            if first.is_ok() {
                first = res;
            }
        }
        first
    }
}

impl Drop for UdpEngine {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// A UDP socket bound with SO_REUSEADDR + SO_REUSEPORT (blocking: io_uring
/// polls it).
fn udp_socket(addr: SocketAddr, cfg: &Config) -> Result<socket2::Socket, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| Error::bind(addr, source);
    let s = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_reuse_port(true).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(cfg.only_v6).map_err(err)?;
    }
    if let Some(n) = cfg.recv_buffer_size {
        s.set_recv_buffer_size(n).map_err(err)?;
    }
    s.bind(&addr.into()).map_err(err)?;
    Ok(s)
}

/// Peers the portable backend serves at once when `max_connections` is 0
/// (each has a socket and a thread).
pub const DEFAULT_MAX_PEERS: usize = 1024;

/// How long the portable backend keeps a silent peer's socket and thread
/// when `idle_timeout` is not set.
pub const DEFAULT_PEER_IDLE: Duration = Duration::from_secs(60);

/// Whether a reply addressed to `to` goes to `peer` (an IPv4 address and
/// its v4-mapped IPv6 form are the same peer).
fn same_peer(to: SocketAddr, peer: SocketAddr) -> bool {
    to.port() == peer.port() && to.ip().to_canonical() == peer.ip().to_canonical()
}

/// The limits of the portable backend.
#[derive(Debug, Clone, Copy)]
struct PeerLimits {
    max_peers: usize,
    idle: Duration,
    max_datagram: usize,
}

/// Decrements the open-peer count when a peer's thread ends, however it
/// ends.
struct PeerSlot(Arc<UdpCounters>);

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.0.peers_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The portable backend: accept peers, one thread each, at most
/// `limits.max_peers` at once; a peer silent for `limits.idle` is let go (its
/// next datagram makes it a new peer).
#[allow(clippy::too_many_arguments)]
fn portable_acceptor<H: DatagramHandler, F: Fn(usize) -> H + Send + Sync + 'static>(
    index: usize,
    cpus: &[usize],
    server: &crate::udp::UdpServer,
    stop: &Arc<AtomicBool>,
    factory: &Arc<F>,
    counters: &Arc<UdpCounters>,
    threads: &Threads,
    limits: PeerLimits,
) -> std::io::Result<()> {
    pin_worker(cpus, index).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tick = Some(Duration::from_millis(100));
    // Acquire pairs with the Release store in shutdown.
    while !stop.load(Ordering::Acquire) {
        let conn = match server.accept(tick) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => break, // closed
        };
        if let Ok(mut t) = threads.lock() {
            // Peers that went idle have ended: forget their handles.
            t.retain(|(_, h)| !h.is_finished());
        }
        if counters.peers_open.load(Ordering::Relaxed) >= limits.max_peers as u64 {
            // Dropping the connection forgets the peer: a later datagram
            // from it is a new peer again.
            counters.peers_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counters.peers_open.fetch_add(1, Ordering::Relaxed);
        let slot = PeerSlot(Arc::clone(counters));
        let stop = Arc::clone(stop);
        let factory = Arc::clone(factory);
        let counters_t = Arc::clone(counters);
        let cpus = cpus.to_vec();
        let spawned = std::thread::Builder::new()
            .name(format!("ringnet-udp-peer{index}"))
            .spawn(move || {
                // Dropped in reverse: the peer's socket closes before its
                // slot frees, so once `peers_open` has come down, the peer's
                // next datagram finds no socket left to vanish into and
                // makes a new peer.
                let _slot = slot;
                let conn = conn;
                let counters = counters_t;
                let _ = pin_worker(&cpus, index);
                let mut handler = factory(index);
                let peer = conn.peer_addr();
                let mut replies = Replies::default();
                let mut last = std::time::Instant::now();
                while !stop.load(Ordering::Acquire) {
                    let data = match conn.recv(tick) {
                        Ok(d) => d,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            if last.elapsed() >= limits.idle {
                                counters.peers_expired.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            continue;
                        }
                        // ICMP "port unreachable" for an earlier reply: the
                        // peer may come back; keep serving it.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(_) => break,
                    };
                    last = std::time::Instant::now();
                    if data.len() > limits.max_datagram {
                        counters.truncated.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    handler.on_datagram(peer, &data, &mut replies);
                    for (to, bytes) in replies.queue.drain(..) {
                        if !same_peer(to, peer) {
                            counters.truncated.fetch_add(1, Ordering::Relaxed);
                        } else if conn.send(&bytes).is_ok() {
                            counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                        } else {
                            counters.send_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            });
        match spawned {
            Ok(handle) => {
                if let Ok(mut t) = threads.lock() {
                    t.push((index, handle));
                }
            }
            // No thread for it (the slot moved into the failed closure was
            // dropped, so the count is back): refuse the peer, keep serving.
            Err(_) => {
                counters.peers_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
