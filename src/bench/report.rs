//! What one load run measured, and how it is printed (table or JSON).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::Mode;

/// The outcome of one run of the load generator.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What was run.
    pub mode: Mode,
    /// Concurrent connections.
    pub conns: usize,
    /// Message size (echo) in bytes.
    pub size: usize,
    /// The measured period (after warm-up).
    pub elapsed: Duration,
    /// Completed operations in the measured period: round trips (echo, http),
    /// whole connections (accept), connections that still echoed (hold).
    pub ops: u64,
    /// Failed operations: connect/IO errors, early closes, bad responses.
    pub errors: u64,
    /// Operations whose bytes differed from what was expected.
    pub mismatches: u64,
    /// Bytes compared against what was sent (or expected) and found equal.
    pub bytes_verified: u64,
    /// Latency of each operation, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Server CPU time used during the measured period, when its pid is known.
    pub server_cpu: Option<Duration>,
    /// The user-space part of `server_cpu` (the server's own code; the
    /// rest is the kernel's, mostly TCP, the same for every server).
    pub server_user_cpu: Option<Duration>,
    /// Server RSS before the connections were opened (hold) or at the start.
    pub server_rss_before: Option<u64>,
    /// Server RSS with every connection open (hold) or at the end.
    pub server_rss_after: Option<u64>,
    /// The open-loop rate asked for (`--rate`), requests per second.
    pub target_rate: Option<f64>,
    /// Requests in flight per connection (`--pipeline`).
    pub pipeline: usize,
    /// Operations per second over the measured period, one value per
    /// second (all load threads together).
    pub throughput: Vec<f64>,
}

impl RunResult {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at quantile `q` (0..=1).
    pub fn latency_at(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    /// Server CPU time per operation, when known.
    pub fn cpu_per_op(&self) -> Option<Duration> {
        let cpu = self.server_cpu?;
        (self.ops > 0).then(|| Duration::from_nanos((cpu.as_nanos() / u128::from(self.ops)) as u64))
    }

    /// Server user-space CPU time per operation, when known.
    pub fn user_cpu_per_op(&self) -> Option<Duration> {
        let cpu = self.server_user_cpu?;
        (self.ops > 0).then(|| Duration::from_nanos((cpu.as_nanos() / u128::from(self.ops)) as u64))
    }

    /// In open loop, how far below the asked rate the run stayed, as a
    /// fraction (0.0: held; 0.2: 20% below). Within 5% counts as held.
    pub fn rate_shortfall(&self) -> Option<f64> {
        let target = self.target_rate?;
        Some((1.0 - self.ops_per_sec() / target).max(0.0))
    }

    /// Server RSS growth per connection, when known (meaningful in hold
    /// mode, where it is read with every connection open and idle).
    pub fn rss_per_conn(&self) -> Option<f64> {
        let (a, b) = (self.server_rss_before?, self.server_rss_after?);
        (self.conns > 0).then(|| (b as f64 - a as f64) / self.conns as f64)
    }

    /// The final table.
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let depth = if self.pipeline > 1 {
            format!(" | pipeline {}", self.pipeline)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "{} | {} conns{depth} | {} B | {:.1} s measured",
            self.mode,
            self.conns,
            self.size,
            self.elapsed.as_secs_f64()
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<26} {v}");
        };
        if self.mode == Mode::Hold {
            row(self.mode.unit(), format!("{} of {}", self.ops, self.conns));
        } else {
            row(
                self.mode.unit(),
                format!("{:.0}/s ({} total)", self.ops_per_sec(), self.ops),
            );
        }
        if let (Some(target), Some(short)) = (self.target_rate, self.rate_shortfall()) {
            row(
                "open loop",
                if short <= 0.05 {
                    format!("{target:.0}/s asked, held")
                } else {
                    format!("{target:.0}/s asked, NOT held: {:.1}% below", short * 100.0)
                },
            );
        }
        for (name, q) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p99.9", 0.999),
            ("p99.99", 0.9999),
        ] {
            row(&format!("latency {name}"), fmt_duration(self.latency_at(q)));
        }
        row(
            "latency max",
            fmt_duration(Duration::from_nanos(self.latency.max())),
        );
        row("errors", self.errors.to_string());
        row("mismatches", self.mismatches.to_string());
        row("bytes verified", self.bytes_verified.to_string());
        if let Some(c) = self.cpu_per_op() {
            row(&format!("server CPU / {}", self.mode.op()), fmt_duration(c));
        }
        if let Some(c) = self.user_cpu_per_op() {
            row("  of which user space", fmt_duration(c));
        }
        if let (Some(a), Some(b)) = (self.server_rss_before, self.server_rss_after) {
            row(
                "server RSS",
                format!("{} KiB -> {} KiB", a / 1024, b / 1024),
            );
        }
        if let (Mode::Hold, Some(r)) = (self.mode, self.rss_per_conn()) {
            row("server RSS / conn", format!("{r:.0} B"));
        }
        t
    }

    /// The same as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        serde_json::json!({
            "mode": self.mode.to_string(),
            "conns": self.conns,
            "pipeline": self.pipeline,
            "size": self.size,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ops": self.ops,
            "ops_per_s": self.ops_per_sec(),
            "errors": self.errors,
            "mismatches": self.mismatches,
            "bytes_verified": self.bytes_verified,
            "latency_us": {
                "p50": us(self.latency_at(0.5)),
                "p90": us(self.latency_at(0.9)),
                "p99": us(self.latency_at(0.99)),
                "p99_9": us(self.latency_at(0.999)),
                "p99_99": us(self.latency_at(0.9999)),
                "max": self.latency.max() as f64 / 1e3,
            },
            "target_rate": self.target_rate,
            "rate_shortfall": self.rate_shortfall(),
            "server_cpu_per_op_us": self.cpu_per_op().map(us),
            "server_user_cpu_per_op_us": self.user_cpu_per_op().map(us),
            "server_rss_before": self.server_rss_before,
            "server_rss_after": self.server_rss_after,
            "server_rss_per_conn": self.rss_per_conn(),
        })
    }
}

