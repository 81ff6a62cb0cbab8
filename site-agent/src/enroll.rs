//! Enrollment and the agent's TLS identity.
//!
//! On first start the agent creates its key and a CSR, dials the control
//! plane trusting only a CA whose sha256 matches the configured fingerprint,
//! and trades the one-time enrollment token for a client certificate. The
//! key, the certificate and the CA are kept in `state_dir/tls/`; from then on
//! every connection is mutually authenticated against that CA and the token
//! is never used again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rackhand_protocol::agent::{ENROLL_PATH, EnrollRequest, EnrollResponse};
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION, Secret};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use ring::digest;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::ControlPlaneConfig;

/// The files that make up the agent's identity.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub key: PathBuf,
    pub certificate: PathBuf,
    pub ca: PathBuf,
    pub site: PathBuf,
}

impl IdentityFiles {
    pub fn in_dir(state_dir: &Path) -> IdentityFiles {
        let dir = state_dir.join("tls");
        IdentityFiles {
            key: dir.join("agent.key"),
            certificate: dir.join("agent.pem"),
            ca: dir.join("ca.pem"),
            site: dir.join("site"),
        }
    }

    pub fn exist(&self) -> bool {
        self.key.exists() && self.certificate.exists() && self.ca.exists()
    }
}

/// A loaded identity: a mutually authenticated TLS configuration.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tls: rustls::ClientConfig,
    pub site: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Enrolls if needed, then loads the identity.
pub async fn ensure_identity(
    state_dir: &Path,
    control_plane: &ControlPlaneConfig,
) -> anyhow::Result<Identity> {
    let files = IdentityFiles::in_dir(state_dir);
    if !files.exist() {
        let token = control_plane.enrollment_token.as_ref().context(
            "this agent is not enrolled yet: set control_plane.enrollment_token (or enrollment_token_file) to a token from `rackhand site enroll-token SITE`",
        )?;
        let token = token.read().map_err(anyhow::Error::msg)?;
        enroll(&files, control_plane, &token).await?;
    }
    load(&files, &control_plane.ca_fingerprint)
}

async fn enroll(
    files: &IdentityFiles,
    control_plane: &ControlPlaneConfig,
    token: &Secret,
) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "rackhand site agent");
    params.distinguished_name = name;
    let csr_pem = params.serialize_request(&key)?.pem()?;

    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(
            &control_plane.ca_fingerprint,
        )))
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}{ENROLL_PATH}", control_plane.url);
    let response = client
        .post(&url)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .json(&EnrollRequest {
            token: token.clone(),
            csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .send()
        .await
        .with_context(|| format!("cannot reach the control plane at {url} to enroll"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("enrollment rejected by {url}: {status}: {body}");
    }
    let enrolled: EnrollResponse = response
        .json()
        .await
        .context("invalid enrollment response")?;

    let ca_der = CertificateDer::from_pem_slice(enrolled.ca_pem.as_bytes())
        .context("invalid CA certificate in the enrollment response")?;
    let fingerprint = hex::encode(digest::digest(&digest::SHA256, &ca_der));
    if fingerprint != control_plane.ca_fingerprint {
        bail!("the control plane sent a CA (sha256:{fingerprint}) other than the pinned one");
    }

    let dir = files
        .key
        .parent()
        .context("identity files live in a folder")?;
    std::fs::create_dir_all(dir)?;
    write_private(&files.key, key.serialize_pem().as_bytes())?;
    std::fs::write(&files.certificate, &enrolled.certificate_pem)?;
    std::fs::write(&files.ca, &enrolled.ca_pem)?;
    std::fs::write(&files.site, &enrolled.site)?;
    tracing::info!(site = %enrolled.site, "enrolled with the control plane");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn load(files: &IdentityFiles, fingerprint: &str) -> anyhow::Result<Identity> {
    let ca = CertificateDer::from_pem_file(&files.ca)
        .with_context(|| format!("cannot read {}", files.ca.display()))?;
    let actual = hex::encode(digest::digest(&digest::SHA256, &ca));
    if actual != fingerprint {
        bail!(
            "{} contains CA sha256:{actual} but control_plane.ca_fingerprint pins sha256:{fingerprint}; remove {} to enroll again",
            files.ca.display(),
            files
                .key
                .parent()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
    }
    let certificates = CertificateDer::pem_file_iter(&files.certificate)
        .with_context(|| format!("cannot read {}", files.certificate.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read {}", files.key.display()))?;
    let site = std::fs::read_to_string(&files.site)
        .unwrap_or_default()
        .trim()
        .to_string();

    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates, key)?;
    Ok(Identity { tls, site })
}

/// Trusts a server whose chain contains the CA with the pinned sha256, and
/// then verifies the chain against that CA like any WebPKI verifier (names,
/// dates, signatures). Used only for enrollment, before the CA is stored.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCaVerifier {
    fn new(fingerprint: &str) -> PinnedCaVerifier {
        PinnedCaVerifier {
            fingerprint: fingerprint.to_string(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|cert| hex::encode(digest::digest(&digest::SHA256, cert)) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the control plane's certificate chain does not contain the pinned CA sha256:{}",
                    self.fingerprint
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(pinned.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA is unusable: {e}")))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
