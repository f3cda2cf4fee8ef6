//! The 64-bit `user_data` that rides on every io_uring submission.
//!
//! A completion carries back only the `user_data` of its submission. The
//! engine packs three things into it, in one documented type, [`Token`]:
//!
//! ```text
//!  63      56 55                     32 31                              0
//! +----------+-------------------------+--------------------------------+
//! |   kind   |   generation (24 bits)  |      slab key (32 bits)        |
//! +----------+-------------------------+--------------------------------+
//! ```
//!
//! * `kind` says which operation completed ([`OpKind`]).
//! * `key` is the connection's index in the worker's `slab::Slab`.
//! * `generation` is the value the slot had when the operation was
//!   submitted. A slab reuses keys, so a completion that arrives after its
//!   connection closed and the key went to a new connection would otherwise be
//!   applied to the wrong peer. Every slot is stamped with a fresh generation
//!   when it is filled; a completion whose generation differs from the slot's
//!   is **stale** and is dropped (the worker core checks every completion).
//!
//! Generations come from a per-worker counter that wraps at 2^24, so a stale
//! completion could only be mistaken for current after 16 million
//! connections had used the same key while it was in flight.
//!
//! The same layout, minus `kind`, gives the stable [`ConnId`] that handlers
//! see, with the worker index in the top byte.

use std::fmt;

/// What a completion belongs to. Values stay below 128: the top bit of a
/// `user_data` marks an operation whose memory the ring holds (see
/// `uring::ring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// The worker's accept on the listening socket.
    Accept = 1,
    /// A connection's receive (multishot recv; epoll: readiness).
    Recv = 2,
    /// A send of a connection's queued bytes.
    Send = 3,
    /// An `ASYNC_CANCEL` aimed at a connection's operations.
    Cancel = 4,
    /// A close of a connection's descriptor.
    Close = 5,
    /// The worker's wake-up eventfd.
    Wake = 6,
    /// The worker's timer (the nearest deadline of any kind).
    Timer = 7,
    /// A cancel of the worker's accept (shutdown).
    AcceptCancel = 8,
    /// A `shutdown(SHUT_WR)` starting a connection's lingering close.
    ShutdownWrite = 9,
    /// A FILES_UPDATE installing or clearing a registered descriptor.
    FilesUpdate = 10,
    /// An outbound connect (its key is in the worker's pending slab).
    Connect = 11,
    /// A reply sent straight from a provided buffer: its key is the
    /// buffer id, and the driver's reply table names the connection.
    Reply = 12,
    /// The worker's accept straight into the registered-file table
    /// (`Config::accept_direct`): its completions name table entries.
    AcceptDirect = 13,
}

impl OpKind {
    /// Every kind, in value order.
    pub(crate) const ALL: [OpKind; 13] = [
        OpKind::Accept,
        OpKind::Recv,
        OpKind::Send,
        OpKind::Cancel,
        OpKind::Close,
        OpKind::Wake,
        OpKind::Timer,
        OpKind::AcceptCancel,
        OpKind::ShutdownWrite,
        OpKind::FilesUpdate,
        OpKind::Connect,
        OpKind::Reply,
        OpKind::AcceptDirect,
    ];

    #[inline]
    fn from_u8(v: u8) -> Option<OpKind> {
        OpKind::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }
}

/// Largest generation value; generations wrap to 0 after it.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A decoded `user_data`: operation kind, slab key and generation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    kind: OpKind,
    generation: u32,
    key: u32,
}

impl Token {
    /// A token for `kind` on slab slot `key` stamped with `generation`
    /// (only its low 24 bits are kept).
    #[inline]
    pub fn new(kind: OpKind, key: u32, generation: u32) -> Token {
        Token {
            kind,
            generation: generation & GENERATION_MASK,
            key,
        }
    }

    /// A token for an operation that belongs to the worker, not to a
    /// connection (accept, wake-up, timers).
    #[inline]
    pub fn worker(kind: OpKind) -> Token {
        Token::new(kind, 0, 0)
    }

    /// The packed form given to the kernel.
    #[inline]
    pub fn to_user_data(self) -> u64 {
        (u64::from(self.kind as u8) << 56)
            | (u64::from(self.generation) << 32)
            | u64::from(self.key)
    }

