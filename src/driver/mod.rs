//! Drivers: how a worker's operations reach the kernel, on io_uring or on
//! epoll. The core (the worker module) decides; a driver carries out.
//!
//! # The contract
//!
//! The core owns every connection (its socket, its [`ConnCore`] and a small
//! [`DriverConn`] the driver keeps in the same slot) and asks the driver for
//! operations on it. An operation either finishes in the call (epoll does
//! everything that way: readiness, then a non-blocking system call) or is
//! *in flight* and finishes later with a [`Completion`] (io_uring). Every
//! call says which, and the core keeps its bookkeeping by that answer:
//!
//! * [`Driver::arm_recv`] starts receiving: io_uring submits a multishot
//!   recv over the connection's buffer group; epoll adds read interest.
//!   Input then arrives as [`Completion::Recv`], which the core hands back
//!   to [`Driver::receive`] with a closure that takes the bytes: io_uring
//!   lends the provided buffers the kernel filled and recycles them when the
//!   closure returns; epoll reads into its one buffer (at most
//!   [`epoll::READS_PER_EVENT`] times, multishot recv's fairness bound).
//!   [`Driver::stop_recv`] pauses: in flight on io_uring (a cancel, then a
//!   last `Recv` completion), at once on epoll.
//! * [`Driver::send`] writes the current send: io_uring takes the bytes
//!   (they come back in [`Completion::Sent`]); epoll writes what the socket
//!   takes now and says [`SendStart::WouldBlock`] for the rest, after which
//!   the core asks for [`Driver::want_writable`] and gets
//!   [`Completion::Writable`].
//! * [`Driver::shutdown_write`], [`Driver::cancel`], [`Driver::open_conn`]
//!   (registered descriptors on io_uring) and [`Driver::abort_connect`]
//!   return `true` when a completion will follow.
//! * [`Driver::close`] releases a connection whose operations have all
//!   finished; the driver closes the descriptor (on io_uring with a `Close`
//!   it waits for: [`Driver::busy`]).
//! * Accepts and outbound connects report [`Completion::Accepted`],
//!   [`Completion::AcceptEnded`] and [`Completion::Connected`].
//! * [`Driver::wait`] waits for completions, but no longer than the core's
//!   nearest deadline; [`Driver::next`] then hands them over one at a
//!   time, in order; [`Completion::Timer`] says deadlines may be due (the
//!   core reads the clock only then).
//!
//! A completion names its connection by slab key and generation; the core
//! drops those whose slot holds another generation (stale). Each
//! operation's io_uring form and epoll form sit side by side in one
//! function under `op/`.

pub(crate) mod epoll;
mod op;
pub(crate) mod uring;

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use socket2::Socket;

pub(crate) use op::recv::Received;
pub(crate) use op::send::SendStart;

use crate::config::Backend;

/// What a driver keeps per connection, in the core's slot (6 bytes).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DriverConn {
    /// io_uring: the buffer group the connection receives into.
    bgid: u16,
    /// io_uring with `FIXED`: the connection's entry in the registered-file
    /// table, low 16 bits (`index_hi`: the next 8; the table has at most
    /// 2^20 entries).
    index_lo: u16,
    index_hi: u8,
    /// io_uring: `FIXED`, `DIRECT`; epoll: `REGISTERED`, `READ`, `WRITE`.
    flags: u8,
}

impl DriverConn {
    /// io_uring: operations name the table entry [`DriverConn::index`].
    const FIXED: u8 = 1;
    const REGISTERED: u8 = 2;
    const READ: u8 = 4;
    const WRITE: u8 = 8;
    /// io_uring: the table entry is the connection's only descriptor (it
    /// was accepted straight into the table).
    const DIRECT: u8 = 16;

    #[inline]
    fn has(self, f: u8) -> bool {
        self.flags & f != 0
    }

    #[inline]
    fn set(&mut self, f: u8, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    /// The connection's registered-file table entry (with `FIXED`).
    #[inline]
    fn index(self) -> u32 {
        u32::from(self.index_lo) | u32::from(self.index_hi) << 16
    }

    #[inline]
    fn set_index(&mut self, index: u32) {
        debug_assert!(index < 1 << 24);
        self.index_lo = index as u16;
        self.index_hi = (index >> 16) as u8;
    }

    /// How io_uring operations name the connection whose plain descriptor
    /// (if any) is `fd`.
    #[inline]
    fn target(self, fd: RawFd) -> crate::uring::ring::Target {
        use crate::uring::ring::Target;
        if self.has(DriverConn::FIXED) {
            Target::Fixed(self.index())
        } else {
            Target::Fd(fd)
        }
    }
}

/// A new connection's descriptor as the driver reports it.
#[derive(Debug)]
pub(crate) enum NewConn {
    /// A plain descriptor.
    Plain(Socket),
    /// An entry of io_uring's registered-file table, the connection's only
    /// descriptor (`Config::accept_direct`).
    Direct(u32),
}

/// How a receive event reached the core.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RecvEvent {
    /// io_uring: a recv completion (result and flags).
    Uring { res: i32, flags: u32 },
    /// epoll: the socket is readable (or hung up).
    Readable,
}

