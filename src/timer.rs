//! A timer queue: many timers behind one deadline, sans-IO.
//!
//! Each engine worker keeps one [`TimerQueue`] and one kernel timer (an
//! io_uring `Timeout`, or the `epoll_wait` timeout) armed for the queue's
//! nearest deadline, whatever the number of timers armed. Time is passed
//! in, so the queue is tested without sleeping.
//!
//! A binary min-heap orders the deadlines (ties in the order they were
//! armed, up to 2^32 arms apart); the timers themselves live in a slab, so
//! cancelling frees the slot at once and the heap entry, now stale, is
//! skipped when it comes up. Stale entries never outnumber live ones by
//! more than 1024: when the heap holds more than twice the live timers plus
//! 1024 after an arm, cancel or reschedule, it is rebuilt from the slab. So
//! the heap follows the timers armed now, not the number ever armed:
//! 1,000,000 armed timers cost about 16 bytes of heap entry plus the slot
//! (the deadline, a sequence number and the payload) each. Arming and
//! firing are O(log n), amortised (a rebuild is O(n), at most once every n
//! operations).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use slab::Slab;

/// `now + d`, saturating a century ahead instead of overflowing (a
/// configured duration can be as large as `Duration::MAX`).
#[inline]
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Names an armed timer, to cancel it. A key whose timer has fired or been
/// cancelled names nothing (a later timer in the same slot has another
/// sequence number), and a key names nothing in another queue (each engine
/// worker has its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    slot: u32,
    seq: u32,
    queue: u32,
}

struct Entry<T> {
    /// Nanoseconds after the queue's origin.
    at: u64,
    seq: u32,
    payload: T,
}

/// Timers with payloads of type `T`, fired in deadline order.
pub struct TimerQueue<T> {
    /// `(deadline, sequence, slot)`: 16 bytes an entry.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    slots: Slab<Entry<T>>,
    seq: u32,
    origin: Instant,
    id: u32,
    /// The nearest deadline while known (`None`: to be found again); a
    /// worker asks for it on every turn of its loop, and most turns change
    /// no timer.
    nearest: Option<Option<Instant>>,
}

impl<T> TimerQueue<T> {
    /// An empty queue; deadlines are kept relative to `origin` (any instant
    /// not after the earliest deadline to come, such as now).
    pub fn new(origin: Instant) -> TimerQueue<T> {
        TimerQueue::with_id(origin, 0)
    }

    /// An empty queue whose keys carry `id`: a key of another queue names
    /// nothing here.
    pub fn with_id(origin: Instant, id: u32) -> TimerQueue<T> {
        TimerQueue {
            heap: BinaryHeap::new(),
            slots: Slab::new(),
            seq: 0,
            origin,
            id,
            nearest: Some(None),
        }
    }

    fn key(&self, slot: u32, seq: u32) -> TimerKey {
        TimerKey {
            slot,
            seq,
            queue: self.id,
        }
    }

    fn entry(&self, key: TimerKey) -> Option<&Entry<T>> {
        self.slots
            .get(key.slot as usize)
            .filter(|e| key.queue == self.id && e.seq == key.seq)
    }

    #[inline]
    fn ticks(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    #[inline]
    fn instant(&self, ticks: u64) -> Instant {
        after(self.origin, Duration::from_nanos(ticks))
    }

    /// Arm a timer due at `at` (an instant before the origin counts as the
    /// origin).
    #[inline]
    pub fn arm(&mut self, at: Instant, payload: T) -> TimerKey {
        let at = self.ticks(at);
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let slot = self.slots.insert(Entry { at, seq, payload }) as u32;
        self.heap.push(Reverse((at, seq, slot)));
        if let Some(nearest) = self.nearest {
            let when = self.instant(at);
            self.nearest = Some(Some(nearest.map_or(when, |n| n.min(when))));
        }
        self.bound();
        self.key(slot, seq)
    }

    /// Keep stale heap entries at most the live timers plus 1024.
    fn bound(&mut self) {
        if self.heap.len() > 2 * self.slots.len() + 1024 {
            self.compact();
        }
    }

    /// Cancel the timer `key` names; its payload if it was still armed.
    #[inline]
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.entry(key)?;
        self.nearest = None;
        let payload = self.slots.remove(key.slot as usize).payload;
        self.bound();
        Some(payload)
    }

    /// Whether `key` names an armed timer.
    #[inline]
    pub fn is_armed(&self, key: TimerKey) -> bool {
        self.entry(key).is_some()
    }

    /// When armed timer `key` is due.
    pub fn deadline(&self, key: TimerKey) -> Option<Instant> {
        self.entry(key).map(|e| self.instant(e.at))
    }

