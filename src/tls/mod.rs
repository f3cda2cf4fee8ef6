//! TLS on the engine's connections, with rustls.
//!
//! A listener given a [`TlsAcceptor`] (see `ListenerSpec::with_tls`)
//! runs a TLS server session on each connection it accepts, on the worker
//! that owns it: ciphertext from the kernel goes into the session, and the
//! plaintext that comes out is what the handler sees through the same
//! [`Handler`](crate::Handler) API as a plain connection; what the handler
//! sends is encrypted into the connection's output. The handler hears
//! `on_open` only once the handshake is complete (so the negotiated ALPN
//! protocol, the server name and a client's certificate are known there,
//! through [`Conn::tls`](crate::Conn::tls)); a connection whose handshake
//! fails or times out is closed without the handler ever seeing it.
//!
//! The crypto provider is rustls' `ring` one: it builds with nothing but a
//! C compiler (no cmake, no Go, unlike aws-lc-rs), which is all a fresh
//! machine here has.
//!
//! Certificates and keys are read from PEM files (ECDSA, RSA and Ed25519
//! keys, PKCS#8, PKCS#1 or SEC1). [`TlsAcceptor::reload`] swaps them while
//! the engine runs: handshakes that start afterwards use the new ones.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub(crate) mod session;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of what was expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, an unsupported key type, an unusable CA file).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// A name that cannot be a TLS server name.
    #[error("{name:?} is not a valid TLS server name: {why}")]
    ServerName {
        /// The name given.
        name: String,
        /// Why not.
        why: String,
    },
    /// A CA file (client CAs of a server, trust anchors of a client) gave
    /// no usable trust anchor.
    #[error("{path}: no usable CA certificate ({why})")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What the verifier said.
        why: String,
    },
}

/// Which TLS versions a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3.
    #[default]
    Both,
    /// TLS 1.3 only.
    Tls13,
    /// TLS 1.2 only.
    Tls12,
}

/// What a TLS listener is made from: its certificate chain and key (PEM
/// files), the ALPN protocols it offers, the versions it speaks, and,
/// for mutual TLS, the CA file client certificates must chain to (a client
/// without one is then refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerOptions {
    /// The certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Client certificates are required and verified against these CAs.
    pub client_ca: Option<PathBuf>,
    /// ALPN protocols in order of preference (`b"h2"`, `b"http/1.1"`); a
    /// client offering none of them is refused. Empty: no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// The versions spoken.
    pub versions: TlsVersions,
}

impl TlsServerOptions {
    /// A certificate chain and key, no client certificates, no ALPN, TLS
    /// 1.2 and 1.3.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsServerOptions {
        TlsServerOptions {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            alpn: Vec::new(),
            versions: TlsVersions::Both,
        }
    }
}

/// The server side of TLS for a listener: made once from
/// [`TlsServerOptions`], shared by every worker (cloning it is cheap), and
/// reloadable.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    certs: Arc<Reloadable>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Read the files `opts` names and build the server configuration.
    pub fn new(opts: &TlsServerOptions) -> Result<TlsAcceptor, TlsError> {
        let provider = provider();
        let key = load_certified_key(&opts.cert, &opts.key)?;
        let certs = Arc::new(Reloadable {
            current: RwLock::new(Arc::new(key)),
        });
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions(opts.versions))?;
        let builder = match &opts.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(read_roots(path)?),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Ca {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = opts.alpn.clone();
        Ok(TlsAcceptor {
            config: Arc::new(config),
            certs,
        })
    }

    /// Read a new certificate chain and key; handshakes that start after
    /// this returns use them (sessions already made keep theirs). On error
    /// the old ones stay.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let key = Arc::new(load_certified_key(cert, key)?);
        *self
            .certs
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }

    /// A server session for a new connection.
    pub(crate) fn session(&self) -> Result<ServerConnection, rustls::Error> {
        ServerConnection::new(Arc::clone(&self.config))
    }
}

/// What outbound TLS is made from: the trust anchors (a CA file, or the
/// system's store), the ALPN protocols offered, the versions, and a client
/// certificate for servers that ask for one. Certificate verification is
/// always on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsClientOptions {
    /// Trust the CAs in this PEM file; `None`: the system's store
    /// (`SSL_CERT_FILE` / `SSL_CERT_DIR`, else the distribution's bundle).
    pub ca: Option<PathBuf>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// The versions spoken.
    pub versions: TlsVersions,
    /// A client certificate chain and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The client side of TLS for outbound connections: made once from
