//! The socket limits `ringnet probe` reports next to io_uring: the sysctls
//! that cap listen backlogs, socket buffers and ephemeral ports, the
//! descriptor limit, and the connect timeout SYN retransmits imply. Read
//! from `/proc/sys` (proc(5), tcp(7)) and getrlimit(2); a value that cannot
//! be read is `None`, never an error.

use std::fmt::Write as _;
use std::time::Duration;

/// The kernel's socket limits as this process sees them.
///
/// Every field is `None` where its `/proc/sys` file (or getrlimit) could
/// not be read or parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketLimits {
    /// `net.core.somaxconn`: the cap on every `listen(2)` backlog.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections remembered per
    /// listener.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.core.rmem_max`: the largest SO_RCVBUF a process may set.
    pub rmem_max: Option<u64>,
    /// `net.core.wmem_max`: the largest SO_SNDBUF a process may set.
    pub wmem_max: Option<u64>,
    /// `net.ipv4.tcp_rmem`: TCP receive buffer min, default, max (autotuning).
    pub tcp_rmem: Option<[u64; 3]>,
    /// `net.ipv4.tcp_wmem`: TCP send buffer min, default, max.
    pub tcp_wmem: Option<[u64; 3]>,
    /// `net.ipv4.ip_local_port_range`: the first and last ephemeral port.
    pub ip_local_port_range: Option<[u64; 2]>,
    /// `RLIMIT_NOFILE`: descriptors this process may open.
    pub nofile: Option<FileLimit>,
    /// `net.ipv4.tcp_syn_retries`: SYN retransmits before a connect fails.
    pub tcp_syn_retries: Option<u32>,
    /// Whether kernel TLS can be attached here: `setsockopt(TCP_ULP,
    /// "tls")` on a connected loopback socket (Linux 4.13); `Err(errno)`
    /// when the kernel refused it (ENOENT: no `tls` module). `None`: the
    /// test connection could not be made.
    pub kernel_tls: Option<Result<(), i32>>,
}

/// A resource limit's soft and hard value; `None` means unlimited
/// (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit that applies (a process may raise it up to `hard`).
    pub soft: Option<u64>,
    /// The ceiling for `soft`.
    pub hard: Option<u64>,
}

impl SocketLimits {
    /// How long a connect to a silent host waits before it fails, from
    /// `tcp_syn_retries` (see [`syn_connect_timeout`]).
    #[must_use]
    pub fn syn_connect_timeout(&self) -> Option<Duration> {
        self.tcp_syn_retries.map(syn_connect_timeout)
    }

    /// One line per limit, `name  value`, the names as sysctl(8) and
    /// getrlimit(2) spell them; `unknown` where a value could not be read.
    #[must_use]
    pub fn to_table(&self) -> String {
        let num = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        let list = |v: Option<&[u64]>| match v {
            Some(ns) => ns.iter().map(u64::to_string).collect::<Vec<_>>().join(" "),
            None => "unknown".to_owned(),
        };
        let limit = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let rows = [
            ("net.core.somaxconn", num(self.somaxconn)),
            (
                "net.ipv4.tcp_max_syn_backlog",
                num(self.tcp_max_syn_backlog),
            ),
            ("net.core.rmem_max", num(self.rmem_max)),
            ("net.core.wmem_max", num(self.wmem_max)),
            (
                "net.ipv4.tcp_rmem",
                list(self.tcp_rmem.as_ref().map(|a| &a[..])),
            ),
            (
                "net.ipv4.tcp_wmem",
                list(self.tcp_wmem.as_ref().map(|a| &a[..])),
            ),
            (
                "net.ipv4.ip_local_port_range",
                list(self.ip_local_port_range.as_ref().map(|a| &a[..])),
            ),
            (
                "RLIMIT_NOFILE",
                match self.nofile {
                    Some(l) => format!("soft {} hard {}", limit(l.soft), limit(l.hard)),
                    None => "unknown".to_owned(),
                },
            ),
            (
                "kernel TLS (TCP_ULP \"tls\")",
                match self.kernel_tls {
                    Some(Ok(())) => "available".to_owned(),
                    Some(Err(errno)) => format!(
                        "not available: {}",
                        std::io::Error::from_raw_os_error(errno)
                    ),
                    None => "unknown".to_owned(),
                },
            ),
            (
                "net.ipv4.tcp_syn_retries",
                match (self.tcp_syn_retries, self.syn_connect_timeout()) {
                    (Some(r), Some(t)) => {
                        format!("{r} (a connect gives up after {} s)", t.as_secs())
                    }
                    _ => "unknown".to_owned(),
                },
            ),
        ];
        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, value) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{name:<width$}  {value}");
        }
        out
    }
}

