//! The one submission path to io_uring, and the one place completions are
//! read: a ring plus the memory its in-flight operations point at.
//!
//! Every SQE the engine submits is described by an [`Op`] and built here.
//! An operation that makes the kernel read memory after the submit call
//! returns (a send's bytes, a connect's address, a timeout's timespec, the
//! source of a files update) hands that memory over by value: [`Ring`]
//! keeps it in its `held` slab until the operation's last completion has
//! been reaped, then gives it back in the typed [`Cqe`]. So no safe caller
//! can hand the kernel a pointer to a temporary; the one step whose
//! soundness rests on that bookkeeping, [`Ring::push`], is an `unsafe fn`.
//!
//! Completions are read once, in place ([`Ring::next_raw`]), and counted.
//! The worker's driver types most of them straight from their raw parts;
//! a held operation's goes through [`Ring::take_held`], which returns its
//! memory and joins a SEND_ZC's result with its notification (the kernel
//! is done with the bytes only then). [`Ring::reap`] converts every one
//! into a [`Cqe`] for the simpler users (UDP, the probe). An accepted
//! descriptor becomes an `OwnedFd` in one place ([`accepted`]).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::SockAddr;

pub(crate) use super::store::{accepted, Cqe, Held};
use super::store::{HeldOp, Store, HELD};
use crate::token::Token;

/// Which descriptor an operation names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// A plain descriptor.
    Fd(RawFd),
    /// An index in the ring's registered-file table.
    Fixed(u32),
}

/// Every operation the engine submits.
#[derive(Debug)]
pub(crate) enum Op {
    /// Multishot accept on a listener (5.19); with `direct`, each
    /// connection goes straight into a free entry of the ring's
    /// registered-file table (IORING_FILE_INDEX_ALLOC) and the completion
    /// names that entry instead of a descriptor.
    AcceptMulti { fd: RawFd, direct: bool },
    /// Multishot poll for readability (the wake eventfd).
    PollMulti { fd: RawFd },
    /// Multishot recvmsg over buffer group `bgid` (6.0); `msghdr` (see
    /// [`recvmsg_header`]) says how much room each buffer keeps for the
    /// source address and control data.
    RecvMsgMulti {
        fd: RawFd,
        bgid: u16,
        msghdr: RecvMsgHeader,
    },
    /// Send the datagram `buf` to `to` (`sendto`); the bytes come back in
    /// the completion.
    SendTo {
        fd: RawFd,
        buf: Vec<u8>,
        to: SockAddr,
    },
    /// Multishot recv over buffer group `bgid` (6.0), with bundles (6.10).
    RecvMulti {
        target: Target,
        bgid: u16,
        bundle: bool,
    },
    /// Send `buf` (SEND_ZC when `zc`; at most 4 GiB); the bytes come back
    /// in the completion.
    Send {
        target: Target,
        buf: Vec<u8>,
        zc: bool,
    },
    /// `shutdown(SHUT_WR)` on `target`.
    ShutdownWrite { target: Target },
    /// Cancel every request on `target` (5.19).
    CancelFd { target: Target },
    /// Cancel the request submitted as `target` (held or not).
    Cancel { target: Token },
    /// Close a descriptor, or release a registered-file entry (and the
    /// socket it holds).
    Close { target: Target },
    /// Put `fd` (or -1: clear the entry) at registered-file index `index`.
    UpdateFile { index: u32, fd: RawFd },
    /// Connect `fd` to `addr`.
    Connect { fd: RawFd, addr: SockAddr },
    /// Complete after `after`.
    Timeout { after: Duration },
}

/// A SEND of `len` bytes at `ptr` on `target` with MSG_NOSIGNAL; with
/// `zc` a SEND_ZC instead, from registered buffer `b` when `zc` is
/// `Some(Some(b))`. Building it reads nothing; submitting it is the unsafe
/// step.
#[inline(always)]
fn send_sqe(target: Target, ptr: *const u8, len: u32, zc: Option<Option<u16>>) -> squeue::Entry {
    let flags = libc::MSG_NOSIGNAL;
    match (target, zc) {
        (Target::Fd(fd), None) => opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(flags)
            .build(),
        (Target::Fixed(i), None) => opcode::Send::new(types::Fixed(i), ptr, len)
            .flags(flags)
            .build(),
        (Target::Fd(fd), Some(buf)) => opcode::SendZc::new(types::Fd(fd), ptr, len)
            .buf_index(buf)
            .flags(flags)
            .build(),
        (Target::Fixed(i), Some(buf)) => opcode::SendZc::new(types::Fixed(i), ptr, len)
            .buf_index(buf)
            .flags(flags)
            .build(),
    }
}

