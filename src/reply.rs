//! Replies straight from the receive buffer (io_uring): while `on_data`
//! runs, where the lent buffer is; a `Conn::send` of bytes inside it, with
//! nothing else queued, claims them instead of copying, and the worker
//! sends them from the buffer (see ARCHITECTURE, Buffer rings).

/// The provided buffer being lent to `on_data` (io_uring), and the reply
/// that claimed it: when the handler sends bytes of it with nothing else
/// queued or in flight, they are sent from it instead of copied, and the
/// buffer goes back to its ring when that send completes.
#[derive(Debug, Default)]
pub(crate) struct LentReply {
    /// Where the lent bytes are (an address, only compared), and how many.
    start: usize,
    len: usize,
    /// The claimed bytes, offset into the buffer (high half) and length
    /// (low half, never 0); 0 when nothing is claimed. One word, written
    /// and read whole: the worker reads it right after the handler wrote
    /// it, and a read spanning several narrower writes stalls the CPU.
    claimed: u64,
}

impl LentReply {
    /// A reply may claim `bytes`, the buffer about to be lent.
    pub(crate) fn lend(&mut self, bytes: &[u8]) {
        self.start = bytes.as_ptr() as usize;
        self.len = bytes.len();
        self.claimed = 0;
    }

    /// Claim `data` if it lies in the lent buffer and nothing claimed it.
    pub(crate) fn claim(&mut self, data: &[u8]) -> Option<u32> {
        let at = (data.as_ptr() as usize).checked_sub(self.start)?;
        if self.claimed != 0 || data.is_empty() || at + data.len() > self.len {
            return None;
        }
        let len = u32::try_from(data.len()).ok()?;
        let off = u32::try_from(at).ok()?;
        self.claimed = u64::from(off) << 32 | u64::from(len);
        Some(len)
    }

    /// The claimed bytes (offset, length), once: the claim is cleared.
    #[inline]
    pub(crate) fn take_claim(&mut self) -> Option<(u32, u32)> {
        let c = std::mem::take(&mut self.claimed);
        (c != 0).then_some(((c >> 32) as u32, c as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_inside_the_lent_buffer_are_claimed_once() {
        let buf = [7u8; 64];
        let other = [7u8; 8];
        let mut l = LentReply::default();
        l.lend(&buf);
        assert_eq!(l.claim(&other), None, "bytes elsewhere");
        assert_eq!(l.claim(&buf[..0]), None, "nothing");
        assert_eq!(l.claim(&buf[60..]), Some(4));
        assert_eq!(l.claim(&buf[..4]), None, "a second claim");
        assert_eq!(l.take_claim(), Some((60, 4)));
        assert_eq!(l.take_claim(), None, "taken once");
        // Lending the next buffer starts over.
        l.claim(&buf[..4]);
        l.lend(&buf[..32]);
        assert_eq!(l.take_claim(), None);
        assert_eq!(l.claim(&buf[16..40]), None, "past the lent bytes");
        assert_eq!(l.claim(&buf[16..32]), Some(16));
        assert_eq!(l.take_claim(), Some((16, 16)));
    }
}
