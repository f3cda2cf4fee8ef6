//! UDP on io_uring: one SO_REUSEPORT socket per worker, one multishot
//! recvmsg (IORING_OP_RECVMSG with IORING_RECV_MULTISHOT, Linux 6.0) over the
//! worker's provided buffer ring, peers told apart in user space by the
//! source address each datagram carries. Replies go out with IORING_OP_SEND
//! and a destination address (`sendto`); like every operation, they go
//! through the worker's [`Ring`], which holds their bytes and address until
//! the completion.
//!
//! Each provided buffer holds an `io_uring_recvmsg_out` header, the source
//! address (up to `sockaddr_storage`) and the payload; a datagram longer than
//! what is left is truncated by the kernel and counted, not delivered.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use io_uring::types;
use socket2::{SockAddr, Socket};

use super::bufring::BufRing;
use super::ring::{recvmsg_header, Cqe, Op, RecvMsgHeader, Ring};
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

pub(crate) struct UdpWorker<H: DatagramHandler> {
    // The ring (which cancels what is in flight when dropped) goes before
    // the buffer ring it registered.
    ring: Ring,
    buffers: BufRing,
    ctx: UdpCtx,
    handler: H,
    /// The recvmsg header (no pointers; room for a whole
    /// `sockaddr_storage`): the ring holds the kernel's copy, this one
    /// parses what each buffer holds.
    msghdr: RecvMsgHeader,
    recv_armed: bool,
    /// Replies in flight (their bytes and addresses are held by the ring).
    sends: usize,
    replies: Replies,
    stopping: bool,
    cqes: Vec<Cqe>,
}

impl<H: DatagramHandler> UdpWorker<H> {
    pub(crate) fn new(ctx: UdpCtx, handler: H) -> Result<UdpWorker<H>, crate::Error> {
        let raw = super::build_ring(&ctx.cfg)?;
        // Room for the header and a full source address before the payload.
        let buf_size = crate::udp::datagram::recv_buf_size(&ctx.cfg);
        let buffers = BufRing::new(&raw, 0, ctx.cfg.buf_count, buf_size)?;
        let namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        Ok(UdpWorker {
            ring: Ring::new(raw),
            buffers,
            ctx,
            handler,
            msghdr: recvmsg_header(namelen),
            recv_armed: false,
            sends: 0,
            replies: Replies::default(),
            stopping: false,
            cqes: Vec::new(),
        })
    }

    /// The multishot poll on the wake eventfd (re-armed if the kernel ends
    /// it, for example when the CQ was full).
    fn arm_wake(&mut self) {
        let fd = self.ctx.wake.as_raw_fd();
        self.ring
            .submit(Op::PollMulti { fd }, Token::worker(OpKind::Wake));
    }

    fn arm_recv(&mut self) {
        let op = Op::RecvMsgMulti {
            fd: self.ctx.socket.as_raw_fd(),
            bgid: 0,
            msghdr: self.msghdr,
        };
        self.ring.submit(op, Token::worker(OpKind::Recv));
        self.recv_armed = true;
    }

    pub(crate) fn run(mut self) -> io::Result<()> {
        self.arm_wake();
        self.arm_recv();
        let general = types::Timespec::new().sec(1);
        let mut cqes = Vec::new();
        loop {
            if let Some(e) = self.ring.take_fatal() {
                return Err(e);
            }
            if self.stopping && !self.recv_armed && self.sends == 0 {
                return Ok(());
            }
            self.ring.submit_and_wait(None, &general)?;
            std::mem::swap(&mut cqes, &mut self.cqes);
            self.ring.reap(|c| cqes.push(c));
            let mut rearm = false;
            for c in cqes.drain(..) {
                match c.token.kind() {
                    OpKind::Recv => rearm |= self.on_recv(&c),
                    OpKind::Send => self.on_send(c.res),
                    OpKind::Wake => self.on_wake(&c),
                    _ => {}
                }
            }
            self.cqes = cqes;
            cqes = Vec::new();
            if rearm && !self.stopping {
                self.arm_recv();
            }
            self.send_replies();
        }
    }

    fn on_wake(&mut self, c: &Cqe) {
        self.ctx.wake.drain();
        // Acquire pairs with the Release store in shutdown.
        let stop = self.ctx.stop.load(Ordering::Acquire);
        if !c.more() && !stop {
            self.arm_wake();
        }
        if stop && !self.stopping {
            self.stopping = true;
            if self.recv_armed {
                let target = Token::worker(OpKind::Recv);
                self.ring
                    .submit(Op::Cancel { target }, Token::worker(OpKind::Cancel));
            }
        }
    }

    /// One recvmsg completion; returns whether the recv must be re-armed.
    fn on_recv(&mut self, c: &Cqe) -> bool {
        let more = c.more();
        if !more {
            self.recv_armed = false;
        }
        if let Some(bid) = io_uring::cqueue::buffer_select(c.flags) {
            self.buffers.take(bid);
            if c.res > 0 {
                let data = self.buffers.filled(bid, c.res as usize);
                let counters = &self.ctx.counters;
                match io_uring::types::RecvMsgOut::parse(data, self.msghdr.get()) {
                    Ok(msg) if msg.is_payload_truncated() => {
                        counters.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(msg) => match parse_sockaddr(msg.name_data()) {
                        Some(from) => {
                            counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                            self.handler
                                .on_datagram(from, msg.payload_data(), &mut self.replies);
                        }
                        None => {
                            counters.truncated.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(()) => {
                        counters.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.buffers.recycle(bid);
        }
        // ENOBUFS or a full CQ ends the multishot recvmsg: re-arm (after the
        // batch, buffers are back). ECANCELED is the shutdown.
        !more && c.res != -libc::ECANCELED
    }

    fn send_replies(&mut self) {
        let fd = self.ctx.socket.as_raw_fd();
        for (to, buf) in std::mem::take(&mut self.replies.queue) {
            self.ctx
                .counters
                .datagrams_out
                .fetch_add(1, Ordering::Relaxed);
            let op = Op::SendTo {
                fd,
                buf,
                to: SockAddr::from(to),
            };
            self.ring.submit(op, Token::worker(OpKind::Send));
            self.sends += 1;
        }
    }

    /// A reply's completion: the ring gave its bytes and address back.
    fn on_send(&mut self, res: i32) {
        self.sends -= 1;
        if res < 0 {
            self.ctx
                .counters
                .send_errors
                .fetch_add(1, Ordering::Relaxed);
        }
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
