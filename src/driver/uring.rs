//! The io_uring driver: a [`Ring`] per worker, its buffer groups, the
//! registered-file table, and the turning of raw completions into typed
//! [`Completion`]s.
//!
//! In flight at any time: one multishot accept, one multishot poll on the
//! wake eventfd, per open connection one multishot recv and at most one
//! send, and transient operations (files updates, shutdowns, cancels,
//! closes, the worker timer). The worker timer is one `Timeout` armed for
//! the core's nearest deadline; a new, earlier deadline arms one more, so
//! none is late.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::types;
use socket2::Socket;

use super::{Completion, NewConn, RecvEvent, SentBuf};
use crate::config::Config;
use crate::stats::WorkerStats;
use crate::token::{OpKind, Token};
use crate::uring::groups::Groups;
use crate::uring::mmap::HugePages;
use crate::uring::ring::{Held, Op, Ring, Target};

pub(crate) struct UringDriver {
    // Field order matters: the ring (which cancels what is in flight when
    // dropped) goes before the buffer groups it has registered.
    pub(super) ring: Ring,
    pub(super) groups: Groups,
    pub(super) stats: Arc<WorkerStats>,
    wake: RawFd,
    /// Registered-file table size (0: plain descriptors only).
    pub(super) fixed_files: usize,
    /// The accepts in flight, and whether they go into the table.
    pub(super) accepts: Accepts,
    /// A completion to report next (an accept's end, after the connection
    /// its last completion carried).
    follows: Option<Completion>,
    /// Recv with bundles (configured and supported by the kernel).
    pub(super) bundle: bool,
    pub(super) zc_threshold: usize,
    /// Each connection takes a buffer ring of its own from the pool.
    pub(super) per_conn_groups: bool,
    /// Closes submitted and not over (completed, or, when closes complete
    /// only on failure, taken by the kernel): the worker does not exit
    /// before they are, or their descriptors would leak.
    closes_in_flight: usize,
    /// Deadlines of the worker timers in flight.
    timers: Vec<Instant>,
    /// The kernel's count of dropped completions, last seen.
    dropped_seen: u32,
    /// Batched waiting: (completions to wait for, min-wait in µs), when
    /// configured and the kernel has min-wait (6.12).
    batch: Option<(usize, u32)>,
    /// The general timeout of a batched wait.
    batch_ts: types::Timespec,
    /// The buffers of one recv completion (reused).
    pub(super) recv_bufs: Vec<(u16, usize)>,
    /// Buffers taken from the rings and not given back (published as
    /// `buffers_in_use` before each wait and at the end).
    pub(super) lent_total: u64,
    /// Provided buffers replies are being sent from, and how many may be.
    pub(super) provided_in_flight: usize,
    pub(super) provided_cap: usize,
    /// The buffer the core kept out of its ring in the last receive (its
    /// bytes are a reply): group and buffer id.
    pub(super) kept: Option<(u16, u16)>,
    /// By shared-ring buffer id, the reply being sent from that buffer
    /// (a reply's completion names only its buffer).
    pub(super) replies: Vec<Reply>,
}

/// A worker's accepts: which kind is in flight on each listener, and the
/// entries of the registered-file table they have filled.
#[derive(Debug, Default)]
pub(crate) struct Accepts {
    /// By listener index, the accept in flight on it.
    pub(crate) arms: Vec<AcceptArm>,
    /// Accept straight into the table (`Config::accept_direct`).
    pub(crate) direct: bool,
    /// Table entries held by connections accepted into it.
    in_use: usize,
    /// An accept into the table met a full table: accept with plain
    /// descriptors until a quarter of it is free again.
    table_full: bool,
}

impl Accepts {
    /// The kind of accept to arm now.
    pub(crate) fn kind(&self) -> OpKind {
        if self.direct && !self.table_full {
            OpKind::AcceptDirect
        } else {
            OpKind::Accept
        }
    }

    /// Listener `listener`'s accept of kind `kind` posted a completion
    /// (`res`, `more`): what the core hears of it.
    fn completed(&mut self, listener: u16, kind: OpKind, res: i32, more: bool) -> AcceptEvent {
        let slot = usize::from(listener);
        let direct = kind == OpKind::AcceptDirect;
        if res >= 0 && direct {
            self.in_use += 1;
        }
        if more {
            return AcceptEvent::Going;
        }
        let arm = self.arms.get_mut(slot).map(std::mem::take);
        let errno = if res < 0 { -res } else { 0 };
        match errno {
            // The table is full: the kernel closed the connection it took.
            // Accept with plain descriptors until entries are free.
            libc::ENFILE if direct => {
                self.table_full = true;
                AcceptEvent::TableFull
            }
            // Cancelled to switch kinds: the core arms it again.
            libc::ECANCELED if arm == Some(AcceptArm::Switching) => AcceptEvent::Ended(0),
            _ => AcceptEvent::Ended(errno),
        }
    }

