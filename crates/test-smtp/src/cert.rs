//! The server's TLS certificate.

use std::fmt;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A self-signed certificate for `localhost` and `127.0.0.1` (made with rcgen), with its key.
/// A client trusts the server by adding [`TestCertificate::der`] (or the PEM) to its roots.
/// Clones share the certificate, so a restarted server can present the same one.
#[derive(Clone)]
pub struct TestCertificate {
    inner: Arc<Inner>,
}

struct Inner {
    der: Vec<u8>,
    pem: String,
    key_der: Vec<u8>,
}

impl TestCertificate {
    /// A new certificate and key (ECDSA P-256).
    pub fn generate() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("rcgen makes a self-signed certificate");
        Self {
            inner: Arc::new(Inner {
                der: certified.cert.der().to_vec(),
                pem: certified.cert.pem(),
                key_der: certified.signing_key.serialize_der(),
            }),
        }
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.inner.der
    }

    /// The certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.inner.pem
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![pki_types::CertificateDer::from(self.inner.der.clone())],
                pki_types::PrivateKeyDer::Pkcs8(self.inner.key_der.clone().into()),
            )
            .expect("rustls accepts rcgen's certificate and key");
        TlsAcceptor::from(Arc::new(config))
    }
}

impl fmt::Debug for TestCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCertificate").finish_non_exhaustive()
    }
}