/// A recvmsg header that points at nothing (only its name and control
/// lengths are set), so submitting it hands the kernel no pointer.
#[derive(Clone, Copy)]
pub(crate) struct RecvMsgHeader(libc::msghdr);

impl std::fmt::Debug for RecvMsgHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvMsgHeader(namelen {})", self.0.msg_namelen)
    }
}

impl RecvMsgHeader {
    /// The header the kernel reads (and `RecvMsgOut::parse` needs).
    pub(crate) fn get(&self) -> &libc::msghdr {
        &self.0
    }
}

/// A recvmsg header with room for a source address of `namelen` bytes and
/// no control data.
pub(crate) fn recvmsg_header(namelen: u32) -> RecvMsgHeader {
    // SAFETY: msghdr is plain data; all-zero is a valid value (no name, iov
    // or control pointers).
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_namelen = namelen;
    RecvMsgHeader(h)
}

/// A ring, the memory its operations hold, and completions set aside.
pub(crate) struct Ring {
    ring: IoUring,
    store: Store,
    /// Raw completions moved aside when a submit met EBUSY; reaped first.
    backlog: std::collections::VecDeque<(u64, i32, u32)>,
    /// Raw completions of the batch [`Ring::ready`] counted not yet taken
    /// by [`Ring::next_raw`].
    batch_left: usize,
    /// A submit error that is not transient.
    fatal: Option<io::Error>,
    /// The kernel held completions back in its overflow list when the last
    /// wait began.
    overflow_seen: bool,
    /// The ring's index among this thread's registered ring descriptors
    /// ([`Ring::register_fd`]), which the waits name it by.
    registered: Option<u32>,
}

/// io_uring_register(2) opcodes and io_uring_enter(2) flags the io-uring
/// crate does not let a caller combine with its own waits.
const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;
const IORING_ENTER_GETEVENTS: libc::c_uint = 1;
const IORING_ENTER_SQ_WAKEUP: libc::c_uint = 2;
const IORING_ENTER_REGISTERED_RING: libc::c_uint = 16;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

impl Ring {
    pub(crate) fn new(ring: IoUring) -> Ring {
        // A close needs no completion when it succeeds: it runs while it is
        // submitted (a socket's close never waits), so once the SQ is empty
        // it is done. Not with SQPOLL, whose thread submits on its own time.
        let skip_closes =
            ring.params().is_feature_skip_cqe_on_success() && !ring.params().is_setup_sqpoll();
        Ring {
            registered: None,
            ring,
            store: Store {
                held: Slab::new(),
                held_multishot: Vec::new(),
                in_flight: 0,
                skip_closes,
            },
            backlog: std::collections::VecDeque::new(),
            batch_left: 0,
            fatal: None,
            overflow_seen: false,
        }
    }

    /// The ring, for registering buffers and files and reading parameters.
    pub(crate) fn raw(&self) -> &IoUring {
        &self.ring
    }

    /// The first error a submission met that was not transient.
    pub(crate) fn take_fatal(&mut self) -> Option<io::Error> {
        self.fatal.take()
    }

