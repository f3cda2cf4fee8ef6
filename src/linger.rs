//! Lingering close, shared by both backends.
//!
//! Closing a socket that still has unread input makes Linux send a reset and
//! throw away output not yet transmitted, so a peer could lose the last
//! response it was sent. A graceful close therefore shuts down the write side
//! once all output is handed to the kernel (the peer sees end of stream after
//! the last byte), keeps reading and discarding until the peer closes too,
//! and gives up after `Config::linger`. This keeps the connections waiting
//! out their linger time in deadline order; because every connection lingers
//! for the same time, a FIFO is already sorted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Connections in their lingering close, oldest deadline first.
#[derive(Debug, Default)]
pub(crate) struct Lingering {
    queue: VecDeque<(Instant, usize, u32)>,
}

impl Lingering {
    /// Connection `key` (generation `generation`) lingers until `now + linger`.
    pub(crate) fn push(&mut self, key: usize, generation: u32, now: Instant, linger: Duration) {
        self.queue.push_back((now + linger, key, generation));
    }

    /// The nearest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|e| e.0)
    }

    /// Remove and return the `(key, generation)` of every entry due by
    /// `now`. Entries of connections that closed meanwhile come back too; the
    /// caller checks the generation.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(usize, u32)> {
        let mut due = Vec::new();
        while let Some(&(t, key, generation)) = self.queue.front() {
            if t > now {
                break;
            }
            self.queue.pop_front();
            due.push((key, generation));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_order() {
        let t0 = Instant::now();
        let mut l = Lingering::default();
        l.push(1, 10, t0, Duration::from_secs(1));
        l.push(
            2,
            20,
            t0 + Duration::from_millis(500),
            Duration::from_secs(1),
        );
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(l.expired(t0).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_secs(1)), vec![(1, 10)]);
        assert_eq!(l.expired(t0 + Duration::from_secs(2)), vec![(2, 20)]);
        assert_eq!(l.next_deadline(), None);
    }
}