    /// A connection accepted into the table released its entry. `true`:
    /// a quarter of the table is free again, so new accepts go into it.
    fn released(&mut self, table: usize) -> bool {
        self.in_use = self.in_use.saturating_sub(1);
        let room = self.table_full && self.in_use <= table * 3 / 4;
        if room {
            self.table_full = false;
        }
        room
    }
}

/// What an accept's completion means for the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptEvent {
    /// The accept goes on.
    Going,
    /// The accept ended with this errno (0: by itself, or to switch kinds).
    Ended(i32),
    /// An accept into the table ended on a full table (the core re-arms;
    /// the next accept takes plain descriptors).
    TableFull,
}

/// The accept in flight on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum AcceptArm {
    /// None.
    #[default]
    Idle,
    /// With plain descriptors.
    Plain,
    /// Straight into the registered-file table.
    Direct,
    /// Cancelled to be armed again the other way (into the table, or
    /// not): its end is reported as a plain end, which the core re-arms.
    Switching,
}

impl AcceptArm {
    /// The armed accept of `kind` (`Accept` or `AcceptDirect`).
    pub(crate) fn armed(kind: OpKind) -> AcceptArm {
        if kind == OpKind::AcceptDirect {
            AcceptArm::Direct
        } else {
            AcceptArm::Plain
        }
    }

    /// The kind of the accept in flight, if one is armed and not being
    /// cancelled.
    pub(crate) fn kind(self) -> Option<OpKind> {
        match self {
            AcceptArm::Plain => Some(OpKind::Accept),
            AcceptArm::Direct => Some(OpKind::AcceptDirect),
            AcceptArm::Idle | AcceptArm::Switching => None,
        }
    }
}

/// A reply in flight from a provided buffer: whose, and which bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reply {
    pub(crate) key: u32,
    pub(crate) generation: u32,
    pub(crate) off: u32,
    pub(crate) len: u32,
    /// A SEND_ZC reply's result, kept until its notification.
    pub(crate) first: i32,
}

