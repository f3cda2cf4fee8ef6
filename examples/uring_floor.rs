//! The floor: the least an io_uring TCP echo server can do per round trip,
//! to measure ringnet's io_uring path against.
//!
//! One thread, one ring (SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, as
//! ringnet's), one multishot accept, one multishot recv per connection over
//! one provided buffer ring, the reply sent straight from the provided
//! buffer, and the buffer given back to the ring when its send completes.
//! No slab, no framing, no handler: a connection is its descriptor, and all
//! it keeps is a count of its sends in flight (so its descriptor is closed
//! only when no send can still name it). Accepted sockets get TCP_NODELAY
//! from the listener, as ringnet's do.
//!
//! Run it and point `ringnet bench` at it:
//!
//! ```sh
//! cargo build --release --example uring_floor
//! ringnet bench --compare echo --contenders io_uring,floor \
//!     --against 'floor=target/release/examples/uring_floor --addr {addr} --cpu 0'
//! ```
//!
//! Options: `--addr HOST:PORT` (default 127.0.0.1:7000), `--cpu N` (pin the
//! thread), `--buffers N` (a power of two, default 512) and `--buf-size
//! BYTES` (default 4096), ringnet's defaults.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};
use socket2::{Domain, Protocol, Socket, Type};

/// The one buffer group.
const BGID: u16 = 0;

/// What a completion is for: the top 8 bits of its user data. The rest:
/// a recv carries the descriptor; a send carries the descriptor (24 bits),
/// the buffer id (16) and how far into the buffer it started (16).
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const CLOSE: u64 = 4;

fn send_data(fd: RawFd, bid: u16, off: u16) -> u64 {
    SEND << 56 | (fd as u64) << 32 | u64::from(bid) << 16 | u64::from(off)
}

/// The provided buffers: the descriptor ring the kernel reads, then the
/// buffers, in one anonymous mapping that lives as long as the process.
struct Buffers {
    ring: *mut BufRingEntry,
    bufs: *mut u8,
    entries: u16,
    size: u32,
    tail: u16,
}

