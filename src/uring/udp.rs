//! UDP on io_uring: one SO_REUSEPORT socket per worker, one multishot
//! recvmsg (IORING_OP_RECVMSG with IORING_RECV_MULTISHOT, Linux 6.0) over the
//! worker's provided buffer ring, peers told apart in user space by the
//! source address each datagram carries. Replies go out with IORING_OP_SEND
//! and a destination address (`sendto`), their bytes and address kept in a
//! slab until the completion.
//!
//! Each provided buffer holds an `io_uring_recvmsg_out` header, the source
//! address (up to `sockaddr_storage`) and the payload; a datagram longer than
//! what is left is truncated by the kernel and counted, not delivered.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::{SockAddr, Socket};

use super::bufring::BufRing;
use crate::sys::EventFd;
use crate::token::{OpKind, Token};
use crate::udp::datagram::{DatagramHandler, Replies, UdpCounters};

/// What a UDP worker is given.
pub(crate) struct UdpCtx {
    pub(crate) cfg: crate::Config,
    pub(crate) socket: Socket,
    pub(crate) wake: Arc<EventFd>,
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) counters: Arc<UdpCounters>,
}

/// A reply in flight: the kernel reads both until the completion.
struct Outgoing {
    bytes: Vec<u8>,
    to: SockAddr,
}

pub(crate) struct UdpWorker<H: DatagramHandler> {
    // The ring is dropped before the buffer ring it registered.
    ring: IoUring,
    buffers: BufRing,
    ctx: UdpCtx,
    handler: H,
    /// The recvmsg template: the kernel reads `msg_namelen` and
    /// `msg_controllen` from it while the multishot recvmsg is armed.
    msghdr: Box<libc::msghdr>,
    recv_armed: bool,
    /// Boxed: the SQE points into the entry, and the slab's storage moves
    /// when it grows (the kernel reads the address at submission).
    sends: Slab<Box<Outgoing>>,
    replies: Replies,
    stopping: bool,
    /// Completions reaped while making room in the SQ (the CQ was backed
    /// up), dispatched first in the next batch.
    cqes: Vec<(u64, i32, u32)>,
}

