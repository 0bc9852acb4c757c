//! TLS to Postgres as libpq's `sslmode` and `sslrootcert` describe it, over rustls.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` and checks nothing itself; the
//! certificate checks are the connector's. So the URL's `sslmode` and `sslrootcert` are taken
//! out of it here and turned into a rustls configuration:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `prefer` (default) | when the server offers TLS | no (as libpq) |
//! | `require` | always | no; against `sslrootcert` when it is given (as libpq) |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert` and issued for the host connected to |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Error, Result};

/// What the URL asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
}

fn invalid(message: String) -> Error {
    Error::Invalid(schema::model::Invalid { field: "database_url", message })
}

/// Splits `sslmode` and `sslrootcert` off `url` (a `postgres://` URL or `key=value` words):
/// the rest for tokio-postgres, and the TLS settings.
pub(crate) fn split_url(url: &str) -> Result<(String, TlsSettings)> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| -> Result<bool> {
        match key {
            "sslmode" => {
                mode = Some(match value.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, percent_decode(value)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
            }
            None => url.to_string(),
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((key, value)) if !value.starts_with('\'') => {
                    if !take(key.trim(), value.to_string())? {
                        kept.push(word);
                    }
                }
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    let settings = TlsSettings { mode: mode.unwrap_or(SslMode::Prefer), root_cert };
    if matches!(settings.mode, SslMode::VerifyCa | SslMode::VerifyFull) && settings.root_cert.is_none() {
        return Err(invalid(
            "sslmode=verify-ca and verify-full need sslrootcert=<PEM file of the CA that signed the server's \
             certificate>"
                .into(),
        ));
    }
    Ok((rest, settings))
}

/// `%XX` escapes decoded (a path in a URL query).
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else { return Err(invalid(format!("bad %-escape in {text:?}"))) };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("{text:?} is not UTF-8 once decoded")))
}

impl TlsSettings {
    /// The mode tokio-postgres applies (whether TLS is tried or required; checks are ours).
    pub(crate) fn client_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Client;
        match self.mode {
            SslMode::Disable => Client::Disable,
            SslMode::Prefer => Client::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Client::Require,
        }
    }

    /// The connector for these settings; reads `sslrootcert` (an unreadable or empty file is
    /// an error naming it).
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.mode, &self.root_cert) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
                Arc::new(EncryptOnly { provider: provider.clone() })
            }
            (SslMode::Require | SslMode::VerifyCa, Some(roots)) => {
                Arc::new(AnyName { inner: webpki(roots, &provider)? })
            }
            (SslMode::VerifyFull, Some(roots)) => webpki(roots, &provider)?,
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(invalid("sslmode=verify-ca and verify-full need sslrootcert".into()));
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The standard check (chain to `roots`, name of the host) with the CAs of the PEM file `roots`.
fn webpki(roots: &Path, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>> {
    let bad = |why: String| invalid(format!("sslrootcert {}: {why}", roots.display()));
    let certs = CertificateDer::pem_file_iter(roots)
        .map_err(|e| bad(pem_message(e)))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_message(e)))?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable PEM certificate in the file".into()));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| bad(e.to_string()))
}

fn pem_message(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// `verify-ca` (and `require` with a root certificate): the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // The name is checked last, once the chain is known good: a name error means all else
        // passed.
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted against eavesdroppers, with no
/// check of who the server is (libpq's meaning; `verify-full` is the mode for a network one
/// does not trust).
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_urls_and_words() {
        let (rest, s) = split_url("postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem").unwrap();
        assert_eq!(rest, "postgres://u@h:5432/db");
        assert_eq!(s, TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (rest, s) = split_url("postgres://h/db?application_name=x&sslmode=require&connect_timeout=3").unwrap();
        assert_eq!((rest.as_str(), s.mode), ("postgres://h/db?application_name=x&connect_timeout=3", SslMode::Require));
        let (rest, s) = split_url("host=h dbname=db sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!((rest.as_str(), s.mode), ("host=h dbname=db", SslMode::VerifyCa));
        assert_eq!(split_url("postgres://h/db").unwrap().1.mode, SslMode::Prefer, "libpq's default");
        assert_eq!(split_url("postgres://h/db?sslmode=disable").unwrap().1.client_mode(), {
            tokio_postgres::config::SslMode::Disable
        });
    }

    #[test]
    fn bad_tls_settings_are_invalid_not_transient() {
        for (url, expected) in [
            ("postgres://h/db?sslmode=verify-full", "need sslrootcert"),
            ("postgres://h/db?sslmode=secure", "\"secure\" is not one of"),
            ("postgres://h/db?sslmode=require&sslrootcert=%zz", "bad %-escape"),
        ] {
            let e = split_url(url).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)) && !e.is_transient(), "{url}: {e:?}");
            assert!(e.to_string().contains(expected), "{url}: {e}");
        }
        let (_, s) = split_url("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap();
        let e = s.connector().err().expect("a missing root certificate file is refused");
        assert!(e.to_string().contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }
}
