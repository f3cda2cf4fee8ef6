//! The socket side of a [`Stream`](super::Stream): reads and writes with a
//! per-call deadline (`SO_RCVTIMEO` / `SO_SNDTIMEO` set from it, again
//! after `EINTR`), plain or through a TLS client session.

use std::io::{self, Read};
use std::time::Duration;

use rustls::ClientConnection;
use socket2::Socket;

use super::input::Input;
use super::{is_timeout, timed_out, Deadline};

/// How many bytes one read asks the kernel for.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct Wire {
    pub(crate) sock: Socket,
    /// The SO_RCVTIMEO / SO_SNDTIMEO last set (`None` inside: no timeout),
    /// so an unchanged value costs no system call.
    read_timeout: Option<Option<Duration>>,
    write_timeout: Option<Option<Duration>>,
    /// The TLS session of a stream made with `connect_tls`.
    tls: Option<Box<ClientConnection>>,
    /// Ciphertext read from the socket that the session has not taken
    /// yet (it takes a bounded amount at a time).
    pending: Vec<u8>,
}

impl Wire {
    pub(crate) fn new(sock: Socket) -> Wire {
        Wire {
            sock,
            read_timeout: None,
            write_timeout: None,
            tls: None,
            pending: Vec::new(),
        }
    }

    /// Run a TLS client handshake with `session` within `deadline`.
    pub(crate) fn handshake(
        &mut self,
        mut session: ClientConnection,
        deadline: &Deadline,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        while session.is_handshaking() {
            if session.wants_write() {
                self.write_raw(&records(&mut session)?, deadline, "TLS handshake")?;
                continue;
            }
            let n = self.read_raw(&mut buf, deadline, "TLS handshake")?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS handshake: the server closed the connection",
                ));
            }
            session.read_tls(&mut &buf[..n])?;
            if let Err(e) = session.process_new_packets() {
                // Tell the server why, then give up.
                if let Ok(alert) = records(&mut session) {
                    let _ = self.write_raw(&alert, deadline, "TLS alert");
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        // Whatever the last flight left to say (a client's Finished).
        self.write_raw(&records(&mut session)?, deadline, "TLS handshake")?;
        self.tls = Some(Box::new(session));
        Ok(())
    }

    /// What the TLS handshake negotiated, on a TLS stream.
    pub(crate) fn tls(&self) -> Option<&ClientConnection> {
        self.tls.as_deref()
    }

    /// One read into `input`: bytes from the socket, or plaintext out of
    /// the TLS session (reading the socket until a record brings some).
    /// 0: end of stream (a TLS peer's `close_notify`).
    pub(crate) fn read_some(
        &mut self,
        input: &mut Input,
        deadline: &Deadline,
        what: &str,
    ) -> io::Result<usize> {
        if self.tls.is_none() {
            return input.read_with(READ_CHUNK, |buf| self.read_raw(buf, deadline, what));
        }
        let mut eof = false;
        loop {
            let tls = self.tls.as_deref_mut().expect("a TLS stream");
            match input.read_with(READ_CHUNK, |buf| tls.reader().read(buf)) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !eof => {}
                Err(e) => return Err(e),
            }
            if self.pending.is_empty() {
                let mut chunk = std::mem::take(&mut self.pending);
                chunk.resize(READ_CHUNK, 0);
                let n = self.read_raw(&mut chunk, deadline, what);
                chunk.truncate(*n.as_ref().unwrap_or(&0));
                self.pending = chunk;
                if n? == 0 {
                    // The socket ended: without close_notify rustls
                    // reports the truncation on the next read.
                    let tls = self.tls.as_deref_mut().expect("a TLS stream");
                    tls.read_tls(&mut &[][..])?;
                    eof = true;
                    continue;
                }
            }
            let tls = self.tls.as_deref_mut().expect("a TLS stream");
            let mut rest = &self.pending[..];
            tls.read_tls(&mut rest)?;
            let used = self.pending.len() - rest.len();
            self.pending.drain(..used);
            let failed = tls.process_new_packets().err();
            let out = records(tls)?;
            if !out.is_empty() {
                self.write_raw(&out, deadline, what)?;
            }
            if let Some(e) = failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Send all of `data` (encrypted on a TLS stream) within `deadline`.
    pub(crate) fn send(&mut self, data: &[u8], deadline: &Deadline) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => self.write_raw(data, deadline, "send"),
            Some(_) => {
                // The session takes a bounded amount at a time: encrypt
                // and send in turns.
                let mut rest = data;
                while !rest.is_empty() {
                    let tls = self.tls.as_deref_mut().expect("a TLS stream");
                    let n = io::Write::write(&mut tls.writer(), rest)?;
                    rest = &rest[n..];
                    let out = records(tls)?;
                    if n == 0 && out.is_empty() {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    self.write_raw(&out, deadline, "send")?;
                }
                Ok(())
            }
        }
    }

    /// End the write side: a TLS stream says `close_notify` first.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            let out = records(tls)?;
            self.write_raw(
                &out,
                &Deadline::after(Some(Duration::from_secs(1))),
                "close",
            )?;
        }
        self.sock.shutdown(std::net::Shutdown::Write)
    }

    /// One read of the socket; the socket timeout is the deadline's time
    /// left, set again after `EINTR` so a signal does not stretch the call.
    fn read_raw(&mut self, buf: &mut [u8], deadline: &Deadline, what: &str) -> io::Result<usize> {
        let res = loop {
            let t = deadline.socket_timeout();
            if self.read_timeout != Some(t) {
                self.sock.set_read_timeout(t)?;
                self.read_timeout = Some(t);
            }
            match (&self.sock).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if deadline.expired() {
                        break Err(io::ErrorKind::TimedOut.into());
                    }
                }
                res => break res,
            }
        };
        res.map_err(|e| if is_timeout(&e) { timed_out(what) } else { e })
    }

    fn write_raw(&mut self, data: &[u8], deadline: &Deadline, what: &str) -> io::Result<()> {
        let mut sent = 0;
        while sent < data.len() {
            if sent > 0 && deadline.expired() {
                return Err(timed_out(what));
            }
            let t = deadline.socket_timeout();
            if self.write_timeout != Some(t) {
                self.sock.set_write_timeout(t)?;
                self.write_timeout = Some(t);
            }
            match self.sock.send_with_flags(&data[sent..], libc::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(timed_out(what)),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Every TLS record `session` has ready to send.
fn records(session: &mut ClientConnection) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut out)?;
    }
    Ok(out)
}
