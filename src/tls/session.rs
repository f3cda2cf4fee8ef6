//! One connection's TLS session, sans-IO: ciphertext in, plaintext and TLS
//! records out, all through byte buffers the core owns.

use std::io::Read;

use rustls::Connection;

/// What a batch of ciphertext brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Fed {
    /// The handshake completed with this input.
    pub(crate) opened: bool,
    /// The peer sent `close_notify`: no more input will come.
    pub(crate) peer_closed: bool,
}

/// A session (the server's, or an outbound connection's client one) and
/// what the core needs of it.
pub(crate) struct TlsConn {
    pub(crate) conn: Connection,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("handshaking", &self.conn.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    /// A session; a client's first flight (its ClientHello) goes into
    /// `out` at once.
    pub(crate) fn new(conn: impl Into<Connection>, out: &mut Vec<u8>) -> TlsConn {
        let mut t = TlsConn { conn: conn.into() };
        // Everything written is drained into the connection's output at
        // once, where backpressure bounds it: rustls must never refuse.
        t.conn.set_buffer_limit(None);
        t.drain(out);
        t
    }

    /// Whether the handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Take ciphertext `input`: append the plaintext it carries to `plain`
    /// and the TLS records the session answers with (handshake messages,
    /// tickets, alerts) to `out`. `Err` is the reason the session failed
    /// (its alert, if any, is in `out` already); the connection must close.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Fed, String> {
        let was_handshaking = self.conn.is_handshaking();
        let mut fed = Fed::default();
        while !input.is_empty() {
            let n = match self.conn.read_tls(&mut input) {
                Ok(n) => n,
                // A slice never fails to be read; kept as a reason anyway.
                Err(e) => return Err(format!("TLS input: {e}")),
            };
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert telling the peer why.
                    self.drain(out);
                    return Err(e.to_string());
                }
            };
            let want = state.plaintext_bytes_to_read();
            if want > 0 {
                let at = plain.len();
                plain.resize(at + want, 0);
                let got = self.conn.reader().read(&mut plain[at..]).unwrap_or(0);
                plain.truncate(at + got);
            }
            if state.peer_has_closed() {
                fed.peer_closed = true;
                break;
            }
            if n == 0 {
                break;
            }
        }
        self.drain(out);
        fed.opened = was_handshaking && !self.conn.is_handshaking();
        Ok(fed)
    }

    /// Encrypt `data` (after the handshake) into `out`.
    pub(crate) fn encrypt(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // Once the handshake is done the writer encrypts at once, and with
        // no buffer limit (`new`) it takes all of `data`; the records go
        // straight into `out`, where backpressure counts the ciphertext.
        let _ = std::io::Write::write_all(&mut self.conn.writer(), data);
        self.drain(out);
    }

    /// Append a `close_notify` alert to `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.drain(out);
    }

    /// Move every TLS record the session has ready into `out`.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// A self-signed certificate for `localhost`, made by the test
    /// fixtures' script and kept in `tests/data`.
    fn acceptor() -> (crate::tls::TlsAcceptor, RootCertStore) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        let opts =
            crate::tls::TlsServerOptions::new(dir.join("server.crt"), dir.join("server.key"));
        let acceptor = crate::tls::TlsAcceptor::new(&opts).expect("acceptor");
        let mut roots = RootCertStore::empty();
        for c in super::super::read_certs(&dir.join("ca.crt")).expect("ca") {
            roots.add(c).expect("root");
        }
        (acceptor, roots)
    }

    fn client(roots: RootCertStore) -> ClientConnection {
        let config = ClientConfig::builder_with_provider(super::super::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").expect("name"),
        )
        .expect("client")
    }

    /// Pump records between an in-memory client and the server session
    /// until neither has anything to say.
    fn pump(c: &mut ClientConnection, s: &mut TlsConn, plain: &mut Vec<u8>) -> Fed {
        let mut all = Fed::default();
        for _ in 0..20 {
            let mut to_server = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut to_server).expect("client out");
            }
            let mut to_client = Vec::new();
            let fed = s
                .feed(&to_server, plain, &mut to_client)
                .expect("server takes it");
            all.opened |= fed.opened;
            all.peer_closed |= fed.peer_closed;
            if !to_client.is_empty() {
                c.read_tls(&mut &to_client[..]).expect("client in");
                c.process_new_packets().expect("client processes");
            }
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
        }
        all
    }

    #[test]
    fn a_handshake_then_data_both_ways_then_close_notify() {
        let (acceptor, roots) = acceptor();
        let mut s = TlsConn::new(acceptor.session().expect("session"), &mut Vec::new());
        let mut c = client(roots);
        let mut plain = Vec::new();
        assert!(s.is_handshaking());
        let fed = pump(&mut c, &mut s, &mut plain);
        assert!(fed.opened, "the handshake completed");
        assert!(!s.is_handshaking());
        std::io::Write::write_all(&mut c.writer(), b"hello server").expect("write");
        pump(&mut c, &mut s, &mut plain);
        assert_eq!(plain, b"hello server");
        let mut out = Vec::new();
        s.encrypt(b"hello client", &mut out);
        assert!(!out.is_empty() && !out.windows(12).any(|w| w == b"hello client"));
        c.read_tls(&mut &out[..]).expect("in");
        c.process_new_packets().expect("process");
        let mut got = [0u8; 12];
        c.reader().read_exact(&mut got).expect("plaintext");
        assert_eq!(&got, b"hello client");
        c.send_close_notify();
        let fed = pump(&mut c, &mut s, &mut plain);
        assert!(fed.peer_closed);
    }

    #[test]
    fn garbage_fails_the_session_with_an_alert_for_the_peer() {
        let (acceptor, _) = acceptor();
        let mut s = TlsConn::new(acceptor.session().expect("session"), &mut Vec::new());
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let err = s
            .feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain, &mut out)
            .expect_err("not TLS");
        assert!(!err.is_empty());
        assert!(plain.is_empty());
        // An alert record: content type 21.
        assert_eq!(out.first(), Some(&21), "{out:?}");
    }
}
