//! A test PKI: a CA and a leaf it signed, or a self-signed certificate, as PEM files.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and a server certificate it signed, as PEM files in a temp folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A CA and a leaf for `localhost` and 127.0.0.1, valid now.
    pub fn new() -> Self {
        Self::with_leaf(&["localhost", "127.0.0.1"], None)
    }

    /// A leaf for other names, or with another validity window.
    pub fn with_leaf(
        names: &[&str],
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "cronmail test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if let Some((from, to)) = validity {
            params.not_before = from;
            params.not_after = to;
        }
        let leaf = params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", leaf.pem()),
            key: write("key.pem", leaf_key.serialize_pem()),
            dir,
        }
    }
}

impl Pki {
    /// A self-signed certificate for `localhost` (no CA); `ca` is the certificate itself.
    pub fn self_signed() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.self_signed(&key).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("cert.pem", cert.pem()),
            cert: dir.path().join("cert.pem"),
            key: write("key.pem", key.serialize_pem()),
            dir,
        }
    }

    /// `sha256:AB:CD:...` of the server certificate.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let pem = std::fs::read(&self.cert).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        let hex: Vec<String> = sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        format!("sha256:{}", hex.join(":"))
    }
}