impl UringDriver {
    /// Build the worker's ring (on the worker's thread: SINGLE_ISSUER binds
    /// it), its buffer groups and registered-file table, and arm the wake
    /// poll.
    pub(crate) fn new(
        cfg: &Config,
        wake: &impl AsRawFd,
        stats: Arc<WorkerStats>,
    ) -> Result<UringDriver, crate::Error> {
        let raw = crate::uring::build_ring(cfg)?;
        let groups = Groups::new(
            &raw,
            cfg.buf_count,
            cfg.conn_buf_count,
            cfg.buf_size,
            cfg.group_pool_max,
            (cfg.buf_huge_pages, cfg.buf_incremental),
        )
        .map_err(|e| {
            if cfg.buf_incremental {
                crate::Error::Unsupported {
                    feature: "incremental buffer consumption",
                    detail: format!("IOU_PBUF_RING_INC (Linux 6.12) refused: {e}"),
                }
            } else {
                crate::Error::from(e)
            }
        })?;
        // A sparse table of direct descriptors (Linux 5.19). If the kernel
        // refuses it, connections just use plain descriptors.
        let fixed_files = if cfg.fixed_files > 0
            && raw
                .submitter()
                .register_files_sparse(cfg.fixed_files)
                .is_ok()
        {
            cfg.fixed_files as usize
        } else {
            0
        };
        if cfg.accept_direct && fixed_files == 0 {
            return Err(crate::Error::Unsupported {
                feature: "accept into the registered-descriptor table",
                detail: format!(
                    "registering a sparse table of {} descriptors (Linux 5.19) failed",
                    cfg.fixed_files
                ),
            });
        }
        let bundle = cfg.recv_bundle && raw.params().is_feature_recvsend_bundle();
        let batch_us = u32::try_from(cfg.batch_wait.as_micros()).unwrap_or(u32::MAX);
        let batch = (batch_us > 0 && raw.params().is_feature_min_timeout())
            .then_some((cfg.wait_batch.min(cfg.cq_entries) as usize, batch_us));
        let mut d = UringDriver {
            ring: Ring::new(raw),
            groups,
            stats,
            wake: wake.as_raw_fd(),
            fixed_files,
            accepts: Accepts {
                direct: cfg.accept_direct,
                ..Accepts::default()
            },
            follows: None,
            bundle,
            zc_threshold: cfg.send_zc_threshold,
            per_conn_groups: cfg.buffers == crate::config::BufferMode::PerConnection,
            closes_in_flight: 0,
            timers: Vec::new(),
            dropped_seen: 0,
            batch,
            batch_ts: types::Timespec::new().sec(1),
            recv_bufs: Vec::new(),
            lent_total: 0,
            provided_in_flight: 0,
            // Replies keep a buffer out of its ring; an incremental buffer
            // is shared by many receives, so none is kept.
            provided_cap: if cfg.buf_incremental {
                0
            } else {
                usize::from(cfg.buf_count / 4)
            },
            kept: None,
            replies: vec![Reply::default(); usize::from(cfg.buf_count)],
        };
        if cfg.fixed_send_buffers && !cfg.buf_incremental {
            d.groups
                .register_fixed(d.ring.raw())
                .map_err(|e| crate::Error::Unsupported {
                    feature: "fixed send buffers",
                    detail: format!(
                        "registering the shared buffer ring (IORING_REGISTER_BUFFERS): {e}"
                    ),
                })?;
        }
        if cfg.register_ring {
            d.ring
                .register_fd()
                .map_err(|e| crate::Error::Unsupported {
                    feature: "registered ring descriptor",
                    detail: format!("IORING_REGISTER_RING_FDS (Linux 5.18) failed: {e}"),
                })?;
            d.stats.add(&d.stats.registered_rings, 1);
        }
        match d.groups.pages {
            Some(HugePages::Reserved) => d.stats.add(&d.stats.huge_page_rings, 1),
            Some(HugePages::Transparent) => d.stats.add(&d.stats.thp_rings, 1),
            Some(HugePages::None) => {
                log::warn!(
                    "buffer ring on huge pages: none reserved and THP is off; ordinary pages"
                )
            }
            None => {}
        }
        d.arm_wake();
        d.sync_group_stats();
        Ok(d)
    }

    /// Give a provided buffer back to its ring, out of the count of those
    /// taken.
    #[inline]
    pub(super) fn give_back(&mut self, bgid: u16, bid: u16) {
        if let Some(ring) = self.groups.get_mut(bgid) {
            if ring.recycle(bid) {
                self.lent_total = self.lent_total.saturating_sub(1);
            }
        }
    }

    /// Close `target`, counted until it is over (the worker does not exit
    /// before its descriptors are released): until its completion, or,
    /// when a close completes only on failure, until the kernel has taken
    /// it ([`UringDriver::settle_closes`]). A connection's close then
    /// costs no completion, and the batch that closes connections no
    /// second wait for their completions.
    pub(super) fn submit_close(&mut self, target: Target, token: Token) {
        self.ring.submit(Op::Close { target }, token);
        self.closes_in_flight += 1;
    }

    /// Close table entry `index`, held by a connection accepted into it
    /// (closing it closes the socket).
    pub(super) fn close_direct(&mut self, index: u32, token: Token) {
        self.submit_close(Target::Fixed(index), token);
        if self.accepts.released(self.fixed_files) {
            self.switch_accepts();
        }
    }

    /// Cancel the accepts in flight of the other kind than new ones take
    /// now; each is armed again the new way when its end comes.
    fn switch_accepts(&mut self) {
        let want = self.accepts.kind();
        for i in 0..self.accepts.arms.len() {
            match self.accepts.arms[i].kind() {
                Some(kind) if kind != want => {
                    self.cancel_accept(i as u16, kind);
                    self.accepts.arms[i] = AcceptArm::Switching;
                }
                _ => {}
            }
        }
    }

    /// Cancel listener `listener`'s accept of `kind`; its end follows.
    pub(super) fn cancel_accept(&mut self, listener: u16, kind: OpKind) {
        let target = Token::new(kind, u32::from(listener), 0);
        self.ring.submit(
            Op::Cancel { target },
            Token::new(OpKind::AcceptCancel, u32::from(listener), 0),
        );
    }

    fn arm_wake(&mut self) {
        self.ring
            .submit(Op::PollMulti { fd: self.wake }, Token::worker(OpKind::Wake));
    }

    pub(super) fn sync_group_stats(&self) {
        let st = &self.stats;
        st.set(&st.groups_in_use, self.groups.in_use as u64);
        st.set(&st.groups_idle, self.groups.idle() as u64);
    }

