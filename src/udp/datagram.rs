//! What UDP handlers see and the engine counts: [`DatagramHandler`],
//! [`Replies`], the counters, and the datagram size both backends deliver.
//! Shared by the UDP engine and its io_uring worker.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use crate::config::Config;

/// User code that answers datagrams.
pub trait DatagramHandler {
    /// A datagram from `from`; queue answers on `out`.
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], out: &mut Replies);
}

/// Datagrams to send after the handler returns.
#[derive(Debug, Default)]
pub struct Replies {
    pub(crate) queue: Vec<(SocketAddr, Vec<u8>)>,
}

impl Replies {
    /// Send `data` to `to` (on the portable backend only the peer whose
    /// datagram is being answered can be reached; others are counted as
    /// dropped).
    pub fn send_to(&mut self, to: SocketAddr, data: &[u8]) {
        self.queue.push((to, data.to_vec()));
    }
}

/// Echoes every datagram to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpEcho;

impl DatagramHandler for UdpEcho {
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], out: &mut Replies) {
        out.send_to(from, data);
    }
}

/// Counters of a UDP engine (all workers).
#[derive(Debug, Default)]
pub(crate) struct UdpCounters {
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) peers_open: AtomicU64,
    pub(crate) peers_refused: AtomicU64,
    pub(crate) peers_expired: AtomicU64,
}

/// A snapshot of a UDP engine's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams handed to the handler.
    pub datagrams_in: u64,
    /// Replies sent.
    pub datagrams_out: u64,
    /// Datagrams too large for a buffer (dropped), or replies that could not
    /// be addressed.
    pub truncated: u64,
    /// Replies that failed.
    pub send_errors: u64,
    /// Portable backend: peers served now (each has a socket and a thread;
    /// io_uring keeps no per-peer state and reports 0).
    pub peers_open: u64,
    /// Portable backend: new peers turned away at the peer limit
    /// (`max_connections`, or [`DEFAULT_MAX_PEERS`](super::engine::DEFAULT_MAX_PEERS)).
    pub peers_refused: u64,
    /// Portable backend: peers let go after `idle_timeout` (or
    /// [`DEFAULT_PEER_IDLE`](super::engine::DEFAULT_PEER_IDLE)) without a datagram.
    pub peers_expired: u64,
}

/// The size of the provided buffers an io_uring UDP worker receives into:
/// `buf_size`, at least 2048.
pub(crate) fn recv_buf_size(cfg: &Config) -> u32 {
    cfg.buf_size.max(2048)
}

/// What io_uring's multishot recvmsg writes into a buffer before the
/// payload: its `io_uring_recvmsg_out` header (16 bytes) and room for the
/// source address (the worker asks for a whole `sockaddr_storage`).
pub(crate) const RECVMSG_ROOM: usize = 16 + std::mem::size_of::<libc::sockaddr_storage>();

/// The largest datagram a UDP engine delivers with `cfg`, on both
/// backends: io_uring's receive buffer (`buf_size`, at least 2048) less
/// the 144 bytes its recvmsg writes first (a 16-byte header and room for the
/// source address): 3952 bytes with the default 4 KiB buffers. Larger datagrams are dropped and counted as
/// `truncated`; raise `buf_size` for bigger ones.
pub fn max_datagram(cfg: &Config) -> usize {
    recv_buf_size(cfg) as usize - RECVMSG_ROOM
}