    /// Timers armed.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no timer is armed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Heap entries, stale ones included (for tests of the memory bound).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.heap.len()
    }

    /// Whether a heap entry still stands for its timer (not cancelled,
    /// fired, or rescheduled since).
    #[inline]
    fn current(&self, at: u64, seq: u32, slot: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|e| e.seq == seq && e.at == at)
    }

    /// Drop stale entries from the top of the heap.
    #[inline]
    fn skip_stale(&mut self) {
        while let Some(&Reverse((at, seq, slot))) = self.heap.peek() {
            if self.current(at, seq, slot) {
                return;
            }
            self.heap.pop();
        }
    }

    /// The nearest deadline of an armed timer.
    #[inline]
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if let Some(nearest) = self.nearest {
            return nearest;
        }
        self.skip_stale();
        let nearest = self
            .heap
            .peek()
            .map(|&Reverse((at, _, _))| self.instant(at));
        self.nearest = Some(nearest);
        nearest
    }

    /// The earliest timer due by `now`, left armed: take it with
    /// [`TimerQueue::cancel`], or move it with [`TimerQueue::reschedule`]
    /// (a periodic timer keeps its key).
    #[inline]
    pub fn next_due(&mut self, now: Instant) -> Option<(TimerKey, &T)> {
        self.skip_stale();
        let &Reverse((at, seq, slot)) = self.heap.peek()?;
        if at > self.ticks(now) {
            return None;
        }
        let key = self.key(slot, seq);
        let payload = &self.slots.get(slot as usize)?.payload;
        Some((key, payload))
    }

    /// Take the earliest timer due by `now`, if any (call until `None`).
    #[inline]
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, T)> {
        let (key, _) = self.next_due(now)?;
        self.nearest = None;
        self.heap.pop();
        let entry = self.slots.remove(key.slot as usize);
        Some((key, entry.payload))
    }

    /// Move armed timer `key` to `at`, keeping its key (and its place
    /// among timers due at the same instant: the order it was first armed
    /// in); `false` when `key` names nothing.
    pub fn reschedule(&mut self, key: TimerKey, at: Instant) -> bool {
        if self.entry(key).is_none() {
            return false;
        }
        let ticks = self.ticks(at);
        self.nearest = None;
        // The old heap entry goes stale (its deadline no longer matches).
        if let Some(e) = self.slots.get_mut(key.slot as usize) {
            e.at = ticks;
        }
        self.heap.push(Reverse((ticks, key.seq, key.slot)));
        self.bound();
        true
    }

    /// Cancel every timer whose payload `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.slots.retain(|_, e| keep(&e.payload));
        self.compact();
    }

    /// Rebuild the heap from the live timers.
    fn compact(&mut self) {
        self.nearest = None;
        let live: Vec<_> = self
            .slots
            .iter()
            .map(|(slot, e)| Reverse((e.at, e.seq, slot as u32)))
            .collect();
        self.heap = BinaryHeap::from(live);
    }
}