    /// Make sure a timer fires by `deadline` (asked before each wait;
    /// nearly always one is armed by then).
    #[inline(always)]
    fn arm_timer(&mut self, deadline: Instant) {
        if !self.timers.iter().any(|&t| t <= deadline) {
            self.add_timer(deadline);
        }
    }

    /// Arm one more worker timer, for `deadline`.
    #[inline(never)]
    fn add_timer(&mut self, deadline: Instant) {
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1));
        self.ring
            .submit(Op::Timeout { after }, Token::worker(OpKind::Timer));
        self.timers.push(deadline);
    }

    /// Submit what is queued and wait for a batch: inlined into the
    /// worker's loop, so that the wait's system call returns straight to
    /// it (see [`Ring::submit_and_wait`]).
    #[inline(always)]
    pub(super) fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        if let Some(t) = deadline {
            self.arm_timer(t);
        }
        if let Some(e) = self.ring.take_fatal() {
            return Err(e);
        }
        // The counters are written before the call, while their cache line
        // is still at hand: after it, the kernel's work has pushed it out.
        let st = &self.stats;
        st.set(&st.buffers_in_use, self.lent_total);
        if self.ring.will_wait() {
            st.add(&st.waits, 1);
        }
        self.ring.submit_and_wait(self.batch, &self.batch_ts)?;
        self.settle_closes();
        let (dropped, overflow) = self.ring.ready();
        if dropped != self.dropped_seen {
            self.stats.set(&self.stats.cq_dropped, u64::from(dropped));
            // The kernel dropped completions (out of memory for its
            // overflow list): a timer's may be among them, so forget the
            // timers in flight and arm afresh rather than wait for ever.
            self.dropped_seen = dropped;
            self.timers.clear();
        }
        if overflow {
            self.stats.add(&self.stats.cq_overflows, 1);
        }
        Ok(())
    }

    /// Whether closes are still to be waited for before the worker exits;
    /// closes that complete only on failure are submitted now.
    pub(super) fn busy(&mut self) -> bool {
        self.stats.set(&self.stats.buffers_in_use, self.lent_total);
        if self.closes_in_flight > 0 && self.ring.closes_complete_on_failure_only() {
            self.ring.submit_pending();
            self.settle_closes();
        }
        self.closes_in_flight > 0
    }

    /// Closes submitted without a completion on success are over once the
    /// kernel has taken every queued SQE (a socket's close runs as it is
    /// submitted).
    #[inline]
    fn settle_closes(&mut self) {
        if self.closes_in_flight > 0
            && self.ring.closes_complete_on_failure_only()
            && self.ring.all_submitted()
        {
            self.closes_in_flight = 0;
        }
    }

    /// The batch's next completion, typed straight from the CQ; `None` at
    /// its end. The two kinds of a reply's round trip, a receive and a
    /// reply sent from its buffer, are told apart first by comparing the
    /// kind byte: no table lookup to decode it, no jump through a table.
    #[inline(always)]
    pub(super) fn next(&mut self) -> Option<Completion> {
        if self.follows.is_some() {
            return self.follows.take();
        }
        loop {
            let (ud, res, flags) = self.ring.next_raw()?;
            if Token::names(ud, OpKind::Recv) {
                let token = Token::new(OpKind::Recv, ud as u32, (ud >> 32) as u32);
                return Some(Completion::Recv {
                    key: token.key(),
                    generation: token.generation(),
                    ev: RecvEvent::Uring { res, flags },
                });
            }
            if Token::names(ud, OpKind::Reply) {
                match self.reply_completed(ud as u32 as usize, res, flags) {
                    Some(c) => return Some(c),
                    None => continue,
                }
            }
            if Ring::is_held(ud) {
                if let Some(c) = self.convert_held(ud, res, flags) {
                    return Some(c);
                }
            } else if let Some(token) = Token::from_user_data(ud) {
                if let Some(c) = self.convert(token, res, flags) {
                    return Some(c);
                }
            }
        }
    }

    /// A reply's completion: `bid` is the shared ring's buffer it was sent
    /// from (its `user_data` key), and the reply table names the
    /// connection.
    #[inline(always)]
    fn reply_completed(&mut self, bid: usize, res: i32, flags: u32) -> Option<Completion> {
        let r = self.replies.get_mut(bid)?;
        let notif = io_uring::cqueue::notif(flags);
        if io_uring::cqueue::more(flags) && !notif {
            // A SEND_ZC's result: reported with the notification, when the
            // kernel is done with the buffer.
            r.first = res;
            return None;
        }
        Some(Completion::Sent {
            key: r.key as usize,
            generation: r.generation,
            res: if notif { r.first } else { res },
            buf: SentBuf::Provided {
                bgid: crate::uring::groups::SHARED,
                bid: bid as u16,
                off: r.off,
                len: r.len,
            },
        })
    }

    /// Type the completion of an operation that holds no memory: what the
    /// core hears of it, if anything (an accept's last completion may
    /// carry a connection too: its end then follows, from `follows`).
    #[inline]
    fn convert(&mut self, token: Token, res: i32, flags: u32) -> Option<Completion> {
        let (key, generation) = (token.key(), token.generation());
        let more = io_uring::cqueue::more(flags);
        match token.kind() {
            // Typed by `next` before they come here (never held).
            OpKind::Recv | OpKind::Reply => None,
            OpKind::Accept | OpKind::AcceptDirect => self.accept_completed(token, res, more),
            OpKind::ShutdownWrite => Some(Completion::ShutDown { key, generation }),
            OpKind::Wake => {
                if !more {
                    self.arm_wake();
                }
                Some(Completion::Wake)
            }
            OpKind::Close => {
                // A failed close of a socket still releases the descriptor.
                // Counted down here only when every close completes.
                if !self.ring.closes_complete_on_failure_only() {
                    self.closes_in_flight -= 1;
                }
                None
            }
            // Acknowledgements: the operations they target post their own
            // completions. The other kinds hold memory (`convert_held`):
            // without it there is nothing to report.
            OpKind::Cancel | OpKind::AcceptCancel => None,
            OpKind::Send | OpKind::FilesUpdate | OpKind::Connect | OpKind::Timer => None,
        }
    }

    /// An accept's completion (its token's key is the listener's index).
    fn accept_completed(&mut self, token: Token, res: i32, more: bool) -> Option<Completion> {
        let (kind, listener) = (token.kind(), token.key() as u16);
        let conn = match crate::uring::ring::accepted(token, res) {
            Some(fd) => Some(NewConn::Plain(Socket::from(fd))),
            None if kind == OpKind::AcceptDirect && res >= 0 => {
                self.stats.add(&self.stats.direct_accepts, 1);
                Some(NewConn::Direct(res as u32))
            }
            None => None,
        };
        let accepted = conn.map(|conn| Completion::Accepted { listener, conn });
        let errno = match self.accepts.completed(listener, kind, res, more) {
            AcceptEvent::Going => return accepted,
            AcceptEvent::Ended(errno) => errno,
            AcceptEvent::TableFull => {
                self.stats.add(&self.stats.direct_table_full, 1);
                self.switch_accepts();
                0
            }
        };
        let ended = Completion::AcceptEnded { listener, errno };
        match accepted {
            Some(a) => {
                self.follows = Some(ended);
                Some(a)
            }
            None => Some(ended),
        }
    }

    /// Type the completion of an operation that holds memory (a send's
    /// bytes, a files update's source, a connect's address, a timer's
    /// timespec), given back on its last completion.
    #[inline(never)]
    fn convert_held(&mut self, ud: u64, res: i32, flags: u32) -> Option<Completion> {
        let c = self.ring.take_held(ud, res, flags)?;
        let (key, generation) = (c.token.key(), c.token.generation());
        match c.token.kind() {
            OpKind::Send => match c.held {
                Some(Held::Bytes(buf)) => Some(Completion::Sent {
                    key,
                    generation,
                    res: c.res,
                    buf: SentBuf::Bytes(buf),
                }),
                _ => None,
            },
            // Only installs are reported; a clear's completion is not.
            OpKind::FilesUpdate => match c.held {
                Some(Held::Fd(ref fd)) if **fd >= 0 => Some(Completion::Registered {
                    key,
                    generation,
                    ok: c.res == 1,
                }),
                _ => None,
            },
            OpKind::Connect => Some(Completion::Connected {
                key,
                generation,
                res: Some(c.res),
            }),
            OpKind::Timer => {
                // Timers fire in deadline order: this was the earliest.
                let timers = &mut self.timers;
                if let Some(i) = (0..timers.len()).min_by_key(|&i| timers[i]) {
                    timers.swap_remove(i);
                }
                Some(Completion::Timer)
            }
            // A kind that holds no memory is typed in one place.
            _ => self.convert(c.token, c.res, c.flags),
        }
    }
}
