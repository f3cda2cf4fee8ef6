//! A load-generator connection's bytes: straight to the non-blocking
//! socket, or through a TLS client session (`ringnet bench --tls`). The
//! session buffers what is written before its handshake is over and
//! drives the handshake as records come and go, so the modes' state
//! machines see plaintext either way.

use std::io::{self, IoSlice, Read, Write};

use rustls::ClientConnection;
use socket2::Socket;

use crate::tls::TlsTarget;

/// A connected (or connecting) socket and its TLS session, if any.
pub(crate) struct Wire {
    pub(crate) sock: Socket,
    tls: Option<Box<ClientConnection>>,
}

impl Wire {
    pub(crate) fn new(sock: Socket, tls: Option<&TlsTarget>) -> io::Result<Wire> {
        let tls = match tls {
            None => None,
            Some(t) => {
                let mut session = t
                    .connector
                    .session(&t.name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                // Everything written goes to the socket as soon as it
                // takes it; nothing is refused.
                session.set_buffer_limit(None);
                Some(Box::new(session))
            }
        };
        Ok(Wire { sock, tls })
    }

    /// Whether a TLS session still has records for the socket (the
    /// connection wants `EPOLLOUT`).
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_deref().is_some_and(|t| t.wants_write())
    }

    /// A TLS handshake is still going on.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_deref().is_some_and(|t| t.is_handshaking())
    }

    /// Write what the socket takes of `data` (all of it, through TLS: the
    /// session keeps what the socket does not take yet).
    pub(crate) fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => (&self.sock).write(data),
            Some(tls) => {
                let n = tls.writer().write(data)?;
                flush(tls, &self.sock)?;
                Ok(n)
            }
        }
    }

    /// [`Wire::send`] of several slices at once (one `sendmsg`).
    pub(crate) fn send_vectored(&mut self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.sock.send_vectored(data),
            Some(tls) => {
                let n = tls.writer().write_vectored(data)?;
                flush(tls, &self.sock)?;
                Ok(n)
            }
        }
    }

    /// Send TLS records the session has ready (handshake messages, or
    /// what the socket did not take before).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => Ok(()),
            Some(tls) => flush(tls, &self.sock),
        }
    }

    /// Read plaintext (0: the end of the stream). Through TLS, reads
    /// records until one brings plaintext or the socket has nothing more
    /// (`WouldBlock`).
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return (&self.sock).read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut &self.sock)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            flush(tls, &self.sock)?;
        }
    }
}

fn flush(tls: &mut ClientConnection, sock: &Socket) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(&mut &*sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The connector of `ringnet bench --tls`: trusts `ca` (the system's store
/// without one), for the server named `name`.
pub fn tls_target(
    ca: Option<std::path::PathBuf>,
    name: &str,
) -> Result<TlsTarget, crate::tls::TlsError> {
    let connector = crate::tls::TlsConnector::new(&crate::tls::TlsClientOptions {
        ca,
        ..Default::default()
    })?;
    connector.target(name)
}