/// [`TlsClientOptions`], cloned cheaply into every connect.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Read the trust anchors (and client certificate) `opts` names.
    pub fn new(opts: &TlsClientOptions) -> Result<TlsConnector, TlsError> {
        let mut roots = RootCertStore::empty();
        match &opts.ca {
            Some(path) => roots = read_roots(path)?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::Pem {
                        path: PathBuf::from("(the system's certificate store)"),
                        what: format!(
                            "no CA certificate found{}",
                            found
                                .errors
                                .first()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                    });
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(opts.versions))?
            .with_root_certificates(roots);
        let mut config = match &opts.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
            }
        };
        config.alpn_protocols = opts.alpn.clone();
        Ok(TlsConnector {
            config: Arc::new(config),
        })
    }

    /// A client session for `server` (the name its certificate must carry,
    /// sent as SNI; an IP address is checked against the certificate's IP
    /// names and not sent).
    pub(crate) fn session(
        &self,
        server: &ServerName<'static>,
    ) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(Arc::clone(&self.config), server.clone())
    }

    /// Check `name` as a server name.
    pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(name.to_string()).map_err(|e| TlsError::ServerName {
            name: name.to_string(),
            why: e.to_string(),
        })
    }
}

/// Where an outbound TLS connection goes: a connector and the name the
/// server's certificate must carry (also sent as SNI). Made by
/// [`TlsConnector::target`]; given to the `connect_tls` calls.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
}

impl TlsConnector {
    /// Connections to the server named `name` (a DNS name or an IP
    /// address); an invalid name is an error here, before any connect.
    pub fn target(&self, name: &str) -> Result<TlsTarget, TlsError> {
        Ok(TlsTarget {
            connector: self.clone(),
            name: TlsConnector::server_name(name)?,
        })
    }
}

fn versions(v: TlsVersions) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    match v {
        TlsVersions::Both => &BOTH,
        TlsVersions::Tls13 => &TLS13,
        TlsVersions::Tls12 => &TLS12,
    }
}

/// A plain server configuration (one certificate, no client
/// authentication, rustls' default versions and suites) with the same
/// provider as the engine's: what the reference server of `ringnet bench
/// --compare --tls` uses.
pub fn single_cert_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(TlsVersions::Both))?
        .with_no_client_auth()
        .with_single_cert(read_certs(cert)?, read_key(key)?)?;
    Ok(Arc::new(config))
}

/// The crypto provider every session uses (made once).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The certificate and key every new handshake is given, swapped by
/// [`TlsAcceptor::reload`].
#[derive(Debug)]
struct Reloadable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY in the file".into(),
            other => other.to_string(),
        },
    })
}

/// The certificates of a CA file as trust anchors.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey::from_der(
        read_certs(cert)?,
        read_key(key)?,
        &provider(),
    )?)
}

/// What a TLS connection negotiated, for the handler
/// ([`Conn::tls`](crate::Conn::tls)).
#[derive(Clone, Copy)]
pub struct TlsInfo<'a> {
    pub(crate) conn: &'a rustls::Connection,
}

impl fmt::Debug for TlsInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsInfo")
            .field("version", &self.version())
            .field("alpn", &self.alpn())
            .field("server_name", &self.server_name())
            .finish()
    }
}

impl<'a> TlsInfo<'a> {
    /// The ALPN protocol agreed on, if any.
    pub fn alpn(&self) -> Option<&'a [u8]> {
        self.conn.alpn_protocol()
    }

    /// On an accepted connection, the server name the client asked for
    /// (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&'a str> {
        match self.conn {
            rustls::Connection::Server(s) => s.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// The peer's certificate chain, end-entity first: a client's (mutual
    /// TLS) on an accepted connection, the server's on an outbound one.
    pub fn peer_certificates(&self) -> Option<&'a [CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The protocol version: `"TLSv1.3"` or `"TLSv1.2"`.
    pub fn version(&self) -> Option<&'static str> {
        version_name(self.conn.protocol_version()?)
    }

    /// The cipher suite, as IANA names it.
    pub fn cipher_suite(&self) -> Option<&'static str> {
        self.conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
    }
}

/// A negotiated version as OpenSSL and Python name it (`"TLSv1.3"`).
pub(crate) fn version_name(v: rustls::ProtocolVersion) -> Option<&'static str> {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => None,
    }
}
