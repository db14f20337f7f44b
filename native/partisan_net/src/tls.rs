//! TLS for the data plane, with rustls: the options (Partisan v5's `tls_server_options` and
//! `tls_client_options`, ssl-style) and the rustls configurations built from them.
//!
//! Why rustls and not Erlang's `ssl`: every byte of a connection is moved by the runtime's
//! threads, so the encryption has to happen there too; a round trip through an Erlang process per
//! record would put a scheduler back on the data path.
//!
//! The certificates and keys are PEM files, read when [`TlsOptions::load`] runs: at start (a
//! missing or unreadable file is `{invalid_config, Key, Why}`) and again on
//! [`crate::Node::reload_tls`] (`partisan_config:set/2` of a TLS key), so certificates rotate
//! without a restart; connections made after the reload use the new files, the ones already up
//! keep theirs until they reconnect.
//!
//! What each side checks:
//! - the accepting side (`tls_server_options`) presents `certfile`; with `verify => verify_peer`
//!   it asks the dialer for a certificate that chains to `cacertfile`, and refuses a dialer
//!   without one when `fail_if_no_peer_cert => true`;
//! - the dialing side (`tls_client_options`) with `verify => verify_peer` checks that the
//!   listener's certificate chains to `cacertfile` and names the address dialed (an `iPAddress`
//!   subject alternative name), or the name given as `server_name_indication`;
//!   `server_name_indication => disable` keeps the chain check and skips the name (one
//!   certificate shared by a cluster). It presents `certfile` when given (mutual TLS).
//!
//! Sessions are never resumed: a reconnect is a full handshake, so certificates are checked on
//! every connection (a reconnect costs a millisecond; connections are long-lived).
//!
//! `verify => verify_none` checks nothing of the peer's certificate: the link is encrypted but
//! only the cookie authenticates the peer. Defaults follow OTP 26's `ssl`: `verify_peer`, which
//! needs `cacertfile`.

use crate::config::ConfigError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Whether the peer's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    #[default]
    VerifyPeer,
    VerifyNone,
}

/// The name a dialer checks the listener's certificate against (and sends as SNI).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sni {
    /// The IP address dialed (no SNI is sent for an address).
    #[default]
    PeerAddress,
    /// This DNS name, sent as SNI and checked in the certificate.
    Name(String),
    /// No name is checked (the chain still is) and no SNI is sent.
    Disable,
}

/// A TLS protocol version (`versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

/// One side's options, as `tls_server_options` or `tls_client_options` give them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSide {
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub cacertfile: Option<PathBuf>,
    pub verify: Verify,
    pub fail_if_no_peer_cert: bool,
    pub server_name_indication: Sni,
    /// Empty: TLS 1.2 and 1.3.
    pub versions: Vec<Version>,
}

/// `tls => true` with both sides' options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    pub server: TlsSide,
    pub client: TlsSide,
}

/// The rustls configurations a node's connections are made with.
#[derive(Clone)]
pub struct TlsContext {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) sni: Sni,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext").field("sni", &self.sni).finish_non_exhaustive()
    }
}

impl TlsContext {
    /// The name the listener at `ip` is checked against.
    pub(crate) fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        match &self.sni {
            Sni::Name(n) => ServerName::try_from(n.clone()).unwrap_or(ServerName::IpAddress(ip.into())),
            Sni::PeerAddress | Sni::Disable => ServerName::IpAddress(ip.into()),
        }
    }
}

/// Whether `host` can be checked as a DNS name in a certificate (`server_name_indication`).
pub fn is_dns_name(host: &str) -> bool {
    matches!(ServerName::try_from(host.to_owned()), Ok(ServerName::DnsName(_)))
}

const SERVER_KEY: &str = "tls_server_options";
const CLIENT_KEY: &str = "tls_client_options";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, what: &str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(key, format!("{what} {}: {e}", path.display())))
}

