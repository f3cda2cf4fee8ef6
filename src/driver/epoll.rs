//! The epoll driver: one epoll set per worker, level-triggered, and one
//! read buffer; readiness turned into the same typed [`Completion`]s the
//! io_uring driver reports. Nothing is ever in flight in the kernel, so
//! every operation finishes in its call.
//!
//! Each listener is in the set while the core accepts on it (with
//! `EPOLLEXCLUSIVE` when every worker shares it, so one connection wakes
//! one worker); each wake-up accepts up to [`ACCEPT_BATCH`] connections
//! with `accept4(SOCK_NONBLOCK)`. On EMFILE/ENFILE/ENOMEM the listener
//! leaves the set and the core hears [`Completion::AcceptEnded`], so the
//! loop never spins on a queue it cannot drain. Connections are in the set
//! for `EPOLLIN|EPOLLRDHUP` while the core receives and for `EPOLLOUT`
//! only while output waits for the socket.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::{Completion, RecvEvent};
use crate::stats::WorkerStats;
use crate::sys::epoll::{self, Epoll, Event};
use crate::token::{OpKind, Token};

/// Connections accepted per listener wake-up.
pub(crate) const ACCEPT_BATCH: usize = 64;
/// Reads per readiness event on one connection.
pub(crate) const READS_PER_EVENT: usize = 32;
/// Events taken per `epoll_wait`.
const MAX_EVENTS: usize = 1024;

pub(crate) struct EpollDriver {
    pub(super) ep: Epoll,
    /// The one read buffer, lent to the handler for each read.
    pub(super) buf: Vec<u8>,
    events: Vec<Event>,
    /// The completions of the batch the last wait found, not yet taken.
    pub(super) ready: VecDeque<Completion>,
    /// Each listener's descriptor while it is in the set (by index).
    pub(super) listening: Vec<Option<RawFd>>,
    pub(super) stats: Arc<WorkerStats>,
}

impl EpollDriver {
    pub(crate) fn new(
        buf_size: usize,
        wake: &impl AsRawFd,
        stats: Arc<WorkerStats>,
    ) -> io::Result<EpollDriver> {
        let ep = Epoll::new(MAX_EVENTS)?;
        ep.add(
            wake.as_raw_fd(),
            epoll::IN,
            Token::worker(OpKind::Wake).to_user_data(),
        )?;
        Ok(EpollDriver {
            ep,
            buf: vec![0u8; buf_size],
            events: Vec::with_capacity(MAX_EVENTS),
            ready: VecDeque::new(),
            listening: Vec::new(),
            stats,
        })
    }

    /// The next completion of the batch.
    pub(super) fn next(&mut self) -> Option<Completion> {
        self.ready.pop_front()
    }

    /// Wait for readiness (at most until `deadline`) and queue what it
    /// means in `ready`, for [`EpollDriver::next`].
    pub(super) fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        // With a deadline, wait to the nanosecond (a millisecond timeout
        // would round up and fire timers up to a millisecond late).
        let waited = match deadline {
            None => self.ep.wait(&mut events, -1),
            Some(t) => self
                .ep
                .wait_timeout(&mut events, t.saturating_duration_since(Instant::now())),
        };
        self.stats.add(&self.stats.waits, 1);
        match waited {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        }
        if deadline.is_some() {
            self.ready.push_back(Completion::Timer);
        }
        for ev in &events {
            let Some(tok) = Token::from_user_data(ev.data) else {
                continue;
            };
            let (key, generation) = (tok.key(), tok.generation());
            match tok.kind() {
                OpKind::Accept => self.accept_batch(key as u16),
                OpKind::Wake => self.ready.push_back(Completion::Wake),
                OpKind::Connect => self.ready.push_back(Completion::Connected {
                    key,
                    generation,
                    res: None,
                }),
                OpKind::Recv => {
                    if ev.events & epoll::OUT != 0 {
                        self.ready
                            .push_back(Completion::Writable { key, generation });
                    }
                    if ev.events & (epoll::IN | epoll::RDHUP | epoll::HUP_ERR) != 0 {
                        self.ready.push_back(Completion::Recv {
                            key,
                            generation,
                            ev: RecvEvent::Readable,
                        });
                    }
                }
                _ => {}
            }
        }
        self.events = events;
        Ok(())
    }

    /// Take listener `index` out of the set.
    pub(super) fn unlisten(&mut self, index: u16) {
        if let Some(fd) = self
            .listening
            .get_mut(usize::from(index))
            .and_then(Option::take)
        {
            let _ = self.ep.delete(fd);
        }
    }

    /// Change a connection's interest to `want` (epoll bits), adding it to
    /// the set the first time.
    pub(super) fn set_interest(
        &mut self,
        dc: &mut super::DriverConn,
        fd: RawFd,
        data: u64,
        want: u32,
    ) -> io::Result<()> {
        if dc.has(super::DriverConn::REGISTERED) {
            self.ep.modify(fd, want, data)?;
        } else {
            self.ep.add(fd, want, data)?;
            dc.set(super::DriverConn::REGISTERED, true);
        }
        Ok(())
    }
}

/// The epoll bits for a connection's driver state.
pub(super) fn interest(dc: super::DriverConn) -> u32 {
    let mut want = 0;
    if dc.has(super::DriverConn::READ) {
        want |= epoll::IN | epoll::RDHUP;
    }
    if dc.has(super::DriverConn::WRITE) {
        want |= epoll::OUT;
    }
    want
}
