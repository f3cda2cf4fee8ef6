//! Raw system calls that neither std nor socket2 wraps: eventfd, signal
//! waiting, CPU affinity, resource limits, inherited descriptors, peer
//! credentials. Each is a thin, safe function over one libc call.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) mod epoll;

/// Turn a libc `-1` return into the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `recv(2)` on a socket the caller does not own here (the engine's
/// connection, borrowed by descriptor while its state is lent elsewhere).
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call; a bad descriptor is reported as EBADF, not undefined behaviour.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking eventfd(2) used to wake a worker from another thread.
#[derive(Debug)]
pub(crate) struct EventFd {
    file: File,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd {
            file: File::from(owned),
        })
    }

    /// Add one to the counter, making the fd readable.
    pub(crate) fn notify(&self) -> io::Result<()> {
        match (&self.file).write(&1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            // The counter is saturated: the fd is readable already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reset the counter to zero; returns whether it was non-zero.
    pub(crate) fn drain(&self) -> bool {
        let mut b = [0u8; 8];
        (&self.file).read(&mut b).is_ok()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The signals the CLI waits for: SIGINT and SIGTERM stop it, SIGHUP
/// reloads (its default action would end the process).
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn stop_sigset() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before
    // sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        cvt(libc::sigemptyset(&mut set))?;
        for s in STOP_SIGNALS {
            cvt(libc::sigaddset(&mut set, s))?;
        }
        Ok(set)
    }
}

/// Block SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every thread it
/// spawns afterwards), so that [`wait_for_stop_signal`] can take them.
pub(crate) fn block_stop_signals() -> io::Result<()> {
    let set = stop_sigset()?;
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Wait until SIGINT, SIGTERM or SIGHUP arrives (they must be blocked first);
/// returns the signal number.
pub(crate) fn wait_for_stop_signal() -> io::Result<i32> {
    let set = stop_sigset()?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

/// Like [`wait_for_stop_signal`], but give up after `timeout`: `Ok(None)`
/// when no signal came (sigtimedwait(2)).
pub(crate) fn wait_for_stop_signal_timeout(
    timeout: std::time::Duration,
) -> io::Result<Option<i32>> {
    let set = stop_sigset()?;
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` and `ts` are initialised; a null siginfo pointer is
    // allowed.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc >= 0 {
        return Ok(Some(rc));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(e),
    }
}

/// Pin the calling thread to one CPU (sched_setaffinity(2)).
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index out of range",
        ));
    }
    // SAFETY: cpu_set_t is plain data, zeroed is a valid empty set; CPU_SET
    // writes inside it because `cpu` < CPU_SETSIZE (checked above); the
    // pointer and size passed to sched_setaffinity describe that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// Send SIGTERM to `pid` (a child the caller has not reaped yet); for the
/// load generator's server children.
#[cfg(feature = "tools")]
pub(crate) fn terminate(pid: libc::pid_t) {
    // SAFETY: kill(2) has no memory-safety preconditions; the caller owns the
    // unreaped child, so the pid cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// Clock ticks per second, the unit of CPU times in /proc/PID/stat (read
/// by the load generator).
#[cfg(feature = "tools")]
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// `RLIMIT_NOFILE`'s soft and hard limit (getrlimit(2)); `RLIM_INFINITY`
/// for unlimited.
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the whole call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The size of a memory page, the unit of /proc/PID/statm.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Whether the descriptors a service manager passed have been taken.
static INHERITED_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Take ownership of descriptors `first..first + n`, passed to this process
/// by a service manager (the systemd socket-activation protocol says they
/// are this process's to use, and nothing in it has opened them as files).
/// At most once per process: a second call is an error, so no descriptor
/// gets two owners through here. A descriptor that is not open is an error
/// (`EBADF`), and none is taken.
pub(crate) fn take_inherited_fds(first: RawFd, n: usize) -> io::Result<Vec<OwnedFd>> {
    let last = first
        .checked_add(i32::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    for fd in first..last {
        // SAFETY: F_GETFD only reads the descriptor's flags; a descriptor
        // that is not open is reported as EBADF.
        cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    }
    // Relaxed: the flag guards only itself (the descriptors are taken by
    // whichever call sets it).
    if INHERITED_TAKEN.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the inherited listening descriptors were taken already",
        ));
    }
    Ok((first..last)
        // SAFETY: each descriptor is open (checked above) and, by the
        // socket-activation protocol, owned by nobody else in this process;
        // the flag above makes this the only place that takes them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

/// `setsockopt(TCP_ULP, name)`: attach an upper-layer protocol (`"tls"` for
/// kernel TLS) to a connected TCP socket. ENOENT: the kernel has no such
/// protocol (its module is not built or cannot be loaded).
pub(crate) fn set_tcp_ulp(fd: RawFd, name: &str) -> io::Result<()> {
    // SAFETY: the option value is `name`'s bytes, valid for `name.len()`
    // bytes for the whole call; a bad descriptor is EBADF.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The credentials of the process at the other end of a connected Unix
/// socket, as they were when it connected or listened (SO_PEERCRED).
pub(crate) fn peer_credentials(fd: RawFd) -> io::Result<(u32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred of `len` bytes for the whole call;
    // the kernel writes at most `len` bytes and a bad descriptor is EBADF.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid as u32, cred.uid, cred.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_notify_then_drain() {
        let e = EventFd::new().expect("eventfd");
        assert!(!e.drain(), "fresh eventfd is not readable");
        e.notify().expect("notify");
        e.notify().expect("notify");
        assert!(e.drain());
        assert!(!e.drain(), "drain resets the counter");
    }
}