impl RecvEvent {
    /// The receive stays live in the kernel after this event (a multishot
    /// recv's `F_MORE`).
    #[inline]
    pub(crate) fn more(self) -> bool {
        matches!(self, RecvEvent::Uring { flags, .. } if io_uring::cqueue::more(flags))
    }
}

/// What a finished io_uring send had sent from.
#[derive(Debug)]
pub(crate) enum SentBuf {
    /// The connection's output, lent whole.
    Bytes(Vec<u8>),
    /// A reply straight from the provided buffer `bid` of group `bgid`
    /// (bytes `off..off + len`), still out of its ring:
    /// [`Driver::give_back`] returns it, or [`Driver::send_provided`]
    /// sends the rest of it.
    Provided {
        bgid: u16,
        bid: u16,
        off: u32,
        len: u32,
    },
}

/// A completion, typed once by the driver.
// A plain tag byte: the variant is read with one load, not decoded from a
// niche in a field (about 2% fewer instructions per echo round trip).
#[derive(Debug)]
#[repr(u8)]
pub(crate) enum Completion {
    /// A connection from listener `listener` (its index in the worker's
    /// listeners).
    Accepted { listener: u16, conn: NewConn },
    /// The accept on listener `listener` stopped: `errno` 0 when it just
    /// ended (re-arm), `ECANCELED` when it was cancelled, else the errno
    /// (back off or re-arm).
    AcceptEnded { listener: u16, errno: i32 },
    /// Input (or its end) for a connection.
    Recv {
        key: usize,
        generation: u32,
        ev: RecvEvent,
    },
    /// epoll: the connection takes output again.
    Writable { key: usize, generation: u32 },
    /// io_uring: a send finished; `res` bytes written or `-errno`; the bytes
    /// come back.
    Sent {
        key: usize,
        generation: u32,
        res: i32,
        buf: SentBuf,
    },
    /// io_uring: a `shutdown(SHUT_WR)` finished.
    ShutDown { key: usize, generation: u32 },
    /// io_uring: a connection's descriptor was installed in the registered
    /// table (`ok`), or could not be (it keeps its plain descriptor).
    Registered {
        key: usize,
        generation: u32,
        ok: bool,
    },
    /// An outbound attempt finished (key in the core's pending slab);
    /// decided by [`Driver::connect_result`].
    Connected {
        key: usize,
        generation: u32,
        res: Option<i32>,
    },
    /// The wake eventfd fired.
    Wake,
    /// The worker timer fired (io_uring), or a wait with a deadline
    /// returned (epoll): deadlines may be due.
    Timer,
}

/// A worker's driver.
// One per worker, built once and never moved: boxing the larger variant
// would only add a pointer chase to every operation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Driver {
    Uring(uring::UringDriver),
    Epoll(epoll::EpollDriver),
}

impl Driver {
    /// The backend this driver runs on.
    #[inline]
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Driver::Uring(_) => Backend::Uring,
            Driver::Epoll(_) => Backend::Epoll,
        }
    }

    /// Wait for completions (none when some are already waiting), at most
    /// until `deadline`; they are then taken one at a time with
    /// [`Driver::next`].
    #[inline]
    pub(crate) fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        match self {
            Driver::Uring(d) => d.wait(deadline),
            Driver::Epoll(d) => d.wait(deadline),
        }
    }

    /// The next completion of the batch the last [`Driver::wait`] found;
    /// `None` at its end (completions that arrive meanwhile wait for the
    /// next batch). io_uring types each one straight from the CQ.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<Completion> {
        match self {
            Driver::Uring(d) => d.next(),
            Driver::Epoll(d) => d.next(),
        }
    }

    /// Hand what is queued to the kernel now (io_uring: one submit without
    /// waiting), for an answer that should not wait for the end of the
    /// batch; epoll writes at once anyway.
    pub(crate) fn submit_now(&mut self) {
        if let Driver::Uring(d) = self {
            d.ring.submit_pending();
        }
    }

    /// Operations the driver still waits for on its own (closes in flight;
    /// closes that complete only on failure are submitted here first).
    pub(crate) fn busy(&mut self) -> bool {
        match self {
            Driver::Uring(d) => d.busy(),
            Driver::Epoll(_) => false,
        }
    }
}
