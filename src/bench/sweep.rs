//! `ringnet bench --sweep MODE`: one workload against ringnet's own
//! io_uring server, started with the defaults and with each io_uring option
//! on alone, all in alternating rounds; each option's figures are given as
//! ratios to the defaults from the same rounds.
//!
//! Options are compared round by round (each run against the defaults' run
//! of the same round, the median of those ratios), because on a VM the
//! machine's speed can flip between runs by more than an option changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::compare::{median, ratio_by_round, run_rounds, Contender};
use super::report::fmt_duration;
use super::{BenchError, Mode, Options, RunResult};

/// One io_uring option as the sweep turns it on.
#[derive(Debug, Clone, Copy)]
pub struct SweepOption {
    /// Its name in the table and in `--sweep-options`.
    pub name: &'static str,
    /// The `ringnet serve` flags that turn it on.
    pub flags: &'static [&'static str],
}

/// The defaults (no flag), then every option the sweep knows.
pub const OPTIONS: &[SweepOption] = &[
    SweepOption {
        name: "defaults",
        flags: &[],
    },
    SweepOption {
        name: "sqpoll",
        flags: &["--sqpoll-idle-ms=100"],
    },
    SweepOption {
        name: "register-ring",
        flags: &["--register-ring"],
    },
    SweepOption {
        name: "huge-pages",
        flags: &["--buf-hugepages"],
    },
    SweepOption {
        name: "buf-inc",
        flags: &["--buf-inc"],
    },
    SweepOption {
        name: "fixed-send-buffers",
        flags: &["--fixed-send-buffers"],
    },
    SweepOption {
        name: "fixed-files",
        flags: &["--fixed-files=16384"],
    },
    SweepOption {
        name: "accept-direct",
        flags: &["--fixed-files=16384", "--accept-direct"],
    },
    SweepOption {
        name: "recv-bundle",
        flags: &["--recv-bundle"],
    },
    SweepOption {
        name: "send-zc",
        flags: &["--send-zc-threshold=1"],
    },
    SweepOption {
        name: "batch-wait",
        flags: &["--batch-wait-us=100"],
    },
    SweepOption {
        name: "coop-taskrun",
        flags: &["--no-defer-taskrun"],
    },
    SweepOption {
        name: "per-conn-buffers",
        flags: &["--buffers=per-conn"],
    },
];

/// Every run of the defaults and of each option.
#[derive(Debug)]
pub struct Sweep {
    /// The workload.
    pub mode: Mode,
    /// Per option (the defaults first), its flags and its runs in order.
    pub results: Vec<(String, Vec<RunResult>)>,
    flags: Vec<String>,
}

/// Run `template` against ringnet on io_uring (server on `server_cpu`,
/// load on `load_cpu`) with the defaults and with each option of `only`
/// (all of [`OPTIONS`] when `None`) alone, `runs` alternating rounds.
pub fn sweep(
    exe: &Path,
    template: &Options,
    runs: usize,
    (server_cpu, load_cpu): (usize, usize),
    only: Option<&[String]>,
    tls: Option<&(PathBuf, PathBuf)>,
) -> Result<Sweep, BenchError> {
    if let Some(only) = only {
        if let Some(unknown) = only
            .iter()
            .find(|n| !OPTIONS.iter().any(|o| o.name == n.as_str()))
        {
            let known: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
            return Err(BenchError::Usage(format!(
                "--sweep-options: no option {unknown:?} (there are {})",
                known.join(", ")
            )));
        }
    }
    let chosen: Vec<&SweepOption> = OPTIONS
        .iter()
        .filter(|o| {
            o.name == "defaults" || only.map_or(true, |only| only.iter().any(|n| n == o.name))
        })
        .collect();
    let servers: Vec<Contender> = chosen
        .iter()
        .map(|o| {
            let flags: Vec<String> = o.flags.iter().map(|f| f.to_string()).collect();
            Contender::uring(o.name, template.mode, server_cpu, &flags, tls)
        })
        .collect();
    let results = run_rounds(exe, &servers, template, runs, load_cpu)?;
    Ok(Sweep {
        mode: template.mode,
        results,
        flags: chosen.iter().map(|o| o.flags.join(" ")).collect(),
    })
}

/// One figure of a run, as a number (and how to print it).
struct Figure {
    name: String,
    get: fn(&RunResult) -> Option<f64>,
    fmt: fn(f64) -> String,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn fmt_us(v: f64) -> String {
    fmt_duration(Duration::from_nanos((v * 1e3) as u64))
}

impl Sweep {
    fn figures(&self) -> Vec<Figure> {
        let mut f = vec![if self.mode == Mode::Hold {
            Figure {
                name: "RSS/conn".into(),
                get: |r| r.rss_per_conn(),
                fmt: |v| format!("{v:.0} B"),
            }
        } else {
            Figure {
                name: format!("{}/s", self.mode.unit()),
                get: |r| Some(r.ops_per_sec()),
                fmt: |v| format!("{v:.0}"),
            }
        }];
        f.push(Figure {
            name: format!("CPU/{}", self.mode.op()),
            get: |r| r.cpu_per_op().map(us),
            fmt: fmt_us,
        });
        f.push(Figure {
            name: "user/op".into(),
            get: |r| r.user_cpu_per_op().map(us),
            fmt: fmt_us,
        });
        f.push(Figure {
            name: "p99".into(),
            get: |r| Some(us(r.latency_at(0.99))),
            fmt: fmt_us,
        });
        f
    }

