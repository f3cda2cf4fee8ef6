//! Why `io_uring_setup(2)` failed, in words an operator can act on.

use std::fs;
use std::io;

use super::os_text;
use super::report::SetupError;

const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

/// Explain an `io_uring_setup(2)` failure.
///
/// - `ENOSYS`: the kernel was built without io_uring (`CONFIG_IO_URING=n`) or is
///   older than 5.1.
/// - `EPERM`: a seccomp filter (e.g. Docker's/containerd's default profile since
///   late 2023) or the `kernel.io_uring_disabled` sysctl; its value is read from
///   `/proc/sys/kernel/io_uring_disabled` and reported when the file exists
///   (1 = only `CAP_SYS_ADMIN` or members of `kernel.io_uring_group`,
///   2 = disabled for everyone).
/// - `ENOMEM`: `RLIMIT_MEMLOCK` too low (kernels before 5.12 charge rings to it).
/// - anything else: the OS error text.
#[must_use]
pub fn explain_setup_error(err: &io::Error) -> SetupError {
    let sysctl = if err.raw_os_error() == Some(libc::EPERM) {
        fs::read_to_string(IO_URING_DISABLED)
            .ok()
            .map(|s| s.trim().to_owned())
    } else {
        None
    };
    explain_with_sysctl(err, sysctl.as_deref())
}

/// [`explain_setup_error`] with the `kernel.io_uring_disabled` value passed in
/// (`None` when the sysctl does not exist), so it can be tested deterministically.
fn explain_with_sysctl(err: &io::Error, io_uring_disabled: Option<&str>) -> SetupError {
    let Some(errno) = err.raw_os_error() else {
        return SetupError {
            errno: 0,
            reason: err.to_string(),
        };
    };
    const SECCOMP: &str = "blocked by a seccomp filter (e.g. Docker's/containerd's default \
                           profile, which denies io_uring_setup since late 2023)";
    let reason = match errno {
        libc::ENOSYS => "the kernel has no io_uring: built without it (CONFIG_IO_URING=n) \
                         or older than 5.1"
            .to_owned(),
        libc::EPERM => match io_uring_disabled {
            Some("2") => "io_uring is disabled for everyone by the sysctl \
                          kernel.io_uring_disabled=2"
                .to_owned(),
            Some("1") => "io_uring is restricted by the sysctl kernel.io_uring_disabled=1 to \
                          processes with CAP_SYS_ADMIN or in the kernel.io_uring_group group \
                          (or it is blocked by a seccomp filter)"
                .to_owned(),
            Some(value) => {
                format!("{SECCOMP}; the sysctl kernel.io_uring_disabled={value} is not the cause")
            }
            None => format!("{SECCOMP}; this kernel has no kernel.io_uring_disabled sysctl"),
        },
        libc::ENOMEM => "RLIMIT_MEMLOCK is too low for the ring (kernels before 5.12 charge \
                         io_uring memory to locked memory); raise it, e.g. with ulimit -l"
            .to_owned(),
        _ => os_text(errno),
    };
    SetupError { errno, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enosys_means_no_kernel_support() {
        let e = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(e.errno, libc::ENOSYS);
        assert!(e.reason.contains("CONFIG_IO_URING=n"), "{}", e.reason);
        assert!(e.reason.contains("5.1"), "{}", e.reason);
    }

    #[test]
    fn eperm_blames_seccomp_or_the_sysctl() {
        let err = io::Error::from_raw_os_error(libc::EPERM);
        // Whatever the sysctl says on this machine, the public function names a cause.
        let live = explain_setup_error(&err);
        assert_eq!(live.errno, libc::EPERM);
        assert!(
            live.reason.contains("seccomp") || live.reason.contains("io_uring_disabled"),
            "{}",
            live.reason
        );

        let missing = explain_with_sysctl(&err, None);
        assert!(missing.reason.contains("seccomp"), "{}", missing.reason);
        assert!(missing.reason.contains("Docker"), "{}", missing.reason);

        let zero = explain_with_sysctl(&err, Some("0"));
        assert!(zero.reason.contains("seccomp"), "{}", zero.reason);
        assert!(
            zero.reason.contains("io_uring_disabled=0"),
            "{}",
            zero.reason
        );

        let one = explain_with_sysctl(&err, Some("1"));
        assert!(one.reason.contains("io_uring_disabled=1"), "{}", one.reason);
        assert!(one.reason.contains("CAP_SYS_ADMIN"), "{}", one.reason);
        assert!(one.reason.contains("io_uring_group"), "{}", one.reason);

        let two = explain_with_sysctl(&err, Some("2"));
        assert!(two.reason.contains("io_uring_disabled=2"), "{}", two.reason);
        assert!(two.reason.contains("everyone"), "{}", two.reason);
    }

    #[test]
    fn enomem_means_memlock() {
        let e = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOMEM));
        assert_eq!(e.errno, libc::ENOMEM);
        assert!(e.reason.contains("RLIMIT_MEMLOCK"), "{}", e.reason);
        assert!(e.reason.contains("5.12"), "{}", e.reason);
    }

    #[test]
    fn other_errors_use_the_os_text() {
        let e = explain_setup_error(&io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(e.errno, libc::EINVAL);
        assert_eq!(e.reason, "Invalid argument");
        assert_eq!(
            e.to_string(),
            "io_uring unavailable: Invalid argument (errno 22)"
        );

        let no_errno = explain_setup_error(&io::Error::other("weird"));
        assert_eq!(no_errno.errno, 0);
        assert_eq!(no_errno.reason, "weird");
    }
}
