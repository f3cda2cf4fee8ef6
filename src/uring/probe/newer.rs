//! Probes of the newer io_uring features the engine offers (or reports) for
//! experimenters: each is tried for real where this machine allows, and
//! says how it was tested.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::features::Outcome;
use super::{io_text, RING_ENTRIES};
use crate::token::{OpKind, Token};
use crate::uring::mmap::{AnonMap, HugePages};
use crate::uring::ring::{Op, Ring, Target};

/// Wait up to `limit` for one completion; `None` when none came.
fn wait_one(ring: &mut IoUring, limit: Duration) -> Option<cqueue::Entry> {
    let ts = types::Timespec::from(limit);
    let args = types::SubmitArgs::new().timespec(&ts);
    let _ = ring.submitter().submit_with_args(1, &args);
    ring.completion().next()
}

/// The engine's own wait path with the ring named by its registered index:
/// register, submit a 1 ms timeout, wait for it through
/// IORING_ENTER_REGISTERED_RING.
pub(super) fn probe_registered_ring() -> Outcome {
    let raw = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    let mut ring = Ring::new(raw);
    if let Err(e) = ring.register_fd() {
        return Outcome::no(format!("IORING_REGISTER_RING_FDS: {}", io_text(&e)));
    }
    ring.submit(
        Op::Timeout {
            after: Duration::from_millis(1),
        },
        Token::worker(OpKind::Timer),
    );
    let general = types::Timespec::from(Duration::from_secs(1));
    if let Err(e) = ring.submit_and_wait(None, &general) {
        return Outcome::no(format!(
            "io_uring_enter on the registered index: {}",
            io_text(&e)
        ));
    }
    let mut fired = false;
    ring.reap(|c| fired |= c.token.kind() == OpKind::Timer);
    if fired {
        Outcome::yes("registered the ring's descriptor; a wait named by its index completed")
    } else {
        Outcome::no("a wait named by the registered index returned without the completion")
    }
}

/// Closes that complete only when they fail (IORING_FEAT_CQE_SKIP, 5.17),
/// as the engine submits them: through its own submission path, one end
/// of a socket pair is closed and a close of descriptor -1 is tried; the
/// first must post no completion and leave its peer at end of stream, the
/// second must complete with EBADF.
pub(super) fn probe_silent_closes() -> Outcome {
    let raw = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    let mut ring = Ring::new(raw);
    if !ring.closes_complete_on_failure_only() {
        return Outcome::no("IORING_FEAT_CQE_SKIP not reported: every close completes");
    }
    let (closed, mut peer) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return Outcome::no(format!("socketpair: {}", io_text(&e))),
    };
    for fd in [closed.into_raw_fd(), -1] {
        let target = Target::Fd(fd);
        ring.submit(Op::Close { target }, Token::worker(OpKind::Close));
    }
    ring.submit(
        Op::Timeout {
            after: Duration::from_millis(1),
        },
        Token::worker(OpKind::Timer),
    );
    let (mut closes, mut fired) = (Vec::new(), false);
    let general = types::Timespec::from(Duration::from_millis(100));
    let until = Instant::now() + Duration::from_secs(1);
    while !fired && Instant::now() < until {
        if let Err(e) = ring.submit_and_wait(None, &general) {
            return Outcome::no(format!("io_uring_enter: {}", io_text(&e)));
        }
        ring.reap(|c| match c.token.kind() {
            OpKind::Close => closes.push(c.res),
            OpKind::Timer => fired = true,
            _ => {}
        });
    }
    let _ = peer.set_nonblocking(true);
    let at_eof = matches!(peer.read(&mut [0u8; 1]), Ok(0));
    match (closes.as_slice(), at_eof) {
        ([res], true) if *res == -libc::EBADF => Outcome::yes(
            "a socket closed with CQE_SKIP_SUCCESS posted no completion and its peer saw \
             the end of stream; a close of -1 completed with EBADF",
        ),
        (_, false) => Outcome::no("the close was submitted but its peer did not see the end"),
        _ => Outcome::no(format!(
            "close completions {closes:?}: expected only the failed one's (EBADF)"
        )),
    }
}

