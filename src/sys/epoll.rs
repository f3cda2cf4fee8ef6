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
        // Cleared first: an interrupted wait reports no event twice.
        out.clear();
        self.raw.clear();
        let max = self.raw.capacity().min(libc::c_int::MAX as usize);
        // SAFETY: `raw` has capacity for `max` events, which is what the
        // kernel is told it may write; only the `n` it reports are read.
        let n = cvt(unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.raw.as_mut_ptr(),
                max as libc::c_int,
                timeout_ms,
            )
        })?;
        // SAFETY: the kernel initialised the first `n` <= `max` entries.
        unsafe { self.raw.set_len(n as usize) };
        out.clear();
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