impl<T> std::fmt::Debug for TimerQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerQueue")
            .field("armed", &self.slots.len())
            .field("entries", &self.heap.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_in_deadline_order_ties_in_arming_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        for (i, d) in [30u64, 10, 20, 10, 0].into_iter().enumerate() {
            q.arm(t0 + ms(d), i);
        }
        assert_eq!(q.next_deadline(), Some(t0));
        let mut fired = Vec::new();
        while let Some((_, i)) = q.pop_due(t0 + ms(25)) {
            fired.push(i);
        }
        assert_eq!(fired, vec![4, 1, 3, 2], "by deadline, then arming order");
        assert_eq!(q.next_deadline(), Some(t0 + ms(30)));
        assert_eq!(q.len(), 1);
    }

    /// The nearest deadline is kept between changes; after each kind of
    /// change (arm, cancel, reschedule, fire, retain) it is still the
    /// earliest of the live timers.
    #[test]
    fn the_nearest_deadline_follows_every_change() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        // (key, deadline in ms, payload)
        let mut live: Vec<(TimerKey, u64, u64)> = Vec::new();
        let mut x = 12345u64;
        let mut rand = move |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for step in 0..5000u64 {
            match rand(6) {
                0 | 1 => {
                    let d = rand(1000);
                    live.push((q.arm(t0 + ms(d), step), d, step));
                }
                2 if !live.is_empty() => {
                    let (k, _, p) = live.swap_remove(rand(live.len() as u64) as usize);
                    assert_eq!(q.cancel(k), Some(p));
                }
                3 if !live.is_empty() => {
                    let i = rand(live.len() as u64) as usize;
                    let d = rand(1000);
                    assert!(q.reschedule(live[i].0, t0 + ms(d)));
                    live[i].1 = d;
                }
                4 => {
                    let now = t0 + ms(rand(200));
                    while let Some((k, p)) = q.pop_due(now) {
                        let i = live.iter().position(|l| l.0 == k).expect("a live timer");
                        let (_, d, lp) = live.swap_remove(i);
                        assert!(t0 + ms(d) <= now && lp == p);
                    }
                }
                _ => {
                    let cut = rand(7);
                    q.retain(|&p| p % 7 != cut);
                    live.retain(|l| l.2 % 7 != cut);
                }
            }
            let want = live.iter().map(|l| t0 + ms(l.1)).min();
            assert_eq!(q.next_deadline(), want, "step {step}");
            assert_eq!(q.len(), live.len());
        }
    }

    #[test]
    fn a_cancelled_timer_never_fires_and_its_key_names_nothing_after() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        let a = q.arm(t0 + ms(5), "a");
        let b = q.arm(t0 + ms(10), "b");
        assert_eq!(q.cancel(a), Some("a"));
        assert_eq!(q.cancel(a), None, "cancelled once");
        assert!(!q.is_armed(a) && q.is_armed(b));
        // Slot reuse: a new timer in a's slot is not a's.
        let c = q.arm(t0 + ms(1), "c");
        assert_eq!(q.cancel(a), None);
        assert_eq!(q.next_deadline(), Some(t0 + ms(1)));
        let fired: Vec<_> = std::iter::from_fn(|| q.pop_due(t0 + ms(100))).collect();
        assert_eq!(fired, vec![(c, "c"), (b, "b")]);
        assert_eq!(q.cancel(b), None, "fired: nothing to cancel");
    }

    #[test]
    fn arm_and_cancel_churn_keeps_memory_bounded_by_live_timers() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        let live: Vec<_> = (0..100).map(|i| q.arm(t0 + ms(60_000 + i), i)).collect();
        for i in 0..1_000_000u64 {
            let k = q.arm(t0 + ms(30_000 + i % 1000), i);
            assert_eq!(q.cancel(k), Some(i));
        }
        assert_eq!(q.len(), 100);
        assert!(q.entries() <= 2 * 100 + 1024 + 1, "{} entries", q.entries());
        assert!(live.iter().all(|k| q.is_armed(*k)));
    }

    #[test]
    fn a_million_armed_timers_fire_in_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        // A spread of deadlines in a scrambled order.
        let n = 1_000_000u64;
        for i in 0..n {
            let d = (i * 7_919) % n;
            q.arm(t0 + Duration::from_micros(d), d);
        }
        assert_eq!((q.len(), q.entries()), (n as usize, n as usize));
        let mut last = 0;
        let mut count = 0;
        while let Some((_, d)) = q.pop_due(t0 + Duration::from_secs(2)) {
            assert!(d >= last, "{d} fired after {last}");
            last = d;
            count += 1;
        }
        assert_eq!(count, n);
        assert!(q.is_empty());
    }

    #[test]
    fn a_rescheduled_timer_keeps_its_key_and_fires_at_its_new_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        let p = q.arm(t0 + ms(10), "periodic");
        let o = q.arm(t0 + ms(15), "once");
        let (k, _) = q.next_due(t0 + ms(10)).expect("due");
        assert_eq!(k, p);
        assert!(q.reschedule(p, t0 + ms(20)));
        assert!(
            q.next_due(t0 + ms(12)).is_none(),
            "the old deadline is stale"
        );
        assert_eq!(q.pop_due(t0 + ms(20)).map(|(k, _)| k), Some(o));
        assert_eq!(q.next_due(t0 + ms(20)).map(|(k, _)| k), Some(p));
        assert_eq!(q.cancel(p), Some("periodic"));
        assert!(!q.reschedule(p, t0 + ms(30)), "cancelled: nothing to move");
        assert!(q.is_empty() && q.next_deadline().is_none());
    }

    #[test]
    fn a_key_of_another_queue_names_nothing() {
        let t0 = Instant::now();
        let mut a = TimerQueue::with_id(t0, 1);
        let mut b = TimerQueue::with_id(t0, 2);
        let ka = a.arm(t0 + ms(5), "a");
        let kb = b.arm(t0 + ms(5), "b");
        assert_ne!(ka, kb, "same slot and sequence, other queue");
        assert_eq!(b.cancel(ka), None);
        assert!(!b.reschedule(ka, t0) && !b.is_armed(ka));
        assert_eq!(b.deadline(kb), Some(t0 + ms(5)));
        assert_eq!(a.cancel(ka), Some("a"));
    }

    #[test]
    fn retain_drops_the_refused_and_far_deadlines_saturate() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new(t0);
        for i in 0..10 {
            q.arm(t0 + ms(i), i);
        }
        q.retain(|i| i % 2 == 0);
        assert_eq!((q.len(), q.entries()), (5, 5));
        // Beyond what nanoseconds in 64 bits hold (584 years): saturates.
        let far = q.arm(t0 + Duration::from_secs(600 * 365 * 24 * 3600), 99);
        assert!(q.is_armed(far));
        let fired: Vec<_> = std::iter::from_fn(|| q.pop_due(t0 + ms(100)))
            .map(|(_, p)| p)
            .collect();
        assert_eq!(fired, vec![0, 2, 4, 6, 8]);
        assert!(q
            .next_deadline()
            .is_some_and(|t| t > t0 + Duration::from_secs(3600)));
    }
}