/// Where huge pages for buffer rings would come from here.
pub(super) fn probe_huge_pages() -> Outcome {
    let reserved = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| {
            let s = s.trim().to_string();
            let start = s.find('[')?;
            let end = s[start..].find(']')?;
            Some(s[start + 1..start + end].to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    match AnonMap::new_huge(2 << 20) {
        Ok((_, HugePages::Reserved)) => Outcome::yes(format!(
            "mapped 2 MiB on a hugetlbfs page ({reserved} free); THP mode {thp}"
        )),
        Ok((_, HugePages::Transparent)) => Outcome::yes(format!(
            "no hugetlbfs pages free ({reserved}): transparent huge pages advised (THP mode {thp})"
        )),
        Ok((_, HugePages::None)) => Outcome::no(format!(
            "no hugetlbfs pages free and THP is {thp}: ordinary pages"
        )),
        Err(e) => Outcome::no(format!("mmap: {}", io_text(&e))),
    }
}

/// Incremental buffer consumption (IOU_PBUF_RING_INC): a 4 KiB buffer
/// registered with the flag takes a 10-byte receive and stays with the
/// kernel for more (IORING_CQE_F_BUF_MORE).
pub(super) fn probe_incremental_buffers() -> Outcome {
    const BGID: u16 = 0x696e;
    const BUF_LEN: u32 = 4096;
    const IOU_PBUF_RING_INC: u16 = 2;
    let page = crate::sys::page_size();
    // Declared before the ring: unmapped after it.
    let mapping = match AnonMap::new(page + BUF_LEN as usize) {
        Ok(m) => m,
        Err(e) => return Outcome::no(format!("mmap: {}", io_text(&e))),
    };
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    let base = mapping.as_ptr().cast::<types::BufRingEntry>();
    // SAFETY: the mapping is page-aligned and at least one page long, so
    // entry 0 lies inside it; nothing else refers to this memory yet.
    let entry = unsafe { &mut *base };
    entry.set_addr(mapping.as_ptr() as u64 + page as u64);
    entry.set_len(BUF_LEN);
    entry.set_bid(0);
    // SAFETY: `base` is the ring's first entry, page-aligned; the tail is
    // the aligned u16 `BufRingEntry::tail` names, inside the mapping.
    let tail = unsafe { &*types::BufRingEntry::tail(base).cast::<AtomicU16>() };
    // Release: the entry is visible before the tail publishes it.
    tail.store(1, Ordering::Release);
    // SAFETY: the ring memory and its buffer stay mapped until the ring is
    // dropped (`mapping` outlives `ring`), and the one request that uses
    // the group has completed before either goes.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(base as u64, 1, BGID, IOU_PBUF_RING_INC)
    };
    if let Err(e) = registered {
        return Outcome::no(format!(
            "registering a ring with IOU_PBUF_RING_INC: {}",
            io_text(&e)
        ));
    }
    let (mut tx, rx) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return Outcome::no(format!("socketpair: {}", io_text(&e))),
    };
    if let Err(e) = tx.write_all(b"ringnet-10") {
        return Outcome::no(format!("write: {}", io_text(&e)));
    }
    let recv = opcode::Recv::new(types::Fd(rx.as_raw_fd()), std::ptr::null_mut(), 0)
        .buf_group(BGID)
        .build()
        .flags(io_uring::squeue::Flags::BUFFER_SELECT)
        .user_data(1);
    // SAFETY: the receive names no memory of ours: the kernel picks the
    // buffer from the registered group, mapped until after the ring.
    if unsafe { ring.submission().push(&recv) }.is_err() {
        return Outcome::no("the submission queue refused one entry");
    }
    let Some(c) = wait_one(&mut ring, Duration::from_secs(1)) else {
        // Still in flight: leak the memory rather than free it under the
        // kernel.
        mapping.leak();
        return Outcome::no("the receive did not complete within 1 s");
    };
    let _ = ring.submitter().unregister_buf_ring(BGID);
    match c.result() {
        10 if cqueue::buffer_more(c.flags()) => Outcome::yes(
            "a 10-byte receive into a 4 KiB buffer left it with the kernel (IORING_CQE_F_BUF_MORE)",
        ),
        10 => Outcome::no("the receive consumed the whole buffer (no IORING_CQE_F_BUF_MORE)"),
        r if r < 0 => Outcome::no(format!(
            "receive: {}",
            io_text(&std::io::Error::from_raw_os_error(-r))
        )),
        r => Outcome::no(format!("receive returned {r} bytes of 10")),
    }
}

