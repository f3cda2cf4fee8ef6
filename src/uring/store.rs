//! The memory in-flight operations point at and the count of operations in
//! flight: a held operation's completion converted into a [`Cqe`] (held
//! memory given back on the last completion, a SEND_ZC's result joined
//! with its notification), and the one place an accepted descriptor is
//! owned ([`accepted`]).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, types};
use slab::Slab;
use socket2::SockAddr;

use crate::token::{OpKind, Token};

/// `user_data` bit marking an operation whose memory sits in `held`; the
/// low 32 bits are then the held slot, and the real token is kept there.
pub(super) const HELD: u64 = 1 << 63;

/// The descriptor a plain accept's completion (`token`, `res`) installed,
/// owned from here on.
#[inline]
pub(crate) fn accepted(token: Token, res: i32) -> Option<OwnedFd> {
    (token.kind() == OpKind::Accept && res >= 0).then(|| {
        // SAFETY: a non-negative accept result is a descriptor the kernel
        // has just installed for this process and nobody else owns (each
        // completion is read once).
        unsafe { OwnedFd::from_raw_fd(res) }
    })
}

/// Memory an in-flight operation points at.
#[derive(Debug)]
pub(crate) enum Held {
    /// A send's bytes (the heap buffer does not move with the `Vec`).
    Bytes(Vec<u8>),
    /// A connect's address (only kept alive, never read back).
    Addr(#[allow(dead_code)] Box<SockAddr>),
    /// A timeout's duration (only kept alive, never read back).
    Timespec(#[allow(dead_code)] Box<types::Timespec>),
    /// The source cell of a files update.
    Fd(Box<RawFd>),
    /// A recvmsg's header (only kept alive, never read back).
    MsgHdr(#[allow(dead_code)] Box<libc::msghdr>),
    /// A datagram's bytes and its destination (only kept alive).
    Datagram(
        #[allow(dead_code)] Vec<u8>,
        #[allow(dead_code)] Box<SockAddr>,
    ),
}

#[derive(Debug)]
pub(super) struct HeldOp {
    pub(super) token: Token,
    pub(super) mem: Held,
    /// A SEND_ZC: its result comes first (with `F_MORE`), then a
    /// notification once the kernel is done with the bytes.
    pub(super) zc: bool,
    /// A SEND_ZC's result, kept until its notification.
    pub(super) first_res: Option<i32>,
}

/// One completion, converted once.
#[derive(Debug)]
pub(crate) struct Cqe {
    pub(crate) token: Token,
    pub(crate) res: i32,
    pub(crate) flags: u32,
    /// The memory the operation held, on its last completion.
    pub(crate) held: Option<Held>,
}

impl Cqe {
    /// More completions will follow for this operation (multishot).
    #[inline]
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// The memory in-flight operations hold, and how many operations are in
/// flight.
pub(super) struct Store {
    pub(super) held: Slab<HeldOp>,
    /// Held multishot operations (the only held ones anyone cancels by
    /// token), with their slots.
    pub(super) held_multishot: Vec<(Token, usize)>,
    /// Operations submitted whose last completion has not been reaped.
    pub(super) in_flight: usize,
    /// Closes are submitted with CQE_SKIP_SUCCESS and not counted in
    /// flight: a close's completion reports a failure.
    pub(super) skip_closes: bool,
}

impl Store {
    /// Count an operation down at its last completion, except a close when
    /// closes skip theirs: never counted, it completes only on failure.
    #[inline]
    pub(super) fn finish(&mut self, ud: u64, flags: u32) {
        let last = !cqueue::more(flags);
        if last && !(self.skip_closes && Token::names(ud, OpKind::Close)) {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// Convert one completion (already counted by [`Store::finish`]).
    #[inline]
    pub(super) fn convert(&mut self, ud: u64, res: i32, flags: u32) -> Option<Cqe> {
        if ud & HELD != 0 {
            return self.take_held(ud, res, flags);
        }
        let token = Token::from_user_data(ud)?;
        // Accepts are typed by the driver, which reads raw completions
        // (`Ring::next_raw`); a descriptor accepted here is closed.
        drop(accepted(token, res));
        Some(Cqe {
            token,
            res,
            flags,
            held: None,
        })
    }

    /// Convert the completion of an operation whose memory is held (`ud`
    /// has [`HELD`]), giving the memory back on its last completion.
    pub(crate) fn take_held(&mut self, ud: u64, res: i32, flags: u32) -> Option<Cqe> {
        let slot = (ud & u64::from(u32::MAX)) as usize;
        let op = self.held.get_mut(slot)?;
        let token = op.token;
        if cqueue::more(flags) {
            if op.zc {
                // A SEND_ZC's result: reported with the notification, when
                // the kernel is done with the bytes.
                op.first_res = Some(res);
                return None;
            }
            // A multishot operation goes on; its memory stays held.
            return Some(Cqe {
                token,
                res,
                flags,
                held: None,
            });
        }
        let op = self.held.remove(slot);
        self.held_multishot.retain(|&(_, s)| s != slot);
        let res = if cqueue::notif(flags) {
            op.first_res.unwrap_or(res)
        } else {
            res
        };
        Some(Cqe {
            token,
            res,
            flags,
            held: Some(op.mem),
        })
    }
}
