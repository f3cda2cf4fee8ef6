//! The individual feature probes: each runs the operation, registers the
//! resource or builds a ring with the setup flag, and reports what it saw.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, Builder, IoUring, Probe};

use super::report::Feature;
use super::run::{drive_multishot, push, MULTISHOT_UD};
use super::{errno_text, io_text, RING_ENTRIES, WAIT_BUDGET};
use crate::uring::mmap::AnonMap;

/// Result of one probe before it is named and dated.
pub(super) struct Outcome {
    pub(super) supported: bool,
    pub(super) detail: String,
}

impl Outcome {
    pub(super) fn yes(detail: impl Into<String>) -> Self {
        Outcome {
            supported: true,
            detail: detail.into(),
        }
    }

    pub(super) fn no(detail: impl Into<String>) -> Self {
        Outcome {
            supported: false,
            detail: detail.into(),
        }
    }

    pub(super) fn into_feature(self, name: &'static str, since: &'static str) -> Feature {
        Feature {
            name,
            supported: self.supported,
            detail: self.detail,
            since,
        }
    }
}

pub(super) fn probe_send_zc(ring: &IoUring) -> Outcome {
    let mut probe = Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) if probe.is_supported(opcode::SendZc::CODE) => {
            Outcome::yes("opcode probe lists IORING_OP_SEND_ZC")
        }
        Ok(()) => Outcome::no("opcode probe does not list IORING_OP_SEND_ZC"),
        Err(err) => Outcome::no(format!("opcode probe failed: {}", io_text(&err))),
    }
}

pub(super) fn probe_registered_files(ring: &IoUring) -> Outcome {
    match ring.submitter().register_files_sparse(4) {
        Ok(()) => {
            // Dropping the ring releases the table anyway; unregistering is tidiness.
            let _ = ring.submitter().unregister_files();
            Outcome::yes("registered a sparse table of 4 direct descriptors")
        }
        Err(err) => Outcome::no(format!("sparse file table: {}", io_text(&err))),
    }
}

/// Build (and immediately drop) a ring on this thread with the flags `configure` sets.
pub(super) fn probe_setup_flag(flags: &str, configure: impl FnOnce(&mut Builder)) -> Outcome {
    let mut builder = IoUring::<squeue::Entry, cqueue::Entry>::builder();
    configure(&mut builder);
    match builder.build(RING_ENTRIES) {
        Ok(ring) => {
            drop(ring);
            Outcome::yes(format!("ring set up with {flags}"))
        }
        Err(err) => Outcome::no(format!("setup with {flags}: {}", io_text(&err))),
    }
}

pub(super) fn probe_multishot_accept() -> Outcome {
    let listener = match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))) {
        Ok(l) => l,
        Err(err) => return Outcome::no(format!("loopback listener: {}", io_text(&err))),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(err) => return Outcome::no(format!("loopback listener: {}", io_text(&err))),
    };
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(err) => return Outcome::no(format!("ring setup: {}", io_text(&err))),
    };

    let sqe = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(MULTISHOT_UD);
    // SAFETY: AcceptMulti carries no pointers (no sockaddr out-parameter), only the
    // listener's fd; `listener` outlives the request, which `drive_multishot`
    // cancels and reaps before returning (and the ring is dropped before the
    // listener in any case, as it is declared later).
    let pushed = unsafe { push(&mut ring, &sqe) };
    let run = match pushed {
        Ok(()) => drive_multishot(&mut ring, || TcpStream::connect_timeout(&addr, WAIT_BUDGET)),
        Err(err) => return Outcome::no(format!("queueing AcceptMulti: {}", io_text(&err))),
    };

    // Every non-negative accept result is a connection the kernel installed for us.
    for c in run
        .completions
        .iter()
        .filter(|c| c.user_data == MULTISHOT_UD)
    {
        if c.result >= 0 {
            // SAFETY: a non-negative result of an accept CQE is a brand-new descriptor
            // that the kernel installed in our table for this request; nothing else
            // knows about it, and each CQE is visited once, so it is closed once.
            drop(unsafe { OwnedFd::from_raw_fd(c.result) });
        }
    }

    match run.first {
        Err(detail) => Outcome::no(detail),
        Ok(c) if c.result < 0 => Outcome::no(format!("AcceptMulti: {}", errno_text(-c.result))),
        Ok(c) if cqueue::more(c.flags) => Outcome::yes("AcceptMulti posted a CQE with F_MORE"),
        Ok(_) => Outcome::no("accept completed without F_MORE (not multishot)"),
    }
}

