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

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock, RwLock};

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
    /// Which of the worker's connections are open.
    pub(crate) live: LiveTable,
}

/// Slab keys per chunk of a [`LiveTable`] (4 KiB of atomics: a page).
const LIVE_CHUNK: usize = 1024;

/// Chunks a [`LiveTable`] reaches without a lock (the first 64 Ki keys of
/// a worker).
const LIVE_FAST: usize = 64;

/// Set in a [`LiveTable`] entry while its key holds an open connection
/// (generations are 24 bits).
const LIVE_BIT: u32 = 1 << 31;

/// The open connections of one worker: by slab key, the generation of the
/// connection open there (with [`LIVE_BIT`]) or 0. Written only by the
/// worker, on each open and close (one atomic store), and read by anyone
/// (`send_to`'s check) without waiting for it. Chunks of [`LIVE_CHUNK`]
/// keys are added as the slab grows and never move or shrink, so an open
/// connection costs 4 bytes here. The first [`LIVE_FAST`] chunks are each
/// set once and then read without a lock; beyond them (more than 64 Ki
/// connections on one worker) a lock is taken for reading, and for writing
/// only to add a chunk.
#[derive(Debug)]
pub(crate) struct LiveTable {
    fast: [OnceLock<Box<[AtomicU32]>>; LIVE_FAST],
    chunks: RwLock<Vec<Box<[AtomicU32]>>>,
}

impl Default for LiveTable {
    fn default() -> Self {
        LiveTable {
            fast: std::array::from_fn(|_| OnceLock::new()),
            chunks: RwLock::new(Vec::new()),
        }
    }
}

fn new_chunk() -> Box<[AtomicU32]> {
    (0..LIVE_CHUNK).map(|_| AtomicU32::new(0)).collect()
}

impl LiveTable {
    /// The entry of `key`, if its chunk exists (`grow`: create it).
    #[inline]
    fn with_entry<R>(&self, key: usize, grow: bool, f: impl FnOnce(&AtomicU32) -> R) -> Option<R> {
        let (chunk, at) = (key / LIVE_CHUNK, key % LIVE_CHUNK);
        if let Some(cell) = self.fast.get(chunk) {
            let c = if grow {
                Some(cell.get_or_init(new_chunk))
            } else {
                cell.get()
            };
            return c.map(|c| f(&c[at]));
        }
        let far = chunk - LIVE_FAST;
        if let Ok(chunks) = self.chunks.read() {
            if let Some(c) = chunks.get(far) {
                return Some(f(&c[at]));
            }
        }
        if !grow {
            return None;
        }
        let mut chunks = self.chunks.write().ok()?;
        while chunks.len() <= far {
            chunks.push(new_chunk());
        }
        Some(f(&chunks[far][at]))
    }

    /// Connection `id` (of this worker) is open.
    pub(crate) fn open(&self, id: ConnId) {
        let value = id.generation() | LIVE_BIT;
        // Release: whoever sees the id live also sees what the worker did
        // before it opened.
        self.with_entry(id.key(), true, |e| e.store(value, Ordering::Release));
    }

    /// Connection `id` (of this worker) closed.
    pub(crate) fn close(&self, id: ConnId) {
        self.with_entry(id.key(), false, |e| {
            // Only the current connection's entry is cleared. The worker is
            // the table's one writer, so a load and a store do (no locked
            // read-modify-write).
            if e.load(Ordering::Relaxed) == id.generation() | LIVE_BIT {
                e.store(0, Ordering::Release);
            }
        });
    }

    /// Whether `id` is open now.
    pub(crate) fn contains(&self, id: ConnId) -> bool {
        // Acquire: pairs with the store in `open`.
        self.with_entry(id.key(), false, |e| {
            e.load(Ordering::Acquire) == id.generation() | LIVE_BIT
        })
        .unwrap_or(false)
    }
}

/// Every worker of one engine.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    pub(crate) workers: Vec<Peer>,
    /// Connections open across all workers (the `max_connections` count;
    /// kept only when there is a limit).
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
            // No limit: nothing is counted (the count would be one cache
            // line every worker writes on every accept and close).
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
        if self.max_connections > 0 {
            self.open.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Give a place back (a connection's slot was freed).
    pub(crate) fn release(&self) {
        if self.max_connections > 0 {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
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
            .is_some_and(|w| w.live.contains(id))
    }

    pub(crate) fn opened(&self, id: ConnId) {
        if let Some(w) = self.workers.get(id.worker()) {
            w.live.open(id);
        }
    }

    pub(crate) fn closed(&self, id: ConnId) {
        if let Some(w) = self.workers.get(id.worker()) {
            w.live.close(id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_table_knows_each_open_connection_by_generation() {
        let t = LiveTable::default();
        let a = ConnId::new(0, 5, 1);
        assert!(!t.contains(a), "nothing is open yet");
        t.open(a);
        assert!(t.contains(a));
        // The same key with another generation is another connection.
        assert!(!t.contains(ConnId::new(0, 5, 2)));
        let b = ConnId::new(0, 5, 2);
        t.close(a);
        t.open(b);
        // A late close of the old connection leaves the new one open.
        t.close(a);
        assert!(t.contains(b));
        t.close(b);
        assert!(!t.contains(b));
        // Generation 0 is a generation like any other.
        let z = ConnId::new(0, 0, 0);
        assert!(!t.contains(z));
        t.open(z);
        assert!(t.contains(z));
    }

    #[test]
    fn the_live_table_grows_by_chunks_and_answers_any_id() {
        let t = LiveTable::default();
        // An id from outside (a client's number) asks; nothing grows.
        assert!(!t.contains(ConnId::from_u64(u64::MAX)));
        let made = |t: &LiveTable| {
            t.fast.iter().filter(|c| c.get().is_some()).count()
                + t.chunks.read().map(|c| c.len()).unwrap_or(0)
        };
        assert_eq!(made(&t), 0);
        // A key in the lock-free chunks makes only its own chunk.
        let near = ConnId::new(0, 3 * LIVE_CHUNK + 7, 9);
        t.open(near);
        assert_eq!(made(&t), 1);
        assert!(t.contains(near));
        assert!(!t.contains(ConnId::new(0, 3 * LIVE_CHUNK + 8, 9)));
        // One beyond them makes the locked ones up to its own.
        let far = ConnId::new(0, (LIVE_FAST + 2) * LIVE_CHUNK + 1, 4);
        t.open(far);
        assert_eq!(t.chunks.read().map(|c| c.len()).ok(), Some(3));
        assert!(t.contains(far));
        t.close(far);
        assert!(!t.contains(far));
    }

    #[test]
    fn readers_see_opens_while_the_table_grows() {
        let t = Arc::new(LiveTable::default());
        let reader = {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                // Each key is opened in order; once seen open it stays so.
                let mut seen = 0;
                while seen < 5000 {
                    if t.contains(ConnId::new(0, seen, 1)) {
                        seen += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        for key in 0..5000 {
            t.open(ConnId::new(0, key, 1));
        }
        reader.join().expect("reader");
    }
}
