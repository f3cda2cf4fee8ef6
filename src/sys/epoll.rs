//! epoll(7) and accept4(2): the readiness calls behind the epoll backend.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::Socket;

use super::cvt;

/// Readable.
pub(crate) const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its write side.
pub(crate) const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Wake only one of the epoll instances waiting on this fd (Linux 4.5).
pub(crate) const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;
/// Hang-up or error, always reported.
pub(crate) const HUP_ERR: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
    /// Reused by every `wait`.
    raw: Vec<libc::epoll_event>,
}

/// One ready event: the registered `data` and the event bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub(crate) data: u64,
    pub(crate) events: u32,
}

impl Epoll {
    /// An instance that reports at most `max_events` per wait.
    pub(crate) fn new(max_events: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            raw: Vec::with_capacity(max_events.max(1)),
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call
        // (the kernel copies it); bad fds are reported as errors.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub(crate) fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    pub(crate) fn modify(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait up to `timeout_ms` (-1: forever) and fill `out` (cleared first)
    /// with the ready events.
    pub(crate) fn wait(&mut self, out: &mut Vec<Event>, timeout_ms: i32) -> io::Result<()> {
        self.wait_with(out, |fd, raw, max| {
            // SAFETY: `raw` has room for `max` events, which is what the
            // kernel is told it may write.
            unsafe { libc::epoll_wait(fd, raw, max, timeout_ms) }
        })
    }

    /// [`Epoll::wait`] with a timeout to the nanosecond (epoll_pwait2(2),
    /// Linux 5.11), for callers whose deadlines are finer than a
    /// millisecond; where the kernel lacks it, rounded up to milliseconds.
    pub(crate) fn wait_timeout(
        &mut self,
        out: &mut Vec<Event>,
        timeout: std::time::Duration,
    ) -> io::Result<()> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        let res = self.wait_with(out, |fd, raw, max| {
            // SAFETY: `raw` has room for `max` events, which is what the
            // kernel is told it may write; `ts` lives for the call and a
            // null signal mask is allowed.
            unsafe { libc::epoll_pwait2(fd, raw, max, &ts, std::ptr::null()) }
        });
        match res {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128);
                self.wait(out, ms as i32)
            }
            other => other,
        }
    }

    /// Run one wait system call (`call(epfd, events, max)`) and collect what
    /// it reported.
    fn wait_with(
        &mut self,
        out: &mut Vec<Event>,
        call: impl FnOnce(libc::c_int, *mut libc::epoll_event, libc::c_int) -> libc::c_int,
    ) -> io::Result<()> {
        // Cleared first: an interrupted wait reports no event twice.
        out.clear();
        self.raw.clear();
        let max = self.raw.capacity().min(libc::c_int::MAX as usize);
        let n = cvt(call(
            self.fd.as_raw_fd(),
            self.raw.as_mut_ptr(),
            max as libc::c_int,
        ))?;
        // SAFETY: the kernel initialised the first `n` <= `max` entries.
        unsafe { self.raw.set_len(n as usize) };
        out.extend(self.raw.iter().map(|e| Event {
            data: e.u64,
            events: e.events,
        }));
        Ok(())
    }
}

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC, in one call.
pub(crate) fn accept_nonblocking(listener: RawFd) -> io::Result<Socket> {
    // SAFETY: null address pointers are allowed (the peer address is not
    // wanted); the result is checked.
    let fd = cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor that nobody else owns.
    Ok(unsafe { Socket::from_raw_fd(fd) })
}
