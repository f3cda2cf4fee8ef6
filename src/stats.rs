//! Per-worker counters, written by the worker and readable from any thread.
//!
//! Every counter is an independent `AtomicU64` with `Relaxed` ordering:
//! each is a tally on its own, no other memory is published through it,
//! and readers only need an eventually consistent value. Only the worker
//! that owns a `WorkerStats` writes it (its driver and its core, on its own
//! thread), so an update is a load and a store: no read-modify-write, whose
//! locked instruction costs tens of cycles on every receive and send.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one worker. Laid out in the order written, from
        /// a cache line's start: those every connection updates come first,
        /// in one line.
        #[derive(Debug, Default)]
        #[repr(C, align(64))]
        pub struct WorkerStats { $($(#[$doc])* pub(crate) $name: AtomicU64,)* }

        /// A copy of a worker's counters at one moment (or a sum of several).
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Stats { $($(#[$doc])* pub $name: u64,)* }

        impl WorkerStats {
            /// Read every counter.
            pub fn snapshot(&self) -> Stats {
                Stats { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl std::ops::Add for Stats {
            type Output = Stats;
            fn add(self, o: Stats) -> Stats {
                Stats { $($name: self.$name + o.$name,)* }
            }
        }
    };
}

counters! {
    /// Connections accepted.
    accepted,
    /// Connections fully closed (descriptor released, slot freed).
    closed,
    /// Connections open now (slots in the slab).
    open,
    /// Bytes received.
    bytes_in,
    /// Bytes sent.
    bytes_out,
    /// Provided buffers a completion named and the worker has not given back
    /// to their ring (from the rings' own records, published before each
    /// wait: 0 between batches unless a buffer leaked).
    buffers_in_use,
    /// Replies sent straight from the provided buffer their bytes arrived
    /// in (io_uring: the handler sent bytes it was lent), without a copy.
    buffer_replies,
    /// Times the worker's loop came back from waiting for the kernel
    /// (`io_uring_enter` with a wait, `epoll_wait`): batches processed.
    waits,
    /// Outbound connections made.
    connected,
    /// Outbound connection requests that failed (every address tried).
    connect_failures,
    /// Multishot recvs that ended with ENOBUFS and were re-armed.
    enobufs,
    /// Multishot recvs re-armed (after ENOBUFS, or after a full CQ ended them).
    recv_rearms,
    /// Times accept backed off after EMFILE, ENFILE or ENOMEM.
    accept_backoffs,
    /// Multishot accepts re-armed.
    accept_rearms,
    /// Completions dropped because their slot had been reused.
    stale,
    /// Waits that began with completions held back by the kernel because
    /// the CQ was full (IORING_SQ_CQ_OVERFLOW; they are delivered later,
    /// NODROP).
    cq_overflows,
    /// Completions the kernel dropped (its CQ overflow counter; stays 0 on a
    /// kernel with NODROP unless it runs out of memory).
    cq_dropped,
    /// Connections accepted and closed at once because `max_connections`
    /// were open.
    refused,
    /// Times receiving was paused because a connection's queued output
    /// passed the high watermark.
    paused,
    /// Connections closed by `idle_timeout`.
    idle_timeouts,
    /// Connections closed by `read_timeout` (a message that did not
    /// complete in time).
    read_timeouts,
    /// Connections closed because their queued output made no progress for
    /// `write_timeout`.
    write_timeouts,
    /// Connections closed gracefully (output flushed) during a shutdown.
    shutdown_graceful,
    /// Connections still open at the shutdown deadline, closed regardless.
    shutdown_forced,
    /// Per-connection buffer rings owned by open connections.
    groups_in_use,
    /// Per-connection buffer rings registered and idle in the pool.
    groups_idle,
    /// Connections that wanted their own ring but got the shared one.
    group_fallbacks,
    /// Connections installed in the ring's registered-descriptor table.
    fixed_installs,
    /// Connections accepted straight into the registered-descriptor table
    /// (`Config::accept_direct`).
    direct_accepts,
    /// Times the registered-descriptor table was full for an accept
    /// straight into it: the kernel closed that connection, and the worker
    /// accepted with plain descriptors until a quarter of the table was free
    /// again.
    direct_table_full,
    /// Buffers that arrived in recv completions carrying several (bundles).
    bundled_buffers,
    /// Sends made with SEND_ZC.
    zc_sends,
    /// Rings whose shared buffer ring is on hugetlbfs pages
    /// (`Config::buf_huge_pages`, with pages reserved).
    huge_page_rings,
    /// Rings whose shared buffer ring is advised transparent huge pages
    /// (`Config::buf_huge_pages`, no hugetlbfs pages reserved).
    thp_rings,
    /// Receives that took only part of an incremental buffer, the kernel
    /// keeping the rest for the next (`Config::buf_incremental`).
    partial_buffers,
    /// Rings whose descriptor is registered (`Config::register_ring`).
    registered_rings,
    /// Connections closed because a broadcast or `send_to` found their
    /// output queue past `max_queued_output` (slow consumers).
    output_limit_closes,
    /// TLS handshakes completed (the handler heard `on_open`).
    tls_handshakes,
    /// TLS sessions alive now (handshaking or open). Each holds a rustls
    /// connection: about 9 KB of server memory once idle (measured with
    /// `ringnet bench hold --tls`), its incoming record buffer bounded by
    /// one TLS record (16 KiB plus overhead) because the worker takes the
    /// plaintext out after every record, its outgoing records moved into
    /// the connection's output at once (bounded by backpressure).
    tls_sessions,
    /// TLS connections closed by a failed session (not TLS, an alert, a
    /// refused certificate) or a handshake over its time limit.
    tls_failures,
}

impl WorkerStats {
    #[inline]
    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        // One writer (the module docs): nothing can come between the load
        // and the store.
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub(crate) fn sub(&self, c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    #[inline]
    pub(crate) fn set(&self, c: &AtomicU64, n: u64) {
        c.store(n, Relaxed);
    }
}
