//! The root password of an order's service: generated once, stored sealed
//! with its SHA-512-crypt hash in the service row, and read back by every
//! later step.
//!
//! The image phase needs the hash for the install files, and the handoff
//! phase needs the password for the welcome e-mail, so whichever runs first
//! creates both. The conditional update lets exactly one attempt store them,
//! and every attempt then opens what was stored: a retry, a re-handed-out
//! task or a crash between the steps never produces a second password.

use rackhand_install_templates::crypt;
use rackhand_protocol::Secret;
use ring::rand::{SecureRandom, SystemRandom};

use crate::app::App;
use crate::phases::PhaseError;
use crate::seal;

/// Password alphabet without look-alikes (0/O, 1/l/I), 56 symbols.
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// 20 symbols of 56 give about 116 bits of entropy.
const PASSWORD_LENGTH: usize = 20;

/// A service's root password and its `$6$` SHA-512-crypt hash. Both print
/// `[redacted]` in `Debug`.
#[derive(Debug, Clone)]
pub struct RootCredentials {
    pub password: Secret,
    pub hash: Secret,
}

type SealedPair = (Option<String>, Option<String>);

/// Returns the service's root password and hash, generating and sealing
/// them first when no attempt has yet. The service row must exist.
pub async fn ensure_root_credentials(
    app: &App,
    order_id: i64,
) -> Result<RootCredentials, PhaseError> {
    let password_context = seal::root_password_context(order_id);
    let hash_context = seal::root_password_hash_context(order_id);

    if load_sealed(app, order_id).await?.0.is_none() {
        let password = generate_password()
            .map_err(|_| PhaseError::transient("system random generator failed"))?;
        let hash = crypt::hash_password(password.expose())
            .map_err(|e| PhaseError::transient(e.to_string()))?;
        let sealed = seal_value(app, &password_context, password.expose())?;
        let sealed_hash = seal_value(app, &hash_context, &hash)?;
        // Conditional, so a concurrent attempt cannot replace a stored password.
        sqlx::query(
            "UPDATE services SET root_password_sealed = ?, root_password_hash_sealed = ?
             WHERE order_id = ? AND root_password_sealed IS NULL",
        )
        .bind(&sealed)
        .bind(&sealed_hash)
        .bind(order_id)
        .execute(&app.pool)
        .await?;
    }

    let (sealed, mut sealed_hash) = load_sealed(app, order_id).await?;
    let sealed = sealed.ok_or_else(|| {
        PhaseError::transient("the root password vanished from the service row; retrying")
    })?;
    let password = open_value(app, &password_context, &sealed)?;
    if sealed_hash.is_none() {
        // A password stored before hashes were kept: hash it now, once.
        let hash = crypt::hash_password(password.expose())
            .map_err(|e| PhaseError::transient(e.to_string()))?;
        sqlx::query(
            "UPDATE services SET root_password_hash_sealed = ?
             WHERE order_id = ? AND root_password_hash_sealed IS NULL",
        )
        .bind(seal_value(app, &hash_context, &hash)?)
        .bind(order_id)
        .execute(&app.pool)
        .await?;
        sealed_hash = load_sealed(app, order_id).await?.1;
    }
    let sealed_hash = sealed_hash.ok_or_else(|| {
        PhaseError::transient("the root password hash vanished from the service row; retrying")
    })?;
    let hash = open_value(app, &hash_context, &sealed_hash)?;
    Ok(RootCredentials { password, hash })
}

async fn load_sealed(app: &App, order_id: i64) -> Result<SealedPair, PhaseError> {
    let row: Option<SealedPair> = sqlx::query_as(
        "SELECT root_password_sealed, root_password_hash_sealed FROM services WHERE order_id = ?",
    )
    .bind(order_id)
    .fetch_optional(&app.pool)
    .await?;
    row.ok_or_else(|| PhaseError::permanent("order has no service row, so it has no address yet"))
}

fn seal_value(app: &App, context: &str, value: &str) -> Result<String, PhaseError> {
    app.sealer
        .seal(context, value)
        .map_err(|e| PhaseError::transient(e.to_string()))
}

fn open_value(app: &App, context: &str, sealed: &str) -> Result<Secret, PhaseError> {
    app.sealer
        .open(context, sealed)
        .map_err(|e| PhaseError::permanent(e.to_string()))
}

/// Generates a random password from [`ALPHABET`] by rejection sampling, so
/// every symbol is equally likely.
pub fn generate_password() -> Result<Secret, ring::error::Unspecified> {
    let rng = SystemRandom::new();
    let limit = 256 - (256 % ALPHABET.len());
    let mut password = String::with_capacity(PASSWORD_LENGTH);
    let mut byte = [0u8; 1];
    while password.len() < PASSWORD_LENGTH {
        rng.fill(&mut byte)?;
        let value = usize::from(byte[0]);
        if value < limit {
            password.push(char::from(ALPHABET[value % ALPHABET.len()]));
        }
    }
    Ok(Secret::new(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_use_alphabet_and_length() {
        let password = generate_password().expect("random works");
        assert_eq!(password.expose().len(), PASSWORD_LENGTH);
        assert!(password.expose().bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn passwords_differ() {
        let first = generate_password().expect("random works");
        let second = generate_password().expect("random works");
        assert_ne!(first.expose(), second.expose());
    }
}
