//! The control plane's own certificate authority for site agents.
//!
//! The CA (ECDSA P-256, made with rcgen) is created on first start under
//! `<state_dir>/pki/` and kept; its key file is readable only by its owner.
//! It signs two kinds of certificates: the agent listener's server
//! certificate, reissued at every start for the configured names, and each
//! agent's client certificate, issued once at enrollment from the agent's
//! CSR. Agents pin the CA by its sha256 fingerprint, printed by
//! `rackhand-control-plane ca-fingerprint`.
//
// TODO: rotate agent certificates before they expire and publish revocations
// to agents; today revocation is enforced only by the control plane's
// lookup of each client certificate's fingerprint.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ring::digest;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::seal::write_private_file;

/// Lifetime of an agent's client certificate.
pub const AGENT_CERT_DAYS: u64 = 90;

/// A failure to issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("cannot issue certificate: {0}")]
    Issue(String),
}

/// The agent CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    /// `sha256:` followed by the lowercase hex sha256 of the CA certificate.
    pub fingerprint: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// An issued agent certificate.
#[derive(Debug)]
pub struct IssuedCert {
    pub pem: String,
    /// Lowercase hex sha256 of the certificate's DER.
    pub fingerprint: String,
    pub not_after_ms: i64,
}

/// Returns the lowercase hex sha256 of `der`.
pub fn fingerprint_hex(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, der))
}

impl Ca {
    /// Loads the CA from `dir`, creating it when absent.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Ca> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if !key_path.exists() {
            let key = KeyPair::generate()?;
            let params = ca_params()?;
            let cert = params.self_signed(&key)?;
            write_private_file(&key_path, key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, cert.pem())?;
            tracing::info!(path = %dir.display(), "created the agent certificate authority");
        }

        let key_pem = std::fs::read_to_string(&key_path)
            .map_err(|e| anyhow::anyhow!("cannot read CA key {}: {e}", key_path.display()))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| {
            anyhow::anyhow!("cannot read CA certificate {}: {e}", cert_path.display())
        })?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        let cert_der = <CertificateDer<'static> as PemObject>::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("invalid CA certificate {}: {e}", cert_path.display()))?;
        let fingerprint = format!("sha256:{}", fingerprint_hex(&cert_der));
        Ok(Ca {
            issuer,
            cert_pem,
            cert_der,
            fingerprint,
        })
    }

    /// Builds the agent listener's TLS configuration: a fresh server
    /// certificate for `names`, and client certificates verified against
    /// this CA but optional at the TLS layer, because enrollment happens
    /// before the agent has one. Every other agent route requires one.
    pub fn server_config(&self, names: &[String]) -> anyhow::Result<rustls::ServerConfig> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = name("rackhand control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(365 * 86_400)).into();
        let cert = params.signed_by(&key, &self.issuer)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone(), self.cert_der.clone()], key_der)?;
        Ok(config)
    }

    /// Issues a client certificate for an agent of `site` from its CSR.
    ///
    /// Only the CSR's public key is used (its signature is verified); the
    /// names in the certificate are ours, so an agent cannot ask for another
    /// site's identity.
    pub fn sign_agent(&self, csr_pem: &str, site: &str) -> Result<IssuedCert, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;

        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("rackhand agent {site}"));
        let uri = format!("urn:rackhand:site:{site}")
            .try_into()
            .map_err(|_| PkiError::Issue(format!("site name {site:?} cannot appear in a URI")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let not_after = SystemTime::now() + Duration::from_secs(AGENT_CERT_DAYS * 86_400);
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial().into());

        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| PkiError::Issue(e.to_string()))?;
        let not_after_ms = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(IssuedCert {
            pem: cert.pem(),
            fingerprint: fingerprint_hex(cert.der()),
            not_after_ms,
        })
    }
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Rackhand agent CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
    params.not_after = (SystemTime::now() + Duration::from_secs(10 * 365 * 86_400)).into();
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Rackhand");
    name
}

fn random_serial() -> Vec<u8> {
    let mut serial = uuid::Uuid::new_v4().as_bytes().to_vec();
    // A positive DER integer: clear the top bit.
    serial[0] &= 0x7f;
    serial
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_survives_reload_with_same_fingerprint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Ca::load_or_create(dir.path()).expect("creates");
        let second = Ca::load_or_create(dir.path()).expect("loads");
        assert_eq!(first.fingerprint, second.fingerprint);
    }

    #[test]
    fn agent_csr_is_signed_with_our_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::load_or_create(dir.path()).expect("creates");
        let key = KeyPair::generate().expect("key");
        let mut request = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        request.distinguished_name = name("someone else");
        let csr = request
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let issued = ca.sign_agent(&csr, "dc1").expect("signs");
        assert!(issued.pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(issued.fingerprint.len(), 64);
    }

    #[test]
    fn garbage_csr_is_rejected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::load_or_create(dir.path()).expect("creates");
        let error = ca.sign_agent("not a csr", "dc1").expect_err("invalid");
        assert!(matches!(error, PkiError::InvalidCsr(_)));
    }

    #[test]
    fn server_config_builds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::load_or_create(dir.path()).expect("creates");
        ca.server_config(&["localhost".into(), "127.0.0.1".into()])
            .expect("config");
    }
}