fn certs(key: &'static str, what: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(key, what, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key, format!("{what} {}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, format!("{what} {}: no CERTIFICATE in it", path.display())));
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &PathBuf) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read(key, "keyfile", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| ConfigError::new(key, format!("keyfile {}: not PEM: {e}", path.display())))?
        .ok_or_else(|| ConfigError::new(key, format!("keyfile {}: no PRIVATE KEY in it", path.display())))
}

fn roots(key: &'static str, side: &TlsSide) -> Result<Arc<RootCertStore>, ConfigError> {
    let path = side.cacertfile.as_ref().ok_or_else(|| {
        ConfigError::new(key, "verify => verify_peer needs cacertfile (the CA the peers' certificates chain to), or set verify => verify_none")
    })?;
    let mut store = RootCertStore::empty();
    for cert in certs(key, "cacertfile", path)? {
        store.add(cert).map_err(|e| ConfigError::new(key, format!("cacertfile {}: {e}", path.display())))?;
    }
    Ok(Arc::new(store))
}

fn versions(side: &TlsSide) -> Vec<&'static rustls::SupportedProtocolVersion> {
    if side.versions.is_empty() {
        return vec![&rustls::version::TLS13, &rustls::version::TLS12];
    }
    side.versions
        .iter()
        .map(|v| match v {
            Version::Tls12 => &rustls::version::TLS12,
            Version::Tls13 => &rustls::version::TLS13,
        })
        .collect()
}

/// The certificate and key of a side, when it has them (both or neither).
fn identity(key: &'static str, side: &TlsSide) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, ConfigError> {
    match (&side.certfile, &side.keyfile) {
        (Some(c), Some(k)) => Ok(Some((certs(key, "certfile", c)?, private_key(key, k)?))),
        (None, None) => Ok(None),
        _ => Err(ConfigError::new(key, "certfile and keyfile go together")),
    }
}

impl TlsOptions {
    /// Reads the files and builds both sides' rustls configurations; the error names the key
    /// and the file.
    pub fn load(&self) -> Result<TlsContext, ConfigError> {
        Ok(TlsContext { acceptor: self.server_config()?.into(), connector: self.client_config()?.into(), sni: self.client.server_name_indication.clone() })
    }

    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let side = &self.server;
        let fail = |e: rustls::Error| ConfigError::new(SERVER_KEY, e);
        let (certs, key) = identity(SERVER_KEY, side)?
            .ok_or_else(|| ConfigError::new(SERVER_KEY, "certfile and keyfile are needed: the listener presents a certificate"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(&versions(side)).map_err(fail)?;
        let builder = match side.verify {
            Verify::VerifyNone => builder.with_no_client_auth(),
            Verify::VerifyPeer => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(SERVER_KEY, side)?, provider());
                let verifier = if side.fail_if_no_peer_cert { verifier } else { verifier.allow_unauthenticated() };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| ConfigError::new(SERVER_KEY, e))?)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(fail)?;
        // No session resumption: every connection is a full handshake, so a peer's certificate
        // (its CA, its validity) is checked each time it connects, and a reload takes effect on
        // the next connection whoever dials.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
        let side = &self.client;
        let fail = |e: rustls::Error| ConfigError::new(CLIENT_KEY, e);
        let builder = rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(&versions(side)).map_err(fail)?;
        let verifier: Arc<dyn ServerCertVerifier> = match side.verify {
            Verify::VerifyNone => Arc::new(AnyServer(provider())),
            Verify::VerifyPeer => {
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(CLIENT_KEY, side)?, provider())
                    .build()
                    .map_err(|e| ConfigError::new(CLIENT_KEY, e))?;
                match side.server_name_indication {
                    Sni::Disable => Arc::new(AnyName(webpki)),
                    _ => webpki,
                }
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let mut config = match identity(CLIENT_KEY, side)? {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(fail)?,
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = !matches!(side.server_name_indication, Sni::Disable);
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// `verify => verify_none` on the dialing side: any certificate (the handshake's signatures are
/// still checked, so the session key is the listener's).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `server_name_indication => disable`: the chain (CA, validity, usage) is checked, the name
/// is not. webpki checks the name last, so a name error means everything else passed.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], name: &ServerName<'_>, ocsp: &[u8], now: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
