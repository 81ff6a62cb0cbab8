//! The mock's HTTPS material: a throw-away CA and a server certificate for
//! `127.0.0.1` and `localhost`, made with rcgen for each mock.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// What a client needs to trust or pin the mock's certificate.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA that signed the server certificate, PEM-encoded.
    pub ca_pem: String,
    /// The server certificate, PEM-encoded.
    pub cert_pem: String,
    /// The server certificate, DER-encoded.
    pub cert_der: Vec<u8>,
    /// SHA-256 of `cert_der`, lowercase hex without separators.
    pub cert_sha256: String,
    /// SHA-256 of the CA certificate's DER, lowercase hex without separators.
    pub ca_sha256: String,
}

pub(crate) fn generate() -> anyhow::Result<(TlsMaterial, TlsAcceptor)> {
    let ca_key = KeyPair::generate().context("generating the mock CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Rackhand Redfish mock CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().context("generating the mock server key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "Redfish mock BMC");
    let cert = params.signed_by(&key, &issuer)?;

    let sha256 = |der: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, der));
    let material = TlsMaterial {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        cert_sha256: sha256(cert.der()),
        ca_sha256: sha256(ca_cert.der()),
    };

    let chain = vec![
        cert.der().clone(),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions for the mock")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("loading the mock's certificate")?;
    Ok((material, TlsAcceptor::from(Arc::new(config))))
}
