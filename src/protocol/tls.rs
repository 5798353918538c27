//! rustls configuration for both sides: clients connecting to pgward, and pgward connecting to
//! PostgreSQL (`tls = disable | prefer | require | verify-full`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let data = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// pgward's own TLS side towards clients: the acceptor, and the `tls-server-end-point`
/// channel binding of its certificate when it has one (see `end_point_binding`).
pub struct ServerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub end_point: Option<Arc<[u8]>>,
}

/// The acceptor config for client connections, with the certificate's channel binding.
pub fn server_tls(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    let certs = read_certs(cert)?;
    let end_point = certs
        .first()
        .and_then(|leaf| end_point_binding(leaf))
        .map(Arc::from);
    Ok(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(server_config(certs, key)?),
        end_point,
    })
}

/// RFC 5929 `tls-server-end-point`: the hash of the certificate (DER) by the hash of its
/// signature algorithm, SHA-256 in place of MD5 and SHA-1, as PostgreSQL and libpq compute it
/// for SCRAM-SHA-256-PLUS. None for an algorithm without one hash (Ed25519, RSA-PSS):
/// PostgreSQL offers no channel binding for those either.
pub fn end_point_binding(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, ... }, ... }
    let (0x30, certificate, _) = der_item(cert)? else {
        return None;
    };
    let (0x30, _, after_tbs) = der_item(certificate)? else {
        return None;
    };
    let (0x30, algorithm, _) = der_item(after_tbs)? else {
        return None;
    };
    let (0x06, oid, _) = der_item(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    Some(match (oid.strip_prefix(RSA), oid.strip_prefix(ECDSA)) {
        // md5, sha1, sha256 WithRSAEncryption; ecdsa-with-SHA1, -SHA256
        (Some([0x04 | 0x05 | 0x0b]), _) | (_, Some([0x01] | [0x03, 0x02])) => {
            sha2::Sha256::digest(cert).to_vec()
        }
        (Some([0x0c]), _) | (_, Some([0x03, 0x03])) => sha2::Sha384::digest(cert).to_vec(),
        (Some([0x0d]), _) | (_, Some([0x03, 0x04])) => sha2::Sha512::digest(cert).to_vec(),
        _ => return None,
    })
}

/// One DER item: (tag, contents, what follows it).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| l << 8 | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The acceptor config for client connections.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let data = std::fs::read(key).map_err(|e| TlsError::File {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| TlsError::File {
            path: key.display().to_string(),
            message: e.to_string(),
        })?
        .ok_or_else(|| TlsError::File {
            path: key.display().to_string(),
            message: "no PEM private key found".into(),
        })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Connector config for a backend: verified against `ca` (or the web roots) for verify-full,
/// encrypted but unverified for prefer/require, as libpq does for those modes.
pub fn client_config(verify: bool, ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(ca) => {
                for cert in read_certs(ca)? {
                    roots.add(cert)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("valid name"))
}

/// Accepts any certificate: libpq's sslmode=require semantics (encryption without identity).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// The hash follows the certificate's signature algorithm, as libpq computes it.
    #[test]
    fn end_point_binding_hashes_by_the_signature_algorithm() {
        let cert = |alg: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            end_point_binding(&p256),
            Some(sha2::Sha256::digest(&p256).to_vec())
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            end_point_binding(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        // Ed25519 has no separate hash: no binding, as in PostgreSQL.
        assert_eq!(end_point_binding(&cert(&rcgen::PKCS_ED25519)), None);
        assert_eq!(end_point_binding(b"not a certificate"), None);
    }
}