impl<H: DatagramHandler> UdpWorker<H> {
    pub(crate) fn new(ctx: UdpCtx, handler: H) -> Result<UdpWorker<H>, crate::Error> {
        let ring = super::build_ring(&ctx.cfg)?;
        // Room for the header and a full source address before the payload.
        let buf_size = crate::udp::datagram::recv_buf_size(&ctx.cfg);
        let buffers = BufRing::new(&ring, 0, ctx.cfg.buf_count, buf_size)?;
        // SAFETY: msghdr is plain data; all-zero is a valid value (no name,
        // iov or control pointers), filled in below.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        Ok(UdpWorker {
            ring,
            buffers,
            ctx,
            handler,
            msghdr,
            recv_armed: false,
            sends: Slab::new(),
            replies: Replies::default(),
            stopping: false,
            cqes: Vec::new(),
        })
    }

    fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every SQE points at memory that outlives it and does
            // not move: the msghdr box and the buffer ring live as long as
            // the worker, and each reply's bytes (heap) and address (boxed
            // entry) stay in `sends` until their completion.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                // The CQ is backed up: take completions out (dispatched next
                // batch) so the kernel can flush its overflow and submit.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    let cq = self.ring.completion();
                    self.cqes
                        .extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The multishot poll on the wake eventfd (re-armed if the kernel ends
    /// it, for example when the CQ was full).
    fn arm_wake(&mut self) -> io::Result<()> {
        let wake = opcode::PollAdd::new(types::Fd(self.ctx.wake.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Token::worker(OpKind::Wake).to_user_data());
        self.push(wake)
    }

    fn arm_recv(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.ctx.socket.as_raw_fd());
        let sqe = opcode::RecvMsgMulti::new(fd, &*self.msghdr, 0)
            .build()
            .user_data(Token::worker(OpKind::Recv).to_user_data());
        self.recv_armed = true;
        self.push(sqe)
    }

    pub(crate) fn run(mut self) -> io::Result<()> {
        self.arm_wake()?;
        self.arm_recv()?;
        let mut cqes: Vec<(u64, i32, u32)> = Vec::new();
        loop {
            if self.stopping && !self.recv_armed && self.sends.is_empty() {
                return Ok(());
            }
            // Completions set aside by `push` are dispatched without waiting.
            let want = usize::from(self.cqes.is_empty());
            match self.ring.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.append(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            let mut rearm = false;
            for &(ud, res, flags) in &cqes {
                let Some(tok) = Token::from_user_data(ud) else {
                    continue;
                };
                match tok.kind() {
                    OpKind::Recv => rearm |= self.on_recv(res, flags),
                    OpKind::Send => self.on_send(tok.key(), res)?,
                    OpKind::Wake => {
                        self.ctx.wake.drain();
                        if !io_uring::cqueue::more(flags) && !self.ctx.stop.load(Ordering::Acquire)
                        {
                            self.arm_wake()?;
                        }
                        // Acquire pairs with the Release store in shutdown.
                        if self.ctx.stop.load(Ordering::Acquire) && !self.stopping {
                            self.stopping = true;
                            if self.recv_armed {
                                let target = Token::worker(OpKind::Recv).to_user_data();
                                let sqe = opcode::AsyncCancel::new(target)
                                    .build()
                                    .user_data(Token::worker(OpKind::Cancel).to_user_data());
                                self.push(sqe)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
            if rearm && !self.stopping {
                self.arm_recv()?;
            }
            self.send_replies()?;
        }
    }

    /// One recvmsg completion; returns whether the recv must be re-armed.
    fn on_recv(&mut self, res: i32, flags: u32) -> bool {
        let more = cqueue::more(flags);
        if !more {
            self.recv_armed = false;
        }
        if let Some(bid) = cqueue::buffer_select(flags) {
            self.buffers.take(bid);
            if res > 0 {
                let data = self.buffers.filled(bid, res as usize);
                match io_uring::types::RecvMsgOut::parse(data, &self.msghdr) {
                    Ok(msg) if msg.is_payload_truncated() => {
                        self.ctx.counters.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(msg) => match parse_sockaddr(msg.name_data()) {
                        Some(from) => {
                            self.ctx
                                .counters
                                .datagrams_in
                                .fetch_add(1, Ordering::Relaxed);
                            self.handler
                                .on_datagram(from, msg.payload_data(), &mut self.replies);
                        }
                        None => {
                            self.ctx.counters.truncated.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(()) => {
                        self.ctx.counters.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.buffers.recycle(bid);
        }
        // ENOBUFS or a full CQ ends the multishot recvmsg: re-arm (after the
        // batch, buffers are back). ECANCELED is the shutdown.
        !more && res != -libc::ECANCELED
    }

    fn send_replies(&mut self) -> io::Result<()> {
        for (to, bytes) in std::mem::take(&mut self.replies.queue) {
            let key = self.sends.insert(Box::new(Outgoing {
                bytes,
                to: SockAddr::from(to),
            }));
            self.ctx
                .counters
                .datagrams_out
                .fetch_add(1, Ordering::Relaxed);
            self.submit_send(key)?;
        }
        Ok(())
    }

    fn submit_send(&mut self, key: usize) -> io::Result<()> {
        let fd = types::Fd(self.ctx.socket.as_raw_fd());
        let out = &self.sends[key];
        let sqe = opcode::Send::new(fd, out.bytes.as_ptr(), out.bytes.len() as u32)
            .dest_addr(out.to.as_ptr().cast())
            .dest_addr_len(out.to.len())
            .build()
            .user_data(Token::new(OpKind::Send, key as u32, 0).to_user_data());
        self.push(sqe)
    }

    /// A reply's completion: the kernel is done with its bytes and address.
    fn on_send(&mut self, key: usize, res: i32) -> io::Result<()> {
        if self.sends.contains(key) {
            self.sends.remove(key);
        }
        if res < 0 {
            self.ctx
                .counters
                .send_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl<H: DatagramHandler> Drop for UdpWorker<H> {
    /// On a normal exit nothing is in flight. After an error, the recvmsg
    /// and sends may be: cancel every request synchronously (Linux 6.0)
    /// before the buffer ring is unmapped and the send buffers are freed.
    fn drop(&mut self) {
        if !self.recv_armed && self.sends.is_empty() {
            return;
        }
        super::cancel_all_sync(&self.ring);
    }
}

/// A `sockaddr_in` / `sockaddr_in6` as the kernel wrote it into the buffer,
/// read field by field (no alignment assumed).
fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    if family == libc::AF_INET {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 {
        let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_parse_as_the_kernel_writes_them() {
        for addr in ["127.0.0.1:4000", "[::1]:5000", "[fe80::1%2]:6000"] {
            let a: SocketAddr = addr.parse().expect("addr");
            let raw = SockAddr::from(a);
            // SAFETY: `as_ptr` points at `len` initialised bytes of the
            // sockaddr owned by `raw`, which outlives the slice.
            let bytes = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize)
            };
            assert_eq!(parse_sockaddr(bytes), Some(a), "{addr}");
        }
        assert_eq!(parse_sockaddr(&[0; 3]), None);
        assert_eq!(
            parse_sockaddr(&[1, 0, 0, 0]),
            None,
            "AF_UNIX is not an IP address"
        );
    }
}