impl Buffers {
    fn new(ring: &IoUring, entries: u16, size: u32) -> io::Result<Buffers> {
        let ring_bytes =
            (usize::from(entries) * std::mem::size_of::<BufRingEntry>()).next_multiple_of(4096);
        let len = ring_bytes + usize::from(entries) * size as usize;
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked before use and never unmapped.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut b = Buffers {
            ring: base.cast(),
            // SAFETY: `ring_bytes` is within the mapping of `len` bytes.
            bufs: unsafe { base.cast::<u8>().add(ring_bytes) },
            entries,
            size,
            tail: 0,
        };
        for bid in 0..entries {
            b.give_back(bid);
        }
        // SAFETY: the descriptor ring is page-aligned, holds `entries`
        // descriptors and stays mapped for the life of the process.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, entries, BGID, 0)?
        };
        Ok(b)
    }

    /// Buffer `bid` from `off`, `len` bytes.
    fn ptr(&self, bid: u16, off: u16) -> *const u8 {
        // SAFETY: bid < entries (the kernel names only buffers it was
        // given) and off < size, so the result is inside the mapping.
        unsafe {
            self.bufs
                .add(usize::from(bid) * self.size as usize + usize::from(off))
        }
    }

    /// Put buffer `bid` at the tail and publish it to the kernel.
    fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.entries - 1));
        // SAFETY: slot < entries: inside the descriptor ring, which the
        // kernel reads only up to the published tail, and this entry is
        // past it until the store below.
        unsafe {
            let e = &mut *self.ring.add(slot);
            e.set_addr(self.ptr(bid, 0) as u64);
            e.set_len(self.size);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the ring (the `resv` of entry 0), an
        // aligned u16 in the mapping, shared with the kernel.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring) as *const AtomicU16) };
        // Release: the entry written above is visible before the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}

/// Queue `e`, submitting first if the submission queue is full.
fn push(ring: &mut IoUring, e: squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry pushed here points at memory that lives for
        // the process (the provided buffers) or at nothing.
        if unsafe { ring.submission().push(&e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

struct Args {
    addr: SocketAddr,
    cpu: Option<usize>,
    buffers: u16,
    buf_size: u32,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
        cpu: None,
        buffers: 512,
        buf_size: 4096,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => a.addr = value.parse().map_err(|e| bad(&e))?,
            "--cpu" => a.cpu = Some(value.parse().map_err(|e| bad(&e))?),
            "--buffers" => a.buffers = value.parse().map_err(|e| bad(&e))?,
            "--buf-size" => a.buf_size = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.buf_size == 0 || a.buf_size > 65535 {
        return Err("--buf-size must be 1..=65535".into());
    }
    if a.buffers == 0 || !a.buffers.is_power_of_two() || a.buffers > 32768 {
        return Err("--buffers must be a power of two ≤ 32768".into());
    }
    Ok(a)
}

fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside
    // it (cpu is checked against its size first) and sched_setaffinity
    // reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("uring_floor: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = serve(&a) {
        eprintln!("uring_floor: {e}");
        std::process::exit(1);
    }
}

fn serve(a: &Args) -> io::Result<()> {
    if let Some(cpu) = a.cpu {
        pin(cpu)?;
    }
    let listener = Socket::new(
        Domain::for_address(a.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    listener.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (as ringnet's
    // do): no system call per connection.
    listener.set_tcp_nodelay(true)?;
    listener.bind(&a.addr.into())?;
    listener.listen(1024)?;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_cqsize(4096)
        .build(256)?;
    let mut bufs = Buffers::new(&ring, a.buffers, a.buf_size)?;
    let lfd = listener.as_raw_fd();
    println!(
        "uring_floor: serving echo on {}",
        listener.local_addr()?.as_socket().unwrap_or(a.addr)
    );
    let accept = opcode::AcceptMulti::new(Fd(lfd))
        .build()
        .user_data(ACCEPT << 56);
    push(&mut ring, accept.clone())?;
    // Per descriptor: sends in flight, and whether its recv is over (then
    // it is closed when the last send completes).
    let mut sends: Vec<u16> = Vec::new();
    let mut ended: Vec<bool> = Vec::new();
    // Per buffer: how many bytes its recv put in it.
    let mut filled: Vec<u32> = vec![0; usize::from(a.buffers)];
    let recv = |fd: RawFd| {
        opcode::RecvMulti::new(Fd(fd), BGID)
            .build()
            .user_data(RECV << 56 | fd as u64)
    };
    let close = |fd: RawFd| opcode::Close::new(Fd(fd)).build().user_data(CLOSE << 56);
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for (data, res, flags) in done.drain(..) {
            let more = cqueue::more(flags);
            match data >> 56 {
                ACCEPT => {
                    if res >= 0 {
                        let fd = res;
                        let i = fd as usize;
                        if sends.len() <= i {
                            sends.resize(i + 1, 0);
                            ended.resize(i + 1, false);
                        }
                        sends[i] = 0;
                        ended[i] = false;
                        push(&mut ring, recv(fd))?;
                    }
                    if !more {
                        push(&mut ring, accept.clone())?;
                    }
                }
                RECV => {
                    let fd = (data & 0xffff_ffff) as RawFd;
                    let i = fd as usize;
                    if res > 0 {
                        let bid = cqueue::buffer_select(flags).unwrap_or(0);
                        filled[usize::from(bid)] = res as u32;
                        let send = opcode::Send::new(Fd(fd), bufs.ptr(bid, 0), res as u32)
                            .build()
                            .user_data(send_data(fd, bid, 0));
                        push(&mut ring, send)?;
                        sends[i] += 1;
                    }
                    if !more {
                        if res > 0 || res == -libc::ENOBUFS {
                            // Ended (or the ring ran dry): receive again.
                            push(&mut ring, recv(fd))?;
                        } else if sends[i] == 0 {
                            push(&mut ring, close(fd))?;
                        } else {
                            ended[i] = true;
                        }
                    }
                }
                SEND => {
                    let fd = ((data >> 32) & 0xff_ffff) as RawFd;
                    let bid = ((data >> 16) & 0xffff) as u16;
                    let from = (data & 0xffff) as u32 + res.max(0) as u32;
                    let i = fd as usize;
                    let end = filled[usize::from(bid)];
                    if res > 0 && from < end {
                        // A short send: the rest goes from where it stopped.
                        let send =
                            opcode::Send::new(Fd(fd), bufs.ptr(bid, from as u16), end - from)
                                .build()
                                .user_data(send_data(fd, bid, from as u16));
                        push(&mut ring, send)?;
                        continue;
                    }
                    sends[i] -= 1;
                    bufs.give_back(bid);
                    if sends[i] == 0 && ended[i] {
                        ended[i] = false;
                        push(&mut ring, close(fd))?;
                    }
                }
                _ => {}
            }
        }
    }
}
