//! What [`probe`](super::probe) found: the report, one entry per feature,
//! and why a ring could not be set up; the table `ringnet probe` prints.

use std::fmt;

use super::one_line;
use super::SocketLimits;

/// Everything [`probe`](super::probe) found out about io_uring on this machine.
///
/// The fields are public, so a caller renders the report as it likes
/// (`ringnet probe --json` builds its JSON from them); [`ProbeReport::to_table`]
/// is the plain-text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Kernel release from `/proc/sys/kernel/osrelease` (trimmed), or `"unknown"`.
    pub kernel: String,
    /// Whether a plain ring of 8 entries could be set up here.
    pub uring: Result<(), SetupError>,
    /// One entry per probed feature, in a fixed order; empty when `uring` is `Err`.
    pub features: Vec<Feature>,
    /// The socket limits (sysctls, `RLIMIT_NOFILE`), read whether or not
    /// io_uring works.
    pub socket_limits: SocketLimits,
}

/// The outcome of probing one io_uring feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// Stable feature name, e.g. `"multishot accept"`.
    pub name: &'static str,
    /// Whether the probe showed the feature working.
    pub supported: bool,
    /// Short human explanation: what was observed, or the error that stopped the probe.
    pub detail: String,
    /// Upstream kernel version that introduced the feature (informational only).
    pub since: &'static str,
}

/// Why `io_uring_setup(2)` failed, explained for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// The raw OS error number (0 when the error carried none).
    pub errno: i32,
    /// Human explanation of the likely cause.
    pub reason: String,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring unavailable: {} (errno {})",
            self.reason, self.errno
        )
    }
}

impl std::error::Error for SetupError {}

impl SetupError {
    /// The reason followed by the errno, e.g. `blocked by seccomp ... (errno 1)`.
    pub fn reason_with_errno(&self) -> String {
        format!("{} (errno {})", self.reason, self.errno)
    }
}

impl ProbeReport {
    /// The probed feature called `name` (see the module docs for the names).
    #[must_use]
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Plain aligned text: a `kernel` and an `io_uring` line, then (when io_uring
    /// works) a column header and exactly one line per feature with the columns
    /// feature, supported (`yes`/`no`), since and detail; then an empty line,
    /// `socket limits:` and [`SocketLimits::to_table`].
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut out = self.uring_table();
        out.push_str("\nsocket limits:\n");
        out.push_str(&self.socket_limits.to_table());
        out
    }

    /// The kernel, io_uring and feature lines of [`ProbeReport::to_table`].
    fn uring_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("kernel:   {}\n", one_line(&self.kernel)));
        match &self.uring {
            Ok(()) => out.push_str("io_uring: ok\n"),
            Err(err) => out.push_str(&format!(
                "io_uring: unavailable: {} (errno {})\n",
                one_line(&err.reason),
                err.errno
            )),
        }
        if self.features.is_empty() {
            return out;
        }

        const HEADERS: [&str; 4] = ["feature", "supported", "since", "detail"];
        let name_w = self
            .features
            .iter()
            .map(|f| f.name.chars().count())
            .chain([HEADERS[0].len()])
            .max()
            .unwrap_or(0);
        let supported_w = HEADERS[1].len();
        let since_w = self
            .features
            .iter()
            .map(|f| f.since.chars().count())
            .chain([HEADERS[2].len()])
            .max()
            .unwrap_or(0);
        let row = |name: &str, supported: &str, since: &str, detail: &str| {
            let line =
                format!("{name:<name_w$}  {supported:<supported_w$}  {since:<since_w$}  {detail}");
            format!("{}\n", line.trim_end())
        };
        out.push_str(&row(HEADERS[0], HEADERS[1], HEADERS[2], HEADERS[3]));
        for f in &self.features {
            let supported = if f.supported { "yes" } else { "no" };
            out.push_str(&row(f.name, supported, f.since, &one_line(&f.detail)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(uring: Result<(), SetupError>, features: Vec<Feature>) -> ProbeReport {
        ProbeReport {
            kernel: "6.18.0-test".to_owned(),
            uring,
            features,
            socket_limits: SocketLimits::default(),
        }
    }

    fn feature(name: &'static str, supported: bool, detail: &str) -> Feature {
        Feature {
            name,
            supported,
            detail: detail.to_owned(),
            since: "5.19",
        }
    }

    #[test]
    fn table_has_one_line_per_feature() {
        let features = vec![
            feature(
                "multishot accept",
                true,
                "AcceptMulti posted a CQE with F_MORE",
            ),
            feature("multishot recv", false, "line one\nline two"),
            feature("NODROP", true, "fine"),
        ];
        let report = sample(Ok(()), features.clone());
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().take_while(|l| !l.is_empty()).collect();
        // kernel, io_uring, column header, then the features.
        assert_eq!(lines.len(), 3 + features.len(), "{table}");
        assert!(lines[0].contains("6.18.0-test"), "{table}");
        assert!(lines[1].contains("ok"), "{table}");
        for (f, line) in features.iter().zip(&lines[3..]) {
            assert!(line.starts_with(f.name), "{line}");
            let expected = if f.supported { "yes" } else { "no" };
            assert_eq!(
                line.split_whitespace().nth(f.name.split(' ').count()),
                Some(expected)
            );
        }
        // Columns line up: "supported" starts at the same offset in every row.
        let col = lines[2].find("supported").unwrap_or(0);
        for line in &lines[3..] {
            assert!(
                line[col..].starts_with("yes") || line[col..].starts_with("no"),
                "{table}"
            );
        }
        assert!(lines.iter().all(|l| l == &l.trim_end()), "{table}");
    }

    #[test]
    fn table_without_uring_explains_why() {
        let report = sample(
            Err(SetupError {
                errno: 38,
                reason: "no io_uring".to_owned(),
            }),
            Vec::new(),
        );
        let table = report.to_table();
        assert_eq!(
            table.lines().take_while(|l| !l.is_empty()).count(),
            2,
            "{table}"
        );
        assert!(
            table.contains("\nsocket limits:\nnet.core.somaxconn"),
            "{table}"
        );
        assert!(
            table.contains("io_uring: unavailable: no io_uring (errno 38)"),
            "{table}"
        );
    }

    #[test]
    fn feature_lookup_by_name() {
        let report = sample(Ok(()), vec![feature("NODROP", true, "")]);
        assert!(report.feature("NODROP").is_some_and(|f| f.supported));
        assert!(report.feature("SQPOLL").is_none());
    }
}
