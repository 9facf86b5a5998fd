//! TLS helpers: one crypto provider, the client configurations (system roots plus
//! `ca_file`, or a pin), naming certificate failures, and describing a certificate.
//! A leaf below the mail stage: it knows rustls, not SMTP.

use std::sync::{Arc, Once};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};

/// lettre and other rustls users in one process can each pick a different default
/// provider and then panic; install ring once, before any TLS is set up.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What the server's TLS looks like, for `check --smtp`.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub version: String,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    /// `sha256:HEX` of the leaf certificate (DER).
    pub fingerprint: String,
}

/// The rustls error inside a lettre error, if any. lettre wraps tokio-rustls's
/// `io::Error`, whose `source()` skips the rustls error itself, so downcast each link.
pub(crate) fn rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // An io::Error's source() skips its own payload, and hyper wraps tokio-rustls's
        // io::Error in another: look inside each layer.
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = err.source();
    }
    None
}

/// The connection was made, then the TLS handshake ended without a TLS error: the
/// server hung up (often because it offers only TLS versions or ciphers we refuse).
fn handshake_cut(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::UnexpectedEof
                || io.to_string().contains("tls handshake"))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

pub fn is_tls_failure(e: &lettre::transport::smtp::Error) -> bool {
    e.is_tls() || is_tls_error(e)
}

/// A TLS failure in any error's chain (rustls's own, or a handshake cut short).
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    rustls_error(e).is_some()
        || handshake_cut(e)
        || crate::failure::error_chain(e).contains("InvalidContentType")
}

/// A sentence naming why TLS failed.
pub fn describe_failure(e: &(dyn std::error::Error + 'static)) -> String {
    let Some(r) = rustls_error(e) else {
        if handshake_cut(e) {
            return "the server ended the TLS handshake without completing it; it may offer only TLS \
                    versions or ciphers cronmail refuses (TLS 1.2 and 1.3 only), or not speak TLS on this port"
                .to_owned();
        }
        return crate::failure::error_chain(e);
    };
    describe_rustls(r)
}

pub(crate) fn describe_rustls(r: &rustls::Error) -> String {
    match r {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not trusted: it is not signed by a known certificate authority (unknown issuer)".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate is for another host name".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check this machine's clock)".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::PeerIncompatible(p) => {
            format!("the server offers no TLS version or cipher cronmail accepts (TLS 1.2 or 1.3 only): {p:?}")
        }
        rustls::Error::AlertReceived(a) => format!("the server ended the TLS handshake with alert {a:?}"),
        other => format!("TLS failed: {other}"),
    }
}

/// The system's roots (which honour `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus `extra`.
fn roots(extra: &[Vec<u8>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    roots.add_parsable_certificates(extra.iter().map(|d| CertificateDer::from(d.clone())));
    roots
}

/// Whom a client configuration trusts.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// The system roots plus these DER certificates (`ca_file`).
    Roots(&'a [Vec<u8>]),
    /// Exactly the certificate with this SHA-256 (`tls_fingerprint`); the handshake
    /// signature is still verified with its key.
    Pinned([u8; 32]),
    /// Any certificate: only to read the fingerprint of one that failed verification,
    /// never to send.
    AnyCertificate,
}

/// A client configuration for `trust`. TLS 1.2 and 1.3 only.
pub fn client_config(trust: Trust<'_>) -> ClientConfig {
    install_crypto_provider();
    let pinned = |pin| {
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin)))
            .with_no_client_auth()
    };
    match trust {
        Trust::Roots(extra) => ClientConfig::builder()
            .with_root_certificates(roots(extra))
            .with_no_client_auth(),
        Trust::Pinned(pin) => pinned(Some(pin)),
        Trust::AnyCertificate => pinned(None),
    }
}

/// The client configuration for the SMTP server: the system roots plus `ca_file`, or
/// with `tls_fingerprint` exactly the pinned certificate.
pub fn smtp_client_config(pin: Option<[u8; 32]>, extra_roots: &[Vec<u8>]) -> ClientConfig {
    client_config(pin.map_or(Trust::Roots(extra_roots), Trust::Pinned))
}

/// A verifying client configuration (system roots plus `extra`), for HTTPS to an
/// `OAuth2` token endpoint: the same trust as for the SMTP server, without its pin.
pub fn https_client_config(extra: &[Vec<u8>]) -> ClientConfig {
    install_crypto_provider();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots(extra))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// `sha256:HEX` of a DER certificate, in msmtp's `tls_fingerprint` syntax.
pub fn fingerprint(der: &[u8]) -> String {
    format_fingerprint(&Sha256::digest(der).into())
}

/// `sha256:AB:CD:...`, the form `check --smtp` prints and `tls_fingerprint` accepts.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// Trusts exactly the certificate whose SHA-256 is pinned (`tls_fingerprint`), and still
/// verifies the handshake signature with its key. Without a pin it trusts any
/// certificate: used only to read a fingerprint, never to send.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<[u8; 32]>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl PinVerifier {
    fn new(pin: Option<[u8; 32]>) -> Self {
        PinVerifier {
            pin,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        match self.pin {
            Some(pin) if digest != pin => Err(rustls::Error::General(format!(
                "the server's certificate fingerprint {} does not match `tls_fingerprint` {}",
                format_fingerprint(&digest),
                format_fingerprint(&pin)
            ))),
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Subject, issuer, expiry and fingerprint of a DER certificate (`version` left empty).
pub fn describe_certificate(der: &[u8]) -> PeerInfo {
    let (subject, issuer, not_after) = match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => (
            cert.subject().to_string(),
            cert.issuer().to_string(),
            cert.validity().not_after.to_datetime().to_string(),
        ),
        Err(e) => (format!("(unparsable: {e})"), String::new(), String::new()),
    };
    PeerInfo {
        version: String::new(),
        subject,
        issuer,
        not_after,
        fingerprint: fingerprint(der),
    }
}
