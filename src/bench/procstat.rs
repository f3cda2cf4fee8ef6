//! CPU time and resident memory of a process, from /proc/PID/stat and
//! /proc/PID/statm (proc(5)).

use std::io;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time used so far (all threads).
    pub cpu: Duration,
    /// The user-space part of it: the server's own code, not the kernel's.
    pub user: Duration,
    /// Resident set size in bytes.
    pub rss: u64,
}

/// Read `pid`'s CPU time and RSS.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    parse(
        &stat,
        &statm,
        crate::sys::clock_ticks(),
        crate::sys::page_size() as u64,
    )
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected /proc format: {what}"),
    )
}

/// Parse the two files. The command name in `stat` may contain spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse(stat: &str, statm: &str, ticks: u64, page: u64) -> io::Result<ProcSample> {
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| bad("stat has no ')'"))?
        .1;
    // After ')': field 3 (state) is index 0, so utime (14) is 11, stime (15) 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("stat field"))
    };
    let user = num(11)?;
    let jiffies = user + num(12)?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| bad("statm field"))?;
    let ticks = ticks.max(1);
    Ok(ProcSample {
        cpu: Duration::from_nanos(jiffies * 1_000_000_000 / ticks),
        user: Duration::from_nanos(user * 1_000_000_000 / ticks),
        rss: resident * page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 1000000 200 18446744073709551615";
        let s = parse(stat, "5000 300 100 10 0 200 0\n", 100, 4096).expect("parses");
        assert_eq!(s.cpu, Duration::from_secs(3));
        assert_eq!(s.user, Duration::from_millis(2500));
        assert_eq!(s.rss, 300 * 4096);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("no paren here", "1 2", 100, 4096).is_err());
        assert!(parse("1 (x) S", "1 2", 100, 4096).is_err());
    }
}
