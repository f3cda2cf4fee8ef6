//! The cost of a handler timer in the worker's queue (`ringnet::timer`):
//! arming one and cancelling it (a request deadline that is met), and
//! arming one and firing it (a deadline that passes), each with 0, 10 000
//! and 1 000 000 other timers already armed. Time is passed in, so nothing
//! sleeps; one iteration is one timer. Run with `cargo bench --bench
//! timers`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringnet::timer::TimerQueue;

/// A queue with `n` timers armed between one and two hours out.
fn loaded(t0: Instant, n: u64) -> TimerQueue<u64> {
    let mut q = TimerQueue::new(t0);
    for i in 0..n {
        let d = Duration::from_secs(3600) + Duration::from_micros((i * 7_919) % 3_600_000_000);
        q.arm(t0 + d, i);
    }
    q
}

fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");
    g.throughput(Throughput::Elements(1));
    for n in [0u64, 10_000, 1_000_000] {
        let t0 = Instant::now();
        let mut q = loaded(t0, n);
        g.bench_with_input(BenchmarkId::new("arm+cancel", n), &n, |b, _| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let k = q.arm(t0 + Duration::from_millis(30_000 + i % 1000), i);
                black_box(q.cancel(k))
            })
        });
        g.bench_with_input(BenchmarkId::new("arm+fire", n), &n, |b, _| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                q.arm(t0 + Duration::from_millis(i % 1000), i);
                black_box(q.pop_due(t0 + Duration::from_secs(1)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
