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
    /// The claimed bytes: offset into the buffer and length.
    pub(crate) claimed: Option<(u32, u32)>,
}

impl LentReply {
    /// A reply may claim `bytes`, the buffer about to be lent.
    pub(crate) fn lend(&mut self, bytes: &[u8]) {
        self.start = bytes.as_ptr() as usize;
        self.len = bytes.len();
        self.claimed = None;
    }

    /// Claim `data` if it lies in the lent buffer and nothing claimed it.
    pub(crate) fn claim(&mut self, data: &[u8]) -> Option<u32> {
        let at = (data.as_ptr() as usize).checked_sub(self.start)?;
        if self.claimed.is_some() || data.is_empty() || at + data.len() > self.len {
            return None;
        }
        let len = u32::try_from(data.len()).ok()?;
        self.claimed = Some((at as u32, len));
        Some(len)
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
        assert_eq!(l.claimed, Some((60, 4)));
        assert_eq!(l.claim(&buf[..4]), None, "a second claim");
        // Lending the next buffer starts over.
        l.lend(&buf[..32]);
        assert_eq!(l.claimed, None);
        assert_eq!(l.claim(&buf[16..40]), None, "past the lent bytes");
        assert_eq!(l.claim(&buf[16..32]), Some(16));
    }
}