/// A run of `ops` operations that cost the server `cpu` (unit tests of
/// the tables that compare runs).
#[cfg(test)]
pub(crate) fn test_run(cpu: Duration, ops: u64) -> RunResult {
    RunResult {
        mode: Mode::Echo,
        conns: 1,
        size: 64,
        elapsed: Duration::from_secs(1),
        ops,
        errors: 0,
        mismatches: 0,
        bytes_verified: 0,
        latency: Histogram::new(3).expect("histogram"),
        server_cpu: Some(cpu),
        server_user_cpu: None,
        server_rss_before: None,
        server_rss_after: None,
        target_rate: None,
        pipeline: 1,
        throughput: Vec::new(),
    }
}

/// Latency against load: a row per open-loop run of `--rates`.
pub fn rates_table(rows: &[RunResult]) -> String {
    let mut t = String::new();
    if let Some(first) = rows.first() {
        let _ = writeln!(
            t,
            "{} | {} conns{} | open loop, {:.1} s per rate",
            first.mode,
            first.conns,
            if first.pipeline > 1 {
                format!(" | pipeline {}", first.pipeline)
            } else {
                String::new()
            },
            first.elapsed.as_secs_f64()
        );
    }
    let _ = writeln!(
        t,
        "{:>10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "asked/s", "done/s", "held", "p50", "p99", "p99.9", "p99.99", "max", "CPU/op", "errors"
    );
    for r in rows {
        let held = match r.rate_shortfall() {
            Some(s) if s <= 0.05 => "yes".to_string(),
            Some(s) => format!("{:.1}% short", s * 100.0),
            None => "-".to_string(),
        };
        let _ = writeln!(
            t,
            "{:>10.0} {:>10.0} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
            r.target_rate.unwrap_or(0.0),
            r.ops_per_sec(),
            held,
            fmt_duration(r.latency_at(0.5)),
            fmt_duration(r.latency_at(0.99)),
            fmt_duration(r.latency_at(0.999)),
            fmt_duration(r.latency_at(0.9999)),
            fmt_duration(Duration::from_nanos(r.latency.max())),
            r.cpu_per_op().map_or_else(|| "-".to_string(), fmt_duration),
            r.errors + r.mismatches,
        );
    }
    t
}

/// The rows of [`rates_table`] as a JSON array of runs.
pub fn rates_json(rows: &[RunResult]) -> serde_json::Value {
    serde_json::Value::Array(rows.iter().map(RunResult::to_json).collect())
}

/// `12.3 µs`, `4.56 ms`, `1.20 s`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_rate_is_held_within_five_percent() {
        let mut r = result();
        r.target_rate = Some(2.0 * r.ops_per_sec());
        assert!((r.rate_shortfall().expect("open loop") - 0.5).abs() < 1e-9);
        assert!(
            r.to_table().contains("NOT held: 50.0% below"),
            "{}",
            r.to_table()
        );
        r.target_rate = Some(r.ops_per_sec() * 1.04);
        assert!(r.to_table().contains("held"));
        assert!(!r.to_table().contains("NOT held"));
        r.target_rate = None;
        assert_eq!(r.rate_shortfall(), None);
    }

    fn result() -> RunResult {
        let mut h = Histogram::new(3).expect("histogram");
        for v in 1..=1000u64 {
            h.record(v * 1000).expect("record");
        }
        RunResult {
            target_rate: None,
            pipeline: 1,
            throughput: Vec::new(),
            mode: Mode::Hold,
            conns: 4,
            size: 64,
            elapsed: Duration::from_secs(2),
            ops: 1000,
            errors: 1,
            mismatches: 0,
            bytes_verified: 64_000,
            latency: h,
            server_cpu: Some(Duration::from_millis(10)),
            server_user_cpu: Some(Duration::from_millis(2)),
            server_rss_before: Some(1 << 20),
            server_rss_after: Some((1 << 20) + 4 * 256),
        }
    }

    #[test]
    fn derived_figures() {
        let r = result();
        assert_eq!(r.ops_per_sec(), 500.0);
        assert_eq!(r.cpu_per_op(), Some(Duration::from_micros(10)));
        assert_eq!(r.rss_per_conn(), Some(256.0));
        let p50 = r.latency_at(0.5).as_micros();
        assert!((495..=505).contains(&p50), "{p50}");
    }

    #[test]
    fn table_and_json_carry_every_figure() {
        let r = result();
        let t = r.to_table();
        for needle in [
            "held conns echoing",
            "1000 of 4",
            "p99.9",
            "errors",
            "server CPU / held conn",
            "of which user space",
            "RSS / conn",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
        let j = r.to_json();
        assert_eq!(j["ops"], 1000);
        assert_eq!(j["errors"], 1);
        assert_eq!(j["server_rss_per_conn"], 256.0);
        assert_eq!(j["server_user_cpu_per_op_us"], 2.0);
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(fmt_duration(Duration::from_nanos(500)), "500 ns");
        assert_eq!(fmt_duration(Duration::from_nanos(12_300)), "12.3 µs");
        assert_eq!(fmt_duration(Duration::from_micros(4560)), "4.56 ms");
        assert_eq!(fmt_duration(Duration::from_millis(1200)), "1.20 s");
    }
}