/// Accept straight into the registered descriptor table
/// (IORING_FILE_INDEX_ALLOC): a multishot accept with a sparse table of 4,
/// and a loopback connection that lands at an index of it.
pub(super) fn probe_accept_direct() -> Outcome {
    let listener = match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))) {
        Ok(l) => l,
        Err(e) => return Outcome::no(format!("listen: {}", io_text(&e))),
    };
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    if let Err(e) = ring.submitter().register_files_sparse(4) {
        return Outcome::no(format!("sparse file table: {}", io_text(&e)));
    }
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .allocate_file_index(true)
        .build()
        .user_data(1);
    // SAFETY: a multishot accept into the ring's own table points at no
    // memory of ours.
    if unsafe { ring.submission().push(&accept) }.is_err() {
        return Outcome::no("the submission queue refused one entry");
    }
    let _ = ring.submit();
    let client = listener.local_addr().and_then(TcpStream::connect);
    if let Err(e) = client {
        return Outcome::no(format!("connect: {}", io_text(&e)));
    }
    match wait_one(&mut ring, Duration::from_secs(1)) {
        Some(c) if (0..4).contains(&c.result()) => Outcome::yes(format!(
            "a loopback connection was accepted at index {} of a sparse table of 4",
            c.result()
        )),
        Some(c) => Outcome::no(format!(
            "accept: {}",
            io_text(&std::io::Error::from_raw_os_error(-c.result()))
        )),
        None => Outcome::no("no accept completion within 1 s"),
    }
}

/// Registered (fixed) buffers: one page registered with the ring.
pub(super) fn probe_fixed_buffers() -> Outcome {
    let ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    let page = crate::sys::page_size();
    let mapping = match AnonMap::new(page) {
        Ok(m) => m,
        Err(e) => return Outcome::no(format!("mmap: {}", io_text(&e))),
    };
    let iov = libc::iovec {
        iov_base: mapping.as_ptr().cast(),
        iov_len: page,
    };
    // SAFETY: the buffer stays mapped until after the ring is dropped
    // below, and no operation uses it.
    let res = unsafe { ring.submitter().register_buffers(&[iov]) };
    drop(ring);
    drop(mapping);
    match res {
        Ok(()) => Outcome::yes("registered one page as a fixed buffer"),
        Err(e) => Outcome::no(format!("IORING_REGISTER_BUFFERS: {}", io_text(&e))),
    }
}

/// NAPI busy-poll registration (6.9): the settings register; loopback has
/// no NAPI instance, so there is nothing to poll here.
pub(super) fn probe_napi() -> Outcome {
    let ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    let mut napi = types::Napi::new().set_busy_poll_timeout(50);
    match ring.submitter().register_napi(&mut napi) {
        Ok(()) => Outcome::yes(
            "registered 50 µs busy-poll settings; loopback has no NAPI instance, so nothing to measure here",
        ),
        Err(e) => Outcome::no(format!("IORING_REGISTER_NAPI: {}", io_text(&e))),
    }
}

/// Zero-copy receive (zcrx, 6.15): the opcode is known, but it needs a NIC
/// with header split and flow steering; report whether this kernel lists
/// IORING_OP_RECV_ZC and that loopback cannot use it.
pub(super) fn probe_zcrx() -> Outcome {
    const IORING_OP_RECV_ZC: u8 = 58;
    let ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(e) => return Outcome::no(format!("ring setup: {}", io_text(&e))),
    };
    let mut probe = Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) if probe.is_supported(IORING_OP_RECV_ZC) => Outcome::no(
            "the kernel lists IORING_OP_RECV_ZC, but it needs a NIC with header split and flow steering: not loopback",
        ),
        Ok(()) => Outcome::no("the opcode probe does not list IORING_OP_RECV_ZC"),
        Err(e) => Outcome::no(format!("opcode probe: {}", io_text(&e))),
    }
}