/// The connect timeout `retries` SYN retransmits imply: Linux resends an
/// unanswered SYN after 1 s, then doubles the wait each time, and gives up
/// one (doubled) wait after the last, so the total is the sum of `2^i` s
/// for `i` in `0..=retries` (6 retries: 127 s). Saturates at `u64::MAX` s.
#[must_use]
pub fn syn_connect_timeout(retries: u32) -> Duration {
    let secs = match 1u64.checked_shl(retries.saturating_add(1)) {
        Some(p) => p - 1,
        None => u64::MAX,
    };
    Duration::from_secs(secs)
}

/// Read the limits of this machine and process.
#[must_use]
pub fn socket_limits() -> SocketLimits {
    SocketLimits {
        somaxconn: sysctl("net/core/somaxconn")
            .and_then(|t| numbers::<1>(&t))
            .map(|[n]| n),
        tcp_max_syn_backlog: sysctl("net/ipv4/tcp_max_syn_backlog")
            .and_then(|t| numbers::<1>(&t))
            .map(|[n]| n),
        rmem_max: sysctl("net/core/rmem_max")
            .and_then(|t| numbers::<1>(&t))
            .map(|[n]| n),
        wmem_max: sysctl("net/core/wmem_max")
            .and_then(|t| numbers::<1>(&t))
            .map(|[n]| n),
        tcp_rmem: sysctl("net/ipv4/tcp_rmem").and_then(|t| numbers(&t)),
        tcp_wmem: sysctl("net/ipv4/tcp_wmem").and_then(|t| numbers(&t)),
        ip_local_port_range: sysctl("net/ipv4/ip_local_port_range").and_then(|t| numbers(&t)),
        nofile: crate::sys::nofile_limit()
            .ok()
            .map(|(soft, hard)| FileLimit {
                soft: finite(soft),
                hard: finite(hard),
            }),
        tcp_syn_retries: sysctl("net/ipv4/tcp_syn_retries")
            .and_then(|t| numbers::<1>(&t))
            .and_then(|[n]| u32::try_from(n).ok()),
        kernel_tls: kernel_tls(),
    }
}

/// Try to attach kernel TLS to a connected loopback socket.
fn kernel_tls() -> Option<Result<(), i32>> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let client = std::net::TcpStream::connect(listener.local_addr().ok()?).ok()?;
    Some(
        crate::sys::set_tcp_ulp(client.as_raw_fd(), "tls")
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
    )
}

/// The text of `/proc/sys/<path>`, or `None`.
fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}")).ok()
}

/// Exactly `N` whitespace-separated unsigned numbers, or `None`.
fn numbers<const N: usize>(text: &str) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    let mut words = text.split_whitespace();
    for slot in &mut out {
        *slot = words.next()?.parse().ok()?;
    }
    words.next().is_none().then_some(out)
}

/// A raw rlimit value, `None` for `RLIM_INFINITY`.
fn finite(raw: u64) -> Option<u64> {
    (raw != libc::RLIM_INFINITY).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_retries_imply_a_doubling_timeout() {
        assert_eq!(syn_connect_timeout(0), Duration::from_secs(1));
        assert_eq!(syn_connect_timeout(1), Duration::from_secs(3));
        assert_eq!(syn_connect_timeout(5), Duration::from_secs(63));
        assert_eq!(syn_connect_timeout(6), Duration::from_secs(127));
        assert_eq!(syn_connect_timeout(62), Duration::from_secs((1 << 63) - 1));
        assert_eq!(syn_connect_timeout(63), Duration::from_secs(u64::MAX));
        assert_eq!(syn_connect_timeout(u32::MAX), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn numbers_want_exactly_n() {
        assert_eq!(numbers::<1>("4096\n"), Some([4096]));
        assert_eq!(
            numbers::<3>("4096\t131072\t6291456\n"),
            Some([4096, 131072, 6291456])
        );
        assert_eq!(numbers::<2>("32768\t60999\n"), Some([32768, 60999]));
        assert_eq!(numbers::<2>("1"), None);
        assert_eq!(numbers::<1>("1 2"), None);
        assert_eq!(numbers::<1>("-1"), None);
        assert_eq!(numbers::<1>(""), None);
    }

    #[test]
    fn table_names_every_limit_and_says_unknown() {
        let table = SocketLimits::default().to_table();
        assert_eq!(table.lines().count(), 10, "{table}");
        assert!(table.lines().all(|l| l.ends_with("unknown")), "{table}");
        let live = socket_limits();
        let table = live.to_table();
        assert!(table.contains("net.core.somaxconn"), "{table}");
        if let Some(l) = live.nofile {
            assert!(l.soft.unwrap_or(u64::MAX) <= l.hard.unwrap_or(u64::MAX));
        }
    }
}