/// Probes "provided buffer rings" and, on top of one, "multishot recv".
pub(super) fn probe_buf_ring_and_multishot_recv() -> (Outcome, Outcome) {
    const BGID: u16 = 0x7262;
    const ENTRIES: u16 = 4;
    const BUF_LEN: u32 = 64;
    let ring_bytes = usize::from(ENTRIES) * std::mem::size_of::<types::BufRingEntry>();
    let map_len = ring_bytes + usize::from(ENTRIES) * BUF_LEN as usize;

    let needs = |what: &str| Outcome::no(format!("needs provided buffer rings ({what})"));
    // Declared before the ring so it is unmapped only after the ring is gone.
    let mapping = match AnonMap::new(map_len) {
        Ok(m) => m,
        Err(err) => {
            let why = format!("mmap: {}", io_text(&err));
            return (Outcome::no(why.clone()), needs(&why));
        }
    };
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(err) => {
            let why = format!("ring setup: {}", io_text(&err));
            return (Outcome::no(why.clone()), needs(&why));
        }
    };

    let base = mapping.as_ptr().cast::<types::BufRingEntry>();
    let buffers = mapping.as_ptr() as u64 + ring_bytes as u64;
    for i in 0..ENTRIES {
        // SAFETY: the mapping is page-aligned, zero-filled and `map_len` bytes long;
        // entry `i < ENTRIES` lies inside its first `ring_bytes` bytes, BufRingEntry
        // is a plain repr(C) struct valid for any bit pattern, and the kernel does not
        // know this memory yet, so this is the only reference to it.
        let entry = unsafe { &mut *base.add(usize::from(i)) };
        entry.set_addr(buffers + u64::from(i) * u64::from(BUF_LEN));
        entry.set_len(BUF_LEN);
        entry.set_bid(i);
    }
    // SAFETY: `base` is the page-aligned address of the ring's first entry, as
    // `BufRingEntry::tail` requires; the tail is the u16 at offset 14 of that entry,
    // so it is 2-byte aligned and can be viewed as an AtomicU16 (same size and
    // alignment), and the mapping outlives this reference.
    let tail = unsafe { &*types::BufRingEntry::tail(base).cast::<AtomicU16>() };
    // Release: the entries written above must be visible before the tail that
    // publishes them.
    tail.store(ENTRIES, Ordering::Release);

    // SAFETY: the ring memory and the buffers it points to stay mapped until the
    // group is unregistered or the ring is dropped: `mapping` is declared before
    // `ring` (so it is dropped after it), and it is leaked instead of unmapped if a
    // request using the group might still be in flight (see below).
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(base as u64, ENTRIES, BGID, 0)
    };
    if let Err(err) = registered {
        let why = format!("registering a buffer ring: {}", io_text(&err));
        return (Outcome::no(why), needs("registration failed"));
    }
    let buf_rings = Outcome::yes(format!(
        "registered a ring of {ENTRIES} buffers as group {BGID}"
    ));

    let (mut tx, rx) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(err) => {
            let _ = ring.submitter().unregister_buf_ring(BGID);
            return (
                buf_rings,
                Outcome::no(format!("socketpair: {}", io_text(&err))),
            );
        }
    };
    let sqe = opcode::RecvMulti::new(types::Fd(rx.as_raw_fd()), BGID)
        .build()
        .user_data(MULTISHOT_UD);
    // SAFETY: RecvMulti names no memory of its own: it receives into buffers picked
    // from group BGID, whose memory stays valid while the request can run (the
    // mapping is leaked below unless the request is known to have terminated); `rx`
    // outlives the request, which `drive_multishot` cancels and reaps.
    let pushed = unsafe { push(&mut ring, &sqe) };
    let run = match pushed {
        Ok(()) => drive_multishot(&mut ring, || tx.write_all(b"ringnet probe")),
        Err(err) => {
            let _ = ring.submitter().unregister_buf_ring(BGID);
            return (
                buf_rings,
                Outcome::no(format!("queueing RecvMulti: {}", io_text(&err))),
            );
        }
    };
    let quiesced = run.quiesced;
    let recv = match run.first {
        Err(detail) => Outcome::no(detail),
        Ok(c) if c.result < 0 => Outcome::no(format!("RecvMulti: {}", errno_text(-c.result))),
        Ok(c) => match (
            c.result > 0,
            cqueue::more(c.flags),
            cqueue::buffer_select(c.flags),
        ) {
            (true, true, Some(bid)) => Outcome::yes(format!(
                "RecvMulti put {} bytes in buffer {bid} and posted F_MORE",
                c.result
            )),
            (false, _, _) => Outcome::no("RecvMulti completed with 0 bytes"),
            (true, false, _) => Outcome::no("recv completed without F_MORE (not multishot)"),
            (true, true, None) => Outcome::no("RecvMulti posted no selected buffer"),
        },
    };

    let _ = ring.submitter().unregister_buf_ring(BGID);
    drop(ring);
    if !quiesced {
        // The recv might still be armed and write into the buffers later: never
        // hand that memory back to the allocator (one page leaked, once).
        mapping.leak();
    }
    (buf_rings, recv)
}