    /// Whether `user_data` names an operation of `kind`, without decoding
    /// the rest.
    #[inline]
    pub(crate) fn names(v: u64, kind: OpKind) -> bool {
        (v >> 56) as u8 == kind as u8
    }

    /// Decode a completion's `user_data`; `None` for a value the engine never
    /// submits (a zero or unknown kind).
    #[inline]
    pub fn from_user_data(v: u64) -> Option<Token> {
        let kind = OpKind::from_u8((v >> 56) as u8)?;
        Some(Token {
            kind,
            generation: ((v >> 32) as u32) & GENERATION_MASK,
            key: v as u32,
        })
    }

    /// The operation kind.
    #[inline]
    pub fn kind(self) -> OpKind {
        self.kind
    }

    /// The slab key.
    #[inline]
    pub fn key(self) -> usize {
        self.key as usize
    }

    /// The generation stamped at submission.
    #[inline]
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}(key {}, gen {})",
            self.kind, self.key, self.generation
        )
    }
}

/// A connection's stable identity: worker index, slab key and generation.
///
/// It stays the same for the life of the connection and is never reused by a
/// later connection on the same worker until the 24-bit generation wraps.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Build from its parts (the worker index is truncated to 8 bits).
    #[inline]
    pub fn new(worker: usize, key: usize, generation: u32) -> ConnId {
        ConnId(
            ((worker as u64 & 0xff) << 56)
                | (u64::from(generation & GENERATION_MASK) << 32)
                | (key as u64 & 0xffff_ffff),
        )
    }

    /// The raw 64-bit value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// From the raw value given by [`ConnId::as_u64`] (as a client may send
    /// it back); whether it names an open connection is checked on use.
    pub fn from_u64(v: u64) -> ConnId {
        ConnId(v)
    }

    /// The worker that owns the connection.
    #[inline]
    pub fn worker(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The slab key on that worker.
    #[inline]
    pub fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The generation of the slot.
    #[inline]
    pub fn generation(self) -> u32 {
        ((self.0 >> 32) as u32) & GENERATION_MASK
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conn#{}.{}.{}",
            self.worker(),
            self.key(),
            self.generation()
        )
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_extreme_fields() {
        for kind in OpKind::ALL {
            for (key, generation) in [(0, 0), (u32::MAX, GENERATION_MASK), (12345, 777)] {
                let t = Token::new(kind, key, generation);
                let back = Token::from_user_data(t.to_user_data()).expect("decodes");
                assert_eq!(back, t);
                assert_eq!(back.kind(), kind);
                assert_eq!(back.key(), key as usize);
                assert_eq!(back.generation(), generation);
            }
        }
    }

    #[test]
    fn unknown_kinds_are_rejected() {
        assert_eq!(Token::from_user_data(0), None);
        assert_eq!(Token::from_user_data(0xff << 56), None);
        assert_eq!(Token::from_user_data(14 << 56), None);
        for kind in OpKind::ALL {
            assert!((kind as u8) < 128, "the top bit marks held operations");
        }
    }

    #[test]
    fn completion_for_a_reused_slot_is_stale() {
        // A recv is submitted for key 7 while generation 41 occupies it.
        let recv = Token::new(OpKind::Recv, 7, 41).to_user_data();
        // The connection closes; key 7 is handed to a new connection stamped 42.
        let slot_generation = 42;
        let t = Token::from_user_data(recv).expect("decodes");
        assert_eq!(t.key(), 7);
        assert_ne!(t.generation(), slot_generation, "old recv must be stale");
        assert_eq!(t.generation(), 41);
    }

    #[test]
    fn generation_wraps_at_24_bits() {
        let t = Token::new(OpKind::Send, 3, GENERATION_MASK + 1);
        assert_eq!(t.generation(), 0);
        assert_eq!(t.generation(), (GENERATION_MASK + 1) & GENERATION_MASK);
        assert_ne!(t.generation(), 1);
    }

    #[test]
    fn conn_id_parts() {
        let id = ConnId::new(3, 99, 5);
        assert_eq!((id.worker(), id.key(), id.generation()), (3, 99, 5));
        assert_ne!(id, ConnId::new(3, 99, 6));
        assert_eq!(format!("{id}"), "conn#3.99.5");
    }
}
