//! TLS for BMC connections: rustls with `ring`, the public web roots, and the
//! endpoint's own certificates as trust anchors and as pins, or one pinned
//! SHA-256 certificate fingerprint.
//!
//! BMCs commonly ship a self-signed certificate. One made with the defaults
//! of OpenSSL's `req -x509`, as the redfish-bmc test peer makes it, carries
//! `basicConstraints CA:TRUE`, and WebPKI rejects it as a server certificate
//! (`CaUsedAsEndEntity`) even when it is a trusted root. So a certificate
//! from the endpoint's PEM that the server presents byte for byte is accepted
//! as pinned, without the chain, name and date checks. The pin already proves
//! that the server has the private key the operator chose to trust. Every
//! other certificate goes through the normal WebPKI checks against the web
//! roots plus the PEM certificates.
//!
//! An endpoint with a `fingerprint` accepts exactly the certificate whose
//! DER encoding has that SHA-256 digest and rejects every other one, even one
//! a trusted CA signed: an operator who pins a fingerprint wants that
//! certificate and no other.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::driver::DriverError;

/// Builds the rustls configuration for one endpoint: TLS 1.2 and 1.3 with
/// `ring`, trusting only the certificate with `fingerprint` when it is set,
/// else the public web roots and the certificates in `ca_pem`.
pub(crate) fn client_config(
    node: &str,
    url: &str,
    ca_pem: Option<&str>,
    fingerprint: Option<&str>,
) -> Result<rustls::ClientConfig, DriverError> {
    let setup_error = |source: Box<dyn std::error::Error + Send + Sync>| DriverError::ClientSetup {
        node: node.to_string(),
        source,
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| setup_error(Box::new(error)))?;

    if let Some(fingerprint) = fingerprint {
        let verifier = FingerprintVerifier {
            sha256: parse_fingerprint(node, url, fingerprint)?,
            provider,
        };
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth());
    }

    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(pem) = ca_pem else {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    };

    let pinned = parse_pem_certificates(node, pem)?;
    for certificate in &pinned {
        roots
            .add(certificate.clone())
            .map_err(|error| invalid_certificate(node, Box::new(error)))?;
    }
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|error| setup_error(Box::new(error)))?;
    let verifier = PinningVerifier {
        pinned,
        webpki,
        provider,
    };

    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

fn invalid_certificate(
    node: &str,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> DriverError {
    DriverError::InvalidCaCertificate {
        node: node.to_string(),
        source,
    }
}

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally in pairs
/// separated by colons (`AB:CD:…`, as `openssl x509 -fingerprint -sha256`
/// prints it).
fn parse_fingerprint(node: &str, url: &str, text: &str) -> Result<[u8; 32], DriverError> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&digits, &mut sha256).map_err(|_| DriverError::InvalidEndpoint {
        node: node.to_string(),
        url: url.to_string(),
        reason: format!(
            "invalid certificate fingerprint {text:?}; expected a SHA-256 digest as 64 hex digits"
        ),
    })?;
    Ok(sha256)
}

/// Parses every `CERTIFICATE` block of `pem`; none at all is an error.
fn parse_pem_certificates(
    node: &str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, DriverError> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid_certificate(node, Box::new(error)))?;
    if certificates.is_empty() {
        return Err(invalid_certificate(
            node,
            "no CERTIFICATE block in the PEM text".into(),
        ));
    }
    Ok(certificates)
}

/// Accepts a pinned certificate as it is and checks any other certificate
/// with WebPKI. Handshake signatures are always verified.
#[derive(Debug)]
struct PinningVerifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

/// Accepts only the certificate with one SHA-256 digest. Handshake
/// signatures are always verified.
#[derive(Debug)]
struct FingerprintVerifier {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = self
            .pinned
            .iter()
            .any(|certificate| certificate.as_ref() == end_entity.as_ref());
        if pinned {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fingerprint;

    #[test]
    fn fingerprint_accepts_colons_and_plain_hex() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            parse_fingerprint("n1", "https://bmc", &plain).expect("plain hex"),
            [0xab; 32]
        );
        assert_eq!(
            parse_fingerprint("n1", "https://bmc", &colons).expect("colon pairs"),
            [0xab; 32]
        );
    }

    #[test]
    fn short_fingerprint_is_invalid_endpoint() {
        let error = parse_fingerprint("n1", "https://bmc", "abcd").expect_err("too short");
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }
}
