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