    /// Submit `op` with `token` as its identity (queued in the SQ; it goes
    /// to the kernel with the next submit or wait).
    #[inline]
    pub(crate) fn submit(&mut self, op: Op, token: Token) {
        let plain = |sqe: squeue::Entry| sqe.user_data(token.to_user_data());
        let sqe = match op {
            Op::AcceptMulti { fd, direct } => plain(
                opcode::AcceptMulti::new(types::Fd(fd))
                    .allocate_file_index(direct)
                    .flags(if direct { 0 } else { libc::SOCK_CLOEXEC })
                    .build(),
            ),
            Op::PollMulti { fd } => plain(
                opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                    .multi(true)
                    .build(),
            ),
            Op::RecvMulti {
                target,
                bgid,
                bundle,
            } => plain(match (target, bundle) {
                (Target::Fd(fd), false) => opcode::RecvMulti::new(types::Fd(fd), bgid).build(),
                (Target::Fixed(i), false) => opcode::RecvMulti::new(types::Fixed(i), bgid).build(),
                (Target::Fd(fd), true) => opcode::RecvMultiBundle::new(types::Fd(fd), bgid).build(),
                (Target::Fixed(i), true) => {
                    opcode::RecvMultiBundle::new(types::Fixed(i), bgid).build()
                }
            }),
            Op::ShutdownWrite { target } => plain(match target {
                Target::Fd(fd) => opcode::Shutdown::new(types::Fd(fd), libc::SHUT_WR).build(),
                Target::Fixed(i) => opcode::Shutdown::new(types::Fixed(i), libc::SHUT_WR).build(),
            }),
            Op::CancelFd { target } => plain(
                opcode::AsyncCancel2::new(
                    match target {
                        Target::Fd(fd) => types::CancelBuilder::fd(types::Fd(fd)),
                        Target::Fixed(i) => types::CancelBuilder::fd(types::Fixed(i)),
                    }
                    .all(),
                )
                .build(),
            ),
            Op::Cancel { target } => {
                plain(opcode::AsyncCancel::new(self.user_data_of(target)).build())
            }
            Op::Close { target } => {
                let sqe = plain(match target {
                    Target::Fd(fd) => opcode::Close::new(types::Fd(fd)).build(),
                    Target::Fixed(i) => opcode::Close::new(types::Fixed(i)).build(),
                });
                if self.store.skip_closes {
                    // Only a failure completes: not counted in flight.
                    let sqe = sqe.flags(squeue::Flags::SKIP_SUCCESS);
                    // SAFETY: a close points at no memory.
                    unsafe { self.push_entry(&sqe, false) };
                    return;
                }
                sqe
            }
            Op::Send { target, buf, zc } => {
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                let sqe = send_sqe(target, buf.as_ptr(), len, zc.then_some(None));
                self.hold(sqe, token, Held::Bytes(buf), zc);
                return;
            }
            Op::Connect { fd, addr } => {
                let addr = Box::new(addr);
                let sqe =
                    opcode::Connect::new(types::Fd(fd), addr.as_ptr().cast(), addr.len()).build();
                self.hold(sqe, token, Held::Addr(addr), false);
                return;
            }
            Op::Timeout { after } => {
                let spec = Box::new(types::Timespec::from(after));
                let sqe = opcode::Timeout::new(&*spec).build();
                self.hold(sqe, token, Held::Timespec(spec), false);
                return;
            }
            Op::RecvMsgMulti { fd, bgid, msghdr } => {
                let msghdr = Box::new(msghdr.0);
                let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*msghdr, bgid).build();
                let slot = self.hold(sqe, token, Held::MsgHdr(msghdr), false);
                self.store.held_multishot.push((token, slot));
                return;
            }
            Op::SendTo { fd, buf, to } => {
                let to = Box::new(to);
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                let sqe = opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
                    .dest_addr(to.as_ptr().cast())
                    .dest_addr_len(to.len())
                    .build();
                self.hold(sqe, token, Held::Datagram(buf, to), false);
                return;
            }
            Op::UpdateFile { index, fd } => {
                let cell = Box::new(fd);
                let sqe = opcode::FilesUpdate::new(&*cell, 1)
                    .offset(index as i32)
                    .build();
                self.hold(sqe, token, Held::Fd(cell), false);
                return;
            }
        };
        // SAFETY: the operations above point at no memory of ours (buffers
        // are chosen by the kernel from registered rings, which stay mapped
        // until the ring is dropped).
        unsafe { self.push(&sqe) };
    }

    /// Send `len` bytes at `ptr`, bytes of a provided buffer, as `token`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be the bytes of that provided buffer (and
    /// with `fixed`, inside that registered buffer), in a
    /// buffer ring that stays mapped until this ring is dropped (the
    /// driver's groups are dropped after it), and the buffer must not be
    /// given back to its ring until this operation's last completion has
    /// been reaped (the kernel would fill it while it is being sent).
    /// With `fixed`: the bytes lie in registered buffer `fixed` and go
    /// with SEND_ZC from it (a result, then a notification when the
    /// kernel is done with the bytes).
    #[inline(always)]
    pub(crate) unsafe fn submit_provided_send(
        &mut self,
        target: Target,
        ptr: *const u8,
        len: u32,
        token: Token,
        fixed: Option<u16>,
    ) {
        let sqe = send_sqe(target, ptr, len, fixed.map(Some)).user_data(token.to_user_data());
        // SAFETY: the pointer is valid until the last completion (this
        // function's contract).
        unsafe { self.push_entry(&sqe, true) };
    }

    /// The `user_data` an operation submitted as `token` carries (a held
    /// one's is its slot in `held`).
    #[inline]
    fn user_data_of(&self, token: Token) -> u64 {
        self.store
            .held_multishot
            .iter()
            .find(|(t, _)| *t == token)
            .map_or(token.to_user_data(), |&(_, slot)| HELD | slot as u64)
    }

    /// Queue an SQE whose memory is `mem`, keeping `mem` until its last
    /// completion.
    #[inline]
    fn hold(&mut self, sqe: squeue::Entry, token: Token, mem: Held, zc: bool) -> usize {
        let slot = self.store.held.insert(HeldOp {
            token,
            mem,
            zc,
            first_res: None,
        });
        let sqe = sqe.user_data(HELD | slot as u64);
        // SAFETY: every pointer in `sqe` points into `mem`'s heap
        // allocation (a `Vec`'s buffer or a `Box`), which does not move when
        // the slab does and is kept in `held` until `reap` sees this
        // operation's last completion.
        unsafe { self.push(&sqe) };
        slot
    }

    /// Queue one SQE, submitting first if the SQ is full.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid, and the memory it points at
    /// unmoved and not otherwise written (read, for a receive buffer), until
    /// the operation's last completion has been reaped.
    unsafe fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: this function's contract.
        unsafe { self.push_entry(sqe, true) }
    }

    /// [`Ring::push`], counted in flight until its last completion or not
    /// (`counted`: an operation that completes only on failure).
    ///
    /// # Safety
    /// As for [`Ring::push`].
    #[inline(always)]
    unsafe fn push_entry(&mut self, sqe: &squeue::Entry, counted: bool) {
        if self.fatal.is_some() {
            return;
        }
        loop {
            // SAFETY: the caller keeps what `sqe` points at alive (above).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.store.in_flight += usize::from(counted);
                return;
            }
            if !self.flush() {
                return;
            }
        }
    }

    /// Whether a close completes only when it fails (IORING_FEAT_CQE_SKIP,
    /// Linux 5.17, without SQPOLL): a successful one is over once
    /// [`Ring::all_submitted`] says so.
    pub(crate) fn closes_complete_on_failure_only(&self) -> bool {
        self.store.skip_closes
    }

    /// Whether every queued SQE has been taken by the kernel.
    pub(crate) fn all_submitted(&mut self) -> bool {
        self.ring.submission().is_empty()
    }

    /// Hand queued SQEs to the kernel without waiting. `false` on an error
    /// that is not transient (kept for `take_fatal`).
    pub(crate) fn flush(&mut self) -> bool {
        match self
            .ring
            .submit()
            .map(|_| ())
            .or_else(|e| self.transient(e))
        {
            Ok(()) => true,
            Err(e) => {
                self.fatal = Some(e);
                false
            }
        }
    }

    /// EBUSY: the CQ is backed up; move completions aside (they are reaped
    /// first next time) so the kernel can flush its overflow list. EINTR: a
    /// signal; ETIME: a batched wait's general timeout passed. Anything
    /// else comes back.
    fn transient(&mut self, e: io::Error) -> io::Result<()> {
        match e.raw_os_error() {
            Some(libc::EBUSY) => {
                let cq = self.ring.completion();
                self.backlog
                    .extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
                Ok(())
            }
            Some(libc::EINTR) | Some(libc::ETIME) => Ok(()),
            _ => Err(e),
        }
    }

    /// Submit what is queued without waiting (an answer that should not
    /// wait for the end of the batch). A failure is left for the next
    /// `submit_and_wait`, which sees the same queue.
    pub(crate) fn submit_pending(&mut self) {
        if self.fatal.is_none() {
            if let Err(e) = self.ring.submit() {
                let _ = self.transient(e);
            }
        }
    }

    /// Whether the next [`Ring::submit_and_wait`] waits: not when
    /// completions were set aside.
    #[inline]
    pub(crate) fn will_wait(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Submit and wait for a completion (none when completions were set
    /// aside). With `batch` (`(count, min-wait µs)`, Linux 6.12), wait for
    /// `count` completions but at most the min-wait, then for any, bounded by
    /// `general`.
    ///
    /// Inlined into the worker's loop with [`Ring::enter`], so that one
    /// return (from the system call's wrapper) separates the kernel from
    /// the loop: the kernel's deep call paths overwrite the CPU's return
    /// predictions, and each user-space return after the call would be
    /// mispredicted.
    #[inline(always)]
    pub(crate) fn submit_and_wait(
        &mut self,
        batch: Option<(usize, u32)>,
        general: &types::Timespec,
    ) -> io::Result<()> {
        let want = usize::from(self.will_wait());
        // The SQ's state is read before the call: after it, its lines have
        // been pushed out by the kernel's work (see `Ring::ready`).
        let sq = self.ring.submission();
        let (to_submit, wakeup, overflow) = (sq.len(), sq.need_wakeup(), sq.cq_overflow());
        drop(sq);
        self.overflow_seen = overflow;
        let res = match batch {
            Some((nr, us)) if want == 1 => {
                let args = types::SubmitArgs::new().min_wait_usec(us).timespec(general);
                self.ring
                    .submitter()
                    .submit_with_args(nr, &args)
                    .map(|_| ())
            }
            _ => self.enter(want, to_submit, wakeup, overflow),
        };
        if let Err(e) = res {
            self.transient(e)?;
        }
        Ok(())
    }

    /// Register the ring's own descriptor with the kernel for this thread
    /// (IORING_REGISTER_RING_FDS, Linux 5.18): the worker's waits then name
    /// it by index, sparing the kernel a descriptor lookup per call.
    /// Registered descriptors belong to the registering thread, as does a
    /// worker's ring.
    pub(crate) fn register_fd(&mut self) -> io::Result<()> {
        let mut up = RsrcUpdate {
            // u32::MAX: the kernel picks a free index and writes it here.
            offset: u32::MAX,
            resv: 0,
            data: self.ring.as_raw_fd() as u64,
        };
        // SAFETY: io_uring_register(2) reads and writes one
        // `io_uring_rsrc_update` (`nr_args` 1) at a valid pointer to a
        // properly laid out, live struct.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring.as_raw_fd(),
                IORING_REGISTER_RING_FDS,
                &mut up as *mut RsrcUpdate,
                1u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.registered = Some(up.offset);
        Ok(())
    }

    /// Submit the `to_submit` SQEs queued and wait for `want` completions:
    /// one io_uring_enter(2), naming the ring by its registered index
    /// (IORING_ENTER_REGISTERED_RING) when it has one ([`Ring::register_fd`];
    /// the crate's own calls always pass the plain descriptor), else by its
    /// descriptor. `wakeup` and `overflow`: the SQ's flags (the SQ thread
    /// sleeps; the kernel holds completions back).
    #[inline(always)]
    fn enter(
        &mut self,
        want: usize,
        to_submit: usize,
        wakeup: bool,
        overflow: bool,
    ) -> io::Result<()> {
        let (target, mut flags) = match self.registered {
            Some(index) => (index as libc::c_long, IORING_ENTER_REGISTERED_RING),
            None => (libc::c_long::from(self.ring.as_raw_fd()), 0),
        };
        if want > 0 || overflow {
            flags |= IORING_ENTER_GETEVENTS;
        }
        if self.ring.params().is_setup_sqpoll() {
            if wakeup {
                flags |= IORING_ENTER_SQ_WAKEUP;
            } else if want == 0 && !overflow {
                // The SQ thread is awake and takes the entries itself.
                return Ok(());
            }
        }
        // SAFETY: io_uring_enter(2) with no argument pointer (NULL, size
        // 0) on this ring's descriptor, or on `index`, this thread's
        // registration of this ring. The SQEs it submits were queued
        // through `push`, whose contract keeps their memory valid.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                target,
                to_submit as libc::c_uint,
                want as libc::c_uint,
                flags,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Start a batch with the completions ready now (set-aside ones
    /// included), to take one at a time with [`Ring::next_raw`]; ones that
    /// arrive meanwhile wait for the next batch. Returns the kernel's count
    /// of dropped completions and whether it held completions back in its
    /// overflow list when the last [`Ring::submit_and_wait`] began (read
    /// then, not now: the SQ flags' line is cold after the wait, and the
    /// wait itself flushes that list into the CQ as room allows).
    #[inline(always)]
    pub(crate) fn ready(&mut self) -> (u32, bool) {
        let cq = self.ring.completion();
        self.batch_left = self.backlog.len() + cq.len();
        (cq.overflow(), self.overflow_seen)
    }

    /// The batch's next completion as the kernel wrote it (`user_data`,
    /// result, flags), counted: set-aside ones first, then straight from
    /// the CQ, whose head moves past each entry as it is read (no copy of
    /// the batch is made). `None` at the end of the batch. A held
    /// operation's completion ([`Ring::is_held`]) must be passed to
    /// [`Ring::take_held`], which gives its memory back.
    #[inline]
    pub(crate) fn next_raw(&mut self) -> Option<(u64, i32, u32)> {
        if self.batch_left == 0 {
            return None;
        }
        self.batch_left -= 1;
        let (ud, res, flags) = match self.backlog.pop_front() {
            Some(raw) => raw,
            None => {
                let c = self.ring.completion().next()?;
                (c.user_data(), c.result(), c.flags())
            }
        };
        self.store.finish(ud, flags);
        Some((ud, res, flags))
    }

    /// Whether a completion's `user_data` is that of an operation whose
    /// memory the ring holds.
    #[inline]
    pub(crate) fn is_held(ud: u64) -> bool {
        ud & HELD != 0
    }

    /// A held operation's completion, converted: its memory is given back
    /// on its last completion; `None` for a SEND_ZC's first completion
    /// (its result comes with the notification) or an unknown slot.
    pub(crate) fn take_held(&mut self, ud: u64, res: i32, flags: u32) -> Option<Cqe> {
        self.store.take_held(ud, res, flags)
    }

    /// Hand every completion ready now (set-aside ones first), converted
    /// (held memory given back), to `f`: a whole batch of [`Ring::ready`]
    /// and [`Ring::next_raw`]. Returns what `ready` does.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(Cqe)) -> (u32, bool) {
        let ready = self.ready();
        while let Some((ud, res, flags)) = self.next_raw() {
            if let Some(c) = self.store.convert(ud, res, flags) {
                f(c);
            }
        }
        ready
    }
}

impl Drop for Ring {
    /// Requests may still be in flight (after an error exit or a panic; on
    /// a clean exit only the wake poll): cancel every one synchronously
    /// (IORING_REGISTER_SYNC_CANCEL, Linux 6.0) before the memory they point
    /// at (held here, or the buffer rings dropped after the ring) is freed.
    fn drop(&mut self) {
        if self.store.in_flight > 0 {
            super::cancel_all_sync(&self.ring);
        }
        if let Some(index) = self.registered {
            let up = RsrcUpdate {
                offset: index,
                resv: 0,
                data: 0,
            };
            // SAFETY: io_uring_register(2) reads one live
            // `io_uring_rsrc_update` naming this thread's registration of
            // this ring (a failure only leaves it to the thread's exit).
            unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.ring.as_raw_fd(),
                    IORING_UNREGISTER_RING_FDS,
                    &up as *const RsrcUpdate,
                    1u32,
                );
            }
        }
    }
}
