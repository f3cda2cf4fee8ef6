//! How workers reach each other: every worker's command channel and wake
//! eventfd, and the set of its live connection ids. Shared (behind an `Arc`)
//! by the engine and every worker, so a handler on one worker can send to a
//! connection of another, or to all of them, and learn at once whether an id
//! is live.
//!
//! A request for another worker travels as a [`Command`] over its channel,
//! followed by a write to its eventfd; the worker drains its channel when it
//! wakes, outside any handler call. Messages from one sender reach each
//! connection in the order they were sent (one FIFO channel per worker, one
//! send queue per connection).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::connect::ConnectRequest;
use crate::sys::EventFd;
use crate::token::ConnId;

/// What a handler (or another thread) asks of a worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Make an outbound connection.
    Connect(ConnectRequest),
    /// Queue `bytes` on every open connection of the worker but `except`.
    Broadcast {
        except: Option<ConnId>,
        bytes: Arc<[u8]>,
    },
    /// Queue `bytes` on connection `to`, if it is still open.
    SendTo { to: ConnId, bytes: Arc<[u8]> },
}

/// A worker carrying out commands; the dispatch is the same for both
/// backends, the connection access is each worker's own.
pub(crate) trait CommandTarget {
    /// Start an outbound connection attempt.
    fn start_connect(&mut self, req: ConnectRequest);
    /// The slab keys of the worker's connections.
    fn conn_keys(&self) -> Vec<usize>;
    /// Connection `key`'s shared state, unless it is gone or being torn down.
    fn core_mut(&mut self, key: usize) -> Option<&mut crate::handler::ConnCore>;
    /// Flush `key` after the batch.
    fn flush_later(&mut self, key: usize);
    /// Close `key` now, for `reason`.
    fn close_now(&mut self, key: usize, reason: crate::CloseReason);
    /// The worker's configuration and counters.
    fn ctx(&self) -> &crate::engine::WorkerCtx;

    /// Carry out `cmds` in order: connects start, broadcasts and sends are
    /// offered to their connections.
    fn run_commands(&mut self, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::Connect(req) => self.start_connect(req),
                Command::Broadcast { except, bytes } => {
                    for key in self.conn_keys() {
                        self.offer(key, except, None, &bytes);
                    }
                }
                Command::SendTo { to, bytes } => self.offer(to.key(), None, Some(to), &bytes),
            }
        }
    }

    /// Hand a broadcast or directed message to connection `key`; one whose
    /// output queue is full is closed at once (a slow consumer).
    fn offer(&mut self, key: usize, except: Option<ConnId>, to: Option<ConnId>, bytes: &[u8]) {
        use crate::handler::Delivery;
        let limit = self.ctx().cfg.max_queued_output;
        let Some(core) = self.core_mut(key) else {
            return;
        };
        match core.take_message(except, to, bytes, limit) {
            Delivery::Queued => self.flush_later(key),
            Delivery::Skipped => {}
            Delivery::OverLimit => {
                let st = &self.ctx().stats;
                st.add(&st.output_limit_closes, 1);
                self.close_now(key, crate::CloseReason::OutputLimit { limit });
            }
        }
    }
}

/// One worker as the others see it.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) wake: Arc<EventFd>,
    /// Ids of the worker's open connections. Locked on every open and close
    /// (uncontended but for `send_to` checks) and by `send_to`.
    pub(crate) live: Mutex<HashSet<ConnId>>,
}

/// Every worker of one engine.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    pub(crate) workers: Vec<Peer>,
    /// Connections open across all workers (the `max_connections` count).
    open: AtomicUsize,
    /// `Config::max_connections`; 0: no limit.
    pub(crate) max_connections: usize,
}

/// Sending to a connection that is not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No open connection has this id (never existed, or closed).
    #[error("no open connection {0}")]
    UnknownConn(ConnId),
    /// The worker that owns the id has stopped.
    #[error("the worker owning {0} has stopped")]
    WorkerStopped(ConnId),
}

impl Bus {
    /// Take a place for an accepted connection; `false` when
    /// `max_connections` are open (the caller closes it at once).
    pub(crate) fn try_admit(&self) -> bool {
        if self.max_connections == 0 {
            self.open.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // Relaxed: the count is the only data; no other memory hangs on it.
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok()
    }

    /// Take a place regardless of the limit (outbound connections).
    pub(crate) fn admit(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Give a place back (a connection's slot was freed).
    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hand `cmd` to worker `index` and wake it.
    pub(crate) fn post(&self, index: usize, cmd: Command) -> bool {
        let Some(w) = self.workers.get(index) else {
            return false;
        };
        if w.commands.send(cmd).is_err() {
            return false;
        }
        w.wake.notify().is_ok()
    }

    /// Whether `id` is an open connection now.
    pub(crate) fn is_live(&self, id: ConnId) -> bool {
        self.workers
            .get(id.worker())
            .is_some_and(|w| w.live.lock().map(|s| s.contains(&id)).unwrap_or(false))
    }

    pub(crate) fn opened(&self, id: ConnId) {
        if let Some(w) = self.workers.get(id.worker()) {
            if let Ok(mut s) = w.live.lock() {
                s.insert(id);
            }
        }
    }

    pub(crate) fn closed(&self, id: ConnId) {
        if let Some(w) = self.workers.get(id.worker()) {
            if let Ok(mut s) = w.live.lock() {
                s.remove(&id);
            }
        }
    }

    /// Check `to` and queue `bytes` for it (directly into `local` when it is
    /// on worker `me`).
    pub(crate) fn send_to(
        &self,
        me: usize,
        to: ConnId,
        bytes: Arc<[u8]>,
        local: &mut Vec<Command>,
    ) -> Result<(), SendError> {
        if !self.is_live(to) {
            return Err(SendError::UnknownConn(to));
        }
        if to.worker() == me {
            local.push(Command::SendTo { to, bytes });
            Ok(())
        } else if self.post(to.worker(), Command::SendTo { to, bytes }) {
            Ok(())
        } else {
            Err(SendError::WorkerStopped(to))
        }
    }

    /// Queue `bytes` for every connection of every worker but `except`.
    pub(crate) fn broadcast(
        &self,
        me: usize,
        except: Option<ConnId>,
        bytes: Arc<[u8]>,
        local: &mut Vec<Command>,
    ) {
        for index in 0..self.workers.len() {
            let cmd = Command::Broadcast {
                except,
                bytes: Arc::clone(&bytes),
            };
            if index == me {
                local.push(cmd);
            } else {
                self.post(index, cmd);
            }
        }
    }
}
