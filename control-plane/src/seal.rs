//! Sealing secrets at rest (root passwords, BMC passwords) with
//! authenticated encryption.
//!
//! A sealed value is `v1:` followed by base64 of a random 96-bit nonce and the
//! ChaCha20-Poly1305 ciphertext with its tag. The key is 32 random bytes kept
//! in a file outside the database, so a copy of the database alone reveals no
//! secret. Each sealed value binds a context string (for example
//! `node:7:bmc_password`) as associated data, so a value copied into another
//! row fails to open instead of decrypting as the wrong secret.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rackhand_protocol::Secret;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "v1:";

/// A failure to load the key or to seal or open a value.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read sealing key file {path}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write sealing key file {path}")]
    WriteKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "sealing key file {path} must hold 32 bytes as base64 (44 characters); generate one with `head -c 32 /dev/urandom | base64`"
    )]
    BadKey { path: String },
    #[error("sealed value for {context} is malformed")]
    Malformed { context: String },
    #[error(
        "sealed value for {context} does not open with this key (wrong sealing key, or the value was altered)"
    )]
    Open { context: String },
    #[error("the system random generator failed")]
    Random,
}

/// The sealing key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Builds a sealer from 32 key bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Sealer {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .expect("a 32-byte key is always valid for ChaCha20-Poly1305");
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// Loads the key file (base64 of 32 bytes).
    pub fn load(path: &Path) -> Result<Sealer, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::ReadKey {
            path: path.display().to_string(),
            source,
        })?;
        let bad_key = || SealError::BadKey {
            path: path.display().to_string(),
        };
        let bytes = STANDARD.decode(text.trim()).map_err(|_| bad_key())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad_key())?;
        Ok(Sealer::from_bytes(&bytes))
    }

    /// Writes a new random key file readable only by its owner.
    pub fn generate(path: &Path) -> Result<Sealer, SealError> {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes).map_err(|_| SealError::Random)?;
        let write_error = |source| SealError::WriteKey {
            path: path.display().to_string(),
            source,
        };
        write_private_file(path, STANDARD.encode(bytes).as_bytes()).map_err(write_error)?;
        Ok(Sealer::from_bytes(&bytes))
    }

    /// Seals `plaintext`, bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buffer = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| SealError::Random)?;

        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buffer);
        Ok(format!("{PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Secret, SealError> {
        let malformed = || SealError::Malformed {
            context: context.to_string(),
        };
        let encoded = sealed.strip_prefix(PREFIX).ok_or_else(malformed)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| malformed())?;
        if bytes.len() < NONCE_LEN {
            return Err(malformed());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| malformed())?;

        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| SealError::Open {
                context: context.to_string(),
            })?;
        let text = String::from_utf8(plaintext.to_vec()).map_err(|_| malformed())?;
        Ok(Secret::new(text))
    }
}

/// Writes `bytes` to a new file with mode 0600, refusing to overwrite.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Returns the context string for a node's BMC password.
pub fn bmc_password_context(node_id: i64) -> String {
    format!("node:{node_id}:bmc_password")
}

/// Returns the context string for a service's root password.
pub fn root_password_context(order_id: i64) -> String {
    format!("order:{order_id}:root_password")
}

/// Returns the context string for the SHA-512-crypt hash of a service's
/// root password.
pub fn root_password_hash_context(order_id: i64) -> String {
    format!("order:{order_id}:root_password_hash")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_bytes(&[7u8; 32])
    }

    #[test]
    fn sealed_value_opens_with_same_context() {
        let sealer = sealer();
        let sealed = sealer
            .seal("order:1:root_password", "s3cret")
            .expect("seals");
        assert!(!sealed.contains("s3cret"));
        let opened = sealer
            .open("order:1:root_password", &sealed)
            .expect("opens");
        assert_eq!(opened.expose(), "s3cret");
    }

    #[test]
    fn sealed_value_does_not_open_in_other_context() {
        let sealer = sealer();
        let sealed = sealer
            .seal("order:1:root_password", "s3cret")
            .expect("seals");
        let error = sealer
            .open("order:2:root_password", &sealed)
            .expect_err("wrong context");
        assert!(matches!(error, SealError::Open { .. }));
    }

    #[test]
    fn altered_value_does_not_open() {
        let sealer = sealer();
        let mut sealed = sealer.seal("c", "s3cret").expect("seals");
        sealed.pop();
        sealed.push('A');
        assert!(sealer.open("c", &sealed).is_err());
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let sealer = sealer();
        let first = sealer.seal("c", "x").expect("seals");
        let second = sealer.seal("c", "x").expect("seals");
        assert_ne!(first, second);
    }

    #[test]
    fn key_file_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sealing.key");
        let written = Sealer::generate(&path).expect("generates");
        let sealed = written.seal("c", "x").expect("seals");
        let loaded = Sealer::load(&path).expect("loads");
        assert_eq!(loaded.open("c", &sealed).expect("opens").expose(), "x");
        assert!(Sealer::generate(&path).is_err(), "never overwrites a key");
    }
}