    /// The figure the sweep judges options by: server CPU per operation,
    /// or memory per connection for hold.
    fn key(&self) -> fn(&RunResult) -> Option<f64> {
        if self.mode == Mode::Hold {
            |r| r.rss_per_conn()
        } else {
            |r| r.cpu_per_op().map(us)
        }
    }

    /// `option`'s key figure over the defaults', the median of the
    /// rounds' ratios.
    pub fn ratio(&self, option: &str) -> Option<f64> {
        ratio_by_round(&self.results, option, "defaults", self.key())
    }

    /// Its throughput over the defaults', the same way.
    pub fn rate_ratio(&self, option: &str) -> Option<f64> {
        ratio_by_round(&self.results, option, "defaults", |r| Some(r.ops_per_sec()))
    }

    fn median_of(&self, runs: &[RunResult], get: fn(&RunResult) -> Option<f64>) -> Option<f64> {
        median(runs.iter().filter_map(get).collect())
    }

    /// A row per option: medians, then the ratios to the defaults.
    pub fn to_table(&self) -> String {
        let rounds = self.results.first().map_or(0, |(_, r)| r.len());
        let figures = self.figures();
        let key = if self.mode == Mode::Hold {
            "RSS ÷ defaults"
        } else {
            "CPU ÷ defaults"
        };
        let mut out = format!(
            "sweep {} on io_uring: each option alone against the defaults, {rounds} alternating rounds\n\
             (medians; ÷ defaults: the median of each round's ratio)\n",
            self.mode
        );
        out.push_str(&format!("{:<18}", "option"));
        for f in &figures {
            out.push_str(&format!("{:>16}", f.name));
        }
        out.push_str(&format!("{key:>16}{:>16}  flags\n", "rate ÷ defaults"));
        for ((name, runs), flags) in self.results.iter().zip(&self.flags) {
            out.push_str(&format!("{name:<18}"));
            for f in &figures {
                let v = self.median_of(runs, f.get).map_or("-".into(), f.fmt);
                out.push_str(&format!("{v:>16}"));
            }
            let (r, q) = if name == "defaults" {
                ("1".to_string(), "1".to_string())
            } else {
                let show = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
                (show(self.ratio(name)), show(self.rate_ratio(name)))
            };
            out.push_str(&format!("{r:>16}{q:>16}  {flags}\n"));
        }
        out
    }

    /// The same as JSON, with every run.
    pub fn to_json(&self) -> serde_json::Value {
        let options: Vec<serde_json::Value> = self
            .results
            .iter()
            .zip(&self.flags)
            .map(|((name, runs), flags)| {
                serde_json::json!({
                    "option": name,
                    "flags": flags,
                    "ratio_to_defaults": if name == "defaults" { Some(1.0) } else { self.ratio(name) },
                    "rate_ratio_to_defaults": if name == "defaults" { Some(1.0) } else { self.rate_ratio(name) },
                    "runs": runs.iter().map(RunResult::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "mode": self.mode.to_string(), "options": options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_using(cpu_us: u64, ops: u64) -> RunResult {
        crate::bench::report::test_run(Duration::from_micros(cpu_us), ops)
    }

    #[test]
    fn options_are_judged_against_the_defaults_round_by_round() {
        // Round 2 ran on a slower machine for both.
        let sweep = Sweep {
            mode: Mode::Echo,
            results: vec![
                (
                    "defaults".into(),
                    vec![run_using(1000, 100), run_using(2000, 100)],
                ),
                (
                    "sqpoll".into(),
                    vec![run_using(900, 110), run_using(1800, 110)],
                ),
            ],
            flags: vec![String::new(), "--sqpoll-idle-ms=100".into()],
        };
        // CPU per operation: 9 µs over 10 µs, in both rounds.
        let r = sweep.ratio("sqpoll").expect("ratio");
        assert!((r - 0.9 / 1.1).abs() < 1e-3, "{r}");
        let q = sweep.rate_ratio("sqpoll").expect("ratio");
        assert!((q - 1.1).abs() < 1e-9, "{q}");
        let t = sweep.to_table();
        assert!(t.contains("0.818"), "{t}");
        assert!(t.contains("--sqpoll-idle-ms=100"), "{t}");
        let j = sweep.to_json();
        let jr = j["options"][1]["ratio_to_defaults"]
            .as_f64()
            .expect("a ratio");
        assert!((jr - 0.9 / 1.1).abs() < 1e-3, "{j}");
    }

    #[test]
    fn every_option_has_a_name_and_the_defaults_come_first() {
        assert_eq!(OPTIONS[0].name, "defaults");
        assert!(OPTIONS[0].flags.is_empty());
        for o in &OPTIONS[1..] {
            assert!(!o.flags.is_empty(), "{}", o.name);
        }
    }
}
